"""DICOM: volume label maps on series with gaps and uneven spacing, VOI windows the file
cannot supply, and colour deeper than 8 bits.

Every series here is written with pydicom into ``tmp_path`` (32×32 pixels, a handful of
slices) and converted through discovery and the conversion stage, as ``medcurate
convert`` does. Each slice's stored pixel value encodes its z, and each z-position of
a label map has its own label value and its own square, so a mask that lands on the
wrong slice shows up as the wrong value and the wrong pixels.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

from converters.base import ConvertOptions
from converters.discover import discover
from converters.imaging import auto_window
from converters.stage import ConvertStage, convert_item
from curation.images import decode_png, to_uint8_window
from curation.schema import validate_batch
from curation.stages import run_stages_locally
from tests.helpers import TEST_SALT

SIZE = 32
OPTS = ConvertOptions(dataset="t", source="t", salt=TEST_SALT)
#: slice positions (mm): z = 6 is missing (a file discovery would reject), 2 → 3.5 is uneven
SERIES_Z = [0.0, 1.0, 2.0, 3.5, 4.5, 7.0, 8.0]
#: the label map's grid along z: 0.5 mm steps from 0 to 8 (17 slices), every slice z on it
LABEL_DZ = 0.5
LABEL_SLICES = 17


def new_dataset(sop_class: str = "1.2.840.10008.5.1.4.1.1.2") -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = UID(sop_class)
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    ds.PatientID, ds.PatientName = "GEO001", "Geometry^Test"
    ds.StudyInstanceUID, ds.FrameOfReferenceUID = "1.2.3", "1.2.3.4"
    return ds


def write_slice(
    path: Path, pixels: np.ndarray, series_uid: str, *, z: float | None, instance: int, modality: str = "CT",
    window: tuple[object, object] | None = (500, 1000), extra: dict | None = None,
) -> None:
    """One signed 16-bit slice at (−10, −12, z) mm, 0.8 × 0.6 mm pixels (rows × columns)."""
    ds = new_dataset()
    ds.Modality, ds.SeriesInstanceUID, ds.InstanceNumber = modality, series_uid, instance
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    if z is not None:
        ds.ImagePositionPatient = [-10.0, -12.0, z]
    ds.PixelSpacing, ds.SliceThickness = [0.8, 0.6], 1.0
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.RescaleSlope, ds.RescaleIntercept = 1, 0
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    for keyword, value in (extra or {}).items():
        setattr(ds, keyword, value)
    ds.PixelData = pixels.astype("<i2").tobytes()
    ds.save_as(path, enforce_file_format=True)


def stored_value(z: float) -> int:
    """The pixel value of the slice at z: raw pixels say which slice a row is."""
    return int(round(z * 10))


def label_value(k: int) -> int:
    return k + 1


def label_square(k: int) -> tuple[slice, slice]:
    """The [row, column] block labelled on label slice k: moves with k, so a shifted slice
    cannot pass by having the same shape."""
    return slice(k, k + 4), slice(2 + k, 5 + k)


def expected_label(z: float) -> tuple[int, np.ndarray]:
    k = round(z / LABEL_DZ)
    mask = np.zeros((SIZE, SIZE), bool)
    mask[label_square(k)] = True
    return label_value(k), mask


def write_label_map(path: Path, *, ras: bool = False) -> None:
    """A label map over the series' region: slice k (z = 0.5 k mm) holds value k + 1 in
    its own square. ``ras`` stores the same labels with the x and y axes flipped (as a
    NIfTI from a RAS tool): same physical content, a different voxel grid."""
    voxels = np.zeros((LABEL_SLICES, SIZE, SIZE), np.uint8)
    for k in range(LABEL_SLICES):
        voxels[k][label_square(k)] = label_value(k)
    origin = [-10.0, -12.0, 0.0]
    direction = [1, 0, 0, 0, 1, 0, 0, 0, 1]
    if ras:
        voxels = voxels[:, ::-1, ::-1].copy()
        origin = [-10.0 + 0.6 * (SIZE - 1), -12.0 + 0.8 * (SIZE - 1), 0.0]
        direction = [-1, 0, 0, 0, -1, 0, 0, 0, 1]
    image = sitk.GetImageFromArray(voxels)
    image.SetSpacing([0.6, 0.8, LABEL_DZ])
    image.SetOrigin(origin)
    image.SetDirection(direction)
    sitk.WriteImage(image, str(path))


def write_series(folder: Path, zs: list[float | None], **slice_options) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    uid = generate_uid()
    for instance, z in enumerate(zs, start=1):
        pixels = np.full((SIZE, SIZE), stored_value(z or 0.0), np.int16)
        write_slice(folder / f"im{instance:02d}.dcm", pixels, uid, z=z, instance=instance, **slice_options)
    return uid


def convert_folder(src: Path) -> tuple[list[dict], list]:
    found = discover([str(src)])
    out = run_stages_locally([ConvertStage(OPTS)], found.table())
    validate_batch(out.table)
    return out.table.to_pylist(), list(found.rejects) + list(out.rejects)


def item_for(path: Path, label_uris: list[str] | None = None) -> dict:
    return {"uri": str(path), "key": path.name, "kind": "dicom", "members": None, "label_uris": label_uris,
            "sha256": "0" * 64, "size_bytes": path.stat().st_size, "attrs": None}


def image(row: dict, role: str) -> dict:
    return next(i for i in row["images"] if i["role"] == role)


def raw_values(row: dict) -> np.ndarray:
    """The slice's stored values, from its lossless ``raw`` image."""
    raw = image(row, "raw")
    return decode_png(raw["data"]) * raw["value_scale"] + raw["value_offset"]


