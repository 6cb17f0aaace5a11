"""The CLI end to end, through Prefect: convert, catalog list/show/files/history, exit codes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

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
    assert shown["version"] == "2026.11" and shown["samples"] == 3 and shown["recipe"] == "convert"
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
    for odd in ("w#1", "w%20"):  # read as URL syntax by Iceberg and SQLite: refused before any work
        assert main(["--workdir", str(tmp_path / odd), "convert", str(tmp_path), "--dataset", "x"]) == 2
        assert "has '#' or '%' in its path" in capsys.readouterr().err
        assert not (tmp_path / odd).exists()


def test_a_missing_validate_path_is_a_usage_error_and_a_closed_pipe_ends_quietly(tmp_path, capsys):
    import subprocess
    import sys

    assert main(["--workdir", str(tmp_path / "w"), "validate", str(tmp_path / "nowhere.parquet")]) == 2
    assert "no such file or folder" in capsys.readouterr().err
    # `medcurate catalog list | head -0`: the reader is gone before the first line
    reader = subprocess.Popen(
        [sys.executable, "-m", "flows.cli", "--workdir", str(tmp_path / "w"), "catalog", "list"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    assert reader.stdout is not None and reader.stderr is not None
    reader.stdout.close()
    err = reader.stderr.read().decode()
    assert reader.wait(timeout=120) == 1 and "Traceback" not in err and "BrokenPipe" not in err, err


def test_a_broken_pipe_that_is_not_stdout_is_a_real_failure(tmp_path, monkeypatch):
    import pytest

    import flows.cli as cli

    def lost_connection(args):
        raise BrokenPipeError("connection to the object store lost")

    monkeypatch.setattr(cli, "cmd_catalog", lost_connection)
    with pytest.raises(BrokenPipeError, match="object store"):
        main(["--workdir", str(tmp_path / "w"), "catalog", "list"])


def test_an_existing_version_is_refused_before_any_work(tmp_path, capsys, ct_series):
    work = tmp_path / "w"
    base = ["--workdir", str(work), "convert", str(ct_series.parent), "--dataset", "dup", "--slices", "middle"]
    assert main([*base, "--version", "v1"]) == 0
    capsys.readouterr()
    data = sorted((work / "warehouse").rglob("*.parquet"))
    runs = sorted((work / "runs").iterdir())
    (ct_series / "02.dcm").unlink()  # a change that would make new shards
    assert main([*base, "--version", "v1"]) == 2
    assert "dup@v1 already exists (published versions: v1)" in capsys.readouterr().err
    assert sorted((work / "warehouse").rglob("*.parquet")) == data and sorted((work / "runs").iterdir()) == runs


def test_show_names_the_version_asked_for_when_an_unchanged_rebuild_tagged_the_same_data(tmp_path, capsys, ct_series):
    work = tmp_path / "w"
    base = ["--workdir", str(work), "convert", str(ct_series.parent), "--dataset", "same", "--slices", "middle"]
    assert main([*base, "--version", "v1"]) == 0
    assert main([*base, "--version", "v2"]) == 0
    assert "unchanged" in capsys.readouterr().out
    for ref, version, same in (("same@v2", "v2", ["v1"]), ("same", "v2", ["v1"]), ("same@v1", "v1", ["v2"])):
        assert main(["--workdir", str(work), "catalog", "show", ref]) == 0
        shown = json.loads(capsys.readouterr().out)
        assert (shown["version"], shown["same_data_as"], shown["samples"]) == (version, same, 1)
        assert shown["card"].endswith(f"/versions/{version}/README.md")
        assert Path(shown["card"]).read_text().startswith(f"# Dataset card: same {version}")


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
