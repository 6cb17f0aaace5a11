"""The gate passes good shards, and quarantines each way a shard can be broken."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from qc_samples import FAMILY_ROWS, TEST_BANDS, ct_slices, mask_png, write_shard

from quality_checks.gate import GateReport, gate_build, validate_path
from quality_checks.suites import FAMILIES, Tolerances

Rows = list[dict[str, Any]]


def run_gate(tmp_path: Path, paths: list[str], family: str, **kwargs: Any) -> GateReport:
    kwargs.setdefault("data_docs", False)
    return gate_build(
        paths, family=family, workdir=str(tmp_path / "work"), build_id="build-1", severity_bands=TEST_BANDS, **kwargs
    )


def failures_of(report: GateReport, scope: str) -> set[tuple[str, str, str | None]]:
    """(suite key, expectation, column) of each failure in ``scope`` (a shard name or build)."""
    return {(f.suite.split(".")[1], f.expectation, f.column) for f in report.failures if f.scope == scope}


@pytest.mark.parametrize("family", FAMILIES)
def test_a_valid_shard_of_each_family_passes(tmp_path: Path, family: str) -> None:
    shard = write_shard(FAMILY_ROWS[family](), tmp_path / "build" / f"{family}-000.parquet")
    report = run_gate(tmp_path, [shard], family)
    assert report.failed_expectations == []
    assert report.passed and report.passed_shards == [shard] and report.quarantined == []
    assert os.path.exists(shard)
    metrics = pa.parquet.read_table(report.metrics_path)
    assert metrics.num_rows == len(FAMILY_ROWS[family]()) and "blur_laplacian_var" in metrics.schema.names
    saved = json.loads((tmp_path / "work" / "runs" / "build-1" / "gate_report.json").read_text())
    assert saved["passed"] is True and saved["suite_versions"]["common"] == "1"


def empty_caption(rows: Rows) -> None:
    rows[1]["caption"] = ""


def mask_off_by_one_row(rows: Rows) -> None:
    _, labels = ct_slices()
    rows[1]["masks"][0]["data"] = mask_png((labels[1] == 1)[:-1])  # liver mask one row shorter


def duplicated_ids(rows: Rows) -> None:
    rows[2]["sample_id"] = rows[0]["sample_id"]


def leaked_subject(rows: Rows) -> None:
    rows[1]["subject_key"], rows[1]["split"] = rows[0]["subject_key"], "test"
    rows[0]["split"] = "train"


def wrong_severity(rows: Rows) -> None:
    rows[0]["degradation"]["psnr_db"] = 15.0  # severity 1 declares a band of 30-50 dB


def phi_in_caption(rows: Rows) -> None:
    rows[0]["caption"] += " Photographed by Dr. Alan Grant."


BREAKS: list[tuple[str, Callable[[Rows], None], tuple[str, str, str]]] = [
    ("retinalogos", empty_caption, ("retinalogos", "expect_column_values_to_be_between", "caption_length")),
    ("imed", mask_off_by_one_row, ("imed", "expect_column_values_to_be_in_set", "mask_inside_image")),
    ("imed", duplicated_ids, ("common", "expect_column_values_to_be_unique", "sample_id")),
    ("unimed", leaked_subject, ("common", "expect_column_values_to_be_in_set", "subject_split_count")),
    ("medq_uni", wrong_severity, ("medq_uni", "expect_column_values_to_be_in_set", "severity_consistent")),
    ("retinalogos", phi_in_caption, ("common", "expect_column_values_to_be_between", "phi_hits")),
]


@pytest.mark.parametrize(("family", "break_shard", "expected"), BREAKS, ids=[b[1].__name__ for b in BREAKS])
def test_each_break_fails_its_expectation_and_is_quarantined(
    tmp_path: Path, family: str, break_shard: Callable[[Rows], None], expected: tuple[str, str, str]
) -> None:
    good = write_shard(FAMILY_ROWS[family](), tmp_path / "build" / "good.parquet")
    rows = FAMILY_ROWS[family]()
    break_shard(rows)
    bad = write_shard(rows, tmp_path / "build" / "bad.parquet")

    report = run_gate(tmp_path, [good, bad], family)

    assert failures_of(report, "bad.parquet") == {expected}, report.failed_expectations
    assert failures_of(report, "good.parquet") == set()
    assert not report.passed and report.passed_shards == [good]
    quarantine = tmp_path / "work" / "quarantine" / "build-1"
    assert report.quarantined == [str(quarantine / "bad.parquet")]
    assert not os.path.exists(bad) and (quarantine / "bad.parquet").exists()
    assert pa.parquet.read_table(quarantine / "bad.parquet").num_rows == len(rows)
    result = json.loads((quarantine / "bad.parquet.validation.json").read_text())
    assert any(expected[1] in line and expected[2] in line for line in result["failed_expectations"])
    assert result["validation_results"] and result["validation_results"][0]["success"] in (True, False)
    assert ("build", "failed_shard_fraction_within_tolerance", None) in failures_of(report, "build")


def test_quarantine_record_names_the_rows_and_why(tmp_path: Path) -> None:
    rows = FAMILY_ROWS["imed"]()
    mask_off_by_one_row(rows)
    bad = write_shard(rows, tmp_path / "build" / "bad.parquet")
    report = run_gate(tmp_path, [bad], "imed")
    record = json.loads((tmp_path / "work" / "quarantine" / "build-1" / "bad.parquet.validation.json").read_text())
    assert record["row_problems"] == [f"{rows[1]['sample_id']}: mask 0 (liver) is 512x511, image is 512x512"]
    assert report.shards[0].row_problems == record["row_problems"]


def test_subject_leaking_across_shards_fails_the_build_without_quarantine(tmp_path: Path) -> None:
    rows = FAMILY_ROWS["unimed"]()
    rows[1]["subject_key"] = rows[0]["subject_key"]  # train in one shard, val in the other
    first = write_shard(rows[:1], tmp_path / "build" / "a.parquet")
    second = write_shard(rows[1:], tmp_path / "build" / "b.parquet")
    report = run_gate(tmp_path, [first, second], "unimed")
    assert failures_of(report, "build") == {("build", "expect_column_values_to_be_in_set", "subject_split_count")}
    assert not report.passed and report.quarantined == [] and report.passed_shards == [first, second]


def test_duplicate_ids_across_shards_fail_the_build(tmp_path: Path) -> None:
    rows = FAMILY_ROWS["imed"]()
    first = write_shard(rows, tmp_path / "build" / "a.parquet")
    second = write_shard(rows, tmp_path / "build" / "b.parquet")
    report = run_gate(tmp_path, [first, second], "imed")
    assert ("build", "expect_column_values_to_be_unique", "sample_id") in failures_of(report, "build")
    assert not report.passed


def test_drift_against_the_previous_version(tmp_path: Path) -> None:
    shard = write_shard(FAMILY_ROWS["imed"](), tmp_path / "build" / "a.parquet")
    previous = pa.table({"modality": ["CT"] * 4 + ["MR"] * 6})
    report = run_gate(tmp_path, [shard], "imed", previous=previous)
    assert failures_of(report, "build") == {
        ("build", "expect_table_row_count_to_be_between", None),
        ("modality_mix", "expect_column_values_to_be_between", "share_change"),
    }
    assert not report.passed and report.quarantined == []
    relaxed = run_gate(tmp_path, [shard], "imed", previous=previous,
                       tolerances={"max_row_count_change": 0.8, "max_modality_share_change": 0.7})
    assert relaxed.passed, relaxed.failed_expectations


def test_drift_against_the_previous_versions_shards_reads_only_those_the_build_did_not_measure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The flow passes the previous version's shard paths: rows of the shards this build
    shares come from its own validation tables, the others are read; the verdict is the
    one the previous version's whole table gives."""
    import quality_checks.gate as gate_module

    rows = FAMILY_ROWS["imed"]()
    kept = write_shard(rows, tmp_path / "build" / "kept.parquet")
    dropped_rows = [{**row, "sample_id": f"gone-{i}", "modality": "MR"} for i, row in enumerate(rows * 2)]
    dropped = write_shard(dropped_rows, tmp_path / "old" / "dropped.parquet")
    read: list[str] = []
    real_read = gate_module.read_present_columns

    def recorded(path: str, columns: Any) -> pa.Table:
        read.append(path)
        return real_read(path, columns)

    monkeypatch.setattr(gate_module, "read_present_columns", recorded)
    by_paths = run_gate(tmp_path, [kept], "imed", previous=[kept, dropped])
    assert read == [dropped]
    whole = pa.table({"modality": [r["modality"] for r in rows] + ["MR"] * len(dropped_rows)})
    by_table = run_gate(tmp_path / "again", [kept], "imed", previous=whole)
    assert failures_of(by_paths, "build") == failures_of(by_table, "build") == {
        ("build", "expect_table_row_count_to_be_between", None),
        ("modality_mix", "expect_column_values_to_be_between", "share_change"),
    }
    same = run_gate(tmp_path / "same", [kept], "imed", previous=[kept])
    assert same.passed and failures_of(same, "build") == set()


