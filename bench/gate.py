"""Gate cost: validation time as a fraction of build time (goal <= 10%).

Until the demo build exists this measures against the time to *produce* the shards the
gate validates, from the real files in tests/data: read DICOM slices and label maps,
window to PNG, cut per-label masks with boxes and clicks; read radiographs and the
fundus photograph, resize and encode; degrade at three severities with measured PSNR;
encode H.264 clips; write zstd Parquet shards. Then it runs ``gate_build`` on those
shards (metrics + GX suites + build-level checks + Data Docs) and prints the ratio.

    .venv/bin/python bench/gate.py [--rows-per-family 240] [--shard-rows 120] [--video-rows 24]
    .venv/bin/python bench/gate.py --demo [--runs 3] [--baseline-tree DIR]   # gate and card on the demo build

Both timings come from this one run on this machine; GX's one-off import (seconds) is
reported apart because a long-lived build process pays it once.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import io
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ["GX_ANALYTICS_ENABLED"] = "false"

from curation.schema import samples_to_table  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / "tests" / "data"
BANDS = {"gaussian_noise": {1: [{"metric": "psnr_db", "low": 30.0, "high": 50.0}],
                            2: [{"metric": "psnr_db", "low": 24.0, "high": 30.0}],
                            3: [{"metric": "psnr_db", "low": 12.0, "high": 24.0}]}}
SIGMA = {1: 4.0, 2: 11.0, 3: 26.0}
VERDICT = {1: "good", 2: "usable", 3: "reject"}


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def image(array: np.ndarray, role: str = "input") -> dict[str, Any]:
    return {"role": role, "data": png(array), "format": "png", "width": array.shape[1], "height": array.shape[0],
            "channels": 1 if array.ndim == 2 else array.shape[2], "bit_depth": 8}


def base(dataset: str, uri: str, modality: str, task: str, index: int) -> dict[str, Any]:
    return {
        "sample_id": hashlib.sha256(f"{dataset}|{uri}|{task}|{index}".encode()).hexdigest()[:32],
        "dataset": dataset, "source": "bench", "source_uri": uri,
        "source_sha256": hashlib.sha256(uri.encode()).hexdigest(), "modality": modality, "task": task,
        "split": ("train", "val", "test")[index % 3], "subject_key": f"subject-{dataset}-{index}",
        "provenance": {"pipeline_version": "bench", "steps_json": json.dumps([{"name": "bench"}]),
                       "run_id": "bench", "created_at": dt.datetime.now(dt.UTC)},
    }


def imed(count: int) -> list[dict[str, Any]]:
    import pydicom
    import SimpleITK as sitk

    rows = []
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(DATA / "ct_3slice_seg" / "liver_spine_seg.nrrd")))
    files = sorted((DATA / "ct_3slice_seg").glob("*.dcm"))
    for i in range(count):
        z = i % len(files)
        ds = pydicom.dcmread(files[z])
        hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        centre, width = (40, 400) if i % 2 == 0 else (50, 350 + i % 7)
        windowed = np.clip((hu - centre + width / 2) / width * 255, 0, 255).astype(np.uint8)
        slice_labels = labels[len(files) - 1 - z] if i % 2 else labels[z]
        masks = []
        for value, name in ((1, "liver"), (2, "spine")):
            mask = slice_labels == value
            ys, xs = np.nonzero(mask)
            if xs.size == 0:
                continue
            near = int(np.argmin((ys - ys.mean()) ** 2 + (xs - xs.mean()) ** 2))
            box = [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]
            masks.append({"label": name, "category": name, "data": png(mask.astype(np.uint8) * 255),
                          "area_px": int(mask.sum()), "bbox_xyxy": box,
                          "clicks_xy": [[int(xs[near]), int(ys[near])]], "box_prompt_xyxy": box})
        row = base("imed", f"{files[z]}#{i}", "CT", "interactive_seg", i)
        row.update(images=[image(windowed)], masks=masks, labels=[m["category"] for m in masks])
        rows.append(row)
    return rows


def xr_image(i: int) -> np.ndarray:
    files = sorted((DATA / "chest_xray_nih").glob("*.png"))
    with Image.open(files[i % len(files)]) as img:
        side = 512 - 8 * (i % 16)
        return np.asarray(img.convert("L").resize((side, side), Image.Resampling.BILINEAR))


def unimed(count: int) -> list[dict[str, Any]]:
    rows = []
    for i in range(count):
        row = base("unimed", f"xr-{i}", "XR", "vqa", i)
        row.update(images=[image(xr_image(i))], curriculum_stage=2, conversations=[
            {"from": "human", "value": "<image>\nDescribe the findings."},
            {"from": "gpt", "value": "The lungs are clear; no consolidation or effusion is seen."}])
        rows.append(row)
    return rows


def retinalogos(count: int) -> list[dict[str, Any]]:
    from skimage import data

    rows = []
    for i in range(count):
        side = 448 - 8 * (i % 12)
        fundus = np.asarray(Image.fromarray(data.retina()).resize((side, side), Image.Resampling.BILINEAR))
        row = base("retinalogos", f"retina-{i}", "CFP", "caption", i)
        row.update(images=[image(fundus)], caption="The optic disc is well defined; vessels are normal.")
        row["provenance"]["steps_json"] = json.dumps([{"name": "caption", "grounding": {"ok": True}}])
        rows.append(row)
    return rows


def ophora(count: int) -> list[dict[str, Any]]:
    import av

    rows = []
    source = xr_image(0)
    for i in range(count):
        buffer = io.BytesIO()
        with av.open(buffer, mode="w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=25)
            stream.width = stream.height = 160
            stream.pix_fmt = "yuv420p"
            stream.options = {"preset": "veryfast"}
            for f in range(137):
                x = (f * 2 + i * 5) % (source.shape[1] - 160)
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(source[176:336, x:x + 160]), format="gray")
                for packet in stream.encode(frame):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        row = base("ophora", f"clip-{i}", "SURG", "video_instruction", i)
        row.update(video={"data": buffer.getvalue(), "format": "mp4", "fps": 25.0, "num_frames": 137,
                          "width": 160, "height": 160, "start_s": 0.0, "end_s": 5.48},
                   conversations=[{"from": "human", "value": "<video>\nWhat happens?"},
                                  {"from": "gpt", "value": "The instrument sweeps across the field."}])
        rows.append(row)
    return rows


def medq(count: int) -> list[dict[str, Any]]:
    rows = []
    for i in range(count):
        clean = xr_image(i // 3)[::2, ::2].copy()
        severity = 1 + i % 3
        rng = np.random.default_rng(i)
        degraded = np.clip(clean + rng.normal(0, SIGMA[severity], clean.shape), 0, 255).astype(np.uint8)
        psnr = 10 * np.log10(255.0**2 / np.mean((degraded.astype(float) - clean) ** 2))
        row = base("medq_uni", f"xr-{i // 3}", "XR", "quality_assessment", i)
        row["split"] = ("train", "val", "test")[(i // 3) % 3]
        row["subject_key"] = f"subject-medq-{i // 3}"
        row.update(images=[image(clean, "clean"), image(degraded, "degraded")],
                   degradation={"type": "gaussian_noise", "severity": severity, "params_json": "{}",
                                "psnr_db": float(psnr), "ssim": None},
                   quality={"verdict": VERDICT[severity],
                            "description": f"Noise. Overall, the quality of this image is {VERDICT[severity]}."})
        rows.append(row)
    return rows


BUILDERS = {"imed": imed, "unimed": unimed, "retinalogos": retinalogos, "ophora": ophora, "medq_uni": medq}


def demo_once(label: str, baseline_tree: str | None = None) -> tuple[float, float, float, float, float]:
    """One ``medcurate demo`` in a fresh workdir; print each build's row from its
    ``summary.json`` and return (build s, gate s, build s and gate s after the first
    build, card s).

    ``baseline_tree``: a folder holding another copy of ``quality_checks`` (e.g. the
    previous commit's), put first on ``PYTHONPATH`` so the demo runs with it.
    """
    import json
    import subprocess

    work = Path(tempfile.mkdtemp(prefix="bench-gate-demo-"))
    env = dict(os.environ, GX_ANALYTICS_ENABLED="false")
    if baseline_tree:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (baseline_tree, env.get("PYTHONPATH")) if p)
    try:
        medcurate = Path(sys.executable).parent / "medcurate"
        subprocess.run([str(medcurate), "--workdir", str(work), "demo"], check=True, capture_output=True, env=env)
        load = os.getloadavg()
        print(f"{label} (load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f})")
        print(f"{'dataset':<14} {'samples':>8} {'build s':>8} {'gate s':>7} {'gate share':>10} {'card s':>7} {'card share':>10}")
        total_build = total_gate = later_gate = later_build = total_card = total_docs = 0.0
        summaries = [json.loads(p.read_text()) for p in sorted(work.glob("runs/*/summary.json"), key=lambda p: p.parent.name)]
        for index, summary in enumerate(summaries):
            phases = summary.get("phases", {})
            gate, card, seconds = float(phases.get("gate", 0.0)), float(phases.get("card", 0.0)), float(summary["seconds"])
            total_build, total_gate, total_card = total_build + seconds, total_gate + gate, total_card + card
            total_docs += float(summary.get("gate", {}).get("data_docs_seconds", 0.0))  # 0: a tree before session 14
            if index:  # the first build's gate also pays GX's one-off import
                later_gate, later_build = later_gate + gate, later_build + seconds
            print(
                f"{summary.get('dataset', '?'):<14} {summary['samples_written']:>8} {seconds:>8.2f} "
                f"{gate:>7.2f} {gate / seconds * 100:>9.1f}% {card:>7.2f} {card / seconds * 100:>9.1f}%"
            )
        print(
            f"{'all':<14} {'':>8} {total_build:>8.2f} {total_gate:>7.2f} {total_gate / total_build * 100:>9.1f}% "
            f"{total_card:>7.2f} {total_card / total_build * 100:>9.1f}%  (gate goal <= 10%)"
        )
        print(f"{'all but first':<14} {'':>8} {later_build:>8.2f} {later_gate:>7.2f} {later_gate / later_build * 100:>9.1f}%"
              "   (without GX's one-off import)")
        if total_docs:
            print(f"of the gate: Data Docs {total_docs:.2f} s ({total_docs / total_build * 100:.1f}% of build time); "
                  f"metrics and GX verdicts alone {(total_gate - total_docs) / total_build * 100:.1f}%")
        return total_build, total_gate, later_build, later_gate, total_card
    finally:
        shutil.rmtree(work, ignore_errors=True)


def on_demo_build(runs: int = 1, baseline_tree: str | None = None) -> None:
    """The gate's share of the real demo build (phases.gate vs seconds, both measured by
    the build), ``runs`` times in fresh workdirs (the machine is shared and noisy).

    The card is written after the build's ``seconds`` are taken (the version is already
    published), so it is reported beside the build, as its own share of build time.
    With ``baseline_tree`` every run is preceded by one with that copy of
    ``quality_checks``, and the medians are compared.
    """

    def median(values: list[float]) -> float:
        return sorted(values)[len(values) // 2]

    ours: list[tuple[float, float, float, float, float]] = []
    base: list[tuple[float, float, float, float, float]] = []
    for run in range(1, runs + 1):
        if baseline_tree:
            base.append(demo_once(f"baseline run {run}/{runs} ({baseline_tree})", baseline_tree))
        ours.append(demo_once(f"run {run}/{runs}"))
    for name, totals in (("baseline", base), ("this tree", ours)):
        if not totals:
            continue
        shares = [gate / build * 100 for build, gate, _, _, _ in totals]
        later = [gate / build * 100 for _, _, build, gate, _ in totals]
        cards = [card for *_, card in totals]
        print(f"{name}: gate share median {median(shares):.1f}% (runs: {', '.join(f'{s:.1f}%' for s in shares)}); "
              f"after the first build median {median(later):.1f}% (runs: {', '.join(f'{s:.1f}%' for s in later)}); "
              f"card s per demo median {median(cards):.2f} (runs: {', '.join(f'{c:.2f}' for c in cards)})")
    if base:
        print(f"this tree / baseline: gate s after the first build "
              f"{median([o[3] for o in ours]) / median([b[3] for b in base]):.2f}x, "
              f"card s {median([o[4] for o in ours]) / median([b[4] for b in base]):.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows-per-family", type=int, default=240)
    parser.add_argument("--shard-rows", type=int, default=120)
    parser.add_argument("--video-rows", type=int, default=24, help="clips for ophora (encoding is costly)")
    parser.add_argument("--demo", action="store_true", help="measure the gate's share of the real demo build")
    parser.add_argument("--runs", type=int, default=1, help="with --demo: repeat the whole demo this many times")
    parser.add_argument("--baseline-tree", help="with --demo: a folder with another copy of quality_checks/ to "
                        "run before each of ours (PYTHONPATH), e.g. the previous commit's")
    args = parser.parse_args()
    if args.demo:
        on_demo_build(args.runs, args.baseline_tree)
        return
    root = Path(tempfile.mkdtemp(prefix="bench-gate-"))
    try:
        started = time.perf_counter()
        import_started = time.perf_counter()
        from quality_checks.suites import import_gx

        import_gx()
        gx_import = time.perf_counter() - import_started
        from quality_checks.gate import gate_build
        from quality_checks.metrics import MetricsStage

        print(f"{'family':12s} {'rows':>5s} {'shards':>6s} {'produce s':>10s} {'gate s':>8s} {'gate/produce':>13s} "
              f"{'of which metrics s':>19s} passed")
        total_build = total_gate = 0.0
        total_rows = 0
        for family, builder in BUILDERS.items():
            count = args.video_rows if family == "ophora" else args.rows_per_family
            t0 = time.perf_counter()
            rows = builder(count)
            shards = []
            for offset in range(0, len(rows), args.shard_rows):
                path = root / "build" / family / f"{family}-{offset // args.shard_rows:04d}.parquet"
                path.parent.mkdir(parents=True, exist_ok=True)
                pq.write_table(samples_to_table(rows[offset:offset + args.shard_rows]), path, compression="zstd")
                shards.append(str(path))
            produce = time.perf_counter() - t0
            t1 = time.perf_counter()
            report = gate_build(shards, family=family, workdir=str(root / "work"), build_id=f"bench-{family}",
                                severity_bands=BANDS)
            gate = time.perf_counter() - t1
            t2 = time.perf_counter()  # the metrics share of the gate, measured again on its own
            for passed_shard in report.passed_shards:
                MetricsStage(severity_bands=BANDS).compute(pq.read_table(passed_shard))
            metrics = time.perf_counter() - t2
            total_build, total_gate, total_rows = total_build + produce, total_gate + gate, total_rows + len(rows)
            print(f"{family:12s} {len(rows):5d} {len(shards):6d} {produce:10.2f} {gate:8.2f} {gate / produce:13.1%} "
                  f"{metrics:19.2f} {report.passed} {report.failed_expectations[:2] if not report.passed else ''}")
        print(f"{'all':12s} {total_rows:5d} {'':6s} {total_build:10.2f} {total_gate:8.2f} {total_gate / total_build:13.1%}")
        print(f"GX import (once per process): {gx_import:.2f} s = {gx_import / total_build:.1%} of produce time; "
              f"with it: {(total_gate + gx_import) / total_build:.1%}")
        print(f"wall {time.perf_counter() - started:.1f} s; cpus {os.cpu_count()}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
