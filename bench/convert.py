"""Benchmark: `convert` on ≥1,000 real-size CT slices vs the bare codec cost, and peak memory.

Inputs: N 512×512 CT slices made from the three real slices in tests/data (pixel noise
and positions varied so no two files are equal), in series of 250.

* baseline ("bare codec"): one loop of what conversion cannot avoid per slice —
  pydicom read + decode, pydicom's modality LUT and (the slices carry a window) VOI
  LUT, as the conversion spec requires, then the two lossless encodes the
  pipeline stores (8-bit ``input`` and 16-bit ``raw``). Since images are stored as
  unfiltered PNG compressed by the shard's zstd pages (``curation/images.py``), the
  encode is ``encode_png`` *plus* zstd at the shard writer's level; a second baseline,
  "pillow", encodes with Pillow's deflate PNG (level 1) instead, the way the images
  were stored before (and most converters store them); both are printed;
* pipeline: the real build (discovery with hashing, partitions, conversion stage,
  Parquet shards, Iceberg publish), in-process without Prefect's server start-up.

Memory: the pipeline is run in a fresh subprocess with a shard target of 1/10 of the
input size; its peak RSS is compared with the baseline loop's peak RSS. The process
tree's memory is sampled in separate runs (the sampling thread costs ~5 % of a 2-core
machine), so the timed runs carry no instrumentation.

Run: .venv/bin/python bench/convert.py [--slices 1000] [--timing-only RUNS]
(``--slices 10000 --timing-only 2``: the steady state, where per-build costs are amortised)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pydicom

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CT_DIR = ROOT / "tests" / "data" / "ct_3slice_seg"


def add_noise(ds: pydicom.Dataset, rng: np.random.Generator) -> None:
    """New pixel content, as a re-acquisition would give: the stored values plus noise."""
    pixels = ds.pixel_array.astype(np.int32) + rng.integers(-8, 9, ds.pixel_array.shape)
    ds.PixelData = np.clip(pixels, -2000, 4000).astype(np.int16).tobytes()


def make_slices(target: Path, count: int, per_series: int = 250) -> int:
    """Write ``count`` DICOM slices; returns total bytes."""
    rng = np.random.default_rng(0)
    seeds = [pydicom.dcmread(p) for p in sorted(CT_DIR.glob("*.dcm"))]
    total = 0
    for index in range(count):
        series, position = divmod(index, per_series)
        ds = seeds[index % len(seeds)].copy()
        add_noise(ds, rng)
        ds.SeriesInstanceUID = f"1.2.826.0.1.3680043.10.1{series:04d}"
        ds.SOPInstanceUID = f"1.2.826.0.1.3680043.10.2{index:06d}"
        ds.ImagePositionPatient = [-235.2, -226.8, -128.69 + position]
        ds.InstanceNumber = position + 1
        folder = target / f"series{series:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{position:04d}.dcm"
        ds.save_as(path)
        total += path.stat().st_size
    return total


def bare_codec(files: list[Path], baseline: str = "stored") -> float:
    import pyarrow as pa
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    from curation.images import encode_png, to_uint8_window
    from curation.shards import ShardWriter

    level = (ShardWriter.__init__.__kwdefaults__ or {})["compression_level"]
    zstd = pa.Codec("zstd", compression_level=level)

    def encode(array: np.ndarray) -> bytes:
        if baseline == "pillow":
            return encode_png(array, compress_level=1)
        return zstd.compress(encode_png(array), asbytes=True)

    started = time.perf_counter()
    for path in files:
        ds = pydicom.dcmread(path)
        stored = ds.pixel_array
        hu = apply_modality_lut(stored, ds)
        if "WindowCenter" in ds:  # the file's VOI window through pydicom's LUT, as the spec asks of conversion
            voi = apply_voi_lut(hu, ds, index=0)
            low, high = (float(v) for v in apply_voi_lut(np.array([-1e12, 1e12]), ds, index=0))
            eight_bit = to_uint8_window(voi, low, high)  # the LUT's output range onto 0..255
        else:
            eight_bit = to_uint8_window(hu, -160.0, 240.0)
        encode(eight_bit)
        encode((stored.astype(np.int32) + 32768).astype(np.uint16))
    return time.perf_counter() - started


class TreeMemory:
    """Peak of the summed RSS of this process and its descendants (the local executor's
    worker processes are children of a fork server, which getrusage does not see)."""

    def __init__(self, interval: float = 0.05):
        from bench.process_tree import ProcessTreeSampler

        self._sampler = ProcessTreeSampler(lambda process: process.memory_info().rss, interval).start()

    def stop(self) -> int:
        self._sampler.stop()
        return max((sum(row.values()) for _, row in self._sampler.samples), default=0)


def run_pipeline(
    source: Path, workdir: Path, shard_mb: float, workers: int | None = None, *, watch_memory: bool = False
) -> dict:
    """The build as ``medcurate convert`` runs it, without Prefect's API start-up:
    ``workers=None`` is the default (the machine's cores for a build this size), 1 keeps
    conversion in the one process. ``watch_memory``: sample the process tree's RSS (a
    thread polling psutil every 50 ms: ~5 % of a 2-core machine, so timed runs go without)."""
    os.environ.setdefault("MEDCURATE_SALT", "bench")
    from flows.build import BuildRequest, run_build_inline

    watcher = TreeMemory() if watch_memory else None
    started = time.perf_counter()
    outcome = run_build_inline(
        BuildRequest(
            recipe="convert",
            sources=[str(source)],
            dataset="bench",
            workdir=str(workdir),
            options={"shard_bytes": int(shard_mb * 1024 * 1024)},
            workers=workers,
        )
    )
    seconds = time.perf_counter() - started
    tree_peak = watcher.stop() if watcher is not None else 0
    return {
        "seconds": seconds,
        "samples": outcome.summary["samples_written"],
        "shards": len(outcome.shards),
        "phases": outcome.summary.get("phases", {}),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "tree_peak_mb": tree_peak / 2**20,  # this process + its worker processes, summed
    }


def child(mode: str, source: str, workdir: str, shard_mb: float) -> None:
    """Entry point of the measured subprocess (fresh process: honest peak RSS)."""
    if mode == "imports":  # what the pipeline's libraries cost before any data
        import flows.build  # noqa: F401
        import quality_checks.gate  # noqa: F401

        print(json.dumps({"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
        return
    if mode.startswith("pipeline"):
        workers = 1 if "-1" in mode else None
        print(json.dumps(run_pipeline(Path(source), Path(workdir), shard_mb, workers, watch_memory=mode.endswith("-mem"))))
    else:
        files = sorted(Path(source).rglob("*.dcm"))
        seconds = bare_codec(files, "pillow" if mode == "bare-pillow" else "stored")
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps({"seconds": seconds, "samples": len(files), "peak_rss_mb": rss}))


def measure(mode: str, source: Path, workdir: Path, shard_mb: float) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", mode, str(source), str(workdir), str(shard_mb)],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def report_run(label: str, run: dict, bare_seconds: float) -> None:
    print(f"{label}: {run['seconds']:.2f} s  ({run['samples'] / run['seconds']:.1f} slices/s, {run['shards']} shards)")
    print(f"  ratio pipeline/bare: {run['seconds'] / bare_seconds:.2f}x  (goal <= 1.3x)")
    phases = run["phases"]
    conversion = phases.get("plan", 0.0) + phases.get("partitions", 0.0)
    print(
        "  phases: " + ", ".join(f"{k} {v:.1f} s" for k, v in phases.items())
        + f"; discovery+conversion+shards alone: {conversion:.1f} s = {conversion / bare_seconds:.2f}x the bare loop"
    )


def timing_only(source: Path, tmp: Path, shard_mb: float, runs: int) -> None:
    """``runs`` bare loops and default builds, interleaved (the VM's speed drifts between
    minutes): each ratio is a build over the bare loop just before it."""
    ratios = []
    for index in range(runs):
        bare = measure("bare", source, tmp / "unused", shard_mb)
        pipe = measure("pipeline", source, tmp / f"work-{index}", shard_mb)
        shutil.rmtree(tmp / f"work-{index}", ignore_errors=True)  # 10,000 slices write ~6 GB
        ratios.append(pipe["seconds"] / bare["seconds"])
        print(f"run {index + 1}: bare codec loop {bare['seconds']:.2f} s")
        report_run(f"  medcurate build (default: {os.cpu_count()} worker processes)", pipe, bare["seconds"])
    print(f"ratios: {', '.join(f'{r:.2f}x' for r in ratios)}; median {statistics.median(ratios):.2f}x (goal <= 1.3x)")


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive number of runs, got {value}")
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slices", type=int, default=1000)
    parser.add_argument(
        "--timing-only", type=positive_int, metavar="RUNS", default=0,
        help="only the bare loop and the default build, RUNS times interleaved (no Pillow baseline, no one-worker or memory runs)",
    )
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        mode, source, workdir, shard_mb = args.child
        child(mode, source, workdir, float(shard_mb))
        return
    with tempfile.TemporaryDirectory(prefix="medcurate-bench-") as tmp:
        source = Path(tmp) / "ct"
        total = make_slices(source, args.slices)
        shard_mb = total / 10 / 1024 / 1024  # input = 10× the shard size
        print(f"machine: {os.cpu_count()} cores, {sys.platform}, python {sys.version.split()[0]}")
        print(f"input: {args.slices} CT slices 512x512, {total / 1e6:.0f} MB; shard target {shard_mb:.1f} MiB")
        if args.timing_only:
            timing_only(source, Path(tmp), shard_mb, args.timing_only)
            return
        bare = measure("bare", source, Path(tmp) / "unused", shard_mb)
        pillow = measure("bare-pillow", source, Path(tmp) / "unused", shard_mb)
        pipe = measure("pipeline", source, Path(tmp) / "work", shard_mb)
        single = measure("pipeline-1", source, Path(tmp) / "work-1", shard_mb)
        # memory from separate runs: the RSS watcher's polling would slow the timed ones
        pipe_mem = measure("pipeline-mem", source, Path(tmp) / "work-mem", shard_mb)
        single_mem = measure("pipeline-1-mem", source, Path(tmp) / "work-1-mem", shard_mb)
        imports = measure("imports", source, Path(tmp) / "unused", shard_mb)
        quarter = Path(tmp) / "quarter"  # a quarter of the series: does memory follow the input?
        quarter.mkdir()
        series = sorted(source.iterdir())
        for folder in series[: max(1, len(series) // 4)]:
            folder.rename(quarter / folder.name)
        small = measure("pipeline-mem", quarter, Path(tmp) / "work-quarter", shard_mb)
    print(f"bare codec loop : {bare['seconds']:.2f} s  ({bare['samples'] / bare['seconds']:.1f} slices/s; stored PNG + zstd)")
    print(
        f"pillow baseline : {pillow['seconds']:.2f} s  ({pillow['samples'] / pillow['seconds']:.1f} slices/s; deflate PNG): "
        f"pipeline/pillow {pipe['seconds'] / pillow['seconds']:.2f}x"
    )
    report_run(f"medcurate build (default: {os.cpu_count()} worker processes)", pipe, bare["seconds"])
    report_run("medcurate build, --workers 1", single, bare["seconds"])
    print(
        "  (a build has ~2 s of fixed costs — starting workers, GX's import, the gate's GX runs, publish, card — that weigh"
        " on small inputs; `--slices 10000 --timing-only 2` measures the per-slice steady state)"
    )
    print(f"peak RSS: pipeline {pipe_mem['peak_rss_mb']:.0f} MB vs bare loop {bare['peak_rss_mb']:.0f} MB (input {total / 1e6:.0f} MB)")
    print(
        f"  with its worker processes (summed, sampled every 50 ms in separate, untimed runs): {pipe_mem['tree_peak_mb']:.0f} MB "
        f"for {pipe_mem['samples']} slices, {small['tree_peak_mb']:.0f} MB for {small['samples']}; one process (--workers 1): "
        f"{single_mem['tree_peak_mb']:.0f} MB"
    )
    print(
        f"memory growth over the libraries' {imports['peak_rss_mb']:.0f} MB: "
        f"{pipe_mem['peak_rss_mb'] - imports['peak_rss_mb']:.0f} MB for {pipe_mem['samples']} slices (10x the shard size), "
        f"{small['peak_rss_mb'] - imports['peak_rss_mb']:.0f} MB for {small['samples']} slices: bounded by the shard, not the input"
    )


if __name__ == "__main__":
    main()
