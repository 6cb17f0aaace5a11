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
        ("family: imed\ndeid: {burned_in: lenient}\n", "deid.burned_in: Input should be 'declared' or 'strict'"),
        ("family: imagenet\n", "family: expected one of"),
        ("- just\n- a list\n", "a recipe must be a mapping"),
        ("family: imed\ngate: {min_dynamc_range: 0.1}\n", "gate: unknown quality tolerance(s) ['min_dynamc_range']"),
        ("family: imed\ngate: {min_dynamic_range: 2.0}\n", "gate: gate.min_dynamic_range is a fraction of 0..1, got 2.0"),
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


def test_a_recipes_deid_section_reaches_the_dicom_converter(tmp_path):
    """``deid: {burned_in: strict, dates: remove}`` in a family recipe: the family's
    converter options carry both, and pydicom's ultrasound (no BurnedInAnnotation) is a
    reject under them while the default keeps it."""
    import shutil

    from converters.discover import discover
    from converters.stage import convert_item
    from curation.recipes.common import FamilyContext, family_options
    from tests.helpers import pydicom_file

    shutil.copy2(pydicom_file("examples_rgb_color.dcm"), tmp_path / "us.dcm")
    (item,) = discover([str(tmp_path)]).table().to_pylist()
    for text, policy, dates in (("family: unimed\n", "declared", "shift"),
                                ("family: unimed\ndeid: {burned_in: strict, dates: remove}\n", "strict", "remove")):
        recipe = load_recipe_file(write(tmp_path, text))
        ctx = FamilyContext(recipe, family_options(recipe), {}, "salt", "run", "0")
        options = ctx.convert_options("us_source", "US")
        assert (options.burned_in, options.deid_dates) == (policy, dates)
        rows, reject = convert_item(item, options)
        if policy == "strict":
            assert rows == [] and reject is not None and reject.reason == "burned_in_unknown"
        else:
            assert reject is None and len(rows) == 1


def test_family_readers_follow_linked_folders_and_skip_hidden_files(tmp_path):
    """Family downloads arranged as links (a DataLad clone, a symlink farm over a shared
    store) are read like discovery reads them: linked folders followed, hidden files not
    inputs, the depth limit counted from the source folder."""
    from curation.recipes.readers import find_files

    store, root = tmp_path / "store", tmp_path / "download"
    (store / "fundus").mkdir(parents=True)
    (root / "labels").mkdir(parents=True)
    (store / "fundus" / "eye1.jpg").write_bytes(b"jpg")
    (root / "labels" / "grades.csv").write_text("image,grade\n")
    (root / "images").symlink_to(store / "fundus", target_is_directory=True)
    (root / "labels" / "._grades.csv").write_bytes(b"\0\5\26\7")
    (root / ".cache").mkdir()
    (root / ".cache" / "old.csv").write_text("x\n")

    assert find_files(root, (".jpg",)) == [root / "images" / "eye1.jpg"]
    assert find_files(root, (".csv",)) == [root / "labels" / "grades.csv"]
    assert find_files(root, (".csv",), max_depth=1) == []
    assert find_files(root / "missing", (".csv",)) == []