def slice_index(row: dict) -> int:
    return int(row["source_uri"].rsplit("#slice=", 1)[1])


def voi_step(row: dict) -> dict:
    steps = json.loads(row["provenance"]["steps_json"])
    return next(s for s in steps if s["step"] == "dicom.grey")["params"]["voi"]


# --- label maps on the slices' own positions ------------------------------------------------


@pytest.mark.parametrize("ras", [False, True], ids=["stored-like-the-series", "ras-flipped"])
def test_each_slice_of_a_series_with_a_gap_and_uneven_spacing_gets_its_own_label(tmp_path, ras):
    write_series(tmp_path, SERIES_Z)
    write_label_map(tmp_path / "series_seg.nii.gz", ras=ras)
    rows, rejects = convert_folder(tmp_path)
    assert rejects == []
    assert sorted(slice_index(r) for r in rows) == list(range(len(SERIES_Z)))
    for row in rows:
        z = SERIES_Z[slice_index(row)]
        assert (raw_values(row) == stored_value(z)).all()
        value, expected = expected_label(z)
        assert [m["label"] for m in row["masks"]] == [f"series_seg:{value}"], f"slice at z={z}"
        np.testing.assert_array_equal(decode_png(row["masks"][0]["data"]), expected, err_msg=f"slice at z={z}")


def test_enhanced_frames_with_uneven_positions_get_their_own_labels(tmp_path):
    """Frames of an enhanced object place themselves through PlanePositionSequence; they
    are stored out of order and unevenly spaced (0, 1, 3.5, 8 mm)."""
    z_of_frame = [3.5, 0.0, 8.0, 1.0]
    ds = new_dataset("1.2.840.10008.5.1.4.1.1.2.1")
    ds.Modality, ds.SeriesInstanceUID = "CT", generate_uid()
    ds.Rows, ds.Columns, ds.NumberOfFrames = SIZE, SIZE, len(z_of_frame)
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    shared = Dataset()
    measures, orientation = Dataset(), Dataset()
    measures.PixelSpacing, measures.SliceThickness = [0.8, 0.6], 1.0
    orientation.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    shared.PixelMeasuresSequence, shared.PlaneOrientationSequence = Sequence([measures]), Sequence([orientation])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    groups = []
    for z in z_of_frame:
        group, position = Dataset(), Dataset()
        position.ImagePositionPatient = [-10.0, -12.0, z]
        group.PlanePositionSequence = Sequence([position])
        groups.append(group)
    ds.PerFrameFunctionalGroupsSequence = Sequence(groups)
    ds.PixelData = np.stack([np.full((SIZE, SIZE), stored_value(z), "<i2") for z in z_of_frame]).tobytes()
    ds.save_as(tmp_path / "enhanced.dcm", enforce_file_format=True)
    write_label_map(tmp_path / "enhanced_seg.nii.gz", ras=True)
    rows, rejects = convert_folder(tmp_path)  # discovery attaches the map beside the one multi-frame file
    assert rejects == [] and len(rows) == len(z_of_frame)
    for row in rows:
        z = sorted(z_of_frame)[slice_index(row)]
        assert (raw_values(row) == stored_value(z)).all()
        value, expected = expected_label(z)
        assert [m["label"] for m in row["masks"]] == [f"enhanced_seg:{value}"]
        np.testing.assert_array_equal(decode_png(row["masks"][0]["data"]), expected)


