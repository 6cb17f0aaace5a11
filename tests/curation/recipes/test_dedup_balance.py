"""Dedup (exact + perceptual) and per-source balancing of work items."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from curation import dedup
from curation.balance import balance_items, target_count
from curation.dedup import dedup_items, near_hashes, phash
from curation.hash_cache import HashCache
from curation.recipes.demo_trees import fundus_image, save


def item(key: str, source: str = "s", exact: str | None = None, near: str | None = None) -> dict:
    return {"key": key, "source": source, "exact_key": exact or key, "near_uri": near}


def test_exact_and_near_duplicates_are_dropped_with_the_kept_item_named(tmp_path: Path):
    photo = fundus_image(256, 3, 2)
    Image.fromarray(photo).save(tmp_path / "a.png")
    Image.fromarray(photo).resize((180, 180)).save(tmp_path / "b_reupload.jpg", quality=85)
    Image.fromarray(fundus_image(256, 4, 2)).save(tmp_path / "c_other_eye.png")
    items = [
        item("x/a.png", exact="h1", near=str(tmp_path / "a.png")),
        item("y/a_copy.png", source="t", exact="h1", near=str(tmp_path / "a.png")),  # across sources
        item("x/b_reupload.jpg", exact="h2", near=str(tmp_path / "b_reupload.jpg")),
        item("x/c_other_eye.png", exact="h3", near=str(tmp_path / "c_other_eye.png")),
    ]
    kept, rejects = dedup_items(items)
    assert [i["key"] for i in kept] == ["x/a.png", "x/c_other_eye.png"]
    by_key = {r.source_uri: r for r in rejects}
    assert by_key["y/a_copy.png"].reason == "duplicate" and "x/a.png" in by_key["y/a_copy.png"].detail
    assert by_key["x/b_reupload.jpg"].reason == "near_duplicate" and "x/a.png" in by_key["x/b_reupload.jpg"].detail
    assert (phash(str(tmp_path / "a.png")) ^ phash(str(tmp_path / "c_other_eye.png"))).bit_count() > 12


def test_dedup_can_be_switched_off():
    items = [item("a", exact="h"), item("b", exact="h")]
    assert len(dedup_items(items, exact=False, near=False)[0]) == 2


def test_ratio_and_cap_are_seeded_and_accounted_for():
    items = [item(f"a/{n:03d}", "a") for n in range(40)] + [item(f"b/{n:03d}", "b") for n in range(10)]
    kept, rejects = balance_items(items, {"a": (0.5, 15), "b": (1.0, None)}, seed=7)
    assert sum(i["source"] == "a" for i in kept) == 15 and sum(i["source"] == "b" for i in kept) == 10
    assert len(rejects) == 25 and {r.reason for r in rejects} == {"sampled_out"}
    again, _ = balance_items(list(reversed(items)), {"a": (0.5, 15), "b": (1.0, None)}, seed=7)
    assert [i["key"] for i in again] == [i["key"] for i in kept]  # order of discovery does not matter
    other, _ = balance_items(items, {"a": (0.5, 15)}, seed=8)
    assert [i["key"] for i in other] != [i["key"] for i in kept]


def test_ratio_above_one_repeats_with_unique_keys():
    items = [item(f"a/{n}", "a") for n in range(4)]
    kept, rejects = balance_items(items, {"a": (2.5, None)}, seed=0)
    keys = [i["key"] for i in kept]
    assert len(keys) == 10 == len(set(keys)) and not rejects
    assert sum("#repeat=" in k for k in keys) == 6
    assert target_count(3, 0.01, None) == 1


def test_splits_follow_subjects_not_samples():
    from curation.ids import subject_pseudonym
    from curation.splits import split_for_subject

    subjects = [subject_pseudonym(f"patient-{n}", "salt") for n in range(2000)]
    splits = [split_for_subject(s, (0.7, 0.2, 0.1)) for s in subjects]
    assert splits == [split_for_subject(s, (0.7, 0.2, 0.1)) for s in subjects]
    share = {name: splits.count(name) / len(splits) for name in ("train", "val", "test")}
    assert abs(share["train"] - 0.7) < 0.04 and abs(share["val"] - 0.2) < 0.04
    assert np.isclose(sum(share.values()), 1.0)


# -- the perceptual-hash cache -------------------------------------------------------------
OLD = time.time() - 3600  # outside the hash cache's racy window


def age(*paths: Path, when: float = OLD) -> None:
    for path in paths:
        os.utime(path, (when, when))


def outcome(result: tuple[list[dict], list]) -> tuple[list[str], list[tuple[str, str, str]]]:
    kept, rejects = result
    return [i["key"] for i in kept], sorted((r.source_uri, r.reason, r.detail) for r in rejects)


@pytest.fixture
def decoded(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every image whose perceptual hash is computed (decoded)."""
    seen: list[str] = []
    real = dedup._compute

    def counted(uris: list[str], hasher: Any) -> list[int | None]:
        seen.extend(uris)
        return real(uris, hasher)

    monkeypatch.setattr(dedup, "_compute", counted)
    return seen


