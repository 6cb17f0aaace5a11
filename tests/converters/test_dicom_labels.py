"""DICOM-SEG and RT-STRUCT placement (``converters.dicom_labels``) on tiny synthetic images.

Every input is built here: an Enhanced CT of 4 frames stored out of slice order, or a classic
series of 3 files, 32×32 pixels, with SEGs written by highdicom and RT-STRUCTs by pydicom.
The assertions name the slice each mask must land on and its exact pixel count.
"""

from __future__ import annotations

import json
from pathlib import Path

import highdicom as hd
import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

from converters.base import ConversionError, ConvertOptions
from converters.dicom import enhanced_frame_views
from converters.dicom_labels import FRACTIONAL_THRESHOLD, load_dicom_labels, load_seg
from converters.discover import discover
from converters.stage import ConvertStage
from curation.images import decode_png
from curation.schema import validate_batch
from curation.stages import run_stages_locally
from tests.helpers import TEST_SALT

SIZE = 32
SPACING = [0.8, 0.6]  # between rows, between columns (mm)
ORIGIN = (-10.0, -20.0)  # x, y of the top-left pixel centre
Z_OF_FRAME = [30.0, 10.0, 40.0, 20.0]  # Enhanced CT frames 1..4: acquisition order is not slice order
SLOT_OF_FRAME = {1: 2, 2: 0, 3: 3, 4: 1}  # 1-based frame → slice index (slices ordered by z)
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
ENHANCED_CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2.1"


def _patient_study(ds: Dataset, study_uid: str, for_uid: str) -> None:
    """The patient/study attributes highdicom copies from a source image into a SEG."""
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Tiny^Phantom", "TINY001", "", "O"
    ds.StudyInstanceUID, ds.StudyDate, ds.StudyTime, ds.StudyID = study_uid, "20200101", "000000", "1"
    ds.AccessionNumber, ds.ReferringPhysicianName, ds.SpecificCharacterSet = "1", "", "ISO_IR 100"
    ds.FrameOfReferenceUID, ds.SeriesNumber, ds.InstanceNumber, ds.Modality = for_uid, 1, 1, "CT"


def _file_meta(sop_class: str, ds: Dataset) -> None:
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = UID(sop_class)
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian


def _pixel_module(ds: Dataset, frames: int) -> None:
    ds.Rows = ds.Columns = SIZE
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = np.full((frames, SIZE, SIZE), 1000, np.uint16).tobytes()


def write_enhanced_ct(path: Path) -> Dataset:
    """An Enhanced CT: 4 frames at z 30, 10, 40, 20, one SOP instance."""
    ds = Dataset()
    _file_meta(ENHANCED_CT_IMAGE, ds)
    _patient_study(ds, generate_uid(), generate_uid())
    ds.SeriesInstanceUID, ds.NumberOfFrames = generate_uid(), len(Z_OF_FRAME)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL", "NONE"]
    shared = Dataset()
    measures = Dataset()
    measures.PixelSpacing, measures.SliceThickness = SPACING, 10.0
    orientation = Dataset()
    orientation.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    shared.PixelMeasuresSequence, shared.PlaneOrientationSequence = Sequence([measures]), Sequence([orientation])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    per_frame = []
    for z in Z_OF_FRAME:
        position = Dataset()
        position.ImagePositionPatient = [ORIGIN[0], ORIGIN[1], z]
        group = Dataset()
        group.PlanePositionSequence = Sequence([position])
        per_frame.append(group)
    ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    _pixel_module(ds, len(Z_OF_FRAME))
    ds.save_as(path, enforce_file_format=True)
    return ds


def write_ct_series(folder: Path, zs: tuple[float, float, float] = (10.0, 0.0, 5.0)) -> list[Dataset]:
    """A classic CT series of 3 files at z ``zs`` (file order is not slice order)."""
    study, series, for_uid = generate_uid(), generate_uid(), generate_uid()
    out = []
    for index, z in enumerate(zs):
        ds = Dataset()
        _file_meta(CT_IMAGE, ds)
        _patient_study(ds, study, for_uid)
        ds.SeriesInstanceUID, ds.InstanceNumber = series, index + 1
        ds.ImageOrientationPatient, ds.ImagePositionPatient = [1, 0, 0, 0, 1, 0], [ORIGIN[0], ORIGIN[1], z]
        ds.PixelSpacing, ds.SliceThickness = SPACING, 5.0
        ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
        _pixel_module(ds, 1)
        ds.save_as(folder / f"{index + 1:02d}.dcm", enforce_file_format=True)
        out.append(ds)
    return out


