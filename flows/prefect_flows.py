"""Prefect flows and tasks: coarse tasks (one per partition), plain Python inside."""

from __future__ import annotations

import time
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ThreadPoolTaskRunner

from converters.base import ConvertOptions
from curation.partitions import Partition, PartitionResult
from flows.convert import ConvertOutcome, ConvertRequest, convert_partition, finish, plan
from flows.runs import new_run_id
from flows.settings import Settings


@task(name="convert-partition", retries=2, retry_delay_seconds=2, cache_policy=NO_CACHE)
def convert_partition_task(
    partition: Partition, options: ConvertOptions, shard_dir: str, workdir: str, shard_bytes: int
) -> PartitionResult:
    return convert_partition(partition, options, shard_dir, workdir, shard_bytes)


def task_runner_for(request: ConvertRequest) -> Any:
    """The Prefect task runner for ``--executor``: threads locally, Dask otherwise."""
    if request.executor == "dask":
        from prefect_dask import DaskTaskRunner

        if request.dask_address:
            return DaskTaskRunner(address=request.dask_address)
        return DaskTaskRunner(
            cluster_kwargs={"n_workers": request.workers or 2, "threads_per_worker": 1, "processes": True}
        )
    return ThreadPoolTaskRunner(max_workers=request.workers or 1)


def convert_flow(request: ConvertRequest) -> ConvertOutcome:
    runner = task_runner_for(request)

    @flow(name="medcurate-convert", task_runner=runner, log_prints=True, validate_parameters=False)
    def _convert(request: ConvertRequest) -> ConvertOutcome:
        logger = get_run_logger()
        started = time.perf_counter()
        settings = Settings.resolve(request.workdir, request.catalog_uri, request.warehouse)
        run_id = new_run_id()
        options, partitions, found = plan(request, settings, run_id)
        logger.info(
            "run %s: %d items in %d partitions, %d files rejected at discovery",
            run_id, len(found.items), len(partitions), len(found.rejects),
        )
        shard_dir = settings.catalog().data_dir(request.dataset)
        futures = [
            convert_partition_task.submit(p, options, shard_dir, settings.workdir, request.shard_bytes)
            for p in partitions
        ]
        results = [f.result() for f in futures]
        outcome = finish(request, settings, run_id, started, found, results)
        logger.info("run %s: %s", run_id, outcome.summary)
        return outcome

    return _convert(request)
