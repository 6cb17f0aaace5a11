"""Label maps attached to volumes: a 2D image stored as a volume file (an ultrasound frame
or a radiograph in .mha / .nii) takes its 2D label map on the same pixels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from converters.base import ConversionError, ConvertOptions
from converters.discover import discover
from converters.stage import ConvertStage
from curation.images import decode_png
from curation.stages import run_stages_locally
from tests.helpers import TEST_SALT


@pytest.mark.parametrize("ext", [".mha", ".nii.gz"])
def test_a_2d_volume_file_takes_its_2d_label_map_pixel_for_pixel(tmp_path: Path, ext: str):
    pixels = (np.arange(30 * 40).reshape(30, 40) % 200).astype(np.uint8)
    label = np.zeros((30, 40), np.uint8)
    label[5:15, 10:20] = 1  # a 10 x 10 structure, off centre: a flip or transpose would move it
    image = sitk.GetImageFromArray(pixels)
    image.SetSpacing((0.3, 0.4))
    mask = sitk.GetImageFromArray(label)
    mask.CopyInformation(image)
    sitk.WriteImage(image, str(tmp_path / f"case1{ext}"))
    sitk.WriteImage(mask, str(tmp_path / f"case1_seg{ext}"))

    found = discover([str(tmp_path)])
    out = run_stages_locally([ConvertStage(ConvertOptions(dataset="t", source="t", salt=TEST_SALT, modality="US"))], found.table())
    assert found.rejects == [] and out.rejects == []
    (row,) = out.table.to_pylist()
    (written,) = row["masks"]
    got = decode_png(written["data"])
    assert got.shape == (30, 40)
    np.testing.assert_array_equal(np.argwhere(got), np.argwhere(label))  # the same 100 pixels
    raw = next(i for i in row["images"] if i["role"] == "raw")
    np.testing.assert_array_equal(decode_png(raw["data"]) * raw["value_scale"] + raw["value_offset"], pixels)


def test_a_2d_label_map_on_a_one_slice_volume_away_from_the_origin(tmp_path: Path):
    """A one-slice NIfTI at z = -30 mm with a 2D map of its grid: the map is that slice
    (not placed at z = 0 and sampled empty); a map of another grid is a reject."""
    from converters.labels import load_label_volumes

    volume = sitk.GetImageFromArray(np.zeros((1, 12, 10), np.int16))
    volume.SetOrigin((5.0, -7.0, -30.0))
    volume.SetSpacing((0.5, 0.5, 3.0))
    label = np.zeros((12, 10), np.uint8)
    label[2:5, 3:9] = 2
    mask = sitk.GetImageFromArray(label)
    mask.SetOrigin((5.0, -7.0))
    mask.SetSpacing((0.5, 0.5))
    sitk.WriteImage(mask, str(tmp_path / "slice_seg.mha"))
    opts = ConvertOptions(dataset="t", source="t", salt=TEST_SALT)
    ((array, names, _),) = load_label_volumes([str(tmp_path / "slice_seg.mha")], volume, opts)
    np.testing.assert_array_equal(array[0], label)
    assert list(names) == [2]
    mask.SetOrigin((6.0, -7.0))  # one millimetre off: not this slice's grid
    sitk.WriteImage(mask, str(tmp_path / "moved_seg.mha"))
    with pytest.raises(ConversionError) as caught:
        load_label_volumes([str(tmp_path / "moved_seg.mha")], volume, opts)
    assert caught.value.reason == "label_grid_mismatch" and "moved_seg.mha" in caught.value.detail
