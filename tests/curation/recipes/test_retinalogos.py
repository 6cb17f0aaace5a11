"""RetinaLogos: APTOS / IDRiD / ODIR tables → fundus QC → captions grounded in the grades."""

from __future__ import annotations

import numpy as np

from curation.images import decode_png
from curation.recipes.demo_trees import fundus_image
from curation.recipes.retinalogos import RetinaOptions, fundus_qc, keywords
from tests.curation.recipes.families import assert_subject_level_splits


def test_grading_tables_become_grounded_captions(demo_build):
    built = demo_build("retinalogos")
    rows = built.rows
    # 6 APTOS + 3 IDRiD + 4 ODIR photographs pass QC; black/over-exposed/duplicate/missing do not
    assert len(rows) == 13
    reasons = built.reasons()
    assert reasons["black_image"] == ["aptos2019/train_images/fblack00.png"]
    assert reasons["overexposed"] == ["aptos2019/train_images/fbright0.png"]
    assert reasons["duplicate"] == ["aptos2019/train_images/fdupe000.png"]
    assert reasons["missing_image"] == ["aptos2019/fmissing"]
    dupe = next(r for r in built.rejects if r.reason == "duplicate")
    assert "aptos2019/train_images/1a2b3c.png" in dupe.detail  # provenance: which copy was kept
    for row in rows:
        assert row["modality"] == "CFP" and row["task"] == "caption" and row["curriculum_stage"] == 1
        caption = row["caption"]
        for label in row["labels"] or []:
            if label.startswith("DR grade "):
                assert f"grade {label.split()[-1]}" in caption
            elif label.startswith("DME risk "):
                risk = int(label.split()[-1])
                assert (f"macular edema: {risk}" in caption) if risk else ("No risk of diabetic macular edema" in caption)
            else:
                assert label in caption  # ODIR keyword
        assert row["conversations"][1]["value"] == caption
        image = decode_png(row["images"][0]["data"])
        assert image.shape == (256, 256, 3)
    odir = [r for r in rows if r["source"] == "odir5k"]
    assert {tuple(r["labels"]) for r in odir} >= {("moderate non proliferative retinopathy", "hard exudate"), ("glaucoma", "drusen")}
    left = next(r for r in odir if r["source_uri"].endswith("0_left.jpg"))
    assert "left eye" in left["caption"]
    # both eyes of one ODIR patient share a subject, hence a split
    assert len({r["subject_key"] for r in odir}) == 2
    assert_subject_level_splits(rows)


def test_fundus_qc_reasons():
    opts = RetinaOptions()
    assert fundus_qc(fundus_image(128, 1, 2), opts) is None
    assert fundus_qc(np.zeros((64, 64, 3), np.uint8), opts)[0] == "black_image"
    assert fundus_qc(fundus_image(128, 1, 2, exposure=0.25), opts)[0] == "underexposed"
    assert fundus_qc(fundus_image(128, 1, 2, exposure=3.0), opts)[0] == "overexposed"
    flat = np.full((64, 64, 3), 120, np.uint8)  # a photograph with no dark border: not a fundus camera image
    assert fundus_qc(flat, opts)[0] == "no_field_of_view"


def test_odir_keywords_split_on_chinese_commas():
    assert keywords("moderate non proliferative retinopathy，hard exudate, Cataract") == [
        "moderate non proliferative retinopathy",
        "hard exudate",
        "cataract",
    ]
