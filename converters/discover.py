"""Find the items of a source tree: DICOM series, volumes with their label maps, rasters.

Discovery walks every source (recursively, through fsspec), classifies each file,
groups DICOM files into series by SeriesInstanceUID, attaches label maps to the image
they annotate, and hashes the content of every item. Files that cannot become an item
are rejected here with a reason, so the run summary accounts for every input file.
"""

from __future__ import annotations

import dataclasses
import json
import os
import posixpath
import re
import tarfile
import zipfile
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import pyarrow as pa
import pydicom
from fsspec.core import url_to_fs

from converters.base import WORK_ITEM_SCHEMA, ConversionError
from converters.dicom import is_enhanced, read_dicom
from converters.dicom_labels import annotation_kind, referenced_series_uid
from converters.io import is_hidden, local_tree, url_prefix
from converters.labels import looks_like_label_map, strip_volume_suffix
from converters.layouts import (
    archive_members,
    class_folders,
    is_archive,
    is_mask_raster,
    mask_target,
    msd_attrs,
    parse_dataset_json,
)
from converters.video import VIDEO_EXTENSIONS
from curation import hash_cache
from curation.hash_cache import HashCache
from curation.ids import combine_hashes, sha256_bytes, stable_hash
from curation.stages import Reject

VOLUME_EXTENSIONS = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
RASTER_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
DICOM_EXTENSIONS = (".dcm", ".dicom", ".ima")
#: data files that belong to a header file (MHD/NHDR) and are read through it
COMPANION_EXTENSIONS = (".raw", ".zraw", ".raw.gz", ".img")
STAGE = "discover"


@dataclasses.dataclass
class _File:
    uri: str
    key: str  # relative to the source root, '/'-separated
    size: int
    info: dict[str, Any] | None = None  # an object store's listing (its ETag keys the hash cache)


@dataclasses.dataclass
class Discovery:
    items: list[dict[str, Any]]
    rejects: list[Reject]
    files_seen: int

    def table(self) -> pa.Table:
        return pa.Table.from_pylist(self.items, schema=WORK_ITEM_SCHEMA) if self.items else WORK_ITEM_SCHEMA.empty_table()


def _ext(name: str) -> str:
    lower = name.lower()
    for ext in (*VOLUME_EXTENSIONS, *COMPANION_EXTENSIONS):
        if lower.endswith(ext):
            return ext
    return os.path.splitext(lower)[1]


def list_files(source: str) -> list[_File]:
    """Every file under ``source`` (or ``source`` itself), with keys relative to it.

    Hidden entries (``.git/``, ``.DS_Store``, macOS ``._*`` resource forks,
    ``__MACOSX/``: :func:`converters.io.is_hidden`) are not inputs and are skipped.
    Local symbolic links are followed, to files and to folders: DataLad/git-annex
    datasets (most of OpenNeuro's BIDS datasets) and symlink farms are trees of links; a
    link whose target is missing is listed, so it is rejected as unreadable rather than
    silently dropped.
    """
    fs, root = url_to_fs(source)
    prefix = url_prefix(fs)
    local = not prefix
    if fs.isfile(root):
        info = fs.info(root)
        return [_File(prefix + root, posixpath.basename(root), int(info.get("size") or 0), info if prefix else None)]
    if not fs.isdir(root):
        raise FileNotFoundError(f"source {source!r} does not exist")
    top = root.rstrip("/") + "/"
    if local:
        return [_File(path, path[len(top) :], size) for path, size in local_tree(root.rstrip("/") or "/")]
    files = []
    for path, info in sorted(fs.find(root, detail=True).items()):
        if info.get("type") != "file":
            continue
        # the prefix cut is relpath's answer for paths under root, at a tenth of its cost
        key = (path[len(top) :] if path.startswith(top) else posixpath.relpath(path, root.rstrip("/"))) if root else path
        if is_hidden(key):
            continue
        files.append(_File(prefix + path, key, int(info.get("size") or 0), info))
    return files


def _read(file: _File) -> bytes:
    fs, path = url_to_fs(file.uri)
    with fs.open(path, "rb") as fh:
        return fh.read()


def _looks_like_dicom(data: bytes) -> bool:
    return len(data) >= 132 and data[128:132] == b"DICM"


