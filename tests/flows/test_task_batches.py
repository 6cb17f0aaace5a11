"""Partition tasks carry batches: at most TASKS_PER_SLOT task runs per engine slot, every
partition in exactly one, of about equal input; a retried batch reuses what its failed
attempt finished; a flow build makes that many Prefect task runs and the same samples."""

from __future__ import annotations

import functools
import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from catalogs import open_catalog
from curation.partitions import Partition, PartitionResult
from flows.build import (
    TASKS_PER_SLOT,
    BuildRequest,
    build_partitions_here_or_in,
    prepare,
    reuse_finished,
    run_build,
    settings_for,
    task_batches,
)
from flows.progress import BuildProgress
from tests.flows.test_incremental_resume import write_images


def _partition(index: int, items: int, item_bytes: int = 1000) -> Partition:
    return Partition(index, f"k{index:03d}", [{"key": f"p{index}-{j}", "size_bytes": item_bytes} for j in range(items)])


def test_batches_hold_every_partition_once_in_at_most_four_per_slot_of_about_equal_input(tmp_path):
    sizes = [1 + (i * 7) % 23 for i in range(40)]  # 1..23 items: content-defined cuts are uneven
    _, pending = reuse_finished([_partition(i, n) for i, n in enumerate(sizes)], str(tmp_path))
    batches = task_batches(pending, slots=2)

    assert len(batches) == 2 * TASKS_PER_SLOT == 8
    assert sorted(p.index for b in batches for p in b) == list(range(40))
    loads = [sum(p.input_bytes for p in b) for b in batches]
    assert max(loads) - min(loads) <= max(sizes) * 1000  # LPT: within one partition of each other
    assert loads == sorted(loads, reverse=True)  # the heaviest batch is submitted first
    assert any(b[0].index == pending[0].index for b in batches)  # the largest partition starts a batch


def test_the_heaviest_batch_comes_first_even_when_the_largest_partition_is_not_in_it():
    pending = [_partition(i, n) for i, n in enumerate([10, 6, 6, 6, 5])]
    batches = task_batches(pending, slots=1)
    loads = [sum(p.input_bytes for p in b) for b in batches]
    assert loads == [11_000, 10_000, 6_000, 6_000]
    assert [[p.index for p in b] for b in batches][:2] == [[1, 4], [0]]


def test_few_partitions_get_a_task_each_and_one_slot_gets_four():
    pending = [_partition(i, 3) for i in range(5)]
    assert [[p.index for p in b] for b in task_batches(pending[:3], slots=2)] == [[0], [1], [2]]
    assert len(task_batches(pending, slots=1)) == TASKS_PER_SLOT
    assert len(task_batches(pending, slots=0)) == TASKS_PER_SLOT  # an engine that reports no slots still runs
    assert task_batches([], slots=4) == []


def test_partitions_without_sizes_are_spread_by_count():
    pending = [Partition(i, f"k{i}", [{"key": f"f{i}"}]) for i in range(10)]
    assert sorted(len(b) for b in task_batches(pending, slots=1)) == [2, 2, 3, 3]


def test_a_partition_without_sizes_weighs_as_its_items_would():
    """Unsized partitions among sized ones count their items at the others' average size,
    so they do not all pile into the lightest batch."""
    sized = [_partition(i, n, item_bytes=1000) for i, n in enumerate([10, 9, 8, 7])]
    unsized = [Partition(4 + i, f"u{i}", [{"key": f"u{i}-{j}"} for j in range(6)]) for i in range(6)]
    batches = task_batches(sized + unsized, slots=1)
    assert sorted(sum(1 for p in b if p.index >= 4) for b in batches) == [1, 1, 2, 2]


