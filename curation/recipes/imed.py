"""IMed-361M: segmentation sources → one sample per slice, per-target masks with prompts.

Volumes are sliced by the converters (DICOM series, NIfTI/NRRD/MHA with label maps on
the image grid). Each label becomes a binary mask that is cleaned (morphological
opening then closing with a 3x3 cross, components under the area floor removed) and
dropped when it covers less than 0.05% of the image, as IMed-361M does. Each kept mask
gets its canonical category (versioned synonym table, ``curation/categories``) and
interactive prompts:

* clicks from the central 50% of the foreground: pixels whose distance to the mask
  border is in the top half of the mask's distance values; the first click is the one
  nearest the centroid, further clicks are drawn from that region with the recipe seed;
* a box prompt: the tight box with each side jittered by up to ±5 px (seeded), stored in
  ``box_prompt_xyxy`` while ``bbox_xyxy`` stays the tight box;
* a text prompt: the canonical category (``masks[].category``).

DICOM series annotated by DICOM-SEG (or RT-STRUCT) objects are read the way ``convert``
reads them: discovery attaches each annotation to the series its
ReferencedSeriesSequence names (:mod:`converters.discover`), and
:mod:`converters.dicom_labels` (highdicom) puts each segment on the slice whose
SOPInstanceUID its frame references. Segment labels are the mask names. An annotation
whose series is not in the source, or whose frames do not fit the series' grid, is a
Reject naming it; the series' other annotations still make samples.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from scipy import ndimage

from converters.base import ConversionError, SlicePolicy
from converters.dicom_labels import annotation_kind
from converters.io import read_bytes
from converters.labels import looks_like_label_map
from converters.layouts import controlled_channel_modality, parse_dataset_json
from curation.categories import canonical_category, load_table
from curation.ids import sample_id
from curation.images import decode_png, mask_record, tight_bbox_xyxy
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
from curation.recipes.model import Recipe, SliceSpec
from curation.recipes.readers import IMAGE_SUFFIXES, find_files
from curation.stages import Reject

VOLUME_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
DICOM_SUFFIXES = (".dcm", ".dicom")
CROSS = ndimage.generate_binary_structure(2, 1)


class ImedOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    min_area_fraction: float = Field(default=0.0005, ge=0, lt=1)  # IMed-361M: masks < 0.05% of the image dropped
    clicks: int = Field(default=1, ge=1, le=20)  # click prompts per mask
    box_jitter_px: int = Field(default=5, ge=0, le=100)
    slices: SliceSpec = "all"  # all | every:N | middle
    keep_empty_slices: bool = False
    category_table: str = "imed_categories"
    category_version: int = Field(default=1, ge=1)


# -- masks and prompts -------------------------------------------------------------------
def clean_mask(mask: np.ndarray, min_area_px: int) -> np.ndarray:
    """Opening (removes specks and 1-px spurs), closing (fills pinholes), then drop
    connected components smaller than ``min_area_px``."""
    cleaned = ndimage.binary_opening(mask, structure=CROSS)
    cleaned = ndimage.binary_closing(cleaned, structure=CROSS) & ndimage.binary_dilation(mask, structure=CROSS)
    labels, count = ndimage.label(cleaned)
    if count == 0:
        return cleaned
    sizes = ndimage.sum(cleaned, labels, range(1, count + 1))
    keep = np.zeros(count + 1, dtype=bool)
    keep[1:] = sizes >= max(1, min_area_px)
    return keep[labels]


def click_prompts(mask: np.ndarray, count: int, rng: np.random.Generator) -> list[list[int]]:
    """[x, y] clicks inside ``mask``: the central-half pixel nearest the centroid first."""
    distance = ndimage.distance_transform_edt(mask)
    values = distance[mask]
    central = mask & (distance >= np.median(values))
    ys, xs = np.nonzero(central)
    cy, cx = ndimage.center_of_mass(mask)
    first = int(np.argmin((ys - cy) ** 2 + (xs - cx) ** 2))
    clicks = [[int(xs[first]), int(ys[first])]]
    if count > 1 and len(xs) > 1:
        others = np.delete(np.arange(len(xs)), first)
        picks = rng.choice(others, size=min(count - 1, len(others)), replace=False)
        clicks += [[int(xs[i]), int(ys[i])] for i in sorted(picks)]
    return clicks


def jittered_box(box: list[int], shape: tuple[int, int], jitter: int, rng: np.random.Generator) -> list[int]:
    """The tight box with each side moved by up to ±``jitter`` px, kept inside the image
    and at least one pixel wide."""
    height, width = shape
    x0, y0, x1, y1 = (int(v + rng.integers(-jitter, jitter + 1)) for v in box)
    x0, x1 = min(max(x0, 0), width - 1), min(max(x1, 1), width)
    y0, y1 = min(max(y0, 0), height - 1), min(max(y1, 1), height)
    return [x0, y0, max(x1, x0 + 1), max(y1, y0 + 1)]


def prompt_mask(
    binary: np.ndarray, *, label: str, name: str, table: dict[str, str], opts: ImedOptions, rng: np.random.Generator
) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """A cleaned, prompted mask record (None when dropped) and what happened to it."""
    floor = int(np.ceil(opts.min_area_fraction * binary.size))
    cleaned = clean_mask(binary, floor)
    area = int(cleaned.sum())
    category, known = canonical_category(name, table)
    note = {"label": label, "name": name, "category": category, "in_table": known, "area_raw": int(binary.sum()), "area": area}
    if area == 0 or area < opts.min_area_fraction * binary.size:
        note["dropped"] = f"area {area} px < {opts.min_area_fraction:.4%} of {binary.size} px"
        return None, note
    box = tight_bbox_xyxy(cleaned)
    assert box is not None
    record = mask_record(
        cleaned,
        label=label,
        category=category,
        clicks_xy=click_prompts(cleaned, opts.clicks, rng),
        box_prompt_xyxy=jittered_box(box, cleaned.shape, opts.box_jitter_px, rng),
    )
    return record, note


# -- layouts -----------------------------------------------------------------------------
def _volumes(path: Path) -> list[Path]:
    return [p for p in find_files(path, VOLUME_SUFFIXES + (".gz",)) if p.name.lower().endswith(VOLUME_SUFFIXES)]


def msd_labels(dataset_json: Path) -> tuple[dict[int, str], str | None]:
    """Label value → name and the modality of an MSD (v1) or nnU-Net v2 ``dataset.json``
    (parsed by :func:`converters.layouts.parse_dataset_json`: names come back lower-case)."""
    try:
        spec = parse_dataset_json(dataset_json.read_bytes())
    except (OSError, ValueError, AttributeError) as exc:
        raise ConversionError("bad_table", f"{dataset_json}: not readable JSON ({exc})") from exc
    channels = spec["channels"]
    modality = controlled_channel_modality(channels[min(channels)]) if channels else None
    return dict(spec["label_names"]), modality


def dicom_annotation_kind(path: Path) -> str | None:
    """``seg`` / ``rtstruct`` when the file is a DICOM annotation object, else None.

    Only the two tags that decide it are parsed (pydicom skips over the rest), so
    detection over a folder of thousands of slices stays cheap."""
    import pydicom

    try:
        header = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID", "Modality"])
        return annotation_kind(header)
    except Exception:  # not DICOM, or damaged: discovery rejects it later; detection must not fail
        return None


def has_dicom_annotations(path: Path) -> bool:
    """Whether a DICOM-SEG or RT-STRUCT file lies anywhere under ``path``."""
    return any(dicom_annotation_kind(p) for p in find_files(path, DICOM_SUFFIXES))


def imed_layout(path: Path) -> str | None:
    if (path / "dataset.json").exists() and (path / "imagesTr").is_dir():
        return "msd"
    if (path / "images").is_dir() and (path / "masks").is_dir():
        return "image_mask_2d"
    if any(looks_like_label_map(p.as_posix()) for p in _volumes(path)):
        return "paired_volumes"
    if has_dicom_annotations(path):
        return "dicom_seg"
    return None


class Imed(Family):
    name = "imed"
    caption_family = "imed"
    layouts: ClassVar[dict[str, str]] = {
        "msd": "dataset.json + imagesTr/<case>_0000.nii.gz + labelsTr/<case>.nii.gz (MSD / nnU-Net v1 or v2)",
        "paired_volumes": "volumes or DICOM series with label maps named <image>_seg/_label/_mask (NRRD/NIfTI/MHA)",
        "image_mask_2d": "images/<name>.png|jpg + masks/<name>.png (Kvasir-SEG, ISIC, BUSI style 2D masks)",
        "dicom_seg": "DICOM series (any folder tree) + DICOM-SEG or RT-STRUCT *.dcm objects that reference them",
    }
    options_model = ImedOptions
    curriculum: ClassVar[dict[str, int]] = {"interactive_seg": 1}
    partition_items = 8

    def detect(self, path: Path, nested: bool) -> str | None:
        return imed_layout(path)

    def items(self, source: ResolvedSource, recipe: Recipe) -> tuple[list[dict[str, Any]], list[Reject]]:
        root = Path(source.path)
        if source.layout == "image_mask_2d":
            return self._mask_pairs(source, root)
        if source.layout == "msd":
            return self._msd_cases(source, root)
        return self._discovered(source, root)

    def _discovered(self, source: ResolvedSource, root: Path) -> tuple[list[dict[str, Any]], list[Reject]]:
        """Images with label maps, DICOM-SEG or RT-STRUCT attached, as ``convert`` discovers
        them; an annotation whose image is not in the source is discovery's reject."""
        from converters.discover import discover

        names = {int(k): str(v) for k, v in (source.spec.options.get("label_names") or {}).items()}
        found = discover([str(root)])
        items, rejects = [], [Reject(f"{source.name}/{r.source_uri}", r.stage, r.reason, r.detail) for r in found.rejects]
        for item in found.items:
            key = f"{source.name}/{item['key']}"
            if not item.get("label_uris"):
                rejects.append(Reject(key, self.name, "no_label_map", f"{key}: no label map annotates this image"))
                continue
            payload: dict[str, Any] = {"label_names": {str(k): v for k, v in names.items()}, "modality": source.spec.modality}
            if item["kind"] == "dicom":  # names the annotation files in rejects, should one not fit the series
                payload["label_files"] = label_files(item["label_uris"], root)
            items.append(
                {
                    **item,
                    "key": key,
                    "source": source.name,
                    "layout": source.layout,
                    "payload_json": json.dumps(payload, sort_keys=True),
                    "exact_key": item["sha256"],
                    "near_uri": None,
                }
            )
        return items, rejects

    def _msd_cases(self, source: ResolvedSource, root: Path) -> tuple[list[dict[str, Any]], list[Reject]]:
        """Cases of an MSD / nnU-Net folder: dataset.json's ``training`` list (MSD), else
        ``labelsTr/<case>`` paired with ``imagesTr/<case>`` or ``imagesTr/<case>_0000`` (nnU-Net v2)."""
        names, modality = msd_labels(root / "dataset.json")
        names.update({int(k): str(v) for k, v in (source.spec.options.get("label_names") or {}).items()})
        payload = {"label_names": {str(k): v for k, v in names.items()}, "modality": source.spec.modality or modality}
        data = json.loads((root / "dataset.json").read_text())
        pairs: list[tuple[Path, Path]] = []
        if isinstance(data.get("training"), list) and data["training"]:
            pairs = [(root / str(e["image"]), root / str(e["label"])) for e in data["training"] if isinstance(e, dict)]
        else:
            for label in _volumes(root / "labelsTr"):
                stem = label.name[: -len(next(s for s in VOLUME_SUFFIXES if label.name.endswith(s)))]
                suffix = label.name[len(stem):]
                image = next((root / "imagesTr" / f"{stem}{tail}{suffix}" for tail in ("_0000", "")
                              if (root / "imagesTr" / f"{stem}{tail}{suffix}").exists()), root / "imagesTr" / label.name)
                pairs.append((image, label))
        items, rejects = [], []
        for image, label in pairs:
            key = f"{source.name}/{image.relative_to(root).as_posix() if image.is_relative_to(root) else image.name}"
            if not image.exists() or not label.exists():
                missing = image if not image.exists() else label
                rejects.append(Reject(key, self.name, "missing_file", f"{key}: dataset.json names {missing}, which does not exist"))
                continue
            items.append(work_item(source, image, kind="volume", label_uris=[str(label)], payload=payload))
        return items, rejects

    def _mask_pairs(self, source: ResolvedSource, root: Path) -> tuple[list[dict[str, Any]], list[Reject]]:
        masks = {p.stem: p for p in find_files(root / "masks", IMAGE_SUFFIXES)}
        items, rejects = [], []
        category = str(source.spec.options.get("category") or source.name)
        names = {str(int(k)): str(v) for k, v in (source.spec.options.get("label_names") or {}).items()}
        payload: dict[str, Any] = {"category": category, **({"label_names": names} if names else {})}
        for image in find_files(root / "images", IMAGE_SUFFIXES):
            mask = next((masks[s] for s in (image.stem, f"{image.stem}_mask", f"{image.stem}_segmentation") if s in masks), None)
            if mask is None:
                key = f"{source.name}/{image.relative_to(root).as_posix()}"
                rejects.append(Reject(key, self.name, "no_label_map", f"{key}: no masks/{image.stem}.* next to it"))
                continue
            items.append(work_item(source, image, kind="raster", label_uris=[str(mask)], payload=payload))
        return items, rejects

    def rows(self, item: dict[str, Any], ctx: FamilyContext) -> list[Produced | Reject]:
        from converters.stage import convert_item

        opts: ImedOptions = ctx.options
        payload = payload_of(item)
        names = {int(k): v for k, v in (payload.get("label_names") or {}).items()}
        modality = payload.get("modality") or ctx.spec(item["source"]).modality or guess_modality(item["source"])
        convert = ctx.convert_options(
            item["source"], modality, label_names=tuple(sorted(names.items())), slices=SlicePolicy.parse(opts.slices)
        )
        plain = {k: item[k] for k in ("uri", "key", "kind", "members", "label_uris", "sha256", "size_bytes")}
        unfit: list[Reject] = []
        if item["kind"] == "raster":
            plain["label_uris"] = None  # 2D masks are read below, not as label volumes
        elif item["kind"] == "dicom":
            plain["label_uris"], unfit = fitting_annotations(item, payload.get("label_files") or {}, self.name)
            if not plain["label_uris"]:
                return list(unfit)
        rows, reject = convert_item(plain, convert)
        if reject is not None:
            raise ConversionError(reject.reason, reject.detail)
        if item["kind"] == "raster":
            _attach_2d_mask(rows[0], item, payload)
        table = load_table(opts.category_table, opts.category_version)
        produced: list[Produced | Reject] = []
        for row in rows:
            out = self._prompted(row, table, opts, ctx)
            if out is not None:
                produced.append(out)
        if not produced:
            raise ConversionError(
                "no_masks", f"{item['key']}: none of {len(rows)} slice(s) has a mask of at least {opts.min_area_fraction:.2%} of the image"
            )
        return produced + unfit

    def _prompted(self, row: dict[str, Any], table: dict[str, str], opts: ImedOptions, ctx: FamilyContext) -> Produced | None:
        image = next(img for img in row["images"] if img["role"] == "input")
        shape = (int(image["height"]), int(image["width"]))
        rng = np.random.default_rng(int(ctx.rng(row["source_uri"], "prompts").getrandbits(63)))
        masks, notes = [], []
        for mask in row.get("masks") or []:
            binary = decode_png(mask["data"]).astype(bool)
            if binary.shape != shape:
                raise ConversionError("mask_grid_mismatch", f"{row['source_uri']}: mask {binary.shape} vs image {shape}")
            record, note = prompt_mask(binary, label=mask["label"], name=mask["category"], table=table, opts=opts, rng=rng)
            notes.append(note)
            if record is not None:
                masks.append(record)
        if not masks and not opts.keep_empty_slices:
            return None
        categories = sorted({m["category"] for m in masks})
        add_step(row, {
            "step": "imed.masks",
            "params": {**opts.model_dump(), "table": f"{opts.category_table}.v{opts.category_version}", "masks": notes},
        })
        row.update(
            task="interactive_seg",
            sample_id=sample_id(row["dataset"], row["source"], row["source_uri"], "interactive_seg"),
            masks=masks or None,
            labels=categories or None,
            caption=None,
        )
        return Produced(row, {"modality": row["modality"], "mask_targets": categories})


