"""DICOM files and series → canonical samples, one per slice or frame.

Pixel semantics follow the standard through pydicom's own LUT functions:
modality LUT (rescale slope/intercept → Hounsfield units for CT), then the VOI LUT or
window stored in the file (else the modality's default window), then MONOCHROME1
inversion so that high attenuation is bright. Colour data (RGB, YBR, palette) becomes
8-bit RGB. Slices of a series are ordered by ImagePositionPatient along the slice
normal, and in-plane pixels keep the orientation the file stores (the way a viewer
shows them).

De-identification happens here: header values reach a sample only through
:func:`converters.deid.dicom_metadata` (the PS3.15 Basic Profile applied first, dates
shifted per subject), plus the modality, a coded body part, geometry and the window;
the patient becomes a salted pseudonym.

Enhanced multi-frame objects are flattened into per-frame views (functional groups →
classic attributes) and ordered like a series; cine loops (US/endoscopy multi-frame
with a frame time) become one H.264 video sample; DICOM-SEG and RT-STRUCT objects
attached by discovery become per-structure masks (``converters.dicom_labels``).
"""

from __future__ import annotations

import io
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi, apply_windowing

from converters.base import ConversionError, ConvertOptions
from converters.deid import dicom_metadata
from converters.dicom_labels import annotation_kind, load_dicom_labels
from converters.imaging import auto_window, grey_images, lossless_raw
from converters.io import member_path, read_bytes
from converters.labels import (
    VOLUME_SUFFIXES,
    distinct_stems,
    load_label_volumes,
    masks_for_slice,
    named_label_volume,
    read_label_map,
)
from converters.rows import build_row
from converters.video import encode_frames
from curation.images import image_record, to_uint8_window

VOLUME_LABEL_EXTENSIONS = tuple(VOLUME_SUFFIXES)

#: DICOM Modality (0008,0060) → the controlled modality vocabulary
MODALITY_MAP: dict[str, str] = {
    "CT": "CT",
    "MR": "MR",
    "CR": "XR",
    "DX": "XR",
    "DR": "XR",
    "RG": "XR",
    "MG": "XR",
    "XA": "XR",
    "RF": "XR",
    "IO": "XR",
    "PX": "XR",
    "US": "US",
    "IVUS": "US",
    "PT": "PET",
    "NM": "PET",
    "OP": "CFP",
    "OPT": "OCT",
    "OCT": "OCT",
    "ES": "ENDO",
    "GM": "ENDO",
    "SM": "PATH",
    "XC": "DERM",
}

_CODED_BODY_PART = re.compile(r"[A-Z][A-Z ]{1,15}")


def read_dicom(data: bytes, uri: str, *, headers_only: bool = False, check_elements: bool = True) -> Dataset:
    """Parse DICOM bytes; a file that is not DICOM or is cut short becomes a ConversionError.

    ``check_elements`` converts every element up front (see :func:`_parse_every_element`);
    callers that already checked the same file's header skip it (it costs ~4 ms a file).
    """
    if not data:
        raise ConversionError("empty_file", f"{uri}: file is empty (0 bytes)")
    ds: Dataset
    try:
        ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=headers_only, force=False)
    except InvalidDicomError as exc:
        fallback = _read_without_preamble(data, headers_only)
        if fallback is None:
            raise ConversionError("not_dicom", f"{uri}: no DICOM preamble/header ({exc})") from exc
        ds = fallback
    except (EOFError, OSError, ValueError, KeyError, TypeError, AttributeError, OverflowError, MemoryError,
            struct.error, NotImplementedError) as exc:
        raise ConversionError("truncated", f"{uri}: DICOM header cannot be parsed ({_short(exc)})") from exc
    if check_elements:
        _parse_every_element(ds, uri)
    # pydicom keeps the whole input buffer for deferred reads, which we never make; a
    # series' headers would otherwise hold every file's bytes (memory ∝ series size)
    if getattr(ds, "buffer", None) is not None:
        ds.buffer = None
    return ds


#: what pydicom raises when a damaged element's value is converted (lazily, on access)
_ELEMENT_ERRORS = (
    NotImplementedError, ValueError, KeyError, TypeError, AttributeError, OverflowError, IndexError,
    EOFError, UnicodeError, struct.error, LookupError,
)


def _parse_every_element(ds: Dataset, uri: str) -> None:
    """Convert every data element now: pydicom parses values lazily, so a damaged element
    (unknown VR, '3.2x' in a DS) would otherwise fail later, deep inside a converter.
    A file with one becomes a ``bad_header`` reject naming the element."""
    tag = None
    try:
        for elem in ds.iterall():
            tag = elem.tag
            _ = elem.value
        meta = getattr(ds, "file_meta", None)
        if meta is not None:
            for elem in meta:
                tag = elem.tag
                _ = elem.value
            syntax = meta.get("TransferSyntaxUID")
            if syntax is not None and not pydicom.uid.UID(str(syntax)).is_transfer_syntax:
                raise ValueError(f"TransferSyntaxUID {syntax} is not a transfer syntax")
    except _ELEMENT_ERRORS as exc:
        raise ConversionError("bad_header", f"{uri}: data element {tag} cannot be read ({_short(exc)})") from exc


def _read_without_preamble(data: bytes, headers_only: bool) -> Dataset | None:
    """Old/raw DICOM streams without the 128-byte preamble (ACR-NEMA style, e.g. pydicom's
    rtstruct.dcm): accepted only when what parses is a plausible dataset (group 0008 first,
    SOPClassUID or Modality present), so random bytes are still 'not_dicom'."""
    if len(data) < 8 or data[:2] not in (b"\x08\x00", b"\x02\x00"):
        return None
    try:
        ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=headers_only, force=True)
    except Exception:  # anything that fails to parse here is simply not DICOM
        return None
    if "SOPClassUID" not in ds and "Modality" not in ds:
        return None
    if not hasattr(ds, "file_meta") or "TransferSyntaxUID" not in ds.file_meta:
        ds.file_meta = pydicom.dataset.FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = pydicom.uid.ImplicitVRLittleEndian
    return ds


