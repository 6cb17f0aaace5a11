"""NIfTI-2 volumes (which ITK 5.4 does not read) come out exactly as the same volume
stored as NIfTI-1: same voxels, same geometry, same slices and masks."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from converters.base import ConversionError, ConvertOptions
from converters.discover import discover
from converters.nifti import is_nifti2
from converters.stage import ConvertStage
from converters.volume import read_volume
from curation.stages import run_stages_locally
from tests.converters.test_geometry import reference_volumes
from tests.helpers import TEST_SALT

NIBABEL_NIFTI2 = Path(nib.__file__).parent / "tests" / "data" / "example_nifti2.nii.gz"


def as_nifti2(nifti1: Path, target: Path) -> None:
    """The same image and header fields, saved by nibabel as NIfTI-2."""
    nib.save(nib.Nifti2Image.from_image(nib.load(nifti1)), target)


def convert(source: Path) -> tuple[list[dict], list]:
    found = discover([str(source)])
    out = run_stages_locally([ConvertStage(ConvertOptions(dataset="t", source="t", salt=TEST_SALT))], found.table())
    rows = sorted(out.table.to_pylist(), key=lambda r: r["source_uri"])
    return rows, found.rejects + out.rejects


def assert_same_geometry(ours: sitk.Image, reference: sitk.Image) -> None:
    assert ours.GetSize() == reference.GetSize()
    assert ours.GetPixelID() == reference.GetPixelID()
    np.testing.assert_allclose(ours.GetSpacing(), reference.GetSpacing(), atol=1e-6)
    np.testing.assert_allclose(ours.GetOrigin(), reference.GetOrigin(), atol=1e-4)  # mm
    np.testing.assert_allclose(ours.GetDirection(), reference.GetDirection(), atol=1e-6)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(ours), sitk.GetArrayFromImage(reference))


@pytest.mark.parametrize("orientation", ["RAS", "SAR"])  # axial as stored, and a permuted sagittal
def test_a_nifti2_study_converts_to_the_same_rows_as_its_nifti1_twin(tmp_path: Path, orientation: str):
    image, mask = reference_volumes()
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    sitk.WriteImage(sitk.DICOMOrient(image, orientation), str(one / "phantom.nii.gz"))
    sitk.WriteImage(sitk.DICOMOrient(mask, orientation), str(one / "phantom_seg.nii.gz"))
    for name in ("phantom.nii.gz", "phantom_seg.nii.gz"):
        as_nifti2(one / name, two / name)
        assert is_nifti2(str(two / name)) and not is_nifti2(str(one / name))

    assert_same_geometry(read_volume(str(two / "phantom.nii.gz")), read_volume(str(one / "phantom.nii.gz")))
    expected, expected_rejects = convert(one)
    got, rejects = convert(two)
    assert rejects == expected_rejects == []
    assert len(got) == len(expected) == image.GetSize()[{"RAS": 2, "SAR": 0}[orientation]]
    for ours, theirs in zip(got, expected, strict=True):
        assert ours["caption"] == theirs["caption"]
        assert [i["data"] for i in ours["images"]] == [i["data"] for i in theirs["images"]]
        assert [m["data"] for m in ours["masks"] or []] == [m["data"] for m in theirs["masks"] or []]
    marker_slices = {"RAS": 1, "SAR": 2}[orientation]  # the marker: k = 8 axially, i ∈ {3, 4} sagittally
    assert sum(len(r["masks"] or []) for r in got) == marker_slices


def test_scaling_byte_order_and_four_dimensions_survive_the_rewrite(tmp_path: Path):
    """nibabel's own NIfTI-2 example (4D, oblique), and a big-endian file whose stored
    integers carry a slope and an intercept."""
    shipped = read_volume(str(NIBABEL_NIFTI2))
    reference: nib.Nifti2Image = nib.load(NIBABEL_NIFTI2)
    assert shipped.GetSize() == reference.shape
    np.testing.assert_array_equal(sitk.GetArrayFromImage(shipped), np.asanyarray(reference.dataobj).transpose(3, 2, 1, 0))
    np.testing.assert_allclose(shipped.GetSpacing()[:3], reference.header.get_zooms()[:3], atol=1e-6)

    stored = (np.arange(6 * 5 * 4, dtype=np.int16).reshape(6, 5, 4) - 60) * 7
    affine = np.diag([0.7, 0.8, 2.5, 1.0])
    affine[:3, 3] = (12.5, -30.0, 4.0)
    header = nib.Nifti2Header(endianness=">")
    header.set_data_dtype(">i2")
    header.set_data_shape(stored.shape)
    header.set_sform(affine, code=1)
    header.set_qform(affine, code=1)
    header.set_slope_inter(0.5, -1024.0)
    header["vox_offset"] = 544  # written by hand: nibabel's save would drop a slope int16 data does not need
    (tmp_path / "big.nii").write_bytes(header.binaryblock + b"\0" * 4 + stored.astype(">i2").tobytes(order="F"))
    np.testing.assert_allclose(nib.load(tmp_path / "big.nii").get_fdata(), stored * 0.5 - 1024.0)  # a valid file
    assert (tmp_path / "big.nii").read_bytes()[:4] == (540).to_bytes(4, "big")
    volume = read_volume(str(tmp_path / "big.nii"))
    np.testing.assert_allclose(sitk.GetArrayFromImage(volume), stored.transpose(2, 1, 0) * 0.5 - 1024.0)
    np.testing.assert_allclose(volume.GetSpacing(), (0.7, 0.8, 2.5), atol=1e-6)
    np.testing.assert_allclose(volume.GetOrigin(), (-12.5, 30.0, 4.0), atol=1e-5)  # RAS → ITK's LPS


def test_nifti2_files_nifti1_cannot_hold_or_that_are_cut_off_are_rejects(tmp_path: Path):
    nib.save(nib.Nifti2Image(np.zeros((40000, 2, 1), np.uint8), np.eye(4)), tmp_path / "long.nii")
    nib.save(nib.Nifti2Image(np.arange(4096, dtype=np.int16).reshape(16, 16, 16), np.eye(4)), tmp_path / "whole.nii")
    whole = (tmp_path / "whole.nii").read_bytes()
    (tmp_path / "cut.nii").write_bytes(whole[: len(whole) // 2])
    for name, reason in (("long.nii", "unsupported_format"), ("cut.nii", "truncated")):
        with pytest.raises(ConversionError) as caught:
            read_volume(str(tmp_path / name))
        assert caught.value.reason == reason and name in caught.value.detail
    assert "40000" in convert_rejects(tmp_path / "long.nii")


def convert_rejects(path: Path) -> str:
    """The detail of the one reject a conversion of ``path``'s folder makes for it."""
    _, rejects = convert(path.parent)
    return next(r.detail for r in rejects if r.source_uri.endswith(path.name))


