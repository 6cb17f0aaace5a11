"""The local executor's worker processes: same shards as one process, the rule that picks
how many, and finished partitions answered before any task is made."""

from __future__ import annotations

import os
import subprocess
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from catalogs import open_catalog
from curation.partitions import Partition
from flows.build import (
    LOCAL_PROCESSES_MIN_BYTES,
    BuildRequest,
    leaves_a_core_idle,
    local_processes,
    prepare,
    reuse_finished,
    run_build_inline,
    settings_for,
)
from flows.engines import shutdown_local_process_pool
from tests.flows.test_incremental_resume import write_images


@pytest.fixture(autouse=True)
def _stop_pool():
    yield
    shutdown_local_process_pool()


def run_script(script: Path) -> subprocess.CompletedProcess[str]:
    """``script`` in a fresh interpreter that imports this checkout."""
    root = Path(__file__).resolve().parents[2]
    return subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": str(root), "GX_ANALYTICS_ENABLED": "false"},
    )


def _build(source: Path, work: Path, workers: int | None):
    return run_build_inline(
        BuildRequest(
            recipe="convert", sources=[str(source)], dataset="procs", workdir=str(work), workers=workers,
            options={"partition_items": 4, "modality": "XR"},
        )
    )


def _ids_per_shard(shards: list[str]) -> list[list[str]]:
    return sorted(sorted(pq.read_table(s, columns=["sample_id"]).column(0).to_pylist()) for s in shards)


def _samples(work: Path):
    table = open_catalog(workdir=str(work)).to_arrow("procs", columns=["sample_id", "images"])
    return table.sort_by("sample_id")


def test_worker_processes_write_the_same_samples_and_shards_as_one_process(tmp_path):
    write_images(tmp_path / "src", 24, size=48)
    alone = _build(tmp_path / "src", tmp_path / "one", workers=1)
    pooled = _build(tmp_path / "src", tmp_path / "two", workers=2)

    me = f":{os.getpid()}"
    assert alone.summary["workers"] and all(w.endswith(me) for w in alone.summary["workers"])
    assert len(pooled.summary["workers"]) == 2 and not any(w.endswith(me) for w in pooled.summary["workers"])
    assert pooled.summary["partitions"] == alone.summary["partitions"] >= 4
    # the gate read back and measured the new shards in the same workers
    assert pooled.summary["gate"]["passed"] and pooled.summary["gate"]["shards_validated"] == len(pooled.shards)
    # the same partitions, cut the same way (their names differ: a partition's key includes its warehouse)
    assert _ids_per_shard(pooled.shards) == _ids_per_shard(alone.shards)
    one, two = _samples(tmp_path / "one"), _samples(tmp_path / "two")
    assert one.num_rows == two.num_rows == 24
    assert one.column("sample_id").equals(two.column("sample_id"))
    data_one = pc.list_flatten(one.column("images")).combine_chunks().field("data")
    data_two = pc.list_flatten(two.column("images")).combine_chunks().field("data")
    assert data_one.equals(data_two)  # byte for byte


def test_finished_partitions_are_answered_before_any_task(tmp_path):
    write_images(tmp_path / "src", 16, size=32)
    first = _build(tmp_path / "src", tmp_path / "w", workers=1)
    request = BuildRequest(recipe="convert", sources=[str(tmp_path / "src")], dataset="procs", workdir=str(tmp_path / "w"),
                           options={"partition_items": 4, "modality": "XR"})
    plan, partitions = prepare(request, settings_for(request), "check")
    finished, pending = reuse_finished(partitions, str(tmp_path / "w"))
    assert pending == [] and len(finished) == first.summary["partitions"]
    assert all(r.cached for r in finished)
    (tmp_path / "src" / "img0003.png").unlink()
    plan, partitions = prepare(request, settings_for(request), "check")
    finished, pending = reuse_finished(partitions, str(tmp_path / "w"))
    assert len(pending) == 1 and all("img0003.png" not in i["key"] for i in pending[0].items)


def test_each_warm_up_starts_once_however_many_threads_ask():
    import threading

    from flows.build import _first_call

    answers: list[bool] = []
    barrier = threading.Barrier(8)

    def ask() -> None:
        barrier.wait()
        answers.append(_first_call("test-warm-up"))

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(answers) == [False] * 7 + [True]


def test_pending_partitions_are_handed_out_largest_first(tmp_path):
    """LPT order: a large partition never starts last while the other workers idle
    (ties keep key order)."""
    sizes = [3, 9, 1, 9, 4]
    partitions = [Partition(i, f"k{i}", [{"key": f"f{i}-{j}", "size_bytes": 100} for j in range(n)]) for i, n in enumerate(sizes)]
    finished, pending = reuse_finished(partitions, str(tmp_path / "w"))
    assert finished == [] and [p.index for p in pending] == [1, 3, 4, 0, 2]


def _partitions(count: int, item_bytes: int) -> list[Partition]:
    return [Partition(i, f"k{i}", [{"key": f"f{i}", "size_bytes": item_bytes}]) for i in range(count)]


