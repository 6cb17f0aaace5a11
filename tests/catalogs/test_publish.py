"""Each build is one snapshot with exactly its shards; versions are tags that stay put."""

from __future__ import annotations

import pyarrow as pa
import pytest

from catalogs.catalog import CatalogError, DatasetCatalog
from curation.shards import ShardWriter
from tests.curation.test_shards import rows


def write(tmp_path, prefix: str, start: int, count: int) -> list[str]:
    with ShardWriter(str(tmp_path / "data"), prefix) as writer:
        writer.write(rows(start, count, size=16))
    return [s.path for s in writer.shards]


@pytest.fixture
def catalog(tmp_path) -> DatasetCatalog:
    return DatasetCatalog(f"sqlite:///{tmp_path}/catalog.db", str(tmp_path / "warehouse"))


def test_builds_are_snapshots_and_versions_are_pinned(tmp_path, catalog):
    a, b, c = write(tmp_path, "a", 0, 5), write(tmp_path, "b", 5, 5), write(tmp_path, "c", 10, 5)
    first = catalog.publish("ds", a + b, summary={"run_id": "r1", "samples": 10})
    assert first.version == "v1" and sorted(first.added) == sorted(a + b)
    second = catalog.publish("ds", b + c, summary={"run_id": "r2", "samples": 10})
    assert second.version == "v2" and second.added == c and second.removed == a
    assert catalog.files("ds", "v1") == sorted(a + b)
    assert catalog.files("ds") == sorted(b + c)  # latest
    v1_ids = catalog.to_arrow("ds", "v1", columns=["sample_id"]).column(0).to_pylist()
    assert sorted(v1_ids) == [f"id{i:06d}" for i in range(10)]
    assert catalog.versions("ds")[0].medcurate["run_id"] == "r1"
    assert [h["versions"] for h in catalog.history("ds")] == [["v1"], ["v2"]]
    diff = catalog.diff("ds", "v1", "v2")
    assert diff["added"] == [f"id{i:06d}" for i in range(10, 15)]
    assert diff["removed"] == [f"id{i:06d}" for i in range(5)]
    assert diff["changed"] == []


def test_an_unchanged_build_makes_no_snapshot(tmp_path, catalog):
    shards = write(tmp_path, "a", 0, 3)
    first = catalog.publish("ds", shards)
    again = catalog.publish("ds", shards, version="nightly-2")
    assert again.unchanged and again.snapshot_id == first.snapshot_id
    assert len(catalog.history("ds")) == 1
    assert {v.version for v in catalog.versions("ds")} == {"v1", "nightly-2"}


def test_an_unchanged_build_names_a_version_that_exists(tmp_path, catalog):
    """The latest of several tags on the snapshot (v10 after v9), and a new tag when the
    snapshot has none (a publish that stopped between its commit and its tag)."""
    shards = write(tmp_path, "a", 0, 3)
    catalog.publish("ds", shards, version="v9")
    assert catalog.publish("ds", shards, version="v10").unchanged
    assert catalog.publish("ds", shards).version == "v10"
    table = catalog._table("ds")
    table.manage_snapshots().remove_tag("v9").remove_tag("v10").commit()
    untagged = catalog.publish("ds", shards)
    assert untagged.unchanged and untagged.version == "v1"
    assert [v.version for v in catalog.versions("ds")] == ["v1"]
    assert catalog.files("ds", "v1") == sorted(shards)


def test_errors_name_the_problem(tmp_path, catalog):
    shards = write(tmp_path, "a", 0, 2)
    catalog.publish("ds", shards, version="v1")
    with pytest.raises(CatalogError, match="already exists"):
        catalog.publish("ds", shards, version="v1")
    with pytest.raises(CatalogError, match="no version 'v9'"):
        catalog.files("ds", "v9")
    with pytest.raises(CatalogError, match=r"no dataset named 'nope' .*; its datasets: ds \(another catalog\?"):
        catalog.versions("nope")
    with pytest.raises(CatalogError, match="not valid"):
        catalog.publish("Bad-Name", shards)


def test_diff_digests_read_shards_in_the_canonical_schema(tmp_path):
    """A shard written before a column existed (here: without ``caption``) reads with it
    null, so its rows equal the same rows written with the column null; a changed value
    still differs."""
    import pyarrow.parquet as pq

    from catalogs.catalog import _row_digests

    table = rows(0, 2, size=8)
    pq.write_table(table, tmp_path / "new.parquet")
    pq.write_table(table.drop_columns(["caption"]), tmp_path / "old.parquet")
    edited = table.set_column(table.schema.get_field_index("caption"), "caption", pa.array(["a", None], pa.string()))
    pq.write_table(edited, tmp_path / "edited.parquet")
    new, old, changed = (_row_digests([str(tmp_path / f"{n}.parquet")]) for n in ("new", "old", "edited"))
    assert new == old and set(new) == {"id000000", "id000001"}
    assert changed["id000000"] != new["id000000"] and changed["id000001"] == new["id000001"]
