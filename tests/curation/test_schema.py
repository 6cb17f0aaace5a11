"""The canonical schema validator names the column and the reason."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pytest

from curation.schema import (
    SAMPLE_SCHEMA,
    SchemaError,
    check_batch,
    samples_to_table,
    validate_batch,
)


def row(**overrides):
    base = {
        "sample_id": "s1",
        "dataset": "d",
        "source": "src",
        "source_uri": "a.png",
        "source_sha256": "0" * 64,
        "modality": "CT",
        "task": "caption",
        "split": "train",
        "provenance": {
            "pipeline_version": "1",
            "steps_json": "[]",
            "run_id": "r",
            "created_at": dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
        },
    }
    base.update(overrides)
    return base


def test_a_conforming_batch_passes():
    validate_batch(samples_to_table([row(), row(sample_id="s2", degradation={"type": "noise", "severity": 2})]))


@pytest.mark.parametrize(
    ("overrides", "column", "fragment"),
    [
        ({"modality": "XRAY"}, "modality", "outside"),
        ({"task": "segment"}, "task", "outside"),
        ({"split": "holdout"}, "split", "outside"),
        ({"degradation": {"type": "noise", "severity": 4}}, "degradation.severity", "1..3"),
        ({"curriculum_stage": 0}, "curriculum_stage", "1..3"),
        ({"quality": {"verdict": "great", "description": "x"}}, "quality.verdict", "outside"),
        ({"conversations": [{"from": "assistant", "value": "hi"}]}, "conversations.from", "outside"),
    ],
)
def test_value_problems_name_the_column(overrides, column, fragment):
    problems = check_batch(samples_to_table([row(**overrides)]))
    assert [p.column for p in problems] == [column]
    assert fragment in problems[0].reason


def test_duplicate_ids_missing_columns_wrong_types_and_nulls():
    table = samples_to_table([row(), row()])
    assert [p.column for p in check_batch(table)] == ["sample_id"]
    missing = table.drop_columns(["split"])
    assert any(p.column == "split" and p.reason == "missing" for p in check_batch(missing))
    wrong = table.set_column(table.schema.get_field_index("caption"), "caption", pa.array([1, 2], pa.int64()))
    assert any(p.column == "caption" and "type int64" in p.reason for p in check_batch(wrong))
    nulls = table.set_column(
        table.schema.get_field_index("dataset"), pa.field("dataset", pa.string()), pa.array([None, "d"], pa.string())
    )
    with pytest.raises(SchemaError, match="'dataset'"):
        validate_batch(nulls)
    extra = samples_to_table([row()]).append_column("phi", pa.array(["x"]))
    assert any(p.column == "phi" and "not part" in p.reason for p in check_batch(extra))


def test_schema_covers_design_columns():
    design = [
        "sample_id", "dataset", "source", "source_uri", "source_sha256", "modality", "task", "split",
        "subject_key", "images", "masks", "video", "conversations", "caption", "labels", "degradation",
        "quality", "curriculum_stage", "provenance",
    ]
    assert SAMPLE_SCHEMA.names == design