def controlled_modality(ds: Dataset, fallback: str | None) -> str:
    return MODALITY_MAP.get(str(ds.get("Modality", "")).upper(), fallback or "OTHER")


def body_part(examined: object) -> str | None:
    """A de-identified BodyPartExamined value when it is a coded string (CS), never free text."""
    value = str(examined or "").strip().upper()
    return value.lower() if _CODED_BODY_PART.fullmatch(value) else None


def patient_identifier(ds: Dataset, fallback: str) -> str:
    for keyword in ("PatientID", "PatientName", "StudyInstanceUID"):
        value = str(ds.get(keyword, "") or "").strip()
        if value:
            return value
    return fallback


def slice_normal(ds: Dataset) -> np.ndarray | None:
    iop = ds.get("ImageOrientationPatient")
    if iop is None or len(iop) != 6:
        return None
    row, col = np.asarray(iop[:3], float), np.asarray(iop[3:], float)
    normal = np.cross(row, col)
    norm = np.linalg.norm(normal)
    return normal / norm if norm > 0 else None


def slice_position(ds: Dataset, normal: np.ndarray | None) -> float:
    ipp = ds.get("ImagePositionPatient")
    if normal is not None and ipp is not None and len(ipp) == 3:
        return float(np.dot(np.asarray(ipp, float), normal))
    return float(ds.get("InstanceNumber", 0) or 0)


def order_series(headers: list[tuple[str, Dataset]]) -> list[tuple[str, Dataset]]:
    """Slices in acquisition order: by position along the slice normal (IPP · normal),
    InstanceNumber when geometry is missing, file name last for ties."""
    normal = slice_normal(headers[0][1])
    return sorted(headers, key=lambda h: (slice_position(h[1], normal), h[0]))


def series_slice_spacing(ordered: list[Dataset]) -> float | None:
    """Distance between slice centres (from positions, not SliceThickness, which may differ)."""
    if len(ordered) > 1:
        normal = slice_normal(ordered[0])
        positions = [slice_position(ds, normal) for ds in ordered]
        return round(float(np.median(np.abs(np.diff(positions)))), 6) or None
    value = ordered[0].get("SpacingBetweenSlices")
    return float(value) if value else None


def series_reference(ordered: list[Dataset]) -> sitk.Image:
    """An empty SimpleITK image with the series' physical grid, for resampling labels.

    The grid is the first position + k × the median slice spacing: right only where the
    slices really are evenly spaced, which is what a single file's frames without
    per-frame positions state. A series or an enhanced object, whose slices each carry
    a position, uses :func:`slice_planes` instead, so a gap or uneven spacing cannot
    shift the labels.
    """
    first = ordered[0]
    rows, cols = int(first.Rows), int(first.Columns)
    iop = first.get("ImageOrientationPatient") or [1, 0, 0, 0, 1, 0]
    row_dir, col_dir = np.asarray(iop[:3], float), np.asarray(iop[3:], float)
    normal = np.cross(row_dir, col_dir)
    spacing = first.get("PixelSpacing") or [1.0, 1.0]
    dz = series_slice_spacing(ordered) or float(first.get("SliceThickness") or 1.0)
    ref = sitk.Image([cols, rows, len(ordered)], sitk.sitkUInt8)
    ref.SetSpacing([float(spacing[1]), float(spacing[0]), dz])
    ref.SetOrigin([float(v) for v in (first.get("ImagePositionPatient") or [0, 0, 0])])
    ref.SetDirection(np.column_stack([row_dir, col_dir, normal]).flatten().tolist())
    return ref


@dataclass(frozen=True)
class SlicePlane:
    """Where one slice's pixels lie in patient space (DICOM LPS, mm)."""

    origin: tuple[float, float, float]  #: centre of the first pixel (ImagePositionPatient)
    direction: tuple[float, ...]  #: 3×3 row-major, columns = row direction, column direction, normal
    spacing: tuple[float, float]  #: mm between columns, between rows (PixelSpacing reversed)
    size: tuple[int, int]  #: columns, rows

    def reference(self) -> sitk.Image:
        """A one-slice image on this plane: resampling onto it samples the plane only."""
        ref = sitk.Image([self.size[0], self.size[1], 1], sitk.sitkUInt8)
        ref.SetSpacing([self.spacing[0], self.spacing[1], 1.0])
        ref.SetOrigin(self.origin)
        ref.SetDirection(self.direction)
        return ref


def slice_plane(ds: Dataset, where: str) -> SlicePlane:
    """The plane of one slice from its own ImagePositionPatient / ImageOrientationPatient.

    A slice without them cannot be placed in patient space, so a label map (which is
    placed there) cannot be put on it: ``label_grid_mismatch``, naming the slice, rather
    than a guessed position. A missing PixelSpacing counts as 1 mm, as in
    :func:`series_reference`.
    """
    ipp, iop = ds.get("ImagePositionPatient"), ds.get("ImageOrientationPatient")
    if ipp is None or len(ipp) != 3 or iop is None or len(iop) != 6:
        raise ConversionError(
            "label_grid_mismatch",
            f"{where} has no usable ImagePositionPatient/ImageOrientationPatient, "
            "so a label map cannot be placed on it",
        )
    row_dir, col_dir = np.asarray(iop[:3], float), np.asarray(iop[3:], float)
    normal = np.cross(row_dir, col_dir)
    if not np.isfinite(normal).all() or np.linalg.norm(normal) < 1e-6 or not np.isfinite(np.asarray(ipp, float)).all():
        raise ConversionError(
            "label_grid_mismatch", f"{where}: ImageOrientationPatient {list(iop)} does not span a plane"
        )
    pixel_spacing = ds.get("PixelSpacing") or [1.0, 1.0]
    spacing = (float(pixel_spacing[1]), float(pixel_spacing[0]))
    if not all(np.isfinite(v) and v > 0 for v in spacing):
        raise ConversionError("label_grid_mismatch", f"{where}: PixelSpacing {list(pixel_spacing)} is not positive")
    row_dir, col_dir = row_dir / np.linalg.norm(row_dir), col_dir / np.linalg.norm(col_dir)
    direction = np.column_stack([row_dir, col_dir, normal / np.linalg.norm(normal)])
    return SlicePlane(
        origin=tuple(float(v) for v in ipp),  # type: ignore[arg-type]
        direction=tuple(float(v) for v in direction.flatten()),
        spacing=spacing,
        size=(int(ds.Columns), int(ds.Rows)),
    )


