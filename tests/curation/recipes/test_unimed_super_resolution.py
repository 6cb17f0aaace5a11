"""UniMed super-resolution pairs: the anti-aliased 1/scale downsample (input) with the
original (output), from photographs, a real CT slice and a NIfTI volume."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image

from converters.base import ConvertOptions
from converters.stage import convert_item
from curation.images import decode_png
from curation.recipes import RecipeError, recipe_for
from curation.recipes.demo_trees import phantom_ct, save, write_nifti
from curation.recipes.unimed import MODALITY_WORDS, PROMPTS
from tests.curation.recipes.families import Built, build_family
from tests.helpers import CT_DIR, TEST_SALT

NIFTI_SPACING = (0.7, 0.9, 2.5)  # x, y, z as SimpleITK writes them


def photo(height: int, width: int, seed: int, rgb: bool = False) -> np.ndarray:
    """A gradient with a 1-px checkerboard block: the block aliases to black or white
    under plain decimation, and averages to mid grey under an anti-aliased reduction."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    grey = (40 + 150 * xx / width + rng.normal(0, 4, (height, width))).clip(0, 255)
    grey[10:40, 10:40] = np.where((yy[10:40, 10:40] + xx[10:40, 10:40]) % 2 == 0, 255, 0)
    out = grey.astype(np.uint8)
    return np.stack([out, np.flipud(out), out // 2], axis=2) if rgb else out


@pytest.fixture(scope="module")
def sr_build(tmp_path_factory: pytest.TempPathFactory, salt: str) -> Built:
    root = tmp_path_factory.mktemp("unimed_sr")
    src = root / "src"
    save(photo(97, 130, 1), src / "photos" / "grid_130x97.png")
    save(photo(64, 96, 2, rgb=True), src / "photos" / "rgb_96x64.png")
    save(photo(58, 61, 3), src / "photos" / "odd_61x58.png")
    save(photo(20, 20, 4), src / "photos" / "tiny.png")  # 6x6 px at 1/3: too small
    (src / "ct").mkdir(parents=True)
    shutil.copy2(CT_DIR / "02.dcm", src / "ct" / "abdomen.dcm")
    hu, _ = phantom_ct(7, size=64, depth=5)
    write_nifti(hu, src / "ct" / "phantom.nii.gz", spacing=NIFTI_SPACING)
    for cls, seed in (("benign", 5), ("melanoma", 6)):  # class folders reused through options.task
        save(photo(80, 80, seed, rgb=True), src / "derm" / cls / f"{cls}_0.png")
    sources = [
        {"name": "SR_photos", "path": "photos", "layout": "super_resolution", "options": {"scale": 3}},
        {"name": "SR_ct", "path": "ct", "layout": "super_resolution", "modality": "CT",
         "options": {"scale": 2, "downsample": "box", "slices": "middle"}},
        {"name": "SR_derm", "path": "derm", "modality": "DERM", "options": {"task": "super_resolution", "scale": 4}},
    ]
    return build_family("unimed", root / "work", src, {"sources": sources, "dedup": {"near": False}})


def roles(row: dict) -> dict[str, dict]:
    return {img["role"]: img for img in row["images"]}


def by_uri(built: Built) -> dict[str, dict]:
    return {r["source_uri"]: r for r in built.rows}


def test_pairs_are_image2image_conversations(sr_build: Built):
    rows = sr_build.rows
    assert sorted(r["source_uri"] for r in rows) == [
        "SR_ct/abdomen.dcm", "SR_ct/phantom.nii.gz#slice=2", "SR_derm/benign/benign_0.png", "SR_derm/melanoma/melanoma_0.png",
        "SR_photos/grid_130x97.png", "SR_photos/odd_61x58.png", "SR_photos/rgb_96x64.png",
    ]
    for row in rows:
        assert row["task"] == "image2image" and row["curriculum_stage"] == 3
        assert [i["role"] for i in row["images"]] == ["input", "output"]
        human, gpt = row["conversations"]
        assert human["from"] == "human" and human["value"].startswith("<image>\n") and gpt == {"from": "gpt", "value": "<image>"}
        scale = int(row["labels"][0].rsplit("x", 1)[1])
        assert row["labels"] == [f"super-resolution x{scale}"]
        low, high = roles(row)["input"], roles(row)["output"]
        words = MODALITY_WORDS.get(row["modality"], "medical image")
        allowed = {t.format(modality=words, scale=scale, low=f"{low['width']}x{low['height']}", high=f"{high['width']}x{high['height']}")
                   for t in PROMPTS["super_resolution"]}
        assert human["value"].removeprefix("<image>\n") in allowed
    assert len({r["conversations"][0]["value"].split(" ")[0] for r in rows}) > 1  # templates vary per sample
    (tiny,) = [r for r in sr_build.rejects if r.source_uri == "SR_photos/tiny.png"]
    assert tiny.reason == "too_small"


@pytest.mark.parametrize("name", ["grid_130x97.png", "rgb_96x64.png", "odd_61x58.png"])
def test_input_is_pillows_lanczos_downsample_of_the_original(sr_build: Built, name: str):
    row = by_uri(sr_build)[f"SR_photos/{name}"]
    original = np.asarray(Image.open(sr_build.tree / "photos" / name))
    height, width = original.shape[0] // 3 * 3, original.shape[1] // 3 * 3
    target = decode_png(roles(row)["output"]["data"])
    np.testing.assert_array_equal(target, original[:height, :width])  # the original pixels, cropped to x3
    low = decode_png(roles(row)["input"]["data"])
    assert low.shape[:2] == (original.shape[0] // 3, original.shape[1] // 3)
    expected = np.asarray(Image.fromarray(original[:height, :width]).resize((width // 3, height // 3), Image.Resampling.LANCZOS))
    np.testing.assert_array_equal(low, expected)
    # anti-aliased: the 1-px checkerboard averages to grey instead of aliasing to 0 or 255
    block = (low if low.ndim == 2 else low[..., 0])[4:12, 4:12].astype(float)  # channel 0 holds the block
    assert abs(block.mean() - 127.5) < 20 and block.std() < 25
    assert not np.array_equal(low, original[:height:3, :width:3])
    assert roles(row)["input"]["spacing_mm"] is None and roles(row)["output"]["spacing_mm"] is None


def test_ct_pairs_box_downsample_and_scale_the_spacing(sr_build: Built):
    rows = by_uri(sr_build)
    ct = rows["SR_ct/abdomen.dcm"]
    # the output is exactly what `convert` makes of the slice (512 divides by 2: nothing cropped)
    options = ConvertOptions(dataset="unimed", source="SR_ct", salt=TEST_SALT, modality="CT")
    path = sr_build.tree / "ct" / "abdomen.dcm"
    plain = {"uri": str(path), "key": "SR_ct/abdomen.dcm", "kind": "dicom", "members": None, "label_uris": None,
             "sha256": "0" * 64, "size_bytes": path.stat().st_size}
    (converted,), reject = convert_item(plain, options)
    assert reject is None
    reference = roles(converted)["input"]
    assert roles(ct)["output"]["data"] == reference["data"]
    target = decode_png(reference["data"])
    low = decode_png(roles(ct)["input"]["data"])
    np.testing.assert_array_equal(low, np.asarray(Image.fromarray(target).reduce(2)))
    assert low.shape == (256, 256)
    spacing = [float(v) for v in pydicom.dcmread(path, stop_before_pixels=True).PixelSpacing]
    assert roles(ct)["output"]["spacing_mm"] == pytest.approx(spacing)
    assert roles(ct)["input"]["spacing_mm"] == pytest.approx([2 * s for s in spacing])
    assert roles(ct)["input"]["window"] == roles(ct)["output"]["window"] == reference["window"]

    volume = rows["SR_ct/phantom.nii.gz#slice=2"]
    big, small = roles(volume)["output"], roles(volume)["input"]
    assert (big["width"], big["height"], small["width"], small["height"]) == (64, 64, 32, 32)
    assert sorted(big["spacing_mm"][:2]) == pytest.approx(sorted(NIFTI_SPACING[:2]))
    assert big["spacing_mm"][2] == pytest.approx(NIFTI_SPACING[2])
    assert small["spacing_mm"] == pytest.approx([2 * big["spacing_mm"][0], 2 * big["spacing_mm"][1], big["spacing_mm"][2]])
    # physical extent is the same on both grids
    assert small["width"] * small["spacing_mm"][1] == pytest.approx(big["width"] * big["spacing_mm"][1])


def test_class_folders_become_pairs_through_options_task(sr_build: Built):
    for cls in ("benign", "melanoma"):
        row = by_uri(sr_build)[f"SR_derm/{cls}/{cls}_0.png"]
        assert row["modality"] == "DERM" and row["labels"] == ["super-resolution x4"]
        assert (roles(row)["input"]["width"], roles(row)["input"]["height"]) == (20, 20)
        assert (roles(row)["output"]["width"], roles(row)["output"]["height"]) == (80, 80)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"scale": 5}, r"sources\.0\.options\.scale: Input should be 2, 3 or 4"),
        ({"scale": 2, "downsample": "nearest"}, r"sources\.0\.options\.downsample"),
        ({"scale": 2, "slices": "some"}, r"sources\.0\.options\.slices"),
        ({"scael": 2}, r"sources\.0\.options\.scael: unknown key"),
    ],
)
def test_bad_super_resolution_options_are_recipe_errors(options: dict, message: str):
    with pytest.raises(RecipeError, match=message):
        recipe_for("unimed", {"sources": [{"path": "x", "layout": "super_resolution", "options": options}]})


def test_a_misspelt_task_is_a_recipe_error_and_other_sources_are_untouched():
    with pytest.raises(RecipeError, match=r"sources\.1\.options\.task"):
        recipe_for("unimed", {"sources": [{"path": "a", "options": {"from": "T1"}},
                                          {"path": "b", "options": {"task": "superresolution", "scale": 2}}]})
    recipe = recipe_for("unimed", {"sources": [{"path": "a", "options": {"from": "T1", "to": "T2"}}]})
    assert recipe.sources[0].options == {"from": "T1", "to": "T2"}


def test_super_resolution_is_never_detected(tmp_path: Path):
    from curation.recipes.unimed import unimed_layout

    save(photo(64, 64, 9), tmp_path / "flat" / "a.png")
    assert unimed_layout(tmp_path / "flat") is None
