"""Image and mask encoding shared by converters, recipes and synthesis.

PNG (lossless) is the storage format of every image and mask. 8-bit images are what a
model sees; 16-bit sources also keep a ``raw`` copy so the physical values can be
recovered exactly (``physical = png * value_scale + value_offset``).
"""

from __future__ import annotations

import io
import struct
import zlib
from typing import Any, NamedTuple

import numpy as np
from PIL import Image

#: zlib level for PNG when a caller asks for compressed PNG (``compress_level >= 1``).
PNG_COMPRESS_LEVEL = 1
#: The default storage form: PNG with filter type 0 on every row and deflate *stored*
#: blocks (zlib level 0). The bytes are a standard PNG any reader opens, but they are not
#: compressed inside the PNG: the shard's zstd pages compress them instead (to the same
#: size as deflate, measured on CT: 102 KB vs 98 KB per 512x512 slice), and decoding is a
#: chunk parse plus a copy instead of an inflate and an unfilter. This is our own code
#: because it is the product's read path and measurably better: ~0.1 ms per 512x512 slice
#: against Pillow's ~1.4 ms (bench/read.py); Pillow stays the encoder for compressed PNG
#: and the decoder for every other PNG.
PNG_STORED = 0

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_COLOUR_TYPES = {
    1: 0,
    2: 4,
    3: 2,
    4: 6,
}  # channels -> PNG colour type (gray, gray+alpha, RGB, RGBA)
_CHANNELS = {v: k for k, v in _COLOUR_TYPES.items()}
#: ancillary chunks that do not change decoded pixel values; any other chunk (PLTE, tRNS,
#: sBIT, gAMA, iCCP, ...) sends the PNG to Pillow
_HARMLESS_CHUNKS = frozenset(
    {b"IHDR", b"IDAT", b"IEND", b"pHYs", b"tEXt", b"zTXt", b"iTXt", b"tIME"}
)


def encode_png(array: np.ndarray, *, compress_level: int = PNG_STORED) -> bytes:
    """Encode a 2D (H, W) uint8/uint16/bool array or an (H, W, 2|3|4) uint8 array as PNG.

    ``compress_level=0`` (the default) writes the stored form described at
    :data:`PNG_STORED`; 1-9 writes a deflate-compressed PNG through Pillow (for files
    people open directly, e.g. a dataset card).
    """
    arr = np.ascontiguousarray(array)
    _check_encodable(arr)
    if compress_level == PNG_STORED:
        return _encode_stored_png(arr)
    img = Image.fromarray(arr).convert("1") if arr.dtype == bool else Image.fromarray(arr)  # 1 / L / LA / RGB / RGBA / I;16
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=compress_level)
    return buf.getvalue()


def _check_encodable(arr: np.ndarray) -> None:
    if arr.dtype == bool and arr.ndim == 2:
        return
    if arr.dtype == np.uint8 and (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (2, 3, 4))):
        return
    if arr.dtype == np.uint16 and arr.ndim == 2:
        return
    raise ValueError(f"cannot encode dtype {arr.dtype} with shape {arr.shape} as PNG")


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _encode_stored_png(arr: np.ndarray) -> bytes:
    height, width = arr.shape[:2]
    if arr.dtype == bool:
        bit_depth, colour_type = 1, 0
        rows = np.packbits(arr, axis=1)  # MSB first, rows padded to whole bytes, as PNG wants
    else:
        bit_depth = 16 if arr.dtype == np.uint16 else 8
        colour_type = _COLOUR_TYPES[1 if arr.ndim == 2 else arr.shape[2]]
        rows = (arr.astype(">u2") if bit_depth == 16 else arr).reshape(height, -1).view(np.uint8)
    filtered = np.zeros((height, rows.shape[1] + 1), dtype=np.uint8)  # column 0: filter type 0
    filtered[:, 1:] = rows
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return b"".join(
        (
            _PNG_SIGNATURE,
            _chunk(b"IHDR", header),
            _chunk(b"IDAT", zlib.compress(filtered.tobytes(), 0)),
            _chunk(b"IEND", b""),
        )
    )


def decode_png(data: bytes) -> np.ndarray:
    """Decode PNG bytes to an array: bool for 1-bit masks, uint8/uint16 otherwise.

    Unfiltered PNGs (what :func:`encode_png` writes by default) take a fast path; every
    other PNG is decoded by Pillow, with the same shapes and dtypes.
    """
    fast = _decode_unfiltered_png(data)
    if fast is not None:
        return fast
    with Image.open(io.BytesIO(data)) as img:
        if img.mode == "1":
            return np.asarray(img, dtype=bool)
        if img.mode in ("I;16", "I;16B", "I"):
            return np.asarray(img).astype(np.uint16)
        return np.asarray(img)


