"""Run a build: plan → partitions → shards → (gate) → catalog snapshot → run record.

Everything here is plain Python; ``flows.prefect_flows`` wraps it in a Prefect flow whose
tasks each run a batch of partitions (:func:`task_batches`). The catalog is committed last, only after every partition has
finished, so a crash leaves the published versions untouched and the next run resumes
from the finished partitions' manifests.
"""

from __future__ import annotations

import dataclasses
import functools
import gc
import heapq
import logging
import os
import posixpath
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from catalogs.catalog import PublishResult, dataset_data_dir
from curation.build import BuildPlan, PlanContext, build_partition, make_plan
from curation.partitions import (
    PARTITION_INPUT_BYTES,
    Partition,
    PartitionCache,
    PartitionResult,
    RemoteStages,
    StageTiming,
    items_per_partition,
    plan_partitions,
)
from curation.stages import Reject, rejects_to_table
from curation.version import pipeline_version
from flows.runs import run_summary, write_run_record
from flows.settings import Settings, configure_prefect, ensure_prefect_api
from flows.storage import configure_object_storage

if TYPE_CHECKING:
    from converters.discover import ParallelMap

log = logging.getLogger("medcurate.build")


@dataclasses.dataclass
class BuildRequest:
    """A build as the CLI, a deployment or a test asks for it (JSON-able fields only)."""

    recipe: str
    sources: list[str]
    dataset: str
    version: str | None = None
    options: dict[str, Any] = dataclasses.field(default_factory=dict)
    workdir: str | None = None
    catalog_uri: str | None = None
    warehouse: str | None = None
    executor: str = "local"
    dask_address: str | None = None
    ray_address: str | None = None
    workers: int | None = None


@dataclasses.dataclass
class BuildOutcome:
    run_id: str
    summary: dict[str, Any]
    published: PublishResult | None
    shards: list[str]


def settings_for(request: BuildRequest) -> Settings:
    configure_object_storage()
    return Settings.resolve(request.workdir, request.catalog_uri, request.warehouse)


def check_version_is_new(request: BuildRequest, settings: Settings) -> None:
    """Fail before any work when ``--version`` names a published version (publish would
    refuse it only after conversion and the gate, leaving their shards unregistered)."""
    if request.version:
        settings.catalog().check_new_version(request.dataset, request.version)


def prepare(
    request: BuildRequest, settings: Settings, run_id: str, parallel_map: ParallelMap | None = None
) -> tuple[BuildPlan, list[Partition]]:
    """The plan and its partitions. ``parallel_map``: where discovery reads, hashes and
    header-checks new files (default: :func:`discovery_map`, the local worker pool)."""
    check_version_is_new(request, settings)
    sources = list(request.sources)
    if any("://" in s for s in sources):  # a family's s3:// or catalog:// sources: staged locally first
        from curation.recipes.common import stage_sources

        sources = stage_sources(request.recipe, sources, request.options, settings.workdir, settings.catalog)
    freeze_long_lived_objects()
    ctx = PlanContext(
        sources=tuple(sources),
        dataset=request.dataset,
        salt=settings.salt(),
        run_id=run_id,
        options=dict(request.options),
        workdir=settings.workdir,
        parallel_map=parallel_map or discovery_map(request),
    )
    plan = make_plan(request.recipe, ctx)
    per_partition = plan.partition_items or items_per_partition(plan.items, min(plan.shard_bytes, PARTITION_INPUT_BYTES))
    # where the shards go is part of the key: a manifest names its shard files, and a build
    # into another warehouse or under another dataset name must write (and publish) its own
    shard_dir = dataset_data_dir(settings.warehouse, request.dataset)
    partitions = plan_partitions(plan.items, per_partition, plan.fingerprint + pipeline_version() + shard_dir)
    return plan, partitions


def discovery_map(request: BuildRequest) -> ParallelMap | None:
    """The local executor's worker processes for discovery's per-file reading, hashing and
    DICOM header checks (used only for ``PARALLEL_MIN_BYTES`` of files the hash cache does
    not know; the pool then serves the conversion as well). None with ``--workers 1``,
    one core, or Dask/Ray (whose discovery goes to the cluster:
    ``flows.prefect_flows.LazyEngine.discovery_map``)."""
    from flows.engines import local_pool_map, local_process_pool_usable

    processes = request.workers or os.cpu_count() or 1
    if request.executor != "local" or processes < 2 or not local_process_pool_usable():
        return None

    def on_workers(fn: Callable[[Any], Any], chunks: Sequence[Any]) -> list[Any]:
        # this process only waits now (for the pool to start, then for the workers):
        # the core the starting pool leaves idle imports what the build uses next (the
        # catalog, the gate's libraries) instead of the critical path after discovery
        warm_up_build()
        return local_pool_map(processes, fn, chunks)

    return on_workers


