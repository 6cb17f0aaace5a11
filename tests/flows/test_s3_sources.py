"""Family builds whose ``--source`` is on object storage (moto's S3 server on loopback).

The remote tree is mirrored into ``<workdir>/cache/sources`` before planning; the build
must publish exactly what a build of the same tree on local disk publishes (ids and
pixels), show the s3:// URI (never the cache folder) in its rejects, and a nightly
rebuild of an unchanged bucket must download nothing.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import pyarrow.parquet as pq
import pytest

from curation.images import decode_png
from flows.build import BuildOutcome, BuildRequest, run_build_inline
from flows.runs import run_dir
from tests.helpers import TEST_SALT
from tests.s3_support import moto_server, s3_environment

pytestmark = pytest.mark.timeout(150)

BUCKET = "fundus-raw"
PREFIX = f"{BUCKET}/downloads/retina"
URI = f"s3://{PREFIX}"


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    with moto_server() as endpoint:
        yield endpoint


def published(outcome: BuildOutcome) -> dict[str, dict[str, Any]]:
    """Rows of a build's shards by sample id."""
    rows = [r for shard in outcome.shards for r in pq.read_table(shard).to_pylist()]
    return {r["sample_id"]: r for r in rows}


def rejects_of(workdir: Path, outcome: BuildOutcome) -> list[dict[str, str]]:
    return pq.read_table(Path(run_dir(str(workdir), outcome.run_id)) / "rejects.parquet").to_pylist()


def downloads(caplog: pytest.LogCaptureFixture) -> list[int]:
    """Files downloaded by each staging logged since the last ``caplog.clear()``."""
    found = [re.search(r"staged s3://\S+ in \S+: (\d+) file\(s\) downloaded", r.getMessage()) for r in caplog.records]
    return [int(m.group(1)) for m in found if m]


def cached_files(cache: Path) -> dict[str, tuple[int, int]]:
    """relative path -> (inode, mtime_ns) of the mirrored files: a re-download changes both."""
    out = {}
    for path in cache.rglob("*"):
        if path.is_file() and not path.name.startswith("."):
            stat = path.stat()
            out[str(path.relative_to(cache))] = (stat.st_ino, stat.st_mtime_ns)
    return out