def test_perceptual_hashes_are_kept_by_content_and_only_new_content_is_decoded(tmp_path: Path, decoded: list[str]):
    paths = [save(fundus_image(128, n, 1), tmp_path / f"p{n}.png") for n in range(4)]
    reupload = tmp_path / "p0_reupload.jpg"
    with Image.open(paths[0]) as img:
        img.resize((100, 100)).save(reupload, quality=85)
    copy = tmp_path / "p1_copy.png"
    copy.write_bytes(paths[1].read_bytes())
    files = [*paths, reupload, copy]
    age(*files)
    items = [item(f"x/{p.name}", exact=f"h{n}", near=str(p)) for n, p in enumerate(files)]
    plain = outcome(dedup_items(items))
    assert plain[1][0][:2] == ("x/p0_reupload.jpg", "near_duplicate") and plain[1][1][:2] == ("x/p1_copy.png", "near_duplicate")
    db = str(tmp_path / "cache" / "hashes.sqlite")
    decoded.clear()
    with HashCache(db) as cache:
        assert outcome(dedup_items(items, cache=cache)) == plain
    assert sorted(decoded) == sorted(map(str, files[:5]))  # the copy's content is decoded once
    decoded.clear()
    with HashCache(db) as cache:
        assert outcome(dedup_items(items, cache=cache)) == plain
    assert decoded == []
    save(fundus_image(128, 9, 1), paths[3])  # new content under an old name
    age(paths[3], when=OLD + 60)
    expected = outcome(dedup_items(items))
    decoded.clear()
    with HashCache(db) as cache:
        assert outcome(dedup_items(items, cache=cache)) == expected
    assert decoded == [str(paths[3])]


def test_many_images_are_hashed_on_a_pool_with_the_same_values(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    paths = [str(save(fundus_image(96, n, n % 5), tmp_path / f"p{n}.png")) for n in range(12)]
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    monkeypatch.setattr(dedup, "PARALLEL_MIN", 4)
    values = near_hashes([*paths, str(broken)])
    assert values == {**{p: phash(p) for p in paths}, str(broken): None}
    assert len(set(values.values())) == 13


def test_a_replan_reads_and_decodes_no_unchanged_file(tmp_path: Path, decoded: list[str], monkeypatch: pytest.MonkeyPatch):
    from curation import hash_cache
    from curation.build import PlanContext, make_plan
    from curation.recipes.demo_trees import DEMO_OPTIONS, write_tree

    src = write_tree("retinalogos", tmp_path / "src")
    age(*(p for p in src.rglob("*") if p.is_file()))
    reads: list[str] = []
    real = hash_cache.read_sha256

    def counted(uri: str) -> str:
        reads.append(uri)
        return real(uri)

    monkeypatch.setattr(hash_cache, "read_sha256", counted)

    def plan(workdir: str) -> tuple[list[dict], list[tuple[str, str, str]]]:
        ctx = PlanContext((str(src),), "retina", "salt", "run", dict(DEMO_OPTIONS["retinalogos"]), workdir=workdir)
        built = make_plan("retinalogos", ctx)
        return built.items, sorted((r.source_uri, r.reason, r.detail) for r in built.rejects)

    plain = plan("")
    assert any(r[1] == "duplicate" for r in plain[1])  # the demo's planted duplicate
    assert plan(str(tmp_path / "work")) == plain
    assert reads and decoded and (tmp_path / "work" / "cache" / "hashes" / "hashes.sqlite").exists()
    reads.clear()
    decoded.clear()
    assert plan(str(tmp_path / "work")) == plain
    assert reads == [] and decoded == []
