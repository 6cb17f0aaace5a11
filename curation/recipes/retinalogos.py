"""RetinaLogos: colour fundus photographs + grading tables → structured findings → caption.

Grading tables are read in their public layouts (APTOS 2019 ``train.csv``, EyePACS
``trainLabels.csv``, IDRiD disease-grading CSV, ODIR-5K annotations); each graded image
becomes a facts dict (modality CFP, laterality, DR grade, DME risk, findings) that the
captioner turns into a caption grounded in exactly those labels (the family template
when no LLM is configured). Fundus QC runs before anything is written: a field of view
must be detected, and the image must not be black or over/under-exposed.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field
from scipy import ndimage

from converters.base import ConversionError
from converters.io import read_bytes
from converters.raster import open_upright
from converters.rows import build_row
from curation.images import image_record
from curation.recipes.common import (
    Family,
    FamilyContext,
    Produced,
    ResolvedSource,
    payload_of,
    register_family,
    work_item,
)
from curation.recipes.model import Recipe
from curation.recipes.readers import (
    csv_header,
    find_column,
    find_files,
    image_index,
    lookup_image,
    read_table,
)
from curation.stages import Reject

CAPTION_PROMPTS = (
    "Describe this fundus photograph.",
    "Write a short report of this colour fundus photograph.",
    "What do you see in this retinal image?",
    "Summarise the findings of this fundus image, including the diabetic retinopathy grade.",
)


class RetinaOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    max_side: int = Field(default=1024, ge=64)  # larger photographs are downscaled (aspect kept)
    fov_threshold: int = Field(default=20, ge=0, le=255)  # grey level separating the FOV from the black border
    min_fov_fraction: float = Field(default=0.15, gt=0, lt=1)
    min_mean_brightness: float = Field(default=30.0, ge=0)  # mean grey inside the FOV
    max_mean_brightness: float = Field(default=210.0, le=255)
    max_saturated_fraction: float = Field(default=0.3, gt=0, le=1)  # pixels with a channel ≥ 250 inside the FOV


LAYOUTS: dict[str, tuple[tuple[str, ...], ...]] = {
    # layout: required column groups (any name of each group)
    "idrid": (("Image name", "image_name"), ("Retinopathy grade",), ("Risk of macular edema", "Risk of macular oedema")),
    "odir": (("Left-Fundus",), ("Right-Fundus",), ("Left-Diagnostic Keywords",), ("Right-Diagnostic Keywords",)),
    "aptos": (("id_code",), ("diagnosis",)),
    "eyepacs": (("image",), ("level",)),
}


def table_layout(header: list[str]) -> str | None:
    for layout, groups in LAYOUTS.items():
        if all(find_column(header, *group) for group in groups):
            return layout
    return None


def grading_tables(root: Path) -> list[tuple[Path, str]]:
    out = []
    for path in find_files(root, (".csv",), max_depth=4):
        layout = table_layout(csv_header(path))
        if layout:
            out.append((path, layout))
    return out


def keywords(text: str) -> list[str]:
    """ODIR diagnostic keywords: '，'/','/';'-separated phrases, lower-cased, de-duplicated."""
    words = [w.strip().lower() for w in re.split(r"[，,;]", text or "") if w.strip()]
    return list(dict.fromkeys(words))


def _int(value: str, origin: str, column: str) -> int:
    try:
        return int(float(value))
    except ValueError:
        raise ConversionError("bad_table", f"{origin}: column {column!r} must be an integer, got {value!r}") from None


def graded_images(table: Path, layout: str) -> list[tuple[str, dict[str, Any]]]:
    """(image name, labels) for every graded image of one table."""
    header, rows = read_table(table)
    col = {
        name: find_column(header, *group)
        for name, group in zip(("a", "b", "c", "d"), LAYOUTS[layout], strict=False)
    }
    out: list[tuple[str, dict[str, Any]]] = []
    for row in rows:
        if layout == "aptos":
            name = row[col["a"] or ""]
            out.append((name, {"dr_grade": _int(row[col["b"] or ""], str(table), "diagnosis"), "subject": name}))
        elif layout == "eyepacs":
            name = row[col["a"] or ""]
            side = "left" if name.endswith("_left") else "right" if name.endswith("_right") else None
            labels = {"dr_grade": _int(row[col["b"] or ""], str(table), "level"), "laterality": side}
            out.append((name, {**labels, "subject": name.rsplit("_", 1)[0] if side else name}))
        elif layout == "idrid":
            name = row[col["a"] or ""]
            out.append(
                (
                    name,
                    {
                        "dr_grade": _int(row[col["b"] or ""], str(table), "Retinopathy grade"),
                        "dme_risk": _int(row[col["c"] or ""], str(table), "Risk of macular edema"),
                        "subject": name,
                    },
                )
            )
        elif layout == "odir":
            subject = row.get(find_column(header, "ID") or "", "") or row[col["a"] or ""]
            for side, image_col, words_col in (("left", col["a"], col["c"]), ("right", col["b"], col["d"])):
                name = row[image_col or ""]
                if name:
                    out.append((name, {"laterality": side, "keywords": keywords(row[words_col or ""]), "subject": subject}))
    return out


def fundus_qc(rgb: np.ndarray, opts: RetinaOptions) -> tuple[str, str] | None:
    """(reason, detail) when the photograph fails fundus QC, None when it passes.

    The field of view is the largest bright connected region (grey > ``fov_threshold``)
    with holes filled; a fundus camera image has a dark border, so the four corners
    must lie outside it.
    """
    grey = rgb.astype(np.float32).mean(axis=2)
    if grey.mean() < opts.fov_threshold / 2 and grey.max() < opts.fov_threshold * 2:
        return "black_image", f"mean grey {grey.mean():.1f}, max {grey.max():.0f}: the photograph is black"
    bright = grey > opts.fov_threshold
    labels, count = ndimage.label(bright)
    if count == 0:
        return "black_image", f"no pixel above grey {opts.fov_threshold}"
    sizes = ndimage.sum(bright, labels, range(1, count + 1))
    fov = ndimage.binary_fill_holes(labels == (int(np.argmax(sizes)) + 1))
    fraction = float(fov.mean())
    h, w = fov.shape
    cy, cx = max(1, h // 20), max(1, w // 20)
    corners = [fov[:cy, :cx], fov[:cy, -cx:], fov[-cy:, :cx], fov[-cy:, -cx:]]
    if fraction < opts.min_fov_fraction or all(c.mean() > 0.5 for c in corners):
        return (
            "no_field_of_view",
            f"field of view covers {fraction:.0%} of the image (need ≥ {opts.min_fov_fraction:.0%}) "
            f"with a dark border; corners inside the FOV: {sum(c.mean() > 0.5 for c in corners)}/4",
        )
    inside = grey[fov]
    mean = float(inside.mean())
    saturated = float((rgb[fov] >= 250).any(axis=1).mean())
    if mean < opts.min_mean_brightness:
        return "underexposed", f"mean grey inside the field of view {mean:.1f} < {opts.min_mean_brightness:g}"
    if mean > opts.max_mean_brightness or saturated > opts.max_saturated_fraction:
        return (
            "overexposed",
            f"mean grey inside the field of view {mean:.1f} (max {opts.max_mean_brightness:g}), "
            f"saturated {saturated:.0%} (max {opts.max_saturated_fraction:.0%})",
        )
    return None


def fundus_facts(labels: dict[str, Any]) -> dict[str, Any]:
    """The captioner's facts of one graded image (only what the labels state)."""
    words = list(labels.get("keywords") or [])
    return {
        "modality": "CFP",
        "laterality": labels.get("laterality"),
        "dr_grade": labels.get("dr_grade"),
        "dme_risk": labels.get("dme_risk"),
        "findings": words,
        "absent_findings": [],
    }


