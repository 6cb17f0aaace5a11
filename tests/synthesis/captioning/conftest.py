"""Shared fixtures: the tiny causal LM (built once per session) and example facts."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest

from synthesis.captioning.testing import build_tiny_causal_lm, example_facts


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A 2-layer Llama (hidden 32, random weights) and a BPE tokenizer trained here."""
    return build_tiny_causal_lm(tmp_path_factory.mktemp("tiny-llm"))


def six_fundus_facts() -> list[dict]:
    """Six distinct fundus facts: the three examples, and the same with the other eye."""
    facts = example_facts()["retinalogos"]
    other_eye = [{**f, "laterality": "right" if f["laterality"] == "left" else "left"} for f in facts]
    return facts + other_eye


@pytest.fixture()
def fundus_table() -> pa.Table:
    """Six fundus samples with distinct facts."""
    facts = six_fundus_facts()
    return pa.table({
        "sample_id": [f"fundus-{i}" for i in range(len(facts))],
        "facts_json": [json.dumps(f) for f in facts],
    })