def _description(number: int, label: str) -> hd.seg.SegmentDescription:
    return hd.seg.SegmentDescription(
        segment_number=number,
        segment_label=label,
        segmented_property_category=hd.sr.CodedConcept("91723000", "SCT", "Anatomical Structure"),
        segmented_property_type=hd.sr.CodedConcept("10200004", "SCT", "Liver"),
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=hd.AlgorithmIdentificationSequence(
            name="tiny", version="1", family=hd.sr.CodedConcept("123109", "DCM", "Artificial Intelligence")
        ),
    )


def write_seg(path: Path, sources: list[Dataset], pixels: np.ndarray, **kwargs) -> hd.seg.Segmentation:
    """A SEG over ``sources`` (``pixels``: one frame per source frame, [frames, rows, cols]
    or [frames, rows, cols, segments])."""
    segments = 1 if pixels.ndim == 3 else pixels.shape[3]
    kwargs.setdefault("segmentation_type", hd.seg.SegmentationTypeValues.BINARY)
    seg = hd.seg.Segmentation(
        source_images=sources, pixel_array=pixels,
        segment_descriptions=[_description(n, ["Liver", "Spleen"][n - 1]) for n in range(1, segments + 1)],
        series_instance_uid=generate_uid(), series_number=99, sop_instance_uid=generate_uid(), instance_number=1,
        manufacturer="medcurate-tests", manufacturer_model_name="tests", software_versions="0",
        device_serial_number="0", **kwargs,
    )
    seg.save_as(path)
    return seg


def convert_folder(src: Path):
    found = discover([str(src)])
    out = run_stages_locally([ConvertStage(ConvertOptions(dataset="t", source="t", salt=TEST_SALT))], found.table())
    validate_batch(out.table)
    rows = {int(r["source_uri"].rsplit("=", 1)[1]): r for r in out.table.to_pylist()}
    return found, rows, found.rejects + out.rejects


def masks_by_slot(rows: dict[int, dict]) -> dict[int, list[tuple[str, int]]]:
    """slice → [(category, area in pixels)] for the slices that have masks."""
    return {slot: [(m["category"], m["area_px"]) for m in row["masks"]] for slot, row in rows.items() if row["masks"]}


# -- DICOM-SEG on an Enhanced CT: each frame on the frame it references ---------------------------------------


def test_seg_on_an_enhanced_ct_lands_on_the_referenced_frames_only(tmp_path):
    source = write_enhanced_ct(tmp_path / "enhanced.dcm")
    mask = np.zeros((4, SIZE, SIZE, 2), bool)
    mask[1, 5:10, 5:12, 0] = True  # frame 2 (z=10): liver 35 px
    mask[3, 20:23, 1:5, 0] = True  # frame 4 (z=20): liver 12 px
    mask[3, 0:2, 0:3, 1] = True  # frame 4: spleen 6 px
    write_seg(tmp_path / "organs.seg.dcm", [source], mask)
    found, rows, rejects = convert_folder(tmp_path)
    assert rejects == [] and len(found.items) == 1 and len(rows) == 4
    assert masks_by_slot(rows) == {0: [("liver", 35)], 1: [("liver", 12), ("spleen", 6)]}  # slot 0: z=10, slot 1: z=20
    (liver,) = rows[0]["masks"]
    np.testing.assert_array_equal(decode_png(liver["data"]), mask[1, :, :, 0])


def test_seg_frames_are_found_by_frame_number_and_by_position_without_one(tmp_path):
    """The converter gives each frame view its frame number (source references decide);
    a caller that passes only the views (no numbers) gets the same slices by position."""
    source = write_enhanced_ct(tmp_path / "enhanced.dcm")
    mask = np.zeros((4, SIZE, SIZE), bool)
    mask[0, 10:14, 10:20] = True  # frame 1 (z=30): 40 px
    write_seg(tmp_path / "liver.seg.dcm", [source], mask)
    frames, views = zip(*enhanced_frame_views(source), strict=True)
    by_number = load_seg(str(tmp_path / "liver.seg.dcm"), list(views), "k", [f + 1 for f in frames])
    by_position = load_seg(str(tmp_path / "liver.seg.dcm"), list(views), "k")
    assert by_number[0].params["placement"] == "source_reference"
    assert by_position[0].params["placement"] == "plane_position"
    for (volume,) in (by_number, by_position):
        assert [int(s.sum()) for s in volume.array > 0] == [0, 0, 40, 0]  # frame 1 is slice 2 (z=30)