def test_a_slice_without_a_position_rejects_the_label_map_naming_the_slice(tmp_path):
    write_series(tmp_path, [0.0, 1.0, None, 3.5])
    write_label_map(tmp_path / "series_seg.nii.gz")
    rows, rejects = convert_folder(tmp_path)
    assert rows == []
    assert [r.reason for r in rejects] == ["label_grid_mismatch"]
    assert "series_seg.nii.gz" in rejects[0].detail
    assert "im03.dcm" in rejects[0].detail and "ImagePositionPatient" in rejects[0].detail


def test_slices_of_different_sizes_reject_the_label_map(tmp_path):
    uid = generate_uid()
    for instance, (z, size) in enumerate([(0.0, SIZE), (1.0, SIZE), (2.0, 16)], start=1):
        pixels = np.zeros((size, size), np.int16)
        write_slice(tmp_path / f"im{instance:02d}.dcm", pixels, uid, z=z, instance=instance)
    write_label_map(tmp_path / "series_seg.nii.gz")
    rows, rejects = convert_folder(tmp_path)
    assert rows == [] and [r.reason for r in rejects] == ["label_grid_mismatch"]
    assert "differ in size" in rejects[0].detail and "32x32" in rejects[0].detail


# --- VOI: a window the file states but cannot supply ---------------------------------------


def ramp() -> np.ndarray:
    return (np.arange(SIZE * SIZE).reshape(SIZE, SIZE) * 3 - 400).astype(np.int16)


def write_mr(path: Path, case: str) -> None:
    extra: dict = {}
    window: tuple[object, object] | None = (500, 1000)
    if case == "empty_window":
        window = (None, None)
    elif case == "width_0":
        window = (300, 0)
    elif case == "empty_voi_lut_sequence":
        window, extra = None, {"VOILUTSequence": Sequence([])}
    elif case == "unknown_function":
        extra = {"VOILUTFunction": "CUBIC"}
    write_slice(path, ramp(), generate_uid(), z=0.0, instance=1, modality="MR", window=window, extra=extra)


@pytest.mark.parametrize("case", ["empty_window", "width_0", "empty_voi_lut_sequence", "unknown_function"])
def test_a_window_the_file_cannot_supply_falls_back_to_the_auto_window(tmp_path, case):
    path = tmp_path / f"{case}.dcm"
    write_mr(path, case)
    rows, reject = convert_item(item_for(path), OPTS)
    assert reject is None, reject
    physical = ramp().astype(float)
    center, width = auto_window(physical, "MR")
    pixels = decode_png(image(rows[0], "input")["data"])
    np.testing.assert_array_equal(pixels, to_uint8_window(physical, center - width / 2, center + width / 2))
    assert pixels.std() > 50  # an image, not flat grey
    assert image(rows[0], "input")["window"] == {"center": center, "width": width}
    step = voi_step(rows[0])
    assert (step["source"], step["center"], step["width"]) == ("default", center, width)
    assert step["file_voi_not_applied"]  # says what was wrong with the file's own


@pytest.mark.parametrize("beside", [{"VOILUTSequence": Sequence([])}, {"VOILUTFunction": ""}])
def test_a_usable_window_beside_an_empty_voi_lut_sequence_or_function_is_applied(tmp_path, beside):
    """An empty VOILUTSequence is no LUT; an empty VOILUTFunction (Type 3) is LINEAR."""
    path = tmp_path / "window.dcm"
    write_slice(path, ramp(), generate_uid(), z=0.0, instance=1, modality="MR", window=(500, 1000), extra=beside)
    rows, reject = convert_item(item_for(path), OPTS)
    assert reject is None, reject
    assert image(rows[0], "input")["window"] == {"center": 500.0, "width": 1000.0}
    assert voi_step(rows[0]) == {"source": "dicom", "center": 500.0, "width": 1000.0}
    pixels = decode_png(image(rows[0], "input")["data"])
    assert pixels[ramp() <= 0].max() == 0 and pixels[ramp() >= 1000].min() == 255


