"""MedQ-UNI: clean images → degraded variants → restoration and quality-assessment samples.

Any folder of images, DICOM or volumes (the converters read them; volumes contribute
their middle slice by default), or a published dataset of the catalog (``--source
catalog://NAME[@VERSION]``: its ``input`` images with their modality and subject, see
:meth:`MedqUni.stage_catalog`) gives clean images; ``synthesis.DegradeStage`` applies
the recipe's kinds × severities per modality and writes restoration pairs (``images =
[clean, degraded]``, degradation record, quality description ending "Overall, the
quality of this image is ..."). :class:`QualityConversationStage` then turns each pair
into three samples, as MedQ-UNI's assess-then-restore data does:

* ``restoration``: "assess, then restore" conversation (description, then the clean image);
* ``quality_assessment``: perception questions on the degraded image: yes/no (the
  applied kind, and a kind that was not applied), what (which degradation), how (how
  severe) and the overall verdict;
* ``quality_assessment``: a paired comparison "which image is better", the pair in a
  seeded order.
"""

from __future__ import annotations

import json
import os
import random
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field, field_validator

from converters.base import ConversionError, SlicePolicy
from curation.ids import combine_hashes, stable_hash
from curation.recipes.common import (
    CATALOG_SCHEME,
    Family,
    FamilyContext,
    Produced,
    ResolvedSource,
    file_sha256,
    guess_modality,
    payload_of,
    register_family,
    work_item,
)
from curation.recipes.model import Recipe, RecipeError, SliceSpec
from curation.recipes.readers import IMAGE_SUFFIXES, MIRROR_MANIFEST, locked
from curation.schema import SAMPLE_SCHEMA
from curation.stages import Reject, Resources, Stage, StageOutput

SEVERITY_WORDS = {1: "mild", 2: "moderate", 3: "severe"}
READABLE_SUFFIXES = IMAGE_SUFFIXES + (".dcm", ".dicom", ".nii", ".gz", ".nrrd", ".mha", ".mhd")
#: a staged published dataset: what was pinned, and one row per published sample
CATALOG_MARKER = "catalog_source.json"
CATALOG_TABLE = "samples.parquet"
#: the published columns a clean image carries over (images: ``input``, and CT's 16-bit ``raw``)
CATALOG_COLUMNS = ["sample_id", "source", "source_uri", "modality", "subject_key", "labels", "images", "provenance"]
CARRIED_ROLES = ("input", "raw")
_FILE_STEM = re.compile(r"[A-Za-z0-9_-]{1,128}")


class MedqOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kinds: dict[str, list[str]] | None = None  # modality -> kinds; None: every kind synthesis.KINDS has
    severities: list[int] = Field(default_factory=lambda: [1, 2, 3])
    slices: SliceSpec = "middle"  # which slices of a volume become clean images
    seed: int = 0
    conversations: bool = True  # add the QA and comparison samples

    @field_validator("severities")
    @classmethod
    def _severities(cls, value: list[int]) -> list[int]:
        if not value or any(s not in (1, 2, 3) for s in value):
            raise ValueError(f"expected a non-empty list of severities 1, 2, 3, got {value}")
        return value

    @field_validator("kinds")
    @classmethod
    def _kinds(cls, value: dict[str, list[str]] | None) -> dict[str, list[str]] | None:
        if value is None:
            return value
        from synthesis.degradation.api import KINDS

        for modality, kinds in value.items():
            known = KINDS.get(modality)
            if known is None:
                raise ValueError(f"modality {modality!r} has no degradations; expected one of {sorted(KINDS)}")
            unknown = [k for k in kinds if k not in known]
            if unknown:
                raise ValueError(f"{modality}: unknown kind(s) {unknown}; expected some of {list(known)}")
        return value


def _words(kind: str) -> str:
    return kind.replace("_", " ")


