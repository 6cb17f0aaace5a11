"""`medcurate catalog clean`: shard files no version holds go; every version still reads."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from catalogs import open_catalog
from catalogs.catalog import CatalogError
from flows.build import BuildOutcome, BuildRequest, run_build_inline
from flows.cli import main
from flows.maintenance import clean_dataset_files, expire_dataset_versions
from flows.settings import Settings

TWO_DAYS_AGO = time.time() - 2 * 24 * 3600


def write_images(folder: Path, count: int, seed: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        Image.fromarray(rng.integers(0, 255, (48, 48), dtype=np.uint8)).save(folder / f"img{i:04d}.png")


def build(source: Path, work: Path) -> BuildOutcome:
    return run_build_inline(BuildRequest(recipe="convert", sources=[str(source)], dataset="kept", workdir=str(work),
                                  options={"partition_items": 8, "modality": "XR"}))


def digest(paths: list[str]) -> dict[str, str]:
    return {os.path.basename(p): hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in paths}


@pytest.fixture
def two_versions(tmp_path: Path) -> tuple[Path, Path, dict[str, Path]]:
    """v1 and v2 of a dataset (v2 changed one image, so some v1 files only v1 holds), an
    unpublished finished partition, and three files nothing holds: an old copy of a
    shard, an old ``_tmp-`` leftover, and a copy written just now. Every file but the
    last is two days old."""
    src, work = tmp_path / "src", tmp_path / "w"
    write_images(src, 30, seed=0)
    build(src, work)
    write_images(tmp_path / "new", 1, seed=7)
    (tmp_path / "new" / "img0000.png").replace(src / "img0012.png")
    build(src, work)
    data = Path(open_catalog(workdir=str(work)).data_dir("kept"))
    shard = next(data.glob("*.parquet"))
    extra = {
        "orphan": data / "part-0123456789abcdef01234567-00000-deadbeef.parquet",
        "tmp": data / "_tmp-0123456789abcdef.parquet",
        "unpublished": data / "part-fedcba9876543210fedcba98-00000.parquet",
        "young": data / "part-00000000000000000000000a-00000.parquet",
    }
    for path in extra.values():
        shutil.copyfile(shard, path)
    manifest = {"key": "fedcba9876543210fedcba98", "shards": [str(extra["unpublished"])], "rows": 1, "items": 1,
                "rejects": [], "converted_items": 1, "seconds": 0.1, "stages": {}, "worker": "test"}
    (work / "cache" / "partitions" / "fedcba9876543210fedcba98.json").write_text(json.dumps(manifest))
    for path in data.iterdir():
        if path != extra["young"]:
            os.utime(path, (TWO_DAYS_AGO, TWO_DAYS_AGO))
    return work, data, extra


def test_clean_removes_only_what_nothing_holds(two_versions: tuple[Path, Path, dict[str, Path]]) -> None:
    work, data, extra = two_versions
    catalog = open_catalog(workdir=str(work))
    v1, v2 = catalog.files("kept", "v1"), catalog.files("kept", "v2")
    assert set(v1) - set(v2), "v2 must have replaced some of v1's files"
    before = digest(v1) | digest(v2)
    rows = {v: catalog.to_arrow("kept", v).num_rows for v in ("v1", "v2")}

    dry = clean_dataset_files(Settings.resolve(workdir=str(work)), "kept", dry_run=True)
    assert sorted(dry.removed) == sorted([str(extra["orphan"]), str(extra["tmp"])])
    assert all(p.exists() for p in extra.values())  # a dry run removes nothing

    report = clean_dataset_files(Settings.resolve(workdir=str(work)), "kept")
    assert sorted(report.removed) == sorted(dry.removed)
    assert report.removed_bytes == 2 * extra["young"].stat().st_size
    assert not extra["orphan"].exists() and not extra["tmp"].exists()
    assert extra["unpublished"].exists() and extra["young"].exists()
    assert (report.held_by_versions, report.kept_for_reuse, report.kept_young) == (len(set(v1) | set(v2)), 1, 1)
    assert digest(v1) | digest(v2) == before  # every file of every version, byte for byte
    assert {v: catalog.to_arrow("kept", v).num_rows for v in ("v1", "v2")} == rows
    again = clean_dataset_files(Settings.resolve(workdir=str(work)), "kept")
    assert again.removed == []


def test_clean_from_the_cli(two_versions: tuple[Path, Path, dict[str, Path]], capsys: pytest.CaptureFixture[str]) -> None:
    work, _, extra = two_versions
    assert main(["--workdir", str(work), "catalog", "clean", "kept", "--dry-run"]) == 0
    listed = capsys.readouterr()
    assert sorted(listed.out.split()) == sorted([str(extra["orphan"]), str(extra["tmp"])])
    assert "kept: would remove 2 file(s)" in listed.err and "1 younger than 24 h" in listed.err
    assert main(["--workdir", str(work), "catalog", "clean", "kept", "--min-age-hours", "0"]) == 0
    assert not extra["young"].exists() and not extra["orphan"].exists() and extra["unpublished"].exists()
    assert main(["--workdir", str(work), "catalog", "clean", "no_such_dataset"]) == 2


def test_clean_on_object_storage_keeps_every_held_shard(tmp_path: Path) -> None:
    """On s3:// the catalog, the manifests and the listing spell paths three ways; a file
    any of them holds must survive even with no age guard."""
    import fsspec

    from tests.helpers import XRAY_DIR
    from tests.s3_support import moto_server, s3_environment

    bucket = "medcurate-clean"
    request = BuildRequest(
        recipe="convert", sources=[f"s3://{bucket}/src"], dataset="kept", workdir=f"s3://{bucket}/work",
        warehouse=f"s3://{bucket}/wh", catalog_uri=f"sqlite:///{tmp_path}/catalog.db",
        options={"modality": "XR", "partition_items": 1},
    )
    with moto_server() as endpoint, s3_environment(endpoint):
        fs = fsspec.filesystem("s3")
        fs.mkdir(bucket)
        fs.put(str(XRAY_DIR) + "/", f"{bucket}/src/", recursive=True)
        outcome = run_build_inline(request)
        assert outcome.published is not None and outcome.shards
        orphan = f"s3://{bucket}/wh/medcurate/kept/data/part-0123456789abcdef01234567-00000-deadbeef.parquet"
        fs.copy(outcome.shards[0], orphan)
        settings = Settings.resolve(workdir=request.workdir, warehouse=request.warehouse, catalog_uri=request.catalog_uri)
        report = clean_dataset_files(settings, "kept", min_age_s=0)
        assert report.removed == [orphan] and not fs.exists(orphan)
        assert report.held_by_versions == len(outcome.shards) and all(fs.exists(s) for s in outcome.shards)
        assert open_catalog(uri=request.catalog_uri, warehouse=request.warehouse).to_arrow("kept").num_rows == outcome.summary["samples_written"]


def age(folder: Path) -> None:
    for path in folder.iterdir():
        os.utime(path, (TWO_DAYS_AGO, TWO_DAYS_AGO))


def test_a_workdir_spelled_through_a_symlink_keeps_every_held_file(tmp_path: Path) -> None:
    """Built as ``link/w``, cleaned as ``real/w`` (what ``cd`` and ``abspath`` give):
    the catalog's paths and the listing differ in spelling, not in files."""
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    write_images(tmp_path / "src", 20, seed=0)
    build(tmp_path / "src", tmp_path / "link" / "w")
    data = tmp_path / "real" / "w" / "warehouse" / "medcurate" / "kept" / "data"
    age(data)
    files = sorted(p.name for p in data.iterdir())
    report = clean_dataset_files(Settings.resolve(workdir=str(tmp_path / "real" / "w")), "kept", min_age_s=0)
    assert report.removed == [] and report.held_by_versions == len(files) > 1
    assert sorted(p.name for p in data.iterdir()) == files


