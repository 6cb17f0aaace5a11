"""DICOM annotation objects → per-structure masks on the slices of the image they annotate.

The image arrives as ``ordered``: one header per output slice (a classic series' files, or
the frame views of one Enhanced CT/MR, all sharing its SOPInstanceUID) with, from
:mod:`converters.dicom`, each slice's 1-based frame number in its SOP instance. A slice is
therefore addressed as (SOPInstanceUID, frame number), the pair DICOM references use.

* **DICOM-SEG** (Segmentation Storage): read with highdicom. Each SEG frame is placed on
  the slice it references (DerivationImageSequence: ReferencedSOPInstanceUID and, for a
  multi-frame source, ReferencedFrameNumber; PS3.3 C.8.20.2 / C.7.6.16.2.6). A SEG whose
  frames carry no source references (allowed when it shares the image's Frame of
  Reference), or whose references cannot be resolved to single slices, is placed by plane
  position: highdicom's ``get_volume`` gives each SEG frame's position, matched to the
  slice at that position. BINARY segments are ``> 0``; FRACTIONAL ones (PROBABILITY or
  OCCUPANCY) are binarised at ``FRACTIONAL_THRESHOLD`` (0.5) of MaximumFractionalValue.
* **RT-STRUCT**: every CLOSED_PLANAR contour is rasterised (scikit-image ``polygon2mask``)
  onto the slice it lies on: the slice its ContourImageSequence references (SOP instance,
  and ReferencedFrameNumber for a multi-frame image), else — no reference, or an instance
  of several slices without a frame number — the slice whose position along the normal is
  nearest to the contour's. Contours of one ROI on one slice are combined with XOR, so
  inner contours cut holes (the usual RT convention).

Both return :class:`LabelVolume` arrays ``[k, rows, cols]`` of label value (segment/ROI
number) on the image grid, the shape :func:`converters.labels.masks_for_slice` expects.
"""

from __future__ import annotations

import dataclasses
import io
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from skimage.draw import polygon2mask

from converters.base import ConversionError
from converters.io import read_bytes

SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
RTSTRUCT_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.481.3"
#: a FRACTIONAL segment keeps the pixels at or above this fraction of MaximumFractionalValue
#: (PS3.3 C.8.20.2.3: PROBABILITY / OCCUPANCY values are fractions, not a mask)
FRACTIONAL_THRESHOLD = 0.5
#: what highdicom raises on a SEG it can read but not index (missing or odd references,
#: frames off a regular grid); each becomes a ``bad_label_map`` naming the file
_HIGHDICOM_ERRORS = (ValueError, RuntimeError, KeyError, IndexError, AttributeError, TypeError)


@dataclasses.dataclass
class LabelVolume:
    array: np.ndarray  # [k, rows, cols], value = label number, 0 = background
    names: dict[int, str]
    stem: str
    #: how the masks were made (placement, FRACTIONAL threshold), for provenance
    params: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class _Slots:
    """The image's slices as DICOM references address them: (SOPInstanceUID, frame number)."""

    uids: list[str]
    frames: list[int | None]  # 1-based frame number in its instance; None = not known

    def by_uid(self) -> dict[str, list[int]]:
        """Slice indices of each SOP instance (several for an Enhanced CT/MR)."""
        out: dict[str, list[int]] = {}
        for index, uid in enumerate(self.uids):
            out.setdefault(uid, []).append(index)
        return out

    def by_frame(self) -> dict[tuple[str, int], int]:
        """(SOPInstanceUID, frame number) → slice index, for the slices whose frame is known."""
        return {(uid, frame): i for i, (uid, frame) in enumerate(zip(self.uids, self.frames, strict=True)) if frame is not None}


def _slots(ordered: list[Dataset], frame_numbers: Sequence[int] | None) -> _Slots:
    """Frame numbers come from the caller (only it knows which frame a view was cut from);
    without them a single-slice instance is its frame 1 and a multi-slice one is unknown."""
    uids = [str(ds.get("SOPInstanceUID", "")) for ds in ordered]
    if frame_numbers is not None:
        if len(frame_numbers) != len(ordered):
            raise ValueError(f"{len(frame_numbers)} frame numbers for {len(ordered)} slices")
        return _Slots(uids, [int(f) for f in frame_numbers])
    counts = Counter(uids)
    return _Slots(uids, [1 if counts[uid] == 1 else None for uid in uids])


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


def _slice_tolerance(positions: np.ndarray) -> float:
    """Half the median gap between slices (at least 0.5 mm): how far from a slice's plane an
    annotation may lie and still belong to that slice."""
    if len(positions) < 2:
        return 0.5
    return max(float(np.median(np.abs(np.diff(positions)))) / 2, 0.5)