class QualityConversationStage(Stage):
    """Restoration rows → restoration + perception QA + paired comparison samples."""

    name: ClassVar[str] = "medq_conversations"
    resources = Resources(cpus=1, memory_gb=1)
    batch_size = 64
    output_schema = SAMPLE_SCHEMA

    def __init__(self, kinds: dict[str, list[str]], seed: int, conversations: bool = True):
        self.kinds = kinds
        self.seed = seed
        self.conversations = conversations

    def params(self) -> dict[str, Any]:
        return {"seed": self.seed, "conversations": self.conversations}

    def process(self, batch: pa.Table) -> StageOutput:
        rows: list[dict[str, Any]] = []
        for row in batch.to_pylist():
            rng = random.Random(int(stable_hash(self.seed, row["sample_id"], length=15), 16))
            rows.append(self._restoration(row))
            if self.conversations:
                rows.append(self._perception(row, rng))
                rows.append(self._comparison(row, rng))
        table = pa.Table.from_pylist(rows, schema=SAMPLE_SCHEMA) if rows else SAMPLE_SCHEMA.empty_table()
        return StageOutput(table, [])

    @staticmethod
    def _restoration(row: dict[str, Any]) -> dict[str, Any]:
        description = row["quality"]["description"]
        row = dict(row)
        row["caption"] = description
        row["conversations"] = [
            {"from": "human", "value": "<image>\nAssess the quality of this image, then restore it."},
            {"from": "gpt", "value": f"{description}\nRestored image: <image>"},
        ]
        row["curriculum_stage"] = row.get("curriculum_stage") or 3
        return row

    def _derived(self, row: dict[str, Any], variant: str, images: list[dict[str, Any]], turns: list[dict[str, str]]) -> dict[str, Any]:
        out = dict(row)
        steps = json.loads(row["provenance"]["steps_json"])
        steps.append({"step": "medq.conversation", "params": {"variant": variant, "seed": self.seed}})
        out.update(
            sample_id=stable_hash(row["sample_id"], variant),
            task="quality_assessment",
            images=images,
            conversations=turns,
            caption=None,
            curriculum_stage=2,
            provenance={**row["provenance"], "steps_json": json.dumps(steps, sort_keys=True)},
        )
        return out

    def _perception(self, row: dict[str, Any], rng: random.Random) -> dict[str, Any]:
        kind = row["degradation"]["type"]
        severity = int(row["degradation"]["severity"])
        others = [k for k in self.kinds.get(row["modality"], []) if k != kind]
        degraded = dict(next(img for img in row["images"] if img["role"] == "degraded"))
        turns = [
            {"from": "human", "value": f"<image>\nIs this image affected by {_words(kind)}?"},
            {"from": "gpt", "value": "Yes."},
        ]
        if others:
            other = rng.choice(others)
            turns += [
                {"from": "human", "value": f"Is this image affected by {_words(other)}?"},
                {"from": "gpt", "value": "No."},
            ]
        turns += [
            {"from": "human", "value": "What kind of degradation does this image show?"},
            {"from": "gpt", "value": f"{_words(kind).capitalize()}."},
            {"from": "human", "value": f"How severe is the {_words(kind)}?"},
            {"from": "gpt", "value": f"{SEVERITY_WORDS[severity].capitalize()}."},
            {"from": "human", "value": "What is the overall quality of this image: good, usable or reject?"},
            {"from": "gpt", "value": f"{row['quality']['verdict'].capitalize()}."},
        ]
        return self._derived(row, "perception", [degraded], turns)

    def _comparison(self, row: dict[str, Any], rng: random.Random) -> dict[str, Any]:
        by_role = {img["role"]: img for img in row["images"]}
        clean_first = rng.random() < 0.5
        images = [by_role["clean"], by_role["degraded"]] if clean_first else [by_role["degraded"], by_role["clean"]]
        answer = "The first image" if clean_first else "The second image"
        kind = _words(row["degradation"]["type"])
        turns = [
            {"from": "human", "value": "<image>\n<image>\nWhich image has the better quality, the first or the second?"},
            {"from": "gpt", "value": f"{answer}; the other one shows {SEVERITY_WORDS[int(row['degradation']['severity'])]} {kind}."},
        ]
        return self._derived(row, "comparison", images, turns)