def test_a_folder_none_of_whose_files_a_version_holds_is_left_alone(tmp_path: Path) -> None:
    """The catalog's versions live in one warehouse, the clean is pointed at another
    (a mistyped --warehouse): nothing is removed, and the error says why."""
    from catalogs.catalog import CatalogError

    write_images(tmp_path / "src", 10, seed=0)
    build(tmp_path / "src", tmp_path / "w")
    elsewhere = tmp_path / "other" / "medcurate" / "kept" / "data"
    elsewhere.mkdir(parents=True)
    (elsewhere / "part-0123456789abcdef01234567-00000.parquet").write_bytes(b"PAR1")
    age(elsewhere)
    settings = Settings.resolve(workdir=str(tmp_path / "w"), catalog_uri=f"sqlite:///{tmp_path / 'w' / 'catalog.db'}",
                                warehouse=str(tmp_path / "other"))
    with pytest.raises(CatalogError, match="nothing removed"):
        clean_dataset_files(settings, "kept", min_age_s=0)
    assert len(list(elsewhere.iterdir())) == 1


def test_finished_partitions_are_found_in_a_workdir_with_glob_characters(tmp_path: Path) -> None:
    write_images(tmp_path / "src", 10, seed=0)
    work = tmp_path / "w[1]"
    build(tmp_path / "src", work)
    data = Path(open_catalog(workdir=str(work)).data_dir("kept"))
    unpublished = data / "part-fedcba9876543210fedcba98-00000.parquet"
    shutil.copyfile(next(data.glob("*.parquet")), unpublished)
    manifest = {"key": "fedcba9876543210fedcba98", "shards": [str(unpublished)], "rows": 1, "items": 1,
                "rejects": [], "converted_items": 1, "seconds": 0.1, "stages": {}, "worker": "test"}
    (work / "cache" / "partitions" / "fedcba9876543210fedcba98.json").write_text(json.dumps(manifest))
    age(data)
    report = clean_dataset_files(Settings.resolve(workdir=str(work)), "kept", min_age_s=0)
    assert report.removed == [] and report.kept_for_reuse == 1 and unpublished.exists()


