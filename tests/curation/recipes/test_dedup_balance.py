"""Dedup (exact + perceptual) and per-source balancing of work items."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from curation.balance import balance_items, target_count
from curation.dedup import dedup_items, phash
from curation.recipes.demo_trees import fundus_image


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
