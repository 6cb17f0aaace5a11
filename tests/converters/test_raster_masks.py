"""Masks of 2D rasters land on the pixels written to the shard: an EXIF-oriented image's
mask without a tag of its own is read as drawn on the image as shown, unless only the
stored grid fits it (then it gets the image's transpose); a mask with its own
Orientation tag is shown by it; lossy JPEG masks are binarised; sparse IMIS masks follow
the image too."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.sparse
from PIL import Image

from converters.base import ConvertOptions
from converters.discover import discover
from converters.orientation import exif_orientation, orient_mask, upright
from converters.stage import ConvertStage
from curation.images import decode_png
from curation.stages import run_stages_locally
from tests.helpers import TEST_SALT

LESION = (slice(5, 15), slice(10, 30))  # rows, columns of the lesion in the *stored* pixels


def convert(source: Path) -> tuple[list[dict[str, Any]], list[Any]]:
    found = discover([str(source)])
    out = run_stages_locally([ConvertStage(ConvertOptions(dataset="t", source="t", salt=TEST_SALT))], found.table())
    return out.table.to_pylist(), list(found.rejects) + list(out.rejects)


def with_orientation(orientation: int) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif


def save_image(path: Path, height: int, width: int, orientation: int) -> None:
    """A dark RGB image with a bright lesion at ``LESION`` (stored pixels), tagged ``orientation``."""
    pixels = np.full((height, width, 3), 30, np.uint8)
    pixels[LESION] = 230
    path.parent.mkdir(parents=True, exist_ok=True)
    extra: dict[str, Any] = {"quality": 100} if path.suffix == ".jpg" else {}
    Image.fromarray(pixels).save(path, exif=with_orientation(orientation), **extra)


def stored_mask(height: int, width: int) -> np.ndarray:
    mask = np.zeros((height, width), np.uint8)
    mask[LESION] = 255
    return mask


def lesion_in_shard(row: dict[str, Any]) -> np.ndarray:
    """Where the lesion is in the image as written (its bright pixels)."""
    image = next(i for i in row["images"] if i["role"] == "input")
    return np.asarray(decode_png(image["data"]).mean(axis=2) > 128)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orient_mask_is_the_transpose_pillow_gives_the_image(orientation):
    """The numpy transposes of masks equal ``exif_transpose`` on an image, for every tag
    value, through the PNG path (``exif_transpose``) and the TIFF path (Pillow's loader)."""
    stored = (np.arange(5 * 7).reshape(5, 7) * 7).astype(np.uint8)  # no symmetry: every transpose differs
    for fmt in ("PNG", "TIFF"):
        buffer = io.BytesIO()
        Image.fromarray(stored).save(buffer, fmt, exif=with_orientation(orientation))
        shown, applied = upright(Image.open(io.BytesIO(buffer.getvalue())))
        assert applied == orientation
        np.testing.assert_array_equal(np.asarray(shown), orient_mask(stored, orientation))
    stack = np.stack([stored, stored[::-1]])
    np.testing.assert_array_equal(orient_mask(stack, orientation)[1], orient_mask(stored[::-1], orientation))


def test_out_of_range_orientation_counts_as_none():
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((4, 6), np.uint8)).save(buffer, "PNG", exif=with_orientation(9))
    assert exif_orientation(Image.open(io.BytesIO(buffer.getvalue()))) is None
    assert upright(Image.open(io.BytesIO(buffer.getvalue())))[0].size == (6, 4)


@pytest.mark.parametrize(
    ("suffix", "height", "width", "orientation"), [(".jpg", 40, 60, 6), (".jpg", 40, 60, 8), (".tif", 40, 60, 6)]
)
def test_mask_that_fits_only_the_stored_pixels_gets_the_image_transpose(tmp_path, suffix, height, width, orientation):
    """A 40x60 image turned by 90° is shown 60x40: a 40x60 mask can only have been drawn
    on the stored pixels."""
    save_image(tmp_path / "images" / f"x{suffix}", height, width, orientation)
    (tmp_path / "masks").mkdir()
    Image.fromarray(stored_mask(height, width)).save(tmp_path / "masks" / "x.png")
    rows, rejects = convert(tmp_path)
    assert rejects == []
    (row,) = rows
    (mask,) = row["masks"]
    binary = decode_png(mask["data"])
    np.testing.assert_array_equal(binary, lesion_in_shard(row))  # the mask covers the lesion, pixel for pixel
    assert mask["area_px"] == 10 * 20
    steps = json.loads(row["provenance"]["steps_json"])
    assert next(s for s in steps if s["step"] == "raster.read")["params"]["exif_orientation"] == orientation