def fundus_labels(labels: dict[str, Any]) -> list[str]:
    out = []
    if labels.get("dr_grade") is not None:
        out.append(f"DR grade {labels['dr_grade']}")
    if labels.get("dme_risk") is not None:
        out.append(f"DME risk {labels['dme_risk']}")
    return out + list(labels.get("keywords") or [])


class RetinaLogos(Family):
    name = "retinalogos"
    caption_family = "retinalogos"
    layouts: ClassVar[dict[str, str]] = {
        "aptos": "train.csv (id_code, diagnosis) + train_images/<id_code>.png (APTOS 2019)",
        "eyepacs": "trainLabels.csv (image, level) + train/<image>.jpeg (EyePACS / Kaggle DR)",
        "idrid": "disease-grading CSV (Image name, Retinopathy grade, Risk of macular edema) + images (IDRiD)",
        "odir": "annotation CSV (ID, Left-Fundus, Right-Fundus, Left/Right-Diagnostic Keywords) + images (ODIR-5K)",
    }
    options_model = RetinaOptions
    curriculum: ClassVar[dict[str, int]] = {"caption": 1}
    partition_items = 64

    def detect(self, path: Path, nested: bool) -> str | None:
        tables = [p for p in path.glob("*.csv")] + [p for p in path.glob("*/*.csv")] + [p for p in path.glob("*/*/*.csv")]
        for table in sorted(tables):
            layout = table_layout(csv_header(table))
            if layout:
                return layout
        return None

    def items(self, source: ResolvedSource, recipe: Recipe) -> tuple[list[dict[str, Any]], list[Reject]]:
        root = Path(source.path)
        index = image_index(root)
        items: list[dict[str, Any]] = []
        rejects: list[Reject] = []
        seen: set[str] = set()
        for table, layout in grading_tables(root):
            if layout != source.layout:
                continue
            for name, labels in graded_images(table, layout):
                image = lookup_image(index, name)
                key = f"{source.name}/{name}"
                if image is None:
                    rejects.append(Reject(key, self.name, "missing_image", f"{table.name} grades {name!r}, no such image under {root}"))
                    continue
                if str(image) in seen:
                    continue
                seen.add(str(image))
                items.append(work_item(source, image, kind="fundus", payload=labels, near=True))
        return items, rejects

    def rows(self, item: dict[str, Any], ctx: FamilyContext) -> list[Produced]:
        opts: RetinaOptions = ctx.options
        labels = payload_of(item)
        img = open_upright(read_bytes(item["uri"]), item["key"]).convert("RGB")  # laterality reads the fundus as shown
        resized = max(img.size) > opts.max_side
        if resized:
            img.thumbnail((opts.max_side, opts.max_side), Image.Resampling.LANCZOS)
        rgb = np.asarray(img)
        failed = fundus_qc(rgb, opts)
        if failed:
            raise ConversionError(failed[0], f"{item['key']}: {failed[1]}")
        convert = ctx.convert_options(item["source"], "CFP")
        prompt = ctx.rng(item["key"], "prompt").choice(CAPTION_PROMPTS)
        steps = [
            {"step": "raster.read", "params": {"resized_to": list(img.size) if resized else None}},
            {"step": "fundus.qc", "params": opts.model_dump()},
            {"step": "facts", "params": {k: v for k, v in labels.items() if k != "subject"}},
        ]
        row = build_row(
            convert,
            key=item["key"],
            sha256=item["sha256"],
            modality="CFP",
            subject_id=str(labels.get("subject") or item["key"]),
            images=[image_record("input", rgb)],
            steps=steps,
            task="caption",
            labels=fundus_labels(labels) or None,
            conversations=[{"from": "human", "value": f"<image>\n{prompt}"}, {"from": "gpt", "value": "{caption}"}],
        )
        return [Produced(row, fundus_facts(labels))]


register_family(RetinaLogos())
