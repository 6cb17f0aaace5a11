"""Benchmark: scaling, orchestration overhead and incremental rebuilds.

1. Speed-up of CPU-bound conversion with 1 vs 2 workers, on Dask (LocalCluster of
   processes) and on Ray (local), same inputs: 512×512 CT slices (DICOM decode, LUTs,
   two PNG encodes per slice).
2. Prefect overhead on a 10,000-sample build: the same build through the Prefect flow
   (a task run per batch of partitions) vs in-process without Prefect, against a running Prefect
   server (how production runs), both warmed by one untimed build, interleaved rounds.
3. Incremental rebuild with 1% of the sources changed, as a fraction of the full build.

2 and 3 run on 10,000 256x256 8-bit PNGs by default (``--overhead-input png``, ~0.5 ms
of conversion per sample: the cheapest input there is, so fixed per-build costs weigh
the most) or on 10,000 512x512 CT slices in series of 100 (``--overhead-input ct``,
the product's usual input; 1% changed = one series re-acquired).

Every measurement runs the real build code; ratios are computed within this run.
Run: .venv/bin/python bench/scale.py [--slices 480] [--samples 10000] [--overhead-input png|ct] [--rounds 3] [--skip-speedup] [--skip-overhead]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("MEDCURATE_SALT", "bench")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

from bench.convert import add_noise, make_slices  # noqa: E402
from flows.build import BuildRequest, run_build, run_build_inline  # noqa: E402

T = TypeVar("T")


@contextlib.contextmanager
def prefect_server():
    """A Prefect API server for the whole run, standing in for the team's running server
    (how production runs): without one, every flow would start a temporary server whose
    start-up (migrations, services: seconds of CPU) would overlap the measured phases.
    Not ``flows.settings.ensure_prefect_api``: the server that starts counts as temporary
    (its builds run without flow heartbeats), a team's server does not."""
    from prefect.server.api.server import SubprocessASGIServer

    os.environ.pop("PREFECT_API_URL", None)
    server = SubprocessASGIServer()
    server.start()
    os.environ["PREFECT_API_URL"] = server.api_url
    try:
        yield
    finally:
        from prefect.logging.handlers import APILogWorker

        APILogWorker.drain_all(timeout=5)  # queued flow-run logs reach the API before it stops
        os.environ.pop("PREFECT_API_URL", None)
        server.stop()


class ProcessTreeCPU:
    """CPU seconds of this process and its descendants by role, sampled every 0.1 s.

    The speed-up on two cores is bounded by what else runs on them while the partitions
    convert: this build process (submitting tasks, the Dask scheduler, futures) and the
    Prefect server (recording each task run's state events and logs). Counting every
    process's CPU in the conversion phase shows how busy the cores were and what the
    speed-up would be if only the workers had used them.
    """

    def __init__(self) -> None:
        from bench.process_tree import ProcessTreeSampler

        self._roles: dict[int, str] = {}
        self._sampler = ProcessTreeSampler(self._role_and_cpu, 0.1)

    def __enter__(self) -> ProcessTreeCPU:
        self._sampler.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._sampler.stop()

    def _role_and_cpu(self, process: Any) -> tuple[str, float]:
        times = process.cpu_times()
        if process.pid not in self._roles:
            if process.pid == self._sampler.me.pid:
                self._roles[process.pid] = "build process"
            else:
                try:
                    command = " ".join(process.cmdline())
                except Exception:  # noqa: BLE001 - gone or not ours to read
                    command = ""
                self._roles[process.pid] = "Prefect server" if "uvicorn" in command else "cluster processes"
        return self._roles[process.pid], times.user + times.system

    def window(self, start: float, end: float) -> dict[str, float]:
        """CPU seconds per role between two ``perf_counter`` times (processes started
        in the window count from zero; one that ended in it, up to its last sample)."""
        samples = self._sampler.samples
        before = [row for t, row in samples if t < start]
        first = before[-1] if before else {}
        last: dict[int, tuple[str, float]] = {}
        for t, row in samples:
            if start <= t <= end:
                last.update(row)
        totals: dict[str, float] = {}
        for pid, (role, cpu) in last.items():
            totals[role] = totals.get(role, 0.0) + cpu - first.get(pid, (role, 0.0))[1]
        return totals


