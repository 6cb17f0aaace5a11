"""What a build reports and publishes when its gate passes within tolerance."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from catalogs import open_catalog
from flows import build as flows_build
from flows.build import BuildRequest, run_build_inline


def test_quarantined_rows_are_not_counted_as_written_when_the_gate_passes_within_tolerance(tmp_path: Path, monkeypatch):
    source = tmp_path / "src"
    source.mkdir()
    rng = np.random.default_rng(0)
    for index in range(4):
        pixels = rng.integers(0, 255, (48, 48), dtype=np.uint8) if index % 2 else np.zeros((48, 48), np.uint8)
        Image.fromarray(pixels).save(source / f"img{index}.png")  # even: blank, fails the dynamic-range rule
    make_plan = flows_build.make_plan

    def tolerant_plan(recipe, context):
        plan = make_plan(recipe, context)
        plan.gate = {"max_failed_shard_fraction": 0.6}  # as a recipe's ``gate:`` would say
        return plan

    monkeypatch.setattr(flows_build, "make_plan", tolerant_plan)
    request = BuildRequest(
        recipe="convert", sources=[str(source)], dataset="f", workdir=str(tmp_path / "w"),
        options={"modality": "XR", "partition_items": 1}, workers=1,
    )
    summary = run_build_inline(request).summary
    assert summary["gate"]["passed"] is True and len(summary["gate"]["quarantined"]) == 2
    assert summary["samples_written"] == 2 and summary["gate"]["samples_quarantined"] == 2
    assert 0 < summary["gate"]["data_docs_seconds"] < summary["gate"]["seconds"]  # evidence: part of the gate's time
    catalog = open_catalog(workdir=str(tmp_path / "w"))
    assert int(catalog.version_info("f").medcurate["samples"]) == catalog.to_arrow("f").num_rows == 2


def test_a_build_that_fails_at_publish_still_leaves_its_run_record(tmp_path: Path, monkeypatch):
    """Exit 1 means "the message and the run record say what" (docs/cli.md)."""
    import json

    import pytest

    from catalogs.catalog import DatasetCatalog

    source = tmp_path / "src"
    source.mkdir()
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (48, 48), dtype=np.uint8)).save(source / "a.png")

    def refuse(*args, **kwargs):
        raise OSError("warehouse is read-only")

    monkeypatch.setattr(DatasetCatalog, "publish", refuse)
    request = BuildRequest(recipe="convert", sources=[str(source)], dataset="f", workdir=str(tmp_path / "w"), options={"modality": "XR"})
    with pytest.raises(OSError, match="read-only"):
        run_build_inline(request)
    (record,) = (tmp_path / "w" / "runs").glob("*/summary.json")
    summary = json.loads(record.read_text())
    assert summary["version"] is None and summary["samples_written"] == 1
    assert summary["error"] == "publish failed: OSError: warehouse is read-only"
    assert (record.parent / "rejects.parquet").exists()