def test_rotated_jpeg_mask_lands_at_the_rotated_position(tmp_path):
    """Orientation 6 shows the image rotated 90° clockwise: stored (r, c) of an H-row image
    is shown at (c, H - 1 - r), so the stored lesion rows 5-14, columns 10-29 of the 40x60
    image are shown at rows 10-29, columns 25-34 of the 60-row, 40-column image."""
    save_image(tmp_path / "images" / "x.jpg", 40, 60, 6)
    (tmp_path / "masks").mkdir()
    Image.fromarray(stored_mask(40, 60)).save(tmp_path / "masks" / "x.png")
    rows, rejects = convert(tmp_path)
    assert rejects == []
    (mask,) = rows[0]["masks"]
    assert decode_png(mask["data"]).shape == (60, 40)
    assert mask["bbox_xyxy"] == [25, 10, 35, 30]


def test_mask_with_its_own_orientation_tag_is_shown_by_it(tmp_path):
    """A mask tagged Orientation=1 was drawn on the image as shown: it is not transposed;
    a mask carrying the image's tag (6) is transposed by its own tag, once."""
    save_image(tmp_path / "a" / "images" / "x.jpg", 40, 60, 6)
    shown = np.rot90(stored_mask(40, 60), -1)
    (tmp_path / "a" / "masks").mkdir()
    Image.fromarray(shown).save(tmp_path / "a" / "masks" / "x.png", exif=with_orientation(1))
    save_image(tmp_path / "b" / "images" / "x.jpg", 40, 60, 6)
    (tmp_path / "b" / "masks").mkdir()
    Image.fromarray(stored_mask(40, 60)).save(tmp_path / "b" / "masks" / "x.png", exif=with_orientation(6))
    for folder in ("a", "b"):
        rows, rejects = convert(tmp_path / folder)
        assert rejects == []
        (mask,) = rows[0]["masks"]
        np.testing.assert_array_equal(decode_png(mask["data"]), lesion_in_shard(rows[0]))


@pytest.mark.parametrize(("height", "width", "orientation"), [(40, 60, 6), (40, 40, 6), (40, 60, 3)])
def test_mask_without_a_tag_that_fits_the_shown_image_is_read_as_drawn_on_it(tmp_path, height, width, orientation):
    """LabelMe and CVAT apply EXIF before anyone draws: a mask of the shown size — the only
    reading for a non-square turned image, the default where both grids have one shape
    (a square image, a 180° turn) — lands on the lesion as shown, untouched."""
    save_image(tmp_path / "images" / "x.jpg", height, width, orientation)
    (tmp_path / "masks").mkdir()
    Image.fromarray(orient_mask(stored_mask(height, width), orientation)).save(tmp_path / "masks" / "x.png")
    rows, rejects = convert(tmp_path)
    assert rejects == []
    (mask,) = rows[0]["masks"]
    np.testing.assert_array_equal(decode_png(mask["data"]), lesion_in_shard(rows[0]))
    assert mask["area_px"] == 10 * 20


def test_a_mask_that_fits_neither_grid_is_rejected_saying_both(tmp_path):
    save_image(tmp_path / "images" / "x.jpg", 40, 60, 6)
    (tmp_path / "masks").mkdir()
    Image.fromarray(np.zeros((30, 30), np.uint8)).save(tmp_path / "masks" / "x.png")
    rows, rejects = convert(tmp_path)
    assert rows == [] and [r.reason for r in rejects] == ["mask_size_mismatch"]
    assert "the image is 40x60 (or 60x40, as stored before EXIF orientation 6)" in rejects[0].detail


def test_lossy_jpeg_mask_is_binarised(tmp_path):
    """JPEG blurs 0/255 into many grey levels: one mask at > 127, not one per level."""
    Image.fromarray(np.full((40, 60), 90, np.uint8)).save(tmp_path / "x.png")
    Image.fromarray(stored_mask(40, 60)).save(tmp_path / "x_mask.jpg", quality=75)
    rows, rejects = convert(tmp_path)
    assert rejects == []
    (mask,) = rows[0]["masks"]
    np.testing.assert_array_equal(decode_png(mask["data"]), stored_mask(40, 60) > 0)


def test_sparse_masks_follow_the_image_orientation(tmp_path):
    """IMIS sparse masks are flattened on the stored grid, like a mask image without EXIF."""
    save_image(tmp_path / "ct_0001.png", 40, 60, 8)
    classes = np.zeros((2, 40, 60), bool)
    classes[1][LESION] = True
    scipy.sparse.save_npz(tmp_path / "ct_0001.npz", scipy.sparse.csr_matrix(classes.reshape(2, -1)))
    rows, rejects = convert(tmp_path)
    assert rejects == []
    (mask,) = rows[0]["masks"]
    np.testing.assert_array_equal(decode_png(mask["data"]), lesion_in_shard(rows[0]))
    assert mask["bbox_xyxy"] == [5, 30, 15, 50]  # ROTATE_90: stored (r, c) is shown at (W - 1 - c, r)
