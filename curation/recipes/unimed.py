"""UniMed-5M / GMAI-VL: many unimodal sources → LLaVA-style conversations grounded in labels.

Each source layout becomes one kind of conversation, with prompts drawn (seeded, per
sample) from a small set of templates per task so a model does not learn one phrasing:

* ``class_folders`` / ``class_csv`` → ``classification``: "what is the diagnosis" → the label;
* ``vqa_json`` (VQA-RAD / SLAKE) → ``vqa``: the question → the answer;
* ``reports`` (image + report text with FINDINGS / IMPRESSION) → ``report``;
* ``segmentation`` (volumes or DICOM with label maps, DICOM-SEG or RT-STRUCT, MSD) → ``referring_seg``: region
  questions (which structure is in this box; is there a <structure>) with the masks;
* ``paired`` (two folders of same-named images, e.g. T1/T2, trainA/trainB) → ``image2image``;
* ``super_resolution`` (any folder of images, volumes or DICOM; chosen in the recipe, never
  detected) → ``image2image``: the anti-aliased ``1/scale`` downsample as ``input``, the
  original as ``output``, with its pixel spacing × scale.

The curriculum stage follows GMAI-VL's three stages (1 captions/perception, 2
instructions/VQA, 3 reasoning and generation) and can be set per source.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from converters.base import ConversionError, SlicePolicy
from converters.io import read_bytes
from converters.text import read_records, read_vqa, split_report
from curation.categories import canonical_category, load_table
from curation.ids import sample_id, sha256_bytes, stable_hash
from curation.recipes.common import (
    Family,
    FamilyContext,
    Produced,
    ResolvedSource,
    add_step,
    guess_modality,
    payload_of,
    register_family,
    work_item,
)
from curation.recipes.imed import fitting_annotations, imed_layout, label_files, msd_labels
from curation.recipes.model import SOURCE_OPTIONS_CHECKS, Recipe, SliceSpec, SourceSpec
from curation.recipes.readers import (
    IMAGE_SUFFIXES,
    csv_header,
    find_column,
    find_files,
    image_index,
    lookup_image,
    read_table,
)
from curation.stages import Reject

PROMPTS: dict[str, tuple[str, ...]] = {
    "classification": (
        "What is the diagnosis shown in this {modality}?",
        "Classify this {modality}.",
        "Which category does this image belong to?",
        "Look at the image and name the finding.",
    ),
    "report": (
        "Write the findings and impression for this {modality}.",
        "Generate a radiology report for this image.",
        "Describe the findings of this {modality} and give your impression.",
    ),
    "region": (
        "Which structure lies inside the box {box}?",
        "What is outlined by the region {box}?",
        "Name the anatomy in the area {box}.",
    ),
    "image2image": (
        "Translate this {src} image into a {dst} image.",
        "Generate the {dst} image that corresponds to this {src} image.",
        "Synthesize a {dst} version of this {src} scan.",
    ),
    "super_resolution": (
        "Upsample this low-resolution {modality} by a factor of {scale}.",
        "Generate a {scale}x super-resolved version of this {modality}.",
        "Increase the resolution of this image from {low} to {high} pixels.",
        "Reconstruct the full-resolution {modality} from this {scale}x downsampled input.",
    ),
}
MODALITY_WORDS = {"CT": "CT scan", "MR": "MRI scan", "XR": "radiograph", "CFP": "fundus photograph", "US": "ultrasound image",
                  "ENDO": "endoscopy image", "PATH": "pathology image", "DERM": "dermoscopy image", "OCT": "OCT scan"}
VQA_MODALITIES = {"ct": "CT", "mri": "MR", "mr": "MR", "x-ray": "XR", "xray": "XR", "x ray": "XR", "us": "US"}
ID_COLUMNS = ("id_code", "image", "image_id", "image_name", "filename", "file", "Image Index", "img", "id", "path")
LABEL_COLUMNS = ("diagnosis", "label", "level", "class", "dx", "Finding Labels", "category", "target")


class UnimedOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    region_slices: SliceSpec = "all"  # slices of segmentation volumes that become region questions
    max_regions_per_image: int = Field(default=4, ge=1)
    vqa_language: str | None = "en"  # SLAKE ships en and zh questions: keep one (None: all)
    # region answers name structures through the same category table as imed
    # ("Kidney-L" -> "left kidney"); names the table does not know are kept, normalised
    category_table: str = "imed_categories"
    category_version: int = Field(default=1, ge=1)


SUPER_RESOLUTION = "super_resolution"
MIN_LOW_RES_PX = 8  # a low-resolution input narrower than this carries no structure to upsample


class SuperResolutionOptions(BaseModel):
    """``sources[].options`` of a super-resolution source (checked when the recipe loads)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    task: Literal["super_resolution"] = "super_resolution"
    scale: Literal[2, 3, 4] = 2
    downsample: Literal["lanczos", "box"] = "lanczos"  # Pillow resize(LANCZOS) | Image.reduce (box mean)
    slices: SliceSpec = "all"  # slices of volumes / DICOM series that become pairs: all | every:N | middle