def test_a_retried_batch_answers_the_partitions_its_failed_attempt_finished(tmp_path, monkeypatch):
    write_images(tmp_path / "src", 12, size=32)
    request = BuildRequest(recipe="convert", sources=[str(tmp_path / "src")], dataset="retry", workdir=str(tmp_path / "w"),
                           options={"partition_items": 2, "modality": "XR"})
    settings = settings_for(request)
    plan, partitions = prepare(request, settings, "retry-run")
    batch = partitions[:3]
    assert len(batch) == 3

    import curation.build as curation_build

    real = curation_build.run_partition
    converted: list[str] = []

    def fails_on_the_third(partition, stages, **kwargs):
        if partition.key == batch[2].key and not converted.count(partition.key):
            converted.append(partition.key)
            raise OSError(f"injected: object store hiccup on {partition.key}")
        hit = kwargs["cache"].get(partition.key)
        if hit is None:
            converted.append(partition.key)
        return real(partition, stages, **kwargs)

    monkeypatch.setattr(curation_build, "run_partition", fails_on_the_third)
    shard_dir = settings.catalog().data_dir("retry")
    with pytest.raises(OSError, match="injected"):
        build_partitions_here_or_in(1, plan, batch, shard_dir, settings.workdir)
    assert converted == [batch[0].key, batch[1].key, batch[2].key]

    again = build_partitions_here_or_in(1, plan, batch, shard_dir, settings.workdir)  # Prefect's retry
    assert converted == [batch[0].key, batch[1].key, batch[2].key, batch[2].key]  # only the failed one is redone
    assert [r.key for r in again] == [p.key for p in batch]
    assert [r.cached for r in again] == [False, False, False]  # converted in this run, not reused
    assert again[0].stages["convert"]["rows_in"] == len(batch[0].items)  # its manifest's timings
    assert all(r.shards and all(Path(s).exists() for s in r.shards) for r in again)


