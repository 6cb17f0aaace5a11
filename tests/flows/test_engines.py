"""The Ray actor-pool engine gives the same rows and rejects as the local engine."""

from __future__ import annotations

import functools
import os

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from curation.stages import Reject, Resources, Stage, StageOutput, run_stages_locally
from flows.engines import run_stage_ray


class SquareEvenStage(Stage):
    """Squares even numbers, rejects odd ones, and counts its setups (once per worker)."""

    name = "square_even"
    resources = Resources(cpus=1)
    batch_size = 7

    def __init__(self) -> None:
        self.setups = 0

    def setup(self) -> None:
        self.setups += 1
        self.pid = os.getpid()

    def process(self, batch: pa.Table) -> StageOutput:
        x = batch.column("x")
        even = pc.equal(pc.bit_wise_and(x, 1), 0)
        kept = batch.filter(even)
        rejects = [
            Reject(f"item/{v}", self.name, "odd", f"value {v} is odd; expected even")
            for v in batch.filter(pc.invert(even)).column("x").to_pylist()
        ]
        out = pa.table({"x": pc.multiply(kept.column("x"), kept.column("x")), "pid": [self.pid] * kept.num_rows})
        return StageOutput(out, rejects)


@pytest.fixture(scope="module")
def ray_local():
    import ray

    from flows.engines import ensure_ray

    ensure_ray(num_cpus=2)
    yield
    ray.shutdown()


def test_ray_pool_matches_local_run(ray_local):
    table = pa.table({"x": list(range(50))})
    local = run_stages_locally([SquareEvenStage()], table)
    remote = run_stage_ray(SquareEvenStage(), table, num_actors=2)
    assert remote.table.column("x").to_pylist() == local.table.column("x").to_pylist()
    assert [r.source_uri for r in remote.rejects] == [r.source_uri for r in local.rejects]
    assert len(remote.rejects) == 25
    # two actors, each set up once, both did work
    assert len(set(remote.table.column("pid").to_pylist())) == 2


def test_asking_a_running_local_ray_for_other_cpus_warns(ray_local, caplog):
    """Ray keeps the CPU count it started with for the life of the process: a later build
    asking for another count must hear so instead of silently running on the old one."""
    from flows.engines import ensure_ray

    with caplog.at_level("WARNING", logger="flows.engines"):
        ensure_ray(num_cpus=2)
        assert not caplog.records  # the same count: nothing to say
        ensure_ray(num_cpus=1)
    assert "already runs in this process with 2 CPUs; the 1 asked for" in caplog.text


def test_ray_workers_are_warmed_in_distinct_processes(ray_local):
    import ray

    from flows.engines import warm_up_ray_workers

    assert warm_up_ray_workers(2) == 2  # one per CPU, each its own worker process
    assert warm_up_ray_workers(8) == 2  # never more than the cluster's CPUs (no barrier deadlock)

    @ray.remote(num_cpus=1)
    def imported() -> bool:
        import sys

        return {"flows.prefect_flows", "converters.stage"} <= set(sys.modules)

    assert all(ray.get([imported.remote() for _ in range(4)]))  # later tasks land on warmed workers


def test_dask_workers_import_the_pipeline_before_tasks_and_keep_glibc_malloc_tuning():
    from distributed import Client, LocalCluster

    from flows.build import BuildRequest
    from flows.engines import warm_up_dask_workers
    from flows.prefect_flows import local_dask_worker_environment

    request = BuildRequest(recipe="convert", sources=[], dataset="d", executor="dask")
    with local_dask_worker_environment(request), LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster, Client(cluster) as client:
        trim = client.run(lambda: __import__("os").environ.get("MALLOC_TRIM_THRESHOLD_"))
        assert list(trim.values()) == [None, None]  # distributed's default (65536) is not set
        assert warm_up_dask_workers(client) == 2
        imported = client.run(lambda: sorted(m for m in __import__("sys").modules if m.startswith(("flows.", "converters."))))
        for modules in imported.values():
            assert {"flows.prefect_flows", "converters.stage", "flows.build"} <= set(modules)


