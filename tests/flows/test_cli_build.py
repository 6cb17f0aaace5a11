"""``medcurate build`` and ``medcurate recipes`` end to end, through Prefect."""

from __future__ import annotations

import json
from pathlib import Path

from flows.cli import main


def fundus_recipe(tmp_path: Path, text: str) -> Path:
    """A recipe file beside a retinalogos download tree (APTOS 2019 and IDRiD layouts)."""
    from curation.recipes.demo_trees import write_tree

    recipe = write_tree("retinalogos", tmp_path / "downloads") / "recipe.yaml"
    recipe.write_text("family: retinalogos\n" + text)
    return recipe


def test_build_a_recipe_file_on_a_public_layout(tmp_path, capsys, monkeypatch):
    recipe = fundus_recipe(
        tmp_path,
        "dataset: fundus_small\nsources:\n  - {name: APTOS2019, path: aptos2019, cap: 4}\n  - {name: IDRiD, path: idrid}\n",
    )
    work = str(tmp_path / "w")
    assert main(["--workdir", work, "build", str(recipe), "--version", "2026.11"]) == 0
    out = capsys.readouterr().out
    assert "published fundus_small@2026.11" in out
    summary = json.loads(next((tmp_path / "w" / "runs").glob("*/summary.json")).read_text())
    assert summary["recipe"] == "retinalogos" and summary["dataset"] == "fundus_small"
    assert summary["rejects_by_reason"]["sampled_out"] == 4  # 8 APTOS images after dedup, cap 4
    # 4 APTOS (some may fail QC) + 3 IDRiD photographs
    assert 5 <= summary["samples_written"] <= 7
    assert main(["--workdir", work, "catalog", "show", "fundus_small"]) == 0
    assert json.loads(capsys.readouterr().out)["recipe"] == "retinalogos"

    def staged(*args, **kwargs):
        raise AssertionError("sources were staged before the version was checked")

    monkeypatch.setattr("curation.recipes.common.stage_sources", staged)
    assert main(["--workdir", work, "build", str(recipe), "--version", "2026.11"]) == 2
    assert "fundus_small@2026.11 already exists" in capsys.readouterr().err


def test_a_failed_gate_exits_3_publishes_nothing_and_ends_the_flow_run_failed_without_a_traceback(tmp_path, capsys):
    recipe = fundus_recipe(
        tmp_path, "dataset: strict_fundus\ngate: {min_blur_laplacian_var: 1000000}\nsources:\n  - {name: IDRiD, path: idrid}\n"
    )
    work = tmp_path / "w"
    assert main(["--workdir", str(work), "build", str(recipe)]) == 3
    err = capsys.readouterr().err
    assert "quality gate failed for strict_fundus" in err and "column=blur_laplacian_var" in err and "quarantined:" in err
    # the run's final state carries the gate's message; an escaping exception would have
    # made it "Flow run encountered an exception: GateFailed: ..." (logged with a traceback)
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName
    from prefect.client.schemas.sorting import FlowRunSort

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=["medcurate-build-retinalogos"])),
            sort=FlowRunSort.EXPECTED_START_TIME_DESC, limit=1,
        )
    assert runs and runs[0].state is not None and runs[0].state.is_failed()
    assert (runs[0].state.message or "").startswith("quality gate failed for strict_fundus")
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=10)  # logs reach the API in batches
    with get_client(sync_client=True) as client:
        logged = [log.message for log in client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[runs[0].id])))]
    assert any(m.startswith("gate: failed [") and "blur_laplacian_var" in m for m in logged), logged
    assert any(m.startswith("gate: quarantined ") for m in logged)
    summary = json.loads(next((work / "runs").glob("*/summary.json")).read_text())
    assert summary["gate"]["passed"] is False and summary["version"] is None
    assert main(["--workdir", str(work), "catalog", "list"]) == 0
    assert capsys.readouterr().out.startswith("(no datasets yet")


def test_a_failed_gate_verdict_reaches_the_terminal_once(tmp_path):
    """The run's log carries the verdict for the UI (above); the CLI prints it on stderr
    and keeps those log lines off its console, so each failed expectation shows once."""
    import os
    import subprocess
    import sys

    recipe = fundus_recipe(
        tmp_path, "dataset: strict_fundus\ngate: {min_blur_laplacian_var: 1000000}\nsources:\n  - {name: IDRiD, path: idrid}\n"
    )
    done = subprocess.run(
        [str(Path(sys.executable).parent / "medcurate"), "--workdir", str(tmp_path / "w"), "build", str(recipe)],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "GX_ANALYTICS_ENABLED": "false"},
    )
    assert done.returncode == 3, done.stderr
    terminal = done.stdout + done.stderr
    assert terminal.count("column=blur_laplacian_var") == 1, terminal
    assert terminal.count("failed_shard_fraction_within_tolerance") == 1
    assert terminal.count("/quarantine/") == 1 and terminal.count("data_docs/index.html") == 1
    assert "  failed: [part-" in done.stderr  # the CLI's own verdict block


def test_main_leaves_the_root_handlers_filters_as_it_found_them(tmp_path):
    import logging

    from flows.cli import _not_a_gate_verdict

    assert main(["--workdir", str(tmp_path / "w"), "catalog", "list"]) == 0
    assert main(["--workdir", str(tmp_path / "w"), "catalog", "show", "nothing"]) == 2
    assert not any(_not_a_gate_verdict in h.filters for h in logging.getLogger().handlers)


def test_the_deployment_flow_ends_failed_on_a_failed_gate_and_raises_the_verdict(tmp_path):
    """``medcurate-build`` (what ``medcurate serve`` runs) with a gate the data cannot meet."""
    import pytest

    from flows.build import GateFailed
    from flows.prefect_flows import build_dataset

    recipe = fundus_recipe(tmp_path, "")
    kwargs = dict(
        recipe="retinalogos", sources=[str(recipe.parent)], dataset="served_strict", workdir=str(tmp_path / "w"),
        options={"gate": {"min_blur_laplacian_var": 1000000}, "sources": [{"name": "IDRiD", "path": "idrid"}]},
    )
    state = build_dataset(**kwargs, return_state=True)
    assert state.is_failed() and (state.message or "").startswith("quality gate failed for served_strict")
    with pytest.raises(GateFailed, match="served_strict") as raised:
        build_dataset(**kwargs)
    import pickle

    again = pickle.loads(pickle.dumps(raised.value))  # a result store may keep the state's exception
    assert str(again) == str(raised.value) and again.report.failed_expectations == raised.value.report.failed_expectations


def test_build_usage_errors_exit_2(tmp_path, capsys):
    work = str(tmp_path / "w")
    assert main(["--workdir", work, "build", "retinalogos"]) == 2
    assert "needs --source PATH" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("family: ophora\noptions: {clip_secs: 3}\n")
    assert main(["--workdir", work, "build", str(bad)]) == 2
    assert f"{bad}: options.clip_secs: unknown key" in capsys.readouterr().err
    assert main(["--workdir", work, "build", "imed", "--source", str(tmp_path)]) == 2
    assert "holds no imed source" in capsys.readouterr().err
    assert main(["recipes", "show", "nope"]) == 2


def test_recipes_list_and_show(capsys):
    assert main(["recipes", "list"]) == 0
    out = capsys.readouterr().out
    for family in ("unimed", "imed", "retinalogos", "ophora", "medq_uni"):
        assert f"\n{family}\t" in "\n" + out
    assert "layout msd:" in out
    assert main(["recipes", "show", "ophora"]) == 0
    assert "clip_seconds: 5.5" in capsys.readouterr().out