#: what runs per-file discovery work elsewhere: ``parallel_map(fn, chunks)`` returns
#: ``[fn(chunk) for chunk in chunks]`` (in order), e.g. on the local worker processes
ParallelMap = Callable[[Callable[[Any], Any], Sequence[Any]], list[Any]]

#: files not known to the hash cache are read, hashed and (DICOM) header-checked in a
#: ``parallel_map`` only when they add up to this much (a worker pool costs ~1 s to start;
#: the same bound as the local executor's, so a build that starts it here uses it again
#: for conversion)
PARALLEL_MIN_BYTES = 64 * 1024 * 1024
#: files per unit of parallel work (a chunk costs one round trip to a worker)
PARALLEL_CHUNK_FILES = 64


def discover(
    sources: Iterable[str], hashes: HashCache | None = None, parallel_map: ParallelMap | None = None
) -> Discovery:
    """Items and rejects of all sources; keys of items of several sources stay distinct.

    ``hashes`` (else the active cache of the plan, else none) skips reading files whose
    identity is unchanged since they were last hashed (:mod:`curation.hash_cache`).
    ``parallel_map`` reads, hashes and header-checks the files the cache does not know on
    other cores when there are enough of them (``PARALLEL_MIN_BYTES``): a first build of
    thousands of DICOM files spends ~1.5 ms per file here, serially otherwise.
    """
    cache = hashes or hash_cache.active() or HashCache(None)
    with hash_cache.activated(cache):
        return _discover(list(sources), parallel_map)


def _discover(sources: list[str], parallel_map: ParallelMap | None = None) -> Discovery:
    items: list[dict[str, Any]] = []
    rejects: list[Reject] = []
    seen = 0
    for source in sources:
        files = list_files(source)
        prefix = f"{posixpath.basename(source.rstrip('/'))}/" if len(sources) > 1 else ""
        for file in files:
            file.key = prefix + file.key
        files, archive_rejects = _expand_archives(files)
        rejects.extend(archive_rejects)
        seen += len(files) + len(archive_rejects)
        found, rejected = _discover_files(files, parallel_map)
        items.extend(found)
        rejects.extend(rejected)
    items.sort(key=lambda i: i["key"])
    return Discovery(items, rejects, seen)


def _expand_archives(files: list[_File]) -> tuple[list[_File], list[Reject]]:
    """Archives replaced by their safe members (read in place); unsafe members rejected."""
    out: list[_File] = []
    rejects: list[Reject] = []
    for file in files:
        if not is_archive(file.key):
            out.append(file)
            continue
        try:
            members, unsafe = archive_members(file.uri, file.key)
        except (OSError, EOFError, zipfile.BadZipFile, tarfile.TarError, ValueError) as exc:
            rejects.append(Reject(file.key, STAGE, "bad_archive", f"{file.key}: cannot list the archive ({exc})"))
            continue
        out.extend(_File(uri, key, size) for uri, key, size in members)
        rejects.extend(
            Reject(key, STAGE, "unsafe_archive_member", f"{key}: {why}; the member is not read") for key, why in unsafe
        )
    return out, rejects


