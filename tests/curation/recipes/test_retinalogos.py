"""RetinaLogos: APTOS / IDRiD / ODIR tables → fundus QC → captions grounded in the grades."""

from __future__ import annotations

import json

import numpy as np
import pytest

from converters.base import ConversionError
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


def test_llm_captioner_is_used_and_guarded(tmp_path, salt):
    """With a captioner configured the LLM path runs; a tiny random-weight model writes
    nonsense, the grounding guard rejects it, and the grounded template text is kept."""
    from curation.recipes.demo_trees import write_tree
    from synthesis.captioning.testing import build_tiny_causal_lm
    from tests.curation.recipes.families import build_family

    model = build_tiny_causal_lm(tmp_path / "tiny_lm")
    tree = write_tree("retinalogos", tmp_path / "src")
    options = {
        "sources": [{"path": "idrid"}],
        "captioner": {"backend": {"kind": "transformers", "model": str(model)}, "cache_path": str(tmp_path / "captions.db")},
    }
    rows = build_family("retinalogos", tmp_path / "w", tree, options).rows
    assert len(rows) == 3
    for row in rows:
        step = next(s for s in json.loads(row["provenance"]["steps_json"]) if s["step"] == "caption")
        assert step["params"]["source"] == "template"  # the guard refused the model's text
        grade = next(label for label in row["labels"] if label.startswith("DR grade")).split()[-1]
        assert f"grade {grade}" in row["caption"]


def test_eyepacs_names_give_laterality_and_subject(tmp_path):
    from curation.recipes.retinalogos import RetinaLogos, graded_images

    (tmp_path / "trainLabels.csv").write_text("image,level\n10_left,0\n10_right,3\n13_left,bad\n")
    assert RetinaLogos().detect(tmp_path, nested=False) == "eyepacs"
    with pytest.raises(ConversionError, match="column 'level' must be an integer, got 'bad'"):
        graded_images(tmp_path / "trainLabels.csv", "eyepacs")
    (tmp_path / "trainLabels.csv").write_text("image,level\n10_left,0\n10_right,3\n")
    assert graded_images(tmp_path / "trainLabels.csv", "eyepacs") == [
        ("10_left", {"dr_grade": 0, "laterality": "left", "subject": "10"}),
        ("10_right", {"dr_grade": 3, "laterality": "right", "subject": "10"}),
    ]
