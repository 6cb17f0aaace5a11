"""The whole read path with the warehouse on s3:// (moto's S3 server on loopback)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import fsspec
import polars as pl
import pytest
from catalog_rows import ids, mixed_rows, publish_rows

from catalogs import open_catalog
from catalogs.catalog import DatasetCatalog
from catalogs.torch_loader import CatalogDataLoader


@pytest.fixture(scope="module")
def s3_catalog(s3_endpoint: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[DatasetCatalog, list[dict]]:
    fsspec.filesystem("s3").mkdir("warehouse-bucket")
    db = tmp_path_factory.mktemp("s3cat") / "catalog.db"
    # no s3.* properties given: the catalog takes endpoint and keys from the AWS_* variables
    cat = open_catalog(f"sqlite:///{db}", "s3://warehouse-bucket/wh")
    rows = mixed_rows(6)
    publish_rows(cat, "remote", rows, rows_per_group=3, version="v1", summary={"run_id": "r-s3"})
    return cat, rows


def test_shards_and_metadata_live_on_s3(s3_catalog: tuple[DatasetCatalog, list[dict]]) -> None:
    cat, rows = s3_catalog
    files = cat.files("remote", "v1")
    assert files and all(f.startswith("s3://warehouse-bucket/wh/medcurate/remote/data/") for f in files)
    s3 = fsspec.filesystem("s3")
    assert s3.ls("warehouse-bucket/wh/medcurate/remote/metadata")  # Iceberg metadata on S3 too
    assert cat.to_arrow("remote", "v1", columns=["sample_id"]).num_rows == len(rows) == 36
    assert cat.lineage("remote").run_id == "r-s3"


def test_torch_loader_reads_s3_exactly_once_with_workers(s3_catalog: tuple[DatasetCatalog, list[dict]]) -> None:
    cat, rows = s3_catalog
    seen = []
    for rank in range(2):
        dataset = cat.to_torch("remote", "v1", rank=rank, world_size=2, seed=1, columns=["images", "masks"])
        for batch in CatalogDataLoader(dataset, batch_size=4, num_workers=2):
            assert batch["image"].shape[1:] == (1, 128, 128)
            seen += batch["sample_id"]
    assert Counter(seen) == Counter(ids(rows))


def test_pushdown_hf_duckdb_and_polars_on_s3(s3_catalog: tuple[DatasetCatalog, list[dict]], s3_endpoint: str) -> None:
    cat, rows = s3_catalog
    dataset = cat.to_torch("remote", "v1", filter={"modality": "XR"}, decode=False)
    assert len(dataset.row_groups) == 4  # of 12
    assert sorted(i["sample_id"] for i in dataset) == sorted(r["sample_id"] for r in rows if r["modality"] == "XR")
    assert cat.to_hf("remote", "v1", columns=["sample_id"], filter={"split": "val"}).num_rows == 18
    con = cat.to_duckdb("remote", "v1")
    assert con.sql("SELECT count(*) FROM remote WHERE modality = 'MR'").fetchall() == [(12,)]
    storage = {"aws_endpoint_url": s3_endpoint, "aws_allow_http": "true", "aws_region": "us-east-1"}
    frame = pl.scan_parquet(cat.files("remote", "v1"), storage_options=storage).select(pl.len()).collect()
    assert frame.item() == 36


def test_local_catalog_file_stays_local(s3_catalog: tuple[DatasetCatalog, list[dict]]) -> None:
    cat, _ = s3_catalog
    assert cat.uri.startswith("sqlite:///") and Path(cat.uri[len("sqlite:///"):]).exists()