# -- RT-STRUCT on an Enhanced CT -----------------------------------------------------------------------------


def write_rtstruct(path: Path, image: Dataset, contours: list[tuple[list[tuple[float, float]], float, int | None]]) -> None:
    """An RT Structure Set with one ROI; each contour (pixel (col, row) corners, z, frame)
    references the Enhanced CT's instance, with ReferencedFrameNumber when frame is given."""
    ds = Dataset()
    _file_meta("1.2.840.10008.5.1.4.1.1.481.3", ds)
    ds.Modality, ds.PatientName, ds.PatientID = "RTSTRUCT", image.PatientName, image.PatientID
    ds.SeriesInstanceUID, ds.StudyInstanceUID = generate_uid(), image.StudyInstanceUID
    series = Dataset()
    series.SeriesInstanceUID = image.SeriesInstanceUID
    study = Dataset()
    study.RTReferencedSeriesSequence = Sequence([series])
    frame_ref = Dataset()
    frame_ref.FrameOfReferenceUID, frame_ref.RTReferencedStudySequence = image.FrameOfReferenceUID, Sequence([study])
    ds.ReferencedFrameOfReferenceSequence = Sequence([frame_ref])
    roi = Dataset()
    roi.ROINumber, roi.ROIName = 3, "Lesion"
    ds.StructureSetROISequence = Sequence([roi])
    items = []
    for corners, z, frame in contours:
        contour = Dataset()
        contour.ContourGeometricType, contour.NumberOfContourPoints = "CLOSED_PLANAR", len(corners)
        contour.ContourData = [
            v for col, row in corners for v in (ORIGIN[0] + col * SPACING[1], ORIGIN[1] + row * SPACING[0], z)
        ]
        reference = Dataset()
        reference.ReferencedSOPClassUID, reference.ReferencedSOPInstanceUID = image.SOPClassUID, image.SOPInstanceUID
        if frame is not None:
            reference.ReferencedFrameNumber = frame
        contour.ContourImageSequence = Sequence([reference])
        items.append(contour)
    roi_contour = Dataset()
    roi_contour.ReferencedROINumber, roi_contour.ContourSequence = 3, Sequence(items)
    ds.ROIContourSequence = Sequence([roi_contour])
    ds.save_as(path, enforce_file_format=True)


def test_rtstruct_on_an_enhanced_ct_uses_the_frame_number_else_the_contour_plane(tmp_path):
    image = write_enhanced_ct(tmp_path / "enhanced.dcm")
    # corners between pixel centres, so no pixel lies on an edge: columns 4..10, rows 3..8 = 7 × 6 px
    square = [(3.5, 2.5), (10.5, 2.5), (10.5, 8.5), (3.5, 8.5)]
    wide = [(1.5, 19.5), (12.5, 19.5), (12.5, 21.5), (1.5, 21.5)]  # columns 2..12, rows 20..21: 11 × 2 px
    write_rtstruct(tmp_path / "rt.dcm", image, [
        (square, 10.0, 2),  # frame 2 → z=10 → slice 0
        (wide, 40.0, None),  # the instance without a frame number: the slice at its z (40 → slice 3)
    ])
    _, rows, rejects = convert_folder(tmp_path)
    assert rejects == []
    assert masks_by_slot(rows) == {0: [("lesion", 42)], 3: [("lesion", 22)]}
    (mask,) = rows[0]["masks"]
    assert mask["bbox_xyxy"] == [4, 3, 11, 9]


def test_rtstruct_frame_number_wins_over_the_plane(tmp_path):
    """ReferencedFrameNumber is the standard's link (PS3.3 C.8.8.6): the contour lands on
    that frame even when its z (slightly off, as exported contours often are) is nearer
    another slice's tolerance band."""
    image = write_enhanced_ct(tmp_path / "enhanced.dcm")
    write_rtstruct(tmp_path / "rt.dcm", image, [([(0.5, 0.5), (3.5, 0.5), (3.5, 3.5), (0.5, 3.5)], 21.0, 4)])  # frame 4: z=20 → slice 1
    _, rows, rejects = convert_folder(tmp_path)
    assert rejects == [] and masks_by_slot(rows) == {1: [("lesion", 9)]}


