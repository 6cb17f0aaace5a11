"""Orientation normalisation with an asymmetric phantom: the same anatomy stored with
different direction matrices (RAS NIfTI, LPS NRRD, flipped and permuted axes, coronal
and sagittal acquisitions), with its label map sometimes on another grid, must come out
with the same pixels and the mask on the same anatomy.

Phantom: voxel (i, j, k) of the reference grid (identity direction: i → patient Left,
j → Posterior, k → Superior) has value 100·i + 10·j + k, so every output pixel says
which voxel it came from. The marker label covers i ∈ {3, 4}, j ∈ {5, 6}, k = 8.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from converters.base import ConvertOptions
from converters.discover import discover
from converters.stage import ConvertStage
from curation.images import decode_png
from curation.stages import run_stages_locally
from tests.helpers import TEST_SALT

NI, NJ, NK = 20, 16, 12
SPACING = (1.0, 1.5, 2.0)


def reference_volumes() -> tuple[sitk.Image, sitk.Image]:
    k, j, i = np.meshgrid(np.arange(NK), np.arange(NJ), np.arange(NI), indexing="ij")
    values = (100 * i + 10 * j + k).astype(np.int16)  # array order [k, j, i]
    label = np.zeros_like(values, dtype=np.uint8)
    label[8, 5:7, 3:5] = 1
    image = sitk.GetImageFromArray(values)
    mask = sitk.GetImageFromArray(label)
    for each in (image, mask):
        each.SetSpacing(SPACING)
        each.SetOrigin((-10.0, 20.0, -30.0))
    return image, mask


def voxel_value(i: int, j: int, k: int) -> int:
    return 100 * i + 10 * j + k


#: (image orientation, label orientation, file extension, expected plane)
VARIANTS = [
    ("RAS", "RAS", ".nii.gz", "axial"),  # NIfTI convention
    ("LPS", "LPS", ".nrrd", "axial"),  # DICOM convention
    ("RPI", "LAS", ".mha", "axial"),  # flipped axes, label stored differently: resampled
    ("LIP", "LIP", ".nii.gz", "coronal"),
    ("RSA", "LPS", ".nrrd", "coronal"),
    ("PIL", "PIL", ".mha", "sagittal"),
    ("SAR", "RAS", ".nii.gz", "sagittal"),  # permuted: first index axis runs superior
]


def expected_index(plane: str, i: int, j: int, k: int) -> tuple[int, int, int]:
    """(slice, row, col) where voxel (i, j, k) must appear under the documented convention."""
    if plane == "axial":  # LPS: cols → L (i), rows → P (j), slices → S (k)
        return k, j, i
    if plane == "coronal":  # LIP: cols → L (i), rows → I (NK-1-k), slices → P (j)
        return j, NK - 1 - k, i
    return i, NK - 1 - k, j  # sagittal PIL: cols → P (j), rows → I, slices → L (i)


@pytest.mark.parametrize(("code", "label_code", "ext", "plane"), VARIANTS)
def test_mask_lands_on_the_same_anatomy_in_every_orientation(tmp_path: Path, code, label_code, ext, plane):
    image, mask = reference_volumes()
    src = tmp_path / "src"
    src.mkdir()
    sitk.WriteImage(sitk.DICOMOrient(image, code), str(src / f"phantom{ext}"))
    sitk.WriteImage(sitk.DICOMOrient(mask, label_code), str(src / f"phantom_seg{ext}"))
    found = discover([str(src)])
    assert len(found.items) == 1 and found.rejects == []
    out = run_stages_locally([ConvertStage(ConvertOptions(dataset="t", source="t", salt=TEST_SALT))], found.table())
    assert out.rejects == []
    rows = {int(r["source_uri"].rsplit("=", 1)[1]): r for r in out.table.to_pylist()}
    assert all(f"{plane} slice" in r["caption"] for r in rows.values())

    # pixels: a few voxels land exactly where the convention says
    for i, j, k in [(0, 0, 0), (19, 0, 0), (0, 15, 0), (0, 0, 11), (7, 3, 9)]:
        s, r, c = expected_index(plane, i, j, k)
        raw = next(im for im in rows[s]["images"] if im["role"] == "raw")
        value = decode_png(raw["data"])[r, c] * raw["value_scale"] + raw["value_offset"]
        assert value == voxel_value(i, j, k), (i, j, k)

    # the marker: exactly the expected pixels, on exactly the expected slices
    expected_pixels: dict[int, set[tuple[int, int]]] = {}
    for i in (3, 4):
        for j in (5, 6):
            s, r, c = expected_index(plane, i, j, 8)
            expected_pixels.setdefault(s, set()).add((r, c))
    got: dict[int, set[tuple[int, int]]] = {}
    for s, row in rows.items():
        for m in row["masks"] or []:
            ys, xs = np.nonzero(decode_png(m["data"]))
            got.setdefault(s, set()).update(zip(ys.tolist(), xs.tolist(), strict=True))
    assert got == expected_pixels


def test_spacing_follows_the_displayed_axes():
    image, _ = reference_volumes()
    from converters.volume import PLANE_ORIENTATION, acquisition_plane

    assert acquisition_plane(sitk.DICOMOrient(image, "LIP")) == "coronal"
    oriented = sitk.DICOMOrient(sitk.DICOMOrient(image, "PIL"), PLANE_ORIENTATION["sagittal"])
    # sagittal display: columns along P (j: 1.5 mm), rows along I (k: 2 mm), slices along L (i: 1 mm)
    assert oriented.GetSpacing() == pytest.approx((1.5, 2.0, 1.0))