class MedqUni(Family):
    name = "medq_uni"
    caption_family = "medq_uni"
    layouts: ClassVar[dict[str, str]] = {
        "images": "any folder of PNG/JPEG/TIFF, DICOM or NIfTI/NRRD/MHA (one source per sub-folder; modality from "
        "the DICOM header, the recipe, or the folder name: ct, mr, xray, fundus, ultrasound ...)",
        "catalog": "a published dataset, --source catalog://NAME[@VERSION] (no version: the latest, pinned at build "
        "time): its 'input' images with their modality and subject",
    }
    options_model = MedqOptions
    curriculum: ClassVar[dict[str, int]] = {"restoration": 3, "quality_assessment": 2}
    partition_items = 16

    def detect(self, path: Path, nested: bool) -> str | None:
        if (path / CATALOG_MARKER).is_file():
            return "catalog"
        direct = any(p.is_file() and _readable(p) for p in path.iterdir())
        if direct or (nested and any(p.is_file() and _readable(p) for p in path.rglob("*"))):
            return "images"
        return None

    def items(self, source: ResolvedSource, recipe: Recipe) -> tuple[list[dict[str, Any]], list[Reject]]:
        if source.layout == "catalog":
            return _published_items(source)
        from converters.discover import discover

        found = discover([source.path])
        rejects = [Reject(f"{source.name}/{r.source_uri}", r.stage, r.reason, r.detail) for r in found.rejects]
        payload = json.dumps({"modality": source.spec.modality or guess_modality(source.name, "OTHER")})
        items = [
            {
                **item,
                "key": f"{source.name}/{item['key']}",
                "label_uris": None,  # label maps are not needed for quality data
                "source": source.name,
                "layout": source.layout,
                "payload_json": payload,
                "exact_key": item["sha256"],
                "near_uri": item["uri"] if item["kind"] == "raster" else None,
            }
            for item in found.items
        ]
        return items, rejects

    def stage_catalog(self, uri: str, cache: str, catalog: Callable[[], Any]) -> str:
        """Write the pinned version of ``catalog://NAME[@VERSION]`` (no version: the latest,
        pinned now) as a local folder: each sample's ``input`` (and CT ``raw``) PNG exactly
        as published, and ``samples.parquet`` with its id, subject, modality, labels and steps.

        Staging once per version keeps the build's items plain files (cheap to read one
        at a time on a worker, unlike a row in a 32 MB row group) and a rebuild of the
        same version reads nothing from the catalog. Unknown datasets or versions are
        RecipeErrors naming them (``medcurate build`` exits 2).
        """
        from catalogs.catalog import CatalogError

        name, version = parse_catalog_uri(uri)
        cat = catalog()
        try:
            if not cat.exists(name):
                known = ", ".join(cat.list()) or "none yet"
                raise RecipeError(f"source {uri}: no dataset named {name!r} in the catalog (published datasets: {known})")
            info = cat.version_info(name, version)
        except CatalogError as exc:
            raise RecipeError(f"source {uri}: {exc}") from None
        pinned = f"{CATALOG_SCHEME}{name}@{info.version}"
        base = os.path.join(cache, stable_hash(cat.uri, cat.warehouse, pinned, length=16))
        folder = os.path.join(base, name)
        with locked(base):
            if _staged_snapshot(folder) != info.snapshot_id:
                samples = _write_published(cat, name, info, folder)
                _write_json(
                    os.path.join(folder, CATALOG_MARKER),
                    {"uri": pinned, "dataset": name, "version": info.version, "snapshot_id": info.snapshot_id, "samples": samples},
                )
                _write_json(os.path.join(base, MIRROR_MANIFEST), {"uri": pinned, "root": name})
        return folder

    def rows(self, item: dict[str, Any], ctx: FamilyContext) -> list[Produced]:
        from converters.stage import convert_item

        if item["layout"] == "catalog":
            return [_published_row(item, ctx)]
        opts: MedqOptions = ctx.options
        modality = json.loads(item["payload_json"] or "{}").get("modality")
        plain = {k: item[k] for k in ("uri", "key", "kind", "members", "label_uris", "sha256", "size_bytes")}
        convert = ctx.convert_options(item["source"], modality, slices=SlicePolicy.parse(opts.slices))
        rows, reject = convert_item(plain, convert)
        if reject is not None:
            raise ConversionError(reject.reason, reject.detail)
        return [Produced(row) for row in rows]

    def extra_stages(self, recipe: Recipe) -> list[Stage]:
        from synthesis.degradation.api import KINDS
        from synthesis.degradation.stage import DegradationPlan, DegradeStage

        opts = MedqOptions.model_validate(recipe.options)
        kinds = {m: list(k) for m, k in (opts.kinds or KINDS).items()}
        plan = DegradationPlan(kinds=kinds, severities=tuple(opts.severities), seed=opts.seed)
        return [DegradeStage(plan, prewarm_sizes=()), QualityConversationStage(kinds, opts.seed, opts.conversations)]


