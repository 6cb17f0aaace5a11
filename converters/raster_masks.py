"""2D masks for rasters: mask images (binary or indexed) and IMIS-Bench sparse archives.

* A **mask image** is binary (two values, e.g. 0/255 or 0/1) → one mask, or indexed
  (palette image or a few grey levels / colours) → one mask per non-zero value. An RGB
  mask is indexed by its distinct colours (black is background). Masks must have the
  image's height and width exactly: a different size is a ``mask_size_mismatch`` reject
  (we do not guess a resize for 2D data: the pairing itself is probably wrong).
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
from curation.images import mask_record

#: more distinct values than this in a mask image: it is not a label image
MAX_MASK_LABELS = 64


def mask_label_array(data: bytes, uri: str) -> tuple[np.ndarray, dict[int, str]]:
    """(label array [H, W] with 0 = background, value → default name) of a mask image."""
    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ConversionError("bad_label_map", f"{uri}: mask is not a readable image ({str(exc)[:200]})") from exc
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
    values = [int(v) for v in np.unique(labels) if v != 0]
    if len(values) > MAX_MASK_LABELS:
        raise ConversionError("bad_label_map", f"{uri}: {len(values)} distinct values; not a binary or indexed mask")
    if len(values) == 1:
        names = {values[0]: _stem(uri)}
    else:
        names = {v: f"{_stem(uri)}_{v}" for v in values}
    return labels, names


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


def raster_masks(label_uris: list[str], height: int, width: int, opts: ConvertOptions) -> list[dict[str, Any]]:
    """``masks[]`` records of every mask attached to a raster of size (height, width)."""
    configured = dict(opts.label_names)
    masks: list[dict[str, Any]] = []
    for uri in label_uris:
        data = read_bytes(uri)
        if member_path(uri).lower().endswith(".npz"):
            stack = sparse_mask_stack(data, uri, height, width)
            for index in range(stack.shape[0]):
                if stack[index].any():
                    name = configured.get(index, f"class_{index}")
                    masks.append(mask_record(stack[index], label=f"{_stem(uri)}:{index}", category=name))
            continue
        labels, names = mask_label_array(data, uri)
        if labels.shape != (height, width):
            raise ConversionError(
                "mask_size_mismatch", f"{uri}: mask is {labels.shape[1]}x{labels.shape[0]}, the image is {width}x{height}"
            )
        for value, default in names.items():
            masks.append(
                mask_record(labels == value, label=f"{_stem(uri)}:{value}", category=configured.get(value, default))
            )
    return masks


def _stem(uri: str) -> str:
    name = os.path.basename(member_path(uri))
    return name.rsplit(".", 1)[0]