def test_how_many_local_processes():
    cpu = types.SimpleNamespace(gpu_stage_factory=None)
    gpu = types.SimpleNamespace(gpu_stage_factory=lambda: [])
    big = LOCAL_PROCESSES_MIN_BYTES
    local = BuildRequest(recipe="convert", sources=[], dataset="d")
    asked = BuildRequest(recipe="convert", sources=[], dataset="d", workers=3)
    assert local_processes(local, cpu, _partitions(8, big)) == min(8, os.cpu_count() or 1)  # type: ignore[arg-type]
    assert local_processes(local, cpu, _partitions(8, 1024)) == 1  # too little work to start workers
    assert local_processes(local, cpu, _partitions(1, big)) == 1  # one partition: nothing to share
    assert local_processes(asked, cpu, _partitions(8, 1024)) == 3  # asked for: honoured
    assert local_processes(asked, cpu, _partitions(2, 1024)) == 2  # never more than partitions
    assert local_processes(asked, gpu, _partitions(8, big)) == 1  # GPU stages stay in this process
    dask = BuildRequest(recipe="convert", sources=[], dataset="d", executor="dask", workers=2)
    assert local_processes(dask, cpu, _partitions(8, big)) == 1  # Dask has its own workers


def test_the_gate_is_imported_during_conversion_only_on_a_core_left_idle(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 4)

    def req(executor: str = "local", workers: int | None = None, **kw: str) -> BuildRequest:
        return BuildRequest(recipe="convert", sources=[], dataset="d", executor=executor, workers=workers, **kw)

    assert leaves_a_core_idle(req(), 2)  # 2 workers of 4 cores
    assert not leaves_a_core_idle(req(), 4)  # every core converts
    assert not leaves_a_core_idle(req(), 1)  # this process converts itself
    assert leaves_a_core_idle(req("dask"), 1)  # LocalCluster's default 2 workers
    assert not leaves_a_core_idle(req("dask", 4), 1)
    assert not leaves_a_core_idle(req("ray"), 1)  # local Ray takes every core by default
    assert leaves_a_core_idle(req("ray", 3), 1)
    assert leaves_a_core_idle(req("dask", 64, dask_address="tcp://scheduler:8786"), 1)  # remote cluster
    assert leaves_a_core_idle(req("ray", 64, ray_address="ray://head:10001"), 1)


@pytest.fixture
def run_build_without_prefect(monkeypatch, tmp_path):
    """``run_build`` with Prefect's temporary server and the flow replaced by fakes that
    record into ``events``: ``(run(executor, api_url, flow), events)``; ``flow(request,
    bars, heartbeat_seconds=...)`` stands in for the flow, ``"server start"`` is recorded when a server starts."""
    from prefect.server.api import server as prefect_server

    import flows.build as build
    import flows.prefect_flows as prefect_flows
    import flows.settings as settings

    events: list[Any] = []

    class Server:
        api_url = "http://127.0.0.1:1/api"

        def start(self) -> None:
            events.append("server start")

        def stop(self) -> None:
            pass

    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect"))
    monkeypatch.setattr(settings, "_TEMPORARY_SERVER", None)
    monkeypatch.setattr(prefect_server, "SubprocessASGIServer", Server)
    monkeypatch.setattr(build, "warm_up_build", lambda: events.append("imports"))

    def run(executor: str, api_url: str, flow: Callable[..., Any]) -> None:
        monkeypatch.setenv("PREFECT_API_URL", api_url)  # restored after the test, also when set by the build
        monkeypatch.setattr(prefect_flows, "build_flow", flow)
        build.run_build(
            BuildRequest(recipe="convert", sources=[], dataset="d", workdir=str(tmp_path), executor=executor),
            progress=False,
        )

    return run, events


@pytest.mark.parametrize(
    "executor, api_url, cores, expected",
    [
        ("local", "", 2, ["imports", "flow"]),  # Prefect starts its temporary server in the flow
        ("dask", "", 2, ["imports", "server start", "flow"]),  # started here for the workers
        ("local", "http://prefect:4200/api", 2, ["flow"]),  # a running server: no wait to fill
        ("dask", "http://prefect:4200/api", 2, ["flow"]),
        ("local", "", 1, ["flow"]),  # one core: the import would only delay the server
    ],
)
def test_the_build_imports_its_libraries_while_a_temporary_prefect_server_starts(
    monkeypatch, run_build_without_prefect, executor, api_url, cores, expected
):
    run, events = run_build_without_prefect
    monkeypatch.setattr(os, "cpu_count", lambda: cores)
    run(executor, api_url, lambda request, bars, **_: events.append("flow"))
    assert events == expected


