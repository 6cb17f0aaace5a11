"""Prefect flows and tasks: coarse tasks (a batch of partitions each), plain Python inside.

``build_dataset`` is the one flow: the CLI calls it, and every deployment (``medcurate
serve``) runs it with JSON parameters. The engine is chosen per run from the
``executor`` parameter: the partition tasks go to a thread pool (``local``), a Dask
cluster (``dask``: prefect-dask's DaskTaskRunner, a LocalCluster or a scheduler
address) or Ray (``ray``: prefect-ray's RayTaskRunner, in-process or a cluster address).
A recipe's GPU stages run on a Ray actor pool when Ray is in play, in-process otherwise.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.futures import as_completed
from prefect.states import Failed, State
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.utilities.annotations import quote

from catalogs.catalog import CatalogError, dataset_data_dir
from curation.build import BuildPlan
from curation.partitions import Partition, PartitionResult, RemoteStages
from flows.build import (
    DEFAULT_DASK_LOCAL_WORKERS,
    GATE_VERDICT_RECORD,
    RETRIES_PER_PARTITION,
    BuildOutcome,
    BuildRequest,
    GateFailed,
    build_partitions_here_or_in,
    finish,
    leaves_a_core_idle,
    local_processes,
    plan_for_tasks,
    prepare,
    reuse_finished,
    settings_for,
    task_batches,
    warm_up_build,
)
from flows.heartbeats import flow_run_heartbeats
from flows.progress import BuildProgress
from flows.runs import new_run_id
from flows.settings import Settings


@task(name="build-partitions", retries=RETRIES_PER_PARTITION, retry_delay_seconds=[2, 10], cache_policy=NO_CACHE)
def build_partitions_task(
    plan: BuildPlan,
    partitions: list[Partition],
    shard_dir: str,
    workdir: str,
    remote: RemoteStages | None,
    processes: int = 1,
    on_done: Callable[[PartitionResult], None] | None = None,
) -> list[PartitionResult]:
    """A batch of partitions (``flows.build.task_batches``), in turn; with ``processes`` > 1
    (local executor) their CPU work runs in a worker of the local process pool while this
    task (state, retries, logs) stays here. A retry answers the partitions a failed
    attempt finished from their manifests. ``on_done``: told of each finished partition
    (local executor only: the task runs in the build process)."""
    return build_partitions_here_or_in(processes, plan, partitions, shard_dir, workdir, remote, on_done)


def task_slots(request: BuildRequest, runner: Any, processes: int) -> int:
    """How many partition tasks the engine runs at once, to size the batches: the local
    executor's task threads; a Dask cluster's worker threads or Ray's CPUs as they are
    now, or ``--workers`` where that is more (an autoscaling cluster that starts small
    grows into it). Too many slots cost a few task runs; too few would leave workers idle."""
    asked = request.workers or 0
    if request.executor == "local":
        return max(processes, asked, 1)
    try:
        if request.executor == "dask":
            now = sum(runner.client.nthreads().values())
        else:
            import ray

            now = int(ray.cluster_resources().get("CPU", 0))
    except Exception as exc:  # noqa: BLE001 - only sizes the batches; the tasks report real failures
        fallback = asked or (DEFAULT_DASK_LOCAL_WORKERS if request.executor == "dask" else os.cpu_count() or 1)
        get_run_logger().warning("%s: could not count the cluster's slots (%s); assuming %d", request.executor, exc, fallback)
        return fallback
    return max(now, asked, 1)


def task_runner_for(request: BuildRequest, processes: int = 1) -> Any:
    """The Prefect task runner for the request's executor (``processes``: the local
    executor's worker processes, one task thread each)."""
    if request.executor == "dask":
        from prefect_dask import DaskTaskRunner

        if request.dask_address:
            return DaskTaskRunner(address=request.dask_address)
        return DaskTaskRunner(
            cluster_kwargs={"n_workers": request.workers or DEFAULT_DASK_LOCAL_WORKERS, "threads_per_worker": 1, "processes": True}
        )
    if request.executor == "ray":
        from prefect_ray import RayTaskRunner

        from flows.engines import ensure_ray

        ensure_ray(request.ray_address, num_cpus=request.workers)
        return RayTaskRunner(address=request.ray_address) if request.ray_address else RayTaskRunner()
    if request.executor != "local":
        raise ValueError(f"executor must be local, dask or ray, got {request.executor!r}")
    return ThreadPoolTaskRunner(max_workers=max(processes, request.workers or 1))