def _frame_numbers(reference: Dataset) -> list[int]:
    """ReferencedFrameNumber of an image reference (VM 1-n), empty when absent."""
    value = reference.get("ReferencedFrameNumber")
    if value is None or value == "":
        return []
    values = list(value) if isinstance(value, (MultiValue, list, tuple)) else [value]
    return [int(v) for v in values]


def _frame_source_refs(seg: Dataset) -> list[tuple[str, int | None]] | None:
    """(SOPInstanceUID, frame number or None) of every source slice the SEG's frames name in
    their DerivationImageSequence; None when a frame names none (a SEG that locates its
    frames by plane position only, which PS3.3 allows within the image's Frame of Reference)."""
    refs: list[tuple[str, int | None]] = []
    for groups in seg.get("PerFrameFunctionalGroupsSequence") or []:
        found: list[tuple[str, int | None]] = []
        for derivation in groups.get("DerivationImageSequence") or []:
            for source in derivation.get("SourceImageSequence") or []:
                uid = str(source.get("ReferencedSOPInstanceUID", "") or "")
                if uid:
                    found.extend([(uid, frame) for frame in _frame_numbers(source)] or [(uid, None)])
        if not found:
            return None
        refs.extend(found)
    return refs or None


def _resolvable_by_source(refs: list[tuple[str, int | None]], slots: _Slots) -> bool:
    """Whether every reference to one of our instances names a single slice: an instance of
    one slice always does; one of several (an Enhanced CT/MR) only with a known frame number."""
    by_uid, by_frame = slots.by_uid(), slots.by_frame()
    return all(
        len(by_uid.get(uid, ())) <= 1 or (frame is not None and (uid, frame) in by_frame) for uid, frame in refs
    )


def _binarisation(seg: Any, fractional_threshold: float) -> tuple[float | None, dict[str, Any]]:
    """The stored value at and above which a pixel is in its segment (None: any non-zero),
    and the parameters to record. FRACTIONAL values are fractions of MaximumFractionalValue
    (PS3.3 C.8.20.2.3): ``> 0`` would turn a model's faint background into the mask."""
    kind = str(seg.get("SegmentationType", "BINARY")).upper()
    if kind != "FRACTIONAL":
        return None, {"segmentation_type": kind}
    maximum = float(seg.get("MaximumFractionalValue") or 255)
    params = {
        "segmentation_type": kind,
        "fractional_type": str(seg.get("SegmentationFractionalType", "") or ""),
        "max_fractional_value": maximum,
        "threshold": fractional_threshold,
    }
    return fractional_threshold * maximum, params


def _seg_by_source(
    seg: Any, refs: list[tuple[str, int | None]], slots: _Slots, numbers: list[int], key: str
) -> Iterator[tuple[list[int], np.ndarray]]:
    """(slice indices, stored pixels ``[len(indices), rows, cols, segments]``) through
    highdicom's source indexing: a single-slice instance by its SOPInstanceUID, the frames of
    a multi-frame one by (SOPInstanceUID, ReferencedFrameNumber) — never one frame's mask on
    every slice of the instance. ``refs``: :func:`_frame_source_refs` of ``seg``."""
    referenced = {uid for uid, _ in refs}
    by_uid = slots.by_uid()
    present = [uid for uid in by_uid if uid in referenced]
    if not present:
        raise ConversionError("label_grid_mismatch", f"{key}: the SEG references none of the series' instances")
    singles = [uid for uid in present if len(by_uid[uid]) == 1]
    if singles:
        yield [by_uid[uid][0] for uid in singles], seg.get_pixels_by_source_instance(
            source_sop_instance_uids=singles, segment_numbers=numbers, combine_segments=False,
            skip_overlap_checks=True, rescale_fractional=False,
        )
    for uid in present:
        indices = by_uid[uid]
        if len(indices) > 1:  # frames of one instance: _resolvable_by_source made sure each is known
            frames = [int(slots.frames[i] or 0) for i in indices]
            yield indices, seg.get_pixels_by_source_frame(
                uid, source_frame_numbers=frames, segment_numbers=numbers, combine_segments=False,
                skip_overlap_checks=True, rescale_fractional=False, assert_missing_frames_are_empty=True,
            )


