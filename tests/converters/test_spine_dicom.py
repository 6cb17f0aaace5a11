"""DICOM on real CT slices: HU values, label maps on the right slices, de-identification."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.pixels import apply_modality_lut

from catalogs import open_catalog
from converters.base import ConvertOptions, SlicePolicy
from converters.discover import discover
from converters.stage import ConvertStage
from curation.images import decode_png
from curation.stages import run_stages_locally
from flows.build import BuildRequest, run_build_inline
from tests.helpers import CT_DIR, TEST_SALT, pydicom_file


def convert(sources: list[Path], dataset: str = "t", **options) -> tuple:
    found = discover([str(s) for s in sources])
    opts = ConvertOptions(dataset=dataset, source=dataset, salt=TEST_SALT, **options)
    out = run_stages_locally([ConvertStage(opts)], found.table())
    return out.table, found.rejects + out.rejects


def by_slice(table) -> dict[int, dict]:
    rows = {}
    for row in table.to_pylist():
        rows[int(row["source_uri"].rsplit("#slice=", 1)[1])] = row
    return rows


def image(row: dict, role: str) -> dict:
    return next(i for i in row["images"] if i["role"] == role)


def test_ct_hounsfield_units_match_pydicom_modality_lut(ct_series):
    table, rejects = convert([ct_series])
    assert rejects == []
    files = sorted(CT_DIR.glob("*.dcm"), key=lambda p: float(pydicom.dcmread(p).ImagePositionPatient[2]))
    rows = by_slice(table)
    assert sorted(rows) == [0, 1, 2]
    for index, path in enumerate(files):  # acquisition order: inferior to superior
        ds = pydicom.dcmread(path)
        expected_hu = apply_modality_lut(ds.pixel_array, ds)
        raw = image(rows[index], "raw")
        stored = decode_png(raw["data"]).astype(np.float64)
        hu = stored * raw["value_scale"] + raw["value_offset"]
        np.testing.assert_array_equal(hu, expected_hu)
        assert raw["bit_depth"] == 16
        # the 8-bit input is the file's own window (W400 L40), high attenuation bright
        window = image(rows[index], "input")
        assert window["window"] == {"center": 40.0, "width": 400.0}
        pixels = decode_png(window["data"])
        assert pixels[expected_hu <= 40 - 200].max() == 0
        assert pixels[expected_hu >= 40 + 200].min() == 255
        assert image(rows[index], "input")["spacing_mm"] == pytest.approx([0.810547, 0.810547, 1.0], abs=1e-5)


def test_label_maps_land_on_their_slices_pixel_for_pixel(ct_series):
    table, _ = convert([ct_series])
    rows = by_slice(table)
    for organ, value in (("liver", 1), ("spine", 2), ("heart", 3)):
        label = sitk.ReadImage(str(CT_DIR / f"{organ}_seg.nrrd"))
        volume = sitk.GetArrayFromImage(label)  # [k, y, x]
        origin_z, spacing_z = label.GetOrigin()[2], label.GetSpacing()[2]
        files = sorted(CT_DIR.glob("*.dcm"), key=lambda p: float(pydicom.dcmread(p).ImagePositionPatient[2]))
        for index, path in enumerate(files):
            z = float(pydicom.dcmread(path).ImagePositionPatient[2])
            k = round((z - origin_z) / spacing_z)
            expected = volume[k] == value
            masks = [m for m in rows[index]["masks"] or [] if m["category"] == organ]
            if not expected.any():
                assert masks == []
                continue
            assert len(masks) == 1
            got = decode_png(masks[0]["data"])
            np.testing.assert_array_equal(got, expected)
            assert masks[0]["area_px"] == int(expected.sum())
            ys, xs = np.nonzero(expected)
            assert masks[0]["bbox_xyxy"] == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]


@pytest.mark.parametrize(("policy", "expected"), [("middle", [1]), ("every:2", [0, 2]), ("all", [0, 1, 2])])
def test_slice_policy_picks_slices(ct_series, policy, expected):
    table, _ = convert([ct_series], slices=SlicePolicy.parse(policy))
    assert sorted(by_slice(table)) == expected


PHI = {
    "PatientName": "Doe^Jane^Quincy",
    "PatientID": "MRN-7781234",
    "PatientBirthDate": "19470312",
    "PatientAddress": "42 Wallaby Way, Sydney",
    "InstitutionName": "St Elsewhere General Hospital",
    "InstitutionAddress": "1 Hospital Road, Springfield",
    "ReferringPhysicianName": "House^Gregory",
    "PerformingPhysicianName": "Quinn^Michaela",
    "OperatorsName": "Scully^Dana",
    "AccessionNumber": "ACC99887766",
    "StudyID": "STUDY-4455",
    "OtherPatientIDs": "ALT-5566778",
}


def test_no_identifying_header_value_reaches_any_shard_byte(tmp_path, workdir):
    src = tmp_path / "phi"
    src.mkdir()
    for path in sorted(CT_DIR.glob("*.dcm")):
        ds = pydicom.dcmread(path)
        real_values = [str(ds.PatientName), str(ds.PatientID)]  # the test patient's own header
        for keyword, value in PHI.items():
            setattr(ds, keyword, value)
        ds.add_new(0x00091010, "LO", "PRIVATE-SECRET-9876")
        ds.save_as(src / path.name)
    outcome = run_build_inline(BuildRequest(recipe="convert", sources=[str(src)], dataset="phi", workdir=str(workdir)))
    assert outcome.summary["samples_written"] == 3
    needles = [*PHI.values(), *real_values, "PRIVATE-SECRET-9876"]
    needles += [v.replace("^", " ") for v in needles if "^" in v]
    name_parts = [part for v in PHI.values() if "^" in v for part in v.split("^")]
    binary: list[bytes] = []  # compressed/encoded bytes: whole values only (3 letters occur by chance)
    text: list[str] = []  # every decoded string value, the run records and the catalog metadata
    for shard in outcome.shards:
        binary.append(Path(shard).read_bytes())
        table = pq.read_table(shard)
        for row in table.to_pylist():
            binary.extend(i["data"] for i in row["images"])
            binary.extend(m["data"] for m in row["masks"] or [])
            text.append(repr({k: v for k, v in row.items() if k not in ("images", "masks")}))
    for path in workdir.rglob("*"):
        if path.suffix == ".json":  # run summaries, partition manifests, Iceberg table metadata
            text.append(path.read_text())
        elif path.suffix == ".avro":  # Iceberg manifests (compressed: whole values only)
            binary.append(path.read_bytes())
        elif path.name == "rejects.parquet":
            text.append(repr(pq.read_table(path).to_pylist()))
    for needle in needles:
        for blob in binary:
            assert needle.lower().encode() not in blob.lower(), f"{needle!r} leaked into shard bytes"
    for needle in needles + name_parts:  # as whole words: "house" is in "warehouse"
        pattern = re.compile(rf"(?<![A-Za-z0-9]){re.escape(needle)}(?![A-Za-z0-9])", re.IGNORECASE)
        for value in text:
            assert not pattern.search(value), f"{needle!r} leaked into stored values"


def test_subject_key_is_a_salted_pseudonym(ct_series):
    table, _ = convert([ct_series])
    keys = set(table.column("subject_key").to_pylist())
    assert len(keys) == 1
    other, _ = convert([ct_series]) if False else (None, None)
    found = discover([str(ct_series)])
    other_salt = run_stages_locally(
        [ConvertStage(ConvertOptions(dataset="t", source="t", salt="another-salt"))], found.table()
    ).table
    assert set(other_salt.column("subject_key").to_pylist()).isdisjoint(keys)
    assert "99000" not in next(iter(keys))


def test_burned_in_annotation_is_rejected_unless_allowed(tmp_path):
    src = tmp_path / "burned"
    src.mkdir()
    ds = pydicom.dcmread(pydicom_file("CT_small.dcm"))
    ds.BurnedInAnnotation = "YES"
    ds.save_as(src / "burned.dcm")
    table, rejects = convert([src])
    assert table.num_rows == 0
    assert [r.reason for r in rejects] == ["burned_in_annotation"]
    table, rejects = convert([src], allow_burned_in=True)
    assert table.num_rows == 1 and rejects == []


def test_strict_burned_in_policy_rejects_prone_modalities_unless_the_header_says_no(tmp_path):
    """pydicom's ultrasound and secondary-capture files carry no BurnedInAnnotation, like
    most real ones: kept by default, rejected under strict unless the header says NO; a CT
    without the tag stays; allow_burned_in keeps everything."""
    src = tmp_path / "strict"
    src.mkdir()
    for name in ("CT_small.dcm", "examples_rgb_color.dcm", "SC_rgb_small_odd.dcm"):
        shutil.copy2(pydicom_file(name), src / name)
    cleared = pydicom.dcmread(pydicom_file("examples_palette.dcm"))
    assert "BurnedInAnnotation" not in cleared
    cleared.BurnedInAnnotation = "NO"  # an ultrasound whose header vouches for its pixels
    cleared.save_as(src / "us_cleared.dcm")

    table, rejects = convert([src])
    assert sorted(table.column("source_uri").to_pylist()) == [
        "CT_small.dcm", "SC_rgb_small_odd.dcm", "examples_rgb_color.dcm", "us_cleared.dcm",
    ]
    table, rejects = convert([src], burned_in="strict")
    assert sorted(table.column("source_uri").to_pylist()) == ["CT_small.dcm", "us_cleared.dcm"]
    reasons = {r.source_uri: (r.reason, r.detail) for r in rejects}
    assert sorted(reasons) == ["SC_rgb_small_odd.dcm", "examples_rgb_color.dcm"]
    assert reasons["examples_rgb_color.dcm"][0] == "burned_in_unknown"
    assert "modality US" in reasons["examples_rgb_color.dcm"][1] and "absent" in reasons["examples_rgb_color.dcm"][1]
    assert "secondary capture" in reasons["SC_rgb_small_odd.dcm"][1]
    table, rejects = convert([src], burned_in="strict", allow_burned_in=True)
    assert table.num_rows == 4 and rejects == []


def test_burned_in_policy_names_are_checked():
    from converters.base import burned_in_policy

    assert burned_in_policy(None) == "declared" and burned_in_policy("strict") == "strict"
    with pytest.raises(ValueError, match="burned_in must be one of"):
        burned_in_policy("lenient")


def test_pydicom_bundled_mr_ct_and_colour_ultrasound(tmp_path):
    src = tmp_path / "bundled"
    src.mkdir()
    for name in ("CT_small.dcm", "MR_small.dcm", "examples_rgb_color.dcm", "examples_palette.dcm"):
        shutil.copy2(pydicom_file(name), src / name)
    table, rejects = convert([src])
    assert rejects == []
    rows = {r["source_uri"]: r for r in table.to_pylist()}
    assert rows["CT_small.dcm"]["modality"] == "CT"
    assert rows["MR_small.dcm"]["modality"] == "MR"
    rgb = pydicom.dcmread(src / "examples_rgb_color.dcm").pixel_array
    got = decode_png(image(rows["examples_rgb_color.dcm"], "input")["data"])
    np.testing.assert_array_equal(got, rgb)
    palette = decode_png(image(rows["examples_palette.dcm"], "input")["data"])
    assert palette.shape == (350, 800, 3) and rows["examples_palette.dcm"]["modality"] == "US"
    # MR has no VOI window in its header: the auto window covers the body, not the air
    mr = pydicom.dcmread(src / "MR_small.dcm")
    mr_input = decode_png(image(rows["MR_small.dcm"], "input")["data"])
    assert mr_input.shape == mr.pixel_array.shape
    assert np.corrcoef(mr_input.ravel(), mr.pixel_array.ravel())[0, 1] > 0.95


def test_monochrome1_is_inverted_so_dense_is_bright(tmp_path):
    src = tmp_path / "mono1"
    src.mkdir()
    ds = pydicom.dcmread(pydicom_file("CT_small.dcm"))
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.SeriesInstanceUID = pydicom.uid.generate_uid()  # its own series, not a slice of m2's
    ds.save_as(src / "m1.dcm")
    shutil.copy2(pydicom_file("CT_small.dcm"), src / "m2.dcm")
    table, _ = convert([src])
    rows = {r["source_uri"]: decode_png(image(r, "input")["data"]) for r in table.to_pylist()}
    np.testing.assert_array_equal(rows["m1.dcm"], 255 - rows["m2.dcm"])


def test_round_trip_through_the_catalog_by_version(ct_series, workdir):
    first = run_build_inline(BuildRequest(recipe="convert", sources=[str(ct_series)], dataset="rt", workdir=str(workdir)))
    direct, _ = convert([ct_series], dataset="rt")
    catalog = open_catalog(workdir=str(workdir))
    read = catalog.to_arrow("rt", first.published.version)
    assert sorted(read.column("sample_id").to_pylist()) == sorted(direct.column("sample_id").to_pylist())
    by_id = {r["sample_id"]: r for r in read.to_pylist()}
    for row in direct.to_pylist():
        assert [i["data"] for i in by_id[row["sample_id"]]["images"]] == [i["data"] for i in row["images"]]
        assert [m["data"] for m in by_id[row["sample_id"]]["masks"]] == [m["data"] for m in row["masks"]]
