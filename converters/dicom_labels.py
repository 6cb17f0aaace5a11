"""DICOM annotation objects → per-structure masks on the slices of the image they annotate.

* **DICOM-SEG** (Segmentation Storage): read with highdicom, which resolves each frame's
  referenced source instance and segment number; segments become one binary volume each,
  indexed like the image's ordered slices (by SOPInstanceUID, falling back to position
  along the slice normal when the SEG references by frame of reference only).
* **RT-STRUCT**: every CLOSED_PLANAR contour is rasterised (scikit-image ``polygon2mask``)
  onto the slice it lies on: the slice its ContourImageSequence references, else the one
  whose position along the normal is nearest to the contour's. Contours of one ROI on one
  slice are combined with XOR, so inner contours cut holes (the usual RT convention).

Both return :class:`LabelVolume` arrays ``[k, rows, cols]`` of label value (segment/ROI
number) on the image grid, the shape :func:`converters.labels.masks_for_slice` expects.
"""

from __future__ import annotations

import dataclasses
import io
from typing import Any

import numpy as np
from pydicom.dataset import Dataset
from skimage.draw import polygon2mask

from converters.base import ConversionError
from converters.io import read_bytes

SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
RTSTRUCT_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.481.3"


@dataclasses.dataclass
class LabelVolume:
    array: np.ndarray  # [k, rows, cols], value = label number, 0 = background
    names: dict[int, str]
    stem: str


def annotation_kind(ds: Dataset) -> str | None:
    """``seg`` / ``rtstruct`` for annotation objects, None for images."""
    sop = str(ds.get("SOPClassUID", ""))
    modality = str(ds.get("Modality", "")).upper()
    if sop == SEG_SOP_CLASS or modality == "SEG":
        return "seg"
    if sop == RTSTRUCT_SOP_CLASS or modality == "RTSTRUCT":
        return "rtstruct"
    return None


def referenced_series_uid(ds: Dataset) -> str | None:
    """SeriesInstanceUID of the image series an annotation object refers to."""
    for item in ds.get("ReferencedSeriesSequence", []) or []:
        uid = item.get("SeriesInstanceUID")
        if uid:
            return str(uid)
    for frame_ref in ds.get("ReferencedFrameOfReferenceSequence", []) or []:
        for study in frame_ref.get("RTReferencedStudySequence", []) or []:
            for series in study.get("RTReferencedSeriesSequence", []) or []:
                uid = series.get("SeriesInstanceUID")
                if uid:
                    return str(uid)
    return None