def test_a_voi_lut_is_applied_and_recorded_as_the_input_range_it_covers(tmp_path):
    path = tmp_path / "lut.dcm"
    item = Dataset()
    item.LUTDescriptor = [200, 100, 8]  # 200 entries for values 100..299, 8-bit output
    item.add_new(0x00283006, "US", [int(v) for v in np.linspace(0, 255, 200).round()])  # LUTData
    write_slice(path, ramp(), generate_uid(), z=0.0, instance=1, modality="MR", window=None,
                extra={"VOILUTSequence": Sequence([item])})
    rows, reject = convert_item(item_for(path), OPTS)
    assert reject is None, reject
    assert image(rows[0], "input")["window"] == {"center": 200.0, "width": 200.0}
    assert voi_step(rows[0])["source"] == "dicom_lut"
    pixels = decode_png(image(rows[0], "input")["data"])
    expected = np.asarray(item.LUTData)[np.clip(ramp().astype(int) - 100, 0, 199)]
    np.testing.assert_array_equal(pixels, expected)


def test_a_series_slice_with_window_width_0_keeps_the_series(tmp_path):
    uid = generate_uid()
    for instance, width in enumerate([1000, 0, 1000], start=1):
        write_slice(tmp_path / f"im{instance}.dcm", ramp(), uid, z=float(instance), instance=instance,
                    modality="MR", window=(500, width))
    rows, rejects = convert_folder(tmp_path)
    assert rejects == [] and len(rows) == 3
    sources = {slice_index(r): voi_step(r)["source"] for r in rows}
    assert sources == {0: "dicom", 1: "default", 2: "dicom"}


# --- colour deeper than 8 bits ---------------------------------------------------------------


def write_colour(path: Path, frames: np.ndarray, bits_stored: int, *, palette: np.ndarray | None = None) -> None:
    """A two-frame, 16-bit-allocated secondary capture: RGB, or palette colour with a
    16-bit LUT (``palette`` [entries, 3])."""
    ds = new_dataset("1.2.840.10008.5.1.4.1.1.7")
    ds.Modality, ds.SeriesInstanceUID = "OT", generate_uid()
    ds.Rows, ds.Columns, ds.NumberOfFrames = frames.shape[1], frames.shape[2], frames.shape[0]
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, bits_stored, bits_stored - 1, 0
    if palette is None:
        ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    else:
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "PALETTE COLOR"
        for channel, colour in enumerate(("Red", "Green", "Blue")):
            setattr(ds, f"{colour}PaletteColorLookupTableDescriptor", [len(palette), 0, 16])
            setattr(ds, f"{colour}PaletteColorLookupTableData", palette[:, channel].astype("<u2").tobytes())
    ds.PixelData = frames.astype("<u2").tobytes()
    ds.save_as(path, enforce_file_format=True)


def eight_bit(values: np.ndarray, bits: int) -> np.ndarray:
    return np.rint(values.astype(float) * 255 / (2**bits - 1)).astype(np.uint8)


@pytest.mark.parametrize("bits", [12, 16])
def test_rgb_frames_deeper_than_8_bits_are_scaled_by_bits_stored_alike(tmp_path, bits):
    top = 2**bits - 1
    bright = np.linspace(0, top, SIZE).round()[None, :, None].repeat(SIZE, 0).repeat(3, 2)
    dark = np.minimum(bright, 200)  # the same scale: a dark frame must stay dark
    path = tmp_path / "rgb.dcm"
    write_colour(path, np.stack([bright, dark]), bits)
    rows, reject = convert_item(item_for(path), OPTS)
    assert reject is None, reject
    for row, frame in zip(rows, (bright, dark), strict=True):
        np.testing.assert_array_equal(decode_png(image(row, "input")["data"]), eight_bit(frame, bits))
    assert decode_png(image(rows[0], "input")["data"]).max() == 255


def test_palette_colour_with_a_16_bit_lut_is_scaled_by_the_lut_depth(tmp_path):
    palette = np.stack([np.linspace(0, 65535, 64), np.linspace(65535, 0, 64), np.full(64, 1000)], axis=1).round()
    indices = np.arange(SIZE * SIZE).reshape(SIZE, SIZE) % 64
    frames = np.stack([indices, np.minimum(indices, 3)])  # the second frame uses only dark entries
    path = tmp_path / "palette.dcm"
    write_colour(path, frames, 8, palette=palette)
    rows, reject = convert_item(item_for(path), OPTS)
    assert reject is None, reject
    for row, frame in zip(rows, frames, strict=True):
        np.testing.assert_array_equal(decode_png(image(row, "input")["data"]), eight_bit(palette[frame], 16))
