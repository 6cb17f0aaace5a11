"""IMed: per-slice masks, canonical categories, cleaned masks and interactive prompts."""

from __future__ import annotations

import json

import numpy as np

from curation.categories import canonical_category, load_table, normalise_label
from curation.images import decode_png, tight_bbox_xyxy
from curation.recipes.imed import clean_mask, click_prompts, jittered_box
from tests.curation.recipes.families import assert_subject_level_splits


def test_masks_align_and_prompts_lie_inside(demo_build):
    rows = demo_build("imed").rows
    # 2 MSD phantoms x 6 slices + 3 real CT slices + 2 Kvasir-style pairs
    assert len(rows) == 17
    categories = set()
    for row in rows:
        assert row["task"] == "interactive_seg"
        image = next(i for i in row["images"] if i["role"] == "input")
        height, width = image["height"], image["width"]
        assert decode_png(image["data"]).shape[:2] == (height, width)
        for mask in row["masks"]:
            binary = decode_png(mask["data"])
            assert binary.dtype == bool and binary.shape == (height, width)
            assert mask["area_px"] == binary.sum() >= 0.0005 * height * width
            assert mask["bbox_xyxy"] == tight_bbox_xyxy(binary)
            x0, y0, x1, y1 = mask["bbox_xyxy"]
            assert binary[y0:y1, x0:x1].sum() == binary.sum()  # the box contains the mask
            assert len(mask["clicks_xy"]) == 3
            assert all(binary[y, x] for x, y in mask["clicks_xy"])
            assert all(abs(a - b) <= 5 for a, b in zip(mask["box_prompt_xyxy"], mask["bbox_xyxy"], strict=True))
            categories.add(mask["category"])
        assert row["labels"] == sorted({m["category"] for m in row["masks"]})
        assert row["caption"].startswith("This is")
    # 'Liver' and 'liver tumour' map through the synonym table; the 1-voxel 'hepatic vessel'
    # label is under 0.05% of the image and dropped
    assert categories == {"liver", "liver tumor", "heart", "spine", "polyp"}
    phantom = next(r for r in rows if r["source_uri"].startswith("Task03_Liver/"))
    steps = json.loads(phantom["provenance"]["steps_json"])
    masks_step = next(s for s in steps if s["step"] == "imed.masks")
    assert masks_step["params"]["table"] == "imed_categories.v1"
    assert any(n.get("dropped") and n["category"] == "hepatic vessel" for n in masks_step["params"]["masks"])
    assert_subject_level_splits(rows)


def test_prompts_are_seeded(demo_build, tmp_path):
    from curation.recipes.demo_trees import DEMO_OPTIONS, write_tree
    from tests.curation.recipes.families import build_family

    first = {r["sample_id"]: [m["clicks_xy"] for m in r["masks"]] for r in demo_build("imed").rows}
    again = build_family("imed", tmp_path / "w", write_tree("imed", tmp_path / "s"), DEMO_OPTIONS["imed"]).rows
    assert {r["sample_id"]: [m["clicks_xy"] for m in r["masks"]] for r in again} == first


def test_first_click_is_central_and_nearest_the_centroid():
    yy, xx = np.mgrid[0:80, 0:80]
    ring = (np.hypot(yy - 40, xx - 40) <= 30) & (np.hypot(yy - 40, xx - 40) >= 15)  # centroid outside the mask
    clicks = click_prompts(ring, 4, np.random.default_rng(0))
    assert all(ring[y, x] for x, y in clicks)
    from scipy import ndimage

    distance = ndimage.distance_transform_edt(ring)
    x, y = clicks[0]
    assert distance[y, x] >= np.median(distance[ring])  # in the central half of the foreground
    # of those central pixels, the one nearest the centroid (40, 40): the inner edge of the band
    central = ring & (distance >= np.median(distance[ring]))
    nearest = np.hypot(*(np.nonzero(central)[i] - 40 for i in (0, 1))).min()
    assert np.hypot(y - 40, x - 40) == nearest


def test_cleaning_removes_specks_and_fills_pinholes():
    mask = np.zeros((50, 50), bool)
    mask[10:30, 10:30] = True
    mask[20, 20] = False  # pinhole
    mask[40, 40] = True  # speck
    cleaned = clean_mask(mask, min_area_px=5)
    assert cleaned[20, 20] and not cleaned[40, 40]
    assert cleaned[11:29, 11:29].all() and not cleaned[:10].any() and not cleaned[30:].any()
    assert cleaned.sum() == 400 - 4  # opening with a cross rounds off the square's 4 corner pixels


def test_box_jitter_stays_in_the_image():
    rng = np.random.default_rng(1)
    for _ in range(50):
        x0, y0, x1, y1 = jittered_box([0, 0, 3, 3], (20, 20), 5, rng)
        assert 0 <= x0 < x1 <= 20 and 0 <= y0 < y1 <= 20


def test_category_table_is_versioned_and_normalises():
    table = load_table("imed_categories", 1)
    assert canonical_category("Liver_Tumour", table) == ("liver tumor", True)
    assert canonical_category("Kidney-L", table) == ("left kidney", True)
    assert canonical_category("Weird_Structure_2", table) == ("weird structure", False)
    assert normalise_label("  PZ ") == "pz"