def _discover_files(
    files: list[_File], parallel_map: ParallelMap | None = None
) -> tuple[list[dict[str, Any]], list[Reject]]:
    by_name = {f.key: f for f in files}
    roles = {f.key: _role(f, by_name) for f in files}
    examined = _examine([(f, roles[f.key]) for f in files], parallel_map)
    rejects: list[Reject] = []
    series: dict[tuple[str, str], list[tuple[_File, str]]] = defaultdict(list)
    singles: list[dict[str, Any]] = []
    volumes: list[dict[str, Any]] = []
    label_maps: list[tuple[_File, str]] = []
    rasters: list[dict[str, Any]] = []
    raster_masks: list[tuple[_File, str]] = []
    dicom_annotations: list[tuple[_File, str, str | None]] = []
    dicom_by_uid: dict[str, dict[str, Any]] = {}
    enhanced: list[dict[str, Any]] = []  # single Enhanced CT/MR files: stacks of slices, like a series
    specs: dict[str, dict[str, Any]] = {}

    for file in files:
        role = roles[file.key]
        try:
            if role == "spec":
                specs[posixpath.dirname(file.key)] = _dataset_spec(file)
                continue
            if role == "companion":
                continue  # read through its header file
            if role == "unsupported":
                raise ConversionError(
                    "unsupported_format", f"{file.key}: extension {_ext(file.key) or '(none)'} is not a supported input"
                )
            facts, digest = examined[file.key].result()
            if role == "label_map":
                label_maps.append((file, digest))
            elif role == "volume":
                volumes.append(_volume_item(file, digest, by_name, examined))
            elif role == "mask":
                raster_masks.append((file, digest))
            elif role in ("raster", "video"):
                (rasters if role == "raster" else singles).append(_item(file, role, digest))
            elif facts is not None and facts.annotation is not None:
                dicom_annotations.append((file, digest, facts.referenced_series))
            elif facts is not None and facts.series_uid and facts.frames == 1:
                series[(posixpath.dirname(file.key), facts.series_uid)].append((file, digest))
            else:
                item = _item(file, "dicom", digest)
                singles.append(item)
                if facts is not None and facts.enhanced:  # annotations took the branch above
                    enhanced.append(item)
                if facts is not None and facts.series_uid:
                    dicom_by_uid[facts.series_uid] = item
        except Exception as exc:  # one damaged file must never stop discovery of the others
            rejects.append(Reject(file.key, STAGE, *_reason_of(file, exc)))

    dicom_items = []
    for (d, uid), members in series.items():
        item = _series_item(d, uid, members)
        dicom_items.append(item)
        dicom_by_uid[uid] = item
    images = dicom_items + volumes
    _apply_dataset_specs(volumes, specs)
    # a single Enhanced CT/MR file takes a label map beside it like a series does, in a
    # folder with no series or volume (cine loops and other single files never do)
    taken = {_item_dir(image) for image in images}
    rejects.extend(_attach_label_maps(images + [e for e in enhanced if _item_dir(e) not in taken], label_maps))
    rejects.extend(_attach_dicom_annotations(dicom_by_uid, dicom_annotations))
    rejects.extend(_attach_raster_masks(rasters, raster_masks))
    for key, name in class_folders([r["key"] for r in rasters]).items():
        item = next(r for r in rasters if r["key"] == key)
        item["attrs"] = _merge_attrs(item, {"class": name, "layout": "imagefolder"})
    return images + rasters + singles, rejects


def _dataset_spec(file: _File) -> dict[str, Any]:
    try:
        return parse_dataset_json(_read(file))
    except (ValueError, UnicodeDecodeError, AttributeError, TypeError) as exc:
        raise ConversionError("bad_json", f"{file.key}: not a valid MSD/nnU-Net dataset.json ({exc})") from exc


def _merge_attrs(item: dict[str, Any], extra: dict[str, Any]) -> str:
    attrs = json.loads(item["attrs"]) if item.get("attrs") else {}
    attrs.update(extra)
    return json.dumps(attrs, sort_keys=True)


def _apply_dataset_specs(volumes: list[dict[str, Any]], specs: dict[str, dict[str, Any]]) -> None:
    """attrs (label names, modality, channel) of volumes under a dataset.json root."""
    for item in volumes:
        for root, spec in specs.items():
            if root and not item["key"].startswith(root + "/"):
                continue
            attrs = msd_attrs(item["key"], spec, root)
            if attrs is not None:
                item["attrs"] = _merge_attrs(item, attrs)
                break


def _attach_dicom_annotations(
    by_uid: dict[str, dict[str, Any]], annotations: list[tuple[_File, str, str | None]]
) -> list[Reject]:
    """DICOM-SEG / RT-STRUCT files attach to the series they reference (by SeriesInstanceUID)."""
    rejects = []
    for file, digest, uid in annotations:
        target = by_uid.get(uid or "")
        if target is None:
            rejects.append(
                Reject(file.key, STAGE, "orphan_label_map", f"{file.key}: the image series it references is not in the source")
            )
            continue
        target["label_uris"] = [*(target["label_uris"] or []), file.uri]
        target["sha256"] = combine_hashes([target["sha256"], digest])
    return rejects


