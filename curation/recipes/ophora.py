"""Ophora: narrated surgical videos → ~5.5 s clips (H.264) with instructions.

A video with a same-named ``.srt``/``.vtt`` narration, or a phase table (Cataract-1K
style CSV: phase name with start/end seconds or frames), is cut into clips aligned to
the narration: each cue yields windows of ``clip_seconds`` starting at the cue's start
(at most ``max_clips_per_cue`` per cue). Clips are filtered: too short (the video ends
first), black, or static (no motion); a video without narration is rejected whole. The
instruction text comes from the narration through the captioner (the surgery template
when no LLM is configured); the narration is scrubbed of identifiers first.
"""

from __future__ import annotations

import io
import json
import math
from fractions import Fraction
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from converters.base import ConversionError
from converters.rows import build_row
from curation.recipes.common import (
    VIDEO_EXTENSIONS,
    Family,
    FamilyContext,
    Produced,
    ResolvedSource,
    payload_of,
    register_family,
    work_item,
)
from curation.recipes.model import Recipe
from curation.recipes.readers import (
    Segment,
    csv_header,
    find_files,
    parse_subtitles,
    read_table,
    segments_from_rows,
)
from curation.stages import Reject

PROMPTS = (
    "What is the surgeon doing in this clip?",
    "Describe the surgical step shown in this video.",
    "Give the instruction that this step of the operation follows.",
    "Which action is performed in this surgical video clip?",
)


class OphoraOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    clip_seconds: float = Field(default=5.5, gt=0.5, le=120)
    min_clip_seconds: float = Field(default=2.0, gt=0)
    max_clips_per_cue: int = Field(default=4, ge=1)
    max_side: int = Field(default=448, ge=32)  # frames are downscaled to this longest side (even sizes)
    black_threshold: float = Field(default=12.0, ge=0)  # mean grey below this: a black clip
    static_threshold: float = Field(default=0.8, ge=0)  # mean |frame difference| below this: a static clip
    crf: int = Field(default=23, ge=0, le=51)  # H.264 quality (libx264 CRF)
    preset: str = "veryfast"


def transcript_for(video: Path) -> Path | None:
    for suffix in (".srt", ".vtt", ".SRT", ".VTT"):
        candidate = video.with_suffix(suffix)
        if candidate.exists():
            return candidate
    return None


def phase_table_for(video: Path, tables: list[Path]) -> Path | None:
    stem = video.stem.lower()
    for table in tables:
        name = table.stem.lower()
        if name == stem or name.startswith(stem + "_") or name.startswith(stem + "-"):
            return table
    return None


def scrubbed(text: str) -> str:
    """Narration with identifiers (names, dates, ids) replaced: free text never leaves as is."""
    from converters.deid import scrub_text

    return scrub_text(text)


