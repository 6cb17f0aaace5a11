"""EXIF orientation of 2D rasters, applied the same way to an image and to its masks.

Camera JPEGs often store their pixels sideways with an EXIF ``Orientation`` tag (1-8)
telling viewers how to show them. Rasters are written to shards as shown
(:func:`upright`, which is Pillow's ``ImageOps.exif_transpose``), so whatever is
aligned with them must get the same transpose:

* a mask image without an Orientation tag of its own is taken as drawn on the image as
  shown (annotation tools such as LabelMe and CVAT apply EXIF before anyone draws),
  unless only the image's *stored* grid fits it — a non-square image turned by 90° —
  when it gets the image's transpose (:func:`orient_mask`;
  ``converters.raster_masks.mask_on_image`` decides);
* a mask that carries its own tag is shown by its own tag, like any image.

Every reader of rasters (the converter, the recipes) goes through these functions, so an
image and its mask, or the two images of a pair, cannot be oriented differently.
"""

from __future__ import annotations

import numpy as np
from PIL import ExifTags, Image, ImageOps

#: no transpose: the pixels are stored as they are shown
UPRIGHT = 1
#: orientations whose transpose swaps height and width
SWAPS_AXES = frozenset({5, 6, 7, 8})
_ORIENTATION_TAG = ExifTags.Base.Orientation


def exif_orientation(img: Image.Image) -> int | None:
    """The EXIF Orientation tag of ``img`` (1-8), or None when it has none.

    Read it before the frame is loaded: Pillow's TIFF loader applies the tag itself and
    drops it. A tag with a value outside 1-8, or EXIF data Pillow cannot parse, counts as
    no tag (viewers, and ``exif_transpose``, then show the pixels as stored).
    """
    try:
        value = img.getexif().get(_ORIENTATION_TAG)
    except (OSError, SyntaxError, ValueError, TypeError, KeyError, IndexError):  # damaged EXIF block
        return None
    return value if isinstance(value, int) and 1 <= value <= 8 else None


def upright(frame: Image.Image) -> tuple[Image.Image, int]:
    """A copy of ``frame`` as viewers show it, and the orientation applied (1: none).

    Why a pair: the masks of the frame need the same transpose (:func:`orient_mask`).
    ``frame`` should not be loaded yet (see :func:`exif_orientation`); for a TIFF the
    transpose happens as Pillow loads the copy, for other formats ``exif_transpose`` does it.
    """
    orientation = exif_orientation(frame) or UPRIGHT
    copy = frame.copy()
    if orientation == UPRIGHT:
        return copy, UPRIGHT
    return ImageOps.exif_transpose(copy), orientation


def orient_mask(mask: np.ndarray, orientation: int) -> np.ndarray:
    """``mask`` ([..., H, W]: one label array or a stack) transposed as an image with EXIF
    ``orientation`` is shown, i.e. exactly as :func:`upright` transposes that image.

    Why numpy and not Pillow: label arrays (int32 indices) and sparse mask stacks have no
    Pillow mode; the equivalence with ``exif_transpose`` is checked for all eight values
    by ``tests/converters/test_raster_masks.py``.
    """
    rows, cols = mask.ndim - 2, mask.ndim - 1
    if orientation == 2:  # mirrored left-right
        return np.flip(mask, cols)
    if orientation == 3:  # rotated 180
        return np.flip(mask, (rows, cols))
    if orientation == 4:  # mirrored top-bottom
        return np.flip(mask, rows)
    if orientation == 5:  # transposed (main diagonal)
        return np.swapaxes(mask, rows, cols)
    if orientation == 6:  # shown rotated 90 clockwise
        return np.rot90(mask, -1, axes=(rows, cols))
    if orientation == 7:  # transversed (anti-diagonal)
        return np.swapaxes(np.flip(mask, (rows, cols)), rows, cols)
    if orientation == 8:  # shown rotated 90 counter-clockwise
        return np.rot90(mask, 1, axes=(rows, cols))
    return mask
