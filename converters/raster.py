"""2D rasters (PNG, JPEG, TIFF, BMP) → canonical samples.

Pixels are kept as stored: 8-bit grey and RGB images are re-encoded losslessly with
the same values and orientation (EXIF orientation of camera JPEGs is applied, as every
viewer does, and the same transpose to their masks: :mod:`converters.orientation`; the
row's ``raster.read`` step records it as ``exif_orientation``). 16-bit grey images get
a windowed 8-bit ``input`` plus the lossless 16-bit ``raw``. 16-bit *colour* PNGs and TIFFs come out of Pillow as 8-bit (the high
byte of each sample, a linear rendering); that reduction is recorded in the row's
provenance (``raster.pixels``: ``reduced_from_bits``), not hidden behind "as stored".
Palette images become RGB; alpha is dropped (composited on black).
Multi-page TIFFs are treated like volumes: one sample per page, under the slice policy.
Attached masks (mask images, IMIS ``.npz``) become ``masks``; an ImageFolder class
(``attrs["class"]``) goes to ``labels``.
"""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np
from PIL import Image, ImageSequence, UnidentifiedImageError

from converters.base import ConversionError, ConvertOptions
from converters.imaging import auto_window, grey_images, lossless_raw
from converters.io import read_bytes
from converters.orientation import UPRIGHT, upright
from converters.raster_masks import raster_masks
from converters.rows import build_row, subject_from_key
from curation.images import image_record, png_header

Image.MAX_IMAGE_PIXELS = 40_000 * 40_000  # whole-slide pages are big, but not unbounded


_UNREADABLE = (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError)


def open_raster(data: bytes, uri: str) -> Image.Image:
    """The image file, opened but not decoded: :func:`converters.orientation.upright`
    must read a TIFF frame's EXIF orientation before Pillow decodes it (its loader applies
    the tag and drops it)."""
    if not data:
        raise ConversionError("empty_file", f"{uri}: file is empty (0 bytes)")
    try:
        img = Image.open(io.BytesIO(data))
    except _UNREADABLE as exc:
        raise ConversionError("unreadable", f"{uri}: not a readable image ({str(exc)[:200]})") from exc
    return img


def open_upright(data: bytes, uri: str) -> Image.Image:
    """The first frame as viewers show it (EXIF orientation applied), as the converter
    writes it: for recipes that read a raster themselves, so their pixels match."""
    img = open_raster(data, uri)
    try:
        return upright(img)[0]
    except _UNREADABLE as exc:
        raise ConversionError("unreadable", f"{uri}: not a readable image ({str(exc)[:200]})") from exc


def applied_orientation(row: dict[str, Any]) -> int:
    """The EXIF orientation the raster converter applied to ``row``'s pixels (1: none),
    from its provenance: for recipes that attach masks to a converted raster themselves."""
    for step in json.loads((row.get("provenance") or {}).get("steps_json") or "[]"):
        if step.get("step") == "raster.read":
            return int(step.get("params", {}).get("exif_orientation") or UPRIGHT)
    return UPRIGHT


_TIFF_BITS_PER_SAMPLE = 258


def stored_bits_per_sample(page: Image.Image, data: bytes) -> int | None:
    """Bits per sample as the file stores them (None where the header does not say).

    Why: Pillow reads 16-bit RGB(A) PNGs and TIFFs as 8-bit RGB without a word, so the
    decoded array cannot tell. Read from the PNG's IHDR, or from a TIFF page's
    BitsPerSample tag (``page`` is the page as Pillow opened it, before any copy).
    """
    header = png_header(data)
    if header is not None:
        return header.bit_depth
    tags = getattr(page, "tag_v2", None)
    if tags is not None and _TIFF_BITS_PER_SAMPLE in tags:
        bits = tags[_TIFF_BITS_PER_SAMPLE]
        return max(bits) if isinstance(bits, tuple) else int(bits)
    return None


