"""Deployments: config validation, and a real Prefect server running a served rebuild."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from catalogs import open_catalog
from flows.deployments import DeploymentConfigError, default_specs, load_specs, to_deployments
from tests.helpers import XRAY_DIR


def test_default_deployments_are_nightly_per_family(tmp_path):
    specs = default_specs(str(tmp_path))
    assert [s.name for s in specs] == [
        "unimed-nightly", "imed-nightly", "retinalogos-nightly", "ophora-nightly", "medq_uni-nightly",
    ]
    assert all(s.cron == "0 2 * * *" for s in specs)
    deployments = to_deployments(specs, str(tmp_path))
    imed = deployments[1]
    assert imed.parameters["recipe"] == "imed" and imed.parameters["sources"] == [str(tmp_path / "sources" / "imed")]
    assert imed.schedules[0].schedule.cron == "0 2 * * *"
    assert imed.entrypoint == "flows.prefect_flows.build_dataset"


def test_config_errors_name_the_entry_and_key(tmp_path):
    path = tmp_path / "serve.yaml"
    path.write_text("deployments:\n  - recipe: imed\n    sources: /x\n    cron: '0 2 *'\n")
    with pytest.raises(DeploymentConfigError, match=r"deployments\[0\]: 'cron' must have 5 fields"):
        load_specs(str(path), str(tmp_path))
    path.write_text("deployments:\n  - sources: /x\n")
    with pytest.raises(DeploymentConfigError, match=r"deployments\[0\]: 'recipe' is required"):
        load_specs(str(path), str(tmp_path))
    path.write_text("defaults: {executor: dask, dask_address: 'tcp://h:8786'}\ndeployments:\n  - {recipe: convert, dataset: xr, sources: /x, colour: red}\n")
    with pytest.raises(DeploymentConfigError, match="unknown key"):
        load_specs(str(path), str(tmp_path))


def test_a_deployment_that_could_never_run_is_refused_when_served(tmp_path):
    """A misspelt recipe or option would fail every scheduled run at night: refuse it now."""
    path = tmp_path / "serve.yaml"
    for entry, message in (
        ("{recipe: imde, sources: /x}", r"deployments\[0\]: no recipe named 'imde'"),
        ("{recipe: imed, sources: /x, options: {clikcs: 3}}", r"deployments\[0\]: .*clikcs: unknown key"),
        ("{recipe: convert, sources: /x, options: {modalty: CT}}", r"deployments\[0\]: options \['modalty'\] unknown to convert"),
    ):
        path.write_text(f"deployments:\n  - {entry}\n")
        with pytest.raises(DeploymentConfigError, match=message):
            load_specs(str(path), str(tmp_path))
    recipe = tmp_path / "liver.yaml"
    recipe.write_text("family: imed\ndataset: liver_ct\noptions: {clicks: 3, keep_empty_slices: true}\n")
    path.write_text(f"deployments:\n  - {{recipe: {recipe}, sources: /x, options: {{options: {{slices: 'every:2'}}}}}}\n")
    (spec,) = load_specs(str(path), str(tmp_path))
    assert (spec.recipe, spec.dataset) == ("imed", "liver_ct")  # the table `medcurate build liver.yaml` writes
    # the entry's options merged key by key over the file's, not replacing its whole `options:`
    assert spec.options["options"] == {"clicks": 3, "keep_empty_slices": True, "slices": "every:2"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_healthy(url: str, timeout: float = 90) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise TimeoutError(f"Prefect server at {url} did not become healthy")


@pytest.mark.slow
def test_served_deployment_runs_when_triggered(tmp_path):
    """`prefect server start` + `medcurate serve` + a triggered run publishes the dataset."""
    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_API_URL": api,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",
        "MEDCURATE_SALT": "serve-test",
    }
    bin_dir = Path(sys.executable).parent
    server = subprocess.Popen(
        [str(bin_dir / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    served = None
    try:
        _wait_healthy(api)
        source = tmp_path / "xr"
        shutil.copytree(XRAY_DIR, source)
        work = tmp_path / "work"
        config = tmp_path / "serve.yaml"
        config.write_text(
            "deployments:\n"
            f"  - {{name: xr-nightly, recipe: convert, dataset: xr_nightly, sources: ['{source}'],"
            " cron: '0 3 * * *', options: {modality: XR}}\n"
        )
        served = subprocess.Popen(
            [str(bin_dir / "medcurate"), "--workdir", str(work), "serve", "--config", str(config)],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        deadline = time.time() + 120
        while time.time() < deadline:  # wait for the deployment to be registered
            found = subprocess.run(
                [str(bin_dir / "prefect"), "deployment", "ls"], env=env, capture_output=True, text=True
            )
            if "xr-nightly" in found.stdout:
                break
            time.sleep(2)
        else:
            pytest.fail("medcurate serve did not register its deployment")
        run = subprocess.run(
            [str(bin_dir / "prefect"), "deployment", "run", "medcurate-build/xr-nightly", "--watch", "--watch-timeout", "240"],
            env=env, capture_output=True, text=True, timeout=300,
        )
        assert run.returncode == 0, run.stdout + run.stderr
        assert "Completed" in run.stdout
        catalog = open_catalog(workdir=str(work))
        assert catalog.versions("xr_nightly")[0].medcurate["samples"] == "2"
    finally:
        for process in (served, server):
            if process is not None:
                os.killpg(process.pid, 15)
                process.wait(timeout=30)


def test_retention_keys_reach_the_flow_and_wrong_ones_are_refused(tmp_path):
    path = tmp_path / "serve.yaml"
    path.write_text("defaults: {keep_last: 14}\ndeployments:\n  - {recipe: convert, dataset: xr, sources: /x, keep_versions: [v3]}\n")
    (spec,) = load_specs(str(path), str(tmp_path))
    assert spec.parameters == {"keep_last": 14, "keep_versions": ["v3"]}
    assert to_deployments([spec], str(tmp_path))[0].parameters["keep_last"] == 14
    for entry, message in (
        ("keep_last: 0", "'keep_last' must be a whole number of versions, at least 1; got 0"),
        ("keep_last: '14'", "'keep_last' must be a whole number"),
        ("keep_last: true", "'keep_last' must be a whole number"),
        ("keep_versions: [v3]", "'keep_versions' needs 'keep_last'"),
        ("keep_last: 2, keep_versions: v3", "'keep_versions' must be a list of version names"),
    ):
        path.write_text(f"deployments:\n  - {{recipe: convert, dataset: xr, sources: /x, {entry}}}\n")
        with pytest.raises(DeploymentConfigError, match=rf"deployments\[0\]: {message}"):
            load_specs(str(path), str(tmp_path))


def test_a_served_build_applies_its_retention_after_publishing(tmp_path):
    """``medcurate-build`` with ``keep_last``: the nightly flow keeps only the newest
    versions; a kept version that does not exist is reported, not a failed build."""
    import numpy as np
    from PIL import Image

    from flows.prefect_flows import build_dataset

    source = tmp_path / "xr"
    source.mkdir()

    def image(name: str, seed: int) -> None:
        Image.fromarray(np.random.default_rng(seed).integers(0, 255, (32, 32), dtype=np.uint8)).save(source / name)

    def nightly_change(seed: int) -> None:  # one image re-exported with new content
        image("img0.png", seed)

    for index in range(1, 4):
        image(f"img{index}.png", 100 + index)
    nightly_change(0)
    kwargs = dict(recipe="convert", sources=[str(source)], dataset="kept", workdir=str(tmp_path / "w"), options={"modality": "XR"})
    first = build_dataset(**kwargs, keep_last=1)
    assert first["retention"]["expired_versions"] == [] and first["retention"]["kept_versions"] == ["v1"]
    nightly_change(1)
    second = build_dataset(**kwargs, keep_last=1)
    assert second["retention"] == {"expired_versions": ["v1"], "kept_versions": ["v2"], "files_removed": 0, "bytes_removed": 0}
    catalog = open_catalog(workdir=str(tmp_path / "w"))
    assert [v.version for v in catalog.versions("kept")] == ["v2"] and len(catalog.history("kept")) == 1
    nightly_change(2)
    third = build_dataset(**kwargs, keep_last=1, keep_versions=["v9"])
    assert "no version 'v9'" in third["retention"]["error"]
    assert [v.version for v in open_catalog(workdir=str(tmp_path / "w")).versions("kept")] == ["v2", "v3"]
