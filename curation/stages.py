"""The Stage contract: plain Python over Arrow tables, engine-free.

A stage knows nothing of Prefect, Dask or Ray. ``flows/`` maps stages onto engines:
the local runner calls ``setup()`` once and ``process()`` per batch; the Ray runner
builds one stage per actor (so ``setup()`` loads a model or kernel once per worker)
and sizes the actor by ``resources``. The shape follows NeMo Curator's
``stages/base.py`` (typed stage, declared resources, setup once per worker) and
datatrove's filters (a dropped item carries its reason).

Every input item ends converted or rejected: a stage that cannot handle a row does not
raise, it returns a :class:`Reject` for it and carries on.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, ClassVar, NamedTuple

import pyarrow as pa

REJECT_SCHEMA = pa.schema(
    [
        pa.field("source_uri", pa.string(), nullable=False),
        pa.field("stage", pa.string(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("detail", pa.string(), nullable=False),
    ]
)


@dataclasses.dataclass(frozen=True)
class Resources:
    """What one worker running a stage needs; engines size workers from it."""

    cpus: float = 1.0
    gpus: float = 0.0
    memory_gb: float = 1.0

    def __post_init__(self) -> None:
        if self.cpus < 0 or self.gpus < 0 or self.memory_gb <= 0:
            raise ValueError(f"resources must be non-negative with memory > 0, got {self}")

    @property
    def wants_gpu(self) -> bool:
        return self.gpus > 0


@dataclasses.dataclass(frozen=True)
class Reject:
    """One input item that produced no sample, and why.

    ``reason`` is a short stable code (``unreadable``, ``truncated``, ``empty_file``,
    ``bad_header`` ...) that summaries count; ``detail`` is the human sentence naming
    the file, the tag or value, and what was expected.
    """

    source_uri: str
    stage: str
    reason: str
    detail: str

    def as_row(self) -> dict[str, str]:
        return dataclasses.asdict(self)


def rejects_to_table(rejects: Iterable[Reject]) -> pa.Table:
    rows = [r.as_row() for r in rejects]
    if not rows:
        return REJECT_SCHEMA.empty_table()
    return pa.Table.from_pylist(rows, schema=REJECT_SCHEMA)


class StageOutput(NamedTuple):
    """What ``process`` returns: the rows that go on, and the rows that were rejected."""

    table: pa.Table
    rejects: list[Reject]


class Stage(ABC):
    """A named, resource-declaring transform of Arrow tables.

    Subclasses set ``name`` and ``resources`` and implement ``process``. ``setup`` runs
    once per worker before the first batch (load a model, precompute an operator);
    keep ``__init__`` cheap and picklable because engines ship the stage to workers.
    """

    name: ClassVar[str] = "stage"
    resources: Resources = Resources()
    #: rows per call that suit this stage (engines may pass fewer)
    batch_size: int = 64
    #: schema of the rows ``process`` returns when it differs from its input's
    output_schema: pa.Schema | None = None

    def setup(self) -> None:  # noqa: B027 - optional hook, deliberately empty
        """Prepare per-worker state once. Default: nothing to prepare."""

    def teardown(self) -> None:  # noqa: B027 - optional hook, deliberately empty
        """Release per-worker state. Default: nothing to release."""

    @abstractmethod
    def process(self, batch: pa.Table) -> StageOutput:
        """Transform one batch; reject rows it cannot handle instead of raising."""

    def process_stream(self, batch: pa.Table) -> Iterator[StageOutput]:
        """``process`` in pieces, for stages whose output can be much larger than their input
        (one DICOM series item → hundreds of slices): engines write each piece before
        asking for the next, so memory is bounded by a piece, not by the batch.
        Default: the whole ``process`` output as one piece."""
        yield self.process(batch)

    def params(self) -> dict[str, Any]:
        """Parameters recorded in provenance (``steps_json``); override to add more."""
        return {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, resources={self.resources})"


def iter_batches(table: pa.Table, batch_size: int) -> Iterable[pa.Table]:
    """Slice a table into zero-copy batches of at most ``batch_size`` rows."""
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    for offset in range(0, table.num_rows, batch_size):
        yield table.slice(offset, batch_size)


def run_stages_locally(stages: Sequence[Stage], table: pa.Table) -> StageOutput:
    """Run stages in order in this process: the reference engine that tests use.

    Each stage is set up once, fed batches of its preferred size, and torn down.
    Rejects of every stage are collected in order.
    """
    rejects: list[Reject] = []
    for stage in stages:
        stage.setup()
        try:
            parts: list[pa.Table] = []
            for batch in iter_batches(table, stage.batch_size):
                out = stage.process(batch)
                rejects.extend(out.rejects)
                if out.table.num_rows:
                    parts.append(out.table)
            table = concat_or_empty(parts, like=stage.output_schema or table)
        finally:
            stage.teardown()
    return StageOutput(table, rejects)


def concat_or_empty(parts: Sequence[pa.Table], *, like: pa.Table | pa.Schema) -> pa.Table:
    """Concatenate tables; an empty list gives an empty table of ``like``'s schema."""
    if parts:
        return pa.concat_tables(parts, promote_options="default")
    schema = like if isinstance(like, pa.Schema) else like.schema
    return schema.empty_table()
