"""De-identification: the PS3.15 Basic Profile on a real CT header, and the free-text
scrubber measured on 200+ synthetic PHI strings in realistic clinical sentences."""

from __future__ import annotations

import datetime as dt
import random
import re

import pydicom
import pytest
from pydicom.dataelem import DataElement

from converters.deid import (
    BASIC_PROFILE,
    METADATA_KEYWORDS,
    date_offset_days,
    deidentified_subset,
    deidentify_dataset,
    dicom_metadata,
    replacement_uid,
    scrub_text,
    shift_date,
)
from tests.helpers import CT_DIR, TEST_SALT


@pytest.fixture
def ct_header() -> pydicom.Dataset:
    ds = pydicom.dcmread(CT_DIR / "01.dcm", stop_before_pixels=True)
    # a few identifying values the real file lacks, and a private tag
    ds.InstitutionName = "Saint Elsewhere Hospital"
    ds.PatientBirthDate = "19610412"
    ds.OperatorsName = "Jones^Martha"
    ds.add_new(0x00091001, "LO", "private vendor note with name Martha Jones")
    ds.add_new(0x00081110, "SQ", [pydicom.Dataset()])  # ReferencedStudySequence
    ds.ReferencedStudySequence[0].ReferencedSOPInstanceUID = "1.2.3.4.5"
    ds.ReferencedStudySequence[0].add(DataElement(0x00080021, "DA", "20030417"))  # SeriesDate in a sequence
    return ds


def test_basic_profile_removes_identifiers_from_the_real_ct_header(ct_header):
    original_name = str(ct_header.PatientName)
    assert original_name  # the real file carries a test patient's name
    clean = deidentify_dataset(ct_header, salt=TEST_SALT, subject="p1")
    assert str(clean.PatientName) == "" and str(clean.PatientID) == ""
    assert "InstitutionName" not in clean and "OperatorsName" not in clean
    assert str(clean.PatientBirthDate) == ""  # never shifted: always emptied
    assert not any(elem.tag.is_private for elem in clean)
    # UIDs are replaced consistently (same input → same output), not kept
    assert clean.SeriesInstanceUID != ct_header.SeriesInstanceUID
    assert clean.SeriesInstanceUID == replacement_uid(str(ct_header.SeriesInstanceUID), TEST_SALT)
    assert clean.ReferencedStudySequence[0].ReferencedSOPInstanceUID == replacement_uid("1.2.3.4.5", TEST_SALT)
    # dates move by the subject's offset, in sequences too
    offset = date_offset_days("p1", TEST_SALT)
    assert offset != 0
    assert clean.StudyDate == shift_date(str(ct_header.StudyDate), offset) != ct_header.StudyDate
    assert clean.ReferencedStudySequence[0][0x00080021].value == shift_date("20030417", offset)
    assert clean.PatientIdentityRemoved == "YES"
    # no value of the original header's identifying attributes survives anywhere
    text = str(clean)
    for keyword in ("PatientName", "PatientID", "InstitutionName", "OperatorsName"):
        value = str(ct_header.get(keyword, "") or "")
        if value:
            assert value not in text, keyword
    # the input dataset is untouched (a copy was de-identified)
    assert str(ct_header.PatientName) == original_name


def test_dates_can_be_removed_instead_of_shifted(ct_header):
    clean = deidentify_dataset(ct_header, salt=TEST_SALT, subject="p1", dates="remove")
    assert str(clean.get("StudyDate", "")) == ""
    assert "SeriesDate" not in clean.ReferencedStudySequence[0]


def test_date_shift_is_per_subject_and_keeps_intervals():
    a, b = date_offset_days("subject-a", TEST_SALT), date_offset_days("subject-b", TEST_SALT)
    assert a != b or a == b == 0  # different subjects almost surely differ
    first, second = shift_date("20200101", a), shift_date("20200111", a)
    as_date = lambda text: dt.datetime.strptime(text, "%Y%m%d").date()  # noqa: E731
    assert (as_date(second) - as_date(first)).days == 10
    assert (as_date(first) - dt.date(2020, 1, 1)).days == a
    assert shift_date("not a date", a) == ""


