"""The PHI patterns flag identifiers and leave ordinary clinical text alone."""

from __future__ import annotations

import pytest

from quality_checks.phi import phi_hits, phi_hits_in


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("Reviewed by Dr. Jane Smith before discharge.", "name_with_title"),
        ("Patient Mrs Okafor tolerated the procedure.", "name_with_title"),
        ("Header still reads DOE^JOHN.", "dicom_person_name"),
        ("Scan acquired on 2021-03-12 in the morning.", "date_numeric"),
        ("Follow-up on 12/03/2021.", "date_numeric"),
        ("Seen on 12 March 2021 for review.", "date_text"),
        ("Call (555) 123-4567 for results.", "phone"),
        ("Contact jane.smith@hospital.org for the report.", "email"),
        ("MRN: A1234567 left in the caption.", "mrn"),
        ("Accession 1234567890 was printed.", "long_digit_id"),
    ],
)
def test_identifiers_are_flagged(text: str, kind: str) -> None:
    assert kind in phi_hits(text)


@pytest.mark.parametrize(
    "text",
    [
        "DR grade 2 with microaneurysms in the left eye.",
        "Masks under 0.05% of the image were dropped; clip of 5.5 s at 25 fps.",
        "The liver occupies 107098 pixels on a 512x512 CT slice (W400/L40).",
        "Overall, the quality of this image is usable.",
        "Gaussian noise with sigma 11.0 obscures fine detail (PSNR 27.5 dB).",
    ],
)
def test_clinical_text_is_not_flagged(text: str) -> None:
    assert phi_hits(text) == []


def test_hits_are_counted_over_all_texts_of_a_sample() -> None:
    assert phi_hits_in([None, "", "Dr. Who", "mail a@b.io on 2020-01-02"]) == ["date_numeric", "email", "name_with_title"]