def opaque_to_prefect(request: BuildRequest) -> Callable[[Any], Any]:
    """How task parameters are wrapped so that Prefect does not walk them.

    Prefect visits every element of a task's parameters (each item dict of the plan and
    the batch's partitions, twice per task) looking for futures to track: ~35 ms of this process's
    CPU per 300-item partition, 1.2 s of a 34-task build (bench/scale.py). No partition
    task takes another's future, so ``quote`` (Prefect's documented opt-out) loses
    nothing. Local executor only: prefect-dask and prefect-ray ship parameters in a way
    that turns ``quote`` (a tuple subclass) into a plain tuple, so the task would receive
    ``(value,)`` (both seen in tests/flows/test_clusters.py); there the walk happens in
    the workers.
    """
    if request.executor != "local":
        return lambda value: value
    return quote


def local_dask_worker_environment(request: BuildRequest) -> contextlib.AbstractContextManager[Any]:
    """While a LocalCluster starts: its workers keep glibc's own malloc tuning.

    distributed's nanny sets ``MALLOC_TRIM_THRESHOLD_=65536`` in every worker it spawns
    (to hand freed memory back to the OS). Setting it switches off glibc's adaptive mmap
    threshold, so every array over 128 KiB (each 512x512 slice's pixels, LUT outputs,
    PNG buffers) is a fresh mapping whose pages fault in again: measured on this VM, a
    worker spent 2x the CPU per CT slice (14.7 vs 7.8 s for 480 slices, docs/benchmarks.md).
    A partition's memory is bounded by its shard size anyway. Clusters started by hand
    keep their own configuration (docs/operations.md says how to set the same).
    """
    if request.executor != "dask" or request.dask_address:
        return contextlib.nullcontext()
    import dask

    return dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None})


def warm_up_workers(request: BuildRequest, runner: Any) -> None:
    """Dask and Ray workers import the pipeline before the first partition is scheduled
    (counted in the ``engine_start`` phase, as the cluster's start is). A worker that
    cannot is only logged here: its first task then imports, or fails with the reason."""
    from flows.engines import warm_up_dask_workers, warm_up_ray_workers

    logger = get_run_logger()
    try:
        if request.executor == "dask":
            logger.info("dask: %d workers imported the pipeline", warm_up_dask_workers(runner.client))
        elif request.executor == "ray":
            logger.info("ray: %d worker processes imported the pipeline", warm_up_ray_workers(request.workers))
    except Exception as exc:  # noqa: BLE001 - an optimisation; the tasks report real failures
        logger.warning("%s workers could not be warmed up (%s); they import on their first task", request.executor, exc)


def gpu_pool_for(request: BuildRequest, plan: BuildPlan) -> Any:
    """Where the recipe's GPU stages run: Ray actors with Ray, this process otherwise."""
    if plan.gpu_stage_factory is None:
        return None
    from flows.engines import LocalStagePool, RayStagePool

    if request.executor == "ray" or request.ray_address:
        return RayStagePool(
            plan.gpu_stage_factory, num_actors=request.workers or 1, address=request.ray_address, num_cpus=request.workers
        )
    return LocalStagePool(plan.gpu_stage_factory)


@flow(name="medcurate-build", validate_parameters=False, log_prints=True)
def build_dataset(
    recipe: str,
    sources: list[str],
    dataset: str,
    version: str | None = None,
    options: dict[str, Any] | None = None,
    workdir: str | None = None,
    catalog_uri: str | None = None,
    warehouse: str | None = None,
    executor: str = "local",
    dask_address: str | None = None,
    ray_address: str | None = None,
    workers: int | None = None,
    keep_last: int | None = None,
    keep_versions: list[str] | None = None,
) -> dict[str, Any]:
    """Build ``dataset`` with ``recipe`` from ``sources`` and publish it; returns the run summary.

    ``keep_last``: after a build that passed its gate, the dataset's retention policy:
    keep the newest ``keep_last`` versions and ``keep_versions``, expire the rest, and
    remove the shard files nothing holds any more (older than a day; ``catalog expire``
    and ``catalog clean``, docs/operations.md). Its outcome is the summary's ``retention``.
    """
    request = BuildRequest(
        recipe=recipe,
        sources=list(sources),
        dataset=dataset,
        version=version,
        options=dict(options or {}),
        workdir=workdir,
        catalog_uri=catalog_uri,
        warehouse=warehouse,
        executor=executor,
        dask_address=dask_address,
        ray_address=ray_address,
        workers=workers,
    )
    try:
        summary = _run(request).summary
    except GateFailed as exc:
        return gate_verdict(exc)  # type: ignore[return-value]  # a returned Failed state raises
    if keep_last is not None:
        try:
            summary["retention"] = apply_retention(request, keep_last, keep_versions or [])
        except CatalogError as exc:  # e.g. a kept version that does not exist: the build itself published
            get_run_logger().error("retention of %s not applied: %s", dataset, exc)
            summary["retention"] = {"error": str(exc)}
    return summary