# -- FRACTIONAL SEG: binarised at half the maximum fractional value -------------------------------------------


@pytest.mark.parametrize(
    ("fractional_type", "maximum"),
    [(hd.seg.SegmentationFractionalTypeValues.PROBABILITY, 255), (hd.seg.SegmentationFractionalTypeValues.OCCUPANCY, 200)],
)
def test_fractional_seg_is_binarised_at_half_its_maximum(tmp_path, fractional_type, maximum):
    sources = write_ct_series(tmp_path)  # z 10, 0, 5 → slices: 02.dcm, 03.dcm, 01.dcm
    probability = np.zeros((3, SIZE, SIZE), np.float32)
    probability[0] = 0.02  # a model's faint background over all of 01.dcm
    probability[0, 4:9, 4:10] = 0.95  # 30 px, in
    probability[0, 20:22, 20:25] = 0.5  # 10 px exactly at the threshold, in
    probability[0, 25:27, 0:3] = 0.45  # 6 px below it, out
    write_seg(
        tmp_path / "prob.seg.dcm", sources, probability, segmentation_type=hd.seg.SegmentationTypeValues.FRACTIONAL,
        fractional_type=fractional_type, max_fractional_value=maximum,
    )
    _, rows, rejects = convert_folder(tmp_path)
    assert rejects == []
    assert masks_by_slot(rows) == {2: [("liver", 40)]}  # 01.dcm (z=10) is slice 2
    ordered = [sources[i] for i in (1, 2, 0)]
    (volume,) = load_seg(str(tmp_path / "prob.seg.dcm"), ordered, "k")
    assert volume.params == {
        "segmentation_type": "FRACTIONAL", "fractional_type": fractional_type.value,
        "max_fractional_value": float(maximum), "threshold": FRACTIONAL_THRESHOLD, "placement": "source_reference",
    }
    steps = json.loads(rows[2]["provenance"]["steps_json"])  # the row says how its mask was made
    (labels,) = [step["params"] for step in steps if step["step"] == "labels.resample_nearest"]
    assert labels["dicom"] == {volume.stem: volume.params}


# -- SEG without per-frame source references -----------------------------------------------------------------


def _drop_source_references(seg: hd.seg.Segmentation, path: Path) -> None:
    for item in seg.PerFrameFunctionalGroupsSequence:
        del item.DerivationImageSequence  # the series reference (ReferencedSeriesSequence) stays: discovery attaches by it
    seg.save_as(path)


def test_seg_without_source_references_is_placed_by_plane_position(tmp_path):
    sources = write_ct_series(tmp_path)
    mask = np.zeros((3, SIZE, SIZE), bool)
    mask[1, 2:7, 3:10] = True  # 02.dcm (z=0): 35 px
    mask[2, 30:32, 30:32] = True  # 03.dcm (z=5): 4 px
    seg_path = tmp_path / "liver.seg.dcm"
    _drop_source_references(write_seg(seg_path, sources, mask), seg_path)
    _, rows, rejects = convert_folder(tmp_path)
    assert rejects == [] and len(rows) == 3
    assert masks_by_slot(rows) == {0: [("liver", 35)], 1: [("liver", 4)]}
    np.testing.assert_array_equal(decode_png(rows[0]["masks"][0]["data"]), mask[1])


def test_seg_on_an_enhanced_ct_without_source_references_uses_the_frame_positions(tmp_path):
    source = write_enhanced_ct(tmp_path / "enhanced.dcm")
    mask = np.zeros((4, SIZE, SIZE), bool)
    mask[2, 0:4, 0:4] = True  # frame 3 (z=40): 16 px
    seg_path = tmp_path / "liver.seg.dcm"
    _drop_source_references(write_seg(seg_path, [source], mask), seg_path)
    _, rows, rejects = convert_folder(tmp_path)
    assert rejects == [] and masks_by_slot(rows) == {3: [("liver", 16)]}