def slice_planes(slots: list[Dataset], names: list[str]) -> list[SlicePlane]:
    """Each slice's own plane (see :func:`slice_plane`); ``names`` say which slice in errors.

    The labels of all slices share one [k, y, x] array, so slices of different sizes
    (which no label volume file describes either) are a ``label_grid_mismatch``.
    """
    planes = [slice_plane(ds, name) for ds, name in zip(slots, names, strict=True)]
    sizes = sorted({p.size for p in planes})
    if len(sizes) > 1:
        shown = ", ".join(f"{c}x{r}" for c, r in sizes)
        raise ConversionError(
            "label_grid_mismatch", f"the slices differ in size ({shown}); one label map cannot cover them all"
        )
    return planes


def label_on_plane(label: sitk.Image, voxels: np.ndarray, plane: SlicePlane) -> np.ndarray:
    """The [y, x] labels found at the physical position of each pixel of ``plane``.

    A plane that is exactly one of the label map's own slices (same size, spacing and
    direction, origin on a slice centre) takes that slice as stored; any other plane is
    resampled nearest-neighbour (0 outside the label map).
    """
    same_axes = (
        tuple(label.GetSize()[:2]) == plane.size
        and np.allclose(label.GetSpacing()[:2], plane.spacing, atol=1e-4)
        and np.allclose(label.GetDirection(), plane.direction, atol=1e-4)
    )
    if same_axes:
        i, j, k = label.TransformPhysicalPointToContinuousIndex(plane.origin)
        index = round(k)
        if abs(i) < 1e-3 and abs(j) < 1e-3 and abs(k - index) < 1e-3 and 0 <= index < voxels.shape[0]:
            return voxels[index]
    resampled = sitk.Resample(label, plane.reference(), sitk.Transform(), sitk.sitkNearestNeighbor, 0, label.GetPixelID())
    return sitk.GetArrayFromImage(resampled)[0]


def load_label_volumes_per_slice(
    label_uris: list[str], planes: list[SlicePlane], opts: ConvertOptions
) -> list[tuple[np.ndarray, dict[int, str], str]]:
    """Each attached label map sampled at every slice's own plane: (array [k, y, x], names, stem).

    Why per slice and not one resampling onto a regular grid: the slices of a series
    with a missing file, or unevenly spaced, are not at first position + k × spacing;
    a regular grid would give every slice after the gap its neighbour's labels.
    """
    volumes = []
    for uri in label_uris:
        label = read_label_map(uri)
        if label.GetDimension() != 3:
            raise ConversionError(
                "label_grid_mismatch", f"{uri}: label map is {label.GetDimension()}D but the image has {len(planes)} slices"
            )
        voxels = sitk.GetArrayViewFromImage(label)
        volumes.append(named_label_volume(uri, np.stack([label_on_plane(label, voxels, plane) for plane in planes]), opts))
    return volumes


def frames_of(ds: Dataset, uri: str) -> np.ndarray:
    """Pixel data as [frames, rows, cols(, 3)], decoded by pydicom's pixel handlers."""
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        sop_class = ds.get("SOPClassUID") or getattr(getattr(ds, "file_meta", None), "MediaStorageSOPClassUID", None)
        sop_name = getattr(sop_class, "name", "") or ""
        if ("Rows" in ds and "Columns" in ds) or "Image Storage" in sop_name:
            raise ConversionError(
                "truncated",
                f"{uri}: file ends before Pixel Data (7FE0,0010) although it is an image ({sop_name or 'Rows/Columns set'})",
            )
        raise ConversionError("no_pixel_data", f"{uri}: the dataset has no Pixel Data (7FE0,0010)")
    _check_native_length(ds, uri)
    arr = decode_pixels(ds, uri)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if frames == 1:
        arr = arr[np.newaxis]
    expected_ndim = 4 if samples > 1 else 3
    if arr.ndim != expected_ndim:
        raise ConversionError("bad_header", f"{uri}: pixel array has shape {arr.shape}, expected {expected_ndim}D")
    return arr


#: GDCM may abort() the whole process on corrupt codestreams (seen while fuzzing), so it is
#: only a fallback inside the killable worker of converters.guard, which sets this flag
GDCM_FALLBACK = False


def decode_pixels(ds: Dataset, uri: str) -> np.ndarray:
    """Decoded pixel data, trying each installed decoder plugin except GDCM in turn
    (pylibjpeg/openjpeg, pyjpegls, Pillow, pydicom's own), GDCM last and only when
    :data:`GDCM_FALLBACK` is on."""
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    try:
        decoder = pydicom.pixels.get_decoder(syntax) if syntax is not None else None
    except (NotImplementedError, ValueError) as exc:
        raise ConversionError("pixel_decode_failed", f"{uri}: no decoder for transfer syntax {syntax} ({_short(exc)})") from exc
    plugins = [p for p in (decoder.available_plugins if decoder else ()) if p != "gdcm"]
    if GDCM_FALLBACK and decoder is not None and "gdcm" in decoder.available_plugins:
        plugins.append("gdcm")
    errors: list[str] = []
    for plugin in plugins or [""]:
        try:
            ds.pixel_array_options(decoding_plugin=plugin)
            return ds.pixel_array
        except Exception as exc:  # decoders raise many types for corrupt or unsupported data
            errors.append(f"{plugin or 'default'}: {_short(exc)}")
    raise ConversionError(
        "pixel_decode_failed", f"{uri}: pixel data cannot be decoded (transfer syntax {syntax}): " + "; ".join(errors)
    )