def apply_retention(request: BuildRequest, keep_last: int, keep_versions: list[str]) -> dict[str, Any]:
    """Expire all but the kept versions, then remove the files no snapshot holds. Runs
    after the build, whose dataset lock is released by then (both take it in turn)."""
    from flows.maintenance import clean_dataset_files, expire_dataset_versions

    settings = settings_for(request)  # with the object-store retries a build gets
    expired = expire_dataset_versions(settings, request.dataset, keep_last=keep_last, keep=keep_versions)
    cleaned = clean_dataset_files(settings, request.dataset)
    get_run_logger().info(
        "retention of %s: expired %s; kept %s; removed %d unheld file(s) (%.1f MiB)", request.dataset,
        ", ".join(expired.dropped) or "no version", ", ".join(expired.kept), len(cleaned.removed), cleaned.removed_bytes / 2**20,
    )
    return {"expired_versions": expired.dropped, "kept_versions": expired.kept, "files_removed": len(cleaned.removed),
            "bytes_removed": cleaned.removed_bytes}


def gate_verdict(exc: GateFailed) -> State:
    """A failed gate is an expected verdict, not a crash: the flow run ends Failed with
    the gate's message and no traceback in its log (``_run`` logged the failed
    expectations), and calling the flow raises ``exc`` again."""
    return Failed(message=str(exc), data=exc)


class LazyEngine:
    """A Dask or Ray task runner started on first use: by discovery, when it has enough
    new files to read on the cluster, or by the partitions; a rebuild with nothing to
    read or convert starts no cluster. ``seconds``: time spent starting it."""

    def __init__(self, request: BuildRequest):
        self.request = request
        self.runner: Any = None
        self.seconds = 0.0
        self._stack = contextlib.ExitStack()

    def start(self, processes: int = 1) -> Any:
        """The task runner, started now if it is not yet. ``processes``: the local
        executor's worker processes (Dask and Ray size their clusters from the request,
        so a cluster that discovery started serves the partitions as it is)."""
        if self.runner is None:
            tick = time.perf_counter()
            runner = task_runner_for(self.request, processes)  # imports distributed: its config defaults first
            self._stack.enter_context(local_dask_worker_environment(self.request))
            self.runner = self._stack.enter_context(runner)
            warm_up_workers(self.request, self.runner)
            self.seconds += time.perf_counter() - tick
        return self.runner

    def discovery_map(self) -> Callable[[Callable[[Any], Any], Any], list[Any]] | None:
        """Discovery's parallel map on the cluster (Dask/Ray); None for the local
        executor, whose discovery uses the local worker pool."""
        if self.request.executor not in ("dask", "ray"):
            return None
        from flows.engines import cluster_map

        return lambda fn, chunks: cluster_map(self.request.executor, self.start(), fn, chunks)

    def close(self) -> None:
        self._stack.close()
        self.runner = None


def _run(request: BuildRequest, progress: BuildProgress | None = None) -> BuildOutcome:
    from flows.locks import dataset_build_lock

    settings = settings_for(request)
    with (
        dataset_build_lock(settings.workdir, settings.warehouse, request.dataset),
        contextlib.closing(LazyEngine(request)) as cluster,  # closed on every path, at the latest here
    ):
        return _build_on(cluster, request, settings, progress)