def fitting_annotations(item: dict[str, Any], files: dict[str, str], stage: str) -> tuple[list[str], list[Reject]]:
    """The series' label files without the DICOM annotations that do not fit it, and a
    Reject per such annotation (``<series>#label=<file>``: the run summary counts the
    series once). A lone annotation is left to the converter (its failure rejects the
    series anyway); next to other label files, each DICOM annotation is loaded on the
    series' slices here, exactly as the converter will, so one bad SEG does not cost the
    good ones their samples."""
    from converters.dicom import VOLUME_LABEL_EXTENSIONS, order_series, read_dicom
    from converters.dicom_labels import load_dicom_labels
    from converters.io import member_path, read_bytes

    uris = list(item.get("label_uris") or [])
    members = list(item.get("members") or [])
    annotations = [u for u in uris if not member_path(u).lower().endswith(VOLUME_LABEL_EXTENSIONS)]
    if not annotations or len(uris) < 2 or len(members) < 2:
        return uris, []
    ordered = [h for _, h in order_series([(u, read_dicom(read_bytes(u), u, headers_only=True, check_elements=False)) for u in members])]
    rejects = []
    for uri in annotations:
        try:
            load_dicom_labels([uri], ordered, item["key"])
            continue
        except ConversionError as err:
            reason, detail = err.reason, err.detail
        except (ValueError, KeyError, IndexError, AttributeError, TypeError) as exc:  # highdicom on odd SEGs
            reason, detail = "bad_label_map", f"{uri}: {type(exc).__name__}: {str(exc)[:200]}"
        uris.remove(uri)
        name = files.get(uri, Path(uri).name)
        rejects.append(Reject(f"{item['key']}#label={name}", stage, reason, f"{name}: {detail}"))
    return uris, rejects


