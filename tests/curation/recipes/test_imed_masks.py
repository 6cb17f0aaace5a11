"""IMed ``image_mask_2d``: masks are read by raw value (class-index and VOC palette masks
are not lost to a luminance threshold) and get the EXIF transpose of their image, so the
mask lies on the lesion in the image as written. Also: retinalogos and unimed ``paired``
read rasters EXIF-oriented, as the converter writes them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from converters.base import ConversionError
from curation.images import decode_png
from curation.recipes.common import Family, FamilyContext, ResolvedSource, family_options
from curation.recipes.demo_trees import fundus_image
from curation.recipes.imed import Imed, imed_layout
from curation.recipes.model import Recipe, SourceSpec
from curation.recipes.retinalogos import RetinaLogos
from curation.recipes.unimed import Unimed, unimed_layout
from curation.stages import Reject
from tests.helpers import TEST_SALT

HEIGHT, WIDTH = 48, 64


def diamond(centre_rc: tuple[int, int], radius: int, shape: tuple[int, int] = (HEIGHT, WIDTH)) -> np.ndarray:
    """An L1 disc: IMed's opening/closing with the 3x3 cross leaves it as it is, so the
    published mask must equal it pixel for pixel."""
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    return np.asarray(np.abs(yy - centre_rc[0]) + np.abs(xx - centre_rc[1]) <= radius)


POLYP = diamond((14, 18), 7)  # class 1 (stored pixels)
STALK = diamond((34, 46), 6)  # class 2


def orientation_exif(value: int) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = value
    return exif


def endoscopy(lesions: np.ndarray) -> np.ndarray:
    """A dark RGB frame with bright lesions where ``lesions`` is set."""
    pixels = np.full((*lesions.shape, 3), 40, np.uint8)
    pixels[lesions] = (220, 120, 100)
    return pixels


def write_source(root: Path) -> Path:
    """images/ + masks/: an index mask {0,1,2}, a VOC palette mask (index 1 = (128,0,0),
    luminance 38), and an EXIF-rotated JPEG whose PNG mask is drawn on its stored pixels."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    both = POLYP | STALK
    Image.fromarray(endoscopy(both)).save(root / "images" / "index.png")
    Image.fromarray((POLYP * 1 + STALK * 2).astype(np.uint8)).save(root / "masks" / "index.png")
    Image.fromarray(endoscopy(POLYP)).save(root / "images" / "voc.png")
    palette = Image.fromarray(POLYP.astype(np.uint8), mode="L").convert("P")
    palette.putpalette([0, 0, 0, 128, 0, 0] + [0] * 762)
    palette.save(root / "masks" / "voc.png")
    Image.fromarray(endoscopy(POLYP)).save(root / "images" / "rotated.jpg", exif=orientation_exif(6), quality=100)
    Image.fromarray(POLYP.astype(np.uint8) * 255).save(root / "masks" / "rotated.png")
    return root


def family_rows(family: Family, root: Path, spec: SourceSpec, layout: str) -> tuple[list[dict[str, Any]], list[Reject]]:
    """A family's rows and rejects for one source, as its stage makes them (no build, no
    catalog: each test stays well under a second)."""
    recipe = Recipe(family=family.name, sources=[spec])  # type: ignore[arg-type]
    ctx = FamilyContext(recipe, family_options(recipe), {str(spec.name): spec}, TEST_SALT, "run", "0")
    items, rejects = family.items(ResolvedSource(str(spec.name), str(root), layout, spec), recipe)
    rows: list[dict[str, Any]] = []
    for item in items:
        try:
            produced = family.rows(item, ctx)
        except ConversionError as err:
            rejects.append(Reject(item["key"], family.name, err.reason, err.detail))
            continue
        for out in produced:
            if isinstance(out, Reject):
                rejects.append(out)
            else:
                rows.append(out.row)
    return rows, rejects


def lesions_in_shard(row: dict[str, Any]) -> np.ndarray:
    image = next(i for i in row["images"] if i["role"] == "input")
    return np.asarray(decode_png(image["data"])[..., 0] > 128)


