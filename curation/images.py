"""Image and mask encoding shared by converters, recipes and synthesis.

PNG (lossless) is the storage format of every image and mask. 8-bit images are what a
model sees; 16-bit sources also keep a ``raw`` copy so the physical values can be
recovered exactly (``physical = png * value_scale + value_offset``).
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from PIL import Image

#: zlib level for PNG. 1 is ~3x faster to encode than Pillow's default 6 on CT slices for
#: ~10% more bytes; shards are read far more often than written, but conversion of
#: millions of slices is CPU-bound on this encode (see docs/benchmarks.md).
PNG_COMPRESS_LEVEL = 1


def encode_png(array: np.ndarray, *, compress_level: int = PNG_COMPRESS_LEVEL) -> bytes:
    """Encode a 2D (H, W) uint8/uint16/bool array or an (H, W, 3|4) uint8 array as PNG."""
    arr = np.ascontiguousarray(array)
    if arr.dtype == bool:
        img = Image.fromarray(arr, mode=None).convert("1") if arr.ndim == 2 else None
        if img is None:
            raise ValueError(f"a boolean mask must be 2D, got shape {arr.shape}")
    elif arr.dtype == np.uint8 and arr.ndim in (2, 3):
        if arr.ndim == 3 and arr.shape[2] not in (3, 4):
            raise ValueError(f"colour images need 3 or 4 channels, got shape {arr.shape}")
        img = Image.fromarray(arr)
    elif arr.dtype == np.uint16 and arr.ndim == 2:
        img = Image.fromarray(arr)  # mode I;16
    else:
        raise ValueError(f"cannot encode dtype {arr.dtype} with shape {arr.shape} as PNG")
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=compress_level)
    return buf.getvalue()


def decode_png(data: bytes) -> np.ndarray:
    """Decode PNG bytes to an array: bool for 1-bit masks, uint8/uint16 otherwise."""
    with Image.open(io.BytesIO(data)) as img:
        if img.mode == "1":
            return np.asarray(img, dtype=bool)
        if img.mode in ("I;16", "I;16B", "I"):
            return np.asarray(img).astype(np.uint16)
        return np.asarray(img)


def to_uint8_window(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """Linear window [low, high] → 0..255, clipped (the 8-bit image a model sees)."""
    if not high > low:
        high = low + 1.0
    scaled = (values.astype(np.float32) - np.float32(low)) * np.float32(255.0 / (high - low))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def image_record(
    role: str,
    array: np.ndarray,
    *,
    spacing_mm: list[float] | None = None,
    window: tuple[float, float] | None = None,
    value_scale: float | None = None,
    value_offset: float | None = None,
    png: bytes | None = None,
) -> dict[str, Any]:
    """One ``images[]`` struct for the canonical schema, PNG-encoding ``array``."""
    height, width = array.shape[:2]
    channels = 1 if array.ndim == 2 else array.shape[2]
    bit_depth = 1 if array.dtype == bool else 8 * array.dtype.itemsize
    return {
        "role": role,
        "data": png if png is not None else encode_png(array),
        "format": "png",
        "width": int(width),
        "height": int(height),
        "channels": int(channels),
        "bit_depth": int(bit_depth),
        "spacing_mm": [float(s) for s in spacing_mm] if spacing_mm else None,
        "window": {"center": float(window[0]), "width": float(window[1])} if window else None,
        "value_scale": value_scale,
        "value_offset": value_offset,
    }


def tight_bbox_xyxy(mask: np.ndarray) -> list[int] | None:
    """Tight box of a mask as [x0, y0, x1, y1] with exclusive x1/y1; None when empty."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return [int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1]


def mask_record(
    mask: np.ndarray,
    *,
    label: str,
    category: str,
    clicks_xy: list[list[int]] | None = None,
    box_prompt_xyxy: list[int] | None = None,
) -> dict[str, Any]:
    """One ``masks[]`` struct: 1-bit PNG, area, tight box (exclusive end), prompts."""
    binary = np.asarray(mask, dtype=bool)
    return {
        "label": label,
        "category": category,
        "data": encode_png(binary),
        "area_px": int(binary.sum()),
        "bbox_xyxy": tight_bbox_xyxy(binary),
        "clicks_xy": clicks_xy,
        "box_prompt_xyxy": box_prompt_xyxy,
    }
