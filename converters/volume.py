"""NIfTI / NRRD / MHA / MHD volumes → one canonical sample per slice.

Orientation convention (one for every volume format): the slicing axis is the
acquisition axis (the volume's third index axis, the one the scanner stepped along),
and each slice is shown the way a radiologist reads that plane, as DICOM viewers do:

* axial: image columns run to the patient's Left, rows to Posterior (``LPS``),
  slices from inferior to superior;
* coronal: columns to Left, rows to Inferior (``LIP``), slices anterior to posterior;
* sagittal: columns to Posterior, rows to Inferior (``PIL``), slices right to left.

SimpleITK's ``DICOMOrient`` does the permutation and flips, so any stored orientation
(RAS NIfTI, LPS NRRD, oblique-ish) lands the same way; label maps are resampled onto
the image grid with nearest neighbour *before* orientation, so they stay aligned.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterator
from typing import Any

import numpy as np
import SimpleITK as sitk

from converters.base import ConversionError, ConvertOptions
from converters.imaging import auto_window, grey_images, lossless_raw
from converters.io import as_local_file
from converters.labels import (
    distinct_stems,
    load_label_volumes,
    masks_for_slice,
    strip_volume_suffix,
)
from converters.nifti import (
    MAX_VOLUME_BYTES,
    check_nifti_data_complete,
    is_nifti_path,
    itk_readable_nifti,
)
from converters.rows import build_row, subject_from_key
from curation.images import image_record

#: acquisition plane → the DICOMOrient code that displays it conventionally
PLANE_ORIENTATION = {"axial": "LPS", "coronal": "LIP", "sagittal": "PIL"}


def acquisition_plane(image: sitk.Image) -> str:
    """Plane of the slices: where the third index axis points (S/I axial, A/P coronal, L/R sagittal)."""
    direction = np.asarray(image.GetDirection(), float).reshape(3, 3)
    axis = int(np.argmax(np.abs(direction[:, 2])))
    return ("sagittal", "coronal", "axial")[axis]


def read_volume(uri: str, companions: tuple[str, ...] = ()) -> sitk.Image:
    """Read a volume, checking the header's declared size first: a mangled header must
    not make one item allocate (or spend minutes filling) an absurd buffer."""
    try:
        with as_local_file(uri, companions) as fetched, itk_readable_nifti(fetched, uri) as path:
            reader = sitk.ImageFileReader()
            reader.SetFileName(path)
            reader.ReadImageInformation()
            voxels = int(np.prod([int(v) for v in reader.GetSize()], dtype=np.float64))
            declared = voxels * reader.GetNumberOfComponents() * 8
            if declared > MAX_VOLUME_BYTES:
                raise ConversionError(
                    "too_large", f"{uri}: header declares size {reader.GetSize()} (> {MAX_VOLUME_BYTES // 1024**3} GiB)"
                )
            if is_nifti_path(path) and path == fetched:  # a NIfTI-2's rewrite was checked before it was written
                check_nifti_data_complete(path, uri)
            return reader.Execute()
    except RuntimeError as exc:
        lines = str(exc).strip().splitlines()
        raise ConversionError(
            "bad_header", f"{uri}: SimpleITK cannot read the volume ({lines[-1][:200] if lines else 'no detail'})"
        ) from exc


def convert_volume_item(item: dict[str, Any], opts: ConvertOptions) -> list[dict[str, Any]]:
    """All slices of one volume as a list (see :func:`iter_volume_item`)."""
    return list(iter_volume_item(item, opts))


def iter_volume_item(item: dict[str, Any], opts: ConvertOptions) -> Iterator[dict[str, Any]]:
    """Slices of one volume (with attached label maps) as canonical samples.

    4D volumes (MSD multi-modal NIfTI: BraTS FLAIR/T1w/T1gd/T2w in one file) give the
    slices of each channel, keyed ``#channel=<name>``; ``attrs`` from a ``dataset.json``
    supply label names, modality and channel names.
    """
    uri = item["uri"]
    companions = tuple(m for m in (item.get("members") or []) if m != uri)
    attrs = json.loads(item["attrs"]) if item.get("attrs") else {}
    if attrs.get("label_names") and not opts.label_names:
        names = tuple(sorted((int(k), str(v)) for k, v in attrs["label_names"].items()))
        opts = dataclasses.replace(opts, label_names=names)
    image = read_volume(uri, companions)
    if image.GetDimension() == 2:
        image = sitk.JoinSeries(image)
    if image.GetDimension() == 4:
        size = list(image.GetSize())
        if 0 in size:
            raise ConversionError("bad_header", f"{uri}: volume has an empty axis, size {tuple(size)}")
        channel_names = list(attrs.get("channel_names") or [])
        for channel in range(size[3]):
            part = sitk.Extract(image, [*size[:3], 0], [0, 0, 0, channel])
            name = channel_names[channel] if channel < len(channel_names) else str(channel)
            channel_attrs = {**attrs, "channel": name}
            yield from _volume_rows(item, opts, part, channel_attrs, f"#channel={name}")
        return
    yield from _volume_rows(item, opts, image, attrs, "")


def _volume_rows(
    item: dict[str, Any], opts: ConvertOptions, image: sitk.Image, attrs: dict[str, Any], key_suffix: str
) -> Iterator[dict[str, Any]]:
    uri = item["uri"]
    if image.GetDimension() != 3:
        raise ConversionError("unsupported_dimension", f"{uri}: {image.GetDimension()}D volumes are not supported")
    if 0 in image.GetSize():
        raise ConversionError("bad_header", f"{uri}: volume has an empty axis, size {image.GetSize()}")
    plane = acquisition_plane(image)
    code = PLANE_ORIENTATION[plane]
    labels = distinct_stems(load_label_volumes(list(item.get("label_uris") or []), image, opts))
    oriented_labels = [
        (_orient_array(array, image, code), names, stem) for array, names, stem in labels
    ]
    oriented = sitk.DICOMOrient(image, code)
    array = sitk.GetArrayFromImage(oriented)  # [k, rows, cols(, components)]
    sx, sy, sz = oriented.GetSpacing()
    spacing_mm = [float(sy), float(sx), float(sz)]
    modality = opts.modality or attrs.get("modality") or "OTHER"
    components = image.GetNumberOfComponentsPerPixel()
    window = auto_window(array, modality) if components == 1 else None
    subject = subject_from_key(item["key"], opts)
    if attrs.get("layout") == "msd" and not opts.subject_pattern:
        subject = msd_case(item["key"])  # channel files x_0000, x_0001 are one subject
    count = array.shape[0]
    channel = attrs.get("channel")
    for index in opts.slices.select(count):
        steps: list[dict[str, Any]] = [
            {"step": "volume.read", "params": {"plane": plane, "orientation": code, "size": list(image.GetSize())}}
        ]
        if channel:
            steps[0]["params"]["channel"] = channel
        if components == 1:
            assert window is not None
            values = array[index]
            raw = lossless_raw(values, 1.0, 0.0) if values.dtype.kind in "iu" else None
            images = grey_images(values, window=window, raw=raw, spacing_mm=spacing_mm)
            steps.append({"step": "window", "params": {"center": window[0], "width": window[1]}})
        elif components in (3, 4) and array.dtype == np.uint8:
            images = [image_record("input", np.ascontiguousarray(array[index][..., :3]), spacing_mm=spacing_mm)]
        else:
            raise ConversionError(
                "unsupported_pixel_type", f"{uri}: {components} components of {array.dtype} per voxel"
            )
        masks: list[dict[str, Any]] = []
        for label_array, names, stem in oriented_labels:
            masks.extend(masks_for_slice(label_array[index], names, stem))
        categories = sorted({m["category"] for m in masks})
        steps.append({"step": "png.encode", "params": {}})
        sequence = f" ({channel})" if channel and channel.upper() != modality else ""
        caption = f"{modality}{sequence} image, {plane} slice {index + 1} of {count}."
        if categories:
            caption += " Segmented structures: " + ", ".join(categories) + "."
        base = item["key"] + key_suffix
        yield (
            build_row(
                opts,
                key=f"{base}#slice={index}" if count > 1 else base,
                sha256=item["sha256"],
                modality=modality,
                subject_id=subject,
                images=images,
                masks=masks or None,
                labels=categories or None,
                caption=caption,
                steps=steps,
            )
        )


def msd_case(key: str) -> str:
    """The case id of an MSD/nnU-Net image key: ``imagesTr/la_003_0001.nii.gz`` → ``la_003``."""
    stem = strip_volume_suffix(key.rsplit("/", 1)[-1])
    return re.sub(r"_\d{4}$", "", stem)


def _orient_array(array: np.ndarray, grid: sitk.Image, code: str) -> np.ndarray:
    label = sitk.GetImageFromArray(array)
    label.CopyInformation(grid)
    return sitk.GetArrayFromImage(sitk.DICOMOrient(label, code))
