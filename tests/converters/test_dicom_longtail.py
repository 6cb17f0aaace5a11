"""The DICOM long tail: compressed transfer syntaxes (pydicom's shipped files), enhanced
multi-frame CT written with pydicom, ultrasound cine → video, secondary captures,
DICOM-SEG written by highdicom and RT-STRUCT written with pydicom against the real CT."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import av
import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from converters.base import ConvertOptions
from converters.discover import discover
from converters.stage import ConvertStage, convert_item
from curation.images import decode_png
from curation.schema import validate_batch
from curation.stages import run_stages_locally
from tests.helpers import CT_DIR, TEST_SALT, pydicom_file

OPTS = ConvertOptions(dataset="t", source="t", salt=TEST_SALT)


def item_for(path: Path, key: str | None = None, **extra) -> dict:
    return {"uri": str(path), "key": key or path.name, "kind": "dicom", "members": None, "label_uris": None,
            "sha256": "0" * 64, "size_bytes": path.stat().st_size, "attrs": None, **extra}


def image(row: dict, role: str) -> dict:
    return next(i for i in row["images"] if i["role"] == role)


def convert_folder(src: Path, **options):
    found = discover([str(src)])
    out = run_stages_locally([ConvertStage(ConvertOptions(dataset="t", source="t", salt=TEST_SALT, **options))], found.table())
    validate_batch(out.table)
    return found, out.table.to_pylist(), found.rejects + out.rejects


@pytest.mark.parametrize(
    "compressed", ["MR_small_RLE.dcm", "MR_small_jpeg_ls_lossless.dcm", "MR_small_jp2klossless.dcm", "MR_small_bigendian.dcm"]
)
def test_lossless_transfer_syntaxes_give_the_uncompressed_pixels(compressed):
    reference = pydicom.dcmread(pydicom_file("MR_small.dcm")).pixel_array
    rows, reject = convert_item(item_for(pydicom_file(compressed)), OPTS)
    assert reject is None, reject
    raw = image(rows[0], "raw")
    values = decode_png(raw["data"]).astype(np.int64) * raw["value_scale"] + raw["value_offset"]
    np.testing.assert_array_equal(values, reference.astype(np.int64))


@pytest.mark.parametrize(
    ("name", "reference", "tolerance"),
    [
        ("SC_rgb_jpeg_dcmtk.dcm", "SC_rgb.dcm", 12.0),  # JPEG baseline, lossy: close to the RGB original
        ("SC_rgb_rle.dcm", "SC_rgb.dcm", 0.0),
        ("SC_rgb_jls_lossy_line.dcm", None, None),  # JPEG-LS near-lossless
        ("JPEG2000.dcm", None, None),
        ("JPGExtended.dcm", None, None),
        ("SC_rgb_small_odd_jpeg.dcm", None, None),
    ],
)
def test_compressed_secondary_captures_decode(name, reference, tolerance):
    rows, reject = convert_item(item_for(pydicom_file(name)), OPTS)
    assert reject is None, reject
    pixels = decode_png(image(rows[0], "input")["data"])
    ds = pydicom.dcmread(pydicom_file(name))
    assert pixels.shape[:2] == (ds.Rows, ds.Columns)
    if reference is not None:
        ref_path = pydicom_file("SC_rgb_rle.dcm")  # SC_rgb.dcm is not shipped; RLE is its lossless twin
        expected = pydicom.dcmread(ref_path).pixel_array.astype(float)
        assert np.abs(pixels.astype(float) - expected).mean() <= tolerance + 1e-9


def test_undecodable_compressed_data_is_a_reject_with_the_transfer_syntax():
    rows, reject = convert_item(item_for(pydicom_file("JPEG-lossy.dcm")), OPTS)
    assert rows == [] and reject.reason == "pixel_decode_failed"
    assert "1.2.840.10008.1.2.4.51" in reject.detail


def write_enhanced_ct(path: Path) -> tuple[np.ndarray, list[float], list[float]]:
    """An Enhanced CT with 4 frames stored out of slice order, per-frame rescale and window."""
    frames, rows, cols = 4, 16, 20
    stored = np.stack([np.full((rows, cols), 1000 + 100 * i, np.uint16) for i in range(frames)])
    stored[:, 2:5, 3:9] = 3000  # a bright block, top-left: orientation check
    z_of_frame = [30.0, 10.0, 40.0, 20.0]  # acquisition order is not slice order
    intercept_of_frame = [-1024.0, -1000.0, -1024.0, -1010.0]
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientName, ds.PatientID = "CT", "Enhanced^Patient", "ENH001"
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = generate_uid(), generate_uid(), generate_uid()
    ds.Rows, ds.Columns, ds.NumberOfFrames = rows, cols, frames
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    shared = Dataset()
    measures = Dataset()
    measures.PixelSpacing, measures.SliceThickness = [0.7, 0.5], 10.0
    shared.PixelMeasuresSequence = Sequence([measures])
    orientation = Dataset()
    orientation.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    shared.PlaneOrientationSequence = Sequence([orientation])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    per_frame = []
    for index in range(frames):
        group = Dataset()
        position = Dataset()
        position.ImagePositionPatient = [-5.0, -8.0, z_of_frame[index]]
        group.PlanePositionSequence = Sequence([position])
        transform = Dataset()
        transform.RescaleSlope, transform.RescaleIntercept, transform.RescaleType = 1, intercept_of_frame[index], "HU"
        group.PixelValueTransformationSequence = Sequence([transform])
        voi = Dataset()
        voi.WindowCenter, voi.WindowWidth = 40, 400
        group.FrameVOILUTSequence = Sequence([voi])
        per_frame.append(group)
    ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    ds.PixelData = stored.tobytes()
    ds.save_as(path, enforce_file_format=True)
    return stored, z_of_frame, intercept_of_frame


def test_enhanced_multiframe_ct_frames_in_slice_order_with_per_frame_rescale(tmp_path):
    path = tmp_path / "enhanced.dcm"
    stored, z_of_frame, intercepts = write_enhanced_ct(path)
    rows, reject = convert_item(item_for(path), OPTS)
    assert reject is None, reject
    order = np.argsort(z_of_frame)  # frames sorted by z: 1 (10), 3 (20), 0 (30), 2 (40)
    assert [r["source_uri"] for r in rows] == [f"enhanced.dcm#slice={i}" for i in range(4)]
    for slot, frame in enumerate(order):
        raw = image(rows[slot], "raw")
        hu = decode_png(raw["data"]) * raw["value_scale"] + raw["value_offset"]
        np.testing.assert_allclose(hu, stored[frame].astype(float) + intercepts[frame])
        assert raw["spacing_mm"] == pytest.approx([0.7, 0.5, 10.0])
        assert image(rows[slot], "input")["window"] == {"center": 40.0, "width": 400.0}
        assert decode_png(image(rows[slot], "input")["data"])[3, 4] == 255  # the block stays top-left
    assert "ENH001" not in str(rows[0]["provenance"]["steps_json"])


def test_ultrasound_cine_loop_becomes_an_h264_clip():
    path = pydicom_file("examples_ybr_color.dcm")
    ds = pydicom.dcmread(path)
    rows, reject = convert_item(item_for(path), OPTS)
    assert reject is None, reject
    assert len(rows) == 1
    video = rows[0]["video"]
    assert video["num_frames"] == 30 and video["fps"] == pytest.approx(1000 / 33.333, rel=1e-3)
    assert (video["width"], video["height"]) == (ds.Columns - ds.Columns % 2, ds.Rows - ds.Rows % 2)
    assert rows[0]["modality"] == "US" and rows[0]["images"] == []
    with av.open(io.BytesIO(video["data"])) as container:
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(decoded) == 30
    expected = ds.pixel_array  # pydicom converts YBR to RGB
    for index in (0, 15, 29):
        got = decoded[index].astype(float)
        want = expected[index][: got.shape[0], : got.shape[1]].astype(float)
        assert np.abs(got - want).mean() < 6.0  # H.264 at crf 23 on real ultrasound


def ct_slices() -> list[Dataset]:
    return [pydicom.dcmread(CT_DIR / f"0{i}.dcm") for i in (1, 2, 3)]


def test_dicom_seg_written_by_highdicom_lands_on_its_slices(tmp_path):
    sources = ct_slices()
    for ds in sources:  # the real files carry an empty SpecificCharacterSet, which highdicom refuses
        ds.SpecificCharacterSet = "ISO_IR 100"
    mask = np.zeros((3, 512, 512), bool)
    mask[1, 100:150, 200:260] = True  # on 02.dcm
    mask[2, 300:320, 50:90] = True  # on 03.dcm
    description = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label="Liver",
        segmented_property_category=hd.sr.CodedConcept("91723000", "SCT", "Anatomical Structure"),
        segmented_property_type=hd.sr.CodedConcept("10200004", "SCT", "Liver"),
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
    )
    seg = hd.seg.Segmentation(
        source_images=sources, pixel_array=mask, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[description], series_instance_uid=generate_uid(), series_number=99,
        sop_instance_uid=generate_uid(), instance_number=1, manufacturer="medcurate-tests",
        manufacturer_model_name="tests", software_versions="0", device_serial_number="0",
    )
    src = tmp_path / "ct"
    src.mkdir()
    for name in ("01.dcm", "02.dcm", "03.dcm"):
        shutil.copy2(CT_DIR / name, src / name)
    seg.save_as(src / "liver.seg.dcm")
    found, rows, rejects = convert_folder(src)
    assert rejects == [] and len(found.items) == 1 and len(found.items[0]["label_uris"]) == 1
    # slices are ordered by z (ascending): slot 0 = 03.dcm, slot 1 = 02.dcm, slot 2 = 01.dcm
    by_slot = {int(r["source_uri"].rsplit("=", 1)[1]): r for r in rows}
    assert by_slot[2]["masks"] is None
    for slot, source_index in ((1, 1), (0, 2)):
        (record,) = by_slot[slot]["masks"]
        assert record["category"] == "liver"
        np.testing.assert_array_equal(decode_png(record["data"]), mask[source_index])
    assert by_slot[1]["labels"] == ["liver"]


@pytest.mark.parametrize("guard", [None, 60.0], ids=["in-process", "item-timeout"])
@pytest.mark.parametrize("cut", ["01.dcm", "02.dcm"])
def test_a_series_file_cut_short_is_named_and_the_other_slices_still_convert(tmp_path, cut, guard):
    """Pixel data cut short in one file of a series (a transfer that stopped): that file
    is the reject; the others convert with their labels, exactly as from the whole series
    (before, the series stopped at the bad file: a cut 01.dcm, the last slot, lost
    nothing, a cut 02.dcm also lost 01.dcm; with ``--item-timeout`` it lost them all)."""
    whole = tmp_path / "whole"
    shutil.copytree(CT_DIR, whole)
    _, reference, no_rejects = convert_folder(whole)
    assert no_rejects == [] and len(reference) == 3 and all(r["masks"] for r in reference)  # labels attached
    src = tmp_path / "cut"
    shutil.copytree(CT_DIR, src)
    data = (src / cut).read_bytes()
    (src / cut).write_bytes(data[: len(data) - 5000])
    found, rows, rejects = convert_folder(src, item_timeout_s=guard)
    cut_slot = {"01.dcm": 2, "02.dcm": 1}[cut]  # slots in z order: 03.dcm, 02.dcm, 01.dcm
    by_slot = {int(r["source_uri"].rsplit("=", 1)[1]): r for r in rows}
    expected = {int(r["source_uri"].rsplit("=", 1)[1]): r for r in reference}
    assert sorted(by_slot) == sorted(set(expected) - {cut_slot})
    for slot, row in by_slot.items():
        assert image(row, "raw")["data"] == image(expected[slot], "raw")["data"]
        assert [m["data"] for m in row["masks"] or []] == [m["data"] for m in expected[slot]["masks"] or []]
    (reject,) = rejects
    assert reject.source_uri == found.items[0]["key"] and reject.reason == "truncated"
    assert "1 of 3 files not converted" in reject.detail and f"{cut}: Pixel Data holds" in reject.detail


def write_rtstruct(path: Path, sources: list[Dataset]) -> None:
    """An RT Structure Set over the real CT: a square on 02.dcm (referenced by UID) and a
    triangle on 03.dcm located only by its z coordinate."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.481.3"
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientName, ds.PatientID = "RTSTRUCT", sources[0].PatientName, sources[0].PatientID
    ds.SeriesInstanceUID, ds.StudyInstanceUID = generate_uid(), sources[0].StudyInstanceUID
    ref_series = Dataset()
    ref_series.SeriesInstanceUID = sources[0].SeriesInstanceUID
    ref_study = Dataset()
    ref_study.RTReferencedSeriesSequence = Sequence([ref_series])
    frame_ref = Dataset()
    frame_ref.FrameOfReferenceUID = sources[0].FrameOfReferenceUID
    frame_ref.RTReferencedStudySequence = Sequence([ref_study])
    ds.ReferencedFrameOfReferenceSequence = Sequence([frame_ref])
    roi = Dataset()
    roi.ROINumber, roi.ROIName = 7, "Lesion"
    ds.StructureSetROISequence = Sequence([roi])
    ox, oy = float(sources[0].ImagePositionPatient[0]), float(sources[0].ImagePositionPatient[1])
    dx = float(sources[0].PixelSpacing[1])

    def contour(points_px: list[tuple[float, float]], z: float, ref_uid: str | None) -> Dataset:
        c = Dataset()
        c.ContourGeometricType = "CLOSED_PLANAR"
        c.NumberOfContourPoints = len(points_px)
        c.ContourData = [v for col, row in points_px for v in (ox + col * dx, oy + row * dx, z)]
        if ref_uid:
            image_ref = Dataset()
            image_ref.ReferencedSOPClassUID = sources[1].SOPClassUID
            image_ref.ReferencedSOPInstanceUID = ref_uid
            c.ContourImageSequence = Sequence([image_ref])
        return c

    square = contour([(200, 100), (260, 100), (260, 150), (200, 150)], float(sources[1].ImagePositionPatient[2]),
                     str(sources[1].SOPInstanceUID))
    triangle = contour([(50, 300), (90, 300), (50, 340)], float(sources[2].ImagePositionPatient[2]), None)
    roi_contour = Dataset()
    roi_contour.ReferencedROINumber = 7
    roi_contour.ContourSequence = Sequence([square, triangle])
    ds.ROIContourSequence = Sequence([roi_contour])
    ds.save_as(path, enforce_file_format=True)


