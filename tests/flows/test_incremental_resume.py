"""Incremental rebuilds and resume after kill -9: reuse finished partitions, exact diffs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from catalogs import open_catalog
from flows.build import BuildRequest, run_build_inline


def write_images(folder: Path, count: int, size: int = 64, seed: int = 0) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        Image.fromarray(rng.integers(0, 255, (size, size), dtype=np.uint8)).save(folder / f"img{i:04d}.png")


def build(source: Path, work: Path, version: str | None = None):
    return run_build_inline(
        BuildRequest(
            recipe="convert",
            sources=[str(source)],
            dataset="inc",
            version=version,
            workdir=str(work),
            options={"partition_items": 8, "modality": "XR"},
        )
    )


def test_nothing_changed_means_no_work_and_no_snapshot(tmp_path):
    write_images(tmp_path / "src", 100)
    first = build(tmp_path / "src", tmp_path / "w")
    again = build(tmp_path / "src", tmp_path / "w")
    assert again.summary["partitions"] == first.summary["partitions"] > 5
    assert again.summary["partitions_reused"] == again.summary["partitions"]
    assert again.summary["stages"] == {}  # no conversion ran
    assert again.summary["gate"]["shards_validated"] == 0  # nor validation of unchanged shards
    assert again.summary["gate"]["shards_reused"] == first.summary["shards"]
    assert again.summary["unchanged"] is True and again.summary["version"] == "v1"
    assert len(open_catalog(workdir=str(tmp_path / "w")).history("inc")) == 1


def test_one_percent_changed_recomputes_only_its_partitions_and_diffs_exactly(tmp_path):
    src = tmp_path / "src"
    write_images(src, 100)
    first = build(src, tmp_path / "w")
    write_images(tmp_path / "other", 1, seed=99)
    (tmp_path / "other" / "img0000.png").replace(src / "img0042.png")  # changed content
    (src / "img0007.png").unlink()  # removed
    write_images(tmp_path / "new", 1, seed=7)
    (tmp_path / "new" / "img0000.png").replace(src / "img9999.png")  # added
    second = build(src, tmp_path / "w")
    recomputed = second.summary["partitions"] - second.summary["partitions_reused"]
    assert 1 <= recomputed <= 3
    assert second.summary["gate"]["shards_validated"] == recomputed
    assert second.summary["stages"]["convert"]["rows_in"] <= 3 * 4 * 8  # only those partitions' items
    catalog = open_catalog(workdir=str(tmp_path / "w"))
    ids = {r["source_uri"]: r["sample_id"] for r in catalog.to_arrow("inc", columns=["source_uri", "sample_id"]).to_pylist()}
    old = {r["source_uri"]: r["sample_id"] for r in catalog.to_arrow("inc", "v1", columns=["source_uri", "sample_id"]).to_pylist()}
    diff = catalog.diff("inc", "v1", "v2")
    assert diff == {"added": [ids["img9999.png"]], "removed": [old["img0007.png"]], "changed": [ids["img0042.png"]]}
    assert first.summary["samples_written"] == second.summary["samples_written"] == 100


def _run_cli(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [str(Path(sys.executable).parent / "medcurate"), *args],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )


@pytest.mark.slow
def test_kill_minus_9_then_rerun_equals_an_uninterrupted_build(tmp_path):
    src = tmp_path / "src"
    write_images(src, 48, size=384)
    env = {**os.environ, "MEDCURATE_SALT": "resume-test", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    args = ["convert", str(src), "--dataset", "res", "--partition-items", "2", "--modality", "XR"]
    work = tmp_path / "w"
    manifests = work / "cache" / "partitions"
    process = _run_cli(["--workdir", str(work), *args], env)
    deadline = time.time() + 180
    while time.time() < deadline and len(list(manifests.glob("*.json"))) < 3:
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    finished_before_kill = len(list(manifests.glob("*.json")))
    assert finished_before_kill >= 3
    assert not (work / "runs").exists() or not list((work / "runs").glob("*/summary.json")), "killed too late"

    rerun = _run_cli(["--workdir", str(work), *args], env)
    assert rerun.wait(timeout=300) == 0, rerun.stdout.read()
    summary = json.loads(next((work / "runs").glob("*/summary.json")).read_text())
    assert summary["partitions_reused"] >= finished_before_kill

    clean = _run_cli(["--workdir", str(tmp_path / "clean"), *args], env)
    assert clean.wait(timeout=300) == 0
    resumed = open_catalog(workdir=str(work)).to_arrow("res", columns=["sample_id", "images"])
    reference = open_catalog(workdir=str(tmp_path / "clean")).to_arrow("res", columns=["sample_id", "images"])
    ids = resumed.column("sample_id").to_pylist()
    assert len(ids) == len(set(ids)) == 48  # each sample registered exactly once
    as_bytes = lambda t: {r["sample_id"]: [i["data"] for i in r["images"]] for r in t.to_pylist()}  # noqa: E731
    assert as_bytes(resumed) == as_bytes(reference)
    registered = open_catalog(workdir=str(work)).files("res")
    assert all("_tmp-" not in Path(f).name for f in registered)
