"""Dataset layouts that discovery recognises beyond single files.

* **Archives** (``.zip``, ``.tar``, ``.tar.gz``/``.tgz``, ``.tar.bz2``, ``.tar.xz``):
  members are listed with :mod:`zipfile`/:mod:`tarfile` and read in place through
  fsspec's ``zip://member::archive`` / ``tar://member::archive`` URLs. Nothing is ever
  extracted to disk by name, and members whose names are absolute, contain ``..``, or
  are links/devices are rejected (``unsafe_archive_member``), so a member called
  ``../../evil.dcm`` can neither be written nor read outside the archive.
* **MSD / nnU-Net** ``dataset.json``: label names from ``labels`` (MSD ``{"1": "liver"}``
  or nnU-Net v2 ``{"liver": 1}``), modality from ``modality`` / ``channel_names``,
  channel files ``case_0000.nii.gz``, ``case_0001.nii.gz`` each with the case's label map.
* **ImageFolder**: ``<root>/<class>/<image>`` with at least two class folders → the
  class name goes to the sample's ``labels``.
* **2D masks**: ``masks/x.png`` (or ``labels/``, ``gt/``, ``annotations/``…) next to
  ``images/x.png``, or ``x_mask.png`` / ``x_seg.png`` beside ``x.png``; IMIS-Bench sparse
  mask archives (``x.npz``, CSR ``[classes, H·W]``) are paired the same way.
"""

from __future__ import annotations

import json
import posixpath
import re
import tarfile
import zipfile
from collections import defaultdict
from typing import Any

from converters.io import is_hidden, read_bytes

ARCHIVE_EXTENSIONS = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
#: a member declaring more than this uncompressed size is not read (zip bombs)
MAX_MEMBER_BYTES = 8 * 1024**3
MASK_DIR_NAMES = frozenset({"masks", "mask", "labels", "label", "gt", "groundtruth", "ground_truth", "annotations", "segmentations", "seg"})
IMAGE_DIR_NAMES = ("images", "image", "imgs", "img", "")
MASK_SUFFIX = re.compile(r"^(.+?)[_\-. ](mask|masks|seg|segmentation|label|labels|gt|annotation)$", re.I)
CHANNEL_SUFFIX = re.compile(r"^(.+)_(\d{4})$")

#: dataset.json channel / modality names → controlled modality
_MODALITY_WORDS = {
    "CT": "CT", "MR": "MR", "MRI": "MR", "FLAIR": "MR", "T1": "MR", "T1W": "MR", "T1GD": "MR", "T1C": "MR",
    "T2": "MR", "T2W": "MR", "ADC": "MR", "DWI": "MR", "PD": "MR", "NONT1": "MR", "PET": "PET", "US": "US",
    "XR": "XR", "ENDO": "ENDO",
}


def is_archive(key: str) -> bool:
    return key.lower().endswith(ARCHIVE_EXTENSIONS)


def unsafe_member_name(name: str) -> str | None:
    """Why an archive member name is unsafe to use as a path, or None when it is fine."""
    normal = name.replace("\\", "/")
    if normal.startswith("/") or re.match(r"^[A-Za-z]:", normal):
        return "absolute path"
    if any(part == ".." for part in normal.split("/")):
        return "'..' component (path traversal)"
    if "\x00" in normal:
        return "NUL byte in name"
    return None


def archive_members(uri: str, key: str) -> tuple[list[tuple[str, str, int]], list[tuple[str, str]]]:
    """Readable members of an archive as (member uri, key, size) and unsafe ones as (key, why).

    The archive is listed from its bytes (zipfile/tarfile); members are later read one at
    a time through fsspec's ``zip://``/``tar://`` URLs, never extracted. Hidden members
    (:func:`is_hidden`) are skipped.
    """
    members: list[tuple[str, str, int]] = []
    unsafe: list[tuple[str, str]] = []
    protocol, listing = _archive_listing(read_bytes(uri), key)
    for name, special, size in listing:
        why = unsafe_member_name(name)
        if why is None and is_hidden(name):
            continue
        if why is None and special:
            why = special
        if why is None and size > MAX_MEMBER_BYTES:
            why = f"declares {size} bytes uncompressed (limit {MAX_MEMBER_BYTES})"
        if why:
            unsafe.append((f"{key}/{_printable(name)}", why))
        else:
            members.append((f"{protocol}://{name}::{uri}", f"{key}/{name}", size))
    return members, unsafe


def _archive_listing(data: bytes, key: str) -> tuple[str, list[tuple[str, str | None, int]]]:
    """(fsspec protocol, [(member name, why it is not a regular file or None, declared size)])
    of a zip or tar archive's non-directory members."""
    import io

    if key.lower().endswith(".zip"):
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            return "zip", [
                (info.filename, "symbolic link" if (info.external_attr >> 16) & 0o170000 == 0o120000 else None, info.file_size)
                for info in archive.infolist()
                if not info.is_dir()
            ]
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return "tar", [
            (member.name, None if member.isfile() else "link or device, not a regular file", member.size)
            for member in tar.getmembers()
            if not member.isdir()
        ]


