"""What SimpleITK's NIfTI reader leaves to us: truncated files, and NIfTI-2.

* ITK fills a cut-off file with zeros without a word (:func:`check_nifti_data_complete`).
* ITK 5.4 does not read NIfTI-2 (the 540-byte header with 64-bit dimensions, written by
  HCP pipelines and by tools for volumes of more than 32767 voxels along an axis).
  :func:`itk_readable_nifti` rewrites such a file as NIfTI-1 (same voxels, same header
  fields) for ITK to read, so both versions go through ITK's one interpretation of
  qform/sform, scaling and 4D — re-deriving ITK's LPS geometry from nibabel's affine
  would be a second implementation to keep in step with it.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import shutil
import struct
import tempfile
import zlib
from collections.abc import Iterator
from typing import Any

import numpy as np

from converters.base import ConversionError

#: ``sizeof_hdr`` of a NIfTI-2 header (NIfTI-1: 348)
NIFTI2_HEADER_BYTES = 540
#: NIfTI-1 stores dimensions as int16
NIFTI1_MAX_DIM = 32767
#: volumes (and label maps) whose header declares more than this many decoded bytes are rejected unread
MAX_VOLUME_BYTES = 8 * 1024**3
#: header fields NIfTI-1 has under another type or not at all: written afresh
_NOT_COPIED = frozenset({"sizeof_hdr", "magic", "vox_offset"})


def is_nifti_path(path: str) -> bool:
    return path.lower().endswith((".nii", ".nii.gz"))


def is_gzip(path: str) -> bool:
    """By the stream's magic bytes, not the name (``.NII.GZ``, or a ``.nii`` that is gzipped)."""
    with open(path, "rb") as handle:
        return handle.read(2) == b"\x1f\x8b"


def is_nifti2(path: str) -> bool:
    """Whether ``path`` (plain or gzipped) starts with a NIfTI-2 header, in either byte order."""
    try:
        opener: Any = gzip.open if is_gzip(path) else open
        with opener(path, "rb") as handle:
            head = handle.read(4)
    except (OSError, EOFError, zlib.error):
        return False  # unreadable: SimpleITK's reader gives the verdict
    return len(head) == 4 and NIFTI2_HEADER_BYTES in (struct.unpack("<i", head)[0], struct.unpack(">i", head)[0])


@contextlib.contextmanager
def itk_readable_nifti(path: str, uri: str, max_bytes: int = MAX_VOLUME_BYTES) -> Iterator[str]:
    """``path`` itself, or for a NIfTI-2 file the same image written as NIfTI-1 in a
    temporary folder (removed afterwards).

    Every header field the two versions share is copied (dimensions, spacing, units,
    qform and sform with their codes, quaternion, intent, scaling slope and intercept),
    and the voxels are copied unscaled, in the file's byte order, so ITK applies the
    scaling as it would to the original. NIfTI-1 keeps the geometry in float32
    (NIfTI-2: float64): ~1e-5 mm at 100 mm from the origin. Raises ConversionError for a
    volume that NIfTI-1 cannot hold (an axis over 32767 voxels) or larger than
    ``max_bytes``, and for any NIfTI file whose geometry is not finite
    (:func:`check_nifti_geometry`).
    """
    if not is_nifti_path(path):
        yield path
        return
    if not is_nifti2(path):
        check_nifti_geometry(path, uri)
        yield path
        return
    import nibabel as nib

    try:
        image: Any = nib.Nifti2Image.from_filename(path)
    except Exception as exc:  # noqa: BLE001 - nibabel's many header errors are one verdict here
        raise ConversionError("bad_header", f"{uri}: unreadable NIfTI-2 header ({str(exc)[:200]})") from exc
    source = image.header
    shape = tuple(int(d) for d in source.get_data_shape())
    if any(d > NIFTI1_MAX_DIM for d in shape):
        raise ConversionError(
            "unsupported_format",
            f"{uri}: NIfTI-2 volume of size {shape}; the reader (ITK, via NIfTI-1) takes at most {NIFTI1_MAX_DIM} voxels an axis",
        )
    declared = int(np.prod(shape, dtype=np.int64)) * 8  # decoded, as read_volume counts it
    if declared > max_bytes:
        raise ConversionError("too_large", f"{uri}: header declares size {shape} (> {max_bytes // 1024**3} GiB)")
    check_nifti_data_complete(path, uri)
    header = nib.Nifti1Header(endianness=source.endianness)
    with np.errstate(over="ignore"):  # float64 past float32's range becomes inf: rejected below
        for key in source:
            if key in header and key not in _NOT_COPIED:
                header[key] = source[key]
    header["vox_offset"] = 352  # 348-byte header + 4-byte extension flag (no extensions)
    # nibabel resets a loaded image's header scaling (its data proxy applies it): take it from the proxy
    header.set_slope_inter(float(image.dataobj.slope), float(image.dataobj.inter))
    try:
        voxels = np.asanyarray(image.dataobj.get_unscaled())
    except (OSError, EOFError, ValueError, OverflowError, zlib.error) as exc:
        raise ConversionError("truncated", f"{uri}: the NIfTI-2 voxel data cannot be read ({str(exc)[:200]})") from exc
    folder = tempfile.mkdtemp(prefix="medcurate-nifti2-")
    try:
        target = os.path.join(folder, "volume.nii")
        with open(target, "wb") as out:
            out.write(header.binaryblock)
            out.write(b"\0\0\0\0")
            out.write(voxels.astype(source.get_data_dtype(), copy=False).tobytes(order="F"))
        check_nifti_geometry(target, uri)  # float64 geometry past float32's range became inf
        yield target
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def check_nifti_geometry(path: str, uri: str) -> None:
    """Reject a NIfTI header whose voxel spacing or in-use transform holds NaN or infinity.

    ITK's reader never returns on some of those (found by fuzzing: an infinite srow
    element hangs ``ReadImageInformation``), so one damaged header would stall its worker
    for good. A header nibabel cannot read is left to ITK's verdict.
    """
    import nibabel as nib

    try:
        header: Any = nib.load(path).header
        dims = int(header["dim"][0])
        fields = {"pixdim": np.asarray(header["pixdim"][1 : 1 + max(0, min(dims, 7))], dtype=float)}
        if int(header["sform_code"]) > 0:
            fields["sform"] = np.asarray([header["srow_x"], header["srow_y"], header["srow_z"]], dtype=float)
        if int(header["qform_code"]) > 0:
            fields["qform"] = np.asarray(
                [header[k] for k in ("quatern_b", "quatern_c", "quatern_d", "qoffset_x", "qoffset_y", "qoffset_z")], dtype=float
            )
    except Exception:  # noqa: BLE001 - unreadable for nibabel: ITK decides
        return
    for name, values in fields.items():
        if not np.all(np.isfinite(values)):
            raise ConversionError("bad_header", f"{uri}: the NIfTI header's {name} is not finite ({values.tolist()})")


