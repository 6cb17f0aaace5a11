"""Removing shard files that no version of a dataset holds, and versions no one keeps.

A finished shard file is never replaced (``curation.shards.ShardWriter``): a partition
redone after a crash between its shard and its manifest, or after ``cache/partitions``
was deleted, writes a new file, and the old one stays in the dataset's ``data/`` folder
with no version holding it. A crash can also leave a ``_tmp-`` file. Iceberg calls these
orphan files; pyiceberg (0.12) has no orphan-file removal, so this is ours.

What is removed, from ``<warehouse>/medcurate/<dataset>/data/`` only, is a file that

* no snapshot of the table holds (every version, tagged or not: a training job may read
  any of them),
* no finished partition in this workdir's ``cache/partitions`` lists (an unpublished
  build's shards, which the next build reuses), and
* was last modified at least ``min_age_s`` ago (a build of the dataset planned in
  another workdir may be writing; the build lock covers only builds that share its lock
  folder, see ``flows.locks``).

It runs under the dataset's build lock, so no build of the dataset that shares the lock
writes or publishes meanwhile.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import posixpath
import time
from collections.abc import Collection
from typing import TYPE_CHECKING, Any

from fsspec.core import url_to_fs

from converters.io import url_prefix
from curation.partitions import PartitionResult
from flows.locks import dataset_build_lock
from flows.settings import Settings

if TYPE_CHECKING:
    from catalogs.catalog import ExpireResult

log = logging.getLogger(__name__)

#: files younger than this are kept whatever holds them: a build of the dataset from
#: another workdir may be writing them (a partition's shard precedes its manifest)
DEFAULT_MIN_AGE_S = 24 * 3600.0


@dataclasses.dataclass
class CleanReport:
    dataset: str
    data_dir: str
    dry_run: bool
    #: files removed (or, with ``dry_run``, that would be)
    removed: list[str] = dataclasses.field(default_factory=list)
    removed_bytes: int = 0
    held_by_versions: int = 0
    kept_for_reuse: int = 0  # listed by a finished partition of this workdir
    kept_young: int = 0  # modified less than ``min_age_s`` ago


def clean_dataset_files(
    settings: Settings, dataset: str, *, min_age_s: float = DEFAULT_MIN_AGE_S, dry_run: bool = False
) -> CleanReport:
    """Remove the files of ``dataset``'s data folder that nothing holds (module docstring).

    Files are matched by name, not by path: the data folder is flat and every shard name
    is unique (partition key, file index, a suffix where redone), while one folder has
    many spellings (a symlinked workdir, ``file:`` URLs, ``s3a://``). A name some version
    holds anywhere is kept, so a mismatch can only keep too much. And if the table has
    versions but none of the folder's files is held, nothing is removed: the folder is
    not the one the versions were written to (``CatalogError``)."""
    from catalogs.catalog import CatalogError

    with dataset_build_lock(settings.workdir, settings.warehouse, dataset):
        catalog = settings.catalog()
        held = {posixpath.basename(path) for path in catalog.files_of_every_snapshot(dataset)}  # CatalogError if unknown
        reusable = {posixpath.basename(path) for path in _finished_partition_shards(settings.workdir)}
        data_dir = catalog.data_dir(dataset)
        report = CleanReport(dataset, data_dir, dry_run)
        fs, root = url_to_fs(data_dir)
        if not fs.exists(root):
            return report
        listed = [info for info in fs.ls(root, detail=True) if info.get("type") == "file"]
        names = {posixpath.basename(info["name"]) for info in listed}
        if held and names and not names & held:
            raise CatalogError(
                f"none of the {len(names)} files in {data_dir} belongs to a version of {dataset}, whose versions "
                f"hold {len(held)} files elsewhere: is this the warehouse they were built in? nothing removed"
            )
        now = time.time()
        for info in listed:
            name = posixpath.basename(info["name"])
            if name in held:
                report.held_by_versions += 1
            elif name in reusable:
                report.kept_for_reuse += 1
            elif now - _modified(info, now) < min_age_s:
                report.kept_young += 1
            else:
                report.removed.append(url_prefix(fs) + info["name"])
                report.removed_bytes += int(info.get("size") or 0)
                if not dry_run:
                    fs.rm(info["name"])
        log.info(
            "%s: %s %d unheld files (%d bytes) of %s; %d held by versions, %d kept for reuse, %d too recent",
            dataset, "would remove" if dry_run else "removed", len(report.removed), report.removed_bytes, data_dir,
            report.held_by_versions, report.kept_for_reuse, report.kept_young,
        )
        return report


def expire_dataset_versions(
    settings: Settings, dataset: str, *, keep_last: int, keep: Collection[str] = (), dry_run: bool = False
) -> ExpireResult:
    """Keep the last ``keep_last`` versions of ``dataset`` (and ``keep``), expire the rest
    (:meth:`catalogs.catalog.DatasetCatalog.expire_versions`), under the dataset's build
    lock so that no build publishes meanwhile. Their files go with ``catalog clean``."""
    with dataset_build_lock(settings.workdir, settings.warehouse, dataset):
        result = settings.catalog().expire_versions(dataset, keep_last=keep_last, keep=keep, dry_run=dry_run)
        if not dry_run:
            released = {posixpath.basename(path) for path in result.released_files}
            forgotten = _forget_partitions(settings.workdir, released)
            log.info("%s: %d shard file(s) now held by no snapshot; %d partition manifest(s) naming them forgotten",
                     dataset, len(released), forgotten)
    log.info(
        "%s: %s versions %s and %d snapshot(s); kept %s", dataset, "would expire" if dry_run else "expired",
        ", ".join(result.dropped) or "none", len(result.expired_snapshots), ", ".join(result.kept),
    )
    return result


def _forget_partitions(workdir: str, shard_names: set[str]) -> int:
    """Delete this workdir's partition manifests that list one of ``shard_names`` (files
    only expired versions held), so that ``catalog clean`` no longer keeps those files
    for reuse. A forgotten partition is only recomputed if its sources come back."""
    if not shard_names:
        return 0
    fs, _ = url_to_fs(workdir)
    forgotten = 0
    for path, shards in _finished_partitions(workdir):
        if {posixpath.basename(shard) for shard in shards} & shard_names:
            fs.rm(path)
            forgotten += 1
    return forgotten


def _finished_partition_shards(workdir: str) -> list[str]:
    """Shards listed by the manifests in ``<workdir>/cache/partitions``."""
    return [shard for _, shards in _finished_partitions(workdir) for shard in shards]


def _finished_partitions(workdir: str) -> list[tuple[str, list[str]]]:
    """(manifest path, its shards) of each manifest in ``<workdir>/cache/partitions`` (an
    unreadable manifest lists nothing: its partition is recomputed anyway)."""
    fs, root = url_to_fs(workdir)
    folder = posixpath.join(root, "cache", "partitions")
    if not fs.exists(folder):
        return []
    found: list[tuple[str, list[str]]] = []
    manifests = [p for p in fs.ls(folder, detail=False) if p.endswith(".json")]  # not glob: "[" in a workdir
    for path in manifests:
        try:
            with fs.open(path, "r") as handle:
                found.append((path, PartitionResult.from_json(handle.read()).shards))
        except (OSError, ValueError, TypeError, KeyError) as exc:
            log.warning("partition manifest %s is unreadable (%s); its shards are not kept for reuse", path, exc)
    return found


def _modified(info: dict[str, Any], now: float) -> float:
    """A listed file's modification time, in seconds since the epoch (local: ``mtime``;
    s3fs: ``LastModified``); unknown counts as now, so the file is kept."""
    stamp = info.get("mtime", info.get("LastModified"))
    if isinstance(stamp, dt.datetime):
        return stamp.timestamp()
    if isinstance(stamp, int | float):
        return float(stamp)
    return now