def test_a_script_without_the_main_guard_still_builds_in_one_process(tmp_path):
    """Spawned workers re-import the main script; without the guard they fail to start.
    The build must notice, warn, and finish in its own process."""
    write_images(tmp_path / "src", 12, size=32)
    script = tmp_path / "unguarded.py"
    script.write_text(
        "from flows.build import BuildRequest, run_build_inline\n"
        f"out = run_build_inline(BuildRequest(recipe='convert', sources=[{str(tmp_path / 'src')!r}], dataset='procs',\n"
        f"    workdir={str(tmp_path / 'w')!r}, workers=2, options={{'partition_items': 4, 'modality': 'XR'}}))\n"
        "print('SAMPLES', out.summary['samples_written'], len(out.summary['workers']))\n"
    )
    done = run_script(script)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "SAMPLES 12 1" in done.stdout  # every sample, all converted in the one process
    assert "partitions run in this process from now on" in done.stderr


@pytest.mark.parametrize(
    "executor, api_url, beats",
    [
        ("local", "", False),  # Prefect's own temporary server: it dies with this process
        ("dask", "", False),  # the temporary server ensure_prefect_api starts for the workers
        ("local", "http://prefect:4200/api", True),  # a server that outlives us: heartbeats as configured
    ],
)
def test_flow_heartbeats_only_where_a_server_outlives_the_build(run_build_without_prefect, executor, api_url, beats):
    """Prefect's own heartbeat thread is always off in the build's flow (it delays the
    run's end); ours beats at the configured frequency where a server watches."""
    from prefect.settings import get_current_settings

    run, _ = run_build_without_prefect
    seen: list[tuple[int | None, float | None]] = []
    run(
        executor,
        api_url,
        lambda request, bars, heartbeat_seconds: seen.append((get_current_settings().flows.heartbeat_frequency, heartbeat_seconds)),
    )
    configured = get_current_settings().flows.heartbeat_frequency
    assert configured is not None  # Prefect's default (180 s) outside the build
    assert seen == [(None, float(configured) if beats else None)]


def test_the_warm_up_names_modules_that_exist():
    """The warm-up imports in a daemon thread, where a misspelt module would only print a
    traceback: every name it imports must resolve."""
    import importlib.util

    from flows.build import _BUILD_MODULES
    from flows.engines import _WORKER_PRELOAD

    missing = [m for m in (*_WORKER_PRELOAD, *_BUILD_MODULES) if importlib.util.find_spec(m) is None]
    assert not missing


def test_local_workers_start_with_the_pipeline_but_without_the_catalog(tmp_path):
    """The fork server preloads what partitions, discovery and the gate's measuring run;
    the catalog (pyiceberg, pyarrow.dataset and the pandas it imports) belongs to the
    build process: ~0.3 s less before the first worker takes a task. A fresh interpreter:
    a process has one fork server, and its preload is fixed by whoever starts it first."""
    names = ("curation.build", "converters.stage", "converters.discover", "quality_checks.gate",
             "catalogs.catalog", "flows.build", "pyiceberg", "pandas", "pyarrow.dataset")
    script = tmp_path / "probe.py"
    script.write_text(
        "import functools\n"
        "from flows.engines import local_pool_map\n"
        "if __name__ == '__main__':\n"
        f"    probe = functools.partial(eval, \"[m for m in {names!r} if m in __import__('sys').modules]\")\n"
        "    for loaded in local_pool_map(2, probe, [{}, {}]):\n"
        "        print('LOADED', ','.join(loaded))\n"
    )
    done = run_script(script)
    assert done.returncode == 0, done.stderr[-2000:]
    preloaded = "curation.build,converters.stage,converters.discover,quality_checks.gate"
    assert done.stdout.splitlines() == [f"LOADED {preloaded}"] * 2


def test_long_lived_objects_are_frozen_but_garbage_is_collected_first(tmp_path):
    """Before a build, what lives as long as the process goes to the garbage collector's
    permanent generation (later full collections skip it); an unreachable cycle must be
    collected, never frozen (that would leak it for the life of the process)."""
    import gc
    import weakref

    from flows.build import freeze_long_lived_objects

    class Node:
        pass

    kept, lost = Node(), Node()
    lost.self = lost  # a cycle nothing refers to: only the collector frees it
    gone = weakref.ref(lost)
    del lost
    try:
        freeze_long_lived_objects()
        assert gone() is None
        assert gc.get_freeze_count() > 0
        assert not any(o is kept for o in gc.get_objects())  # frozen objects are not tracked for collection
        write_images(tmp_path / "src", 4, size=32)
        later = Node()
        run_build_inline(BuildRequest(recipe="convert", sources=[str(tmp_path / "src")], dataset="frozen", workdir=str(tmp_path / "w"), workers=1))
        assert not any(o is later for o in gc.get_objects())  # each build freezes what outlived the one before
    finally:
        gc.unfreeze()


def test_objects_frozen_by_a_build_are_still_finalized_at_exit(tmp_path):
    """The interpreter's last collections skip frozen objects; the process must give them
    back first, or their finalizers never run (DuckDB's bindings report leaks at exit)."""
    script = tmp_path / "finalize.py"
    script.write_text(
        "from flows.build import freeze_long_lived_objects\n"
        "class Resource:\n"
        "    def __del__(self):\n"
        "        print('finalized', flush=True)\n"
        "held = Resource()\n"
        "held.cycle = held  # freed only by the collector at exit\n"
        "freeze_long_lived_objects()\n"
    )
    done = run_script(script)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "finalized"