def test_rtstruct_contours_are_rasterised_onto_their_slices(tmp_path):
    sources = ct_slices()
    src = tmp_path / "ct"
    src.mkdir()
    for name in ("01.dcm", "02.dcm", "03.dcm"):
        shutil.copy2(CT_DIR / name, src / name)
    write_rtstruct(src / "rtstruct.dcm", sources)
    _, rows, rejects = convert_folder(src)
    assert rejects == []
    by_slot = {int(r["source_uri"].rsplit("=", 1)[1]): r for r in rows}
    (square,) = by_slot[1]["masks"]  # 02.dcm
    assert square["category"] == "lesion" and square["bbox_xyxy"] == [200, 100, 261, 151]
    pixels = decode_png(square["data"])
    assert pixels[125, 230] and not pixels[125, 199] and not pixels[99, 230]
    (triangle,) = by_slot[0]["masks"]  # 03.dcm, matched by z
    tri = decode_png(triangle["data"])
    assert tri[310, 55] and not tri[338, 88]  # inside near the right angle, outside past the hypotenuse
    assert by_slot[2]["masks"] is None


def test_pydicom_rtstruct_without_its_images_is_an_orphan(tmp_path):
    shutil.copy2(pydicom_file("rtstruct.dcm"), tmp_path / "rtstruct.dcm")
    found = discover([str(tmp_path)])
    assert found.items == [] and [r.reason for r in found.rejects] == ["orphan_label_map"]


