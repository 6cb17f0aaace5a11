"""A video file found by discovery → one sample per clip cut at shot boundaries.

This is what ``medcurate convert`` does with an MP4/AVI/MOV/MKV: clips at detected shot
boundaries, at most ``ConvertOptions.video_clip_s`` long, re-encoded to H.264. Recipes
that have timed text (Ophora narration) call :func:`converters.video.cut_clips` with
their ranges instead. Dropped clips (black, frozen, too short) produce no sample; a
video with no usable clip at all is a reject naming the reasons and their counts.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from converters.base import ConversionError, ConvertOptions
from converters.rows import build_row, subject_from_key
from converters.video import ClipPolicy, ClipResult, cut_shots


def convert_video_item(item: dict[str, Any], opts: ConvertOptions) -> list[dict[str, Any]]:
    policy = ClipPolicy(fps=opts.video_fps, size=opts.video_size, max_s=opts.video_clip_s)
    modality = opts.modality or "OTHER"
    subject = subject_from_key(item["key"], opts)
    rows: list[dict[str, Any]] = []
    dropped: Counter[str] = Counter()
    for result in cut_shots(item["uri"], policy):
        if not isinstance(result, ClipResult):
            dropped[result.reason] += 1
            continue
        steps = [
            {"step": "video.cut_shots", "params": {"max_s": policy.max_s, "start_s": result.start_s, "end_s": result.end_s}},
            {"step": "video.encode", "params": {"codec": "libx264", "crf": policy.crf, "fps": result.fps,
                                                "size": [result.width, result.height]}},
        ]
        rows.append(
            build_row(
                opts,
                key=f"{item['key']}#t={result.start_s:.3f}-{result.end_s:.3f}",
                sha256=item["sha256"],
                modality=modality,
                subject_id=subject,
                images=[],
                video=result.video_record(),
                steps=steps,
            )
        )
    if not rows:
        reasons = ", ".join(f"{n} {r}" for r, n in sorted(dropped.items())) or "no frames"
        raise ConversionError("no_usable_clip", f"{item['key']}: every clip was dropped ({reasons})")
    return rows