def check_nifti_data_complete(path: str, uri: str) -> None:
    """Reject a NIfTI file that holds less voxel data than its header declares.

    ITK's NIfTI reader fills what a truncated file lacks with zeros and says nothing, so
    a cut-off download would become slices of black. Uncompressed: the file size against
    the data offset + voxels x bytes (nibabel's reading of the header). Gzipped: the
    stream's trailer records the uncompressed size (mod 2**32); only when it differs, or
    the header cannot be read, is the whole stream read, to tell a truncated file (no
    end-of-stream marker) from a complete one. Our own check: nibabel reads the header
    but does not verify the data either.
    """
    expected = _nifti_declared_bytes(path, uri)
    if not is_gzip(path):
        size = os.path.getsize(path)
        if expected is not None and size < expected:
            raise ConversionError("truncated", f"{uri}: {size} bytes, the header declares {expected} (offset + voxel data)")
        return
    with open(path, "rb") as handle:
        handle.seek(-4, os.SEEK_END)
        (recorded,) = struct.unpack("<I", handle.read(4))
    if expected is not None and recorded == expected % 2**32:
        return
    try:
        with gzip.open(path, "rb") as stream:
            total = 0
            while chunk := stream.read(1 << 22):
                total += len(chunk)
    except (EOFError, OSError) as exc:
        raise ConversionError("truncated", f"{uri}: the gzip stream is cut off ({exc})") from exc
    if expected is not None and total < expected:
        raise ConversionError("truncated", f"{uri}: {total} bytes uncompressed, the header declares {expected}")


def _nifti_declared_bytes(path: str, uri: str) -> int | None:
    """Data offset + voxel bytes the header declares (None: nibabel cannot read it)."""
    import nibabel as nib

    try:
        image: Any = nib.load(path)
        shape = tuple(int(d) for d in image.header.get_data_shape())
        offset = int(getattr(image.dataobj, "offset", image.header.get_data_offset()))  # the effective offset
        itemsize = int(image.header.get_data_dtype().itemsize)
    except Exception:  # noqa: BLE001 - a header nibabel cannot read is left to SimpleITK's verdict
        return None
    if 0 in shape:
        raise ConversionError("bad_header", f"{uri}: volume has an empty axis, size {shape}")
    return offset + int(np.prod(shape, dtype=np.int64)) * itemsize