def test_metadata_only_carries_profile_safe_values(ct_header):
    meta = dicom_metadata(ct_header, salt=TEST_SALT, subject="p1")
    assert meta["Modality"] == "CT"
    assert "PatientName" not in meta and "InstitutionName" not in meta
    assert meta["StudyDate"] != str(ct_header.StudyDate)


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm", "JPEG2000.dcm", "rtdose.dcm", "rtplan.dcm"])
@pytest.mark.parametrize("dates", ["shift", "remove"])
def test_a_subset_is_de_identified_exactly_as_the_whole_header(name, dates, ct_header):
    from pydicom.data import get_testdata_file

    keywords = (*METADATA_KEYWORDS, "BodyPartExamined", "PatientName", "AccessionNumber", "SeriesDate", "SOPInstanceUID")
    for ds in (pydicom.dcmread(get_testdata_file(name), stop_before_pixels=True), ct_header):
        ds.BodyPartExamined = "CHEST"
        whole = deidentify_dataset(ds, salt=TEST_SALT, subject="p7", dates=dates)
        subset = deidentified_subset(ds, keywords, salt=TEST_SALT, subject="p7", dates=dates)
        for keyword in keywords:
            assert (keyword in subset) == (keyword in whole), (name, keyword)
            if keyword in whole:
                assert subset[keyword].value == whole[keyword].value, (name, keyword)
        assert str(subset.get("PatientName", "")) == "" and str(subset.get("AccessionNumber", "")) == ""  # emptied
    with pytest.raises(ValueError, match="a sequence"):
        deidentified_subset(ct_header, ("ReferencedStudySequence",), salt=TEST_SALT, subject="p7")


def test_profile_table_covers_the_main_attributes():
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "AccessionNumber", "StudyInstanceUID",
                    "InstitutionName", "ReferringPhysicianName", "StudyDate", "SOPInstanceUID", "OtherPatientIDs"):
        assert keyword in BASIC_PROFILE
    assert set(BASIC_PROFILE.values()) <= {"X", "Z", "D", "U"}


# --------------------------------------------------------------- free text
FIRST = ["John", "Maria", "Wei", "Aisha", "Pierre", "Olga", "Kenji", "Fatima", "Liam", "Sofia", "Ravi", "Elena",
         "Marcus", "Ingrid", "Tomasz", "Grace", "Hector", "Yuki", "Amara", "Declan"]
LAST = ["Smith", "Okafor", "Nguyen", "Kowalski", "Fernandez", "Haddad", "Lindqvist", "O'Brien", "Tanaka", "Moreau",
        "Schneider", "Patel", "Rossi", "Ivanova", "MacLeod", "Abernathy", "Delacroix", "Vasquez", "Huang", "Brennan"]
STREETS = ["Maple Street", "Oak Avenue", "Harbor Road", "Elm Drive", "Kingsley Boulevard", "Cedar Lane", "Mill Court"]
MONTHS = ["January", "Feb", "March", "Apr", "May", "June", "Jul", "August", "Sept", "October", "Nov", "December"]
CLINICAL = ["5 mm nodule in the right upper lobe", "no acute intracranial hemorrhage", "mild cardiomegaly",
            "T2 hyperintense lesion at L4-5", "ejection fraction 55%", "metformin 500 mg twice daily",
            "a 3.2 cm hypodense hepatic lesion", "moderate nuclear sclerotic cataract", "left pleural effusion",
            "grade 2 diabetic retinopathy"]


def _date(rng: random.Random) -> str:
    y, m, d = rng.randint(1950, 2024), rng.randint(1, 12), rng.randint(1, 28)
    formats = [
        f"{m:02d}/{d:02d}/{y}", f"{m}/{d}/{y % 100:02d}", f"{y}-{m:02d}-{d:02d}", f"{d}.{m}.{y}",
        f"{MONTHS[m - 1]} {d}, {y}", f"{d} {MONTHS[m - 1]} {y}", f"{MONTHS[m - 1]} {d}th, {y}", f"{y}{m:02d}{d:02d}",
    ]
    return rng.choice(formats)


def _phone(rng: random.Random) -> str:
    a, b, c = rng.randint(200, 989), rng.randint(200, 999), rng.randint(0, 9999)
    return rng.choice([f"({a}) {b}-{c:04d}", f"{a}-{b}-{c:04d}", f"{a}.{b}.{c:04d}", f"+1 {a} {b} {c:04d}"])