def _build_on(cluster: LazyEngine, request: BuildRequest, settings: Settings, progress: BuildProgress | None) -> BuildOutcome:
    logger = get_run_logger()
    started = time.perf_counter()
    run_id = new_run_id()
    plan, partitions = prepare(request, settings, run_id, cluster.discovery_map())
    planned = time.perf_counter()
    engine_in_plan = cluster.seconds
    logger.info(
        "run %s: recipe %s, %d items in %d partitions on %s, %d inputs rejected before conversion",
        run_id, plan.recipe, len(plan.items), len(partitions), request.executor, len(plan.rejects),
    )
    if progress:
        progress.start_partitions(len(plan.items), len(partitions))
    shard_dir = dataset_data_dir(settings.warehouse, request.dataset)  # no catalog needed for a path
    results, pending = reuse_finished(partitions, settings.workdir)
    if progress:
        for result in results:
            progress.partition_done(result)
    if len(results):
        logger.info("run %s: %d of %d partitions unchanged, reused without a task", run_id, len(results), len(partitions))
    processes = local_processes(request, plan, pending)
    if pending and leaves_a_core_idle(request, processes):
        warm_up_build()  # this process only waits while the partitions convert elsewhere
    pool = gpu_pool_for(request, plan) if pending else None
    task_plan = plan_for_tasks(plan)
    engine_started = time.perf_counter()
    try:
        if pending:
            runner = cluster.start(processes)  # started already if discovery used the cluster
        engine_ready = time.perf_counter()  # a Dask LocalCluster or Ray takes seconds to start
        if pending:
            batches = task_batches(pending, task_slots(request, runner, processes))
            logger.info("run %s: %d partitions to convert in %d task runs", run_id, len(pending), len(batches))
            opaque = opaque_to_prefect(request)
            # the local executor's tasks run in this process: they report each partition
            # as it finishes; from a Dask or Ray worker a batch reports when it is done
            each = progress.partition_done if progress and request.executor == "local" else None
            futures = [
                runner.submit(
                    build_partitions_task.with_options(retries=RETRIES_PER_PARTITION * len(batch)),
                    parameters={
                        "plan": opaque(task_plan),
                        "partitions": opaque(batch),
                        "shard_dir": shard_dir,
                        "workdir": settings.workdir,
                        "remote": opaque(pool),
                        "processes": processes,
                        "on_done": opaque(each),
                    },
                )
                for batch in batches
            ]
            for future in as_completed(futures):
                for result in future.result():
                    results.append(result)
                    if progress and each is None:
                        progress.partition_done(result)
        converted = time.perf_counter()
    finally:
        if pool is not None:
            pool.shutdown()
        cluster.close()  # before the gate: the cluster's workers are not needed there
    stopped = time.perf_counter()
    results.sort(key=lambda r: r.key)
    try:
        outcome = finish(
            request, settings, plan, run_id, started, results,
            {
                "plan": planned - started - engine_in_plan,
                "engine_start": engine_ready - engine_started + engine_in_plan,
                "partitions": converted - engine_ready,
                "engine_stop": stopped - converted,
            },
            processes=processes,
        )
    except GateFailed as exc:  # the verdict in the run's log (UI), not only on the CLI's stderr
        verdict = {GATE_VERDICT_RECORD: True}  # the CLI prints the same lines itself, once
        for line in exc.report.failed_expectations:
            logger.warning("gate: failed %s", line, extra=verdict)
        for path in exc.report.quarantined:
            logger.warning("gate: quarantined %s", path, extra=verdict)
        logger.warning("gate: data docs %s", exc.report.data_docs_path or "-", extra=verdict)
        raise
    _artifacts(outcome)
    logger.info("run %s: %s", run_id, outcome.summary)
    return outcome


def _artifacts(outcome: BuildOutcome) -> None:
    """The run summary and per-stage throughput as Prefect artifacts (shown in the UI)."""
    s = outcome.summary
    key = f"{s.get('dataset', 'dataset').replace('_', '-')}-summary"
    create_markdown_artifact(
        key=key,
        markdown=(
            f"### {s.get('dataset')}@{s.get('version') or '-'}\n\n"
            f"- inputs: {s['inputs_total']} ({s['inputs_converted']} converted, {s['inputs_rejected']} rejected)\n"
            f"- samples written: {s['samples_written']} in {s['seconds']} s ({s['samples_per_second']} /s)\n"
            f"- partitions: {s.get('partitions')} ({s.get('partitions_reused')} reused)\n"
            f"- rejects by reason: {s['rejects_by_reason']}\n"
        ),
        description="medcurate run summary",
    )
    rows = [{"stage": name, **values} for name, values in (s.get("stages") or {}).items()]
    if rows:
        create_table_artifact(key=key.replace("summary", "stages"), table=rows, description="per-stage throughput")


def build_flow(
    request: BuildRequest, progress: BuildProgress | None = None, *, heartbeat_seconds: float | None = None
) -> BuildOutcome:
    """Run one build as the ``medcurate-build`` flow from Python (the CLI's path), with
    flow-run heartbeats every ``heartbeat_seconds`` (:mod:`flows.heartbeats`; the caller
    switches Prefect's own off)."""

    @flow(name=f"medcurate-build-{request.recipe}", validate_parameters=False)
    def _build(request: BuildRequest) -> BuildOutcome | State:
        with flow_run_heartbeats(heartbeat_seconds):
            try:
                return _run(request, progress)
            except GateFailed as exc:
                return gate_verdict(exc)

    return _build(request)  # type: ignore[return-value]  # a returned Failed state raises