def _attach_raster_masks(rasters: list[dict[str, Any]], masks: list[tuple[_File, str]]) -> list[Reject]:
    """2D masks and IMIS ``.npz`` sparse masks attach to the image they annotate."""
    by_dir: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for item in rasters:
        stem = posixpath.basename(item["key"]).rsplit(".", 1)[0]
        by_dir[posixpath.dirname(item["key"])][stem] = item
    rejects = []
    for file, digest in masks:
        target = mask_target(file.key, by_dir)
        if target is None:
            rejects.append(
                Reject(file.key, STAGE, "orphan_label_map", f"{file.key}: no image with the same name for this mask")
            )
            continue
        target["label_uris"] = [*(target["label_uris"] or []), file.uri]
        target["sha256"] = combine_hashes([target["sha256"], digest])
    return rejects


def _has_header(key: str, by_name: dict[str, _File]) -> bool:
    stem = key
    for ext in COMPANION_EXTENSIONS:
        if key.lower().endswith(ext):
            stem = key[: -len(ext)]
            break
    return any(stem + h in by_name for h in (".mhd", ".nhdr", ".MHD", ".NHDR", ".hdr"))


def _reason_of(file: _File, exc: Exception) -> tuple[str, str]:
    """A discovery reject's (reason, detail) for what reading ``file`` raised."""
    if isinstance(exc, ConversionError):
        return exc.reason, exc.detail
    if isinstance(exc, OSError):
        return "unreadable", f"{file.key}: {exc}"
    return "unreadable", f"{file.key}: {type(exc).__name__}: {str(exc)[:200]}"


@dataclasses.dataclass(frozen=True)
class _Examined:
    """What discovery learnt of one file (from the hash cache, or by reading it here or in
    a worker): its content hash and, for DICOM, the header's grouping facts; or why it
    is a reject."""

    digest: str | None = None
    facts: DicomFacts | None = None
    reject: tuple[str, str] | None = None

    def result(self) -> tuple[DicomFacts | None, str]:
        if self.reject is not None:
            raise ConversionError(*self.reject)
        assert self.digest is not None
        return self.facts, self.digest


def _role(file: _File, by_name: dict[str, _File]) -> str:
    """What discovery does with ``file``, by its name alone: the one rule for which files
    are read (and how) and for how they become items."""
    ext = _ext(file.key)
    if posixpath.basename(file.key) == "dataset.json":
        return "spec"
    if ext in COMPANION_EXTENSIONS and _has_header(file.key, by_name):
        return "companion"  # part of its header file's volume
    if ext in VOLUME_EXTENSIONS:
        return "label_map" if looks_like_label_map(file.key) else "volume"
    if ext in RASTER_EXTENSIONS:
        return "mask" if is_mask_raster(file.key) else "raster"
    if ext == ".npz":
        return "mask"
    if ext in VIDEO_EXTENSIONS:
        return "video"
    if ext in DICOM_EXTENSIONS:
        return "dicom"
    return "dicom-sniff" if ext == "" else "unsupported"  # no extension: DICOM if its preamble says so


#: roles whose files are only hashed (DICOM files are also header-checked; specs are parsed
#: in the loop; unsupported files are not read)
_HASHED_ROLES = frozenset({"companion", "label_map", "volume", "mask", "raster", "video"})


def examine_files(jobs: Sequence[tuple[_File, str]]) -> list[_Examined]:
    """Read and hash files, DICOM ones with their header checked element by element (by
    role, see :func:`_role`). No cache here: it runs in worker processes too (module
    level), and the discovering process keeps what is learnt."""
    examined = []
    for file, role in jobs:
        try:
            if role in _HASHED_ROLES:
                examined.append(_Examined(digest=hash_cache.read_sha256(file.uri)))
            else:
                facts, digest = _read_dicom_facts(file, known_ext=role == "dicom")
                examined.append(_Examined(digest=digest, facts=facts))
        except Exception as exc:  # noqa: BLE001 - a reject of this file, raised again in discovery's loop
            examined.append(_Examined(reject=_reason_of(file, exc)))
    return examined