def _check_native_length(ds: Dataset, uri: str) -> None:
    """Uncompressed pixel data shorter than Rows x Columns x frames x samples says: truncated."""
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if syntax is None or syntax.is_compressed or "PixelData" not in ds:
        return
    try:
        expected = (
            int(ds.Rows) * int(ds.Columns) * int(ds.get("NumberOfFrames", 1) or 1)
            * int(ds.get("SamplesPerPixel", 1) or 1) * int(ds.BitsAllocated) // 8
        )
    except (AttributeError, TypeError, ValueError):
        return
    if str(ds.get("PhotometricInterpretation", "")) == "YBR_FULL_422":
        expected = expected * 2 // 3  # 4:2:2 chroma subsampling: 2 samples per pixel on average
    actual = len(ds.PixelData)
    if actual < expected:
        raise ConversionError(
            "truncated", f"{uri}: Pixel Data holds {actual} bytes, the header's geometry needs {expected}"
        )


def colour_frame(ds: Dataset, frame: np.ndarray) -> np.ndarray:
    """8-bit RGB of a colour frame (RGB/YBR already RGB from pydicom; palette via its LUT).

    Values wider than 8 bits are scaled by the range the header declares
    (:func:`colour_bits`), never by the frame's own maximum: every frame of an object
    then gets the same brightness, and a 12-bit frame is not read as a dark 16-bit one.
    """
    if str(ds.get("PhotometricInterpretation", "")) == "PALETTE COLOR":
        frame = apply_color_lut(frame, ds)
    if frame.dtype == np.uint8:
        return frame
    top = float(2 ** colour_bits(ds, frame) - 1)
    scaled = np.rint(np.clip(frame.astype(np.float64), 0.0, top) * (255.0 / top))
    return scaled.astype(np.uint8)


def colour_bits(ds: Dataset, frame: np.ndarray) -> int:
    """Bits of the colour values: the palette LUT's entry size (descriptor 3rd value) for
    palette colour, else BitsStored, bounded by the array's own width (a header that
    claims more than the decoded data holds cannot be right)."""
    width = frame.dtype.itemsize * 8
    try:
        if str(ds.get("PhotometricInterpretation", "")) == "PALETTE COLOR":
            bits = int(ds.RedPaletteColorLookupTableDescriptor[2])
        else:
            bits = int(ds.get("BitsStored") or width)
    except (AttributeError, IndexError, TypeError, ValueError):
        bits = width
    return min(max(bits, 8), width)


#: VOI LUT Function values pydicom's windowing implements, with the smallest width each
#: accepts (PS3.3 C.11.2.1.2: LINEAR needs ≥ 1, LINEAR_EXACT and SIGMOID > 0)
_VOI_FUNCTIONS = {"LINEAR": 1.0, "LINEAR_EXACT": 0.0, "SIGMOID": 0.0}


def _first_value(value: Any) -> Any:
    """The first of a multi-valued element (the default of several alternative windows)."""
    if isinstance(value, pydicom.multival.MultiValue | list | tuple):
        return value[0] if len(value) else None
    return value


def usable_voi_lut(ds: Dataset) -> str | None:
    """Why the VOILUTSequence cannot be applied, or None when its first item can."""
    if "VOILUTSequence" not in ds:
        return "no VOILUTSequence"
    items = ds.get("VOILUTSequence") or []
    if not items:
        return "VOILUTSequence is empty"
    descriptor, data = items[0].get("LUTDescriptor"), items[0].get("LUTData")
    if descriptor is None or len(descriptor) != 3 or data is None or not len(data):
        return "VOILUTSequence item has no LUTDescriptor or LUTData"
    entries, bits = int(descriptor[0]) or 2**16, descriptor[2]
    if bits != 8 and not 10 <= bits <= 16:
        return f"VOI LUT entries of {bits} bits (8 or 10-16 allowed)"
    if bits == 8 and entries > 256:
        # pydicom 3.0's apply_voi holds the LUT index in the entries' dtype (uint8): an index
        # above 255 wraps round and picks the wrong entry
        return f"an 8-bit VOI LUT of {entries} entries (pydicom indexes it modulo 256)"
    return None


def stored_window(ds: Dataset) -> tuple[float, float] | str:
    """The file's first (center, width), or why it cannot be applied.

    pydicom returns the input unchanged for an empty WindowCenter/WindowWidth (the image
    then came out flat grey) and raises for a width below its function's minimum (which
    rejected the series), so both are checked here first.
    """
    center, width = _first_value(ds.get("WindowCenter")), _first_value(ds.get("WindowWidth"))
    if center is None or width is None or center == "" or width == "":
        present = "WindowCenter" in ds or "WindowWidth" in ds
        return "WindowCenter/WindowWidth is empty" if present else "no WindowCenter/WindowWidth"
    try:
        center, width = float(center), float(width)
    except (TypeError, ValueError):
        return f"WindowCenter {center!r} / WindowWidth {width!r} are not numbers"
    function = str(ds.get("VOILUTFunction") or "LINEAR").upper()  # absent or empty: LINEAR, the standard's default
    if function not in _VOI_FUNCTIONS:
        return f"VOILUTFunction {ds.get('VOILUTFunction')!r} is not LINEAR, LINEAR_EXACT or SIGMOID"
    if not (np.isfinite(center) and np.isfinite(width)) or width < _VOI_FUNCTIONS[function] or width <= 0:
        return f"WindowWidth {width:g} is not a valid {function} width"
    return center, width