def test_index_palette_and_rotated_masks_are_kept_and_aligned(tmp_path):
    root = write_source(tmp_path / "polyps")
    spec = SourceSpec(name="Polyps", modality="ENDO", options={"category": "polyp", "label_names": {"2": "polyp stalk"}})
    assert imed_layout(root) == "image_mask_2d"
    produced, rejects = family_rows(Imed(), root, spec, "image_mask_2d")
    assert rejects == []
    rows = {Path(r["source_uri"]).stem: r for r in produced}
    assert set(rows) == {"index", "voc", "rotated"}

    index = {m["category"]: decode_png(m["data"]) for m in rows["index"]["masks"]}
    assert set(index) == {"polyp", "polyp stalk"}  # one target per class value, named by label_names
    np.testing.assert_array_equal(index["polyp"], POLYP)
    np.testing.assert_array_equal(index["polyp stalk"], STALK)
    assert {m["category"]: m["area_px"] for m in rows["index"]["masks"]} == {"polyp": 113, "polyp stalk": 85}

    (voc,) = rows["voc"]["masks"]  # palette index 1, not its dark colour
    assert voc["category"] == "polyp" and voc["area_px"] == int(POLYP.sum()) == 113
    np.testing.assert_array_equal(decode_png(voc["data"]), POLYP)

    (rotated,) = rows["rotated"]["masks"]
    binary = decode_png(rotated["data"])
    assert binary.shape == (WIDTH, HEIGHT)  # shown rotated: 64 rows, 48 columns
    np.testing.assert_array_equal(binary, lesions_in_shard(rows["rotated"]))  # on the lesion, pixel for pixel
    # orientation 6 shows stored (r, c) at (c, H - 1 - r): the diamond centred at (14, 18) is at (18, 33)
    assert rotated["bbox_xyxy"] == [33 - 7, 18 - 7, 33 + 8, 18 + 8]
    assert all(binary[y, x] for x, y in rotated["clicks_xy"])


def test_retinalogos_reads_the_fundus_as_shown(tmp_path):
    """An APTOS photograph stored sideways (Orientation=6, PNG so the pixels are exact) is
    captioned as shown, as the converter would write it: laterality depends on it."""
    stored = fundus_image(192, 7, grade=2)[:, 16:176]  # 192 rows, 160 columns
    root = tmp_path / "aptos"
    (root / "train_images").mkdir(parents=True)
    Image.fromarray(stored).save(root / "train_images" / "f0000001.png", exif=orientation_exif(6))
    (root / "train.csv").write_text("id_code,diagnosis\nf0000001,2\n")
    rows, rejects = family_rows(RetinaLogos(), root, SourceSpec(name="APTOS2019"), "aptos")
    assert rejects == []
    (image,) = rows[0]["images"]
    assert (image["width"], image["height"]) == (192, 160)
    np.testing.assert_array_equal(decode_png(image["data"]), np.rot90(stored, -1))  # 90° clockwise, as shown


def test_unimed_paired_output_is_oriented_like_its_input(tmp_path):
    """T1/ and T2/ photographs of one subject, both stored sideways with Orientation=8:
    the converter writes the input as shown, and the paired output must match it."""
    root = tmp_path / "pairs"
    t1, t2 = endoscopy(POLYP), endoscopy(STALK)
    for folder, pixels in (("T1", t1), ("T2", t2)):
        (root / folder).mkdir(parents=True)
        Image.fromarray(pixels).save(root / folder / "sub-01.png", exif=orientation_exif(8))
    assert unimed_layout(root) == "paired"
    spec = SourceSpec(name="Pairs", modality="MR", options={"from": "T1", "to": "T2"})
    rows, rejects = family_rows(Unimed(), root, spec, "paired")
    assert rejects == []
    images = {i["role"]: decode_png(i["data"]) for i in rows[0]["images"]}
    np.testing.assert_array_equal(images["input"], np.rot90(t1, 1))  # 90° counter-clockwise, as shown
    np.testing.assert_array_equal(images["output"], np.rot90(t2, 1))
