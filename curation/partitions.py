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
import os
import posixpath
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pyarrow as pa
from fsspec.core import url_to_fs

from curation.ids import stable_hash
from curation.shards import DEFAULT_SHARD_BYTES, ShardWriter
from curation.stages import Reject, Stage, iter_batches

#: a partition holds about this much input, and at most MAX_ITEMS_PER_PARTITION items: small
#: enough that a nightly change touches few partitions (an incremental rebuild redoes only
#: those), large enough that its own fixed costs (stage set-up, a shard file, a manifest)
#: stay small. Orchestration is not per partition: a task run carries a batch of them
#: (``flows.build.task_batches``).
PARTITION_INPUT_BYTES = 64 * 1024 * 1024
MAX_ITEMS_PER_PARTITION = 256


@dataclasses.dataclass
class Partition:
    index: int
    key: str
    items: list[dict[str, Any]]

    @property
    def input_bytes(self) -> int:
        return sum(int(i.get("size_bytes") or 0) for i in self.items)


@dataclasses.dataclass
class StageTiming:
    """Rows in and out of one stage within a partition, and the time it took."""

    seconds: float = 0.0
    rows_in: int = 0
    rows_out: int = 0

    def add(self, seconds: float, rows_in: int, rows_out: int) -> None:
        self.seconds += seconds
        self.rows_in += rows_in
        self.rows_out += rows_out


@dataclasses.dataclass
class PartitionResult:
    key: str
    shards: list[str]
    rows: int
    items: int
    rejects: list[Reject]
    converted_items: int
    seconds: float
    stages: dict[str, dict[str, float]] = dataclasses.field(default_factory=dict)
    worker: str = ""  # host:pid that computed it (where to look when a partition misbehaves)
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


def items_per_partition(items: Sequence[dict[str, Any]], target_bytes: int = PARTITION_INPUT_BYTES) -> int:
    """Items per partition for about ``target_bytes`` of input: a power of two, so the
    boundaries stay put while the average item size stays in the same octave."""
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
    return [Partition(index, stable_hash(fingerprint, *map(item_identity, group)), group) for index, group in enumerate(groups)]


def item_identity(item: dict[str, Any]) -> str:
    """What an item's samples are made of, for its partition's key: its key and content
    hash, and what a label table or the layout says about it (``payload_json``,
    ``attrs``). A grade corrected in a CSV or a label renamed in ``dataset.json`` changes
    no file the content hash covers, yet changes the samples."""
    identity = f"{item['key']}={item['sha256']}"
    described = [str(item.get(field) or "") for field in ("attrs", "payload_json")]
    return f"{identity}|{stable_hash(*described)}" if any(described) else identity


def apply_stages(
    stages: Sequence[Stage], batch: pa.Table, timings: dict[str, StageTiming]
) -> tuple[pa.Table, list[Reject]]:
    """Run a chain of (already set up) stages over one batch, timing each."""
    rejects: list[Reject] = []
    current = batch
    for stage in stages:
        tick = time.perf_counter()
        out = stage.process(current)
        timings.setdefault(stage.name, StageTiming()).add(time.perf_counter() - tick, current.num_rows, out.table.num_rows)
        rejects.extend(out.rejects)
        current = out.table
    return current, rejects


def stream_stages(
    stages: Sequence[Stage], batch: pa.Table, timings: dict[str, StageTiming]
) -> Iterator[tuple[pa.Table, list[Reject]]]:
    """The first stage's pieces (``process_stream``), each taken through the other stages."""
    if not stages:
        yield batch, []
        return
    first, rest = stages[0], stages[1:]
    pieces = first.process_stream(batch)
    while True:
        tick = time.perf_counter()
        try:
            out = next(pieces)
        except StopIteration:
            timings.setdefault(first.name, StageTiming()).add(time.perf_counter() - tick, 0, 0)
            break
        timings.setdefault(first.name, StageTiming()).add(time.perf_counter() - tick, 0, out.table.num_rows)
        table, rejects = apply_stages(rest, out.table, timings)
        yield table, list(out.rejects) + rejects
    timings[first.name].rows_in += batch.num_rows


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


#: stages that run elsewhere (a Ray actor pool): a batch in, the stage chain's output back
RemoteStages = Callable[[pa.Table], tuple[pa.Table, list[Reject], dict[str, StageTiming]]]


def run_partition(
    partition: Partition,
    stages: Sequence[Stage],
    *,
    shard_dir: str,
    cache: PartitionCache | None,
    shard_bytes: int = DEFAULT_SHARD_BYTES,
    item_schema: pa.Schema,
    remote: RemoteStages | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> PartitionResult:
    """Run stages over one partition's items and stream the samples into shards.

    ``stages`` run here, batch by batch (set up once); ``remote`` — the GPU stages of a
    recipe on an actor pool — then gets each batch. Memory holds one batch of samples
    plus one row group, whatever the partition's size.
    """
    if cache is not None:
        hit = cache.get(partition.key)
        if hit is not None:
            return hit
    started = time.perf_counter()
    rejects: list[Reject] = []
    timings: dict[str, StageTiming] = {}
    table = pa.Table.from_pylist(partition.items, schema=item_schema)
    for stage in stages:
        stage.setup()
    try:
        # the temporary name derives from the partition: a rerun after a crash overwrites it
        with ShardWriter(shard_dir, f"part-{partition.key[:24]}", target_bytes=shard_bytes) as writer:
            batch_size = stages[0].batch_size if stages else 16
            for batch in iter_batches(table, batch_size):
                for piece, piece_rejects in stream_stages(stages, batch, timings):
                    rejects.extend(piece_rejects)
                    if remote is not None and piece.num_rows:
                        piece, remote_rejects, remote_timings = remote(piece)
                        rejects.extend(remote_rejects)
                        for name, timing in remote_timings.items():
                            timings.setdefault(name, StageTiming()).add(timing.seconds, timing.rows_in, timing.rows_out)
                    writer.write(piece)
                if on_progress is not None:
                    on_progress(batch.num_rows)
        shards = writer.shards
    finally:
        for stage in stages:
            stage.teardown()
    item_keys = {str(i.get("key")) for i in partition.items}
    rejected_items = {r.source_uri.split("#", 1)[0] for r in rejects} & item_keys
    result = PartitionResult(
        key=partition.key,
        shards=[s.path for s in shards],
        rows=sum(s.rows for s in shards),
        items=len(partition.items),
        rejects=rejects,
        converted_items=len(partition.items) - len(rejected_items),
        seconds=time.perf_counter() - started,
        stages={name: dataclasses.asdict(t) for name, t in timings.items()},
        worker=f"{socket.gethostname()}:{os.getpid()}",
    )
    if cache is not None:
        cache.put(result)
    return result
