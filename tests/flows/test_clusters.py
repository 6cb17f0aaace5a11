"""Real multi-process clusters on this machine: `dask scheduler` + 2 `dask worker`s, and
`ray start --head` + a second `ray start --address` node, each running a build."""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from catalogs import open_catalog
from flows.build import BuildRequest, run_build
from tests.helpers import XRAY_DIR

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def prefect_api():
    """One temporary Prefect server shared by the driver and the cluster's workers."""
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()
    server.start()
    yield server.api_url
    server.stop()


def source_tree(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    for i in range(8):
        shutil.copytree(XRAY_DIR, src / f"batch{i}")
    return src


def worker_env(api: str) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "PREFECT_API_URL": api,
        "MEDCURATE_SALT": "cluster-test",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }


def request(src: Path, work: Path, executor: str, **engine) -> BuildRequest:
    return BuildRequest(
        recipe="convert",
        sources=[str(src)],
        dataset=f"on_{executor}",
        workdir=str(work),
        executor=executor,
        options={"partition_items": 2, "modality": "XR"},
        **engine,
    )


#: the start of a fresh interpreter's script: discovery sends even these small files to
#: the cluster (threshold 0), and each cluster map is printed as MAPPED executor fn files
RECORD_CLUSTER_MAPS = (
    "import converters.discover, flows.engines\n"
    "converters.discover.PARALLEL_MIN_BYTES = 0\n"
    "real = flows.engines.cluster_map\n"
    "def recording(executor, runner, fn, chunks):\n"
    "    print('MAPPED', executor, fn.__name__, sum(len(c) for c in chunks), flush=True)\n"
    "    return real(executor, runner, fn, chunks)\n"
    "flows.engines.cluster_map = recording\n"
)


@pytest.fixture
def discovery_on_the_cluster(monkeypatch) -> list[tuple[str, str, int]]:
    """Discovery sends even these small radiographs to the cluster (its threshold lowered
    to 0 bytes); returns the record of its ``cluster_map`` calls: (executor, function,
    files)."""
    import converters.discover
    import flows.engines

    monkeypatch.setattr(converters.discover, "PARALLEL_MIN_BYTES", 0)
    mapped: list[tuple[str, str, int]] = []
    cluster_map = flows.engines.cluster_map

    def recording_map(executor, runner, fn, chunks):
        mapped.append((executor, fn.__name__, sum(len(c) for c in chunks)))
        return cluster_map(executor, runner, fn, chunks)

    monkeypatch.setattr(flows.engines, "cluster_map", recording_map)
    return mapped