@pytest.fixture
def four_versions(tmp_path: Path) -> tuple[Path, Path]:
    """v1..v4 of a dataset, each build changing the same image again (so each version has
    a partition, hence files, only it holds)."""
    src, work = tmp_path / "src", tmp_path / "w"
    write_images(src, 30, seed=0)
    build(src, work)
    for seed in (11, 12, 13):
        write_images(tmp_path / f"new{seed}", 1, seed=seed)
        (tmp_path / f"new{seed}" / "img0000.png").replace(src / "img0005.png")
        build(src, work)
    return src, work


def test_expire_keeps_the_latest_and_named_versions_and_releases_the_rest(four_versions: tuple[Path, Path]) -> None:
    src, work = four_versions
    catalog = open_catalog(workdir=str(work))
    files = {v: catalog.files("kept", v) for v in ("v1", "v2", "v3", "v4")}
    rows = {v: catalog.to_arrow("kept", v).sort_by("sample_id") for v in files}
    only_v2 = {os.path.basename(p) for p in files["v2"]} - {os.path.basename(p) for v in ("v1", "v3", "v4") for p in files[v]}
    assert only_v2 and len(catalog.history("kept")) == 4

    v2_snapshot = {v.version: v.snapshot_id for v in catalog.versions("kept")}["v2"]
    settings = Settings.resolve(workdir=str(work))
    dry = expire_dataset_versions(settings, "kept", keep_last=2, keep=["v1"], dry_run=True)
    assert (dry.dropped, dry.kept) == (["v2"], ["v1", "v3", "v4"])
    assert [v.version for v in catalog.versions("kept")] == ["v1", "v2", "v3", "v4"]  # dry run: nothing changed

    result = expire_dataset_versions(settings, "kept", keep_last=2, keep=["v1"])
    catalog = open_catalog(workdir=str(work))
    assert [v.version for v in catalog.versions("kept")] == ["v1", "v3", "v4"]
    assert result.expired_snapshots == [v2_snapshot]
    assert [h["versions"] for h in catalog.history("kept")] == [["v1"], ["v3"], ["v4"]]
    for version in ("v1", "v3", "v4"):  # the kept versions read exactly as before
        assert catalog.files("kept", version) == files[version]
        assert catalog.to_arrow("kept", version).sort_by("sample_id").equals(rows[version])
    with pytest.raises(CatalogError, match="no version 'v2'"):
        catalog.files("kept", "v2")

    # the files only v2 held are no longer kept by anything: clean removes exactly them
    report = clean_dataset_files(settings, "kept", min_age_s=0)
    assert {os.path.basename(p) for p in report.removed} == only_v2
    assert all(os.path.exists(p) for v in ("v1", "v3", "v4") for p in files[v])
    # and a rebuild of the same sources still reuses every partition of v4 (nothing converted, no new version)
    again = build(src, work)
    assert again.summary["partitions_reused"] == again.summary["partitions"] > 0
    assert [v.version for v in open_catalog(workdir=str(work)).versions("kept")] == ["v1", "v3", "v4"]