#: the local executor starts worker processes only for builds with this much input left to
#: convert (starting them costs ~1 s; a small or incremental build runs in this process)
LOCAL_PROCESSES_MIN_BYTES = 64 * 1024 * 1024


def reuse_finished(partitions: list[Partition], workdir: str) -> tuple[list[PartitionResult], list[Partition]]:
    """Finished partitions answered from their manifests here, before any task is made:
    a nightly rebuild where 1 % changed converts 1 % of the partitions, not 100 %.

    The pending ones come largest first (by input bytes). Content-defined boundaries make
    partition sizes uneven (one item up to 4x the target), and every engine hands tasks out in
    submission order: in key order a large partition often starts last while the other
    workers idle; largest first (LPT scheduling) ends them together. Simulated for 480
    items in ~11 partitions on 2 workers: 94 % → 99.5 % of the ideal (worst of 20 seeds:
    80 % → 97 %). Results are put back in key order after the run.
    """
    cache = PartitionCache(workdir)
    finished: list[PartitionResult] = []
    pending: list[Partition] = []
    for partition in partitions:
        hit = cache.get(partition.key)
        if hit is None:
            pending.append(partition)
        else:
            finished.append(hit)
    pending.sort(key=lambda p: (-p.input_bytes, p.index))
    return finished, pending


def local_processes(request: BuildRequest, plan: BuildPlan, pending: list[Partition]) -> int:
    """Worker processes for the local executor's CPU partitions; 1 means this process.

    ``--workers N`` asks for N; by default, the machine's cores when at least two
    partitions and ``LOCAL_PROCESSES_MIN_BYTES`` of input are left to convert. Recipes with
    GPU stages keep their partitions in this process (one model per process; a pool of
    model replicas is what ``--executor ray`` is for).
    """
    from flows.engines import local_process_pool_usable

    if request.executor != "local" or plan.gpu_stage_factory is not None or len(pending) < 2:
        return 1
    if not local_process_pool_usable():
        return 1
    if request.workers:
        return min(request.workers, len(pending))
    if sum(p.input_bytes for p in pending) < LOCAL_PROCESSES_MIN_BYTES:
        return 1
    return min(len(pending), os.cpu_count() or 1)


#: Prefect task runs per engine slot (a local worker, a Dask worker thread, a Ray CPU).
#: A task run costs the same whatever it carries: ~35 ms of CPU between the build process
#: and the Prefect server, and 60-100 ms more inside a Dask or Ray worker (a new API
#: client, settings, state events; docs/benchmarks.md). One task per partition paid that
#: 30-40 times for a 10,000-image build on two workers, as much as a partition of cheap
#: images takes to convert. Four batches per slot, filled largest first, still end
#: together; 2 slots make at most 8 task runs whatever the partition count.
TASKS_PER_SLOT = 4


