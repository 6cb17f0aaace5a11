"""Content-defined partitions: stable boundaries, cached results, crash-safe resume."""

from __future__ import annotations

import pyarrow as pa

from converters.base import WORK_ITEM_SCHEMA
from curation.partitions import PartitionCache, plan_partitions, run_partition
from curation.schema import SAMPLE_SCHEMA
from curation.stages import Stage, StageOutput
from tests.curation.test_shards import rows


def items(n: int, changed: set[int] = frozenset()):
    return [
        {
            "uri": f"/src/{i}.png",
            "key": f"{i:05d}.png",
            "kind": "raster",
            "members": None,
            "label_uris": None,
            "sha256": ("changed" if i in changed else "h") + str(i),
            "size_bytes": 1000,
        }
        for i in range(n)
    ]


def test_adding_one_item_changes_only_its_partition():
    before = plan_partitions(items(400), 16, "fp")
    more = items(400) + [{**items(1)[0], "key": "00123x.png", "sha256": "new"}]
    after = plan_partitions(more, 16, "fp")
    assert 10 < len(before) < 60
    changed = {p.key for p in after} - {p.key for p in before}
    assert len(changed) == 1
    assert sum(len(p.items) for p in after) == 401


def test_changing_content_or_fingerprint_changes_keys():
    base = {p.key for p in plan_partitions(items(100), 16, "fp")}
    assert {p.key for p in plan_partitions(items(100, changed={7}), 16, "fp")} - base
    assert {p.key for p in plan_partitions(items(100), 16, "other")}.isdisjoint(base)


class FakeConvert(Stage):
    name = "fake"
    output_schema = SAMPLE_SCHEMA
    calls = 0

    def process(self, batch: pa.Table) -> StageOutput:
        FakeConvert.calls += 1
        start = int(batch.column("key")[0].as_py()[:5])
        return StageOutput(rows(start, batch.num_rows, size=16), [])


def test_a_finished_partition_is_reused_and_a_missing_shard_recomputed(tmp_path):
    partition = plan_partitions(items(20), 64, "fp")[0]
    cache = PartitionCache(str(tmp_path / "work"))
    first = run_partition(partition, [FakeConvert()], shard_dir=str(tmp_path / "d"), cache=cache, item_schema=WORK_ITEM_SCHEMA)
    calls = FakeConvert.calls
    again = run_partition(partition, [FakeConvert()], shard_dir=str(tmp_path / "d"), cache=cache, item_schema=WORK_ITEM_SCHEMA)
    assert again.cached and again.shards == first.shards and FakeConvert.calls == calls
    import os

    os.remove(first.shards[0])
    redo = run_partition(partition, [FakeConvert()], shard_dir=str(tmp_path / "d"), cache=cache, item_schema=WORK_ITEM_SCHEMA)
    assert not redo.cached and redo.shards == first.shards and os.path.exists(first.shards[0])