def _examine(files: list[tuple[_File, str]], parallel_map: ParallelMap | None) -> dict[str, _Examined]:
    """Content hash (and DICOM facts) of every file that needs reading, by key.

    Files the hash cache knows are answered from it (an unchanged DICOM file is not
    opened: its facts are cached by content, stored only after its header check passed).
    The others are read here, or through ``parallel_map`` when they add up to
    ``PARALLEL_MIN_BYTES``; what is learnt is stored in the cache here, with identities
    taken before the files were read (a file changed meanwhile is not stored).
    """
    cache = hash_cache.active()
    examined: dict[str, _Examined] = {}
    jobs: list[tuple[_File, str]] = []
    idents: list[hash_cache.Identity | None] = []
    wanted = [(file, role) for file, role in files if role in _HASHED_ROLES or role in ("dicom", "dicom-sniff")]
    known, identities = _cached(cache, wanted) if cache is not None and cache.enabled else ({}, {})
    for file, role in wanted:
        if file.key in known:
            assert cache is not None
            cache.hits += 1
            examined[file.key] = known[file.key]
            continue
        jobs.append((file, role))
        idents.append(identities.get(file.key))
    if parallel_map is not None and jobs and sum(file.size for file, _ in jobs) >= PARALLEL_MIN_BYTES:
        chunks = [jobs[i : i + PARALLEL_CHUNK_FILES] for i in range(0, len(jobs), PARALLEL_CHUNK_FILES)]
        results = [e for chunk in parallel_map(examine_files, chunks) for e in chunk]
    else:
        results = examine_files(jobs)
    for (file, _), ident, found in zip(jobs, idents, results, strict=True):
        examined[file.key] = found
        if cache is None or found.digest is None:
            continue
        cache.misses += 1
        if ident is not None and cache.remember(ident, found.digest) and found.facts is not None:
            cache.remember_derived(found.digest, DICOM_FACTS_KIND, json.dumps(dataclasses.asdict(found.facts)))
    return examined


def _cached(
    cache: HashCache, files: list[tuple[_File, str]]
) -> tuple[dict[str, _Examined], dict[str, hash_cache.Identity | None]]:
    """What the cache knows of unchanged files, by key: the hash and, for DICOM, the facts
    (a DICOM file whose facts are not stored, e.g. from an older cache, is read again);
    and every file's identity. Looked up in a few queries, not two per file."""
    identities = {file.key: hash_cache.identity(file.uri, file.info) for file, _ in files}
    present = [(file, role, ident) for file, role in files if (ident := identities[file.key]) is not None]
    digests = cache.lookup_many([ident for _, _, ident in present])
    dicom = [digest for (_, role, _), digest in zip(present, digests, strict=True) if digest and role not in _HASHED_ROLES]
    facts = cache.derived(dicom, DICOM_FACTS_KIND)
    known: dict[str, _Examined] = {}
    for (file, role, _), digest in zip(present, digests, strict=True):
        if digest is None:
            continue
        if role in _HASHED_ROLES:
            known[file.key] = _Examined(digest=digest)
        elif digest in facts:
            known[file.key] = _Examined(digest=digest, facts=DicomFacts(**json.loads(facts[digest])))
    return known, identities


@dataclasses.dataclass(frozen=True)
class DicomFacts:
    """What discovery needs of a DICOM header to group files into items."""

    series_uid: str
    frames: int
    annotation: str | None  # "seg" / "rtstruct" for annotation objects
    referenced_series: str | None  # the image series an annotation refers to
    enhanced: bool = False  # a functional-group multi-frame object: its frames are positioned slices

    @classmethod
    def of(cls, ds: pydicom.Dataset) -> DicomFacts:
        kind = annotation_kind(ds)
        return cls(
            series_uid=str(ds.get("SeriesInstanceUID", "") or ""),
            frames=int(ds.get("NumberOfFrames", 1) or 1),
            annotation=kind,
            referenced_series=referenced_series_uid(ds) if kind is not None else None,
            enhanced=is_enhanced(ds),
        )


#: the hash cache's kind for :class:`DicomFacts`; pydicom's version is part of it because
#: the header check that let a file through (``read_dicom``) is pydicom's parsing
DICOM_FACTS_KIND = f"dicom-facts-v2:pydicom-{pydicom.__version__}"


def _read_dicom_facts(file: _File, known_ext: bool) -> tuple[DicomFacts, str]:
    """Read a DICOM file once: its header checked element by element and its content hash."""
    data = _read(file)
    if not known_ext and not _looks_like_dicom(data):
        raise ConversionError("unsupported_format", f"{file.key}: not a known image format")
    return DicomFacts.of(read_dicom(data, file.key, headers_only=True)), sha256_bytes(data)


