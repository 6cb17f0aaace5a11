"""Prefect flows and tasks: coarse tasks (one per partition), plain Python inside."""

from __future__ import annotations

import time
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ThreadPoolTaskRunner

from curation.build import BuildPlan
from curation.partitions import Partition, PartitionResult
from flows.build import BuildOutcome, BuildRequest, build_partition, finish, prepare, settings_for
from flows.runs import new_run_id


@task(name="build-partition", retries=2, retry_delay_seconds=2, cache_policy=NO_CACHE)
def build_partition_task(plan: BuildPlan, partition: Partition, shard_dir: str, workdir: str) -> PartitionResult:
    return build_partition(plan, partition, shard_dir, workdir)


def task_runner_for(request: BuildRequest) -> Any:
    """The Prefect task runner for ``--executor``: threads locally, Dask otherwise."""
    if request.executor == "dask":
        from prefect_dask import DaskTaskRunner

        if request.dask_address:
            return DaskTaskRunner(address=request.dask_address)
        return DaskTaskRunner(
            cluster_kwargs={"n_workers": request.workers or 2, "threads_per_worker": 1, "processes": True}
        )
    return ThreadPoolTaskRunner(max_workers=request.workers or 1)


def build_flow(request: BuildRequest) -> BuildOutcome:
    runner = task_runner_for(request)

    @flow(name=f"medcurate-build-{request.recipe}", task_runner=runner, validate_parameters=False)
    def _build(request: BuildRequest) -> BuildOutcome:
        logger = get_run_logger()
        started = time.perf_counter()
        settings = settings_for(request)
        run_id = new_run_id()
        plan, partitions = prepare(request, settings, run_id)
        logger.info(
            "run %s: recipe %s, %d items in %d partitions, %d inputs rejected before conversion",
            run_id, plan.recipe, len(plan.items), len(partitions), len(plan.rejects),
        )
        shard_dir = settings.catalog().data_dir(request.dataset)
        futures = [build_partition_task.submit(plan, p, shard_dir, settings.workdir) for p in partitions]
        results = [f.result() for f in futures]
        outcome = finish(request, settings, plan, run_id, started, results)
        logger.info("run %s: %s", run_id, outcome.summary)
        return outcome

    return _build(request)
