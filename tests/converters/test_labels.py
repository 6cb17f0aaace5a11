"""Label maps attached to volumes: a 2D image stored as a volume file (an ultrasound frame
or a radiograph in .mha / .nii) takes its 2D label map on the same pixels."""

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