def _apply_file_voi(ds: Dataset, physical: np.ndarray) -> tuple[np.ndarray, tuple[float, float], dict[str, Any]] | str:
    """The file's own VOI (LUT preferred, as pydicom does, else window) through pydicom's
    functions: (output, output range as a window, what to record), or why it was not
    applicable. pydicom is still guarded: a header it rejects costs the slice its stored
    window, not the series."""
    lut_problem = usable_voi_lut(ds)
    window = None if lut_problem is None else stored_window(ds)
    if isinstance(window, str):  # neither is usable: say why, unless neither is there at all
        problems = [p for p in (lut_problem or "", window) if not p.startswith("no ")]
        return "; ".join(problems)
    if window is None:  # the LUT: the input range its entries cover is the window it applies
        descriptor = ds.VOILUTSequence[0].LUTDescriptor
        entries, first = int(descriptor[0]) or 2**16, float(descriptor[1])
        recorded = {"source": "dicom_lut", "center": first + entries / 2, "width": float(entries)}
        last = first + entries - 1
        apply, values, probe = apply_voi, _lut_input(physical, first, last), _lut_input(np.array([first, last]), first, last)
    else:
        recorded = {"source": "dicom", "center": window[0], "width": window[1]}
        apply, values, probe = apply_windowing, physical, np.array([-1e12, 1e12])
        if "VOILUTFunction" in ds and not str(ds.VOILUTFunction or "").strip():
            ds.VOILUTFunction = "LINEAR"  # empty (Type 3) means the default; pydicom refuses ""
    try:
        output = apply(values, ds, index=0)
        low, high = (float(v) for v in apply(probe, ds, index=0))  # the output range, as a window
    except (ValueError, NotImplementedError, IndexError, KeyError, TypeError, AttributeError) as exc:
        return f"pydicom cannot apply the file's VOI ({type(exc).__name__}: {_short(exc)})"
    return output, ((low + high) / 2, high - low), recorded


def _lut_input(physical: np.ndarray, first: float, last: float) -> np.ndarray:
    """Values for pydicom's ``apply_voi``, clipped to the LUT's input range (which maps
    values outside it to the first/last entry anyway): pydicom subtracts the first mapped
    value into an array of the entries' dtype, so a value far above the range would wrap
    round to a wrong entry. Integer-valued input goes in as integers (pydicom warns
    about float input)."""
    clipped = np.clip(physical, first, last)
    if clipped.dtype.kind == "f" and np.array_equal(clipped, np.rint(clipped)):
        return clipped.astype(np.int64)
    return clipped