@pytest.mark.slow
def test_build_on_a_local_dask_cluster_discovers_and_converts_there(tmp_path, prefect_api):
    """``--executor dask`` without an address: a LocalCluster, started by discovery. Two
    builds in a fresh interpreter, where distributed is not imported when the first
    starts: its worker environment must be set after distributed's configuration is
    loaded, else leaving it removed that configuration and the second build failed.
    The second draws its progress bars, as in a terminal: Prefect ships the flow, which
    holds them, to the workers with every task."""
    src, work = source_tree(tmp_path), tmp_path / "w"
    script = tmp_path / "build.py"
    script.write_text(
        RECORD_CLUSTER_MAPS
        + "from flows.build import BuildRequest, run_build\n"
        "if __name__ == '__main__':\n"
        "    for run in ('a', 'b'):\n"
        f"        out = run_build(BuildRequest(recipe='convert', sources=[{str(src)!r}], dataset='on_dask',\n"
        f"            workdir={str(work)!r} + run, executor='dask', workers=2,\n"
        "            options={'partition_items': 2, 'modality': 'XR'}), progress=run == 'b')\n"
        "        print('SAMPLES', out.summary['samples_written'], len(out.summary['workers']))\n"
    )
    done = subprocess.run([sys.executable, str(script)], env=worker_env(prefect_api), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    lines = [line for line in done.stdout.splitlines() if line.startswith(("MAPPED", "SAMPLES"))]
    assert lines == ["MAPPED dask examine_files 16", "SAMPLES 16 2"] * 2


def _time_engine_starts(monkeypatch) -> list[float]:
    """Seconds of each ``LazyEngine.start`` call of the builds that follow."""
    from flows.prefect_flows import LazyEngine

    starts: list[float] = []
    real = LazyEngine.start

    def timed(self, processes=1):
        tick = time.perf_counter()
        try:
            return real(self, processes)
        finally:
            starts.append(time.perf_counter() - tick)

    monkeypatch.setattr(LazyEngine, "start", timed)
    return starts


def test_a_dask_rebuild_with_nothing_new_starts_no_cluster(tmp_path, prefect_api, monkeypatch, discovery_on_the_cluster):
    """Every file known to the hash cache and every partition finished: neither discovery
    nor the partitions need workers, so no cluster starts (a nightly no-op rebuild costs
    seconds, not a cluster's start and stop)."""
    import flows.prefect_flows

    monkeypatch.setenv("PREFECT_API_URL", prefect_api)
    src, work = source_tree(tmp_path), tmp_path / "w"
    first = run_build(dataclasses.replace(request(src, work, "dask"), executor="local", workers=1), progress=False)
    assert first.summary["samples_written"] == 16

    def no_cluster(*args, **kwargs):
        raise AssertionError("a rebuild with nothing to read or convert started an engine")

    monkeypatch.setattr(flows.prefect_flows, "task_runner_for", no_cluster)
    again = run_build(request(src, work, "dask"), progress=False)
    assert discovery_on_the_cluster == []
    assert again.summary["partitions_reused"] == again.summary["partitions"] == first.summary["partitions"]
    assert again.published is not None and again.published.unchanged
    assert again.summary["phases"]["engine_start"] < 0.05 and again.summary["phases"]["engine_stop"] < 0.05


@pytest.mark.slow
def test_build_on_a_dask_scheduler_with_two_worker_processes(tmp_path, prefect_api, monkeypatch, discovery_on_the_cluster):
    """Discovery and partitions both on the cluster."""
    mapped = discovery_on_the_cluster
    monkeypatch.setenv("PREFECT_API_URL", prefect_api)
    port = _free_port()
    env = worker_env(prefect_api)
    procs = [
        subprocess.Popen([str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
                         env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    ]
    try:
        for _ in range(2):
            procs.append(
                subprocess.Popen(
                    [str(BIN / "dask"), "worker", f"tcp://127.0.0.1:{port}", "--nthreads", "1", "--no-dashboard"],
                    env=env, cwd=str(ROOT), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                )
            )
        from distributed import Client

        with Client(f"tcp://127.0.0.1:{port}", timeout=60) as client:
            client.wait_for_workers(2, timeout=90)
        src, work = source_tree(tmp_path), tmp_path / "w"
        starts = _time_engine_starts(monkeypatch)
        outcome = run_build(request(src, work, "dask", dask_address=f"tcp://127.0.0.1:{port}"), progress=False)
        assert outcome.summary["samples_written"] == 16
        assert mapped == [("dask", "examine_files", 16)]  # every radiograph examined on the cluster
        # discovery started the engine: its start counts as engine_start, not as plan
        phases = outcome.summary["phases"]
        assert phases["engine_start"] >= round(starts[0], 3) - 0.002 and phases["plan"] >= 0
        workers = outcome.summary["workers"]
        assert len(workers) == 2 and all(not w.endswith(f":{os.getpid()}") for w in workers)
        assert open_catalog(workdir=str(work)).versions("on_dask")[0].medcurate["samples"] == "16"
    finally:
        for proc in reversed(procs):
            os.killpg(proc.pid, 15)
            proc.wait(timeout=30)


@pytest.mark.slow
def test_build_on_a_two_node_ray_cluster(tmp_path, prefect_api):
    """The CLI (a fresh driver process) on `ray start --head` + a second `ray start` node:
    discovery and partitions on the cluster."""
    port = _free_port()
    # Ray 2.60 clusters authenticate with a token: every node and the driver share it
    env = {**worker_env(prefect_api), "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    common = ["--num-cpus", "1", "--disable-usage-stats"]
    subprocess.run(
        [str(BIN / "ray"), "start", "--head", "--port", str(port), "--include-dashboard", "false",
         "--temp-dir", f"/tmp/ray-mc-{port}", *common],
        env=env, check=True, capture_output=True, timeout=180,
    )
    try:
        subprocess.run(
            [str(BIN / "ray"), "start", "--address", f"127.0.0.1:{port}", *common],
            env=env, check=True, capture_output=True, timeout=180,
        )
        deadline = time.time() + 90  # the second node registers with the head asynchronously
        while True:
            status = subprocess.run([str(BIN / "ray"), "status", "--address", f"127.0.0.1:{port}"],
                                    env=env, capture_output=True, text=True, timeout=120)
            if status.stdout.count("node_") >= 2 or time.time() > deadline:
                break
            time.sleep(2)
        assert status.stdout.count("node_") >= 2, status.stdout
        src, work = source_tree(tmp_path), tmp_path / "w"
        # the CLI's own entry point, with discovery sending even these small files to the
        # cluster (threshold 0) and each cluster map recorded on stdout
        driver = RECORD_CLUSTER_MAPS + "import sys\nfrom flows.cli import main\nsys.exit(main(sys.argv[1:]))\n"
        build = subprocess.run(
            [sys.executable, "-c", driver, "--workdir", str(work), "convert", str(src), "--dataset", "on_ray",
             "--modality", "XR", "--partition-items", "2", "--executor", "ray", "--ray-address", f"127.0.0.1:{port}"],
            env=env, capture_output=True, text=True, timeout=400, cwd=str(ROOT),
        )
        assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
        assert "MAPPED ray examine_files 16" in build.stdout.splitlines()  # discovery on the cluster
        summary = json.loads(next((work / "runs").glob("*/summary.json")).read_text())
        assert summary["samples_written"] == 16 and summary["executor"] == "ray"
        assert len(summary["workers"]) >= 2  # partitions ran in more than one Ray worker process
        assert open_catalog(workdir=str(work)).versions("on_ray")[0].medcurate["samples"] == "16"
    finally:
        subprocess.run([str(BIN / "ray"), "stop", "--force"], env=env, capture_output=True, timeout=120)