def test_a_previous_versions_shard_quarantined_by_this_build_still_counts_for_drift(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A shard of the previous version that fails now (here: its read for the metrics) is
    moved to quarantine; its rows were taken for the drift checks before it moved."""
    import quality_checks.gate as gate_module

    rows = FAMILY_ROWS["imed"]()
    good = write_shard(rows, tmp_path / "build" / "good.parquet")
    old = write_shard([{**r, "sample_id": r["sample_id"] + "x"} for r in rows], tmp_path / "build" / "old.parquet")
    real_read = gate_module._read_table

    def failing_now(path: str) -> pa.Table:
        if path.endswith("old.parquet"):
            raise OSError("page checksum mismatch")
        return real_read(path)

    monkeypatch.setattr(gate_module, "_read_table", failing_now)
    tolerances = {"max_failed_shard_fraction": 1.0, "max_row_count_change": 0.3}
    report = run_gate(tmp_path, [good, old], "imed", previous=[good, old], tolerances=tolerances)
    assert [os.path.basename(p) for p in report.quarantined] == ["old.parquet"]
    # previous: both shards' rows; now: one shard's (a 50 % drop > 0.3) -> the row-count check fails, nothing crashed
    assert failures_of(report, "build") == {("build", "expect_table_row_count_to_be_between", None)}
    assert report.passed is False


def test_failed_shard_fraction_within_tolerance_still_publishes_the_rest(tmp_path: Path) -> None:
    good = write_shard(FAMILY_ROWS["imed"](), tmp_path / "build" / "good.parquet")
    rows = FAMILY_ROWS["imed"]()
    duplicated_ids(rows)
    bad = write_shard(rows, tmp_path / "build" / "bad.parquet")
    report = run_gate(tmp_path, [good, bad], "imed", tolerances={"max_failed_shard_fraction": 0.5})
    assert report.passed and report.passed_shards == [good] and len(report.quarantined) == 1
    assert report.failed_shard_fraction == 0.5


def test_mostly_lets_a_few_soft_failures_through(tmp_path: Path) -> None:
    from qc_samples import provenance

    rows = FAMILY_ROWS["retinalogos"]()
    rows[1]["provenance"] = provenance([{"name": "caption", "grounding": {"ok": False, "problems": ["grade 3"]}}])
    strict_shard = write_shard(rows, tmp_path / "strict" / "a.parquet")
    strict = run_gate(tmp_path, [strict_shard], "retinalogos")
    assert failures_of(strict, "a.parquet") == {("retinalogos", "expect_column_values_to_be_in_set", "grounding_ok")}
    lenient_shard = write_shard(rows, tmp_path / "lenient" / "a.parquet")
    lenient = run_gate(tmp_path, [lenient_shard], "retinalogos", tolerances={"mostly": 0.5})
    assert lenient.passed, lenient.failed_expectations


def test_unreadable_shard_is_quarantined(tmp_path: Path) -> None:
    broken = tmp_path / "build" / "torn.parquet"
    broken.parent.mkdir(parents=True)
    broken.write_bytes(b"PAR1 not really")
    report = run_gate(tmp_path, [str(broken)], "imed")
    assert failures_of(report, "torn.parquet") == {("schema", "shard_is_readable_parquet", None)}
    assert not report.passed and not broken.exists()


def test_a_flipped_bit_in_a_shard_fails_its_page_checksum(tmp_path: Path) -> None:
    """Shards carry a CRC per page (ShardWriter); the gate verifies them, so a bit flipped
    on disk inside image bytes is caught before anything is published."""
    from curation.schema import samples_to_table
    from curation.shards import ShardWriter

    with ShardWriter(str(tmp_path / "build"), "imed") as writer:
        writer.write(samples_to_table(FAMILY_ROWS["imed"]()))
    path = Path(writer.shards[0].path)
    assert run_gate(tmp_path / "clean", [str(path)], "imed").passed
    meta = pa.parquet.ParquetFile(path).metadata
    images = next(
        meta.row_group(0).column(i) for i in range(meta.num_columns) if meta.row_group(0).column(i).path_in_schema == "images.list.element.data"
    )
    data = bytearray(path.read_bytes())
    data[images.data_page_offset + images.total_compressed_size // 2] ^= 0x10  # inside the image pages
    path.write_bytes(bytes(data))
    report = run_gate(tmp_path, [str(path)], "imed")
    assert failures_of(report, path.name) == {("schema", "shard_is_readable_parquet", None)}
    assert "checksum" in report.failed_expectations[0].lower() and not report.passed


def test_validate_path_reports_without_moving(tmp_path: Path) -> None:
    folder = tmp_path / "published"
    good = write_shard(FAMILY_ROWS["medq_uni"](), folder / "part-0.parquet")
    rows = FAMILY_ROWS["medq_uni"]()
    wrong_severity(rows)
    bad = write_shard(rows, folder / "part-1.parquet")
    report = validate_path(str(folder), severity_bands=TEST_BANDS)  # family inferred from `dataset`
    assert not report.passed and report.quarantined == []
    assert os.path.exists(good) and os.path.exists(bad)
    assert failures_of(report, "part-1.parquet") == {
        ("medq_uni", "expect_column_values_to_be_in_set", "severity_consistent")
    }
    assert validate_path(good, severity_bands=TEST_BANDS).passed


def test_configuration_errors_name_what_is_known() -> None:
    with pytest.raises(ValueError, match="unknown quality tolerance.*max_row_count_change"):
        Tolerances.from_mapping({"max_rows": 3})
    with pytest.raises(ValueError, match="mostly"):
        Tolerances.from_mapping({"mostly": 0})
    with pytest.raises(ValueError, match="known families"):
        gate_build([], family="radiopaedia", workdir="/tmp/unused", build_id="x")
    for bad, message in (
        ({"min_dynamic_range": 2.0}, "min_dynamic_range is a fraction of 0..1"),
        ({"max_saturated_fraction": "half"}, "max_saturated_fraction must be a number, got 'half'"),
        ({"max_phi_hits": -1}, "max_phi_hits must be a number that is not negative, got -1"),
        ({"min_blur_laplacian_var": float("nan")}, "min_blur_laplacian_var must be a number that is not negative, got nan"),
        ({"mostly": None}, "mostly must be a number, got None"),
        ({"min_text_length": True}, "min_text_length must be a number"),
        ({"min_video_fps": 60, "max_video_fps": 30}, r"min_video_fps \(60\) is above gate.max_video_fps \(30\)"),
    ):
        with pytest.raises(ValueError, match=message):
            Tolerances.from_mapping(bad)
    assert Tolerances.from_mapping({"max_row_count_change": None, "min_text_length": 5}).max_row_count_change is None


def test_a_gx_error_inside_a_metric_is_reported_with_its_message() -> None:
    """GX puts a failed metric's exception under the metric's id; the report says what it
    was instead of an empty ``{}`` (seen with an inverted range before tolerances were checked)."""
    from quality_checks.gate import _observed

    nested = {"MetricConfigurationID(metric_name='column_values.between.condition')": {
        "exception_traceback": "Traceback ...", "exception_message": "min_value cannot be greater than max_value",
        "raised_exception": True,
    }}
    assert _observed({}, nested) == "error: min_value cannot be greater than max_value"
    assert _observed({}, {"raised_exception": True, "exception_message": "boom"}) == "error: boom"
    assert _observed({"observed_value": 3}, None) == "3"


def count_gx_runs(monkeypatch: pytest.MonkeyPatch, formats: list[str] | None = None) -> list[str]:
    """Labels of the GX validation runs the gate makes (shards, screening and build
    checks); ``formats``, if given, collects each run's result format."""
    from quality_checks import gate

    labels: list[str] = []
    original = gate._GxSession.validate

    def counting(self: Any, asset_label: str, frame: Any, suite: Any, **options: Any) -> Any:
        labels.append(asset_label)
        if formats is not None:
            formats.append(options.get("result_format", "SUMMARY"))
        return original(self, asset_label, frame, suite, **options)

    monkeypatch.setattr(gate._GxSession, "validate", counting)
    return labels


def distinct_shards(family: str, count: int, folder: Path, prefix: str) -> list[str]:
    """``count`` valid shards of ``family`` (``<prefix>-<i>.parquet``) whose sample ids differ."""
    paths = []
    for index in range(count):
        rows = FAMILY_ROWS[family]()
        for row in rows:
            row["sample_id"] = f"{row['sample_id']}-{index}"
        paths.append(write_shard(rows, folder / f"{prefix}-{index}.parquet"))
    return paths


def test_clean_shards_are_validated_in_one_gx_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runs = count_gx_runs(monkeypatch)
    paths = distinct_shards("imed", 3, tmp_path / "build", "imed")
    report = run_gate(tmp_path, paths, "imed", cache_passed=False)
    assert report.passed and report.passed_shards == paths, report.failed_expectations
    assert [r for r in runs if r.startswith(("imed-", "3_shards"))] == ["3_shards"]


def test_a_rebuild_validates_only_its_new_shards_and_reuses_the_rest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Shards that passed an earlier build come from the gate's cache (read several at a
    time); only the new shard gets a GX run; the metrics written for the build cover
    every shard, each reused one with the values first measured for it."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    old = distinct_shards("imed", 4, tmp_path / "build", "imed")
    first = run_gate(tmp_path, old, "imed")
    assert first.passed and first.shards_reused == 0
    runs = count_gx_runs(monkeypatch)
    new = distinct_shards("imed", 5, tmp_path / "next", "imed")[4]
    order = [old[2], new, old[0], old[3]]
    again = gate_build(order, family="imed", workdir=str(tmp_path / "work"), build_id="build-2", severity_bands=TEST_BANDS, data_docs=False)
    assert again.passed, again.failed_expectations
    assert again.shards_reused == 3
    assert sorted(again.passed_shards) == sorted(order)
    assert runs == ["imed-4.parquet", "build_rows"]  # the new shard's screening, then the whole build
    metrics = [pq.read_table(report.metrics_path) for report in (first, again)]
    by_shard = [{name: t.filter(pc.equal(t["shard"], name)).drop_columns(["shard"]) for name in set(t["shard"].to_pylist())} for t in metrics]
    assert set(by_shard[1]) == {"imed-2.parquet", "imed-4.parquet", "imed-0.parquet", "imed-3.parquet"}
    for name in ("imed-0.parquet", "imed-2.parquet", "imed-3.parquet"):
        assert by_shard[1][name].equals(by_shard[0][name])