@contextlib.contextmanager
def partitions_phase_end(marks: dict[str, float]):
    """Note when a flow build's ``finish`` starts (after the partitions phase and the
    engine's stop): with those phases' lengths from summary.json, that places the
    partitions phase on this process's clock."""
    import flows.prefect_flows as prefect_flows

    finish = prefect_flows.finish

    def noted(*args: Any, **kwargs: Any) -> Any:
        marks["partitions_end"] = time.perf_counter()
        return finish(*args, **kwargs)

    prefect_flows.finish = noted
    try:
        yield
    finally:
        prefect_flows.finish = finish


def timed(fn: Callable[..., T], *args: Any, **kwargs: Any) -> tuple[float, T]:
    started = time.perf_counter()
    result = fn(*args, **kwargs)
    return time.perf_counter() - started, result


def request(source: Path, work: Path, dataset: str, **kw) -> BuildRequest:
    options = {"modality": "XR", **kw.pop("options", {})}
    return BuildRequest(recipe="convert", sources=[str(source)], dataset=dataset, workdir=str(work), options=options, **kw)


def speedup(tmp: Path, slices: int, partition_items: int) -> list[str]:
    source = tmp / "ct"
    # one slice per series: items are independent; 32 per partition = ~26 partitions for
    # 480 slices, in at most 4 task runs per worker (each task run pays ~0.1-0.3 s of
    # Prefect orchestration in the worker: API client, states, logs); 0 = the product's
    # default partitioning (~64 MiB of input)
    make_slices(source, slices, per_series=1)
    options = {"partition_items": partition_items} if partition_items else {}
    lines = []
    marks: dict[str, float] = {}
    for executor in ("dask", "ray"):
        seconds, conversion, start = {}, {}, {}
        cpu: dict[int, dict[str, float]] = {}
        for workers in (1, 2):
            work = tmp / f"{executor}-{workers}"
            req = request(source, work, "scale", executor=executor, workers=workers, options=dict(options))
            with ProcessTreeCPU() as tree, partitions_phase_end(marks):
                seconds[workers], outcome = timed(run_build, req, progress=False)
            phases = outcome.summary["phases"]
            conversion[workers] = phases["partitions"]
            ended = marks["partitions_end"] - phases["engine_stop"]  # finish starts after the cluster stopped
            cpu[workers] = tree.window(ended - conversion[workers], ended)
            start[workers] = outcome.summary["phases"]["engine_start"]
            shutil.rmtree(work)
            if executor == "ray":  # Ray keeps its CPU count for the life of the process
                import ray

                ray.shutdown()
        lines.append(
            f"{executor} ({outcome.summary['partitions']} partitions): conversion phase 1 worker {conversion[1]:.1f} s, 2 workers {conversion[2]:.1f} s, "
            f"speed-up {conversion[1] / conversion[2]:.2f}x (goal >= 1.7x; engine start apart: "
            f"{start[1]:.1f} s / {start[2]:.1f} s); whole build incl. engine start and serial "
            f"discovery/gate/publish/card {seconds[1]:.1f} s -> {seconds[2]:.1f} s ({seconds[1] / seconds[2]:.2f}x)"
        )
        lines.append(f"  {executor} CPU in the conversion phase: {cpu_line(cpu, conversion)}")
    return lines


def cpu_line(cpu: dict[int, dict[str, float]], conversion: dict[int, float]) -> str:
    """Where the two cores went, and the speed-up if the cluster's processes had had
    them to themselves (the 1-worker phase against half the 2-worker cluster CPU)."""
    parts = []
    for workers in (1, 2):
        roles = ", ".join(f"{role} {seconds:.2f} s" for role, seconds in sorted(cpu[workers].items()))
        busy = sum(cpu[workers].values()) / conversion[workers]
        parts.append(f"{workers} worker(s): {roles} ({busy:.2f} cores busy)")
    cluster_2 = cpu[2].get("cluster processes", 0.0)
    bound = conversion[1] / (cluster_2 / 2) if cluster_2 else float("nan")
    return "; ".join(parts) + f"; speed-up bound with the cores to the cluster alone: {bound:.2f}x"


def make_rasters(folder: Path, count: int, size: int = 256, seed: int = 0) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (size, size), dtype=np.uint8)
    for i in range(count):
        pixels = base.copy()
        pixels[i % size, :] = i % 251  # distinct content per file, realistic PNG cost
        Image.fromarray(pixels).save(folder / f"img{i:06d}.png", compress_level=1)


