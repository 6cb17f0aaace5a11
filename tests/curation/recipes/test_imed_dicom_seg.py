"""IMed from DICOM series annotated by DICOM-SEG objects (written with highdicom over the
real 3-slice CT): masks on the slices the SEG frames reference, segment labels through
the category table, prompts as for label maps, and a Reject per SEG that cannot be used."""

from __future__ import annotations

import copy
import json
import shutil
import warnings
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from curation.images import decode_png, tight_bbox_xyxy
from curation.recipes.imed import clean_mask, imed_layout
from curation.recipes.unimed import unimed_layout
from tests.converters.test_dicom_longtail import write_rtstruct
from tests.curation.recipes.families import Built, assert_subject_level_splits, build_family
from tests.helpers import CT_DIR

CT_FILES = ("01.dcm", "02.dcm", "03.dcm")


def ct_slices() -> dict[str, Dataset]:
    slices: dict[str, Dataset] = {name: pydicom.dcmread(CT_DIR / name) for name in CT_FILES}
    for ds in slices.values():  # the real files carry an empty SpecificCharacterSet, which highdicom refuses
        ds.SpecificCharacterSet = "ISO_IR 100"
    return slices


def diamond(centre_rc: tuple[int, int], radius: int, shape: tuple[int, int] = (512, 512)) -> np.ndarray:
    """An L1 disc: opening and closing with the 3x3 cross leave it as it is, so the cleaned
    mask must equal it pixel for pixel."""
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    return np.asarray(np.abs(yy - centre_rc[0]) + np.abs(xx - centre_rc[1]) <= radius)


#: segment number -> (SEG segment label, {CT file: mask on it})
SEGMENTS: dict[int, tuple[str, dict[str, np.ndarray]]] = {
    1: ("Liver_Tumour", {"02.dcm": diamond((200, 260), 30), "03.dcm": diamond((180, 250), 20)}),
    2: ("Kidney-L", {"03.dcm": diamond((350, 150), 25)}),
}
CATEGORIES = {1: "liver tumor", 2: "left kidney"}  # through curation/categories/imed_categories.v1.csv


def write_seg(path: Path, sources: list[Dataset], segments: dict[int, tuple[str, dict[str, np.ndarray]]], names: list[str]) -> None:
    """A binary DICOM-SEG over ``sources`` (one frame per source slice and segment)."""
    rows, cols = int(sources[0].Rows), int(sources[0].Columns)
    pixels = np.zeros((len(sources), rows, cols, len(segments)), bool)
    for s, (_, masks) in enumerate(segments.values()):
        for i, name in enumerate(names):
            if name in masks:
                pixels[i, :, :, s] = masks[name]
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=label,
            segmented_property_category=hd.sr.CodedConcept("91723000", "SCT", "Anatomical Structure"),
            segmented_property_type=hd.sr.CodedConcept("85756007", "SCT", "Tissue"),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
        )
        for number, (label, _) in segments.items()
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the real CT's single-component PatientName
        seg = hd.seg.Segmentation(
            source_images=sources, pixel_array=pixels, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=descriptions, series_instance_uid=generate_uid(), series_number=99,
            sop_instance_uid=generate_uid(), instance_number=1, manufacturer="medcurate-tests",
            manufacturer_model_name="tests", software_versions="0", device_serial_number="0",
        )
    seg.save_as(path)


def halved(ds: Dataset) -> Dataset:
    """The slice at half resolution, same UIDs: a SEG drawn on it references the real
    series but does not fit its 512x512 grid."""
    small = copy.deepcopy(ds)
    small.PixelData = np.ascontiguousarray(ds.pixel_array[::2, ::2]).tobytes()
    small.Rows, small.Columns = ds.Rows // 2, ds.Columns // 2
    small.PixelSpacing = [float(v) * 2 for v in ds.PixelSpacing]
    return small


def other_series(ds: Dataset, series_uid: str) -> Dataset:
    moved = copy.deepcopy(ds)
    moved.SeriesInstanceUID = series_uid
    moved.SOPInstanceUID = generate_uid()
    return moved


def copy_ct(folder: Path) -> Path:
    folder.mkdir(parents=True)
    for name in CT_FILES:
        shutil.copy2(CT_DIR / name, folder / name)
    return folder


