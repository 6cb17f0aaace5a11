"""The CLI end to end, through Prefect: convert, catalog list/show/files/history, exit codes."""

from __future__ import annotations

import json
import shutil

import pyarrow.parquet as pq

from flows.cli import main
from tests.helpers import XRAY_DIR


def test_convert_then_catalog_commands(tmp_path, capsys, ct_series):
    src = ct_series.parent
    shutil.copytree(XRAY_DIR, src / "xr")
    work = str(tmp_path / "w")
    assert main(["--workdir", work, "convert", str(src), "--dataset", "cli_ds", "--version", "2026.11", "--slices", "middle"]) == 0
    out = capsys.readouterr().out
    assert "cli_ds: 3 samples from 3/3 inputs" in out and "published cli_ds@2026.11" in out
    assert main(["--workdir", work, "catalog", "files", "cli_ds@2026.11"]) == 0
    files = capsys.readouterr().out.split()
    assert files and all(f.startswith("/") and f.endswith(".parquet") for f in files)
    assert sum(pq.read_metadata(f).num_rows for f in files) == 3
    assert main(["--workdir", work, "catalog", "show", "cli_ds"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["version"] == "2026.11" and shown["samples"] == "3" and shown["recipe"] == "convert"
    assert main(["--workdir", work, "catalog", "list"]) == 0
    assert capsys.readouterr().out.startswith("cli_ds\t1 version(s)")
    assert main(["--workdir", work, "catalog", "history", "cli_ds"]) == 0
    assert "versions 2026.11" in capsys.readouterr().out
    summary = json.loads(next((tmp_path / "w" / "runs").glob("*/summary.json")).read_text())
    assert summary["inputs_total"] == 3 and summary["samples_written"] == 3


def test_global_options_work_after_the_command_as_the_contract_writes_them(tmp_path, capsys, ct_series):
    """DESIGN.md and issue #2 write ``convert SRC --dataset NAME --workdir DIR`` and
    ``demo --workdir DIR``; before the command works too, and after it wins."""
    work, elsewhere = tmp_path / "w", tmp_path / "elsewhere"
    args = ["convert", str(ct_series.parent), "--dataset", "after", "--slices", "middle", "--workdir", str(work)]
    assert main(args) == 0
    assert "published after@v1" in capsys.readouterr().out
    assert (work / "catalog.db").exists() and not elsewhere.exists()
    assert main(["--workdir", str(elsewhere), "catalog", "list", "--workdir", str(work)]) == 0
    assert capsys.readouterr().out.startswith("after\t1 version(s)")
    assert main(["catalog", "files", "after", "--workdir", str(work), "--warehouse", str(work / "warehouse")]) == 0
    files = capsys.readouterr().out.split()
    assert files and all(f.startswith(str(work / "warehouse")) for f in files)
    assert main(["--workdir", str(work), "catalog", "show", "after"]) == 0
    assert json.loads(capsys.readouterr().out)["version"] == "v1"


def test_usage_errors_exit_2_with_a_message(tmp_path, capsys):
    work = str(tmp_path / "w")
    assert main(["--workdir", work, "catalog", "show", "missing"]) == 2
    assert "no dataset named 'missing'" in capsys.readouterr().err
    assert main(["--workdir", work, "convert", str(tmp_path / "nowhere"), "--dataset", "x"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["--workdir", work, "convert", str(tmp_path), "--dataset", "x", "--slices", "some"]) == 2
    assert "--slices" in capsys.readouterr().err
    assert main(["--workdir", work, "convert", str(tmp_path), "--dataset", "x", "--label-names", "liver"]) == 2
    assert "VALUE=NAME" in capsys.readouterr().err


def test_label_names_and_item_timeout_reach_the_converter(tmp_path, ct_series):
    from flows.build import BuildRequest, run_build_inline

    (ct_series / "spine_seg.nrrd").unlink()
    (ct_series / "heart_seg.nrrd").unlink()
    (ct_series / "liver_seg.nrrd").rename(ct_series / "organs_seg.nrrd")  # no structure name in the file name
    outcome = run_build_inline(
        BuildRequest(
            recipe="convert", sources=[str(ct_series)], dataset="named", workdir=str(tmp_path / "w"),
            options={"label_names": {1: "liver"}, "item_timeout_s": 120},
        )
    )
    assert outcome.summary["samples_written"] == 3
    table = pq.read_table(outcome.shards[0], columns=["masks"])
    categories = {m["category"] for row in table.column("masks").to_pylist() for m in row or []}
    assert categories == {"liver"}


def test_burned_in_policy_reaches_the_build(tmp_path, monkeypatch, capsys):
    """``--burned-in strict`` becomes the convert build's ``burned_in`` option (the
    converter's behaviour is tested in tests/converters/test_spine_dicom.py)."""
    import flows.build

    requests = []

    class Outcome:
        summary = {"samples_written": 0, "inputs_converted": 0, "inputs_total": 0, "inputs_rejected": 0,
                   "seconds": 0.0, "rejects_by_reason": {}, "run_id": "r"}

    monkeypatch.setattr(flows.build, "run_build", lambda request: requests.append(request) or Outcome())
    for flags, expected in (([], "declared"), (["--burned-in", "strict"], "strict")):
        assert main(["--workdir", str(tmp_path), "convert", str(tmp_path), "--dataset", "d", *flags]) == 0
        assert requests.pop().options["burned_in"] == expected
    capsys.readouterr()
