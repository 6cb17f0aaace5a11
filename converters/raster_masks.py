"""2D masks for rasters: mask images (binary or indexed) and IMIS-Bench sparse archives.

* A **mask image** is binary (two values, e.g. 0/255 or 0/1) → one mask, or indexed
  (palette image or a few grey levels / colours) → one mask per non-zero value. An RGB
  mask is indexed by its distinct colours (black is background). Masks must have the
  image's height and width exactly: a different size is a ``mask_size_mismatch`` reject
  (we do not guess a resize for 2D data: the pairing itself is probably wrong).
  Values are read raw (a palette image by index, not by colour); a lossy JPEG mask is
  binarised at > 127 instead, since compression blurs its values.
* **Orientation**: masks land on the image as written to the shard. A mask without an
  EXIF Orientation tag of its own is read as drawn on the image as shown, unless only the
  image's *stored* grid fits it, when it gets the image's transpose; a mask with its own
  tag is shown by that tag (:func:`mask_on_image`, :mod:`converters.orientation`).
* An **IMIS-Bench** ``.npz`` is a ``scipy.sparse`` CSR matrix of shape ``[classes, H·W]``
  (as ``scipy.sparse.save_npz`` writes it): row *c* reshaped to ``(H, W)`` is class *c*.
  Names come from ``ConvertOptions.label_names`` (row index → name), else ``class_<c>``.
"""

from __future__ import annotations

import io
import os
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from converters.base import ConversionError, ConvertOptions
from converters.io import member_path, read_bytes
from converters.orientation import SWAPS_AXES, UPRIGHT, exif_orientation, orient_mask, upright
from curation.images import mask_record

#: more distinct values than this in a mask image: it is not a label image
MAX_MASK_LABELS = 64


#: formats whose compression changes pixel values: label indices cannot survive it
LOSSY_FORMATS = frozenset({"JPEG", "MPO"})


def mask_label_array(data: bytes, uri: str) -> tuple[np.ndarray, dict[int, str], bool]:
    """(label array [H, W] with 0 = background, value → default name, whether the mask
    carries its own EXIF Orientation) of a mask image, as the mask itself is shown."""
    try:
        img = Image.open(io.BytesIO(data))
        own = exif_orientation(img)  # before decoding: Pillow's TIFF loader applies and drops it
        frame, _ = upright(img)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ConversionError("bad_label_map", f"{uri}: mask is not a readable image ({str(exc)[:200]})") from exc
    labels = _label_values(frame, img.format)
    return labels, _label_names(labels, uri), own is not None


def _label_values(img: Image.Image, file_format: str | None) -> np.ndarray:
    """The raw label values of a decoded mask image (int32 [H, W], 0 = background)."""
    if file_format in LOSSY_FORMATS:
        return (np.asarray(img.convert("L")) > 127).astype(np.int32)
    if img.mode == "P":
        labels = np.asarray(img).astype(np.int32)
    elif img.mode in ("RGB", "RGBA"):
        rgb = np.asarray(img.convert("RGB")).astype(np.int32)
        packed = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
        colours, labels = np.unique(packed, return_inverse=True)
        labels = labels.reshape(packed.shape)
        if colours[0] != 0:  # no black: every colour is a structure
            labels = labels + 1
    else:
        labels = np.asarray(img.convert("I") if img.mode not in ("L", "1") else img.convert("L")).astype(np.int32)
    return np.asarray(labels, dtype=np.int32)


def _label_names(labels: np.ndarray, uri: str) -> dict[int, str]:
    """Value → default name of each label in ``labels`` (the file stem, numbered when
    there are several); too many values is not a label image."""
    values = [int(v) for v in np.unique(labels) if v != 0]
    if len(values) > MAX_MASK_LABELS:
        raise ConversionError("bad_label_map", f"{uri}: {len(values)} distinct values; not a binary or indexed mask")
    if len(values) == 1:
        names = {values[0]: _stem(uri)}
    else:
        names = {v: f"{_stem(uri)}_{v}" for v in values}
    return names