def test_a_label_map_goes_to_the_series_beside_it_never_to_a_cine_loop(tmp_path):
    """Only series, volumes and Enhanced CT/MR files take a label map beside them: with a
    cine loop in the folder the map still lands on the CT series; beside a cine alone it
    is an orphan (a cine has no slices to put it on), not silently dropped."""
    import SimpleITK as sitk

    ct = pydicom.dcmread(CT_DIR / "01.dcm")
    both = tmp_path / "both"
    both.mkdir()
    for index in (1, 2, 3):
        shutil.copy(CT_DIR / f"0{index}.dcm", both / f"0{index}.dcm")
    shutil.copy(pydicom_file("examples_ybr_color.dcm"), both / "us.dcm")
    sitk.WriteImage(sitk.GetImageFromArray(np.ones((3, ct.Rows, ct.Columns), np.uint8)), str(both / "seg.nii.gz"))
    found = discover([str(both)])
    assert found.rejects == []
    (series,) = [i for i in found.items if i["members"]]
    assert series["label_uris"] == [str(both / "seg.nii.gz")]
    assert all(not i["label_uris"] for i in found.items if not i["members"])

    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(pydicom_file("examples_ybr_color.dcm"), alone / "us.dcm")
    sitk.WriteImage(sitk.GetImageFromArray(np.ones((3, 16, 16), np.uint8)), str(alone / "us_seg.nii.gz"))
    found = discover([str(alone)])
    assert [(r.source_uri, r.reason) for r in found.rejects] == [("us_seg.nii.gz", "orphan_label_map")]
