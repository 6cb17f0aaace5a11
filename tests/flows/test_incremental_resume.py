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


def test_a_label_corrected_in_a_table_rebuilds_its_sample(tmp_path):
    """A grade corrected in the family's CSV changes no image file, yet changes the sample:
    the rebuild must redo it and publish a version whose diff names exactly that sample."""
    from curation.recipes.demo_trees import write_retinalogos_tree

    src = write_retinalogos_tree(tmp_path / "src")

    def build_retinalogos():
        request = BuildRequest(recipe="retinalogos", sources=[str(src)], dataset="ret", workdir=str(tmp_path / "w"))
        return run_build_inline(request)

    build_retinalogos()
    table = src / "aptos2019" / "train.csv"
    assert "1a4a2b,1\n" in table.read_text()
    table.write_text(table.read_text().replace("1a4a2b,1\n", "1a4a2b,4\n"))
    second = build_retinalogos()
    assert second.summary["unchanged"] is False and second.summary["version"] == "v2"
    assert second.summary["partitions_reused"] < second.summary["partitions"]
    catalog = open_catalog(workdir=str(tmp_path / "w"))
    rows = catalog.to_arrow("ret", columns=["sample_id", "source_uri", "labels"]).to_pylist()
    (corrected,) = [r for r in rows if "1a4a2b" in r["source_uri"]]
    assert corrected["labels"] == ["DR grade 4"]
    assert catalog.diff("ret", "v1", "v2") == {"added": [], "removed": [], "changed": [corrected["sample_id"]]}


def test_a_stricter_gate_on_a_rebuild_quarantines_copies_and_leaves_published_data_alone(tmp_path, monkeypatch):
    """A reused partition's shard belongs to a published version: when a stricter suite (or
    a cleared gate cache) fails it, the quarantine takes a copy; the version still reads."""
    import dataclasses
    import shutil

    from flows.build import GateFailed
    from quality_checks import gate

    write_images(tmp_path / "src", 12)
    first = build(tmp_path / "src", tmp_path / "w")
    catalog = open_catalog(workdir=str(tmp_path / "w"))
    published = catalog.files("inc", "v1")
    shutil.rmtree(tmp_path / "w" / "cache" / "gate")
    lenient = gate.Tolerances.from_mapping
    monkeypatch.setattr(gate.Tolerances, "from_mapping", lambda mapping: dataclasses.replace(lenient(mapping), min_dynamic_range=1.01))
    with pytest.raises(GateFailed) as failed:
        build(tmp_path / "src", tmp_path / "w")
    assert len(failed.value.report.quarantined) == len(published) > 0
    assert all(Path(q).exists() for q in failed.value.report.quarantined)
    assert all(Path(p).exists() for p in published)
    assert catalog.to_arrow("inc", "v1").num_rows == first.summary["samples_written"] == 12


def test_a_build_into_another_warehouse_or_dataset_writes_and_publishes_its_own_shards(tmp_path):
    """Manifests name shard files: a workdir shared by a staging and a production
    warehouse, or two dataset names over the same sources, must not publish each other's
    files (a clean-up of one would break the other)."""
    write_images(tmp_path / "src", 8)

    def build_into(warehouse: str, dataset: str):
        request = BuildRequest(
            recipe="convert", sources=[str(tmp_path / "src")], dataset=dataset, workdir=str(tmp_path / "w"),
            warehouse=str(tmp_path / warehouse), catalog_uri=f"sqlite:///{tmp_path / warehouse}.db",
            options={"modality": "XR"},
        )
        return run_build_inline(request)

    staging = build_into("staging", "inc")
    for warehouse, dataset in (("prod", "inc"), ("staging", "inc_copy")):
        other = build_into(warehouse, dataset)
        assert other.summary["partitions_reused"] == 0
        assert other.shards and all(s.startswith(str(tmp_path / warehouse / "medcurate" / dataset / "data")) for s in other.shards)
    again = build_into("staging", "inc")
    assert again.summary["partitions_reused"] == again.summary["partitions"] and again.shards == staging.shards
