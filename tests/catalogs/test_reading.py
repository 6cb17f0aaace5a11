"""Version pinning, lineage and the one-liners for HF datasets, polars and DuckDB."""

from __future__ import annotations

from typing import Any

import duckdb
import polars as pl
import pyarrow.dataset as pads
import pytest
from catalog_rows import ids, make_rows, publish_rows

from catalogs import open_catalog
from catalogs.catalog import DatasetCatalog


def test_pinned_version_keeps_reading_after_a_later_publish(catalog: DatasetCatalog) -> None:
    first = make_rows(12, seed=1)
    publish_rows(catalog, "ct", first, prefix="build1", version="v1")
    latest_then = catalog.to_torch("ct", decode=False)  # None = latest = v1, resolved now
    assert latest_then.version == "v1"

    second = make_rows(18, seed=2)  # a rebuild with other inputs and other shard names
    result = publish_rows(catalog, "ct", second, prefix="build2", version="v2")
    assert result.removed  # v1's shards left the current snapshot

    assert sorted(i["sample_id"] for i in latest_then) == sorted(ids(first))
    assert sorted(i["sample_id"] for i in catalog.to_torch("ct", "v1", decode=False)) == sorted(ids(first))
    assert sorted(i["sample_id"] for i in catalog.to_torch("ct", decode=False)) == sorted(ids(second))
    assert catalog.to_hf("ct", "v1").num_rows == 12
    assert [v.version for v in catalog.versions("ct")] == ["v1", "v2"]


def test_lineage_reports_run_recipe_code_sources_and_gate(catalog: DatasetCatalog) -> None:
    rows = make_rows(9, seed=3)
    summary = {
        "run_id": "run-42",
        "recipe": "imed",
        "pipeline_version": "0.1.0",
        "samples": 9,
        "gate": "passed",
        "gate.failed_expectations": 0,
    }
    publish_rows(catalog, "ct", rows, version="v1", summary=summary)
    lineage = catalog.lineage("ct", "v1")
    assert (lineage.run_id, lineage.recipe, lineage.pipeline_version, lineage.samples) == ("run-42", "imed", "0.1.0", 9)
    assert lineage.source_sha256 == sorted({r["source_sha256"] for r in rows}) and len(lineage.source_sha256) == 9
    assert lineage.gate == {"gate": "passed", "gate.failed_expectations": "0"}
    assert lineage.as_dict()["version"] == "v1"

    publish_rows(catalog, "ct", make_rows(3, seed=4), prefix="b2", version="v2")
    bare = catalog.lineage("ct")  # latest, built without a gate
    assert bare.version == "v2" and bare.gate == {} and bare.run_id is None


def test_hf_dataset_with_pushdown_and_streaming(mixed: Any) -> None:
    cat, rows = mixed
    train_ct = [r["sample_id"] for r in rows if r["modality"] == "CT" and r["split"] == "train"]
    hf = cat.to_hf("mixed", "v1", columns=["sample_id", "modality", "caption"], filter={"modality": "CT", "split": "train"})
    assert sorted(hf["sample_id"]) == sorted(train_ct)
    assert set(hf.column_names) == {"sample_id", "modality", "caption"}
    streamed = cat.to_hf("mixed", "v1", columns=["sample_id"], filter=pads.field("split") == "val", streaming=True)
    assert len(list(streamed)) == 36


def test_to_arrow_takes_a_mapping_or_an_expression(mixed: Any) -> None:
    cat, rows = mixed
    wanted = sorted(r["sample_id"] for r in rows if r["modality"] in ("CT", "MR") and r["split"] == "val")
    by_mapping = cat.to_arrow("mixed", "v1", columns=["sample_id"], filter={"modality": ["CT", "MR"], "split": "val"})
    by_expression = cat.to_arrow(
        "mixed", "v1", columns=["sample_id"], filter=pads.field("modality").isin(["CT", "MR"]) & (pads.field("split") == "val")
    )
    assert sorted(by_mapping.column(0).to_pylist()) == sorted(by_expression.column(0).to_pylist()) == wanted
    assert wanted


def test_sql_engines_read_the_version_file_list(mixed: Any) -> None:
    cat, rows = mixed
    files = cat.files("mixed", "v1")
    counts = (
        pl.scan_parquet(files).group_by("modality").agg(pl.len().alias("n")).sort("modality").collect()
    )
    assert counts.to_dicts() == [{"modality": m, "n": 24} for m in ("CT", "MR", "XR")]

    listed = ", ".join(f"'{f}'" for f in files)
    n_val = duckdb.sql(f"SELECT count(*) FROM read_parquet([{listed}]) WHERE split = 'val'").fetchall()
    assert n_val == [(36,)]
    con = cat.to_duckdb("mixed", "v1", view="mixed_v1")
    got = con.sql("SELECT sample_id FROM mixed_v1 WHERE modality = 'XR' ORDER BY 1").fetchall()
    assert [g[0] for g in got] == sorted(r["sample_id"] for r in rows if r["modality"] == "XR")


def test_open_catalog_uses_the_workdir_layout(tmp_path: Any) -> None:
    cat = open_catalog(workdir=str(tmp_path))
    publish_rows(cat, "ct", make_rows(3), version="v1")
    again = open_catalog(workdir=str(tmp_path))
    assert again.list() == ["ct"] and again.files("ct")[0].startswith(str(tmp_path / "warehouse"))
    with pytest.raises(Exception, match="no version 'v9'"):
        again.to_torch("ct", "v9")