def _task_runs_of_latest(flow_name: str, expected: int) -> list[str]:
    """Names of the task runs the Prefect server recorded for the latest run of
    ``flow_name`` (the server records them from events, a moment after the flow ends)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowFilter,
        FlowFilterName,
        FlowRunFilter,
        FlowRunFilterId,
    )
    from prefect.client.schemas.sorting import FlowRunSort

    deadline = time.monotonic() + 30
    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name])), sort=FlowRunSort.EXPECTED_START_TIME_DESC, limit=1
        )[0]
        while True:
            runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run.id])))
            if len(runs) >= expected or time.monotonic() > deadline:
                return [r.name for r in runs if r.state is not None and r.state.is_completed()]
            time.sleep(0.2)


def test_a_flow_build_runs_its_partitions_in_four_task_runs_per_slot(tmp_path, monkeypatch):
    import flows.prefect_flows as prefect_flows

    write_images(tmp_path / "src", 24, size=32)
    carried: list[list[str]] = []
    real = prefect_flows.build_partitions_here_or_in

    def recording(processes, plan, partitions, *args, **kwargs):
        carried.append([p.key for p in partitions])
        return real(processes, plan, partitions, *args, **kwargs)

    monkeypatch.setattr(prefect_flows, "build_partitions_here_or_in", recording)
    request = BuildRequest(recipe="convert", sources=[str(tmp_path / "src")], dataset="batched", workdir=str(tmp_path / "w"),
                           workers=1, options={"partition_items": 2, "modality": "XR"})
    outcome = run_build(request, progress=False)

    partitions = outcome.summary["partitions"]
    assert partitions >= 8  # 24 images cut about every 2
    assert len(carried) == TASKS_PER_SLOT  # one slot: one task thread, one process
    keys = [k for batch in carried for k in batch]
    assert len(keys) == len(set(keys)) == partitions
    assert outcome.summary["samples_written"] == 24 and outcome.summary["partitions_reused"] == 0
    assert open_catalog(workdir=str(tmp_path / "w")).to_arrow("batched", columns=["sample_id"]).num_rows == 24
    record = json.loads(next((tmp_path / "w" / "runs").glob("*/summary.json")).read_text())
    assert record["stages"]["convert"]["rows_in"] == 24  # every partition's stage timings were summed
    names = _task_runs_of_latest("medcurate-build-convert", TASKS_PER_SLOT)
    assert len(names) == TASKS_PER_SLOT and all(n.startswith("build-partitions") for n in names)


class _DaskClient:
    def __init__(self, threads: dict[str, int]):
        self.threads = threads

    def nthreads(self) -> dict[str, int]:
        return self.threads


class _DaskRunner:
    def __init__(self, threads: dict[str, int]):
        self.client = _DaskClient(threads)


def test_slots_are_the_engines_parallelism_or_the_workers_asked_for_when_more(monkeypatch):
    from flows.prefect_flows import task_slots

    def req(executor: str, workers: int | None = None) -> BuildRequest:
        return BuildRequest(recipe="convert", sources=[], dataset="d", executor=executor, workers=workers)

    assert task_slots(req("local"), None, processes=2) == 2
    assert task_slots(req("local", workers=3), None, processes=2) == 3  # task threads = max(processes, workers)
    two_workers = _DaskRunner({"tcp://a:1": 1, "tcp://b:1": 1})
    assert task_slots(req("dask"), two_workers, processes=1) == 2
    assert task_slots(req("dask"), _DaskRunner({"tcp://a:1": 4, "tcp://b:1": 4}), processes=1) == 8  # threads, not workers
    # an autoscaling scheduler with no workers yet: --workers says what it will have
    assert task_slots(req("dask", workers=16), _DaskRunner({}), processes=1) == 16
    assert task_slots(req("dask"), _DaskRunner({}), processes=1) == 1

    import ray

    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 6.0, "GPU": 1.0})
    assert task_slots(req("ray"), None, processes=1) == 6
    assert task_slots(req("ray", workers=12), None, processes=1) == 12


class RecordingProgress(BuildProgress):
    """Progress bars that draw nothing and record every report: (key, items, cached)."""

    def __init__(self) -> None:
        super().__init__("test", enabled=False)
        self.reports: list[tuple[str | None, int, bool]] = []
        self.heard = threading.Event()

    def partition_done(self, result: PartitionResult) -> None:
        super().partition_done(result)
        self.reports.append((result.key, result.items, result.cached))
        self.heard.set()


def _flow_build(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, build_partition: Any, bars: BuildProgress) -> Any:
    """A local flow build of 24 images cut about every 2 (one slot: 4 batches of ~3), with
    ``build_partition(real, plan, partition, *args, **kwargs)`` standing in for the real one."""
    import flows.build as flows_build
    import flows.prefect_flows as prefect_flows

    real = flows_build.build_partition
    monkeypatch.setattr(flows_build, "build_partition", functools.partial(build_partition, real))
    write_images(tmp_path / "src", 24, size=32)
    request = BuildRequest(recipe="convert", sources=[str(tmp_path / "src")], dataset="flowed",
                           workdir=str(tmp_path / "w"), workers=1, options={"partition_items": 2, "modality": "XR"})
    return prefect_flows.build_flow(request, bars)


def test_local_tasks_report_each_partition_as_it_finishes_not_per_batch(tmp_path, monkeypatch):
    """With three partitions per batch, the second of a batch waits until the progress
    bars have heard of the first: a batch that reported only at its end would stall here."""
    bars = RecordingProgress()
    started: list[bool] = []

    def waits_for_the_first_report(real, plan, partition, *args, **kwargs):
        if started:  # every partition after the first: the first must have been reported
            assert bars.heard.wait(timeout=30), "no progress until the batch ended"
        started.append(True)
        return real(plan, partition, *args, **kwargs)

    outcome = _flow_build(tmp_path, monkeypatch, waits_for_the_first_report, bars)
    assert len(bars.reports) == outcome.summary["partitions"] >= 2 * TASKS_PER_SLOT
    assert sum(items for _, items, _ in bars.reports) == 24 and bars.reused == 0


def test_a_flow_build_whose_batch_is_retried_counts_each_partition_once_and_none_as_reused(tmp_path, monkeypatch):
    """One partition fails once (an object-store hiccup); Prefect retries its batch, which
    resumes after the partitions its first attempt finished. The run's summary and the
    progress bars must read as if nothing had failed."""
    bars = RecordingProgress()
    calls: list[str] = []

    def one_hiccup(real, plan, partition, *args, **kwargs):
        calls.append(partition.key)
        if len(calls) == 2:  # the second partition of the first batch, on its first attempt
            raise OSError("injected: 503 Slow Down from the object store")
        return real(plan, partition, *args, **kwargs)

    summary = _flow_build(tmp_path, monkeypatch, one_hiccup, bars).summary
    assert summary["partitions_reused"] == 0 and bars.reused == 0
    assert len(calls) == summary["partitions"] + 2  # the failed one again, and the first of its batch from its manifest
    keys = [key for key, _, _ in bars.reports]
    assert len(set(keys)) == summary["partitions"] == bars.done  # counted once each
    assert len(keys) == summary["partitions"] + 1  # the first of the batch, reported by both attempts
    assert summary["stages"]["convert"]["rows_in"] == 24 and summary["samples_written"] == 24
