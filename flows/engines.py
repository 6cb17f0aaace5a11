"""Engine adapters: run a plain :class:`~curation.stages.Stage` on Ray actor pools.

Stages know nothing of Ray; this module does. A Ray actor holds one stage instance,
calls ``setup()`` once when it starts (the model or kernel is loaded once per worker),
and then processes the batches it is handed. Actors are sized from the stage's
declared ``resources`` (``num_gpus`` only where the cluster has GPUs), and the pool
keeps every actor busy with ``ray.util.ActorPool.map`` (ordered, so the result is the
same as a local run).

Ray starts in-process by default (``ray.init()`` with this machine's cores) and joins
an existing cluster when given an address (``ray://`` or ``host:port``).
"""

from __future__ import annotations

import functools
import logging
import operator
import os
import sys
import threading
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import pyarrow as pa

from curation.partitions import StageTiming, apply_stages
from curation.stages import Reject, Stage, StageOutput, concat_or_empty, iter_batches

log = logging.getLogger(__name__)


def ensure_ray(address: str | None = None, *, num_cpus: int | None = None) -> None:
    """Start (or join) Ray once per process; a no-op when already initialised."""
    import ray

    if ray.is_initialized():
        running = int(ray.cluster_resources().get("CPU", 0))
        if address is None and num_cpus and running != num_cpus:
            log.warning(
                "Ray already runs in this process with %d CPUs; the %d asked for apply only after ray.shutdown()",
                running, num_cpus,
            )
        return
    env_vars = {"GX_ANALYTICS_ENABLED": "false"}
    kwargs: dict[str, Any] = {"include_dashboard": False, "ignore_reinit_error": True}
    if address:
        kwargs["address"] = address
    else:
        kwargs["num_cpus"] = num_cpus or os.cpu_count() or 1
        # a local cluster's workers import stages from the driver's own import path
        env_vars["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p and os.path.isdir(p))
    kwargs["runtime_env"] = {"env_vars": env_vars}
    ray.init(**kwargs)
    log.info("ray initialised: %s", ray.cluster_resources())


def _cluster_has_gpus() -> bool:
    import ray

    return float(ray.cluster_resources().get("GPU", 0)) > 0


def actor_options(stage: Stage) -> dict[str, Any]:
    """Ray actor options from the stage's declared resources.

    GPUs are requested only where the cluster has them, so a stage that declares a GPU
    still runs (on CPU actors) in CI and on laptops.
    """
    res = stage.resources
    options: dict[str, Any] = {"num_cpus": res.cpus}
    if res.gpus and _cluster_has_gpus():
        options["num_gpus"] = res.gpus
    return options


def _stage_actor_class() -> Any:
    import ray

    @ray.remote
    class StageActor:
        """One stage instance per actor; ``setup()`` runs once, in the constructor."""

        def __init__(self, stage: Stage):
            self.stage = stage
            self.stage.setup()

        def process(self, batch: pa.Table) -> tuple[pa.Table, list[Reject]]:
            out = self.stage.process(batch)
            return out.table, out.rejects

        def teardown(self) -> None:
            self.stage.teardown()

    return StageActor


def run_stage_ray(
    stage: Stage,
    table: pa.Table,
    *,
    num_actors: int = 1,
    address: str | None = None,
    batch_size: int | None = None,
) -> StageOutput:
    """Run ``stage`` over ``table`` on a pool of ``num_actors`` Ray actors.

    Batches are handed out in order and results gathered in order, so the output
    equals :func:`curation.stages.run_stages_locally` on the same input.
    """
    import ray
    from ray.util import ActorPool

    if num_actors < 1:
        raise ValueError(f"num_actors must be at least 1, got {num_actors}")
    ensure_ray(address)
    actor_cls = _stage_actor_class().options(**actor_options(stage))
    actors = [actor_cls.remote(stage) for _ in range(num_actors)]
    pool = ActorPool(actors)
    batches = list(iter_batches(table, batch_size or stage.batch_size))
    parts: list[pa.Table] = []
    rejects: list[Reject] = []
    try:
        for out_table, out_rejects in pool.map(lambda a, b: a.process.remote(b), batches):
            rejects.extend(out_rejects)
            if out_table.num_rows:
                parts.append(out_table)
    finally:
        ray.get([a.teardown.remote() for a in actors])
        for actor in actors:
            ray.kill(actor)
    return StageOutput(concat_or_empty(parts, like=stage.output_schema or table), rejects)


# -- pools for the GPU stages of a build ----------------------------------------------
StageFactory = Callable[[], list[Stage]]


def _chain_actor_class() -> Any:
    import ray

    @ray.remote
    class StageChainActor:
        """A recipe's GPU stage chain, built and set up once per actor."""

        def __init__(self, factory: StageFactory):
            self.stages = factory()
            for stage in self.stages:
                stage.setup()

        def process(self, batch: pa.Table) -> tuple[pa.Table, list[Reject], dict[str, StageTiming]]:
            timings: dict[str, StageTiming] = {}
            table, rejects = apply_stages(self.stages, batch, timings)
            return table, rejects, timings

    return StageChainActor


class RayStagePool:
    """Actors running a stage chain; partitions (on any worker) send batches to them.

    The pool is picklable: it holds Ray actor handles, so a partition task running on a
    Dask or Ray worker uses the same actors as the driver. Batches go to actors
    round-robin; ``num_gpus`` per actor comes from the stages' declared resources
    where the cluster has GPUs.
    """

    def __init__(
        self, factory: StageFactory, *, num_actors: int = 1, address: str | None = None, num_cpus: int | None = None
    ):
        import ray

        ensure_ray(address, num_cpus=num_cpus)  # local Ray: the build's --workers, however Ray is first started
        probe = factory()
        cpus = max(s.resources.cpus for s in probe) if probe else 1.0
        gpus = max(s.resources.gpus for s in probe) if probe else 0.0
        options: dict[str, Any] = {"num_cpus": cpus}
        if gpus and _cluster_has_gpus():
            options["num_gpus"] = gpus
        cls = _chain_actor_class().options(**options)
        self.actors = [cls.remote(factory) for _ in range(max(1, num_actors))]
        self._next = 0
        ray.get([a.__ray_ready__.remote() for a in self.actors])

    def __call__(self, batch: pa.Table) -> tuple[pa.Table, list[Reject], dict[str, StageTiming]]:
        import ray

        actor = self.actors[self._next % len(self.actors)]
        self._next += 1
        return ray.get(actor.process.remote(batch))

    def shutdown(self) -> None:
        import ray

        for actor in self.actors:
            ray.kill(actor)


_LOCAL_CHAINS: dict[str, list[Stage]] = {}
_LOCAL_LOCK = threading.Lock()


class LocalStagePool:
    """The GPU stage chain in this process (CPU path, or one GPU): set up once per process.

    Picklable: on a Dask worker the chain is built on first use there and kept for the
    worker's lifetime, so a model still loads once per worker.
    """

    def __init__(self, factory: StageFactory):
        self.factory = factory
        self.key = uuid.uuid4().hex  # travels with the pickle: one chain per worker process

    def _chain(self) -> list[Stage]:
        with _LOCAL_LOCK:
            chain = _LOCAL_CHAINS.get(self.key)
            if chain is None:
                chain = self.factory()
                for stage in chain:
                    stage.setup()
                _LOCAL_CHAINS[self.key] = chain
            return chain

    def __call__(self, batch: pa.Table) -> tuple[pa.Table, list[Reject], dict[str, StageTiming]]:
        chain = self._chain()
        timings: dict[str, StageTiming] = {}
        with _LOCAL_LOCK:  # stages are not assumed thread-safe
            table, rejects = apply_stages(chain, batch, timings)
        return table, rejects, timings

    def shutdown(self) -> None:
        with _LOCAL_LOCK:
            for stage in _LOCAL_CHAINS.pop(self.key, []):
                stage.teardown()


#: what the local process pool's workers import once, in the fork server, before forking
_WORKER_PRELOAD = ["curation.build", "converters.stage", "converters.discover", "quality_checks.gate"]
_PROCESS_POOL: tuple[tuple[Any, ...], Any] | None = None
_PROCESS_POOL_LOCK = threading.Lock()
_PROCESS_POOL_GIVEN_UP = False


def _init_partition_worker(environ: dict[str, str], path: list[str]) -> None:
    """A worker sees the environment and import path of the build that started it (the
    fork server was started by an earlier build and may have older ones)."""
    os.environ.clear()
    os.environ.update(environ)
    sys.path[:] = path
    from flows.storage import configure_object_storage

    configure_object_storage()


def local_process_pool(workers: int) -> Any:
    """A pool of ``workers`` processes of this machine for CPU partitions (``--executor local``).

    Why this and not Prefect's ProcessPoolTaskRunner: the Prefect task (state, retries,
    logs) stays in this process and only the partition's CPU work crosses to a worker;
    workers fork from a fork server that imported the conversion code once (no fork of
    this process, whose Prefect threads make ``fork`` unsafe), and the pool is kept for
    the life of the process, so consecutive builds (``demo``, ``serve``) start it once.
    A changed environment or import path (another salt, another cache) gets a new pool;
    None once :func:`give_up_local_process_pool` was called.
    """
    import concurrent.futures
    import multiprocessing

    global _PROCESS_POOL
    if _PROCESS_POOL_GIVEN_UP:
        return None
    environ = dict(os.environ)
    key = (workers, tuple(sorted(environ.items())), tuple(sys.path))
    with _PROCESS_POOL_LOCK:
        if _PROCESS_POOL is not None and _PROCESS_POOL[0] == key:
            return _PROCESS_POOL[1]
        if _PROCESS_POOL is not None:
            _PROCESS_POOL[1].shutdown(wait=False, cancel_futures=True)
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(_WORKER_PRELOAD)
        pool = concurrent.futures.ProcessPoolExecutor(
            max_workers=workers, mp_context=context, initializer=_init_partition_worker, initargs=(environ, list(sys.path))
        )
        _PROCESS_POOL = (key, pool)
        return pool


def shutdown_local_process_pool(wait: bool = True) -> None:
    """Stop the local pool's workers (tests; a long-lived process that wants its memory back)."""
    global _PROCESS_POOL
    with _PROCESS_POOL_LOCK:
        if _PROCESS_POOL is not None:
            _PROCESS_POOL[1].shutdown(wait=wait, cancel_futures=True)
            _PROCESS_POOL = None


def local_process_pool_usable() -> bool:
    """False once worker processes failed in this process (see :func:`give_up_local_process_pool`)."""
    return not _PROCESS_POOL_GIVEN_UP


def give_up_local_process_pool() -> None:
    """Worker processes failed in this process: stop the pool, and run partitions here from now on."""
    global _PROCESS_POOL_GIVEN_UP
    shutdown_local_process_pool(wait=False)
    _PROCESS_POOL_GIVEN_UP = True


def local_pool_map(processes: int, fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
    """``[fn(item) for item in items]``, in a pool of ``processes`` local workers when that
    is more than one (results in order; an exception in ``fn`` is raised here as usual).

    A pool that cannot run them (a worker killed for memory; a script that starts builds
    without the ``if __name__ == "__main__":`` guard that spawned workers need, as with
    Dask's LocalCluster) is given up for the rest of this process and the items run here:
    slower, never lost.
    """
    pool = local_process_pool(processes) if processes > 1 else None
    if pool is not None:
        from concurrent.futures.process import BrokenProcessPool

        try:
            return list(pool.map(fn, items))
        except BrokenProcessPool as exc:
            log.warning("local worker processes failed (%s); partitions run in this process from now on", exc)
            give_up_local_process_pool()
    return [fn(item) for item in items]


#: what a Dask or Ray worker imports before the first partition task reaches it
_TASK_WORKER_PRELOAD = [*_WORKER_PRELOAD, "flows.prefect_flows"]


def preload_pipeline() -> int:
    """Import the conversion code and Prefect's task engine in this (worker) process;
    returns its pid. Seconds of imports, once per worker process."""
    import importlib

    for module in _TASK_WORKER_PRELOAD:
        importlib.import_module(module)
    return os.getpid()


def warm_up_dask_workers(client: Any) -> int:
    """Have every worker of a Dask cluster import the pipeline before partitions are
    scheduled; returns how many workers did.

    Without it each worker imports on its first task (~3 s of a spawned interpreter
    importing Prefect and the converters), inside the conversion phase, while the
    scheduler already counts the worker as busy with that partition. Import errors (a
    worker without the package) then surface here, before any partition ran.
    """
    return len(client.run(preload_pipeline))


def cluster_map(executor: str, runner: Any, fn: Callable[[Any], Any], chunks: Sequence[Sequence[Any]]) -> list[Any]:
    """``fn`` over ``chunks`` on a Dask or Ray cluster, results in order: discovery's
    reading, hashing and DICOM header checks of new files run where the partitions will
    (on a cluster the driver is one machine, and on object storage one network link).

    A chunk whose cluster task fails (its worker died, say of memory, or the cluster lost
    it) runs again here, as the local pool's chunks do when the pool breaks: discovery's
    own per-file errors are rejects inside ``fn``, so what reaches this point is the
    cluster's, and the build goes on with the chunk read in this process.
    """
    get: Callable[[Any], Any]
    if executor == "dask":
        futures = runner.client.map(functools.partial(_on_cluster_worker, fn), list(chunks), pure=False)
        get = operator.methodcaller("result")
    elif executor == "ray":
        import ray

        remote = ray.remote(num_cpus=1)(_on_cluster_worker)
        futures = [remote.remote(fn, chunk) for chunk in chunks]
        get = ray.get
    else:
        raise ValueError(f"no cluster map for executor {executor!r}")
    results = []
    for chunk, future in zip(chunks, futures, strict=True):
        try:
            results.append(get(future))
        except Exception as exc:  # noqa: BLE001 - the cluster's failure, not the chunk's: read it here
            log.warning("a discovery chunk failed on the %s cluster (%s: %s); reading its %d files in the build process",
                        executor, type(exc).__name__, exc, len(chunk))
            results.append(fn(chunk))
    return results


def _on_cluster_worker(fn: Callable[[Any], Any], chunk: Any) -> Any:
    """``fn(chunk)`` on a cluster worker, with the object-store retries and timeouts this
    process would use (a worker process has not run any of our set-up)."""
    from flows.storage import configure_object_storage

    configure_object_storage()
    return fn(chunk)


#: longest a Ray warm-up task waits at the barrier for the others (a busy cluster may
#: never start them all; the started ones must not hold their CPUs for long)
RAY_WARM_UP_BARRIER_S = 15.0


def warm_up_ray_workers(workers: int | None = None) -> int:
    """The same for Ray: one task per CPU (at most ``workers``) imports the pipeline, held
    at a barrier until all have started (or ``RAY_WARM_UP_BARRIER_S`` passed: on a busy
    cluster some may never start) so that each lands in its own worker process; returns
    how many distinct worker processes were warmed."""
    import ray

    cpus = int(ray.cluster_resources().get("CPU", 1))
    slots = max(1, min(workers or cpus, cpus))
    barrier = _ray_barrier_class().remote(slots, RAY_WARM_UP_BARRIER_S)

    @ray.remote(num_cpus=1)
    def warm(barrier: Any) -> int:
        pid = preload_pipeline()
        ray.get(barrier.arrive.remote())
        ray.get(barrier.wait_all.remote())
        return pid

    return len(set(ray.get([warm.remote(barrier) for _ in range(slots)], timeout=120)))


def _ray_barrier_class() -> Any:
    import ray

    @ray.remote(num_cpus=0)
    class Barrier:
        """Counts arrivals; ``wait_all`` returns once ``parties`` have arrived, or after
        ``deadline_s`` from the barrier's creation, whichever comes first."""

        def __init__(self, parties: int, deadline_s: float):
            import time

            self.parties = parties
            self.arrived = 0
            self.deadline = time.monotonic() + deadline_s

        def arrive(self) -> None:
            self.arrived += 1

        async def wait_all(self) -> None:
            import asyncio
            import time

            while self.arrived < self.parties and time.monotonic() < self.deadline:
                await asyncio.sleep(0.01)

    return Barrier
