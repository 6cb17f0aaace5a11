"""Ophora: narrated surgical videos → ~5.5 s clips (H.264) with instructions.

A video with a same-named ``.srt``/``.vtt`` narration, or a phase table (Cataract-1K
style CSV: phase name with start/end seconds or frames), is cut into clips aligned to
the narration: each cue yields windows of ``clip_seconds`` starting at the cue's start
(at most ``max_clips_per_cue`` per cue). Clips are filtered: too short (the video ends
first), black, or static (no motion); a video without narration is rejected whole. The
instruction text comes from the narration through the captioner (the surgery template
when no LLM is configured); the narration is scrubbed of identifiers first.

Every time here (cues, windows, clip keys, the clips' ``start_s``/``end_s``, the video's
duration) is playback time, the clock of the transcript: pts × time_base minus the
video's start time (see :func:`converters.video.start_time`), so a cue at 00:00:02 is
cut from what a player shows at 2 s even in an MPEG-TS whose timestamps start at 1.4 s.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from converters.base import ConversionError
from converters.rows import build_row
from converters.text import Segment, parse_transcript
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
from curation.recipes.readers import csv_header, find_files, read_table, segments_from_rows
from curation.stages import Reject

if TYPE_CHECKING:
    from converters.video import ClipResult

PROMPTS = (
    "What is the surgeon doing in this clip?",
    "Describe the surgical step shown in this video.",
    "Give the instruction that this step of the operation follows.",
    "Which action is performed in this surgical video clip?",
)
#: converters.video's reject reasons → Ophora's (a clip the video ends in is too short; a frozen one is static)
CLIP_REASONS = {"out_of_range": "too_short", "frozen_clip": "static_clip"}


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
                    text = transcript.read_text(encoding="utf-8", errors="replace")
                    # no cue timing at all is "no narration" here, not a malformed transcript;
                    # the text is scrubbed when it becomes a row (phase names are not free text)
                    segments = parse_transcript(text, uri=str(transcript), scrub=False) if "-->" in text else []
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
            payload["segments"] = [[s.start_s, s.end_s, s.text] for s in segments]
            extra = [str(transcript or table)]
            items.append(work_item(source, video, kind="video", payload=payload, label_uris=extra))
        return items, rejects

    def rows(self, item: dict[str, Any], ctx: FamilyContext) -> list[Produced | Reject]:
        from converters.video import (  # PyAV: loaded on workers only
            ClipPolicy,
            ClipReject,
            cut_clips,
            probe,
        )

        opts: OphoraOptions = ctx.options
        payload = payload_of(item)
        info = probe(item["uri"])
        segments = [Segment(*s) for s in payload.get("segments") or []]
        if payload.get("kind") == "phases":
            segments = segments_from_rows(payload["rows"], payload["header"], info.fps, payload["transcript"])
        windows, early = self._windows(segments, info.duration_s, item["key"], opts)
        policy = ClipPolicy(
            size=_even_size(info.width, info.height, opts.max_side), min_s=opts.min_clip_seconds,
            black_luma=opts.black_threshold, frozen_diff=opts.static_threshold, crf=opts.crf, preset=opts.preset,
        )
        # one decoding pass for every window of the video; the window's index rides in ``text``
        ranges = [(start, end, str(index)) for index, (_, start, end, _) in enumerate(windows)]
        results = {int(r.text or 0): r for r in cut_clips(item["uri"], ranges, policy, info=info)}
        out: list[Produced | Reject] = []
        for index, (segment, _, _, clip_key) in enumerate(windows):
            out.extend(early.get(index, []))
            result = results[index]
            if isinstance(result, ClipReject):
                reason = CLIP_REASONS.get(result.reason, result.reason)
                out.append(Reject(clip_key, self.name, reason, f"{clip_key}: {result.detail}"))
            else:
                out.append(self._clip_row(result, segment, item, clip_key, ctx, opts, info.start_time_s))
        out.extend(early.get(len(windows), []))
        if not any(isinstance(o, Produced) for o in out):
            reasons = sorted({o.reason for o in out if isinstance(o, Reject)}) or ["no_narration"]
            raise ConversionError(reasons[0], f"{item['key']}: no clip passed the filters ({', '.join(reasons)})")
        return out

    def _windows(
        self, segments: list[Segment], duration: float, key: str, opts: OphoraOptions
    ) -> tuple[list[tuple[Segment, float, float, str]], dict[int, list[Reject]]]:
        """(segment, start, end, clip key) of the clips to cut: up to ``max_clips_per_cue``
        windows of ``clip_seconds`` from each cue's start; a window the video ends inside,
        leaving less than ``min_clip_seconds``, is a ``too_short`` reject (keyed by the
        number of windows before it, so rows keep the cue order)."""
        windows: list[tuple[Segment, float, float, str]] = []
        early: dict[int, list[Reject]] = {}
        for segment in segments:
            for index in range(opts.max_clips_per_cue):
                start = segment.start_s + index * opts.clip_seconds
                if index and start + opts.min_clip_seconds > segment.end_s:
                    break
                end = min(start + opts.clip_seconds, duration)
                clip_key = f"{key}#t={start:.2f}-{start + opts.clip_seconds:.2f}"
                if end - start < opts.min_clip_seconds:
                    early.setdefault(len(windows), []).append(Reject(
                        clip_key, self.name, "too_short", f"{clip_key}: the video ends at {duration:.2f}s, "
                        f"leaving {max(0.0, end - start):.2f}s < {opts.min_clip_seconds:g}s"))
                    break
                windows.append((segment, start, end, clip_key))
        return windows, early

    def _clip_row(
        self, clip: ClipResult, segment: Segment, item: dict[str, Any], clip_key: str, ctx: FamilyContext, opts: OphoraOptions,
        start_time_s: float,
    ) -> Produced:
        """The sample of one clip; ``start_time_s`` (the source's pts of playback time 0) is
        recorded so that the clip's playback-time span can be traced back to raw pts."""
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
                {"step": "video.clip", "params": {
                    "start_s": clip.start_s, "end_s": clip.end_s, "fps": clip.fps, "cue": [segment.start_s, segment.end_s],
                    "source_start_time_s": start_time_s,
                }},
                {"step": "video.filter", "params": opts.model_dump()},
                {"step": "h264.encode", "params": {"crf": opts.crf, "preset": opts.preset, "size": [clip.width, clip.height]}},
            ],
            task="video_instruction",
            video=clip.video_record(),
            labels=[text],
            conversations=[{"from": "human", "value": f"<video>\n{prompt}"}, {"from": "gpt", "value": "{caption}"}],
        )
        row["images"] = None
        return Produced(row, facts)


def _even_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    scale = min(1.0, max_side / max(width, height))
    return max(2, int(width * scale) // 2 * 2), max(2, int(height * scale) // 2 * 2)


def clip_summary(video: dict[str, Any]) -> str:
    return json.dumps({k: v for k, v in video.items() if k != "data"}, sort_keys=True)


register_family(Ophora())