class Ophora(Family):
    name = "ophora"
    caption_family = "ophora"
    layouts: ClassVar[dict[str, str]] = {
        "narrated_videos": "<name>.mp4 (or .avi/.mov/.mkv) + <name>.srt or <name>.vtt narration",
        "phase_csv": "<case>.mp4 + <case>_phases.csv / <case>.csv (phase, start/end seconds or frames; Cataract-1K)",
    }
    options_model = OphoraOptions
    curriculum: ClassVar[dict[str, int]] = {"video_instruction": 2}
    partition_items = 4

    def detect(self, path: Path, nested: bool) -> str | None:
        videos = [p for p in path.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS] if path.is_dir() else []
        if not videos:
            videos = find_files(path, VIDEO_EXTENSIONS, max_depth=3) if not nested else []
            if not videos:
                return None
        if any(transcript_for(v) for v in videos):
            return "narrated_videos"
        tables = find_files(path, (".csv",), max_depth=3)
        if any(phase_table_for(v, tables) for v in videos):
            return "phase_csv"
        return None

    def items(self, source: ResolvedSource, recipe: Recipe) -> tuple[list[dict[str, Any]], list[Reject]]:
        root = Path(source.path)
        tables = find_files(root, (".csv",), max_depth=3)
        items, rejects = [], []
        for video in find_files(root, VIDEO_EXTENSIONS, max_depth=3):
            key = f"{source.name}/{video.relative_to(root).as_posix()}"
            transcript = transcript_for(video)
            table = phase_table_for(video, tables) if transcript is None else None
            try:
                if transcript is not None:
                    segments = parse_subtitles(transcript.read_text(encoding="utf-8", errors="replace"), str(transcript))
                    payload: dict[str, Any] = {"transcript": transcript.name, "kind": "narration"}
                elif table is not None and csv_header(table):
                    header, rows = read_table(table)
                    payload = {"transcript": table.name, "kind": "phases", "header": header, "rows": rows}
                    segments = []  # phase rows may be in frames: resolved with the fps on the worker
                else:
                    rejects.append(Reject(key, self.name, "no_narration", f"{key}: no {video.stem}.srt/.vtt or phase table"))
                    continue
            except ConversionError as err:
                rejects.append(Reject(key, self.name, err.reason, err.detail))
                continue
            if transcript is not None and not segments:
                rejects.append(Reject(key, self.name, "no_narration", f"{key}: {transcript.name} holds no cue with text"))
                continue
            payload["segments"] = [[s.start, s.end, s.text] for s in segments]
            extra = [str(transcript or table)]
            items.append(work_item(source, video, kind="video", payload=payload, label_uris=extra))
        return items, rejects

    def rows(self, item: dict[str, Any], ctx: FamilyContext) -> list[Produced | Reject]:
        import av

        opts: OphoraOptions = ctx.options
        payload = payload_of(item)
        try:
            container = av.open(item["uri"])
        except (av.error.FFmpegError, OSError) as exc:
            raise ConversionError("unreadable", f"{item['key']}: PyAV cannot open the video ({exc})") from exc
        with container:
            if not container.streams.video:
                raise ConversionError("unsupported_format", f"{item['key']}: no video stream")
            stream = container.streams.video[0]
            fps = float(stream.average_rate or stream.guessed_rate or 0)
            if fps <= 0:
                raise ConversionError("bad_header", f"{item['key']}: the video stream has no frame rate")
            duration = _duration(container, stream)
            segments = [Segment(*s) for s in payload.get("segments") or []]
            if payload.get("kind") == "phases":
                segments = segments_from_rows(payload["rows"], payload["header"], fps, payload["transcript"])
            out: list[Produced | Reject] = []
            for segment in segments:
                out.extend(self._segment_clips(container, stream, fps, duration, segment, item, ctx, opts))
        if not any(isinstance(o, Produced) for o in out):
            reasons = sorted({o.reason for o in out if isinstance(o, Reject)}) or ["no_narration"]
            raise ConversionError(reasons[0], f"{item['key']}: no clip passed the filters ({', '.join(reasons)})")
        return out

    def _segment_clips(
        self, container: Any, stream: Any, fps: float, duration: float, segment: Segment,
        item: dict[str, Any], ctx: FamilyContext, opts: OphoraOptions,
    ) -> list[Produced | Reject]:
        out: list[Produced | Reject] = []
        for index in range(opts.max_clips_per_cue):
            start = segment.start + index * opts.clip_seconds
            if index and start + opts.min_clip_seconds > segment.end:
                break
            end = min(start + opts.clip_seconds, duration)
            clip_key = f"{item['key']}#t={start:.2f}-{start + opts.clip_seconds:.2f}"
            if end - start < opts.min_clip_seconds:
                out.append(Reject(clip_key, self.name, "too_short", f"{clip_key}: the video ends at {duration:.2f}s, "
                                  f"leaving {max(0.0, end - start):.2f}s < {opts.min_clip_seconds:g}s"))
                break
            frames = _decode(container, stream, start, end, opts.max_side)
            if len(frames) < 2:
                out.append(Reject(clip_key, self.name, "too_short", f"{clip_key}: {len(frames)} frame(s) decoded"))
                continue
            grey = np.stack([f.mean(axis=2) for f in frames])
            if grey.mean() < opts.black_threshold:
                out.append(Reject(clip_key, self.name, "black_clip", f"{clip_key}: mean grey {grey.mean():.1f} < {opts.black_threshold:g}"))
                continue
            motion = float(np.abs(np.diff(grey, axis=0)).mean())
            if motion < opts.static_threshold:
                out.append(Reject(clip_key, self.name, "static_clip", f"{clip_key}: mean frame difference {motion:.2f} < {opts.static_threshold:g}"))
                continue
            out.append(self._clip_row(frames, fps, start, end, segment, item, clip_key, ctx, opts, motion))
        return out

    def _clip_row(
        self, frames: list[np.ndarray], fps: float, start: float, end: float, segment: Segment,
        item: dict[str, Any], clip_key: str, ctx: FamilyContext, opts: OphoraOptions, motion: float,
    ) -> Produced:
        data = encode_h264(frames, fps, opts.crf, opts.preset)
        height, width = frames[0].shape[:2]
        text = scrubbed(segment.text)
        payload = payload_of(item)
        facts: dict[str, Any] = {"modality": "SURG", "narration": text}
        if payload.get("kind") == "phases":
            facts["phase"] = text
        else:
            facts["action"] = text
        prompt = ctx.rng(clip_key, "prompt").choice(PROMPTS)
        row = build_row(
            ctx.convert_options(item["source"], "SURG"),
            key=clip_key,
            sha256=item["sha256"],
            modality="SURG",
            subject_id=Path(item["uri"]).stem,
            images=[],
            steps=[
                {"step": "video.clip", "params": {"start_s": start, "end_s": end, "fps": fps, "cue": [segment.start, segment.end]}},
                {"step": "video.filter", "params": {"motion": round(motion, 3), **opts.model_dump()}},
                {"step": "h264.encode", "params": {"crf": opts.crf, "preset": opts.preset, "size": [width, height]}},
            ],
            task="video_instruction",
            video={
                "data": data, "format": "mp4", "fps": fps, "num_frames": len(frames),
                "width": width, "height": height, "start_s": start, "end_s": end,
            },
            labels=[text],
            conversations=[{"from": "human", "value": f"<video>\n{prompt}"}, {"from": "gpt", "value": "{caption}"}],
        )
        row["images"] = None
        return Produced(row, facts)