def grey_frame_images(
    ds: Dataset, stored: np.ndarray, modality: str, spacing_mm: list[float] | None
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """``input`` and ``raw`` images of a monochrome frame, and the steps that made them.

    The window is the file's VOI LUT or window when it holds a usable one, else
    :func:`auto_window`; the row and the provenance record the one actually applied,
    and why a stored one was not.
    """
    physical = apply_modality_lut(stored, ds)
    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    invert = str(ds.get("PhotometricInterpretation", "")) == "MONOCHROME1"
    raw = lossless_raw(stored, slope, intercept) if "ModalityLUTSequence" not in ds else None
    step: dict[str, Any] = {"modality_lut": {"slope": slope, "intercept": intercept}, "invert": invert}
    applied = _apply_file_voi(ds, physical)
    if isinstance(applied, tuple):
        voi, output_range, recorded = applied
        images = grey_images(voi, window=output_range, invert=invert, raw=raw, spacing_mm=spacing_mm)
        images[0]["window"] = {"center": recorded["center"], "width": recorded["width"]}
        step["voi"] = recorded
    else:
        window = auto_window(physical, modality)
        images = grey_images(physical, window=window, invert=invert, raw=raw, spacing_mm=spacing_mm)
        step["voi"] = {"source": "default", "center": window[0], "width": window[1]}
        if applied:
            step["voi"]["file_voi_not_applied"] = applied
    return images, step


#: decoded pixel data larger than this is rejected before decoding (a mangled header must
#: not make one item allocate tens of gigabytes)
MAX_DECODED_BYTES = 2 * 1024**3
#: modalities whose multi-frame files are cine loops (→ a video clip, not slices)
CINE_MODALITIES = ("US", "IVUS", "ES", "GM", "XC")


def check_pixel_budget(ds: Dataset, uri: str) -> None:
    """Reject impossible or enormous pixel dimensions before decoding anything."""
    try:
        rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
        bits = int(ds.get("BitsAllocated", 8) or 8)
    except (TypeError, ValueError) as exc:
        raise ConversionError("bad_header", f"{uri}: pixel module values are not integers ({_short(exc)})") from exc
    if "PixelData" in ds and (rows <= 0 or cols <= 0 or frames <= 0 or samples not in (1, 3, 4)):
        raise ConversionError(
            "bad_header", f"{uri}: Rows={rows} Columns={cols} NumberOfFrames={frames} SamplesPerPixel={samples}"
        )
    size = rows * cols * frames * samples * max(bits, 8) // 8
    if size > MAX_DECODED_BYTES:
        raise ConversionError(
            "too_large", f"{uri}: pixel data would decode to {size / 1024**3:.1f} GiB (limit {MAX_DECODED_BYTES / 1024**3:.0f} GiB)"
        )


def is_enhanced(ds: Dataset) -> bool:
    """Enhanced (functional-group) multi-frame objects: Enhanced CT/MR/XA/US, legacy converted."""
    return "PerFrameFunctionalGroupsSequence" in ds


def is_cine(ds: Dataset) -> bool:
    """A multi-frame loop played over time (ultrasound, endoscopy), not a stack of slices."""
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames < 2 or is_enhanced(ds):
        return False
    timed = any(k in ds for k in ("FrameTime", "FrameTimeVector", "CineRate", "RecommendedDisplayFrameRate"))
    return timed and str(ds.get("Modality", "")).upper() in CINE_MODALITIES


def cine_fps(ds: Dataset) -> float:
    """Frames per second of a cine loop: CineRate, RecommendedDisplayFrameRate, 1000/FrameTime,
    or the FrameTimeVector's mean; 10 fps when the file states none."""
    candidates: list[float] = []
    for keyword in ("CineRate", "RecommendedDisplayFrameRate"):
        if ds.get(keyword):
            candidates.append(float(ds.get(keyword)))
    if ds.get("FrameTime"):
        candidates.append(1000.0 / float(ds.FrameTime))
    vector = ds.get("FrameTimeVector")
    if vector and len(vector) > 1:
        steps = [float(v) for v in list(vector)[1:] if float(v) > 0]
        if steps:
            candidates.append(1000.0 / (sum(steps) / len(steps)))
    for fps in candidates:
        if 0.1 <= fps <= 240.0:
            return fps
    return 10.0


#: attributes of the image pixel / plane modules a frame view carries over from the top level
_FRAME_VIEW_KEYWORDS = (
    "Rows", "Columns", "SamplesPerPixel", "PhotometricInterpretation", "BitsAllocated", "BitsStored",
    "HighBit", "PixelRepresentation", "Modality", "SOPInstanceUID", "RescaleSlope", "RescaleIntercept",
    "RescaleType", "WindowCenter", "WindowWidth", "VOILUTFunction", "PixelSpacing", "ImagePositionPatient",
    "ImageOrientationPatient", "SliceThickness", "SpacingBetweenSlices", "FrameOfReferenceUID",
)
#: functional group macros whose attributes are lifted into the frame view
_FUNCTIONAL_GROUPS = (
    "PixelMeasuresSequence", "PlanePositionSequence", "PlaneOrientationSequence",
    "PixelValueTransformationSequence", "FrameVOILUTSequence",
)


def enhanced_frame_views(ds: Dataset) -> list[tuple[int, Dataset]]:
    """(frame index, flat per-frame dataset) of an enhanced multi-frame object, in slice order.

    Each view has the classic single-frame attributes (ImagePositionPatient, PixelSpacing,
    RescaleSlope, WindowCenter…) taken from the Shared then the Per-frame Functional Groups,
    so the LUT pipeline and the series geometry code treat frames like classic slices.
    """
    per_frame = list(ds.get("PerFrameFunctionalGroupsSequence") or [])
    shared = (ds.get("SharedFunctionalGroupsSequence") or [Dataset()])[0]
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if len(per_frame) != frames:
        raise ConversionError(
            "bad_header", f"NumberOfFrames is {frames} but PerFrameFunctionalGroupsSequence has {len(per_frame)} items"
        )
    views = []
    for index, groups in enumerate(per_frame):
        view = Dataset()
        for keyword in _FRAME_VIEW_KEYWORDS:
            if keyword in ds:
                setattr(view, keyword, ds[keyword].value)
        for source in (shared, groups):
            for group in _FUNCTIONAL_GROUPS:
                for item in (source.get(group) or [])[:1]:
                    for elem in item:
                        view[elem.tag] = elem
        views.append((index, view))
    normal = slice_normal(views[0][1])
    return sorted(views, key=lambda v: (slice_position(v[1], normal), v[0]))


def convert_dicom_item(item: dict[str, Any], opts: ConvertOptions) -> list[dict[str, Any]]:
    """All samples of one DICOM item as a list (see :func:`iter_dicom_item`)."""
    return list(iter_dicom_item(item, opts))


def iter_dicom_item(item: dict[str, Any], opts: ConvertOptions) -> Iterator[dict[str, Any]]:
    """All samples of one DICOM item: a series of single-frame files, an enhanced
    multi-frame object (one sample per frame, in slice order), a multi-frame file (one per
    frame) or a cine loop (one video sample).

    Header values that parse but make no sense (``'3.2x'`` as a position, a negative
    frame count) surface as ValueError/TypeError deep in geometry code; they are input
    faults, so they become a ``bad_header`` reject naming the exception.
    """
    try:
        yield from _iter_dicom_rows(item, opts)
    except ConversionError:
        raise
    except _ELEMENT_ERRORS as exc:
        raise ConversionError(
            "bad_header", f"{item['key']}: a header value is malformed ({type(exc).__name__}: {_short(exc)})"
        ) from exc


def _iter_dicom_rows(item: dict[str, Any], opts: ConvertOptions) -> Iterator[dict[str, Any]]:
    members: list[str] = list(item.get("members") or [item["uri"]])
    # discovery converted every header element of these files (``converters.discover._read_dicom_facts``), so a
    # damaged element already rejected its file there; not again here (~1 ms a file)
    headers = [(uri, read_dicom(read_bytes(uri), uri, headers_only=True, check_elements=False)) for uri in members]
    ordered = order_series(headers)
    first = ordered[0][1]
    _reject_burned_in(first, ordered[0][0], opts)
    if annotation_kind(first) is not None:
        raise ConversionError(
            "orphan_label_map", f"{item['key']}: a {first.get('Modality')} object whose referenced image series is not in the source"
        )
    for uri, header in ordered:
        check_pixel_budget(header, uri)
    subject = patient_identifier(first, item["key"])
    header_meta = dicom_metadata(first, salt=opts.salt, subject=subject, dates=opts.deid_dates)
    modality = controlled_modality(first, opts.modality)
    part = body_part(header_meta.get("BodyPartExamined"))  # de-identified with the rest of the metadata
    if len(ordered) == 1 and is_cine(first):
        yield _cine_row(item, opts, ordered[0][0], modality, subject, part, header_meta)
        return

    # one slot per output slice: (file index, frame index, dataset holding its pixel semantics)
    slots: list[tuple[int, int, Dataset]]
    if len(ordered) > 1:
        slots = [(file_index, 0, header) for file_index, (_, header) in enumerate(ordered)]
    elif is_enhanced(first):
        slots = [(0, frame, view) for frame, view in enhanced_frame_views(first)]
    else:
        frames_per_file = int(first.get("NumberOfFrames", 1) or 1)
        slots = [(0, frame, first) for frame in range(frames_per_file)]
    # slices that each carry their own position (a series' files, an enhanced object's frames)
    positioned = len(slots) > 1 and (len(ordered) > 1 or is_enhanced(first))
    views = [view for _, _, view in slots]
    slot_names = [
        f"slice {i} ({ordered[f][0]}" + (f" frame {frame + 1})" if len(ordered) == 1 else ")")
        for i, (f, frame, _) in enumerate(slots)
    ] if positioned and item.get("label_uris") else None
    label_volumes, label_params = _label_volumes(
        item, opts, views, slot_names, frame_numbers=[frame + 1 for _, frame, _ in slots],
    )
    spacing_z = series_slice_spacing(views) if positioned else None
    for array, _, stem in label_volumes:
        if array.shape[0] != len(slots):
            raise ConversionError(
                "label_grid_mismatch",
                f"{item['key']}: label map {stem} has {array.shape[0]} slices on the image grid, the image has {len(slots)}",
            )
    selected = opts.slices.select(len(slots))
    cached: tuple[int, Dataset, np.ndarray] | None = None
    failed: list[ConversionError] = []
    for slot_index in selected:
        file_index, frame_index, view = slots[slot_index]
        if cached is None or cached[0] != file_index:
            uri = ordered[file_index][0]
            try:
                ds = read_dicom(read_bytes(uri), uri, check_elements=False)  # its header was checked at discovery
                _reject_burned_in(ds, uri, opts)
                check_pixel_budget(ds, uri)
                cached = (file_index, ds, frames_of(ds, uri))
            except ConversionError as err:
                if len(ordered) == 1:
                    raise
                failed.append(err)  # one file of a series: the series' other slices still convert
                continue
        _, ds, frames = cached
        pixel_ds = ds if view is ordered[file_index][1] or view is first else view
        yield _slice_row(
            item, opts, ds, pixel_ds, frames[frame_index], slot_index, len(slots), modality, subject, part,
            label_volumes, header_meta, spacing_z, label_params,
        )
    if failed:
        raise series_files_failed(item["key"], failed, len(ordered))


def series_files_failed(key: str, failed: list[ConversionError], files: int) -> ConversionError:
    """The reject of a series some of whose files could not be converted (cut short,
    undecodable pixels, burned-in text): raised after the other slices' rows, which a
    streaming conversion keeps; the reason is the first failure's."""
    shown = "; ".join(err.detail for err in failed[:3]) + ("; …" if len(failed) > 3 else "")
    return ConversionError(
        failed[0].reason, f"{key}: {len(failed)} of {files} files not converted, the series' other slices were: {shown}"
    )


def _label_volumes(
    item: dict[str, Any],
    opts: ConvertOptions,
    ordered: list[Dataset],
    slot_names: list[str] | None = None,
    *,
    frame_numbers: list[int] | None = None,
) -> tuple[list[tuple[np.ndarray, dict[int, str], str]], dict[str, dict[str, Any]]]:
    """Attached label maps on the series grid: volume files (resampled) and DICOM SEG/RTSTRUCT,
    and how each DICOM one was placed (by stem: placement, a FRACTIONAL SEG's threshold), for
    the rows' provenance.

    ``frame_numbers`` (each slice's 1-based frame in its SOP instance) lets a SEG or
    RT-STRUCT reference a frame of an Enhanced CT/MR (ReferencedFrameNumber).

    ``slot_names`` (one per slice) is given when every slice carries its own position:
    volume label maps are then sampled at each slice's own plane
    (:func:`load_label_volumes_per_slice`); otherwise on the regular
    :func:`series_reference` grid.
    """
    uris = list(item.get("label_uris") or [])
    if not uris:
        return [], {}
    volume_uris = [u for u in uris if member_path(u).lower().endswith(VOLUME_LABEL_EXTENSIONS)]
    dicom_uris = [u for u in uris if u not in volume_uris]
    volumes: list[tuple[np.ndarray, dict[int, str], str]] = []
    if volume_uris and slot_names is not None:
        try:
            planes = slice_planes(ordered, slot_names)
        except ConversionError as err:
            names = ", ".join(member_path(u) for u in volume_uris)
            raise ConversionError(err.reason, f"{item['key']}: label map {names} not placed: {err.detail}") from err
        volumes.extend(load_label_volumes_per_slice(volume_uris, planes, opts))
    elif volume_uris:
        volumes.extend(load_label_volumes(volume_uris, series_reference(ordered), opts))
    dicom = load_dicom_labels(dicom_uris, ordered, item["key"], frame_numbers) if dicom_uris else []
    named = distinct_stems(volumes + [(v.array, v.names, v.stem) for v in dicom])
    # by the stem each map's masks carry (two SEGs named alike become ``seg``, ``seg~2``)
    placed = {stem: v.params for (_, _, stem), v in zip(named[len(volumes):], dicom, strict=True) if v.params}
    return named, placed


def _cine_row(
    item: dict[str, Any],
    opts: ConvertOptions,
    uri: str,
    modality: str,
    subject: str,
    part: str | None,
    header_meta: dict[str, Any],
) -> dict[str, Any]:
    """A cine loop (ultrasound, endoscopy) as one H.264 video sample."""
    ds = read_dicom(read_bytes(uri), uri)
    _reject_burned_in(ds, uri, opts)
    frames = frames_of(ds, uri)
    fps = cine_fps(ds)
    if frames.ndim == 4 or str(ds.get("PhotometricInterpretation", "")) == "PALETTE COLOR":
        rgb: Any = (colour_frame(ds, f) for f in frames)
    else:
        center, width = auto_window(frames, "OTHER")
        rgb = (np.repeat(to_uint8_window(f, center - width / 2, center + width / 2)[..., None], 3, axis=2) for f in frames)
    data, count, width, height = encode_frames(rgb, fps)
    video = {
        "data": data, "format": "mp4", "fps": fps, "num_frames": count, "width": width, "height": height,
        "start_s": 0.0, "end_s": count / fps,
    }
    where = f" of the {part}" if part else ""
    steps = [
        {"step": "dicom.read", "params": {"transfer_syntax": str(ds.file_meta.TransferSyntaxUID)}},
        {"step": "dicom.header", "params": header_meta},
        {"step": "dicom.cine", "params": {"fps": fps, "frames": count, "photometric": str(ds.get("PhotometricInterpretation"))}},
        {"step": "video.encode", "params": {"codec": "libx264", "crf": 23}},
    ]
    return build_row(
        opts, key=item["key"], sha256=item["sha256"], modality=modality, subject_id=subject, images=[],
        video=video, caption=f"{modality} cine loop{where}, {count} frames at {fps:g} fps.", steps=steps,
    )


def _slice_row(
    item: dict[str, Any],
    opts: ConvertOptions,
    ds: Dataset,
    pixel_ds: Dataset,
    frame: np.ndarray,
    index: int,
    count: int,
    modality: str,
    subject: str,
    part: str | None,
    label_volumes: list[tuple[np.ndarray, dict[int, str], str]],
    header_meta: dict[str, Any],
    spacing_z: float | None = None,
    label_params: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    spacing = pixel_ds.get("PixelSpacing") or pixel_ds.get("ImagerPixelSpacing")
    spacing_mm = [float(spacing[0]), float(spacing[1])] if spacing else None
    if count > 1 and spacing_mm is not None:
        spacing_mm.append(
            spacing_z or float(pixel_ds.get("SpacingBetweenSlices") or pixel_ds.get("SliceThickness") or 0.0) or 0.0
        )
    steps: list[dict[str, Any]] = [
        {"step": "dicom.read", "params": {"transfer_syntax": str(ds.file_meta.TransferSyntaxUID)}},
        {"step": "dicom.header", "params": header_meta},
    ]
    if frame.ndim == 3 or str(ds.get("PhotometricInterpretation", "")) == "PALETTE COLOR":
        rgb = colour_frame(ds, frame)
        images = [image_record("input", rgb, spacing_mm=spacing_mm)]
        steps.append({"step": "dicom.colour", "params": {"photometric": str(ds.PhotometricInterpretation)}})
    else:
        images, pixel_step = grey_frame_images(pixel_ds, frame, modality, spacing_mm)
        steps.append({"step": "dicom.grey", "params": pixel_step})
    masks: list[dict[str, Any]] = []
    for array, names, stem in label_volumes:
        masks.extend(masks_for_slice(array[index], names, stem))
    if masks:
        placement = {"dicom": label_params} if label_params else {}
        steps.append({"step": "labels.resample_nearest", "params": {"maps": [v[2] for v in label_volumes], **placement}})
    categories = sorted({m["category"] for m in masks})
    key = f"{item['key']}#slice={index}" if count > 1 else item["key"]
    steps.append({"step": "png.encode", "params": {}})
    return build_row(
        opts,
        key=key,
        sha256=item["sha256"],
        modality=modality,
        subject_id=subject,
        images=images,
        masks=masks or None,
        labels=categories or None,
        caption=_caption(modality, part, index, count, categories),
        steps=steps,
    )


def _caption(modality: str, part: str | None, index: int, count: int, categories: list[str]) -> str:
    """A grounded description from facts the file states (no free text from the header)."""
    where = f" of the {part}" if part else ""
    position = f", slice {index + 1} of {count}" if count > 1 else ""
    text = f"{modality} image{where}{position}."
    if categories:
        text += " Segmented structures: " + ", ".join(categories) + "."
    return text


#: modalities whose images often carry the patient's name, ID or dates as burned-in text
#: (ultrasound, fluoroscopy, endoscopy and camera photographs, secondary captures of
#: screens and documents) — rejected under ``burned_in="strict"`` unless the header says NO
BURNED_IN_PRONE = frozenset({"US", "IVUS", "XA", "RF", "ES", "XC", "GM", "OT", "SC", "DOC"})
#: Secondary Capture Image Storage SOP classes (1.2.840.10008.5.1.4.1.1.7 and .7.x)
_SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"


def _reject_burned_in(ds: Dataset, uri: str, opts: ConvertOptions) -> None:
    """Reject pixels that may carry identifying text, by the header (nothing reads the
    pixels for text): BurnedInAnnotation=YES always (unless ``allow_burned_in``); with
    ``burned_in="strict"`` also a burned-in-prone modality or a secondary capture whose
    header does not say NO, which is most ultrasound and screen captures."""
    if opts.allow_burned_in:
        return
    declared = str(ds.get("BurnedInAnnotation", "") or "").strip().upper()
    if declared == "YES":
        raise ConversionError(
            "burned_in_annotation",
            f"{uri}: BurnedInAnnotation (0028,0301) is YES; text in the pixels may identify the patient",
        )
    if opts.burned_in != "strict" or declared == "NO":
        return
    modality = str(ds.get("Modality", "") or "").strip().upper()
    sop_class = str(ds.get("SOPClassUID", "") or "")
    secondary = sop_class == _SECONDARY_CAPTURE or sop_class.startswith(_SECONDARY_CAPTURE + ".")
    if modality in BURNED_IN_PRONE or secondary:
        kind = "a secondary capture" if secondary else f"modality {modality}"
        raise ConversionError(
            "burned_in_unknown",
            f"{uri}: {kind} often has burned-in text and BurnedInAnnotation (0028,0301) is "
            f"{declared or 'absent'}, not NO (burned_in=strict)",
        )


def _short(exc: BaseException) -> str:
    return (str(exc) or type(exc).__name__).splitlines()[0][:200]
