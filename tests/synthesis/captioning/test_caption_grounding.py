"""The grounding guard on a hand-written set of (facts, caption, expected_ok) pairs."""

from __future__ import annotations

import collections
import json
from pathlib import Path

import pytest

from synthesis.captioning import check_grounding, load_synonyms
from synthesis.captioning.grounding import find_mentions, find_phi, is_negated

CASES_PATH = Path(__file__).with_name("data") / "grounding_cases.json"


def _load_cases() -> tuple[dict, list[dict]]:
    data = json.loads(CASES_PATH.read_text())
    return data["facts"], data["cases"]


def guard_confusion() -> dict[str, int]:
    """Confusion counts where 'positive' means a bad caption and 'detected' means not ok."""
    facts, cases = _load_cases()
    counts: collections.Counter[str] = collections.Counter()
    for case in cases:
        detected = not check_grounding(facts[case["facts"]], case["caption"]).ok
        bad = not case["ok"]
        counts[("tp" if detected else "fn") if bad else ("fp" if detected else "tn")] += 1
    return dict(counts)


def test_case_set_is_large_and_covers_every_kind_of_error():
    facts, cases = _load_cases()
    assert len(cases) >= 100
    kinds = collections.Counter(c["kind"] for c in cases)
    for kind in ("faithful", "missing_finding", "invented_finding", "contradiction", "wrong_laterality",
                 "wrong_grade", "wrong_number", "phi", "wrong_modality", "negated_finding"):
        assert kinds[kind] >= 2, kind
    assert kinds["faithful"] >= 40 and sum(not c["ok"] for c in cases) >= 60
    assert all(c["facts"] in facts for c in cases)


def test_guard_precision_and_recall_at_least_95_percent():
    counts = guard_confusion()
    tp, fp, fn = counts.get("tp", 0), counts.get("fp", 0), counts.get("fn", 0)
    precision = tp / (tp + fp)
    recall = tp / (tp + fn)
    print(f"grounding guard on {sum(counts.values())} cases: precision {precision:.3f}, recall {recall:.3f}, {counts}")
    assert precision >= 0.95, counts
    assert recall >= 0.95, counts


@pytest.mark.parametrize(
    "caption",
    [
        "Left eye: scattered haemorrhages, no exudates, mild NPDR.",
        "Left eye: scattered hemorrhages, no exudates, mild NPDR.",
        "Left eye: areas of bleeding, no exudates, mild NPDR.",
        "Left eye: dot-blot haemorrhages; hard exudates are not seen; grade 1 diabetic retinopathy.",
    ],
)
def test_synonyms_and_negations_are_accepted(caption):
    facts = {"modality": "CFP", "laterality": "left", "findings": ["haemorrhage"],
             "absent_findings": ["hard exudate"], "dr_grade": 1}
    result = check_grounding(facts, caption)
    assert result.ok, result.problems


def test_abbreviations_match_case_sensitively():
    facts = {"modality": "CFP", "findings": ["microaneurysm"], "dr_grade": 1}
    assert check_grounding(facts, "Several MAs are visible; mild NPDR.").ok
    # 'ma' in lower case is not the abbreviation, so the finding is missing
    assert not check_grounding(facts, "Several ma are visible; mild NPDR.").ok


def test_negation_scope_stops_at_clause_and_verb():
    text = "No haemorrhages are seen, but exudates are present with no new vessels."
    spans = {m.canon: m.negated for m in find_mentions(text, load_synonyms().groups["findings"])}
    assert spans == {"haemorrhage": True, "hard exudate": False, "neovascularisation": True}
    assert is_negated("Haemorrhages and exudates are absent.", 0, 12)
    assert not is_negated("Haemorrhages are present and exudates are absent.", 0, 12)


def test_phi_patterns():
    assert find_phi("Seen by Dr. Smith on 2021-05-04, call +1 555 201 3344 or a@b.org, MRN 1234567")
    kinds = {p.split(":")[0] for p in find_phi("Seen by Dr. Smith on 2021-05-04, call 555-201-3344, mail a@b.org, MRN: 1234567")}
    assert kinds == {"titled name", "date", "phone number", "email address", "record number"}
    assert find_phi("Moderate NPDR (DR grade 2) with a cup-to-disc ratio of 0.4.") == []


def test_length_bounds_and_bad_facts():
    facts = {"modality": "XR", "findings": ["pneumothorax"]}
    assert any(p.startswith("too short") for p in check_grounding(facts, "pneumothorax").problems)
    long_text = "A pneumothorax is seen. " * 100
    assert any(p.startswith("too long") for p in check_grounding(facts, long_text, max_chars=500).problems)
    bad = check_grounding({"modality": "XRAY", "findings": []}, "A chest X-ray without findings.")
    assert not bad.ok and bad.problems[0].startswith("bad facts: facts['modality']")