def test_seg_without_source_references_in_another_frame_of_reference_is_a_named_reject(tmp_path):
    """Positions in another Frame of Reference mean nothing on this image: the SEG is a
    ``label_grid_mismatch`` naming the file and what was missing, not a crash."""
    sources = write_ct_series(tmp_path)
    mask = np.zeros((3, SIZE, SIZE), bool)
    mask[1, 2:7, 3:10] = True
    seg_path = tmp_path / "liver.seg.dcm"
    seg = write_seg(seg_path, sources, mask)
    seg.FrameOfReferenceUID = generate_uid()
    _drop_source_references(seg, seg_path)
    _, rows, rejects = convert_folder(tmp_path)
    (reject,) = rejects
    assert reject.reason == "label_grid_mismatch"
    assert "liver.seg.dcm" in reject.detail and "DerivationImageSequence" in reject.detail
    assert "FrameOfReferenceUID" in reject.detail


def test_a_frame_number_the_image_lacks_falls_back_to_the_frame_position(tmp_path):
    """Source references to frame 9 of a 4-frame Enhanced CT cannot be followed; the SEG
    frame's plane position still places it (frame 2's mask lands on z=10, slice 0)."""
    source = write_enhanced_ct(tmp_path / "enhanced.dcm")
    mask = np.zeros((4, SIZE, SIZE), bool)
    mask[1, 5:10, 5:12] = True
    seg_path = tmp_path / "liver.seg.dcm"
    seg = write_seg(seg_path, [source], mask)
    for item in seg.PerFrameFunctionalGroupsSequence:
        item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedFrameNumber = 9
    seg.save_as(seg_path)
    frames, views = zip(*enhanced_frame_views(source), strict=True)
    (volume,) = load_dicom_labels([str(seg_path)], list(views), "k", [f + 1 for f in frames])
    assert volume.params["placement"] == "plane_position"
    assert [int(s.sum()) for s in volume.array > 0] == [35, 0, 0, 0]


def test_a_seg_without_references_on_irregular_slices_is_a_bad_label_map_not_a_crash(tmp_path):
    """Positions highdicom cannot stack (slices at z 0, 5, 7) and no source references: the
    reject names the SEG file and why, instead of a ``converter_error``."""
    sources = write_ct_series(tmp_path, zs=(7.0, 0.0, 5.0))
    mask = np.zeros((3, SIZE, SIZE), bool)
    mask[:, 1:3, 1:3] = True
    seg_path = tmp_path / "liver.seg.dcm"
    _drop_source_references(write_seg(seg_path, sources, mask), seg_path)
    _, _, rejects = convert_folder(tmp_path)
    (reject,) = rejects
    assert reject.reason == "bad_label_map"
    assert str(seg_path) in reject.detail and "plane_position" in reject.detail and "regularly-spaced" in reject.detail
    with pytest.raises(ConversionError, match="liver.seg.dcm"):
        load_seg(str(seg_path), [sources[i] for i in (1, 2, 0)], "k")


def test_two_segs_named_alike_keep_each_its_own_placement_record(tmp_path):
    """Two SEGs whose stems coincide become ``seg-1`` and ``seg-1~2``; each mask's
    provenance entry is its own SEG's (the FRACTIONAL one keeps its threshold)."""
    sources = write_ct_series(tmp_path)
    probability = np.zeros((3, SIZE, SIZE), np.float32)
    probability[0, 4:9, 4:10] = 0.95
    write_seg(
        tmp_path / "a_prob.seg.dcm", sources, probability, segmentation_type=hd.seg.SegmentationTypeValues.FRACTIONAL,
        fractional_type=hd.seg.SegmentationFractionalTypeValues.PROBABILITY, max_fractional_value=255,
    )
    binary = np.zeros((3, SIZE, SIZE), bool)
    binary[0, 20:25, 20:25] = True
    write_seg(tmp_path / "b_bin.seg.dcm", sources, binary)
    _, rows, rejects = convert_folder(tmp_path)
    assert rejects == []
    (row,) = [r for r in rows.values() if r["masks"]]
    areas = {m["label"].split(":")[0]: m["area_px"] for m in row["masks"]}
    steps = json.loads(row["provenance"]["steps_json"])
    (placed,) = [step["params"]["dicom"] for step in steps if step["step"] == "labels.resample_nearest"]
    assert set(placed) == set(areas) and len(placed) == 2
    by_type = {record["segmentation_type"]: stem for stem, record in placed.items()}
    assert areas[by_type["FRACTIONAL"]] == 30 and areas[by_type["BINARY"]] == 25
    assert placed[by_type["FRACTIONAL"]]["threshold"] == FRACTIONAL_THRESHOLD