def test_family_build_from_s3_equals_local_and_rebuilds_without_downloads(
    moto_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from curation.recipes.common import stage_sources
    from curation.recipes.demo_trees import write_tree

    monkeypatch.setenv("MEDCURATE_SALT", TEST_SALT)
    monkeypatch.delenv("MEDCURATE_SOURCE_CACHE", raising=False)
    caplog.set_level(logging.INFO, logger="curation.recipes.readers")
    tree = write_tree("retinalogos", tmp_path / "retina")
    local_files = sorted(str(p.relative_to(tree)) for p in tree.rglob("*") if p.is_file())
    s3_work = tmp_path / "s3work"
    request = BuildRequest(recipe="retinalogos", sources=[URI], dataset="retinalogos", workdir=str(s3_work))

    with s3_environment(moto_endpoint):
        fs = fsspec.filesystem("s3")
        fs.mkdir(BUCKET)
        fs.put(str(tree) + "/", PREFIX + "/", recursive=True)
        assert len(fs.find(PREFIX)) == len(local_files)

        first = run_build_inline(request)
        assert downloads(caplog) == [len(local_files)]
        cache = s3_work / "cache" / "sources"
        (staged,) = [p for p in cache.iterdir() if p.is_dir()]
        mirrored = staged / "retina"
        assert sorted(str(p.relative_to(mirrored)) for p in mirrored.rglob("*") if p.is_file()) == local_files
        before = cached_files(cache)

        caplog.clear()
        again = run_build_inline(request)
        assert downloads(caplog) == [0]  # an unchanged bucket: one listing, no GET of any file
        assert cached_files(cache) == before
        assert again.summary["partitions_reused"] == again.summary["partitions"] > 0
        assert sorted(again.shards) == sorted(first.shards)

        # a nightly change: the grading table loses the row of the image missing from the download
        table = (tree / "aptos2019" / "train.csv").read_text()
        fs.pipe_file(f"{PREFIX}/aptos2019/train.csv", "".join(line for line in table.splitlines(True) if "fmissing" not in line).encode())
        caplog.clear()
        stage_sources("retinalogos", [URI], {}, str(s3_work), lambda: None)
        assert downloads(caplog) == [1]
        after = cached_files(cache)
        changed = {k for k in after if after[k] != before[k]}
        assert changed == {f"{staged.name}/retina/aptos2019/train.csv"}

    local_work = tmp_path / "localwork"
    local = run_build_inline(BuildRequest(recipe="retinalogos", sources=[str(tree)], dataset="retinalogos", workdir=str(local_work)))

    remote_rows, local_rows = published(first), published(local)
    assert len(remote_rows) == len(local_rows) == first.summary["samples_written"] == 13
    assert sorted(remote_rows) == sorted(local_rows)  # same ids: same source names and keys
    for sample_id, row in local_rows.items():
        other = remote_rows[sample_id]
        assert (other["source_uri"], other["subject_key"], other["split"], other["caption"]) == (
            row["source_uri"], row["subject_key"], row["split"], row["caption"]
        )
        ours, theirs = decode_png(other["images"][0]["data"]), decode_png(row["images"][0]["data"])
        assert ours.dtype == theirs.dtype and np.array_equal(ours, theirs)
    assert any(decode_png(r["images"][0]["data"]).std() > 10 for r in remote_rows.values())

    # what the user reads names the bucket, never the cache folder
    rejects = rejects_of(s3_work, first)
    missing = next(r for r in rejects if r["reason"] == "missing_image")
    assert f"{URI}/aptos2019" in missing["detail"] and str(cache) not in missing["detail"]
    everything = repr(rejects) + repr([{k: v for k, v in r.items() if k != "images"} for r in remote_rows.values()])
    assert str(s3_work) not in everything
    assert {r["reason"] for r in rejects} == {r["reason"] for r in rejects_of(local_work, local)}
    assert "fmissing" not in (mirrored / "aptos2019" / "train.csv").read_text()


def test_missing_prefix_and_subpath_mirroring(moto_endpoint: str, tmp_path: Path) -> None:
    """Only the recipe's source paths are mirrored; a missing prefix is a RecipeError naming it."""
    from curation.recipes import RecipeError
    from curation.recipes.common import stage_sources
    from curation.recipes.demo_trees import write_tree
    from flows.cli import UsageError
    from flows.cli_build import resolve_request
    from flows.settings import Settings

    tree = write_tree("retinalogos", tmp_path / "retina")
    with s3_environment(moto_endpoint):
        fs = fsspec.filesystem("s3")
        fs.mkdir("subpaths")
        fs.put(str(tree) + "/", "subpaths/retina/", recursive=True)
        options = {"sources": [{"name": "IDRiD", "path": "idrid"}]}
        (local,) = stage_sources("retinalogos", ["s3://subpaths/retina"], options, str(tmp_path / "w"), lambda: None)
        assert sorted(os.listdir(local)) == ["idrid"]
        assert len([p for p in Path(local).rglob("*") if p.is_file()]) == len([p for p in (tree / "idrid").rglob("*") if p.is_file()])
        with pytest.raises(RecipeError, match=r"s3://subpaths/nothing-here is not found"):
            stage_sources("retinalogos", ["s3://subpaths/nothing-here"], {}, str(tmp_path / "w"), lambda: None)
        # medcurate build checks (and stages) the source before any engine starts, and keeps the URI
        args = argparse.Namespace(recipe="retinalogos", source=["s3://subpaths/retina"])
        family, _, sources, _ = resolve_request(args, Settings.resolve(str(tmp_path / "cli")))
        assert (family, sources) == ("retinalogos", ["s3://subpaths/retina"])
        assert len(list((tmp_path / "cli" / "cache" / "sources").rglob("*.csv"))) == len(list(tree.rglob("*.csv")))
        with pytest.raises(UsageError, match=r"^sources: s3://subpaths/retina holds no imed source"):
            resolve_request(argparse.Namespace(recipe="imed", source=["s3://subpaths/retina"]), Settings.resolve(str(tmp_path / "cli")))
        # the convert recipe reads s3:// itself: nothing is staged for it
        assert stage_sources("convert", ["s3://subpaths/retina"], {}, str(tmp_path / "w"), lambda: None) == ["s3://subpaths/retina"]