def test_ray_warm_up_barrier_gives_up_after_its_deadline(ray_local):
    """On a busy cluster not every warm-up task starts: those that did must not hold
    their CPUs waiting for the others."""
    import time

    import ray

    from flows.engines import _ray_barrier_class

    barrier = _ray_barrier_class().remote(3, 0.5)
    ray.get(barrier.arrive.remote())
    started = time.monotonic()
    ray.get(barrier.wait_all.remote(), timeout=30)  # two parties never arrive
    assert 0.3 < time.monotonic() - started < 10


def _examine_jobs() -> list[list[tuple]]:
    """Discovery's work on real files, in two chunks: CT slices (DICOM facts and hash) and
    radiographs (hash only)."""
    from converters.discover import _File
    from tests.helpers import CT_DIR, XRAY_DIR

    ct = [(_File(str(p), p.name, p.stat().st_size), "dicom") for p in sorted(CT_DIR.glob("*.dcm"))]
    xr = [(_File(str(p), p.name, p.stat().st_size), "raster") for p in sorted(XRAY_DIR.glob("*.png"))]
    return [ct, xr]


def _s3_settings(_: list[int]) -> dict:
    import fsspec

    return dict(fsspec.config.conf.get("s3", {}).get("config_kwargs", {}))


def _pid_unless_off(driver: int, _: list[int]) -> int:
    if os.getpid() != driver:
        raise RuntimeError("fails on every cluster worker")
    return os.getpid()


def test_discovery_chunks_run_on_a_dask_cluster_and_on_ray_with_the_local_results(ray_local):
    """``cluster_map``: discovery's reading, hashing and header checks on the cluster's
    workers give what this process computes, in order."""
    import types

    from distributed import Client, LocalCluster

    from converters.discover import examine_files
    from flows.engines import cluster_map
    from flows.storage import s3_config_kwargs

    chunks = _examine_jobs()
    local = [examine_files(chunk) for chunk in chunks]
    assert local[0][0].facts is not None and local[1][0].digest  # DICOM facts and a plain hash
    here = functools.partial(_pid_unless_off, os.getpid())
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, Client(
        cluster
    ) as client:
        dask = types.SimpleNamespace(client=client)
        assert cluster_map("dask", dask, examine_files, chunks) == local
        # the workers read object storage with this process's retries and timeouts
        assert cluster_map("dask", dask, _s3_settings, [[0], [1]]) == [s3_config_kwargs()] * 2
        # a chunk whose cluster task fails is read in this process instead
        assert cluster_map("dask", dask, here, [[0], [1]]) == [os.getpid()] * 2
    assert cluster_map("ray", None, examine_files, chunks) == local
    assert cluster_map("ray", None, _s3_settings, [[0]]) == [s3_config_kwargs()]
    assert cluster_map("ray", None, here, [[0]]) == [os.getpid()]
    with pytest.raises(ValueError, match="no cluster map for executor 'local'"):
        cluster_map("local", None, examine_files, chunks)


def test_a_ray_gpu_pool_starts_local_ray_with_the_builds_workers(monkeypatch):
    """The GPU pool may be the first to start Ray (a rebuild whose discovery read nothing
    on the cluster): it must size a local Ray as the task runner would, ``--workers``,
    not every core of the machine."""
    import dataclasses

    import flows.engines
    from curation.build import BuildPlan
    from flows.build import BuildRequest
    from flows.prefect_flows import gpu_pool_for

    asked: list[tuple[str | None, int | None]] = []

    class Stop(Exception):
        pass

    def recording(address=None, *, num_cpus=None):
        asked.append((address, num_cpus))
        raise Stop

    monkeypatch.setattr(flows.engines, "ensure_ray", recording)
    plan = BuildPlan("d", "medq", items=[], stage_factory=list, fingerprint="f", gpu_stage_factory=list)
    request = BuildRequest(recipe="medq", sources=[], dataset="d", executor="ray", workers=2)
    with pytest.raises(Stop):
        gpu_pool_for(request, plan)
    with pytest.raises(Stop):
        gpu_pool_for(dataclasses.replace(request, ray_address="ray://head:10001"), plan)
    assert asked == [(None, 2), ("ray://head:10001", 2)]
