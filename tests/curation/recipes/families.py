"""Helpers of the family tests: build a family without Prefect, read what it published."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq


@dataclasses.dataclass
class Built:
    """A family build: its summary, published rows, plan rejects and source tree."""

    summary: dict[str, Any]
    table: pa.Table
    rejects: list[Any]
    tree: Path

    @property
    def rows(self) -> list[dict[str, Any]]:
        return self.table.to_pylist()

    def reasons(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for reject in self.rejects:
            out.setdefault(reject.reason, []).append(reject.source_uri)
        return out


def build_family(family: str, workdir: Path, tree: Path, options: dict[str, Any] | None = None) -> Built:
    from flows.build import BuildRequest, run_build_inline
    from flows.runs import run_dir

    request = BuildRequest(recipe=family, sources=[str(tree)], dataset=family, options=options or {}, workdir=str(workdir))
    outcome = run_build_inline(request)
    table = pa.concat_tables([pq.read_table(s) for s in outcome.shards]) if outcome.shards else None
    rejects_path = Path(run_dir(str(workdir), outcome.run_id)) / "rejects.parquet"
    from curation.stages import Reject

    rejects = [Reject(**r) for r in pq.read_table(rejects_path).to_pylist()]
    assert table is not None, outcome.summary
    return Built(outcome.summary, table, rejects, tree)


def assert_subject_level_splits(rows: list[dict[str, Any]]) -> None:
    splits: dict[str, set[str]] = {}
    for row in rows:
        splits.setdefault(row["subject_key"], set()).add(row["split"])
    assert all(len(s) == 1 for s in splits.values()), {k: v for k, v in splits.items() if len(v) > 1}