def page_pixels(page: Image.Image) -> np.ndarray:
    """One page as uint8 grey/RGB or uint16/int32/float grey (mode-specific decoding)."""
    mode = page.mode
    if mode in ("1", "L"):
        return np.asarray(page.convert("L"))
    if mode in ("I;16", "I;16B", "I;16L"):
        return np.asarray(page).astype(np.uint16)
    if mode in ("I", "F"):
        return np.asarray(page)
    if mode == "LA":
        return _composite_on_black(np.asarray(page))
    if mode == "P":
        page = page.convert("RGBA" if "transparency" in page.info else "RGB")
        mode = page.mode
    if mode == "RGBA":
        return _composite_on_black(np.asarray(page))
    return np.asarray(page.convert("RGB"))


def _composite_on_black(arr: np.ndarray) -> np.ndarray:
    alpha = arr[..., -1:].astype(np.float32) / 255.0
    colour = arr[..., :-1].astype(np.float32) * alpha
    out = np.rint(colour).astype(np.uint8)
    return out[..., 0] if out.shape[-1] == 1 else out


def raster_images(
    pixels: np.ndarray, modality: str, stored_bits: int | None = None
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    if pixels.dtype == np.uint8:
        reduced = stored_bits is not None and stored_bits > 8
        params = {"kept": "8-bit, the high byte of each sample", "reduced_from_bits": stored_bits} if reduced else {"kept": "8-bit as stored"}
        return [image_record("input", pixels)], params
    values = pixels if pixels.dtype == np.uint16 else pixels.astype(np.float64)
    raw = lossless_raw(pixels, 1.0, 0.0) if pixels.dtype.kind in "iu" else None
    window = auto_window(values, modality)
    return grey_images(values, window=window, raw=raw, spacing_mm=None), {
        "window": {"center": window[0], "width": window[1]},
        "raw": raw is not None,
    }


def convert_raster_item(item: dict[str, Any], opts: ConvertOptions) -> list[dict[str, Any]]:
    uri = item["uri"]
    data = read_bytes(uri)
    img = open_raster(data, uri)
    stored_bits: list[int | None] = []
    oriented: list[tuple[Image.Image, int]] = []  # each page as shown, and the EXIF turn its masks need
    try:
        for page in ImageSequence.Iterator(img):
            stored_bits.append(stored_bits_per_sample(page, data))
            oriented.append(upright(page))
    except _UNREADABLE as exc:
        raise ConversionError("unreadable", f"{uri}: page {len(oriented)} is not readable ({str(exc)[:200]})") from exc
    pages = [page for page, _ in oriented]
    attrs = json.loads(item["attrs"]) if item.get("attrs") else {}
    modality = opts.modality or "OTHER"
    subject = subject_from_key(item["key"], opts)
    count = len(pages)
    rows = []
    for index in opts.slices.select(count) if count > 1 else [0]:
        pixels = page_pixels(pages[index])
        orientation = oriented[index][1]
        if pixels.ndim not in (2, 3) or min(pixels.shape[:2]) == 0:
            raise ConversionError("bad_header", f"{uri}: page {index} has shape {pixels.shape}")
        images, params = raster_images(pixels, modality, stored_bits[index])
        steps = [
            {"step": "raster.read", "params": {"format": img.format, "mode": pages[index].mode, "exif_orientation": orientation}},
            {"step": "raster.pixels", "params": params},
        ]
        masks = raster_masks(list(item.get("label_uris") or []), pixels.shape[0], pixels.shape[1], opts, orientation)
        if masks:
            steps.append({"step": "raster.masks", "params": {"count": len(masks)}})
        steps.append({"step": "png.encode", "params": {}})
        labels = sorted({m["category"] for m in masks} | ({attrs["class"]} if attrs.get("class") else set()))
        rows.append(
            build_row(
                opts,
                key=f"{item['key']}#page={index}" if count > 1 else item["key"],
                sha256=item["sha256"],
                modality=modality,
                subject_id=subject,
                images=images,
                masks=masks or None,
                labels=labels or None,
                caption=f"{modality} image." if modality != "OTHER" else None,
                steps=steps,
            )
        )
    return rows