def change_one_percent(source: Path, kind: str, samples: int) -> int:
    """Change 1% of the sources as a nightly change does: one block re-exported with new
    content (PNGs: a block of files; CT: one whole series re-acquired). Returns how many."""
    rng = np.random.default_rng(1)
    if kind == "png":
        changed = sorted(source.glob("*.png"))[samples // 2 : samples // 2 + samples // 100]
        for path in changed:
            Image.fromarray(rng.integers(0, 255, (256, 256), dtype=np.uint8)).save(path, compress_level=1)
        return len(changed)
    import pydicom

    folders = sorted(p for p in source.iterdir() if p.is_dir())
    files = sorted(folders[len(folders) // 2].glob("*.dcm"))
    for path in files:
        ds = pydicom.dcmread(path)
        add_noise(ds, rng)
        ds.save_as(path)
    return len(files)


def overhead_and_incremental(tmp: Path, samples: int, rounds: int, kind: str = "png") -> list[str]:
    source = tmp / f"overhead-{kind}"
    if kind == "png":
        make_rasters(source, samples)
        options: dict = {}
    else:
        make_slices(source, samples, per_series=100)
        options = {"modality": "CT"}

    def build(as_flow: bool, name: str) -> tuple[float, Any]:
        work = tmp / name
        req = request(source, work, "ten_k", options=dict(options))
        seconds, outcome = timed(run_build, req, progress=False) if as_flow else timed(run_build_inline, req)
        if name != f"flow{rounds - 1}":  # the last flow build's workdir is rebuilt incrementally
            shutil.rmtree(work)  # 10,000 CT slices are ~4 GB of shards per build
        return seconds, outcome

    inline_runs: list[float] = []
    flow_runs: list[float] = []
    # one untimed build each way first: both sides then find the local worker pool
    # started, Great Expectations imported and the API client connected (once per
    # process), so the difference is Prefect's per-build orchestration
    build(False, "warm-inline")
    build(True, "warm-flow")
    for i in range(rounds):  # interleaved: the machine's load drifts
        inline_s, inline_outcome = build(False, f"inline{i}")
        inline_runs.append(inline_s)
        flow_s, outcome = build(True, f"flow{i}")
        flow_runs.append(flow_s)
        print(f"  round {i}: in-process {inline_s:.2f} s {inline_outcome.summary['phases']}; "
              f"flow {flow_s:.2f} s {outcome.summary['phases']}", flush=True)
    partitions = outcome.summary["partitions"]
    changed = change_one_percent(source, kind, samples)
    incremental_s, again = build(True, f"flow{rounds - 1}")
    inline_s, flow_s = min(inline_runs), min(flow_runs)
    overhead = (flow_s - inline_s) / flow_s
    reused = again.summary["partitions_reused"]
    return [
        f"{samples} {'PNG images' if kind == 'png' else 'CT slices'}, {partitions} partitions, best of {rounds} interleaved rounds: in-process "
        f"{inline_s:.1f} s ({', '.join(f'{t:.1f}' for t in inline_runs)}), Prefect flow {flow_s:.1f} s "
        f"({', '.join(f'{t:.1f}' for t in flow_runs)}) -> Prefect overhead {overhead * 100:.1f}% of the build "
        f"(goal <= 5%)",
        f"incremental rebuild, {changed} sources changed (1%): {incremental_s:.1f} s = "
        f"{incremental_s / flow_s * 100:.1f}% of the full build (goal <= 5%); "
        f"{reused}/{again.summary['partitions']} partitions reused; phases {again.summary['phases']}",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slices", type=int, default=480)
    parser.add_argument("--samples", type=int, default=10_000)
    parser.add_argument("--overhead-input", choices=["png", "ct"], default="png", help="inputs of the overhead and incremental builds")
    parser.add_argument("--skip-speedup", action="store_true")
    parser.add_argument("--partition-items", type=int, default=32, help="items per partition for the speed-up (0: default)")
    parser.add_argument("--skip-overhead", action="store_true", help="only the Dask/Ray speed-up")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved in-process/flow rounds for the overhead")
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores, python {sys.version.split()[0]}")
    with tempfile.TemporaryDirectory(prefix="medcurate-scale-") as tmp, prefect_server():
        # overhead first: after the Dask/Ray runs this process and the server carry their
        # threads and history, which made the in-process builds measurably slower
        if not args.skip_overhead:
            for line in overhead_and_incremental(Path(tmp), args.samples, args.rounds, args.overhead_input):
                print(line, flush=True)
        if not args.skip_speedup:
            for line in speedup(Path(tmp), args.slices, args.partition_items):
                print(line, flush=True)


if __name__ == "__main__":
    main()
