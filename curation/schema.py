"""The one canonical Arrow schema every family writes, and its validator.

DESIGN.md's "canonical sample" made code. Optional parts are null when unused. Two
additions to the first version of the design, both needed to be lossless:

* ``images[].value_scale`` / ``value_offset``: the physical value of a pixel is
  ``png_value * value_scale + value_offset`` (Hounsfield units for a CT ``raw`` image,
  so a 16-bit copy of the stored values keeps the modality LUT exactly).
* ``images[].window`` is a struct ``{center, width}`` (the VOI window that made the
  8-bit ``input`` image), and ``masks[].box_prompt_xyxy`` holds the jittered box
  prompt while ``bbox_xyxy`` stays the tight box of the mask.

``SCHEMA_VERSION`` changes whenever a column changes; shard names hash it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

SCHEMA_VERSION = "1"

MODALITIES: tuple[str, ...] = (
    "CT", "MR", "XR", "CFP", "OCT", "US", "ENDO", "PATH", "DERM", "PET", "SURG", "OTHER",
)
TASKS: tuple[str, ...] = (
    "caption",
    "vqa",
    "report",
    "classification",
    "referring_seg",
    "interactive_seg",
    "text2image",
    "image2image",
    "restoration",
    "quality_assessment",
    "video_instruction",
)
SPLITS: tuple[str, ...] = ("train", "val", "test")
VERDICTS: tuple[str, ...] = ("good", "usable", "reject")
IMAGE_ROLES: tuple[str, ...] = ("input", "output", "clean", "degraded", "raw", "reference")
TURN_SPEAKERS: tuple[str, ...] = ("human", "gpt")

WINDOW_TYPE = pa.struct([pa.field("center", pa.float64()), pa.field("width", pa.float64())])

IMAGE_TYPE = pa.struct(
    [
        pa.field("role", pa.string(), nullable=False),
        pa.field("data", pa.binary(), nullable=False),
        pa.field("format", pa.string(), nullable=False),
        pa.field("width", pa.int32(), nullable=False),
        pa.field("height", pa.int32(), nullable=False),
        pa.field("channels", pa.int8(), nullable=False),
        pa.field("bit_depth", pa.int8(), nullable=False),
        pa.field("spacing_mm", pa.list_(pa.float32())),
        pa.field("window", WINDOW_TYPE),
        pa.field("value_scale", pa.float64()),
        pa.field("value_offset", pa.float64()),
    ]
)

MASK_TYPE = pa.struct(
    [
        pa.field("label", pa.string(), nullable=False),
        pa.field("category", pa.string(), nullable=False),
        pa.field("data", pa.binary(), nullable=False),
        pa.field("area_px", pa.int64(), nullable=False),
        pa.field("bbox_xyxy", pa.list_(pa.int32())),
        pa.field("clicks_xy", pa.list_(pa.list_(pa.int32()))),
        pa.field("box_prompt_xyxy", pa.list_(pa.int32())),
    ]
)

VIDEO_TYPE = pa.struct(
    [
        pa.field("data", pa.binary(), nullable=False),
        pa.field("format", pa.string()),
        pa.field("fps", pa.float32()),
        pa.field("num_frames", pa.int32()),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("start_s", pa.float64()),
        pa.field("end_s", pa.float64()),
    ]
)

TURN_TYPE = pa.struct(
    [pa.field("from", pa.string(), nullable=False), pa.field("value", pa.string(), nullable=False)]
)

DEGRADATION_TYPE = pa.struct(
    [
        pa.field("type", pa.string(), nullable=False),
        pa.field("severity", pa.int8(), nullable=False),
        pa.field("params_json", pa.string()),
        pa.field("psnr_db", pa.float32()),
        pa.field("ssim", pa.float32()),
    ]
)

QUALITY_TYPE = pa.struct(
    [pa.field("verdict", pa.string(), nullable=False), pa.field("description", pa.string())]
)

PROVENANCE_TYPE = pa.struct(
    [
        pa.field("pipeline_version", pa.string(), nullable=False),
        pa.field("steps_json", pa.string(), nullable=False),
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("created_at", pa.timestamp("us", tz="UTC"), nullable=False),
    ]
)

SAMPLE_SCHEMA = pa.schema(
    [
        pa.field("sample_id", pa.string(), nullable=False),
        pa.field("dataset", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("source_uri", pa.string(), nullable=False),
        pa.field("source_sha256", pa.string(), nullable=False),
        pa.field("modality", pa.string(), nullable=False),
        pa.field("task", pa.string(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("subject_key", pa.string()),
        pa.field("images", pa.list_(IMAGE_TYPE)),
        pa.field("masks", pa.list_(MASK_TYPE)),
        pa.field("video", VIDEO_TYPE),
        pa.field("conversations", pa.list_(TURN_TYPE)),
        pa.field("caption", pa.string()),
        pa.field("labels", pa.list_(pa.string())),
        pa.field("degradation", DEGRADATION_TYPE),
        pa.field("quality", QUALITY_TYPE),
        pa.field("curriculum_stage", pa.int8()),
        pa.field("provenance", PROVENANCE_TYPE, nullable=False),
    ],
    metadata={"medcurate.schema_version": SCHEMA_VERSION},
)

#: columns whose values must come from a controlled vocabulary
CONTROLLED: Mapping[str, tuple[str, ...]] = {
    "modality": MODALITIES,
    "task": TASKS,
    "split": SPLITS,
}


@dataclasses.dataclass(frozen=True)
class SchemaProblem:
    """One reason a batch does not conform: which column, and what is wrong."""

    column: str
    reason: str

    def __str__(self) -> str:
        return f"column {self.column!r}: {self.reason}"


class SchemaError(ValueError):
    """A batch does not conform to the canonical schema; ``problems`` lists each reason."""

    def __init__(self, problems: list[SchemaProblem]):
        self.problems = problems
        super().__init__("batch does not conform to the canonical schema: " + "; ".join(map(str, problems)))


def empty_samples() -> pa.Table:
    return SAMPLE_SCHEMA.empty_table()


def samples_to_table(rows: list[dict[str, Any]]) -> pa.Table:
    """Build a canonical table from row dicts (missing optional columns become null)."""
    if not rows:
        return empty_samples()
    return pa.Table.from_pylist(rows, schema=SAMPLE_SCHEMA)


def check_batch(batch: pa.Table | pa.RecordBatch) -> list[SchemaProblem]:
    """Every way ``batch`` departs from the canonical schema (empty list: it conforms).

    Checks column presence, types (exactly, including nested structs), nulls in
    non-nullable top-level columns, controlled vocabularies, and value rules the type
    cannot express (severity 1-3, curriculum stage 1-3, verdicts, image roles,
    conversation speakers, unique ``sample_id``).
    """
    problems: list[SchemaProblem] = []
    names = set(batch.schema.names)
    for field in SAMPLE_SCHEMA:
        if field.name not in names:
            problems.append(SchemaProblem(field.name, "missing"))
            continue
        actual = batch.schema.field(field.name).type
        if not actual.equals(field.type):
            problems.append(SchemaProblem(field.name, f"type {actual} where {field.type} is expected"))
            continue
        column = batch.column(field.name)
        if not field.nullable and column.null_count:
            problems.append(SchemaProblem(field.name, f"{column.null_count} null value(s) in a not-null column"))
    for extra in sorted(names - set(SAMPLE_SCHEMA.names)):
        problems.append(SchemaProblem(extra, "not part of the canonical schema"))
    if problems:
        return problems  # value checks assume the types are right

    for column_name, vocabulary in CONTROLLED.items():
        problems.extend(_vocabulary_problems(batch.column(column_name), column_name, vocabulary))
    problems.extend(_nested_vocabulary_problems(batch, "images", "role", IMAGE_ROLES))
    problems.extend(_nested_vocabulary_problems(batch, "conversations", "from", TURN_SPEAKERS))
    quality = batch.column("quality")
    verdicts = pc.struct_field(quality, "verdict")
    problems.extend(_vocabulary_problems(verdicts, "quality.verdict", VERDICTS))
    severity = pc.struct_field(batch.column("degradation"), "severity")
    problems.extend(_range_problems(severity, "degradation.severity", 1, 3))
    problems.extend(_range_problems(batch.column("curriculum_stage"), "curriculum_stage", 1, 3))

    ids = batch.column("sample_id")
    if len(pc.unique(ids)) != len(ids):
        counts = pc.value_counts(ids)
        dupes = [v["values"].as_py() for v in counts if v["counts"].as_py() > 1][:3]
        problems.append(SchemaProblem("sample_id", f"duplicated values, e.g. {dupes}"))
    return problems


def validate_batch(batch: pa.Table | pa.RecordBatch) -> None:
    """Raise :class:`SchemaError` naming each column and reason when ``batch`` does not conform."""
    problems = check_batch(batch)
    if problems:
        raise SchemaError(problems)


def _vocabulary_problems(values: Any, name: str, vocabulary: tuple[str, ...]) -> list[SchemaProblem]:
    allowed = pa.array(vocabulary, pa.string())
    present = pc.drop_null(values)
    bad = pc.filter(present, pc.invert(pc.is_in(present, value_set=allowed)))
    if len(bad) == 0:
        return []
    examples = sorted({str(v) for v in bad.to_pylist()})[:5]
    return [SchemaProblem(name, f"{len(bad)} value(s) outside {list(vocabulary)}: {examples}")]


def _nested_vocabulary_problems(
    batch: pa.Table | pa.RecordBatch, column: str, field: str, vocabulary: tuple[str, ...]
) -> list[SchemaProblem]:
    flat = pc.list_flatten(batch.column(column))
    if len(flat) == 0:
        return []
    return _vocabulary_problems(pc.struct_field(flat, field), f"{column}.{field}", vocabulary)


def _range_problems(values: Any, name: str, low: int, high: int) -> list[SchemaProblem]:
    present = pc.drop_null(values)
    if len(present) == 0:
        return []
    outside = pc.sum(pc.or_(pc.less(present, low), pc.greater(present, high))).as_py() or 0
    if outside:
        return [SchemaProblem(name, f"{outside} value(s) outside {low}..{high}")]
    return []