def _duration(container: Any, stream: Any) -> float:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1_000_000
    raise ConversionError("bad_header", "the video has no duration")


def _even_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    scale = min(1.0, max_side / max(width, height))
    return max(2, int(width * scale) // 2 * 2), max(2, int(height * scale) // 2 * 2)


def _decode(container: Any, stream: Any, start: float, end: float, max_side: int) -> list[np.ndarray]:
    """RGB frames with presentation time in [start, end), downscaled to even sizes."""
    base = stream.time_base
    container.seek(max(0, int(math.floor(start / base))) if start > 0 else 0, stream=stream, backward=True, any_frame=False)
    frames = []
    for frame in container.decode(stream):
        if frame.pts is None:
            continue
        t = float(frame.pts * base)
        if t < start - 1e-6:
            continue
        if t >= end - 1e-6:
            break
        width, height = _even_size(frame.width, frame.height, max_side)
        frames.append(frame.to_ndarray(format="rgb24", width=width, height=height))
    return frames


def encode_h264(frames: list[np.ndarray], fps: float, crf: int = 23, preset: str = "veryfast") -> bytes:
    """Frames → an H.264 (yuv420p) MP4 in memory at ``fps``."""
    import av

    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(crf), "preset": preset}
        for array in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(array), format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buffer.getvalue()


def clip_summary(video: dict[str, Any]) -> str:
    return json.dumps({k: v for k, v in video.items() if k != "data"}, sort_keys=True)


register_family(Ophora())
