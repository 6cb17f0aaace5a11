"""DICOM files and series → canonical samples, one per slice or frame.

Pixel semantics follow the standard through pydicom's own LUT functions:
modality LUT (rescale slope/intercept → Hounsfield units for CT), then the VOI LUT or
window stored in the file (else the modality's default window), then MONOCHROME1
inversion so that high attenuation is bright. Colour data (RGB, YBR, palette) becomes
8-bit RGB. Slices of a series are ordered by ImagePositionPatient along the slice
normal, and in-plane pixels keep the orientation the file stores (the way a viewer
shows them).

De-identification happens here: no header value is copied to a sample except the
modality, a coded body part, geometry and the window; the patient becomes a salted
pseudonym.
"""

from __future__ import annotations

import io
import re
from typing import Any

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut

from converters.base import ConversionError, ConvertOptions
from converters.imaging import auto_window, grey_images, lossless_raw
from converters.io import read_bytes
from converters.labels import load_label_volumes, masks_for_slice
from converters.rows import build_row
from curation.images import image_record

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


def read_dicom(data: bytes, uri: str, *, headers_only: bool = False) -> Dataset:
    """Parse DICOM bytes; a file that is not DICOM or is cut short becomes a ConversionError."""
    if not data:
        raise ConversionError("empty_file", f"{uri}: file is empty (0 bytes)")
    try:
        ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=headers_only, force=False)
    except InvalidDicomError as exc:
        raise ConversionError("not_dicom", f"{uri}: no DICOM preamble/header ({exc})") from exc
    except (EOFError, OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ConversionError("truncated", f"{uri}: DICOM header cannot be parsed ({_short(exc)})") from exc
    return ds


def controlled_modality(ds: Dataset, fallback: str | None) -> str:
    return MODALITY_MAP.get(str(ds.get("Modality", "")).upper(), fallback or "OTHER")


def body_part(ds: Dataset) -> str | None:
    """BodyPartExamined when it is a coded string (CS), never free text."""
    value = str(ds.get("BodyPartExamined", "") or "").strip().upper()
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


def series_reference(ordered: list[Dataset]) -> sitk.Image:
    """An empty SimpleITK image with the series' physical grid, for resampling labels."""
    first = ordered[0]
    rows, cols = int(first.Rows), int(first.Columns)
    iop = first.get("ImageOrientationPatient") or [1, 0, 0, 0, 1, 0]
    row_dir, col_dir = np.asarray(iop[:3], float), np.asarray(iop[3:], float)
    normal = np.cross(row_dir, col_dir)
    spacing = first.get("PixelSpacing") or [1.0, 1.0]
    positions = [slice_position(ds, normal) for ds in ordered]
    dz = float(np.median(np.diff(positions))) if len(ordered) > 1 else float(first.get("SliceThickness") or 1.0)
    ref = sitk.Image([cols, rows, len(ordered)], sitk.sitkUInt8)
    ref.SetSpacing([float(spacing[1]), float(spacing[0]), abs(dz) or 1.0])
    ref.SetOrigin([float(v) for v in (first.get("ImagePositionPatient") or [0, 0, 0])])
    ref.SetDirection(np.column_stack([row_dir, col_dir, normal]).flatten().tolist())
    return ref


def frames_of(ds: Dataset, uri: str) -> np.ndarray:
    """Pixel data as [frames, rows, cols(, 3)], decoded by pydicom's pixel handlers."""
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise ConversionError("no_pixel_data", f"{uri}: the dataset has no Pixel Data (7FE0,0010)")
    try:
        arr = ds.pixel_array
    except Exception as exc:  # decoders raise many types for corrupt or unsupported data
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        raise ConversionError(
            "pixel_decode_failed", f"{uri}: pixel data cannot be decoded (transfer syntax {syntax}): {_short(exc)}"
        ) from exc
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if frames == 1:
        arr = arr[np.newaxis]
    expected_ndim = 4 if samples > 1 else 3
    if arr.ndim != expected_ndim:
        raise ConversionError("bad_header", f"{uri}: pixel array has shape {arr.shape}, expected {expected_ndim}D")
    return arr


def colour_frame(ds: Dataset, frame: np.ndarray) -> np.ndarray:
    """8-bit RGB of a colour frame (RGB/YBR already RGB from pydicom; palette via its LUT)."""
    if str(ds.get("PhotometricInterpretation", "")) == "PALETTE COLOR":
        frame = apply_color_lut(frame, ds)
    if frame.dtype != np.uint8:
        bits = 16 if frame.dtype.itemsize >= 2 and frame.max() > 255 else 8
        frame = (frame >> (bits - 8)).astype(np.uint8) if bits > 8 else frame.astype(np.uint8)
    return frame


def grey_frame_images(
    ds: Dataset, stored: np.ndarray, modality: str, spacing_mm: list[float] | None
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """``input`` and ``raw`` images of a monochrome frame, and the steps that made them."""
    physical = apply_modality_lut(stored, ds)
    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    has_voi = "WindowCenter" in ds and "WindowWidth" in ds or "VOILUTSequence" in ds
    invert = str(ds.get("PhotometricInterpretation", "")) == "MONOCHROME1"
    raw = lossless_raw(stored, slope, intercept) if "ModalityLUTSequence" not in ds else None
    step: dict[str, Any] = {"modality_lut": {"slope": slope, "intercept": intercept}, "invert": invert}
    if has_voi:
        voi = apply_voi_lut(physical, ds, index=0)
        low, high = (float(v) for v in apply_voi_lut(np.array([-1e12, 1e12]), ds, index=0))
        center, width = _stored_window(ds, physical)
        images = grey_images(voi, window=((low + high) / 2, high - low), invert=invert, raw=raw, spacing_mm=spacing_mm)
        images[0]["window"] = {"center": center, "width": width}
        step["voi"] = {"source": "dicom", "center": center, "width": width}
    else:
        window = auto_window(physical, modality)
        images = grey_images(physical, window=window, invert=invert, raw=raw, spacing_mm=spacing_mm)
        step["voi"] = {"source": "default", "center": window[0], "width": window[1]}
    return images, step


def convert_dicom_item(item: dict[str, Any], opts: ConvertOptions) -> list[dict[str, Any]]:
    """All samples of one DICOM item (a series of single-frame files, or one file)."""
    members: list[str] = list(item.get("members") or [item["uri"]])
    headers = [(uri, read_dicom(read_bytes(uri), uri, headers_only=True)) for uri in members]
    ordered = order_series(headers)
    first = ordered[0][1]
    _reject_burned_in(first, members[0], opts)
    modality = controlled_modality(first, opts.modality)
    subject = patient_identifier(first, item["key"])
    part = body_part(first)
    frames_per_file = int(first.get("NumberOfFrames", 1) or 1)

    label_volumes = []
    if item.get("label_uris"):
        label_volumes = load_label_volumes(list(item["label_uris"]), series_reference([h[1] for h in ordered]), opts)

    if len(ordered) > 1:
        slots = [(file_index, 0) for file_index in range(len(ordered))]
    else:
        slots = [(0, frame) for frame in range(frames_per_file)]
    for array, _, stem in label_volumes:
        if array.shape[0] != len(slots):
            raise ConversionError(
                "label_grid_mismatch",
                f"{item['key']}: label map {stem} has {array.shape[0]} slices on the image grid, the image has {len(slots)}",
            )
    selected = opts.slices.select(len(slots))
    rows: list[dict[str, Any]] = []
    cached: tuple[int, Dataset, np.ndarray] | None = None
    for slot_index in selected:
        file_index, frame_index = slots[slot_index]
        if cached is None or cached[0] != file_index:
            uri = ordered[file_index][0]
            ds = read_dicom(read_bytes(uri), uri)
            _reject_burned_in(ds, uri, opts)
            cached = (file_index, ds, frames_of(ds, uri))
        _, ds, frames = cached
        rows.append(
            _slice_row(
                item, opts, ds, frames[frame_index], slot_index, len(slots), modality, subject, part, label_volumes
            )
        )
    return rows


def _slice_row(
    item: dict[str, Any],
    opts: ConvertOptions,
    ds: Dataset,
    frame: np.ndarray,
    index: int,
    count: int,
    modality: str,
    subject: str,
    part: str | None,
    label_volumes: list[tuple[np.ndarray, dict[int, str], str]],
) -> dict[str, Any]:
    spacing = ds.get("PixelSpacing") or ds.get("ImagerPixelSpacing")
    spacing_mm = [float(spacing[0]), float(spacing[1])] if spacing else None
    if count > 1 and spacing_mm is not None:
        spacing_mm.append(float(ds.get("SpacingBetweenSlices") or ds.get("SliceThickness") or 0.0) or 0.0)
    steps: list[dict[str, Any]] = [
        {"step": "dicom.read", "params": {"transfer_syntax": str(ds.file_meta.TransferSyntaxUID)}}
    ]
    if frame.ndim == 3:
        rgb = colour_frame(ds, frame)
        images = [image_record("input", rgb, spacing_mm=spacing_mm)]
        steps.append({"step": "dicom.colour", "params": {"photometric": str(ds.PhotometricInterpretation)}})
    else:
        images, pixel_step = grey_frame_images(ds, frame, modality, spacing_mm)
        steps.append({"step": "dicom.grey", "params": pixel_step})
    masks: list[dict[str, Any]] = []
    for array, names, stem in label_volumes:
        masks.extend(masks_for_slice(array[index], names, stem))
    if masks:
        steps.append({"step": "labels.resample_nearest", "params": {"maps": [v[2] for v in label_volumes]}})
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


def _reject_burned_in(ds: Dataset, uri: str, opts: ConvertOptions) -> None:
    if str(ds.get("BurnedInAnnotation", "")).upper() == "YES" and not opts.allow_burned_in:
        raise ConversionError(
            "burned_in_annotation",
            f"{uri}: BurnedInAnnotation (0028,0301) is YES; text in the pixels may identify the patient",
        )


def _stored_window(ds: Dataset, physical: np.ndarray) -> tuple[float, float]:
    center, width = ds.get("WindowCenter"), ds.get("WindowWidth")
    if center is None or width is None:  # VOI LUT sequence: describe its output range
        return auto_window(physical, "OTHER")
    center = center[0] if isinstance(center, pydicom.multival.MultiValue) else center
    width = width[0] if isinstance(width, pydicom.multival.MultiValue) else width
    return float(center), float(width)


def _short(exc: BaseException) -> str:
    return (str(exc) or type(exc).__name__).splitlines()[0][:200]
