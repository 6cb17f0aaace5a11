"""Shard writer: size-bounded shards, deterministic names, nothing partial ever visible."""

from __future__ import annotations

import datetime as dt
import os
import tracemalloc
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation.images import image_record
from curation.schema import samples_to_table
from curation.shards import TMP_PREFIX, ShardWriter


def rows(start: int, count: int, size: int = 128):
    rng = np.random.default_rng(start)
    out = []
    for i in range(start, start + count):
        pixels = rng.integers(0, 255, (size, size), dtype=np.uint8)  # incompressible
        out.append(
            {
                "sample_id": f"id{i:06d}",
                "dataset": "d",
                "source": "s",
                "source_uri": f"f{i}.png",
                "source_sha256": "0" * 64,
                "modality": "XR",
                "task": "caption",
                "split": "train",
                "images": [image_record("input", pixels)],
                "provenance": {
                    "pipeline_version": "1",
                    "steps_json": "[]",
                    "run_id": "r",
                    "created_at": dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
                },
            }
        )
    return samples_to_table(out)


def test_shards_roll_at_the_target_size_and_round_trip(tmp_path):
    with ShardWriter(str(tmp_path), "part-abc", target_bytes=400_000, row_group_bytes=100_000) as writer:
        for start in range(0, 60, 10):
            writer.write(rows(start, 10))
    shards = writer.shards
    assert len(shards) >= 2
    # a shard closes at the first row group that reaches the target
    assert all(s.bytes <= 400_000 + 2 * 100_000 for s in shards)
    assert [os.path.basename(s.path) for s in shards] == [f"part-abc-{i:05d}.parquet" for i in range(len(shards))]
    assert sum(s.rows for s in shards) == 60
    ids = [i for s in shards for i in pq.read_table(s.path, columns=["sample_id"]).column(0).to_pylist()]
    assert ids == [f"id{i:06d}" for i in range(60)]
    meta = pq.ParquetFile(shards[0].path).metadata
    assert meta.row_group(0).column(0).compression == "ZSTD"
    assert meta.num_row_groups >= 2  # row groups are smaller than shards
    assert not [p for p in os.listdir(tmp_path) if p.startswith(TMP_PREFIX)]


def test_a_finished_shard_is_never_replaced(tmp_path):
    """A published version may hold the file a rewrite of the same partition would name:
    the rewrite goes to a new name, and the first file keeps its bytes."""
    with ShardWriter(str(tmp_path), "part-abc", target_bytes=10**9) as first:
        first.write(rows(0, 3))
    published = Path(first.shards[0].path).read_bytes()
    with ShardWriter(str(tmp_path), "part-abc", target_bytes=10**9) as again:
        again.write(rows(10, 3))
    assert again.shards[0].path != first.shards[0].path
    assert os.path.basename(again.shards[0].path).startswith("part-abc-00000-")
    assert Path(first.shards[0].path).read_bytes() == published
    assert pq.read_table(again.shards[0].path).column("sample_id").to_pylist() == ["id000010", "id000011", "id000012"]


def test_an_exception_leaves_no_partial_shard(tmp_path):
    with pytest.raises(RuntimeError), ShardWriter(str(tmp_path), "part-x", target_bytes=10**9) as writer:
        writer.write(rows(0, 5))
        raise RuntimeError("crash mid-shard")
    assert os.listdir(tmp_path) == []


def test_invalid_rows_are_refused_before_anything_is_written(tmp_path):
    bad = rows(0, 2).set_column(6, "task", __import__("pyarrow").array(["nonsense", "caption"]))
    with pytest.raises(ValueError, match="task"), ShardWriter(str(tmp_path), "p") as writer:
        writer.write(bad)
    assert os.listdir(tmp_path) == []


def test_memory_is_bounded_by_the_row_group_not_the_input(tmp_path):
    batch = rows(0, 20, size=256)  # ~1.3 MB per batch
    tracemalloc.start()
    with ShardWriter(str(tmp_path), "p", target_bytes=4_000_000, row_group_bytes=1_000_000) as writer:
        for _ in range(25):  # ~33 MB in total
            writer.write(batch)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert sum(s.rows for s in writer.shards) == 500
    assert peak < 12_000_000, f"peak {peak} bytes grew with the input"


def test_the_shard_target_is_a_size_on_disk_for_compressible_images(tmp_path):
    """Unfiltered PNGs compress in the zstd pages, so the target counts compressed bytes:
    shards of smooth images come out close to the target, not 10x under it."""

    def smooth_rows(start: int, count: int):
        table = rows(start, count, size=256)
        gradient = np.add.outer(np.arange(256), np.arange(256)).astype(np.uint8)  # compresses ~50x
        images = [[image_record("input", np.roll(gradient, i, axis=0))] for i in range(start, start + count)]
        return table.set_column(table.schema.get_field_index("images"), "images", pa.array(images, table.schema.field("images").type))

    with ShardWriter(str(tmp_path), "p", target_bytes=300_000, row_group_bytes=400_000) as writer:
        for start in range(0, 400, 20):
            writer.write(smooth_rows(start, 20))
    on_disk = [s.bytes for s in writer.shards]
    in_memory_per_row = smooth_rows(0, 1).nbytes
    assert in_memory_per_row * 400 > 10 * sum(on_disk)  # the images did compress
    assert len(on_disk) <= 1 + sum(on_disk) // 300_000  # so few shards, each filled up to the target
    assert all(size >= 300_000 for size in on_disk[:-1])


def test_row_groups_end_near_their_budget_whatever_the_batch_sizes(tmp_path):
    """Batches of ~0.9 of the budget used to make groups of up to ~1.8x it (a buffer just
    under the budget plus a whole chunk); now a group ends within one row of it."""
    budget = 1_000_000
    per_row = rows(0, 1, size=256).nbytes  # ~66 KB: one 256x256 image and the row's strings
    with ShardWriter(str(tmp_path), "p", target_bytes=10**9, row_group_bytes=budget) as writer:
        for start in range(0, 140, 14):  # 10 batches of 14 rows, ~0.92 MB each
            writer.write(rows(start, 14, size=256))
    (shard,) = writer.shards
    meta = pq.ParquetFile(shard.path).metadata
    groups = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
    assert sum(groups) == 140
    assert max(groups) * per_row <= budget + per_row  # never more than one row over
    assert all(g * per_row >= budget - per_row for g in groups[:-1])  # and none cut short
