"""medq_uni from a published dataset: ``--source catalog://NAME@VERSION``.

A small chest X-ray dataset (the two real NIH radiographs and their mirror images, two
images per patient) is published with the convert flow; medq_uni then degrades the
input images of the pinned version. Clean images must be the published pixels, pairs
share geometry, the subject pseudonym is carried (splits stay subject-level) and the
provenance names the parent dataset, version and sample.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from catalogs import open_catalog
from curation.images import decode_png
from flows.build import BuildOutcome, BuildRequest, run_build_inline
from flows.cli import main
from tests.curation.recipes.families import assert_subject_level_splits
from tests.helpers import TEST_SALT, XRAY_DIR

MEDQ_OPTIONS = {"options": {"kinds": {"XR": ["quantum_noise"]}, "severities": [1, 3]}}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A workdir whose catalog holds ``chest_src@v1``: 4 X-rays of 2 patients."""
    mp = pytest.MonkeyPatch()
    mp.setenv("MEDCURATE_SALT", TEST_SALT)
    root = tmp_path_factory.mktemp("medq_catalog")
    src = root / "src"
    src.mkdir()
    for number, path in enumerate(sorted(XRAY_DIR.glob("*.png")), start=1):
        pixels = np.asarray(Image.open(path))
        Image.fromarray(pixels).save(src / f"p{number:02d}_frontal.png")
        Image.fromarray(np.ascontiguousarray(pixels[:, ::-1])).save(src / f"p{number:02d}_mirrored.png")
    work = root / "work"
    outcome = run_build_inline(
        BuildRequest(recipe="convert", sources=[str(src)], dataset="chest_src", workdir=str(work),
                     options={"modality": "XR", "subject_pattern": r"^(p\d+)_"})
    )
    assert outcome.published is not None and outcome.published.version == "v1"
    yield work
    mp.undo()


def medq_build(work: Path, source: str, dataset: str = "medq_from_catalog") -> BuildOutcome:
    return run_build_inline(
        BuildRequest(recipe="medq_uni", sources=[source], dataset=dataset, workdir=str(work), options=MEDQ_OPTIONS)
    )


def catalog_read(row: dict[str, Any]) -> dict[str, Any]:
    steps = json.loads(row["provenance"]["steps_json"])
    return next(s["params"] for s in steps if s.get("step") == "catalog.read")


def test_clean_images_are_the_published_pixels_with_subjects_carried(workdir: Path) -> None:
    outcome = medq_build(workdir, "catalog://chest_src@v1")
    catalog = open_catalog(workdir=str(workdir))
    parents = {r["sample_id"]: r for r in catalog.to_arrow("chest_src", "v1").to_pylist()}
    rows = catalog.to_arrow("medq_from_catalog").to_pylist()
    assert len(parents) == 4 and len({p["subject_key"] for p in parents.values()}) == 2
    # 4 images x 1 kind x 2 severities = 8 pairs; each gives a restoration, a perception and a comparison sample
    assert Counter(r["task"] for r in rows) == {"restoration": 8, "quality_assessment": 16}
    assert outcome.summary["inputs_total"] == 4 and outcome.summary["inputs_rejected"] == 0
    seen: dict[str, set[int]] = defaultdict(set)
    for row in rows:
        read = catalog_read(row)
        parent = parents[read["sample_id"]]
        assert (read["dataset"], read["version"]) == ("chest_src", "v1")
        assert row["subject_key"] == parent["subject_key"] and row["modality"] == "XR"
        assert row["source"] == "chest_src" and row["source_uri"] == f"chest_src/{parent['sample_id']}"
        if row["task"] != "restoration":
            continue
        seen[parent["sample_id"]].add(row["degradation"]["severity"])
        published = decode_png(next(i for i in parent["images"] if i["role"] == "input")["data"])
        images = {i["role"]: i for i in row["images"]}
        clean, degraded = decode_png(images["clean"]["data"]), decode_png(images["degraded"]["data"])
        assert published.dtype == np.uint8 and published.std() > 10
        assert clean.dtype == np.uint8 and np.array_equal(clean, published)
        assert degraded.shape == clean.shape == published.shape
        assert (images["degraded"]["width"], images["degraded"]["height"]) == (published.shape[1], published.shape[0])
        assert not np.array_equal(degraded, clean)
    assert seen == {sid: {1, 3} for sid in parents}
    assert_subject_level_splits(rows)
    # the split of a subject is the parent's (same ratios, same pseudonym)
    assert {r["subject_key"]: r["split"] for r in rows} == {p["subject_key"]: p["split"] for p in parents.values()}


def test_latest_version_is_pinned_and_a_rebuild_reuses_everything(workdir: Path) -> None:
    first = medq_build(workdir, "catalog://chest_src", dataset="medq_latest")
    again = medq_build(workdir, "catalog://chest_src", dataset="medq_latest")
    assert again.summary["partitions_reused"] == again.summary["partitions"] == first.summary["partitions"]
    assert again.summary["unchanged"] is True
    rows = open_catalog(workdir=str(workdir)).to_arrow("medq_latest").to_pylist()
    assert {catalog_read(r)["version"] for r in rows} == {"v1"}


def test_missing_dataset_or_version_is_a_usage_error_naming_it(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    work = str(workdir)
    assert main(["--workdir", work, "build", "medq_uni", "--source", "catalog://no_such_set@v1"]) == 2
    err = capsys.readouterr().err
    assert "no dataset named 'no_such_set'" in err and "chest_src" in err  # and what is published
    assert main(["--workdir", work, "build", "medq_uni", "--source", "catalog://chest_src@v9"]) == 2
    err = capsys.readouterr().err
    assert "catalog://chest_src@v9" in err and "no version 'v9'" in err and "v1" in err
    assert main(["--workdir", work, "build", "medq_uni", "--source", "catalog://chest_src/x"]) == 2
    assert "expected catalog://NAME or catalog://NAME@VERSION" in capsys.readouterr().err
    assert main(["--workdir", work, "build", "retinalogos", "--source", "catalog://chest_src@v1"]) == 2
    assert "catalog:// sources are read by medq_uni" in capsys.readouterr().err