def test_expire_refuses_what_would_lose_the_latest_or_an_unknown_version(four_versions: tuple[Path, Path]) -> None:
    _, work = four_versions
    settings = Settings.resolve(workdir=str(work))
    with pytest.raises(CatalogError, match="at least 1"):
        expire_dataset_versions(settings, "kept", keep_last=0)
    with pytest.raises(CatalogError, match=r"no version 'v9'.*v1, v2, v3, v4"):
        expire_dataset_versions(settings, "kept", keep_last=1, keep=["v9"])
    assert len(open_catalog(workdir=str(work)).versions("kept")) == 4


def test_expire_from_the_cli(four_versions: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    _, work = four_versions
    assert main(["--workdir", str(work), "catalog", "expire", "kept", "--keep-last", "1", "--dry-run"]) == 0
    assert capsys.readouterr().out.split() == ["kept@v1", "kept@v2", "kept@v3"]
    assert main(["--workdir", str(work), "catalog", "expire", "kept", "--keep-last", "1"]) == 0
    captured = capsys.readouterr()
    assert "expired 3 version(s) and 3 snapshot(s); kept v4" in captured.err
    assert [v.version for v in open_catalog(workdir=str(work)).versions("kept")] == ["v4"]
    assert main(["--workdir", str(work), "catalog", "expire", "kept", "--keep-last", "0"]) == 2


def test_expire_then_clean_on_object_storage(tmp_path: Path) -> None:
    """The retention policy with the warehouse and workdir on s3:// (moto): pyiceberg
    expires the snapshot through S3, the released manifests are forgotten on S3, and
    ``clean`` removes exactly the files only the expired version held."""
    import fsspec

    from tests.s3_support import moto_server, s3_environment

    bucket = "medcurate-expire"
    request = BuildRequest(
        recipe="convert", sources=[f"s3://{bucket}/src"], dataset="kept", workdir=f"s3://{bucket}/work",
        warehouse=f"s3://{bucket}/wh", catalog_uri=f"sqlite:///{tmp_path}/catalog.db",
        options={"modality": "XR", "partition_items": 1},
    )
    local = tmp_path / "images"
    with moto_server() as endpoint, s3_environment(endpoint):
        fs = fsspec.filesystem("s3")
        fs.mkdir(bucket)
        write_images(local, 4, seed=0)
        fs.put(str(local) + "/", f"{bucket}/src/", recursive=True)
        first = run_build_inline(request)
        write_images(tmp_path / "new", 1, seed=9)
        fs.put(str(tmp_path / "new" / "img0000.png"), f"{bucket}/src/img0000.png")
        second = run_build_inline(request)
        only_v1 = {os.path.basename(s) for s in first.shards} - {os.path.basename(s) for s in second.shards}
        assert only_v1 and second.published is not None

        settings = Settings.resolve(workdir=request.workdir, warehouse=request.warehouse, catalog_uri=request.catalog_uri)
        result = expire_dataset_versions(settings, "kept", keep_last=1)
        assert (result.dropped, result.kept, len(result.expired_snapshots)) == (["v1"], ["v2"], 1)
        report = clean_dataset_files(settings, "kept", min_age_s=0)
        assert {os.path.basename(p) for p in report.removed} == only_v1
        catalog = open_catalog(uri=request.catalog_uri, warehouse=request.warehouse)
        assert [v.version for v in catalog.versions("kept")] == ["v2"]
        assert all(fs.exists(s) for s in catalog.files("kept", "v2"))
        assert catalog.to_arrow("kept").num_rows == second.summary["samples_written"]