@pytest.mark.parametrize("version", [1, 2])
def test_a_header_with_an_infinite_transform_is_a_reject_not_a_hung_reader(tmp_path: Path, version: int):
    """ITK's reader never returns on an infinite sform element (found by fuzzing a NIfTI-2
    whose float64 srow overflowed float32 in the rewrite; a damaged NIfTI-1 can say so
    directly). The header is checked before ITK sees it."""
    header = (nib.Nifti1Header if version == 1 else nib.Nifti2Header)()
    stored = np.zeros((4, 4, 3), np.int16)
    header.set_data_dtype(np.int16)
    header.set_data_shape(stored.shape)
    header.set_sform(np.eye(4), code=2)
    far = np.inf if version == 1 else 1e300  # 1e300: inf once NIfTI-1 holds it as float32
    header["srow_x"] = [0.0, far, 0.0, 0.0]  # this sform, as NIfTI-1, hangs ITK 5.4's reader
    header["srow_y"] = [0.0, far, 0.0, 0.0]
    header["srow_z"] = [0.0, 0.0, 2.0, 0.0]
    header["vox_offset"] = {1: 352, 2: 544}[version]
    path = tmp_path / "damaged.nii"
    path.write_bytes(header.binaryblock + b"\0" * 4 + stored.tobytes(order="F"))
    with pytest.raises(ConversionError) as caught:
        read_volume(str(path))
    assert caught.value.reason == "bad_header" and "sform is not finite" in caught.value.detail


def test_an_upper_case_gzipped_name_is_read_whole(tmp_path: Path):
    """Gzip is told by its magic bytes: a complete ``CT.NII.GZ`` is not "truncated"."""
    ramp = np.arange(20 * 16 * 16, dtype=np.int16).reshape(20, 16, 16)
    sitk.WriteImage(sitk.GetImageFromArray(ramp), str(tmp_path / "ct.nii.gz"))
    (tmp_path / "ct.nii.gz").rename(tmp_path / "CT.NII.GZ")
    np.testing.assert_array_equal(sitk.GetArrayFromImage(read_volume(str(tmp_path / "CT.NII.GZ"))), ramp)
