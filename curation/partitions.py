"""Partitions: the unit of work, of caching and of shards.

Items are cut into partitions by *content-defined* boundaries: walking the items in key
order, a partition ends after an item whose key hash falls in a 1/N bucket (N = the
target items per partition), as rsync and restic chunk files. Adding or removing one
source item therefore changes only its own partition; a rebuild recomputes that one
and reuses every other partition's shards by key.

A partition's key hashes its items' content hashes, the conversion options and the
pipeline version (never the run id). Its result (shards, rejects, counts) is a small
JSON manifest in ``<workdir>/cache/partitions/<key>.json``, written after its shards are
published; a manifest whose shards all exist is a finished partition, so a crashed
run resumes where it stopped.
"""

from __future__ import annotations

import dataclasses
import json
import math
import posixpath
import time
from collections.abc import Callable, Sequence
from typing import Any

import pyarrow as pa
from fsspec.core import url_to_fs

from curation.ids import stable_hash
from curation.shards import DEFAULT_SHARD_BYTES, ShardWriter
from curation.stages import Reject, Stage, iter_batches

MAX_ITEMS_PER_PARTITION = 4096


@dataclasses.dataclass
class Partition:
    index: int
    key: str
    items: list[dict[str, Any]]

    @property
    def input_bytes(self) -> int:
        return sum(int(i.get("size_bytes") or 0) for i in self.items)


@dataclasses.dataclass
class PartitionResult:
    key: str
    shards: list[str]
    rows: int
    items: int
    rejects: list[Reject]
    converted_items: int
    seconds: float
    cached: bool = False

    def to_json(self) -> str:
        data = dataclasses.asdict(self)
        data["rejects"] = [r.as_row() for r in self.rejects]
        data.pop("cached")
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> PartitionResult:
        data = json.loads(text)
        data["rejects"] = [Reject(**r) for r in data["rejects"]]
        return cls(**data, cached=True)


def items_per_partition(items: Sequence[dict[str, Any]], target_bytes: int = DEFAULT_SHARD_BYTES) -> int:
    """Items per partition so a partition's input is about one shard: a power of two, so
    the boundaries stay put while the average item size stays in the same octave."""
    if not items:
        return 1
    average = max(1, sum(int(i.get("size_bytes") or 0) for i in items) // len(items))
    raw = max(1.0, target_bytes / average)
    return int(min(MAX_ITEMS_PER_PARTITION, 2 ** round(math.log2(raw))))


def plan_partitions(items: Sequence[dict[str, Any]], per_partition: int, fingerprint: str) -> list[Partition]:
    """Cut key-ordered items at content-defined boundaries (see the module docstring)."""
    if per_partition < 1:
        raise ValueError(f"items per partition must be at least 1, got {per_partition}")
    ordered = sorted(items, key=lambda i: i["key"])
    groups: list[list[dict[str, Any]]] = []
    current: list[dict[str, Any]] = []
    for item in ordered:
        current.append(item)
        boundary = int(stable_hash("boundary", item["key"], length=16), 16) % per_partition == 0
        if boundary or len(current) >= 4 * per_partition:
            groups.append(current)
            current = []
    if current:
        groups.append(current)
    return [
        Partition(index, stable_hash(fingerprint, *(f"{i['key']}={i['sha256']}" for i in group)), group)
        for index, group in enumerate(groups)
    ]


class PartitionCache:
    """Finished partitions' manifests on the workdir (any fsspec path)."""

    def __init__(self, workdir: str):
        self.fs, root = url_to_fs(workdir)
        self.root = posixpath.join(root, "cache", "partitions")
        self.fs.makedirs(self.root, exist_ok=True)

    def _path(self, key: str) -> str:
        return posixpath.join(self.root, f"{key}.json")

    def get(self, key: str) -> PartitionResult | None:
        path = self._path(key)
        if not self.fs.exists(path):
            return None
        with self.fs.open(path, "r") as fh:
            result = PartitionResult.from_json(fh.read())
        for shard in result.shards:
            shard_fs, shard_path = url_to_fs(shard)
            if not shard_fs.exists(shard_path):
                return None  # shards were removed: recompute
        return result

    def put(self, result: PartitionResult) -> None:
        path = self._path(result.key)
        tmp = path + ".tmp"
        with self.fs.open(tmp, "w") as fh:
            fh.write(result.to_json())
        self.fs.mv(tmp, path)


def run_partition(
    partition: Partition,
    stages: Sequence[Stage],
    *,
    shard_dir: str,
    cache: PartitionCache | None,
    shard_bytes: int = DEFAULT_SHARD_BYTES,
    item_schema: pa.Schema,
    on_progress: Callable[[int], None] | None = None,
) -> PartitionResult:
    """Run stages over one partition's items and stream the samples into shards.

    Stages are applied batch by batch (set up once), so memory holds one batch of
    samples plus one row group, whatever the partition's size.
    """
    if cache is not None:
        hit = cache.get(partition.key)
        if hit is not None:
            return hit
    started = time.perf_counter()
    rejects: list[Reject] = []
    rejected_keys: set[str] = set()
    table = pa.Table.from_pylist(partition.items, schema=item_schema)
    for stage in stages:
        stage.setup()
    try:
        with ShardWriter(shard_dir, f"part-{partition.key[:24]}", target_bytes=shard_bytes) as writer:
            batch_size = stages[0].batch_size if stages else 16
            for batch in iter_batches(table, batch_size):
                current = batch
                for stage in stages:
                    out = stage.process(current)
                    rejects.extend(out.rejects)
                    rejected_keys.update(r.source_uri for r in out.rejects)
                    current = out.table
                writer.write(current)
                if on_progress is not None:
                    on_progress(batch.num_rows)
        shards = writer.shards
    finally:
        for stage in stages:
            stage.teardown()
    result = PartitionResult(
        key=partition.key,
        shards=[s.path for s in shards],
        rows=sum(s.rows for s in shards),
        items=len(partition.items),
        rejects=rejects,
        converted_items=len(partition.items) - len({k for k in rejected_keys}),
        seconds=time.perf_counter() - started,
    )
    if cache is not None:
        cache.put(result)
    return result
