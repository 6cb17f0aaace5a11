"""PNG storage form: standard PNG bytes that any reader opens, decoded on a fast path."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pydicom
import pytest
from PIL import Image

from curation.images import decode_png, encode_png, to_uint8_window

CT_DIR = Path(__file__).resolve().parents[1] / "data" / "ct_3slice_seg"
RNG = np.random.default_rng(7)
ARRAYS = {
    "gray8": RNG.integers(0, 256, (37, 53), dtype=np.uint8),
    "gray16": RNG.integers(0, 65536, (19, 23), dtype=np.uint16),
    "mask": RNG.random((29, 31)) > 0.6,  # width not a multiple of 8: rows are padded
    "gray_alpha": RNG.integers(0, 256, (5, 7, 2), dtype=np.uint8),
    "rgb": RNG.integers(0, 256, (13, 11, 3), dtype=np.uint8),
    "rgba": RNG.integers(0, 256, (6, 9, 4), dtype=np.uint8),
}


def pillow_pixels(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as img:
        img.load()
        pixels = np.asarray(img)
    return pixels.astype(np.uint16) if img.mode.startswith("I") else pixels


@pytest.mark.parametrize("kind", sorted(ARRAYS))
def test_stored_png_round_trips_and_pillow_reads_the_same_pixels(kind):
    array = ARRAYS[kind]
    data = encode_png(array)
    decoded = decode_png(data)
    assert decoded.dtype == array.dtype and decoded.shape == array.shape
    np.testing.assert_array_equal(decoded, array)
    np.testing.assert_array_equal(pillow_pixels(data), array)  # a standard PNG, not a private format
    assert decoded.flags.writeable and decoded.flags.c_contiguous


@pytest.mark.parametrize("kind", sorted(ARRAYS))
def test_compressed_pngs_decode_to_the_same_arrays(kind):
    array = ARRAYS[kind]
    compressed = encode_png(array, compress_level=6)
    assert compressed != encode_png(array)
    decoded = decode_png(compressed)  # adaptive filters: Pillow's path
    assert decoded.dtype == array.dtype
    np.testing.assert_array_equal(decoded, array)


def test_palette_png_goes_to_pillow():
    img = Image.fromarray(ARRAYS["gray8"]).convert("P")
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    np.testing.assert_array_equal(decode_png(buf.getvalue()), np.asarray(img))


def test_corrupt_and_truncated_pngs_raise_with_the_reason():
    data = bytearray(encode_png(ARRAYS["gray8"]))
    data[20] ^= 0xFF  # inside IHDR: its CRC no longer matches
    with pytest.raises(ValueError, match="CRC mismatch in the IHDR"):
        decode_png(bytes(data))
    good = encode_png(ARRAYS["gray8"])
    with pytest.raises(ValueError, match="truncated PNG"):
        decode_png(good[: len(good) // 2])
    idat_at = good.index(b"IDAT")
    broken = bytearray(good)
    broken[idat_at + 4 + 2 + 1] ^= 0x01  # the first stored block's length no longer matches its complement
    with pytest.raises(ValueError, match="bad stored deflate block"):
        decode_png(bytes(broken))
    compressed = encode_png(ARRAYS["gray8"], compress_level=6)
    cut = compressed.index(b"IDAT") + 4 + 40
    garbled = compressed[:cut] + bytes(b ^ 0x5A for b in compressed[cut : cut + 30]) + compressed[cut + 30 :]
    with pytest.raises((ValueError, OSError, SyntaxError)):  # Pillow's path reports its own errors
        decode_png(garbled)


def test_stored_blocks_mixed_with_compressed_blocks_decode_through_zlib():
    array = ARRAYS["gray8"]
    rows = np.zeros((array.shape[0], array.shape[1] + 1), np.uint8)
    rows[:, 1:] = array
    head, rest = rows[:3].tobytes(), rows[3:].tobytes()
    raw_deflate = zlib.compressobj(9, zlib.DEFLATED, -15)  # the rest as compressed blocks
    stream = (
        b"\x78\x01"
        + struct.pack("<BHH", 0, len(head), len(head) ^ 0xFFFF)  # a non-final stored block
        + head
        + raw_deflate.compress(rest)
        + raw_deflate.flush()
        + struct.pack(">I", zlib.adler32(head + rest))
    )
    ihdr = struct.pack(">IIBBBBB", array.shape[1], array.shape[0], 8, 0, 0, 0, 0)
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", stream) + chunk(b"IEND", b"")
    np.testing.assert_array_equal(decode_png(data), array)


def chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def test_wrong_image_data_length_is_refused():
    array = ARRAYS["gray8"]
    ihdr = struct.pack(">IIBBBBB", array.shape[1] + 1, array.shape[0], 8, 0, 0, 0, 0)
    rows = np.zeros((array.shape[0], array.shape[1] + 1), np.uint8).tobytes()

    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(rows, 0)) + chunk(b"IEND", b"")
    with pytest.raises(ValueError, match="expected"):
        decode_png(data)


def test_unsupported_arrays_are_refused():
    with pytest.raises(ValueError, match="cannot encode dtype float32"):
        encode_png(np.zeros((4, 4), np.float32))


def test_zstd_pages_compress_stored_ct_slices_as_well_as_deflate():
    """The storage trade: on real CT, stored PNG + zstd (the shard's page codec) is within
    10% of a deflate-compressed PNG, so moving compression to the shard costs no disk."""
    for path in sorted(CT_DIR.glob("*.dcm")):
        ds = pydicom.dcmread(path)
        hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        for array in (to_uint8_window(hu, -160, 240), ds.pixel_array.astype(np.uint16)):
            stored = pa.Codec("zstd", compression_level=3).compress(encode_png(array))
            deflated = encode_png(array, compress_level=1)
            assert len(stored) < 1.1 * len(deflated), path.name
