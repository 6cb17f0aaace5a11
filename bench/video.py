"""Clip extraction throughput and peak memory against PyAV decoding alone.

Writes a synthetic surgical-like video with PyAV (320x240 @ 25 fps, a new "scene" every
~20 s, moving content so nothing is frozen), then runs, each in its own subprocess so
peak RSS (``ru_maxrss``) is that of the measured work only:

* ``decode``: PyAV decode of every frame (the baseline: the least any cutter must do);
* ``ranges``: :func:`converters.video.cut_clips` with one 5.5 s range every 10 s (an
  Ophora-like narration), re-encoded to H.264 at 10 fps, 224x168;
* ``shots``: :func:`converters.video.cut_shots` (shot detection + clips ≤ 10 s, same encode).

Throughput is seconds of video per second of wall time; the ratio is against ``decode``
measured in the same run. Memory is checked for independence from video length by
running the same cutters on a video a fifth as long.

    .venv/bin/python bench/video.py            # 10-minute video (about a minute of work)
    .venv/bin/python bench/video.py --minutes 2
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
WIDTH, HEIGHT, FPS = 320, 240, 25
SCENE_S = 20.0


def write_video(path: Path, seconds: float) -> None:
    import av
    import numpy as np

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.options = {"preset": "ultrafast", "crf": "28"}
        colour = rng.integers(40, 220, 3)
        for index in range(int(seconds * FPS)):
            t = index / FPS
            if index and index % int(SCENE_S * FPS) == 0:
                colour = rng.integers(40, 220, 3)  # a cut: new scene colour
            cx = WIDTH / 2 + WIDTH / 3 * np.sin(t * 0.9)
            cy = HEIGHT / 2 + HEIGHT / 3 * np.cos(t * 0.7)
            disc = ((xx - cx) ** 2 + (yy - cy) ** 2) < 30**2  # an "instrument" moving over the field
            img = np.empty((HEIGHT, WIDTH, 3), np.uint8)
            img[:] = colour
            img[disc] = 255 - colour
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = index
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def work(mode: str, path: str) -> dict[str, Any]:
    """One measured run (in a subprocess); returns seconds, clips and peak RSS (MiB)."""
    sys.path.insert(0, str(ROOT))
    from collections import Counter

    from converters.video import ClipResult, cut_clips, cut_shots, iter_frames, probe

    info = probe(path)
    started = time.perf_counter()
    clips = frames = 0
    dropped: Counter[str] = Counter()
    if mode == "decode":
        for _t, frame in iter_frames(path):
            frames += 1
            del frame
    elif mode == "ranges":
        ranges = [(s, s + 5.5, f"step {i}") for i, s in enumerate(range(0, int(info.duration_s) - 6, 10))]
        for result in cut_clips(path, ranges, fps=10, size=(224, 168), min_s=1.0):
            clips += isinstance(result, ClipResult)
            if not isinstance(result, ClipResult):
                dropped[result.reason] += 1
    elif mode == "shots":
        for result in cut_shots(path, fps=10, size=(224, 168), max_s=10.0):
            clips += isinstance(result, ClipResult)
            if not isinstance(result, ClipResult):
                dropped[result.reason] += 1
    seconds = time.perf_counter() - started
    rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"seconds": seconds, "clips": clips, "frames": frames, "video_s": info.duration_s, "peak_rss_mib": rss_mib,
            "dropped": dict(dropped)}


def measure(mode: str, path: Path) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, "--worker", mode, str(path)], check=True, capture_output=True, text=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--worker", nargs=2, metavar=("MODE", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(work(*args.worker)))
        return
    with tempfile.TemporaryDirectory(prefix="medcurate-bench-video-") as tmp:
        results: dict[float, dict[str, dict[str, Any]]] = {}
        for minutes in (args.minutes, args.minutes / 5):
            path = Path(tmp) / f"video_{minutes:g}min.mp4"
            started = time.perf_counter()
            write_video(path, minutes * 60)
            print(f"wrote {path.name}: {minutes:g} min {WIDTH}x{HEIGHT}@{FPS} in {time.perf_counter() - started:.1f}s, "
                  f"{os.path.getsize(path) / 1e6:.1f} MB")
            results[minutes] = {mode: measure(mode, path) for mode in ("decode", "ranges", "shots")}
        print(f"\nmachine: {os.cpu_count()} CPU cores, no GPU; python {sys.version.split()[0]}")
        print(f"{'video':>7} {'mode':>7} {'wall s':>8} {'video s/s':>10} {'vs decode':>10} {'clips':>6} {'peak RSS MiB':>13}")
        for minutes, by_mode in results.items():
            base = by_mode["decode"]["video_s"] / by_mode["decode"]["seconds"]
            for mode, r in by_mode.items():
                speed = r["video_s"] / r["seconds"]
                print(f"{minutes:>5g}min {mode:>7} {r['seconds']:>8.1f} {speed:>10.1f} {speed / base:>9.2f}x "
                      f"{int(r['clips']):>6} {r['peak_rss_mib']:>13.0f}  {r['dropped'] or ''}")
        long, short = results[args.minutes], results[args.minutes / 5]
        for mode in ("ranges", "shots"):
            growth = long[mode]["peak_rss_mib"] / short[mode]["peak_rss_mib"]
            print(f"peak memory {mode}: {args.minutes:g} min / {args.minutes / 5:g} min video = {growth:.2f}x "
                  "(1.0 = independent of length)")


if __name__ == "__main__":
    main()