@pytest.fixture(scope="module")
def seg_build(tmp_path_factory: pytest.TempPathFactory, salt: str) -> Built:
    """ct_seg: the CT + a two-segment SEG, a SEG on a half-resolution grid and a SEG of a
    series not in the source; ct_bad: the CT whose only SEG does not fit its grid; ct_rt:
    the CT with an RT-STRUCT (a square on 02.dcm, a triangle on 03.dcm)."""
    root = tmp_path_factory.mktemp("imed_seg")
    slices = ct_slices()
    names, sources = list(slices), list(slices.values())
    good = copy_ct(root / "src" / "ct_seg")
    write_seg(good / "organs.seg.dcm", sources, SEGMENTS, names)
    small = {1: ("Liver", {n: m[::2, ::2] for n, m in SEGMENTS[1][1].items()})}
    write_seg(good / "lowres.seg.dcm", [halved(ds) for ds in sources], small, names)
    elsewhere = generate_uid()
    write_seg(good / "orphan.seg.dcm", [other_series(ds, elsewhere) for ds in sources], {1: SEGMENTS[1]}, names)
    bad = copy_ct(root / "src" / "ct_bad")
    write_seg(bad / "only.seg.dcm", [halved(ds) for ds in sources], small, names)
    write_rtstruct(copy_ct(root / "src" / "ct_rt") / "rtstruct.dcm", [pydicom.dcmread(CT_DIR / n) for n in CT_FILES])
    return build_family("imed", root / "work", root / "src", {"options": {"clicks": 3}})


def slot_of_file() -> dict[str, int]:
    """Slices are ordered along the slice normal (z ascending for this axial series)."""
    z = {name: float(ds.ImagePositionPatient[2]) for name, ds in ct_slices().items()}
    return {name: slot for slot, name in enumerate(sorted(z, key=z.__getitem__))}


def test_detection_recognises_a_series_with_seg_objects(seg_build: Built):
    assert imed_layout(seg_build.tree / "ct_seg") == "dicom_seg"
    assert imed_layout(seg_build.tree / "ct_rt") == "dicom_seg"
    assert unimed_layout(seg_build.tree / "ct_seg") == "segmentation"
    assert imed_layout(copy_ct(seg_build.tree.parent / "plain_ct")) is None  # slices alone: nothing to segment


def test_seg_segments_land_on_their_slices_with_prompts(seg_build: Built):
    rows = [r for r in seg_build.rows if r["source"] == "ct_seg"]
    slots = slot_of_file()
    by_slot = {int(r["source_uri"].rsplit("=", 1)[1]): r for r in rows}
    # 01.dcm has no segment: no sample (keep_empty_slices is false)
    assert set(by_slot) == {slots["02.dcm"], slots["03.dcm"]}
    for name in ("02.dcm", "03.dcm"):
        row = by_slot[slots[name]]
        assert row["task"] == "interactive_seg" and row["modality"] == "CT"
        image = next(i for i in row["images"] if i["role"] == "input")
        assert (image["width"], image["height"]) == (512, 512)
        expected = {n: (label, masks[name]) for n, (label, masks) in SEGMENTS.items() if name in masks}
        assert sorted(m["label"] for m in row["masks"]) == [f"seg-{n}:{n}" for n in sorted(expected)]
        for mask in row["masks"]:
            number = int(mask["label"].rsplit(":", 1)[1])
            truth = expected[number][1]
            assert np.array_equal(clean_mask(truth, 1), truth)  # so cleaning must leave it unchanged
            binary = decode_png(mask["data"])
            np.testing.assert_array_equal(binary, truth)
            assert mask["category"] == CATEGORIES[number]
            assert mask["area_px"] == truth.sum()
            assert mask["bbox_xyxy"] == tight_bbox_xyxy(truth)
            x0, y0, x1, y1 = mask["bbox_xyxy"]
            assert binary[y0:y1, x0:x1].sum() == binary.sum()  # the box contains the mask
            assert all(abs(a - b) <= 5 for a, b in zip(mask["box_prompt_xyxy"], mask["bbox_xyxy"], strict=True))
            assert len(mask["clicks_xy"]) == 3 and all(binary[y, x] for x, y in mask["clicks_xy"])
        assert row["labels"] == sorted(CATEGORIES[n] for n in expected)
    assert_subject_level_splits(seg_build.rows)