def _seg_by_position(
    seg: Any, ordered: list[Dataset], numbers: list[int], uri: str, key: str
) -> Iterator[tuple[list[int], np.ndarray]]:
    """SEG frames placed by plane position: highdicom stacks them into a volume in patient
    space (``get_volume``), and each of its slices goes to the image slice at the same
    position. Used when the frames name no source slice; the SEG must share the image's
    Frame of Reference and pixel grid, else its masks would land shifted."""
    image_for = str(ordered[0].get("FrameOfReferenceUID", "") or "")
    seg_for = str(seg.get("FrameOfReferenceUID", "") or "")
    if not seg_for or (image_for and seg_for != image_for):
        raise ConversionError(
            "label_grid_mismatch",
            f"{uri}: frames have no source references (DerivationImageSequence) and the SEG's FrameOfReferenceUID "
            f"{seg_for or '(none)'} is not the image's ({image_for or 'none'}, {key}): cannot place them by position",
        )
    volume = seg.get_volume(segment_numbers=numbers, combine_segments=False, rescale_fractional=False)
    origins, dirs, normal, spacing = _slice_geometry(ordered)
    _check_seg_grid(np.asarray(volume.affine, float), dirs, spacing, uri, key)
    count = int(volume.spatial_shape[0])
    seg_origins = np.asarray(volume.map_indices_to_reference(np.array([[k, 0, 0] for k in range(count)])), float)
    positions = origins @ normal
    tolerance, in_plane = _slice_tolerance(positions), 0.5 * float(min(spacing))
    placed: list[tuple[int, int]] = []
    for k, origin in enumerate(seg_origins):
        offset = origins - origin
        along = np.abs(offset @ normal)
        index = int(np.argmin(along))
        if along[index] > tolerance:
            continue  # a SEG frame beyond the series' slices
        across = float(np.linalg.norm(offset[index] - (offset[index] @ normal) * normal))
        if across > in_plane:
            raise ConversionError(
                "label_grid_mismatch",
                f"{uri}: SEG frame at {origin.round(3).tolist()} is {across:.2f} mm off the in-plane origin of {key}'s "
                f"slice {index}: not on the image's pixel grid",
            )
        placed.append((index, k))
    if not placed:
        raise ConversionError(
            "label_grid_mismatch", f"{uri}: no SEG frame position lies on one of {key}'s {len(ordered)} slices"
        )
    array = np.asarray(volume.array)
    yield [i for i, _ in placed], array[[k for _, k in placed]]


def _check_seg_grid(affine: np.ndarray, dirs: np.ndarray, spacing: np.ndarray, uri: str, key: str) -> None:
    """A SEG volume's row and column steps must be the image's (same orientation and pixel
    spacing), or positions could match while pixels do not."""
    column_step = dirs[0] * spacing[1]  # moving along a row: IOP's first cosine × column spacing
    row_step = dirs[1] * spacing[0]
    if not (np.allclose(affine[:3, 2], column_step, atol=1e-3) and np.allclose(affine[:3, 1], row_step, atol=1e-3)):
        raise ConversionError(
            "label_grid_mismatch",
            f"{uri}: SEG pixel grid (steps {affine[:3, 2].round(4).tolist()}, {affine[:3, 1].round(4).tolist()}) "
            f"is not {key}'s ({column_step.round(4).tolist()}, {row_step.round(4).tolist()})",
        )


def _read_seg(uri: str, data: bytes | None = None) -> Any:
    import highdicom as hd

    try:
        return hd.seg.segread(io.BytesIO(data if data is not None else read_bytes(uri)))
    except Exception as exc:  # highdicom raises several types on malformed SEGs
        raise ConversionError("bad_label_map", f"{uri}: not a readable DICOM-SEG ({_short(exc)})") from exc


def load_seg(
    uri: str,
    ordered: list[Dataset],
    key: str,
    frame_numbers: Sequence[int] | None = None,
    *,
    data: bytes | None = None,
) -> list[LabelVolume]:
    """The segments of a DICOM-SEG, one volume per segment, aligned to ``ordered`` slices
    (``frame_numbers``: each slice's 1-based frame in its SOP instance, see the module doc;
    ``data``: the file's bytes, when the caller read them already)."""
    seg = _read_seg(uri, data)
    rows, cols = int(ordered[0].Rows), int(ordered[0].Columns)
    if (int(seg.Rows), int(seg.Columns)) != (rows, cols):
        raise ConversionError(
            "label_grid_mismatch", f"{key}: SEG frames are {seg.Rows}x{seg.Columns}, the image is {rows}x{cols}"
        )
    numbers = [int(n) for n in seg.segment_numbers]
    names = {n: str(seg.get_segment_description(n).segment_label).strip().lower() or f"segment_{n}" for n in numbers}
    cutoff, params = _binarisation(seg, FRACTIONAL_THRESHOLD)
    slots = _slots(ordered, frame_numbers)
    refs = _frame_source_refs(seg)
    chunks: Iterator[tuple[list[int], np.ndarray]]
    if refs is not None and _resolvable_by_source(refs, slots):
        params["placement"], chunks = "source_reference", _seg_by_source(seg, refs, slots, numbers, key)
    else:
        params["placement"], chunks = "plane_position", _seg_by_position(seg, ordered, numbers, uri, key)
    volumes = {n: np.zeros((len(ordered), rows, cols), np.uint16) for n in numbers}
    try:
        for indices, stored in chunks:
            inside = stored > 0 if cutoff is None else stored >= cutoff
            for s, number in enumerate(numbers):
                for out_index, slice_index in enumerate(indices):
                    volumes[number][slice_index][inside[out_index, :, :, s]] = number
    except _HIGHDICOM_ERRORS as exc:
        raise ConversionError(
            "bad_label_map", f"{uri}: SEG frames cannot be placed on {key}'s slices by {params['placement']} ({_short(exc)})"
        ) from exc
    return [LabelVolume(volumes[n], {n: names[n]}, f"seg-{n}", dict(params)) for n in numbers]


