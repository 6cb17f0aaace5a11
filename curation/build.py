"""Build plans: what a build converts, with which stages, before any engine runs it.

A :class:`BuildPlan` is engine-free: work items (one row per source item), the stages
that turn a batch of items into canonical samples, and the fingerprint of everything
that changes the output (recipe parameters, options, code version). ``flows/`` cuts the
items into partitions, runs the stages per partition on an engine, gates and
publishes. Planners are registered by recipe name: ``convert`` here, the dataset
families in ``curation.recipes``.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from converters.base import WORK_ITEM_SCHEMA, ConvertOptions, SlicePolicy, burned_in_policy
from curation.partitions import (
    Partition,
    PartitionCache,
    PartitionResult,
    RemoteStages,
    run_partition,
)
from curation.shards import DEFAULT_SHARD_BYTES
from curation.stages import Reject, Stage
from curation.version import pipeline_version

if TYPE_CHECKING:
    from converters.discover import ParallelMap


@dataclasses.dataclass
class BuildPlan:
    dataset: str
    recipe: str
    items: list[dict[str, Any]]
    stage_factory: Callable[[], list[Stage]]  # picklable: engines call it once per worker
    fingerprint: str  # everything but the run id that changes the output
    item_schema: pa.Schema = WORK_ITEM_SCHEMA
    rejects: list[Reject] = dataclasses.field(default_factory=list)  # rejected before conversion
    partition_items: int | None = None
    shard_bytes: int = DEFAULT_SHARD_BYTES
    family: str | None = None  # selects the quality suites
    gate: dict[str, Any] = dataclasses.field(default_factory=dict)  # tolerances from the recipe
    gpu_stage_factory: Callable[[], list[Stage]] | None = None  # stages for Ray actor pools

    @property
    def inputs_total(self) -> int:
        return len(self.items) + len({r.source_uri for r in self.rejects})


@dataclasses.dataclass(frozen=True)
class PlanContext:
    """What every planner receives: where the sources are and how to name the output."""

    sources: tuple[str, ...]
    dataset: str
    salt: str
    run_id: str
    options: dict[str, Any]
    workdir: str = ""  # the build's workdir: its cache/hashes/ spares re-reading unchanged files
    #: runs discovery's per-file reading and hashing on other cores (``converters.discover``)
    parallel_map: ParallelMap | None = None


def build_partition(
    plan: BuildPlan,
    partition: Partition,
    shard_dir: str,
    workdir: str,
    remote: RemoteStages | None = None,
) -> PartitionResult:
    """One partition end to end: the unit a Prefect task or a local worker process runs
    (here, not in ``flows``, so a worker imports only the pipeline, not the catalog).

    ``remote`` runs the plan's GPU stages (an actor pool); without it they run here.
    """
    stages = plan.stage_factory()
    if remote is None and plan.gpu_stage_factory is not None:
        stages = stages + plan.gpu_stage_factory()
    return run_partition(
        partition,
        stages,
        shard_dir=shard_dir,
        cache=PartitionCache(workdir),
        shard_bytes=plan.shard_bytes,
        item_schema=plan.item_schema,
        remote=remote,
    )


Planner = Callable[[PlanContext], BuildPlan]
PLANNERS: dict[str, Planner] = {}


def register_planner(name: str) -> Callable[[Planner], Planner]:
    def decorator(func: Planner) -> Planner:
        PLANNERS[name] = func
        return func

    return decorator


def _convert_stages(options: ConvertOptions) -> list[Stage]:
    from converters.stage import ConvertStage

    return [ConvertStage(options)]


CONVERT_OPTION_KEYS = (
    "slices",
    "modality",
    "subject_pattern",
    "hash_source_uri",
    "allow_burned_in",
    "burned_in",
    "partition_items",
    "shard_bytes",
    "label_names",
    "deid_dates",
    "item_timeout_s",
)


@register_planner("convert")
def plan_convert(ctx: PlanContext) -> BuildPlan:
    """``medcurate convert``: every image in the sources, one sample per 2D slice/page."""
    from converters.discover import discover

    unknown = set(ctx.options) - set(CONVERT_OPTION_KEYS)
    if unknown:
        raise ValueError(f"unknown convert option(s) {sorted(unknown)}; known: {list(CONVERT_OPTION_KEYS)}")
    options = ConvertOptions(
        dataset=ctx.dataset,
        source=ctx.dataset,
        salt=ctx.salt,
        slices=SlicePolicy.parse(str(ctx.options.get("slices", "all"))),
        modality=ctx.options.get("modality"),
        subject_pattern=ctx.options.get("subject_pattern"),
        allow_burned_in=bool(ctx.options.get("allow_burned_in", False)),
        burned_in=burned_in_policy(ctx.options.get("burned_in")),
        hash_source_uri=bool(ctx.options.get("hash_source_uri", False)),
        label_names=tuple(sorted((int(k), str(v)) for k, v in (ctx.options.get("label_names") or {}).items())),
        deid_dates=str(ctx.options.get("deid_dates") or "shift"),
        item_timeout_s=float(ctx.options["item_timeout_s"]) if ctx.options.get("item_timeout_s") else None,
        pipeline_version=pipeline_version(),
        run_id=ctx.run_id,
    )
    from curation.hash_cache import open_cache

    with open_cache(ctx.workdir) as hashes:
        found = discover(ctx.sources, hashes, ctx.parallel_map)
    return BuildPlan(
        dataset=ctx.dataset,
        recipe="convert",
        items=found.items,
        stage_factory=functools.partial(_convert_stages, options),
        fingerprint=options.fingerprint() + pipeline_version(),
        rejects=found.rejects,
        partition_items=ctx.options.get("partition_items"),
        shard_bytes=int(ctx.options.get("shard_bytes") or DEFAULT_SHARD_BYTES),
        family=None,
    )


def make_plan(recipe: str, ctx: PlanContext) -> BuildPlan:
    if recipe not in PLANNERS:
        import curation.recipes  # noqa: F401  - the families register themselves on import
    if recipe not in PLANNERS:
        raise KeyError(f"no recipe named {recipe!r}; known: {sorted(PLANNERS)}")
    return PLANNERS[recipe](ctx)