def is_super_resolution(spec: SourceSpec) -> bool:
    """``layout: super_resolution``, or ``options.task: super_resolution`` on a source of
    another (detected) layout, e.g. class folders reused for super-resolution."""
    return spec.layout == SUPER_RESOLUTION or spec.options.get("task") == SUPER_RESOLUTION


def check_source_options(spec: SourceSpec) -> None:
    """Raises pydantic's ValidationError for a bad super-resolution source (a typo in
    ``task`` included), so ``medcurate build`` refuses the recipe before anything runs."""
    if is_super_resolution(spec) or "task" in spec.options:
        SuperResolutionOptions.model_validate(spec.options)


def downsample(pixels: np.ndarray, scale: int, method: str) -> np.ndarray:
    """The anti-aliased ``1/scale`` image: Lanczos (Pillow widens its support by the
    scale when reducing) or the box mean of each ``scale x scale`` block. The size is
    ``floor(size / scale)``; callers crop to a multiple of the scale first."""
    from PIL import Image

    image = Image.fromarray(pixels)
    if method == "box":
        small = image.reduce(scale)
    else:
        small = image.resize((image.width // scale, image.height // scale), Image.Resampling.LANCZOS)
    return np.asarray(small)


# -- layouts -----------------------------------------------------------------------------
def _images_in(path: Path) -> list[Path]:
    return [p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]


def _subdirs(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))


def vqa_files(path: Path) -> list[Path]:
    """JSON files under ``path`` whose first record has ``question`` and ``answer`` (VQA-RAD, SLAKE)."""
    out = []
    for candidate in find_files(path, (".json",), max_depth=2):
        try:
            records = read_records(str(candidate))
        except ConversionError:
            continue
        if records and {"question", "answer"} <= set(records[0]):
            out.append(candidate)
    return out


def class_table(path: Path) -> tuple[Path, str, str] | None:
    for table in find_files(path, (".csv",), max_depth=2):
        header = csv_header(table)
        id_col, label_col = find_column(header, *ID_COLUMNS), find_column(header, *LABEL_COLUMNS)
        if id_col and label_col and id_col != label_col:
            return table, id_col, label_col
    return None


def report_pairs(path: Path) -> list[tuple[Path, Path]]:
    pairs = []
    for image in find_files(path, IMAGE_SUFFIXES, max_depth=3):
        text = image.with_suffix(".txt")
        if text.exists():
            pairs.append((image, text))
    return pairs


def paired_folders(path: Path) -> tuple[Path, Path] | None:
    dirs = _subdirs(path)
    if len(dirs) != 2:
        return None
    a, b = ({p.stem for p in _images_in(d)} for d in dirs)
    if a and b and len(a & b) >= 0.8 * max(len(a), len(b)):
        return dirs[0], dirs[1]
    return None


def unimed_layout(path: Path) -> str | None:
    if vqa_files(path):
        return "vqa_json"
    if class_table(path):
        return "class_csv"
    if imed_layout(path) in ("msd", "paired_volumes", "dicom_seg"):
        return "segmentation"
    if report_pairs(path):
        return "reports"
    if paired_folders(path):
        return "paired"
    dirs = _subdirs(path)
    if len(dirs) >= 2 and all(_images_in(d) for d in dirs):
        return "class_folders"
    return None


# -- the family --------------------------------------------------------------------------
class Unimed(Family):
    name = "unimed"
    caption_family = "unimed"
    layouts: ClassVar[dict[str, str]] = {
        "vqa_json": "a VQA-RAD / SLAKE JSON list (image_name|img_name, question, answer, answer_type) + images",
        "class_csv": "a CSV id→label (e.g. APTOS train.csv: id_code, diagnosis) + the images it names",
        "class_folders": "<class>/<image> folders (ImageFolder layout), one folder per class",
        "reports": "<name>.png|jpg + <name>.txt report with FINDINGS: / IMPRESSION: sections",
        "segmentation": "volumes or DICOM with label maps or DICOM-SEG/RT-STRUCT, or an MSD dataset.json folder (region questions)",
        "paired": "two folders of same-named images, e.g. T1/ + T2/ or trainA/ + trainB/ (image-to-image)",
        SUPER_RESOLUTION: "any folder of images, volumes or DICOM; never detected: set layout: super_resolution "
        "(or options.task: super_resolution) and options.scale: 2|3|4",
    }
    options_model = UnimedOptions
    curriculum: ClassVar[dict[str, int]] = {
        "caption": 1, "classification": 1, "vqa": 2, "report": 2, "referring_seg": 2, "image2image": 3,
    }
    partition_items = 32

    def detect(self, path: Path, nested: bool) -> str | None:
        return unimed_layout(path)

    def items(self, source: ResolvedSource, recipe: Recipe) -> tuple[list[dict[str, Any]], list[Reject]]:
        root = Path(source.path)
        layout = SUPER_RESOLUTION if is_super_resolution(source.spec) else source.layout
        method = getattr(self, f"_items_{layout}")
        items, rejects = method(source, root, recipe)
        return items, rejects

    def _items_vqa_json(self, source: ResolvedSource, root: Path, recipe: Recipe) -> tuple[list[dict[str, Any]], list[Reject]]:
        opts = UnimedOptions.model_validate(recipe.options)
        index = image_index(root)
        items, rejects = [], []
        for path in vqa_files(root):
            file_key = f"{source.name}/{path.relative_to(root).as_posix()}"
            try:
                # questions/answers are controlled labels here, kept verbatim (as before the move
                # to converters.text); strict=False: one incomplete question is one reject below
                records = read_vqa(str(path), scrub=False, strict=False)
            except ConversionError as err:
                rejects.append(Reject(file_key, self.name, err.reason, err.detail))
                continue
            for number, record in enumerate(records):
                key = f"{file_key}:{number}"
                if opts.vqa_language and record.language and record.language != opts.vqa_language:
                    continue
                name = record.image
                image = lookup_image(index, name) if name else None
                if image is None:
                    rejects.append(Reject(key, self.name, "missing_image", f"{key}: image {name!r} not found under {root}"))
                    continue
                question, answer = record.question, record.answer
                if not question or not answer:
                    rejects.append(Reject(key, self.name, "empty_text", f"{key}: question or answer is empty"))
                    continue
                payload = {
                    "question": question, "answer": answer, "answer_type": record.answer_type,
                    "modality": VQA_MODALITIES.get((record.modality or "").lower()),
                    "subject": name.split("/")[0],
                }
                exact = stable_hash(sha256_bytes(image.read_bytes()), question.lower(), answer.lower())
                items.append(work_item(source, image, kind="vqa", key=key, payload=payload, exact_key=exact))
        return items, rejects

    def _items_class_csv(self, source: ResolvedSource, root: Path, recipe: Recipe) -> tuple[list[dict[str, Any]], list[Reject]]:
        found = class_table(root)
        assert found is not None
        table, id_col, label_col = found
        names = {str(k): str(v) for k, v in (source.spec.options.get("label_names") or {}).items()}
        index = image_index(root)
        _, rows = read_table(table)
        classes = sorted({names.get(r[label_col], r[label_col]) for r in rows if r.get(label_col)})
        items, rejects = [], []
        for row in rows:
            image = lookup_image(index, row[id_col])
            key = f"{source.name}/{row[id_col]}"
            if image is None:
                rejects.append(Reject(key, self.name, "missing_image", f"{table.name} names {row[id_col]!r}, no such image"))
                continue
            label = names.get(row[label_col], row[label_col])
            items.append(work_item(source, image, kind="classification", payload={"label": label, "classes": classes}, near=True))
        return items, rejects

    def _items_class_folders(self, source: ResolvedSource, root: Path, recipe: Recipe) -> tuple[list[dict[str, Any]], list[Reject]]:
        classes = [d.name for d in _subdirs(root)]
        items = [
            work_item(source, image, kind="classification", payload={"label": d.name.replace("_", " "), "classes": classes}, near=True)
            for d in _subdirs(root)
            for image in sorted(_images_in(d))
        ]
        return items, []

    def _items_reports(self, source: ResolvedSource, root: Path, recipe: Recipe) -> tuple[list[dict[str, Any]], list[Reject]]:
        items = []
        for image, text in report_pairs(root):
            items.append(work_item(source, image, kind="report", payload={"report": str(text)}, label_uris=[str(text)], near=True))
        return items, []

    def _items_paired(self, source: ResolvedSource, root: Path, recipe: Recipe) -> tuple[list[dict[str, Any]], list[Reject]]:
        found = paired_folders(root)
        assert found is not None
        first, second = found
        src_name = str(source.spec.options.get("from") or first.name)
        dst_name = str(source.spec.options.get("to") or second.name)
        if source.spec.options.get("reverse"):
            first, second, src_name, dst_name = second, first, dst_name, src_name
        targets = {p.stem: p for p in _images_in(second)}
        items, rejects = [], []
        for image in sorted(_images_in(first)):
            target = targets.get(image.stem)
            if target is None:
                key = f"{source.name}/{image.relative_to(root).as_posix()}"
                rejects.append(Reject(key, self.name, "unpaired", f"{key}: no {second.name}/{image.stem}.* to pair with"))
                continue
            payload = {"output": str(target), "from": src_name, "to": dst_name}
            items.append(work_item(source, image, kind="image2image", payload=payload, label_uris=[str(target)]))
        return items, rejects

    def _items_segmentation(self, source: ResolvedSource, root: Path, recipe: Recipe) -> tuple[list[dict[str, Any]], list[Reject]]:
        from converters.discover import discover

        names: dict[int, str] = {}
        modality = source.spec.modality
        if (root / "dataset.json").exists():
            names, modality = msd_labels(root / "dataset.json")
            modality = source.spec.modality or modality
        found = discover([str(root)])
        items, rejects = [], [Reject(f"{source.name}/{r.source_uri}", r.stage, r.reason, r.detail) for r in found.rejects]
        for item in found.items:
            key = f"{source.name}/{item['key']}"
            if not item.get("label_uris"):
                rejects.append(Reject(key, self.name, "no_label_map", f"{key}: no label map annotates this image"))
                continue
            payload: dict[str, Any] = {"label_names": {str(k): v for k, v in names.items()}, "modality": modality}
            if item["kind"] == "dicom":  # names a SEG / RT-STRUCT in its reject, should it not fit the series
                payload["label_files"] = label_files(item["label_uris"], root)
            items.append({**item, "key": key, "kind": item["kind"], "source": source.name, "layout": source.layout,
                          "payload_json": json.dumps(payload, sort_keys=True), "exact_key": item["sha256"], "near_uri": None})
        return items, rejects

    def _items_super_resolution(
        self, source: ResolvedSource, root: Path, recipe: Recipe
    ) -> tuple[list[dict[str, Any]], list[Reject]]:
        """Every image, volume and DICOM series under ``root`` (as ``convert`` discovers
        them; attached masks are ignored); videos and other files are rejects."""
        from converters.discover import discover

        SuperResolutionOptions.model_validate(source.spec.options)  # checked at load; a plan without it too
        found = discover([str(root)])
        items, rejects = [], [Reject(f"{source.name}/{r.source_uri}", r.stage, r.reason, r.detail) for r in found.rejects]
        for item in found.items:
            key = f"{source.name}/{item['key']}"
            if item["kind"] not in ("raster", "volume", "dicom"):
                rejects.append(Reject(key, self.name, "not_an_image", f"{key}: a {item['kind']} makes no super-resolution pair"))
                continue
            items.append({**item, "key": key, "source": source.name, "layout": SUPER_RESOLUTION,
                          "payload_json": json.dumps({"modality": source.spec.modality}), "exact_key": item["sha256"],
                          "near_uri": item["uri"] if item["kind"] == "raster" else None})
        return items, rejects

    # -- rows --------------------------------------------------------------------------------
    def rows(self, item: dict[str, Any], ctx: FamilyContext) -> list[Produced | Reject]:
        layout = item["layout"]
        if layout == "segmentation":
            return self._region_rows(item, ctx)
        if layout == SUPER_RESOLUTION:
            return self._super_resolution_rows(item, ctx)
        payload = payload_of(item)
        modality = payload.get("modality") or ctx.spec(item["source"]).modality or guess_modality(item["source"])
        row = self._image_row(item, ctx, modality)
        words = MODALITY_WORDS.get(modality, "medical image")
        rng = ctx.rng(item["key"], "prompt")
        if layout in ("class_csv", "class_folders"):
            prompt = rng.choice(PROMPTS["classification"]).format(modality=words)
            classes = payload.get("classes") or []
            if 1 < len(classes) <= 12:
                prompt += " Options: " + ", ".join(classes) + "."
            label = str(payload["label"])
            self._dress(row, "classification", prompt, f"{label}.", [label])
            return [Produced(row, {"modality": modality, "findings": [label]})]
        if layout == "vqa_json":
            self._dress(row, "vqa", payload["question"], payload["answer"], [payload["answer"]])
            return [Produced(row)]
        if layout == "reports":
            return [self._report_row(row, item, payload, rng.choice(PROMPTS["report"]).format(modality=words))]
        if layout == "paired":
            return [self._pair_row(row, item, payload, rng.choice(PROMPTS["image2image"]))]
        raise ConversionError("unsupported_format", f"{item['key']}: unknown unimed layout {layout!r}")

    def _image_row(self, item: dict[str, Any], ctx: FamilyContext, modality: str) -> dict[str, Any]:
        from converters.stage import convert_item

        plain = {"uri": item["uri"], "key": item["key"], "kind": "raster", "members": None, "label_uris": None,
                 "sha256": item["sha256"], "size_bytes": item["size_bytes"]}
        payload = payload_of(item)
        rows, reject = convert_item(plain, ctx.convert_options(item["source"], modality, subject_pattern=None))
        if reject is not None:
            raise ConversionError(reject.reason, reject.detail)
        row = rows[0]
        if payload.get("subject"):
            from curation.ids import subject_pseudonym
            from curation.splits import split_for_subject

            row["subject_key"] = subject_pseudonym(f"{item['source']}:{payload['subject']}", ctx.salt)
            row["split"] = split_for_subject(row["subject_key"], ctx.recipe.splits.ratios())
        return row

    @staticmethod
    def _dress(row: dict[str, Any], task: str, question: str, answer: str, labels: list[str]) -> None:
        row.update(
            task=task,
            sample_id=sample_id(row["dataset"], row["source"], row["source_uri"], task),
            conversations=[{"from": "human", "value": f"<image>\n{question}"}, {"from": "gpt", "value": answer}],
            labels=labels,
            caption=None,
        )

    def _report_row(self, row: dict[str, Any], item: dict[str, Any], payload: dict[str, Any], prompt: str) -> Produced:
        from converters.deid import scrub_text

        text = read_bytes(payload["report"]).decode("utf-8", errors="replace")
        found = split_report(text, scrub=False)  # each section is scrubbed below, as it is used
        sections = {name: body for name, body in (("FINDINGS", found.findings), ("IMPRESSION", found.impression)) if body}
        if not sections:
            raise ConversionError("no_report_sections", f"{item['key']}: the report has neither FINDINGS: nor IMPRESSION:")
        answer = "\n".join(f"{name}: {scrub_text(body)}" for name, body in sections.items())
        self._dress(row, "report", prompt, answer, [])
        row["caption"] = scrub_text(sections.get("IMPRESSION") or sections["FINDINGS"])
        row["labels"] = None
        return Produced(row)

    def _pair_row(self, row: dict[str, Any], item: dict[str, Any], payload: dict[str, Any], prompt: str) -> Produced:
        from converters.raster import open_upright, page_pixels
        from curation.images import image_record

        # EXIF-oriented like the input, which the raster converter wrote as shown
        target = page_pixels(open_upright(read_bytes(payload["output"]), payload["output"]))
        if target.dtype.kind != "u" or target.itemsize != 1:
            target = (target.astype(float) / max(1.0, float(target.max())) * 255).astype("uint8")
        row["images"] = [img for img in row["images"] if img["role"] == "input"] + [image_record("output", target)]
        question = prompt.format(src=payload["from"], dst=payload["to"])
        self._dress(row, "image2image", question, "<image>", [payload["from"], payload["to"]])
        return Produced(row)

    def _super_resolution_rows(self, item: dict[str, Any], ctx: FamilyContext) -> list[Produced | Reject]:
        """One pair per image (per selected slice of a volume or series)."""
        from converters.stage import convert_item

        opts = SuperResolutionOptions.model_validate(ctx.spec(item["source"]).options)
        modality = payload_of(item).get("modality") or ctx.spec(item["source"]).modality or guess_modality(item["source"])
        plain = {k: item[k] for k in ("uri", "key", "kind", "members", "sha256", "size_bytes")}
        plain["label_uris"] = None  # masks attached by discovery play no part in a pair
        rows, reject = convert_item(plain, ctx.convert_options(item["source"], modality, slices=SlicePolicy.parse(opts.slices)))
        if reject is not None:
            raise ConversionError(reject.reason, reject.detail)
        out: list[Produced | Reject] = []
        for row in rows:
            try:
                out.append(self._super_resolution_pair(row, opts, ctx))
            except ConversionError as err:
                out.append(Reject(row["source_uri"], self.name, err.reason, err.detail))
        return out

    def _super_resolution_pair(self, row: dict[str, Any], opts: SuperResolutionOptions, ctx: FamilyContext) -> Produced:
        """``input``: the anti-aliased downsample (spacing × scale); ``output``: the converted
        image, cropped by under ``scale`` px at the right/bottom so both grids cover the
        same field of view exactly. A 16-bit ``raw`` copy is not kept (as for ``paired``)."""
        from curation.images import decode_png, image_record

        image = next((img for img in row["images"] if img["role"] == "input"), None)
        if image is None:
            raise ConversionError("not_an_image", f"{row['source_uri']}: no image to pair (a video or cine loop)")
        scale = opts.scale
        high = decode_png(image["data"])
        height, width = (high.shape[0] // scale) * scale, (high.shape[1] // scale) * scale
        if min(height, width) // scale < MIN_LOW_RES_PX:
            raise ConversionError(
                "too_small", f"{row['source_uri']}: {high.shape[1]}x{high.shape[0]} px leaves under {MIN_LOW_RES_PX} px at 1/{scale}"
            )
        cropped = (height, width) != high.shape[:2]
        target = np.ascontiguousarray(high[:height, :width])
        low = downsample(target, scale, opts.downsample)
        spacing = image.get("spacing_mm")
        window = (image["window"]["center"], image["window"]["width"]) if image.get("window") else None
        low_spacing = [spacing[0] * scale, spacing[1] * scale, *spacing[2:]] if spacing else None
        row["images"] = [
            image_record("input", low, spacing_mm=low_spacing, window=window),
            image_record("output", target, spacing_mm=spacing, window=window, png=None if cropped else image["data"]),
        ]
        words = MODALITY_WORDS.get(row["modality"], "medical image")
        template = ctx.rng(row["source_uri"], "prompt").choice(PROMPTS[SUPER_RESOLUTION])
        prompt = template.format(modality=words, scale=scale, low=f"{low.shape[1]}x{low.shape[0]}", high=f"{width}x{height}")
        self._dress(row, "image2image", prompt, "<image>", [f"super-resolution x{scale}"])
        add_step(row, {"step": "unimed.super_resolution", "params": {
            "scale": scale, "downsample": opts.downsample, "from_px": [int(high.shape[1]), int(high.shape[0])],
            "output_px": [width, height], "input_px": [int(low.shape[1]), int(low.shape[0])],
        }})
        return Produced(row)

    def _region_rows(self, item: dict[str, Any], ctx: FamilyContext) -> list[Produced | Reject]:
        from converters.stage import convert_item

        opts: UnimedOptions = ctx.options
        payload = payload_of(item)
        names = {int(k): v for k, v in (payload.get("label_names") or {}).items()}
        modality = payload.get("modality") or ctx.spec(item["source"]).modality or guess_modality(item["source"])
        plain = {k: item[k] for k in ("uri", "key", "kind", "members", "label_uris", "sha256", "size_bytes")}
        unfit: list[Reject] = []
        if item["kind"] == "dicom":  # a SEG that does not fit the series is its own reject (as in imed)
            plain["label_uris"], unfit = fitting_annotations(item, payload.get("label_files") or {}, self.name)
            if not plain["label_uris"]:
                return list(unfit)
        convert = ctx.convert_options(item["source"], modality, label_names=tuple(sorted(names.items())),
                                      slices=SlicePolicy.parse(opts.region_slices))
        rows, reject = convert_item(plain, convert)
        if reject is not None:
            raise ConversionError(reject.reason, reject.detail)
        table = load_table(opts.category_table, opts.category_version)
        out: list[Produced | Reject] = []
        for row in rows:
            masks = [
                {**m, "category": canonical_category(m["category"], table)[0]}
                for m in row.get("masks") or [] if m.get("bbox_xyxy")
            ]
            if not masks:
                continue
            width = next(img["width"] for img in row["images"] if img["role"] == "input")
            height = next(img["height"] for img in row["images"] if img["role"] == "input")
            rng = ctx.rng(row["source_uri"], "regions")
            chosen = sorted(rng.sample(range(len(masks)), min(len(masks), opts.max_regions_per_image)))
            turns = []
            for position, index in enumerate(chosen):
                mask = masks[index]
                x0, y0, x1, y1 = mask["bbox_xyxy"]
                box = f"[{round(x0 / width * 1000)}, {round(y0 / height * 1000)}, {round(x1 / width * 1000)}, {round(y1 / height * 1000)}]"
                question = rng.choice(PROMPTS["region"]).format(box=box)
                turns.append({"from": "human", "value": f"<image>\n{question}" if position == 0 else question})
                turns.append({"from": "gpt", "value": f"{mask['category']}."})
            add_step(row, {"step": "unimed.regions", "params": {
                "table": f"{opts.category_table}.v{opts.category_version}",
                "regions": [{"label": masks[i]["label"], "category": masks[i]["category"]} for i in chosen],
            }})
            row.update(
                task="referring_seg",
                sample_id=sample_id(row["dataset"], row["source"], row["source_uri"], "referring_seg"),
                conversations=turns,
                masks=[masks[i] for i in chosen],
                labels=sorted({masks[i]["category"] for i in chosen}),
                caption=None,
            )
            out.append(Produced(row))
        if not out:
            raise ConversionError("no_masks", f"{item['key']}: no slice has a labelled structure")
        return out + unfit


register_family(Unimed())
SOURCE_OPTIONS_CHECKS[Unimed.name] = check_source_options
