"""Small readers the families need that converters/ does not offer yet.

Label tables (CSV with a header, columns matched by name, case and spaces ignored),
image indexes by file stem, phase annotation tables, and the mirror of a remote
source tree (``s3://`` ...) into a local folder the families read by path.
Transcripts (SRT / WebVTT), VQA files and reports are read by :mod:`converters.text`;
what stays here has no converters counterpart (the recipes match columns by loose
names over plain dict rows).
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import fcntl
import json
import logging
import os
import posixpath
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from converters.base import ConversionError
from converters.io import local_tree
from converters.text import Segment
from curation.recipes.common import IMAGE_EXTENSIONS
from curation.recipes.model import RecipeError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = IMAGE_EXTENSIONS


def norm_column(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "", name.lower())


def read_table(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """Header (as written) and rows of a CSV; cells are stripped strings."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            header = [h.strip() for h in reader.fieldnames or []]
            rows = [{(k or "").strip(): (v or "").strip() for k, v in row.items()} for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ConversionError("bad_table", f"{path}: cannot read the CSV ({exc})") from exc
    return header, rows


def csv_header(path: Path) -> list[str]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            first = next(csv.reader(fh), [])
    except (OSError, UnicodeDecodeError, csv.Error):
        return []
    return [h.strip() for h in first]


def find_column(header: Sequence[str], *candidates: str) -> str | None:
    """The header name matching one of ``candidates`` (normalised), in candidate order."""
    normalised = {norm_column(h): h for h in header}
    for candidate in candidates:
        if norm_column(candidate) in normalised:
            return normalised[norm_column(candidate)]
    return None


def find_files(root: Path, suffixes: Sequence[str], max_depth: int = 6) -> list[Path]:
    """Files under ``root`` with one of ``suffixes``, at most ``max_depth`` levels down,
    sorted; linked folders followed and hidden entries skipped, as discovery does
    (:func:`converters.io.local_tree`)."""
    if not root.is_dir():
        return []
    out = []
    for name, _ in local_tree(str(root)):
        path = Path(name)
        if path.suffix.lower() in suffixes and len(path.relative_to(root).parts) <= max_depth:
            out.append(path)
    return sorted(out)  # Path order (by parts), as before: family builds keep their item order


def image_index(root: Path) -> dict[str, Path]:
    """Images under ``root`` by stem and by relative path (first in path order wins)."""
    index: dict[str, Path] = {}
    for path in find_files(root, IMAGE_SUFFIXES):
        index.setdefault(path.stem, path)
        index.setdefault(path.name, path)
        index.setdefault(path.relative_to(root).as_posix(), path)
    return index


def lookup_image(index: dict[str, Path], name: str) -> Path | None:
    name = name.strip().replace("\\", "/")
    for key in (name, name.split("/")[-1], Path(name).stem):
        if key in index:
            return index[key]
    for suffix in IMAGE_SUFFIXES:  # APTOS/EyePACS tables name images without extension
        if name + suffix in index:
            return index[name + suffix]
    return None


# -- phase tables --------------------------------------------------------------------------
def segments_from_rows(rows: Iterable[dict[str, str]], header: Sequence[str], fps: float | None, origin: str) -> list[Segment]:
    """Phase annotations (Cataract-1K style: phase name, start/end in seconds or frames)."""
    text_col = find_column(header, "comment", "phase", "label", "name", "step")
    start_s = find_column(header, "sec", "start", "start_s", "start_sec", "startSec", "sec_start")
    end_s = find_column(header, "endSec", "end", "end_s", "end_sec", "sec_end")
    start_f = find_column(header, "frame", "start_frame", "startFrame", "frame_start")
    end_f = find_column(header, "endFrame", "end_frame", "frame_end")
    if text_col is None or not ((start_s and end_s) or (start_f and end_f)):
        raise ConversionError(
            "bad_table",
            f"{origin}: a phase table needs a phase column (comment/phase/label) and start/end columns "
            f"in seconds (sec/endSec, start/end) or frames (frame/endFrame); got {list(header)}",
        )
    out = []
    for number, row in enumerate(rows, start=2):
        try:
            if start_s and end_s and row.get(start_s) and row.get(end_s):
                start, end = float(row[start_s]), float(row[end_s])
            else:
                if not fps:
                    raise ValueError("frame numbers need the video's frame rate")
                start, end = float(row[start_f or ""]) / fps, float(row[end_f or ""]) / fps
        except (ValueError, KeyError) as exc:
            raise ConversionError("bad_table", f"{origin}: line {number}: {exc}") from exc
        if row.get(text_col) and end > start:
            out.append(Segment(start, end, row[text_col].replace("_", " ")))
    return out


# -- remote source trees -------------------------------------------------------------------
#: the file next to a mirrored tree that records where it came from and what it holds
MIRROR_MANIFEST = ".medcurate-source.json"


@dataclasses.dataclass(frozen=True)
class Mirror:
    """A remote tree mirrored into a local folder, and what this staging had to do."""

    uri: str
    path: str  # the local copy of ``uri`` (its last path segment is the remote folder's name)
    downloaded: int
    unchanged: int
    removed: int
    bytes_downloaded: int


def _signature(info: dict[str, Any]) -> str:
    """What changes when a remote file changes: its content token (ETag ...), else the mtime."""
    from curation.hash_cache import content_token

    modified = (str(info[key]) for key in ("LastModified", "last_modified", "mtime", "updated") if info.get(key))
    return content_token(info) or next(modified, "")


def _safe_relative(rel: str) -> bool:
    """A listed key that stays inside the mirror (S3 keys may hold '..' or empty segments)."""
    parts = rel.split("/")
    return bool(rel) and not rel.startswith("/") and all(p not in ("", ".", "..") for p in parts)


def _remote_listing(fs: Any, root: str, uri: str, subpaths: Sequence[str]) -> dict[str, dict[str, Any]]:
    """relative path -> {size, etag} of every file under ``root`` (or its ``subpaths``)."""
    listing: dict[str, dict[str, Any]] = {}
    for sub in subpaths or [""]:
        top = posixpath.join(root, sub) if sub else root
        shown = f"{uri.rstrip('/')}/{sub}" if sub else uri
        try:
            if not fs.isdir(top):
                what = "a file, not a folder (prefix)" if fs.isfile(top) else "not found"
                raise RecipeError(f"sources: {shown} is {what}; give the folder (prefix) of a download in the family's layout")
            found = fs.find(top, detail=True)
        except OSError as exc:
            raise RecipeError(f"sources: cannot list {shown} ({type(exc).__name__}: {exc})") from exc
        for path, info in found.items():
            if info.get("type") != "file":
                continue
            rel = posixpath.relpath(path, root)
            if not _safe_relative(rel):
                log.warning("%s: key %r leaves the source folder; it is not mirrored", uri, rel)
                continue
            listing[rel] = {"size": int(info.get("size") or 0), "etag": _signature(info)}
    return listing


@contextlib.contextmanager
def locked(folder: str) -> Iterator[None]:
    """One staging of a folder at a time (two builds of one source on one machine)."""
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, ".lock"), "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def mirror_tree(uri: str, base: str, subpaths: Sequence[str] = ()) -> Mirror:
    """Mirror the remote folder ``uri`` (any fsspec URL: ``s3://``, ``gs://`` ...) into
    ``base/<folder name>``, downloading only files whose size or ETag changed since the
    last staging (the manifest ``base/.medcurate-source.json`` remembers them).

    The families read files by path with libraries that only take paths (csv, PIL,
    SimpleITK, PyAV), so a remote source becomes a local folder once, and a nightly
    rebuild of an unchanged bucket costs one listing. Files gone from the bucket are
    removed from the copy, so the copy is always exactly the listing. ``subpaths``
    (relative) restricts the mirror to those sub-folders, e.g. the recipe's source paths.
    """
    from fsspec.core import url_to_fs

    fs, root = url_to_fs(uri)
    root = root.rstrip("/")
    local = os.path.join(base, posixpath.basename(root) or "source")
    listing = _remote_listing(fs, root, uri, subpaths)
    manifest_path = os.path.join(base, MIRROR_MANIFEST)
    with locked(base):
        known: dict[str, Any] = {}
        if os.path.exists(manifest_path):
            with open(manifest_path) as fh:
                saved = json.load(fh)
            known = saved.get("files", {}) if saved.get("uri") == uri else {}
        removed = _remove_extra(local, set(listing))
        wanted = [rel for rel, meta in listing.items() if not _is_current(local, rel, meta, known)]
        if wanted:
            targets = [os.path.join(local, *rel.split("/")) for rel in wanted]
            for target in targets:
                os.makedirs(os.path.dirname(target), exist_ok=True)
            fs.get([posixpath.join(root, rel) for rel in wanted], targets)
        tmp = manifest_path + ".tmp"
        with open(tmp, "w") as fh:
            json.dump({"uri": uri, "root": os.path.basename(local), "files": listing}, fh, sort_keys=True)
        os.replace(tmp, manifest_path)
    os.makedirs(local, exist_ok=True)
    mirror = Mirror(
        uri, local, len(wanted), len(listing) - len(wanted), removed, sum(listing[r]["size"] for r in wanted)
    )
    log.info(
        "staged %s in %s: %d file(s) downloaded (%d bytes), %d unchanged, %d removed",
        uri, local, mirror.downloaded, mirror.bytes_downloaded, mirror.unchanged, mirror.removed,
    )
    return mirror


def _is_current(local: str, rel: str, meta: dict[str, Any], known: dict[str, Any]) -> bool:
    """The local copy is the listed version: same manifest entry and the full size on disk."""
    path = os.path.join(local, *rel.split("/"))
    return known.get(rel) == meta and os.path.isfile(path) and os.path.getsize(path) == meta["size"]


def _remove_extra(local: str, listed: set[str]) -> int:
    """Delete local files the listing no longer has (and leftovers of a crashed staging)."""
    removed = 0
    for folder, _, names in os.walk(local):
        for name in names:
            path = os.path.join(folder, name)
            if os.path.relpath(path, local).replace(os.sep, "/") not in listed:
                os.remove(path)
                removed += 1
    return removed
