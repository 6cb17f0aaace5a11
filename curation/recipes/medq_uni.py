"""MedQ-UNI: clean images → degraded variants → restoration and quality-assessment samples.

Any folder of images, DICOM or volumes (the converters read them; volumes contribute
their middle slice by default) gives clean images; ``synthesis.DegradeStage`` applies
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
import random
from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, field_validator

from converters.base import ConversionError, SlicePolicy
from curation.ids import stable_hash
from curation.recipes.common import (
    Family,
    FamilyContext,
    Produced,
    ResolvedSource,
    guess_modality,
    register_family,
)
from curation.recipes.model import Recipe
from curation.recipes.readers import IMAGE_SUFFIXES
from curation.schema import SAMPLE_SCHEMA
from curation.stages import Reject, Resources, Stage, StageOutput

SEVERITY_WORDS = {1: "mild", 2: "moderate", 3: "severe"}
READABLE_SUFFIXES = IMAGE_SUFFIXES + (".dcm", ".dicom", ".nii", ".gz", ".nrrd", ".mha", ".mhd")


class MedqOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kinds: dict[str, list[str]] | None = None  # modality -> kinds; None: every kind synthesis.KINDS has
    severities: list[int] = Field(default_factory=lambda: [1, 2, 3])
    slices: str = "middle"  # which slices of a volume become clean images
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

    @field_validator("slices")
    @classmethod
    def _slices(cls, value: str) -> str:
        SlicePolicy.parse(value)
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
    }
    options_model = MedqOptions
    curriculum: ClassVar[dict[str, int]] = {"restoration": 3, "quality_assessment": 2}
    partition_items = 16

    def detect(self, path: Path, nested: bool) -> str | None:
        direct = any(p.is_file() and _readable(p) for p in path.iterdir())
        if direct or (nested and any(p.is_file() and _readable(p) for p in path.rglob("*"))):
            return "images"
        return None

    def items(self, source: ResolvedSource, recipe: Recipe) -> tuple[list[dict[str, Any]], list[Reject]]:
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

    def rows(self, item: dict[str, Any], ctx: FamilyContext) -> list[Produced]:
        from converters.stage import convert_item

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


register_family(MedqUni())
