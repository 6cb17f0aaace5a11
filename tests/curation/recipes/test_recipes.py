"""Recipe files: validation errors that name the key, defaults merging, source resolution."""

from __future__ import annotations

from pathlib import Path

import pytest

from curation.recipes import FAMILIES, RecipeError, load_recipe_file, recipe_for, resolve_sources
from curation.recipes.demo_trees import write_tree


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("family: ophora\noptions: {clip_seconds: -1}\n", "options.clip_seconds: Input should be greater than 0.5 (got -1)"),
        ("family: ophora\noptions: {clip_secs: 3}\n", "options.clip_secs: unknown key"),
        ("family: imed\nsources: [{path: a, sample_ratio: 0}]\n", "sources.0.sample_ratio: Input should be greater than 0"),
        ("family: imed\nsources: [{path: a, modality: XRAY}]\n", "sources.0.modality: Value error, expected one of"),
        ("family: unimed\nsplits: {train: 0.5, val: 0.1, test: 0.1}\n", "splits: Value error, train + val + test must sum to 1"),
        ("family: retinalogos\ndedup: {near: maybe}\n", "dedup.near: Input should be a valid boolean"),
        ("family: medq_uni\noptions: {kinds: {CT: [blur]}}\n", "options.kinds: Value error, CT: unknown kind(s) ['blur']"),
        ("family: medq_uni\noptions: {severities: [4]}\n", "options.severities: Value error, expected a non-empty list"),
        ("family: imed\noptions: {slices: sometimes}\n", "options.slices: Value error, --slices must be 'all', 'middle' or 'every:N'"),
        ("family: unimed\noptions: {region_slices: every:0}\n", "options.region_slices: Value error, --slices must be"),
        ("family: imagenet\n", "family: expected one of"),
        ("- just\n- a list\n", "a recipe must be a mapping"),
    ],
)
def test_validation_errors_name_file_and_key(tmp_path, text, expected):
    path = write(tmp_path, text)
    with pytest.raises(RecipeError) as info:
        load_recipe_file(path)
    assert str(info.value).startswith(str(path)) and expected in str(info.value)


def test_a_recipe_file_overrides_only_its_keys(tmp_path):
    recipe = load_recipe_file(write(tmp_path, "family: ophora\ndataset: cataract_clips\noptions: {clip_seconds: 3}\n"))
    assert recipe.dataset_name() == "cataract_clips"
    assert recipe.options["clip_seconds"] == 3 and recipe.options["min_clip_seconds"] == 2.0  # default kept
    assert recipe.splits.ratios() == (0.8, 0.1, 0.1)


def test_sources_are_detected_per_sub_folder_or_as_the_folder(tmp_path):
    tree = write_tree("retinalogos", tmp_path / "fundus")
    family = FAMILIES["retinalogos"]
    sources = resolve_sources(recipe_for("retinalogos"), [str(tree)], family)
    assert {(s.name, s.layout) for s in sources} == {("aptos2019", "aptos"), ("idrid", "idrid"), ("odir5k", "odir")}
    single = resolve_sources(recipe_for("retinalogos"), [str(tree / "idrid")], family)
    assert [(s.name, s.layout) for s in single] == [("idrid", "idrid")]
    with pytest.raises(RecipeError, match="holds no retinalogos source"):
        resolve_sources(recipe_for("retinalogos"), [str(tree / "idrid" / "B. Disease Grading" / "1. Original Images")], family)
    with pytest.raises(RecipeError, match=r"sources: layout: expected one of \['auto', 'aptos'"):
        resolve_sources(recipe_for("retinalogos", {"sources": [{"path": "aptos2019", "layout": "messidor"}]}), [str(tree)], family)
    with pytest.raises(RecipeError, match="does not exist"):
        resolve_sources(recipe_for("retinalogos", {"sources": [{"path": "nope"}]}), [str(tree)], family)


def test_every_default_recipe_is_valid():
    for family in FAMILIES:
        assert recipe_for(family).family == family