@dataclasses.dataclass(frozen=True)
class _ContourPlacer:
    """Finds the slice an RT-STRUCT contour lies on."""

    by_uid: dict[str, list[int]]
    by_frame: dict[tuple[str, int], int]
    positions: np.ndarray  # each slice's position along the normal
    normal: np.ndarray
    tolerance: float

    def slice_of(self, contour: Dataset, points: np.ndarray) -> int | None:
        """The referenced slice (ContourImageSequence: the instance, and its
        ReferencedFrameNumber when the instance is a multi-frame image); else the slice
        nearest the contour's plane — among the referenced instance's slices when it has
        several and the reference names no frame we know (PS3.3 C.8.8.6)."""
        for image in contour.get("ContourImageSequence") or []:
            uid = str(image.get("ReferencedSOPInstanceUID", "") or "")
            indices = self.by_uid.get(uid)
            if not indices:
                continue
            if len(indices) == 1:
                return indices[0]
            for frame in _frame_numbers(image):
                if (uid, frame) in self.by_frame:
                    return self.by_frame[(uid, frame)]
            return self._nearest(points, indices)
        return self._nearest(points, list(range(len(self.positions))))

    def _nearest(self, points: np.ndarray, candidates: list[int]) -> int | None:
        level = float(np.mean(points @ self.normal))
        distance = np.abs(self.positions[candidates] - level)
        best = int(np.argmin(distance))
        return candidates[best] if distance[best] <= self.tolerance else None


def load_rtstruct(
    uri: str, ordered: list[Dataset], key: str, frame_numbers: Sequence[int] | None = None, *, data: bytes | None = None
) -> list[LabelVolume]:
    """The ROIs of an RT Structure Set rasterised onto ``ordered`` slices, one volume per ROI
    (``data``: the file's bytes, when the caller read them already)."""
    from converters.dicom import read_dicom

    ds = read_dicom(data if data is not None else read_bytes(uri), uri)
    origins, dirs, normal, spacing = _slice_geometry(ordered)
    rows, cols = int(ordered[0].Rows), int(ordered[0].Columns)
    positions = origins @ normal
    slots = _slots(ordered, frame_numbers)
    placer = _ContourPlacer(slots.by_uid(), slots.by_frame(), positions, normal, _slice_tolerance(positions))
    names = {int(r.ROINumber): str(r.get("ROIName", "") or f"roi_{r.ROINumber}").strip().lower()
             for r in ds.get("StructureSetROISequence", []) or []}
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
            index = placer.slice_of(contour, points)
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


def load_dicom_labels(
    uris: list[str], ordered: list[Dataset], key: str, frame_numbers: Sequence[int] | None = None
) -> list[LabelVolume]:
    """Every DICOM annotation attached to a series, as label volumes on its slices.

    ``frame_numbers`` gives each slice's 1-based frame number in its SOP instance; a caller
    that passes the frame views of an Enhanced CT/MR must give them, or references to a
    frame can only be resolved by position."""
    from converters.dicom import read_dicom

    out: list[LabelVolume] = []
    for uri in uris:
        data = read_bytes(uri)  # fetched once: the kind from its header, then the whole file
        kind = annotation_kind(read_dicom(data, uri, headers_only=True))
        if kind == "seg":
            out.extend(load_seg(uri, ordered, key, frame_numbers, data=data))
        elif kind == "rtstruct":
            out.extend(load_rtstruct(uri, ordered, key, frame_numbers, data=data))
        else:
            raise ConversionError("bad_label_map", f"{uri}: DICOM label file is neither SEG nor RTSTRUCT")
    return out


def _short(exc: BaseException) -> str:
    return (str(exc) or type(exc).__name__).splitlines()[0][:200]


__all__: list[Any] = [
    "FRACTIONAL_THRESHOLD", "LabelVolume", "annotation_kind", "referenced_series_uid", "load_seg", "load_rtstruct",
    "load_dicom_labels",
]
