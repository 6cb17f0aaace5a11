"""Where a version came from: run, recipe, code version, inputs and the quality gate.

Everything but the source hashes is in the snapshot summary the build wrote
(``medcurate.run_id``, ``medcurate.recipe``, ``medcurate.pipeline_version``,
``medcurate.samples``, ``medcurate.gate*``); the source hashes are the distinct
``source_sha256`` of the version's rows (one column read, so it is cheap).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from catalogs.catalog import SUMMARY_PREFIX, VersionInfo

GATE_PREFIX = "gate"


@dataclasses.dataclass(frozen=True)
class Lineage:
    name: str
    version: str
    snapshot_id: int
    published_at: dt.datetime
    run_id: str | None
    recipe: str | None
    pipeline_version: str | None
    samples: int | None
    source_sha256: list[str]  # distinct content hashes of the inputs, sorted
    gate: dict[str, str]  # ``medcurate.gate*`` summary keys without the prefix; {} when none
    summary: dict[str, str]  # every ``medcurate.*`` key, without the prefix

    def as_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["published_at"] = self.published_at.isoformat()
        return out


def build_lineage(name: str, info: VersionInfo, source_hashes: pa.Table) -> Lineage:
    """A version's lineage from its summary and its ``source_sha256`` column."""
    own = info.medcurate
    samples = own.get("samples")
    hashes = pc.unique(source_hashes.column("source_sha256")).to_pylist() if source_hashes.num_rows else []
    return Lineage(
        name=name,
        version=info.version,
        snapshot_id=info.snapshot_id,
        published_at=info.published_at,
        run_id=own.get("run_id"),
        recipe=own.get("recipe"),
        pipeline_version=own.get("pipeline_version"),
        samples=int(samples) if samples and samples.isdigit() else None,
        source_sha256=sorted(h for h in hashes if h),
        gate={k: v for k, v in own.items() if k.startswith(GATE_PREFIX)},
        summary=own,
    )


__all__ = ["GATE_PREFIX", "Lineage", "SUMMARY_PREFIX", "build_lineage"]
