"""The CLI's progress bars: each partition counted once, and safe to ship to workers."""

from __future__ import annotations

import pickle

import cloudpickle

from curation.partitions import PartitionResult
from flows.progress import BuildProgress


def _result(key: str, items: int, cached: bool) -> PartitionResult:
    return PartitionResult(key=key, shards=[], rows=items, items=items, rejects=[], converted_items=items,
                           seconds=0.0, cached=cached)


def _drawn_bars() -> BuildProgress:
    bars = BuildProgress("ds", enabled=True)
    bars.__enter__()
    bars.start_partitions(items=10, partitions=3)
    return bars


def test_a_partition_reported_twice_is_counted_once():
    bars = _drawn_bars()
    try:
        bars.partition_done(_result("a", 4, False))
        bars.partition_done(_result("a", 4, False))  # a retried batch reports it again
        bars.partition_done(_result("b", 3, True))
        assert (bars.done, bars.reused) == (2, 1)
        items = next(t for t in bars._progress.tasks if t.description.endswith("items"))
        assert items.completed == 7
    finally:
        bars.__exit__(None, None, None)


def test_drawn_bars_travel_to_a_worker_as_a_copy_that_draws_nothing():
    """Prefect serializes the flow (whose function holds the bars) with every Dask or Ray
    task; live bars hold a display thread and locks, which used to make every
    ``--executor dask`` build from a terminal fail to submit its first task."""
    bars = _drawn_bars()
    try:
        bars.partition_done(_result("a", 4, True))
        for dumps in (pickle.dumps, cloudpickle.dumps):
            copy = pickle.loads(dumps(bars))
            assert copy.label == "ds" and not copy.enabled and copy._progress is None
            assert (copy.done, copy.reused) == (1, 1)
            copy.partition_done(_result("b", 3, False))  # usable, draws nothing
            assert copy.done == 2 and bars.done == 1
    finally:
        bars.__exit__(None, None, None)
