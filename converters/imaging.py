"""Pixel policy shared by the DICOM, volume and raster converters.

One place decides how physical values become the 8-bit image a model sees (the window)
and how a lossless ``raw`` copy is kept, so that every converter agrees.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from curation.images import image_record, to_uint8_window

#: default windows (center, width) where the source carries none: soft tissue for CT
DEFAULT_WINDOWS: dict[str, tuple[float, float]] = {"CT": (40.0, 400.0)}

#: percentiles of the auto window for modalities without a standard window
AUTO_WINDOW_PERCENTILES = (0.5, 99.5)


def auto_window(values: np.ndarray, modality: str) -> tuple[float, float]:
    """The modality's standard window, or a robust percentile window when it has none."""
    if modality in DEFAULT_WINDOWS:
        return DEFAULT_WINDOWS[modality]
    finite = values[np.isfinite(values)] if values.dtype.kind == "f" else values
    if finite.size == 0:
        return (0.0, 1.0)
    low, high = np.percentile(finite, AUTO_WINDOW_PERCENTILES)
    if high <= low:
        low, high = float(finite.min()), float(finite.max())
    width = max(float(high - low), 1.0)
    return (float(low) + width / 2.0, width)


def window_bounds(center: float, width: float) -> tuple[float, float]:
    return center - width / 2.0, center + width / 2.0


def lossless_raw(stored: np.ndarray, slope: float, intercept: float) -> dict[str, Any] | None:
    """A 16-bit ``raw`` image record that reproduces ``stored * slope + intercept`` exactly.

    Signed stored values are shifted by 32768 into uint16 and the shift folded into
    ``value_offset``; stored values that do not fit 16 bits get no raw copy (None).
    """
    if stored.dtype.kind not in "iu" or stored.ndim != 2:
        return None
    lo, hi = int(stored.min()), int(stored.max())
    if lo >= 0 and hi <= 0xFFFF:
        shift = 0
    elif lo >= -32768 and hi <= 32767:
        shift = 32768
    else:
        return None
    png_values = (stored.astype(np.int32) + shift).astype(np.uint16)
    return {
        "array": png_values,
        "value_scale": float(slope),
        "value_offset": float(intercept) - shift * float(slope),
    }


def grey_images(
    physical: np.ndarray,
    *,
    window: tuple[float, float],
    invert: bool = False,
    raw: dict[str, Any] | None,
    spacing_mm: list[float] | None,
) -> list[dict[str, Any]]:
    """``input`` (windowed 8-bit) and, when given, ``raw`` (lossless 16-bit) records."""
    low, high = window_bounds(*window)
    eight_bit = to_uint8_window(physical, low, high)
    if invert:
        eight_bit = 255 - eight_bit
    images = [image_record("input", eight_bit, spacing_mm=spacing_mm, window=window)]
    if raw is not None:
        images.append(
            image_record(
                "raw",
                raw["array"],
                spacing_mm=spacing_mm,
                value_scale=raw["value_scale"],
                value_offset=raw["value_offset"],
            )
        )
    return images
