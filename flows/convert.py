"""The conversion flow: sources → partitions → shards → catalog snapshot.

Prefect carries the orchestration (one task per partition, retries, observability);
the work itself is plain Python from ``curation`` and ``converters``. Tasks run on the
local thread pool by default or on Dask (``executor="dask"``), and the catalog is
committed last, only after every partition has finished and the samples validated.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

from catalogs.catalog import PublishResult
from converters.base import WORK_ITEM_SCHEMA, ConvertOptions, SlicePolicy
from converters.discover import discover
from converters.stage import ConvertStage
from curation.partitions import (
    Partition,
    PartitionCache,
    PartitionResult,
    items_per_partition,
    plan_partitions,
    run_partition,
)
from curation.shards import DEFAULT_SHARD_BYTES
from curation.version import pipeline_version
from flows.runs import new_run_id, write_run_record
from flows.settings import Settings

log = logging.getLogger("medcurate.convert")


@dataclasses.dataclass
class ConvertRequest:
    sources: list[str]
    dataset: str
    version: str | None = None
    workdir: str | None = None
    catalog_uri: str | None = None
    warehouse: str | None = None
    slices: str = "all"
    modality: str | None = None
    subject_pattern: str | None = None
    hash_source_uri: bool = False
    allow_burned_in: bool = False
    shard_bytes: int = DEFAULT_SHARD_BYTES
    partition_items: int | None = None
    executor: str = "local"
    dask_address: str | None = None
    workers: int | None = None


@dataclasses.dataclass
class ConvertOutcome:
    run_id: str
    summary: dict[str, Any]
    published: PublishResult | None
    shards: list[str]


def convert_partition(
    partition: Partition, options: ConvertOptions, shard_dir: str, workdir: str, shard_bytes: int
) -> PartitionResult:
    """One partition end to end (plain Python; the Prefect task wraps this)."""
    return run_partition(
        partition,
        [ConvertStage(options)],
        shard_dir=shard_dir,
        cache=PartitionCache(workdir),
        shard_bytes=shard_bytes,
        item_schema=WORK_ITEM_SCHEMA,
    )


def run_convert(request: ConvertRequest) -> ConvertOutcome:
    """Run the conversion as a Prefect flow and return its outcome."""
    from flows.prefect_flows import convert_flow

    return convert_flow(request)


def plan(request: ConvertRequest, settings: Settings, run_id: str) -> tuple[ConvertOptions, list[Partition], Any]:
    options = ConvertOptions(
        dataset=request.dataset,
        source=request.dataset,
        salt=settings.salt(),
        slices=SlicePolicy.parse(request.slices),
        modality=request.modality,
        subject_pattern=request.subject_pattern,
        allow_burned_in=request.allow_burned_in,
        hash_source_uri=request.hash_source_uri,
        pipeline_version=pipeline_version(),
        run_id=run_id,
    )
    found = discover(request.sources)
    per_partition = request.partition_items or items_per_partition(found.items, request.shard_bytes)
    partitions = plan_partitions(found.items, per_partition, options.fingerprint() + pipeline_version())
    return options, partitions, found


def finish(
    request: ConvertRequest,
    settings: Settings,
    run_id: str,
    started: float,
    found: Any,
    results: list[PartitionResult],
) -> ConvertOutcome:
    """Write the run record and publish; the catalog is the last thing touched."""
    rejects = list(found.rejects) + [r for res in results for r in res.rejects]
    shards = [s for res in results for s in res.shards]
    samples = sum(res.rows for res in results)
    published = None
    if shards:
        published = settings.catalog().publish(
            request.dataset,
            shards,
            version=request.version,
            summary={
                "run_id": run_id,
                "pipeline_version": pipeline_version(),
                "samples": samples,
                "inputs": len(found.items) + len(found.rejects),
                "rejects": len(rejects),
                "recipe": "convert",
            },
        )
    seconds = time.perf_counter() - started
    summary = write_run_record(
        settings.workdir,
        run_id,
        inputs_total=len(found.items) + len(found.rejects),
        rejects=rejects,
        samples_written=samples,
        seconds=seconds,
        extra={
            "dataset": request.dataset,
            "version": published.version if published else None,
            "snapshot_id": published.snapshot_id if published else None,
            "unchanged": published.unchanged if published else None,
            "partitions": len(results),
            "partitions_reused": sum(1 for r in results if r.cached),
            "shards": len(shards),
        },
    )
    return ConvertOutcome(run_id, summary, published, shards)


__all__ = ["ConvertRequest", "ConvertOutcome", "run_convert", "convert_partition", "new_run_id"]