def _printable(name: str) -> str:
    return name.replace("\x00", "\\0")[:200]


# ------------------------------------------------------------------ MSD / nnU-Net
def parse_dataset_json(data: bytes) -> dict[str, Any]:
    """Label names, modality and channel names of an MSD / nnU-Net ``dataset.json``."""
    spec = json.loads(data.decode("utf-8-sig"))
    if not isinstance(spec, dict):
        raise ValueError("dataset.json is not an object")
    labels: dict[int, str] = {}
    for name_or_value, value_or_name in (spec.get("labels") or {}).items():
        if str(name_or_value).lstrip("-").isdigit():  # MSD: {"1": "liver"}
            value, name = int(name_or_value), str(value_or_name)
        elif isinstance(value_or_name, int):  # nnU-Net v2: {"liver": 1}
            value, name = value_or_name, str(name_or_value)
        else:
            continue  # nnU-Net region labels ({"tumor": [1, 2]}) name unions, not values
        if value != 0:
            labels[value] = name.strip().lower()
    channels_raw = spec.get("channel_names") or spec.get("modality") or {}
    channels = {int(k): str(v) for k, v in channels_raw.items() if str(k).isdigit()}
    return {"label_names": labels, "channels": channels, "name": spec.get("name")}


def controlled_channel_modality(channel: str | None) -> str | None:
    if not channel:
        return None
    word = re.sub(r"[^A-Za-z0-9]", "", channel).upper()
    return _MODALITY_WORDS.get(word) or ("MR" if word.startswith(("T1", "T2")) else None)


def msd_attrs(key: str, spec: dict[str, Any], root: str) -> dict[str, Any] | None:
    """attrs of an image under an MSD/nnU-Net root (``imagesTr/x_0001.nii.gz``)."""
    rel = posixpath.relpath(key, root) if root else key
    parts = rel.split("/")
    if len(parts) < 2 or parts[0] not in ("imagesTr", "imagesTs", "labelsTr", "labelsTs"):
        return None
    stem = _strip(parts[-1])
    match = CHANNEL_SUFFIX.match(stem)
    channel_index = int(match.group(2)) if match else 0
    channel = spec["channels"].get(channel_index)
    attrs: dict[str, Any] = {"layout": "msd", "label_names": {str(k): v for k, v in spec["label_names"].items()}}
    if channel:
        attrs["channel"] = channel
        modality = controlled_channel_modality(channel)
        if modality:
            attrs["modality"] = modality
    if len(spec["channels"]) > 1:
        attrs["channel_names"] = [spec["channels"][i] for i in sorted(spec["channels"])]
    return attrs


def _strip(name: str) -> str:
    for suffix in (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd", ".npz", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


# ------------------------------------------------------------------ 2D masks and classes
def is_mask_raster(key: str) -> bool:
    """A 2D mask by its place (``masks/x.png``) or name (``x_mask.png``)."""
    directory = posixpath.basename(posixpath.dirname(key)).lower()
    stem = _strip(posixpath.basename(key))
    return directory in MASK_DIR_NAMES or bool(MASK_SUFFIX.match(stem))


def mask_target(key: str, images_by_dir: dict[str, dict[str, dict[str, Any]]]) -> dict[str, Any] | None:
    """The image item a 2D mask (or IMIS ``.npz``) belongs to, by the layouts above."""
    directory = posixpath.dirname(key)
    stem = _strip(posixpath.basename(key))
    match = MASK_SUFFIX.match(stem)
    base = match.group(1) if match else stem
    same_dir = images_by_dir.get(directory, {})
    for candidate in (base, stem):
        if candidate in same_dir and same_dir[candidate]["key"] != key:
            return same_dir[candidate]
    if posixpath.basename(directory).lower() in MASK_DIR_NAMES:
        parent = posixpath.dirname(directory)
        for name in IMAGE_DIR_NAMES:
            sibling = posixpath.join(parent, name) if name else parent
            for candidate in (stem, base):
                if candidate in images_by_dir.get(sibling, {}):
                    return images_by_dir[sibling][candidate]
    return None


def class_folders(raster_keys: list[str]) -> dict[str, str]:
    """key → class name for rasters in an ImageFolder layout (≥ 2 sibling class folders
    holding images directly; folders named like images/masks are not classes)."""
    by_parent: dict[str, set[str]] = defaultdict(set)
    for key in raster_keys:
        directory = posixpath.dirname(key)
        if not directory:
            continue
        name = posixpath.basename(directory)
        if name.lower() in MASK_DIR_NAMES or name.lower() in IMAGE_DIR_NAMES or name.startswith(("images", "labels")):
            continue
        by_parent[posixpath.dirname(directory)].add(name)
    out: dict[str, str] = {}
    for key in raster_keys:
        directory = posixpath.dirname(key)
        grand = posixpath.dirname(directory)
        if directory and len(by_parent.get(grand, ())) >= 2 and posixpath.basename(directory) in by_parent[grand]:
            out[key] = posixpath.basename(directory)
    return out