def _inflate(stream: bytes | memoryview) -> bytes:
    """The zlib stream of IDAT, inflated. Deflate *stored* blocks (what we write) are
    sliced out directly: zlib would spend most of its time on the adler32, which the fast
    path skips (block lengths and their complements are still checked, and the shard's
    Parquet pages carry CRCs); any other stream goes through zlib with its checksum."""
    view = memoryview(stream)
    if len(view) >= 2 and view[0] & 0x0F == 8 and not view[1] & 0x20:  # deflate, no preset dictionary
        parts, pos = [], 2
        while pos + 5 <= len(view) and not view[pos] & 0b110:  # BTYPE 00: stored
            length, complement = struct.unpack_from("<HH", view, pos + 1)
            if length ^ complement != 0xFFFF or pos + 5 + length > len(view):
                raise ValueError(f"corrupt PNG: bad stored deflate block at byte {pos} of the image data")
            parts.append(view[pos + 5 : pos + 5 + length])
            final, pos = view[pos] & 1, pos + 5 + length
            if final:
                return b"".join(parts)
        # a compressed block (or a truncated stream): zlib decides
    try:
        return zlib.decompress(stream)
    except zlib.error as exc:
        raise ValueError(f"corrupt PNG: image data does not inflate ({exc})") from exc


class PngHeader(NamedTuple):
    width: int
    height: int
    bit_depth: int
    colour_type: int
    interlace: int


def png_header(data: bytes | memoryview) -> PngHeader | None:
    """The IHDR fields of PNG bytes, or None when they are not a PNG (too short, no
    signature, IHDR not first). Pillow hides some of them: it reads 16-bit colour as
    8-bit, so the stored depth is known only from here."""
    view = memoryview(data)
    if len(view) < 33 or view[:8] != _PNG_SIGNATURE or view[12:16] != b"IHDR":
        return None
    width, height, bit_depth, colour_type, _, _, interlace = struct.unpack(">IIBBBBB", view[16:29])
    return PngHeader(width, height, bit_depth, colour_type, interlace)


def _decode_unfiltered_png(data: bytes) -> np.ndarray | None:
    """Pixels of a non-interlaced PNG whose rows all use filter type 0, else None.

    Returns None (and leaves the PNG to Pillow) for anything unusual: palettes,
    transparency chunks, 16-bit colour, sub-byte depths other than 1-bit gray, interlace,
    any filtered row. Raises ValueError on a corrupt chunk, as Pillow would.
    """
    view = memoryview(data)
    header = png_header(view)
    if header is None:
        return None
    width, height, bit_depth, colour_type, interlace = header
    channels = _CHANNELS.get(colour_type)
    if interlace or channels is None or width == 0 or height == 0:
        return None
    if not (
        bit_depth == 8 or (bit_depth == 16 and channels == 1) or (bit_depth == 1 and channels == 1)
    ):
        return None
    idat: list[memoryview] = []
    pos = 8
    while pos + 12 <= len(view):
        (length,) = struct.unpack(">I", view[pos : pos + 4])
        kind = bytes(view[pos + 4 : pos + 8])
        body = view[pos + 8 : pos + 8 + length]
        if len(body) != length or len(view) < pos + 12 + length:
            raise ValueError(f"truncated PNG: {kind!r} chunk at byte {pos} runs past the end")
        if kind not in _HARMLESS_CHUNKS:
            return None
        if (
            kind != b"IDAT"
            and zlib.crc32(view[pos + 4 : pos + 8 + length])
            != struct.unpack(">I", view[pos + 8 + length : pos + 12 + length])[0]
        ):
            raise ValueError(
                f"corrupt PNG: CRC mismatch in the {kind.decode(errors='replace')} chunk at byte {pos}"
            )
        if kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
        pos += 12 + length
    else:
        raise ValueError("truncated PNG: no IEND chunk")
    raw = _inflate(idat[0] if len(idat) == 1 else b"".join(idat))  # one IDAT (ours): no copy
    row_bytes = (width * channels * bit_depth + 7) // 8
    if len(raw) != height * (row_bytes + 1):
        raise ValueError(
            f"corrupt PNG: {len(raw)} bytes of image data for {width}x{height}, expected {height * (row_bytes + 1)}"
        )
    rows = np.frombuffer(raw, dtype=np.uint8).reshape(height, row_bytes + 1)
    if rows[:, 0].any():
        return None  # a filtered PNG: Pillow unfilters it
    pixels = rows[:, 1:]
    if bit_depth == 1:
        return np.unpackbits(pixels, axis=1, count=width).astype(bool)
    if bit_depth == 16:
        return pixels.copy().view(">u2").astype(np.uint16)
    shape = (height, width) if channels == 1 else (height, width, channels)
    return np.ascontiguousarray(pixels).reshape(shape)


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