def _readable(path: Path) -> bool:
    return path.suffix.lower() in READABLE_SUFFIXES and not path.name.startswith(".")


# -- published datasets as sources -----------------------------------------------------------
def parse_catalog_uri(uri: str) -> tuple[str, str | None]:
    """``catalog://NAME[@VERSION]`` → (NAME, VERSION or None for the latest)."""
    ref = uri[len(CATALOG_SCHEME):] if uri.startswith(CATALOG_SCHEME) else ""
    name, _, version = ref.rstrip("/").partition("@")
    if not name or "/" in ref.rstrip("/") or (ref.endswith("@")):
        raise RecipeError(f"source {uri!r}: expected catalog://NAME or catalog://NAME@VERSION (e.g. catalog://chest_xr@v1)")
    return name, version or None


def _staged_snapshot(folder: str) -> int | None:
    try:
        with open(os.path.join(folder, CATALOG_MARKER)) as fh:
            return int(json.load(fh)["snapshot_id"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_json(path: str, value: dict[str, Any]) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(value, fh, sort_keys=True)
    os.replace(tmp, path)


def _write_published(cat: Any, name: str, info: Any, folder: str) -> int:
    """Stream the version's carried images into ``folder`` (bytes as published) and its
    sample table into ``samples.parquet``; files of an older staging are removed."""
    os.makedirs(folder, exist_ok=True)
    rows: list[dict[str, Any]] = []
    written: set[str] = set()
    for batch in cat.dataset(name, info.version).to_batches(columns=CATALOG_COLUMNS, batch_size=64):
        for rec in batch.to_pylist():
            sid = str(rec["sample_id"])
            stem = sid if _FILE_STEM.fullmatch(sid) else stable_hash(sid)
            entry: dict[str, Any] = {
                "sample_id": sid,
                "source": rec["source"],
                "source_uri": rec["source_uri"],
                "modality": rec["modality"],
                "subject_key": rec["subject_key"],
                "labels": rec["labels"],
                "steps_json": (rec["provenance"] or {}).get("steps_json"),
                "roles": [img["role"] for img in rec["images"] or []],
            }
            by_role: dict[str, dict[str, Any]] = {}
            for img in rec["images"] or []:
                by_role.setdefault(img["role"], img)
            for role in CARRIED_ROLES:
                img = by_role.get(role)
                entry[f"{role}_file"] = entry[f"{role}_json"] = None
                if img is None:
                    continue
                file_name = f"{stem}.{role}.{(img.get('format') or 'png').lower()}"
                path = os.path.join(folder, file_name)
                if not (os.path.isfile(path) and os.path.getsize(path) == len(img["data"])):
                    with open(path + ".tmp", "wb") as fh:
                        fh.write(img["data"])
                    os.replace(path + ".tmp", path)
                written.add(file_name)
                entry[f"{role}_file"] = file_name
                entry[f"{role}_json"] = json.dumps({k: v for k, v in img.items() if k != "data"}, sort_keys=True)
            rows.append(entry)
    table = pa.Table.from_pylist(rows, schema=_STAGED_SCHEMA)
    pq.write_table(table, os.path.join(folder, CATALOG_TABLE + ".tmp"))
    os.replace(os.path.join(folder, CATALOG_TABLE + ".tmp"), os.path.join(folder, CATALOG_TABLE))
    for stale in set(os.listdir(folder)) - written - {CATALOG_TABLE, CATALOG_MARKER}:
        os.remove(os.path.join(folder, stale))
    return len(rows)


_STAGED_SCHEMA = pa.schema(
    [
        pa.field("sample_id", pa.string()),
        pa.field("source", pa.string()),
        pa.field("source_uri", pa.string()),
        pa.field("modality", pa.string()),
        pa.field("subject_key", pa.string()),
        pa.field("labels", pa.list_(pa.string())),
        pa.field("steps_json", pa.string()),
        pa.field("roles", pa.list_(pa.string())),
        *(pa.field(f"{role}_{what}", pa.string()) for role in CARRIED_ROLES for what in ("file", "json")),
    ]
)


def _published_items(source: ResolvedSource) -> tuple[list[dict[str, Any]], list[Reject]]:
    """One item per published sample with an ``input`` image; the others are rejects."""
    folder = Path(source.path)
    with open(folder / CATALOG_MARKER) as fh:
        pinned = json.load(fh)
    items: list[dict[str, Any]] = []
    rejects: list[Reject] = []
    for rec in pq.read_table(folder / CATALOG_TABLE).to_pylist():
        key = f"{source.name}/{rec['sample_id']}"
        if not rec["input_file"]:
            rejects.append(Reject(
                key, "medq_uni", "no_input_image",
                f"{pinned['uri']}: sample {rec['sample_id']} has no 'input' image (roles {rec['roles']})",
            ))
            continue
        files = [str(folder / rec[f"{role}_file"]) for role in CARRIED_ROLES if rec[f"{role}_file"]]
        payload = {
            "modality": source.spec.modality or rec["modality"],
            "subject_key": rec["subject_key"],
            "labels": rec["labels"],
            "steps_json": rec["steps_json"],
            "images": [json.loads(rec[f"{role}_json"]) for role in CARRIED_ROLES if rec[f"{role}_json"]],
            "parent": {
                "dataset": pinned["dataset"], "version": pinned["version"], "snapshot_id": pinned["snapshot_id"],
                "sample_id": rec["sample_id"], "source": rec["source"], "source_uri": rec["source_uri"],
            },
        }
        digest = combine_hashes([file_sha256(f) for f in files]) if len(files) > 1 else file_sha256(files[0])
        items.append(work_item(
            source, files[0], kind="published_image", key=key, payload=payload, sha256=digest, members=files, near=True
        ))
    return items, rejects


def _published_row(item: dict[str, Any], ctx: FamilyContext) -> Produced:
    """The clean-image row of a published sample: its images as published, its subject
    pseudonym carried (so the split stays subject-level), its steps plus ``catalog.read``."""
    from converters.rows import build_row
    from curation.splits import split_for_subject

    payload = payload_of(item)
    images = []
    for meta, path in zip(payload["images"], item["members"] or [item["uri"]], strict=True):
        with open(path, "rb") as fh:
            images.append({**meta, "data": fh.read()})
    try:
        steps = json.loads(payload.get("steps_json") or "[]")
    except ValueError:
        steps = [{"unparsed_steps_json": payload.get("steps_json")}]
    steps = (steps if isinstance(steps, list) else [steps]) + [{"step": "catalog.read", "params": payload["parent"]}]
    convert = ctx.convert_options(item["source"], payload["modality"])
    subject = payload.get("subject_key")
    row = build_row(
        convert, key=item["key"], sha256=item["sha256"], modality=payload["modality"],
        subject_id=payload["parent"]["sample_id"], images=images, steps=steps, labels=payload.get("labels"),
    )
    if subject:  # already a salted pseudonym: kept as it is, not hashed again
        row["subject_key"] = subject
        row["split"] = split_for_subject(subject, convert.split_ratios)
    return Produced(row)


register_family(MedqUni())