def label_files(uris: list[str], root: Path) -> dict[str, str]:
    """Label file → its path in the source, to name it in a reject."""
    return {u: Path(u).relative_to(root).as_posix() for u in uris if Path(u).is_relative_to(root)}


def _attach_2d_mask(row: dict[str, Any], item: dict[str, Any], payload: dict[str, Any]) -> None:
    """The mask image of a 2D pair as the row's raw masks, read as the raster converter
    reads masks (:func:`converters.raster_masks.mask_on_image`): raw values, a palette
    image by index (not by colour luminance), a lossy JPEG at > 127, and the EXIF transpose
    the converter gave the image, so class-index and palette masks are not lost and the
    mask lands on the pixels written to the shard. A binary mask is the source's
    ``category``; each value of an indexed mask is its own target, named by the source's
    ``label_names`` (value → name), else ``<category>_<value>``."""
    from converters.raster import applied_orientation
    from converters.raster_masks import mask_on_image

    mask_uri = (item.get("label_uris") or [""])[0]
    image = next(img for img in row["images"] if img["role"] == "input")
    labels, values = mask_on_image(
        read_bytes(mask_uri), mask_uri, int(image["height"]), int(image["width"]), applied_orientation(row)
    )
    category = str(payload.get("category") or "lesion")
    names = {int(k): str(v) for k, v in (payload.get("label_names") or {}).items()}
    single = len(values) == 1
    row["masks"] = [
        mask_record(labels == value, label=f"{Path(mask_uri).stem}:{value}",
                    category=names.get(value, category if single else f"{category}_{value}"))
        for value in values
    ]


register_family(Imed())