def sparse_mask_stack(data: bytes, uri: str, height: int, width: int) -> np.ndarray:
    """IMIS-Bench sparse masks as a bool array [classes, H, W]."""
    import scipy.sparse

    try:
        matrix = scipy.sparse.load_npz(io.BytesIO(data))
    except Exception as exc:  # numpy/zipfile/zlib raise many types on damaged archives
        if isinstance(exc, MemoryError):
            raise
        raise ConversionError("bad_label_map", f"{uri}: not a scipy.sparse .npz mask archive ({str(exc)[:200]})") from exc
    if matrix.ndim != 2 or matrix.shape[1] != height * width:
        raise ConversionError(
            "mask_size_mismatch",
            f"{uri}: sparse masks have shape {matrix.shape}, the image needs [classes, {height}*{width}={height * width}]",
        )
    if matrix.shape[0] > 4096:
        raise ConversionError("bad_label_map", f"{uri}: {matrix.shape[0]} classes is not a mask archive")
    try:
        dense = matrix.tocsr().toarray() != 0
    except (ValueError, IndexError) as exc:
        raise ConversionError("bad_label_map", f"{uri}: inconsistent sparse matrix ({str(exc)[:200]})") from exc
    return dense.reshape(matrix.shape[0], height, width)


def stored_shape(height: int, width: int, orientation: int) -> tuple[int, int]:
    """(height, width) of an image's stored pixels, given its shape as shown and the EXIF
    orientation that was applied (5-8 swap the axes)."""
    return (width, height) if orientation in SWAPS_AXES else (height, width)


def mask_on_image(
    data: bytes, uri: str, height: int, width: int, orientation: int = UPRIGHT
) -> tuple[np.ndarray, dict[int, str]]:
    """:func:`mask_label_array` of a mask image on the image it annotates, (height, width)
    as written to the shard after the image's EXIF ``orientation``.

    Which grid a mask without its own Orientation tag was drawn on: the image as shown
    (LabelMe and CVAT apply EXIF before anyone draws; also what medcurate assumed before
    it turned images), unless only the image's *stored* grid fits it — a non-square image
    turned by 90° — in which case it gets the image's turn. A mask with its own tag is
    shown by that tag.
    """
    labels, names, tagged = mask_label_array(data, uri)
    stored = stored_shape(height, width, orientation)
    if not tagged and labels.shape != (height, width) and labels.shape == stored:
        labels = orient_mask(labels, orientation)  # drawn on the stored pixels: turn it with the image
    if labels.shape != (height, width):
        how = f" (or {stored[1]}x{stored[0]}, as stored before EXIF orientation {orientation})" if stored != (height, width) else ""
        raise ConversionError(
            "mask_size_mismatch", f"{uri}: mask is {labels.shape[1]}x{labels.shape[0]}, the image is {width}x{height}{how}"
        )
    return labels, names


def raster_masks(
    label_uris: list[str], height: int, width: int, opts: ConvertOptions, orientation: int = UPRIGHT
) -> list[dict[str, Any]]:
    """``masks[]`` records of every mask attached to a raster of size (height, width) as
    written, after the EXIF ``orientation`` transpose (which the masks get too)."""
    configured = dict(opts.label_names)
    masks: list[dict[str, Any]] = []
    for uri in label_uris:
        data = read_bytes(uri)
        if member_path(uri).lower().endswith(".npz"):
            stack = orient_mask(sparse_mask_stack(data, uri, *stored_shape(height, width, orientation)), orientation)
            for index in range(stack.shape[0]):
                if stack[index].any():
                    name = configured.get(index, f"class_{index}")
                    masks.append(mask_record(stack[index], label=f"{_stem(uri)}:{index}", category=name))
            continue
        labels, names = mask_on_image(data, uri, height, width, orientation)
        for value, default in names.items():
            masks.append(
                mask_record(labels == value, label=f"{_stem(uri)}:{value}", category=configured.get(value, default))
            )
    return masks


def _stem(uri: str) -> str:
    name = os.path.basename(member_path(uri))
    return name.rsplit(".", 1)[0]