def _slice_geometry(ordered: list[Dataset]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-slice origin (IPP), row/column directions, slice normal and spacing."""
    first = ordered[0]
    iop = np.asarray(first.get("ImageOrientationPatient") or [1, 0, 0, 0, 1, 0], float)
    row_dir, col_dir = iop[:3], iop[3:]
    normal = np.cross(row_dir, col_dir)
    origins = np.asarray([ds.get("ImagePositionPatient") or [0, 0, 0] for ds in ordered], float)
    spacing = np.asarray(first.get("PixelSpacing") or [1.0, 1.0], float)  # [between rows, between columns]
    return origins, np.stack([row_dir, col_dir]), normal, spacing


def load_seg(uri: str, ordered: list[Dataset], key: str) -> list[LabelVolume]:
    """The segments of a DICOM-SEG, one volume per segment, aligned to ``ordered`` slices."""
    import highdicom as hd

    try:
        seg = hd.seg.segread(io.BytesIO(read_bytes(uri)))
    except Exception as exc:  # highdicom raises several types on malformed SEGs
        raise ConversionError("bad_label_map", f"{uri}: not a readable DICOM-SEG ({_short(exc)})") from exc
    rows, cols = int(ordered[0].Rows), int(ordered[0].Columns)
    if (int(seg.Rows), int(seg.Columns)) != (rows, cols):
        raise ConversionError(
            "label_grid_mismatch", f"{key}: SEG frames are {seg.Rows}x{seg.Columns}, the image is {rows}x{cols}"
        )
    numbers = [int(n) for n in seg.segment_numbers]
    names = {n: str(seg.get_segment_description(n).segment_label).strip().lower() or f"segment_{n}" for n in numbers}
    sop_uids = [str(ds.SOPInstanceUID) for ds in ordered]
    referenced = {str(uid) for _, _, uid in seg.get_source_image_uids()}
    volumes = {n: np.zeros((len(ordered), rows, cols), np.uint16) for n in numbers}
    present = [i for i, uid in enumerate(sop_uids) if uid in referenced]
    if not present:
        raise ConversionError("label_grid_mismatch", f"{key}: the SEG references none of the series' instances")
    pixels = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=[sop_uids[i] for i in present],
        segment_numbers=numbers,
        combine_segments=False,
        skip_overlap_checks=True,
    )  # [instances, rows, cols, segments]
    for out_index, slice_index in enumerate(present):
        for s, number in enumerate(numbers):
            volumes[number][slice_index][pixels[out_index, :, :, s] > 0] = number
    return [LabelVolume(volumes[n], {n: names[n]}, f"seg-{n}") for n in numbers]


def load_rtstruct(uri: str, ordered: list[Dataset], key: str) -> list[LabelVolume]:
    """The ROIs of an RT Structure Set rasterised onto ``ordered`` slices, one volume per ROI."""
    from converters.dicom import read_dicom

    ds = read_dicom(read_bytes(uri), uri)
    origins, dirs, normal, spacing = _slice_geometry(ordered)
    rows, cols = int(ordered[0].Rows), int(ordered[0].Columns)
    positions = origins @ normal
    by_uid = {str(s.get("SOPInstanceUID", "")): i for i, s in enumerate(ordered)}
    names = {int(r.ROINumber): str(r.get("ROIName", "") or f"roi_{r.ROINumber}").strip().lower()
             for r in ds.get("StructureSetROISequence", []) or []}
    tolerance = max(float(np.median(np.abs(np.diff(positions)))) / 2 if len(positions) > 1 else 0.5, 0.5)
    volumes: list[LabelVolume] = []
    for roi in ds.get("ROIContourSequence", []) or []:
        number = int(roi.get("ReferencedROINumber", 0) or 0)
        volume = np.zeros((len(ordered), rows, cols), bool)
        for contour in roi.get("ContourSequence", []) or []:
            if str(contour.get("ContourGeometricType", "")) not in ("CLOSED_PLANAR", ""):
                continue  # POINT / OPEN_PLANAR contours enclose nothing
            points = np.asarray(contour.get("ContourData") or [], float)
            if points.size < 9 or points.size % 3:
                continue
            points = points.reshape(-1, 3)
            index = _contour_slice(contour, points, by_uid, positions, normal, tolerance)
            if index is None:
                continue
            rel = points - origins[index]
            col_px = rel @ dirs[0] / spacing[1]
            row_px = rel @ dirs[1] / spacing[0]
            polygon = np.stack([row_px, col_px], axis=1)
            volume[index] ^= polygon2mask((rows, cols), polygon)
        if volume.any():
            volumes.append(LabelVolume(volume.astype(np.uint16) * number, {number: names.get(number, f"roi_{number}")}, f"rtstruct-{number}"))
    return volumes


def _contour_slice(
    contour: Dataset,
    points: np.ndarray,
    by_uid: dict[str, int],
    positions: np.ndarray,
    normal: np.ndarray,
    tolerance: float,
) -> int | None:
    for image in contour.get("ContourImageSequence", []) or []:
        uid = str(image.get("ReferencedSOPInstanceUID", ""))
        if uid in by_uid:
            return by_uid[uid]
    level = float(np.mean(points @ normal))
    nearest = int(np.argmin(np.abs(positions - level)))
    return nearest if abs(positions[nearest] - level) <= tolerance else None


def load_dicom_labels(uris: list[str], ordered: list[Dataset], key: str) -> list[LabelVolume]:
    """Every DICOM annotation attached to a series, as label volumes on its slices."""
    from converters.dicom import read_dicom

    out: list[LabelVolume] = []
    for uri in uris:
        header = read_dicom(read_bytes(uri), uri, headers_only=True)
        kind = annotation_kind(header)
        if kind == "seg":
            out.extend(load_seg(uri, ordered, key))
        elif kind == "rtstruct":
            out.extend(load_rtstruct(uri, ordered, key))
        else:
            raise ConversionError("bad_label_map", f"{uri}: DICOM label file is neither SEG nor RTSTRUCT")
    return out


def _short(exc: BaseException) -> str:
    return (str(exc) or type(exc).__name__).splitlines()[0][:200]


__all__: list[Any] = ["LabelVolume", "annotation_kind", "referenced_series_uid", "load_seg", "load_rtstruct", "load_dicom_labels"]