def phi_cases(count: int = 240, seed: int = 7) -> list[tuple[str, list[str], str]]:
    """(sentence, PHI substrings that must disappear, clinical phrase that must stay)."""
    rng = random.Random(seed)
    templates = [
        lambda f, s, c: (f"Patient: {f} {s} was seen for {c}.", [f"{f} {s}"]),
        lambda f, s, c: (f"Dr. {f} {s} reviewed the images and noted {c}.", [f"{f} {s}"]),
        lambda f, s, c: (f"Mrs. {s} reports {c} since last visit.", [s]),
        lambda f, s, c: (f"Electronically signed by {f} {s}, MD. Findings: {c}.", [f"{f} {s}"]),
        lambda f, s, c: (f"Findings: {c}. Dictated by {f} {s}.", [f"{f} {s}"]),
        lambda f, s, c: (f"{s}, {f} was admitted with {c}.", [s, f]),
        lambda f, s, c: (f"Referring physician: {f} {s}. Impression: {c}.", [f"{f} {s}"]),
        lambda f, s, c: (f"Spoke with the daughter {f} {s} about {c}.", [f"{f} {s}"]),
    ]
    cases = []
    for index in range(count):
        first, last, clinical = rng.choice(FIRST), rng.choice(LAST), rng.choice(CLINICAL)
        kind = index % 8
        if kind == 0:
            sentence, phi = rng.choice(templates)(first, last, clinical)
        elif kind == 1:
            date = _date(rng)
            sentence, phi = f"CT performed on {date} shows {clinical}.", [date]
        elif kind == 2:
            phone = _phone(rng)
            sentence, phi = f"Call the clinic at {phone} if {clinical} worsens.", [phone]
        elif kind == 3:
            mail = f"{first.lower()}.{last.lower().replace(chr(39), '')}{rng.randint(1, 99)}@example-health.org"
            sentence, phi = f"Results sent to {mail}; {clinical}.", [mail]
        elif kind == 4:
            mrn = str(rng.randint(10**6, 10**9))
            cue = rng.choice(["MRN:", "MRN", "Medical record number", "Accession #", "Patient ID:"])
            sentence, phi = f"{cue} {mrn}. {clinical.capitalize()}.", [mrn]
        elif kind == 5:
            street = f"{rng.randint(1, 9999)} {rng.choice(STREETS)}"
            zipcode = f"{rng.randint(10000, 99999)}"
            sentence, phi = f"Lives at {street}, Springfield, IL {zipcode}; {clinical}.", [street, zipcode]
        elif kind == 6:
            dob = _date(rng)
            sentence, phi = f"DOB: {dob}. History of {clinical}.", [dob]
        else:
            ssn = f"{rng.randint(100, 899)}-{rng.randint(10, 99)}-{rng.randint(1000, 9999)}"
            sentence, phi = f"SSN {ssn} on file; {clinical}.", [ssn]
        cases.append((sentence, phi, clinical))
    return cases


def test_scrubber_removes_at_least_99_percent_of_phi_and_keeps_clinical_terms():
    cases = phi_cases()
    assert len(cases) >= 200
    total = removed = 0
    kept = 0
    misses = []
    for sentence, phi, clinical in cases:
        scrubbed = scrub_text(sentence)
        for value in phi:
            total += 1
            if value in scrubbed:
                misses.append((sentence, value, scrubbed))
            else:
                removed += 1
        # clinical content survives (measurements, drugs, anatomy, vertebral levels)
        if clinical in scrubbed or clinical.capitalize() in scrubbed:
            kept += 1
    assert removed / total >= 0.99, misses[:5]
    assert kept / len(cases) >= 0.98


def test_scrubber_leaves_purely_clinical_text_unchanged():
    text = (
        "FINDINGS: 5 mm nodule in the right upper lobe, unchanged from prior. No pleural effusion. "
        "Heart size normal. T2 hyperintense lesion at L4-5 measuring 1.2 x 0.8 cm. "
        "IMPRESSION: Stable pulmonary nodule. Follow-up CT in 12 months."
    )
    assert scrub_text(text) == text


def test_scrubber_placeholders_keep_the_cue_words():
    out = scrub_text("MRN: 48213377. Patient: Grace Huang. Phone: 617-555-0199.")
    assert "MRN: [ID]" in out and "Patient: [NAME]" in out and "[PHONE]" in out
    assert not re.search(r"\d{5}", out)