def task_batches(pending: Sequence[Partition], slots: int) -> list[list[Partition]]:
    """The pending partitions in at most ``slots`` x :data:`TASKS_PER_SLOT` batches of
    about equal input, largest batch first: each partition, largest first, joins the
    batch with the least input so far (LPT). A partition whose items carry no size
    weighs its item count times the average item size of the others.

    Batching changes only how many task runs carry the work: each partition keeps its own
    key, shard and manifest (an incremental rebuild or a resume reuses partitions, not
    batches), and a retried batch answers the partitions its failed attempt finished from
    their manifests.
    """
    sized = [p for p in pending if p.input_bytes > 0]
    average_item = max(1, sum(p.input_bytes for p in sized) // max(1, sum(len(p.items) for p in sized)))

    def weight(partition: Partition) -> int:
        return partition.input_bytes or max(1, len(partition.items)) * average_item

    count = min(len(pending), max(1, slots) * TASKS_PER_SLOT)
    loads = [(0, index) for index in range(count)]  # (batch total, batch index), a heap
    batches: list[list[Partition]] = [[] for _ in range(count)]
    for partition in sorted(pending, key=lambda p: (-weight(p), p.index)):
        load, index = heapq.heappop(loads)
        batches[index].append(partition)
        heapq.heappush(loads, (load + weight(partition), index))
    return [batches[index] for _, index in sorted(loads, key=lambda entry: (-entry[0], entry[1]))]


#: Prefect retries per partition of a batch: a batch of n partitions may retry 2n times
#: (each retry resumes after the partitions already finished), the two retries each
#: partition had when it was a task of its own. Failures that are the input's fault are
#: rejects, not exceptions: what retries meet is the infrastructure (object storage, a
#: worker lost), so a batch that cannot progress still ends after 2n short waits.
RETRIES_PER_PARTITION = 2


def build_partitions_here_or_in(
    processes: int,
    plan: BuildPlan,
    partitions: Sequence[Partition],
    shard_dir: str,
    workdir: str,
    remote: RemoteStages | None = None,
    on_done: Callable[[PartitionResult], None] | None = None,
) -> list[PartitionResult]:
    """:func:`build_partition` for each partition in turn, in a worker of the local process
    pool when ``processes`` > 1, else (or when the pool breaks) here; see
    :func:`flows.engines.local_pool_map`. One task thread per pool worker keeps them all busy.

    Every partition given here was pending when its batch was made (finished ones were
    answered before any task, :func:`reuse_finished`). One that its manifest answers now
    was converted by a failed attempt of this same task, in this run: it is returned as
    converted (``cached`` False), so the run's summary neither counts it as reused nor
    leaves out its stage timings and worker.

    ``on_done`` hears of each partition as it finishes (the CLI's progress bars, where the
    task runs in the build process), not only when the whole batch has."""
    from flows.engines import local_pool_map

    configure_object_storage()  # on a Dask/Ray worker this task may be the first code of ours to run
    build = functools.partial(build_partition, plan, shard_dir=shard_dir, workdir=workdir, remote=remote)
    results = []
    for partition in partitions:
        result = local_pool_map(processes, build, [partition])[0]
        if result.cached:
            result = dataclasses.replace(result, cached=False)
        if on_done is not None:
            on_done(result)
        results.append(result)
    return results


def plan_for_tasks(plan: BuildPlan) -> BuildPlan:
    """The plan a partition task carries: without the full item list (each task has its
    partitions' items), which Prefect would inspect and every worker would receive."""
    return dataclasses.replace(plan, items=[], rejects=[])


#: Dask LocalCluster workers when ``--workers`` is not given
DEFAULT_DASK_LOCAL_WORKERS = 2


def leaves_a_core_idle(request: BuildRequest, processes: int) -> bool:
    """Whether this machine keeps a core free while the partitions convert: they run on
    a remote cluster, or on fewer local workers than cores. Only then is importing the
    gate's libraries during conversion free; on cores that all convert it only takes
    time from the partitions (the total stays the same)."""
    cores = os.cpu_count() or 1
    if request.executor == "local":
        return 1 < processes < cores
    if request.dask_address or request.ray_address:
        return True
    workers = request.workers or (DEFAULT_DASK_LOCAL_WORKERS if request.executor == "dask" else cores)
    return workers < cores


def warm_up_gate() -> None:
    """Import Great Expectations (seconds) in a background thread while this process
    waits: for a temporary Prefect server to start, for discovery on the worker pool, or
    for partitions converting on cores it does not need (see :func:`leaves_a_core_idle`).
    The gate's own import then finds it done (Python's import lock makes it wait if not).
    Once per process, whichever thread asks first."""
    if _first_call("gate"):
        threading.Thread(target=_import_gx, name="medcurate-gx-import", daemon=True).start()


_WARM_UPS_STARTED: set[str] = set()
_WARM_UPS_LOCK = threading.Lock()


def _first_call(name: str) -> bool:
    """True exactly once per process for ``name``, across threads (``functools.cache``
    may run a function twice when two threads call it at the same time)."""
    with _WARM_UPS_LOCK:
        first = name not in _WARM_UPS_STARTED
        _WARM_UPS_STARTED.add(name)
        return first


def _import_gx() -> None:
    from quality_checks.suites import import_gx

    import_gx()
    freeze_long_lived_objects()  # GX's import leaves ~100,000 objects that live as long as the process


def freeze_long_lived_objects() -> None:
    """Keep the garbage collector's full collections to what a build allocates.

    A build process holds ~300,000 objects that live as long as it does: the modules,
    classes and functions of Prefect, Great Expectations, pyiceberg, pyarrow, pydicom…
    CPython's full (generation-2) collection traverses every one each time it runs, once
    or twice per build: ~0.2 s each here, 8 % of a 1 % rebuild of 10,000 CT slices.
    Collecting once, then moving what survived to the permanent generation (``gc.freeze``,
    the standard library's way to exempt long-lived objects) leaves later collections
    only what was allocated since: 0.19 → 0.02 s per full collection. Called before each
    build (cheap after the first: the earlier objects are frozen already) and after
    GX's import; garbage is collected first, so no unreachable cycle is frozen.
    """
    gc.collect()
    gc.freeze()
    _unfreeze_at_exit()


@functools.cache  # once per process
def _unfreeze_at_exit() -> None:
    """Frozen objects are skipped by the interpreter's last collections too: their
    finalizers would not run at exit (extension modules such as DuckDB's report them as
    leaks). ``atexit`` runs before that teardown."""
    import atexit

    atexit.register(gc.unfreeze)


#: what a build imports on first use, besides the gate's Great Expectations (~0.5 s cold)
_BUILD_MODULES = ("catalogs.catalog", "pyiceberg.catalog.sql", "quality_checks.gate", "quality_checks.card")


def warm_up_build() -> None:
    """Import what a build uses — the conversion pipeline, the catalog, then the gate's
    Great Expectations — in a background thread while this process waits: seconds for a
    temporary Prefect server (the demo's first build: 1.4 → 0.65 s besides the gate's
    import), or discovery on the worker pool. Once per process."""
    if _first_call("build"):
        threading.Thread(target=_import_build_modules, name="medcurate-warm-up", daemon=True).start()


def _import_build_modules() -> None:
    import importlib

    from flows.engines import _WORKER_PRELOAD

    for module in (*_WORKER_PRELOAD, *_BUILD_MODULES):
        importlib.import_module(module)
    warm_up_gate()  # then GX, in the one thread per process that imports it


def stage_summary(results: list[PartitionResult]) -> dict[str, dict[str, float | None]]:
    """Per-stage time and throughput over the partitions computed in this run."""
    totals: dict[str, StageTiming] = {}
    for result in results:
        if result.cached:
            continue
        for name, timing in result.stages.items():
            totals.setdefault(name, StageTiming()).add(timing["seconds"], int(timing["rows_in"]), int(timing["rows_out"]))
    return {
        name: {
            "seconds": round(t.seconds, 3),
            "rows_in": t.rows_in,
            "rows_out": t.rows_out,
            "rows_per_second": round(t.rows_in / t.seconds, 2) if t.seconds > 0 else None,
        }
        for name, t in totals.items()
    }


#: set on the log records of a failed gate's verdict (failed expectations, quarantined
#: shards, Data Docs): the run's log in the Prefect UI needs them, while the CLI prints
#: the same verdict on stderr itself and keeps them off its console (no line twice)
GATE_VERDICT_RECORD = "medcurate_gate_verdict"


class GateFailed(Exception):
    """The quality gate refused the build: nothing was published (CLI exit code 3)."""

    def __init__(self, dataset: str, report: Any, summary: dict[str, Any]):
        self.dataset = dataset
        self.report = report
        self.summary = summary
        super().__init__(
            f"quality gate failed for {dataset}: {len(report.failed_expectations)} failed expectation(s), "
            f"{len(report.quarantined)} shard(s) quarantined; nothing was published"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled with its three arguments (a flow's Failed state may carry it to a result store)."""
        return (GateFailed, (self.dataset, self.report, self.summary))


def previous_version_shards(settings: Settings, dataset: str) -> list[str] | None:
    """The latest published version's shards, which the drift checks compare with (the
    gate reads them only where the build did not measure them)."""
    from catalogs.catalog import CatalogError

    try:
        return settings.catalog().files(dataset)
    except CatalogError:  # no such dataset, or no version published yet
        return None


def run_gate(
    plan: BuildPlan, settings: Settings, run_id: str, shards: list[str], processes: int = 1, earlier_shards: Sequence[str] = ()
) -> Any:
    """Validate the build's shards; failing shards are quarantined by the gate (those of
    reused partitions, ``earlier_shards``, as copies: a published version may hold them).

    With local worker processes (``processes`` > 1) they also read back and measure the
    new shards, one shard per task.
    """
    from flows.engines import local_pool_map
    from quality_checks.gate import gate_build

    shard_map = functools.partial(local_pool_map, processes) if processes > 1 else None

    return gate_build(
        shards,
        family=plan.family,
        workdir=settings.workdir,
        tolerances=plan.gate or None,
        previous=previous_version_shards(settings, plan.dataset),
        build_id=run_id,
        data_docs="://" not in settings.workdir,
        shard_map=shard_map,
        earlier_shards=earlier_shards,
    )


def write_card(
    settings: Settings, dataset: str, version: str, rejects: list[Reject], summary: dict[str, Any], report: Any
) -> str | None:
    """The dataset card of a published version, next to its snapshot's artifacts."""
    from quality_checks.card import write_dataset_card

    catalog = settings.catalog()
    return write_dataset_card(
        catalog.files(dataset, version),
        catalog.artifacts_dir(dataset, version),
        name=dataset,
        version=version,
        rejects=rejects_to_table(rejects),
        summary=summary,
        metrics=report.metrics_path if report is not None else None,
    )


def has_card(settings: Settings, published: PublishResult) -> bool:
    """Whether the version already has its card (an unchanged rebuild under an explicit
    new ``--version`` tags the same snapshot: that version gets its own card)."""
    return os.path.exists(posixpath.join(settings.catalog().artifacts_dir(published.name, published.version), "README.md"))


def finish(
    request: BuildRequest,
    settings: Settings,
    plan: BuildPlan,
    run_id: str,
    started: float,
    results: list[PartitionResult],
    timings: dict[str, float] | None = None,
    *,
    gate: bool = True,
    processes: int = 1,
) -> BuildOutcome:
    """Gate, publish (the catalog last) and write the run record.

    A failed gate writes the run record (with the failed expectations) and raises
    :class:`GateFailed`; the catalog is not touched.
    """
    timings = dict(timings or {})
    rejects = list(plan.rejects) + [r for res in results for r in res.rejects]
    shards = [s for res in results for s in res.shards]
    samples = sum(res.rows for res in results)
    report = None
    extra: dict[str, Any] = {
        "dataset": request.dataset,
        "recipe": plan.recipe,
        "partitions": len(results),
        "partitions_reused": sum(1 for r in results if r.cached),
        "executor": request.executor,
        "workers": sorted({r.worker for r in results if not r.cached and r.worker}),
        "stages": stage_summary(results),
    }

    def record_unpublished(**more: Any) -> dict[str, Any]:
        """Write the run record of a build that published nothing (a failed gate, a failed
        publish) and return its summary."""
        phases = {k: round(v, 3) for k, v in timings.items()}
        summary = run_summary(
            run_id, inputs_total=plan.inputs_total, rejects=rejects, samples_written=samples,
            seconds=time.perf_counter() - started, extra={**extra, "version": None, "phases": phases, **more},
        )
        write_run_record(settings.workdir, summary, rejects)
        return summary

    if gate and shards:
        tick = time.perf_counter()
        reused = [s for res in results if res.cached for s in res.shards]
        report = run_gate(plan, settings, run_id, shards, processes, reused)
        timings["gate"] = time.perf_counter() - tick
        extra["gate"] = {
            "passed": report.passed,
            "failed_expectations": report.failed_expectations,
            "quarantined": report.quarantined,
            "shards_validated": len(report.shards) - report.shards_reused,
            "shards_reused": report.shards_reused,
            "data_docs": report.data_docs_path,
            "seconds": round(report.seconds, 3),
            "data_docs_seconds": round(report.data_docs_seconds, 3),
        }
        if not report.passed:
            raise GateFailed(request.dataset, report, record_unpublished())
        shards = list(report.passed_shards)
        # a gate that passes within its tolerance publishes only the passing shards
        quarantined_rows = sum(s.rows for s in report.shards if not s.passed)
        extra["gate"]["samples_quarantined"] = quarantined_rows
        samples -= quarantined_rows
    published = None
    if shards:
        tick = time.perf_counter()
        try:
            published = settings.catalog().publish(
                request.dataset,
                shards,
                version=request.version,
                summary={
                    "run_id": run_id,
                    "pipeline_version": pipeline_version(),
                    "samples": samples,
                    "inputs": plan.inputs_total,
                    "rejects": len(rejects),
                    "recipe": plan.recipe,
                    "gate": "passed" if report is not None else "skipped",
                    "gate_data_docs": (report.data_docs_path or "") if report is not None else "",
                },
            )
        except Exception as exc:
            # exit 1 with a run record that says what failed (docs/cli.md), not a bare traceback
            record_unpublished(error=f"publish failed: {type(exc).__name__}: {exc}")
            raise
        timings["publish"] = time.perf_counter() - tick
    extra.update(
        {
            "version": published.version if published else None,
            "snapshot_id": published.snapshot_id if published else None,
            "unchanged": published.unchanged if published else None,
            "shards": len(shards),
            "phases": {k: round(v, 3) for k, v in timings.items()},
        }
    )
    summary = run_summary(
        run_id, inputs_total=plan.inputs_total, rejects=rejects, samples_written=samples,
        seconds=time.perf_counter() - started, extra=extra,
    )
    if published is not None and "://" not in settings.workdir and (not published.unchanged or not has_card(settings, published)):
        tick = time.perf_counter()
        summary["card"] = write_card(settings, request.dataset, published.version, rejects, summary, report)
        summary["phases"]["card"] = round(time.perf_counter() - tick, 3)
    write_run_record(settings.workdir, summary, rejects)
    return BuildOutcome(run_id, summary, published, shards)


def run_build(request: BuildRequest, *, progress: bool | None = None) -> BuildOutcome:
    """Run a build as a Prefect flow (the way the CLI and deployments run it).

    ``progress``: draw progress bars (default: when stderr is a terminal).
    """
    configure_prefect(settings_for(request).workdir)
    # without a configured server a temporary one starts now (seconds: a subprocess
    # importing Prefect's server and migrating its database) while this process waits:
    # the core it leaves idle imports what the build will use
    server_ahead = not os.environ.get("PREFECT_API_URL") and (os.cpu_count() or 1) > 1
    if request.executor != "local":
        ensure_prefect_api(while_starting=warm_up_build if server_ahead else None)
    from flows.prefect_flows import build_flow
    from flows.progress import BuildProgress

    if server_ahead and request.executor == "local":
        warm_up_build()  # Prefect starts the server at the flow's first API call

    from flows.heartbeats import watched_heartbeat_seconds, without_prefect_heartbeat_thread

    heartbeat_seconds = watched_heartbeat_seconds()
    with without_prefect_heartbeat_thread(), BuildProgress(request.dataset, enabled=progress) as bars:
        return build_flow(request, bars, heartbeat_seconds=heartbeat_seconds)


def run_build_inline(request: BuildRequest) -> BuildOutcome:
    """The same build without Prefect: partitions one after another in this process, or
    in local worker processes by the same rule as ``--executor local`` (``workers=1``
    keeps everything here, for a debugger).

    For tests, notebooks and debugging a recipe: identical outputs (same plan, same
    partition keys, same shards), none of the orchestration.
    """
    from flows.locks import dataset_build_lock

    settings = settings_for(request)
    with dataset_build_lock(settings.workdir, settings.warehouse, request.dataset):
        return _build_inline(request, settings)


def _build_inline(request: BuildRequest, settings: Settings) -> BuildOutcome:
    from flows.runs import new_run_id

    started = time.perf_counter()
    run_id = new_run_id()
    plan, partitions = prepare(request, settings, run_id)
    planned = time.perf_counter()
    shard_dir = dataset_data_dir(settings.warehouse, request.dataset)  # no catalog needed for a path
    results, pending = reuse_finished(partitions, settings.workdir)
    processes = local_processes(request, plan, pending)
    if processes > 1:
        from flows.engines import local_pool_map

        if leaves_a_core_idle(request, processes):
            warm_up_build()
        build = functools.partial(build_partition, plan_for_tasks(plan), shard_dir=shard_dir, workdir=settings.workdir)
        results += local_pool_map(processes, build, pending)
    else:
        results += [build_partition(plan, p, shard_dir, settings.workdir) for p in pending]
    results.sort(key=lambda r: r.key)
    timings = {"plan": planned - started, "partitions": time.perf_counter() - planned}
    return finish(request, settings, plan, run_id, started, results, timings, processes=processes)
