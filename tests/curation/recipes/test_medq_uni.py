"""MedQ-UNI: clean images → degraded pairs, perception questions and comparisons."""

from __future__ import annotations

from collections import Counter

import numpy as np

from curation.images import decode_png
from tests.curation.recipes.families import assert_subject_level_splits


def test_pairs_share_geometry_and_questions_match_the_record(demo_build):
    rows = demo_build("medq_uni").rows
    tasks = Counter(r["task"] for r in rows)
    # CT x1 kind, MR x2, XR (2 images) x1, CFP (2 images) x1; severities 1 and 3: 14 pairs
    assert tasks == {"restoration": 14, "quality_assessment": 28}
    assert Counter(r["modality"] for r in rows if r["task"] == "restoration") == {"CT": 2, "MR": 4, "XR": 4, "CFP": 4}
    for row in rows:
        kind, severity = row["degradation"]["type"], row["degradation"]["severity"]
        assert severity in (1, 3)
        images = {i["role"]: i for i in row["images"]}
        if row["task"] == "restoration":
            clean, degraded = decode_png(images["clean"]["data"]), decode_png(images["degraded"]["data"])
            assert clean.shape == degraded.shape
            assert (images["clean"]["width"], images["clean"]["height"]) == (images["degraded"]["width"], images["degraded"]["height"])
            assert not np.array_equal(clean, degraded)
            assert row["quality"]["description"].endswith(f"Overall, the quality of this image is {row['quality']['verdict']}.")
            assert row["caption"] == row["quality"]["description"]
        elif len(row["images"]) == 1:
            answers = [t["value"] for t in row["conversations"][1::2]]
            assert answers[0] == "Yes." and kind.replace("_", " ") in row["conversations"][0]["value"]
            assert {"mild": 1, "severe": 3}[answers[-2].rstrip(".").lower()] == severity
            assert answers[-1] == f"{row['quality']['verdict'].capitalize()}."
        else:
            first = row["images"][0]["role"]
            answer = row["conversations"][1]["value"]
            assert answer.startswith("The first image" if first == "clean" else "The second image")
    assert_subject_level_splits(rows)
