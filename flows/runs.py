"""Run records: ``<workdir>/runs/<run_id>/summary.json`` and ``rejects.parquet``."""

from __future__ import annotations

import collections
import datetime as dt
import json
import posixpath
import secrets
from collections.abc import Iterable
from typing import Any

import pyarrow.parquet as pq
from fsspec.core import url_to_fs

from curation.stages import Reject, rejects_to_table


def new_run_id() -> str:
    """Sortable and unique: UTC time to the second plus 6 random hex digits."""
    return dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


def run_dir(workdir: str, run_id: str) -> str:
    return posixpath.join(workdir, "runs", run_id)


def run_summary(
    run_id: str,
    *,
    inputs_total: int,
    rejects: list[Reject],
    samples_written: int,
    seconds: float,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The summary DESIGN.md defines, plus ``extra`` keys.

    ``inputs_converted + inputs_rejected == inputs_total``: an input is rejected when at
    least one reject names it (a series with one bad slice counts once).
    """
    rejected_inputs = {r.source_uri.split("#", 1)[0] for r in rejects}
    summary: dict[str, Any] = {
        "run_id": run_id,
        "inputs_total": inputs_total,
        "inputs_converted": inputs_total - len(rejected_inputs),
        "inputs_rejected": len(rejected_inputs),
        "samples_written": samples_written,
        "rejects_by_reason": dict(sorted(collections.Counter(r.reason for r in rejects).items())),
        "seconds": round(seconds, 3),
        "samples_per_second": round(samples_written / seconds, 2) if seconds > 0 else None,
    }
    summary.update(extra or {})
    return summary


def write_run_record(workdir: str, summary: dict[str, Any], rejects: Iterable[Reject]) -> str:
    """Write ``summary.json`` and ``rejects.parquet``; returns the run folder."""
    fs, root = url_to_fs(run_dir(workdir, summary["run_id"]))
    fs.makedirs(root, exist_ok=True)
    with fs.open(posixpath.join(root, "summary.json"), "w") as fh:
        json.dump(summary, fh, indent=2, default=str)
    with fs.open(posixpath.join(root, "rejects.parquet"), "wb") as fh:
        pq.write_table(rejects_to_table(rejects), fh)
    return root
