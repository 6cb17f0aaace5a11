"""Building each expectation's configuration once per GX run changes no result."""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path
from typing import Any

import pytest
from qc_samples import FAMILY_ROWS, TEST_BANDS, write_shard

from quality_checks import gate
from quality_checks.gx_speed import memoized_configurations
from quality_checks.suites import FAMILIES, Tolerances, import_gx


def broken_frame(family: str, tmp_path: Path) -> Any:
    """The validation frame of a shard of ``family`` broken two ways (a duplicated id, a
    text far too long), so the results carry failures, counts and examples."""
    rows = FAMILY_ROWS[family]()
    rows[-1]["sample_id"] = rows[0]["sample_id"]
    rows[0]["caption"] = "x" * 100_000
    rows[0]["instruction"] = "y" * 100_000
    prepared = gate.prepare_shard(write_shard(rows, tmp_path / f"{family}.parquet"), family, TEST_BANDS)
    assert prepared.flat is not None
    return prepared.flat.to_pandas()


def results_of(memoize: bool, frame: Any, suite: Any, monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    if not memoize:
        monkeypatch.setattr(gate, "memoized_configurations", contextlib.nullcontext)
    session = gate._GxSession(None)
    validation = session.validate("shard", frame, suite)
    monkeypatch.undo()
    results: list[dict[str, Any]] = validation.to_json_dict()["results"]
    for result in results:
        result["expectation_config"].pop("id", None)  # fresh per suite object
    return results


@pytest.mark.parametrize("family", FAMILIES)
def test_memoized_configurations_give_the_same_validation_results(
    family: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    frame = broken_frame(family, tmp_path)
    suite = gate.shard_suite(family, Tolerances(mostly=0.9))
    plain = results_of(False, frame, suite, monkeypatch)
    memoized = results_of(True, frame, suite, monkeypatch)
    failed = {(r["expectation_config"]["type"], r["expectation_config"]["kwargs"].get("column")) for r in plain if not r["success"]}
    assert ("expect_column_values_to_be_unique", "sample_id") in failed
    assert any(r["result"].get("unexpected_count") for r in plain)
    assert memoized == plain


def test_memoized_build_suite_results_are_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    import pandas as pd

    rows = pd.DataFrame({"sample_id": ["a", "b", "b"], "subject_key": ["s", "s", "t"], "split": ["train", "test", "train"],
                         "modality": ["CT"] * 3, "subject_split_count": [2, 2, 1]})
    suite = gate.build_rows_suite(Tolerances(), previous_rows=30)
    plain = results_of(False, rows, suite, monkeypatch)
    assert sum(not r["success"] for r in plain) >= 2  # duplicated id, leaked subject, row count change
    assert results_of(True, rows, suite, monkeypatch) == plain


def test_the_memo_lives_only_inside_the_block_and_its_thread() -> None:
    import_gx()
    from great_expectations import expectations as gxe

    expectation = gxe.ExpectColumnValuesToNotBeNull(column="sample_id")
    assert expectation.configuration is not expectation.configuration  # GX's own behaviour
    seen_elsewhere: list[bool] = []
    with memoized_configurations():
        first = expectation.configuration
        assert expectation.configuration is first
        assert first.kwargs == {"column": "sample_id"} and first.type == "expect_column_values_to_not_be_null"
        assert first.to_domain_obj() is first.to_domain_obj() == expectation
        worker = threading.Thread(target=lambda: seen_elsewhere.append(expectation.configuration is expectation.configuration))
        worker.start()
        worker.join()
    assert seen_elsewhere == [False]
    assert expectation.configuration is not first
    assert first.to_domain_obj() is not first.to_domain_obj()