def _item(file: _File, kind: str, digest: str, members: list[str] | None = None) -> dict[str, Any]:
    return {
        "uri": file.uri,
        "key": file.key,
        "kind": kind,
        "members": members,
        "label_uris": None,
        "sha256": digest,
        "size_bytes": file.size,
        "attrs": None,
    }


def _volume_item(file: _File, digest: str, by_name: dict[str, _File], examined: dict[str, _Examined]) -> dict[str, Any]:
    item = _item(file, "volume", digest)
    if file.key.lower().endswith((".mhd", ".nhdr")):
        companions = [
            f for k, f in by_name.items() if k != file.key and k.startswith(file.key[:-4]) and _ext(k) in COMPANION_EXTENSIONS
        ]
        if companions:
            item["members"] = [file.uri] + [c.uri for c in companions]
            item["sha256"] = combine_hashes([digest] + [_companion_sha256(c, examined) for c in companions])
            item["size_bytes"] += sum(c.size for c in companions)
    return item


def _companion_sha256(file: _File, examined: dict[str, _Examined]) -> str:
    """A volume's data file: examined with the others, unless its name only resembles the
    header's (the prefix match is looser than :func:`_has_header`)."""
    found = examined.get(file.key)
    return found.result()[1] if found is not None else hash_cache.file_sha256(file.uri, file.info)


def _series_item(directory: str, uid: str, members: list[tuple[_File, str]]) -> dict[str, Any]:
    members = sorted(members, key=lambda m: m[0].key)
    first = members[0][0]
    if len(members) == 1:
        return _item(first, "dicom", members[0][1])
    # the key names the folder and a hash of the UID (UIDs are identifiers, PS3.15)
    key = f"{directory}/series-{stable_hash(uid, length=12)}" if directory else f"series-{stable_hash(uid, length=12)}"
    item = _item(first, "dicom", combine_hashes(d for _, d in members), [f.uri for f, _ in members])
    item["key"] = key
    item["size_bytes"] = sum(f.size for f, _ in members)
    return item


def _attach_label_maps(images: list[dict[str, Any]], label_maps: list[tuple[_File, str]]) -> list[Reject]:
    """Attach each label map to the image it annotates.

    Same folder with exactly one image: that image. Otherwise by name: the label's
    stem starts with the image's stem (``case1_seg`` → ``case1``), or the nnU-Net/MSD
    pairing ``labelsTr/x`` → ``imagesTr/x`` / ``imagesTr/x_0000``.
    """
    rejects: list[Reject] = []
    by_dir: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for image in images:
        by_dir[_item_dir(image)].append(image)
    for file, digest in label_maps:
        directory = posixpath.dirname(file.key)
        stem = strip_volume_suffix(posixpath.basename(file.key))
        candidates = by_dir.get(directory, [])
        targets: list[dict[str, Any]] = []
        if len(candidates) == 1:
            targets = [candidates[0]]
        else:
            named = [c for c in candidates if stem.startswith(_item_stem(c)) and _item_stem(c)]
            if not named and posixpath.basename(directory) in ("labelsTr", "labelsTs"):
                # nnU-Net: the case's label map annotates every channel file x_0000, x_0001, …
                sibling = posixpath.join(posixpath.dirname(directory), "images" + posixpath.basename(directory)[6:])
                channel = re.compile(re.escape(stem) + r"(?:_\d{4})?")
                targets = [c for c in by_dir.get(sibling, []) if channel.fullmatch(_item_stem(c))]
            elif named:
                targets = [max(named, key=lambda c: len(_item_stem(c)))]
        if not targets:
            rejects.append(
                Reject(file.key, STAGE, "orphan_label_map", f"{file.key}: no image in its folder that this label map annotates")
            )
            continue
        for target in targets:
            target["label_uris"] = [*(target["label_uris"] or []), file.uri]
            target["sha256"] = combine_hashes([target["sha256"], digest])
    return rejects


def _item_dir(item: dict[str, Any]) -> str:
    if item["kind"] == "dicom" and item["members"]:
        return posixpath.dirname(item["key"])
    return posixpath.dirname(item["key"])


def _item_stem(item: dict[str, Any]) -> str:
    return strip_volume_suffix(posixpath.basename(item["key"]))