def test_two_segs_numbering_from_one_give_each_mask_its_own_label(tmp_path: Path):
    """Two SEG objects on one series, both with a segment 1 (the usual: one SEG per
    annotator or per structure): two masks on the slice, two labels, each mask its own
    pixels and category."""
    slices = ct_slices()
    names, sources = list(slices), list(slices.values())
    folder = copy_ct(tmp_path / "src" / "ct_two")
    tumour, kidney = SEGMENTS[1], SEGMENTS[2]
    write_seg(folder / "a_tumour.seg.dcm", sources, {1: tumour}, names)
    write_seg(folder / "b_kidney.seg.dcm", sources, {1: kidney}, names)
    built = build_family("imed", tmp_path / "work", tmp_path / "src", {"options": {"clicks": 1}})
    row = next(r for r in built.rows if int(r["source_uri"].rsplit("=", 1)[1]) == slot_of_file()["03.dcm"])
    masks = {m["label"]: m for m in row["masks"]}
    assert sorted(masks) == ["seg-1:1", "seg-1~2:1"]  # discovery's sorted order: a_tumour first
    for label, (_, truth), category in (("seg-1:1", tumour, "liver tumor"), ("seg-1~2:1", kidney, "left kidney")):
        assert masks[label]["category"] == category
        np.testing.assert_array_equal(decode_png(masks[label]["data"]), truth["03.dcm"])
    assert row["labels"] == ["left kidney", "liver tumor"]


def test_unusable_segs_are_rejects_with_reasons(seg_build: Built):
    by_uri = {r.source_uri: r for r in seg_build.rejects}
    orphan = by_uri["ct_seg/orphan.seg.dcm"]
    assert orphan.reason == "orphan_label_map" and "references is not in the source" in orphan.detail
    # next to a good SEG, the one on a 256x256 grid is rejected alone (named in its series)
    (lowres,) = [r for r in seg_build.rejects if r.source_uri.endswith("#label=lowres.seg.dcm")]
    assert lowres.source_uri.startswith("ct_seg/series-") and lowres.reason == "label_grid_mismatch"
    assert lowres.detail.startswith("lowres.seg.dcm: ") and "256x256" in lowres.detail and "512x512" in lowres.detail
    # 3 series + the orphan SEG; ct_seg counts as rejected once, for its bad SEG (runs.py)
    counts = {k: seg_build.summary[k] for k in ("inputs_total", "inputs_rejected", "samples_written")}
    assert counts == {"inputs_total": 4, "inputs_rejected": 3, "samples_written": 4}
    # ... and a series whose only SEG does not fit makes no sample
    (bad,) = [r for r in seg_build.rejects if r.source_uri.startswith("ct_bad/")]
    assert bad.reason == "label_grid_mismatch" and "256x256" in bad.detail
    assert not [r for r in seg_build.rows if r["source"] == "ct_bad"]


def test_rtstruct_rois_become_prompted_masks_the_same_way(seg_build: Built):
    slots = slot_of_file()
    rows = {int(r["source_uri"].rsplit("=", 1)[1]): r for r in seg_build.rows if r["source"] == "ct_rt"}
    assert set(rows) == {slots["02.dcm"], slots["03.dcm"]}
    (square,) = rows[slots["02.dcm"]]["masks"]
    assert square["label"] == "rtstruct-7:7" and square["category"] == "lesion"
    assert square["bbox_xyxy"] == [200, 100, 261, 151]  # the contour's pixel corners, inclusive
    assert square["area_px"] == 61 * 51 - 4  # opening with the cross rounds off the 4 corners
    binary = decode_png(square["data"])
    assert all(binary[y, x] for x, y in square["clicks_xy"])
    (triangle,) = rows[slots["03.dcm"]]["masks"]
    assert triangle["category"] == "lesion" and decode_png(triangle["data"])[310, 55]


def test_unimed_asks_region_questions_on_seg_sources(seg_build: Built, tmp_path: Path):
    built = build_family("unimed", tmp_path / "work", seg_build.tree / "ct_seg", {"sources": [{"name": "ct_seg"}]})
    answers = sorted(t["value"] for r in built.rows for t in r["conversations"][1::2])
    assert {r["task"] for r in built.rows} == {"referring_seg"}
    # the segment labels as written are Liver_Tumour and Kidney-L: answers name them
    # through the category table, as imed does
    assert answers == ["left kidney.", "liver tumor.", "liver tumor."]
    assert all(m["category"] in ("left kidney", "liver tumor") for r in built.rows for m in r["masks"])
    step = next(s for s in json.loads(built.rows[0]["provenance"]["steps_json"]) if s["step"] == "unimed.regions")
    assert step["params"]["table"] == "imed_categories.v1"
    assert sorted((r.reason, r.source_uri.split("#")[-1]) for r in built.rejects) == [
        ("label_grid_mismatch", "label=lowres.seg.dcm"), ("orphan_label_map", "ct_seg/orphan.seg.dcm"),
    ]
