"""Label maps: read, resample onto the image grid, split into per-label binary masks."""

from __future__ import annotations

import os
import re
from typing import Any

import numpy as np
import SimpleITK as sitk

from converters.base import ConversionError, ConvertOptions
from converters.io import as_local_file, member_path
from converters.nifti import itk_readable_nifti
from curation.images import mask_record

LABEL_FILE_PATTERN = re.compile(r"(?:^|[_\-. ])(seg|segmentation|label|labels|mask|masks|annotation)(?:$|[_\-. ])", re.I)
VOLUME_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")


def strip_volume_suffix(name: str) -> str:
    lower = name.lower()
    for suffix in VOLUME_SUFFIXES:
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return os.path.splitext(name)[0]


def looks_like_label_map(path: str) -> bool:
    """A label map by name: ``liver_seg.nrrd``, ``case1_label.nii.gz``, ``labelsTr/...``."""
    stem = strip_volume_suffix(os.path.basename(path))
    folders = path.replace("\\", "/").split("/")[:-1]
    return bool(LABEL_FILE_PATTERN.search(stem)) or "labelsTr" in folders or "labelsTs" in folders


def names_from_filename(path: str) -> list[str]:
    """Structure names a label file's name spells: ``liver_spine_seg`` → [liver, spine]."""
    stem = strip_volume_suffix(os.path.basename(path))
    stem = LABEL_FILE_PATTERN.sub(" ", stem)
    # tokens with digits name the case (case1, 0003), not a structure
    return [t.lower() for t in re.split(r"[_\-. ]+", stem) if t and not any(c.isdigit() for c in t)]


def label_names(path: str, values: list[int], opts: ConvertOptions) -> dict[int, str]:
    """Name of each label value: configured names, else the file name's structure names
    (in label-value order, when their count matches), else ``label_<value>``."""
    configured = dict(opts.label_names)
    from_file = names_from_filename(path)
    names: dict[int, str] = {}
    for index, value in enumerate(sorted(values)):
        if value in configured:
            names[value] = configured[value]
        elif len(from_file) == len(values):
            names[value] = from_file[index]
        else:
            names[value] = f"label_{value}"
    return names


def read_label_image(uri: str) -> sitk.Image:
    try:
        with as_local_file(uri) as fetched, itk_readable_nifti(fetched, uri) as path:
            return sitk.ReadImage(path)
    except RuntimeError as exc:
        raise ConversionError("bad_label_map", f"{uri}: SimpleITK cannot read the label map ({_first_line(exc)})") from exc


def resample_nearest(label: sitk.Image, reference: sitk.Image) -> sitk.Image:
    """Put a label map on the reference image's grid (nearest neighbour, physical space).

    Same-grid maps pass through untouched; otherwise every reference voxel takes the
    label found at its physical position (0 outside the label map).
    """
    if label.GetDimension() != reference.GetDimension():
        raise ConversionError(
            "label_grid_mismatch",
            f"label map is {label.GetDimension()}D but the image is {reference.GetDimension()}D",
        )
    same = (
        label.GetSize() == reference.GetSize()
        and np.allclose(label.GetSpacing(), reference.GetSpacing(), atol=1e-4)
        and np.allclose(label.GetOrigin(), reference.GetOrigin(), atol=1e-3)
        and np.allclose(label.GetDirection(), reference.GetDirection(), atol=1e-4)
    )
    if same:
        return label
    return sitk.Resample(label, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0, label.GetPixelID())


def masks_for_slice(
    label_slice: np.ndarray, names: dict[int, str], source_name: str
) -> list[dict[str, Any]]:
    """One binary mask per label value present on this slice (values absent: no mask)."""
    masks = []
    for value in np.unique(label_slice):
        if value == 0:
            continue
        name = names.get(int(value), f"label_{int(value)}")
        masks.append(
            mask_record(label_slice == value, label=f"{source_name}:{int(value)}", category=name)
        )
    return masks


def distinct_stems(
    volumes: list[tuple[np.ndarray, dict[int, str], str]],
) -> list[tuple[np.ndarray, dict[int, str], str]]:
    """The label sources of one image with stems made distinct.

    A mask's label is ``<stem>:<value>`` and names it within its sample; two sources
    whose stems coincide (two DICOM-SEG objects that both number their segments from 1,
    ``liver.nii.gz`` attached from two folders) would give two different masks one
    label. The first keeps its stem, later ones get ``~2``, ``~3`` in the order the
    sources are attached (discovery's sorted order: the same on every build).
    """
    seen: dict[str, int] = {}
    out = []
    for array, names, stem in volumes:
        seen[stem] = seen.get(stem, 0) + 1
        out.append((array, names, stem if seen[stem] == 1 else f"{stem}~{seen[stem]}"))
    return out


def load_label_volumes(
    label_uris: list[str], reference: sitk.Image, opts: ConvertOptions
) -> list[tuple[np.ndarray, dict[int, str], str]]:
    """Each attached label map resampled onto ``reference``: (array [k, y, x], names, stem)."""
    volumes = []
    for uri in label_uris:
        label = read_label_map(uri)
        if label.GetDimension() == 2 and reference.GetDimension() == 3 and reference.GetSize()[2] == 1:
            label = _on_single_slice(label, reference, uri)
        array = sitk.GetArrayFromImage(resample_nearest(label, reference))
        volumes.append(named_label_volume(uri, array[np.newaxis] if array.ndim == 2 else array, opts))
    return volumes


def read_label_map(uri: str) -> sitk.Image:
    """A label map file as one uint16 label per voxel (``bad_label_map`` otherwise)."""
    label = read_label_image(uri)
    if label.GetNumberOfComponentsPerPixel() != 1:
        raise ConversionError("bad_label_map", f"{uri}: label maps must have one component per voxel")
    return sitk.Cast(label, sitk.sitkUInt16) if label.GetPixelID() != sitk.sitkUInt16 else label


def named_label_volume(uri: str, array: np.ndarray, opts: ConvertOptions) -> tuple[np.ndarray, dict[int, str], str]:
    """(array [k, y, x], value → name, stem) of a label map placed on an image's slices."""
    values = [int(v) for v in np.unique(array) if v != 0]
    return array, label_names(member_path(uri), values, opts), strip_volume_suffix(os.path.basename(member_path(uri)))


def _on_single_slice(label: sitk.Image, reference: sitk.Image, uri: str) -> sitk.Image:
    """A 2D label map as the one slice of ``reference`` (a 2D image converted as a
    one-slice volume, or a volume of one slice): only when its in-plane grid is the
    slice's own — the map has no position along the normal to check, so a different grid
    would be a guess."""
    size, spacing = reference.GetSize(), reference.GetSpacing()
    origin, direction = reference.GetOrigin(), np.asarray(reference.GetDirection()).reshape(3, 3)
    same = (
        label.GetSize() == size[:2]
        and np.allclose(label.GetSpacing(), spacing[:2], atol=1e-4)
        and np.allclose(label.GetOrigin(), origin[:2], atol=1e-3)
        and np.allclose(np.asarray(label.GetDirection()).reshape(2, 2), direction[:2, :2], atol=1e-4)
    )
    if not same:
        raise ConversionError(
            "label_grid_mismatch",
            f"{uri}: 2D label map of size {label.GetSize()} spacing {label.GetSpacing()} origin {label.GetOrigin()} "
            f"is not the grid of the one-slice image (size {size[:2]}, spacing {spacing[:2]}, origin {origin[:2]})",
        )
    on_slice = sitk.JoinSeries(label)
    on_slice.CopyInformation(reference)
    return on_slice


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[-1][:200] if text else type(exc).__name__
