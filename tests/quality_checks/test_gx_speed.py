"""Building each expectation's configuration once per GX run changes no result."""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from qc_samples import FAMILY_ROWS, TEST_BANDS, write_shard

from quality_checks import gate
from quality_checks.gx_speed import (
    keep_validation_results_as_dicts,
    memoized_configurations,
    skip_project_config_saves,
)
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


def test_a_session_run_gives_what_gx_validation_definition_run_gives(tmp_path: Path) -> None:
    """The session runs GX's validator without a validation definition (no freshness
    checks); its result must be GX's own ``ValidationDefinition.run`` result, and it must
    be stored where Data Docs finds it."""
    gx = import_gx()
    frame = broken_frame("imed", tmp_path)
    context = gx.get_context(mode="ephemeral")
    batches = context.data_sources.add_pandas("medcurate").add_dataframe_asset("shards").add_batch_definition_whole_dataframe("whole")
    suite = context.suites.add(gate.shard_suite("imed", Tolerances()))
    definition = context.validation_definitions.add(gx.ValidationDefinition(name="by_gx", data=batches, suite=suite))
    by_gx = definition.run(batch_parameters={"dataframe": frame}, result_format="SUMMARY").to_json_dict()

    session = gate._GxSession(str(tmp_path / "docs"))  # with Data Docs, which read the stored result
    ours = session.validate("shard", frame, gate.shard_suite("imed", Tolerances())).to_json_dict()
    for result in by_gx["results"] + ours["results"]:
        result["expectation_config"].pop("id", None)
    assert not ours["success"] and ours["statistics"]["unsuccessful_expectations"] >= 2
    for field in ("results", "success", "statistics", "suite_name"):
        assert ours[field] == by_gx[field], field
    unlike = {"run_id", "validation_time", "validation_id"}  # when, and GX's definition (none here)
    for result in (ours, by_gx):
        assert result["meta"]["batch_markers"].pop("ge_load_time")  # when the frame was loaded
    assert {k: v for k, v in ours["meta"].items() if k not in unlike} == {k: v for k, v in by_gx["meta"].items() if k not in unlike}
    stored = session.context.validation_results_store.list_keys()
    assert [key.run_id.run_name for key in stored] == ["0001_shard"]
    assert session.context.validation_results_store.get(stored[0]).success is False


@pytest.mark.parametrize(
    "kwargs",
    [
        {"column": "caption", "batch_id": "b-1", "row_condition": None, "condition_parser": None},
        {"value_set": ["CT", "MR"], "mostly": 0.95, "strict": True, "nested": {"z": [1, None, 2.5], "a": "x"}},
        {"values": (1, 2), "column": "a"},  # a tuple dumps as a list either way
        {"column": "a", "min_value": float("nan")},  # NaN: GX writes null (its own path)
        {"column": "a", "max_value": np.float64(2.5), "count": np.int64(3)},  # numpy: GX's path
        {"column": "a", 7: "int key"},  # GX makes keys strings: its path
        {"only": "one key"},
        {},
    ],
)
def test_metric_ids_are_gx_own_ids(kwargs: dict[str, Any]) -> None:
    import_gx()
    from great_expectations.core.id_dict import IDDict

    ids = IDDict(kwargs)
    by_gx = ids.to_id()
    with memoized_configurations():
        assert ids.to_id() == by_gx
        assert ids.to_id(id_ignore_keys={"column"}) == IDDict(kwargs).to_id(id_ignore_keys={"column"})


def test_plain_metric_ids_skip_gx_conversion(monkeypatch: pytest.MonkeyPatch) -> None:
    import_gx()
    from great_expectations.core import id_dict

    ids = id_dict.IDDict({"column": "caption", "batch_id": "b-1", "row_condition": None})
    expected = ids.to_id()
    with memoized_configurations():
        monkeypatch.setattr(id_dict, "convert_to_json_serializable", lambda data: pytest.fail(f"converted {data}"))
        assert ids.to_id() == expected


def test_an_ephemeral_context_skips_only_its_unread_config_saves(monkeypatch: pytest.MonkeyPatch) -> None:
    gx = import_gx()
    from great_expectations.data_context.data_context_variables import EphemeralDataContextVariables

    saves: list[int] = []
    monkeypatch.setattr(EphemeralDataContextVariables, "save", lambda self: saves.append(1))
    plain = gx.get_context(mode="ephemeral")
    plain.data_sources.add_pandas("a").add_dataframe_asset("x")
    assert saves  # GX's own behaviour: a YAML save after each change
    saves.clear()
    quiet = gx.get_context(mode="ephemeral")
    skip_project_config_saves(quiet)
    quiet.data_sources.add_pandas("a").add_dataframe_asset("x")
    assert saves == []
    assert [a.name for a in quiet.data_sources.get("a").assets] == ["x"]  # the config itself holds the change
    with pytest.raises(ValueError, match="'file'"):
        skip_project_config_saves(type("FileContext", (), {"mode": "file"})())


@pytest.mark.parametrize("family", ["imed", "ophora"])
def test_results_kept_as_dicts_load_as_gx_own_text_would(family: str, tmp_path: Path) -> None:
    """Data Docs reads each result back from the store: loaded from the kept dict it
    must equal the result loaded from GX's JSON text, failures and examples included."""
    from great_expectations.data_context.store.validation_results_store import (
        ValidationResultsStore,
    )

    session = gate._GxSession(str(tmp_path / "docs"))
    validation = session.validate("shard", broken_frame(family, tmp_path), gate.shard_suite(family, Tolerances()))
    store = session.context.validation_results_store
    assert store.serialize is not ValidationResultsStore.serialize  # the session keeps dicts
    as_text = ValidationResultsStore.serialize(store, validation)
    assert isinstance(as_text, str)
    kept = store._store_backend.get(store.key_to_tuple(store.list_keys()[0]))
    assert isinstance(kept, dict)
    from_text, from_dict = store.deserialize(as_text), store.get(store.list_keys()[0])
    assert not from_dict.success and from_dict.statistics["unsuccessful_expectations"] >= 2
    assert from_dict == from_text
    assert from_dict.to_json_dict() == from_text.to_json_dict()
    assert store.get(store.list_keys()[0]) == from_text  # loading left the kept dict as it was


def test_results_as_dicts_only_for_an_in_memory_store(tmp_path: Path) -> None:
    gx = import_gx()
    with pytest.raises(ValueError, match="'file'"):
        keep_validation_results_as_dicts(gx.get_context(mode="file", project_root_dir=str(tmp_path)))


def test_a_session_without_data_docs_stores_nothing_and_validates_the_same(tmp_path: Path) -> None:
    """Without a Data Docs site (an ``s3://`` workdir, ``validate_path`` without
    ``docs_dir``) nothing would read the stored results or suites: none are stored, and
    the verdicts are the same."""
    frame = broken_frame("imed", tmp_path)
    with_docs, without = gate._GxSession(str(tmp_path / "docs")), gate._GxSession(None)
    results = []
    for session in (with_docs, without):
        result = session.validate("shard", frame, gate.shard_suite("imed", Tolerances())).to_json_dict()
        for item in result["results"]:
            item["expectation_config"].pop("id", None)  # fresh per suite object
        results.append(result)
    assert not results[1]["success"] and results[1]["statistics"]["unsuccessful_expectations"] >= 2
    for field in ("results", "success", "statistics", "suite_name"):
        assert results[0][field] == results[1][field], field
    assert without.context.validation_results_store.list_keys() == [] and without.context.suites.all() == []
    assert len(with_docs.context.validation_results_store.list_keys()) == 1 and len(with_docs.context.suites.all()) == 1