def test_rows_tolerated_in_the_union_are_still_judged_per_shard(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """mostly=0.5: a shard with most rows ungrounded fails on its own even when the whole
    build is within tolerance, exactly as if each shard had been validated alone."""
    from qc_samples import provenance

    formats: list[str] = []
    runs = count_gx_runs(monkeypatch, formats)
    ungrounded = provenance([{"name": "caption", "grounding": {"ok": False, "problems": ["grade 3"]}}])
    bad_rows = FAMILY_ROWS["retinalogos"]()
    for row in bad_rows:
        row["provenance"] = ungrounded
    good_paths = distinct_shards("retinalogos", 3, tmp_path / "build", "good")
    bad = write_shard(bad_rows, tmp_path / "build" / "bad.parquet")
    report = run_gate(
        tmp_path, [*good_paths, bad], "retinalogos", cache_passed=False,
        tolerances={"mostly": 0.5, "max_failed_shard_fraction": 0.5},
    )
    assert runs[0] == "4_shards"  # the screening run: within mostly, but not clean
    assert formats[0] == "BASIC"  # with mostly < 1, success alone would not say "every row"
    assert {r for r in runs[1:5]} == {"good-0.parquet", "good-1.parquet", "good-2.parquet", "bad.parquet"}
    assert report.passed_shards == good_paths and len(report.quarantined) == 1
    assert failures_of(report, "bad.parquet") == {("retinalogos", "expect_column_values_to_be_in_set", "grounding_ok")}


def test_a_clean_single_shard_costs_one_gx_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    formats: list[str] = []
    runs = count_gx_runs(monkeypatch, formats)
    shard = write_shard(FAMILY_ROWS["imed"](), tmp_path / "build" / "a.parquet")
    report = run_gate(tmp_path, [shard], "imed", cache_passed=False)
    assert report.passed, report.failed_expectations
    assert runs == ["a.parquet", "build_rows"]
    assert formats == ["BOOLEAN_ONLY", "SUMMARY"]  # every rule for every row: success says it all


def test_a_broken_single_shard_is_judged_by_a_full_summary_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The screening run asks GX for success alone; the verdict of a shard that is not
    clean comes from its own SUMMARY run, whose value counts land in the quarantine record."""
    runs = count_gx_runs(monkeypatch)
    rows = FAMILY_ROWS["imed"]()
    duplicated_ids(rows)
    bad = write_shard(rows, tmp_path / "build" / "bad.parquet")
    report = run_gate(tmp_path, [bad], "imed", cache_passed=False)
    assert runs[:2] == ["bad.parquet", "bad.parquet"]
    assert failures_of(report, "bad.parquet") == {("common", "expect_column_values_to_be_unique", "sample_id")}
    record = json.loads((tmp_path / "work" / "quarantine" / "build-1" / "bad.parquet.validation.json").read_text())
    unique = next(
        r for r in record["validation_results"][0]["results"]
        if r["expectation_config"]["type"] == "expect_column_values_to_be_unique"
    )
    assert unique["result"]["unexpected_count"] == 2
    assert unique["result"]["partial_unexpected_counts"] == [{"value": rows[0]["sample_id"], "count": 2}]


def test_a_repeated_expectation_is_kept_once_as_gx_would() -> None:
    """Suites are built in one constructor call; a family rule equal to a common one
    (retinalogos' caption_length range when min_text_length is 0) is kept once, under
    the suite that declared it first, as ``ExpectationSuite.add_expectation`` does."""
    from quality_checks.suites import shard_suite

    def caption_ranges(tolerances: Tolerances) -> list[str]:
        suite = shard_suite("retinalogos", tolerances)
        return [
            e.meta["suite"] for e in suite.expectations
            if e.expectation_type == "expect_column_values_to_be_between" and e.column == "caption_length"
        ]

    assert caption_ranges(Tolerances()) == ["medcurate.common.v1", "medcurate.retinalogos.v1"]
    assert caption_ranges(Tolerances(min_text_length=0)) == ["medcurate.common.v1"]
    assert len(shard_suite("retinalogos", Tolerances(min_text_length=0)).expectations) == 33


def test_shards_measured_in_other_processes_get_the_same_verdicts(tmp_path: Path) -> None:
    """``shard_map`` (a process pool's map in a build with worker processes) reads and
    measures each new shard elsewhere; the verdicts and metrics equal a run in turn."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    def shards(folder: Path) -> list[str]:
        good = write_shard(FAMILY_ROWS["imed"](), folder / "good.parquet")
        rows = FAMILY_ROWS["imed"]()
        mask_off_by_one_row(rows)
        return [good, write_shard(rows, folder / "bad.parquet")]

    here = run_gate(tmp_path / "here", shards(tmp_path / "here" / "build"), "imed")
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("forkserver")) as pool:
        there = run_gate(tmp_path / "there", shards(tmp_path / "there" / "build"), "imed", shard_map=pool.map)

    assert [os.path.basename(p) for p in there.passed_shards] == ["good.parquet"]
    assert failures_of(there, "bad.parquet") == failures_of(here, "bad.parquet") != set()
    assert there.failed_expectations == [f.replace("/here/", "/there/") for f in here.failed_expectations]
    assert pa.parquet.read_table(there.metrics_path).drop_columns(["shard"]).equals(
        pa.parquet.read_table(here.metrics_path).drop_columns(["shard"])
    )
