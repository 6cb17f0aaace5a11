"""Small readers the families need that converters/ does not offer yet.

Label tables (CSV with a header, columns matched by name, case and spaces ignored),
image indexes by file stem, and narration transcripts (SRT / WebVTT). They are kept
minimal and local to the recipes until the converters' long tail lands; see the
report of issue 6 for the consolidation note.
"""

from __future__ import annotations

import csv
import dataclasses
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from converters.base import ConversionError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


def norm_column(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "", name.lower())


def read_table(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """Header (as written) and rows of a CSV; cells are stripped strings."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            header = [h.strip() for h in reader.fieldnames or []]
            rows = [{(k or "").strip(): (v or "").strip() for k, v in row.items()} for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ConversionError("bad_table", f"{path}: cannot read the CSV ({exc})") from exc
    return header, rows


def csv_header(path: Path) -> list[str]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            first = next(csv.reader(fh), [])
    except (OSError, UnicodeDecodeError, csv.Error):
        return []
    return [h.strip() for h in first]


def find_column(header: Sequence[str], *candidates: str) -> str | None:
    """The header name matching one of ``candidates`` (normalised), in candidate order."""
    normalised = {norm_column(h): h for h in header}
    for candidate in candidates:
        if norm_column(candidate) in normalised:
            return normalised[norm_column(candidate)]
    return None


def find_files(root: Path, suffixes: Sequence[str], max_depth: int = 6) -> list[Path]:
    out = []
    for path in sorted(root.rglob("*")):
        parts = path.relative_to(root).parts
        hidden = any(part.startswith(".") for part in parts)
        if path.is_file() and path.suffix.lower() in suffixes and len(parts) <= max_depth and not hidden:
            out.append(path)
    return out


def image_index(root: Path) -> dict[str, Path]:
    """Images under ``root`` by stem and by relative path (first in path order wins)."""
    index: dict[str, Path] = {}
    for path in find_files(root, IMAGE_SUFFIXES):
        index.setdefault(path.stem, path)
        index.setdefault(path.name, path)
        index.setdefault(path.relative_to(root).as_posix(), path)
    return index


def lookup_image(index: dict[str, Path], name: str) -> Path | None:
    name = name.strip().replace("\\", "/")
    for key in (name, name.split("/")[-1], Path(name).stem):
        if key in index:
            return index[key]
    for suffix in IMAGE_SUFFIXES:  # APTOS/EyePACS tables name images without extension
        if name + suffix in index:
            return index[name + suffix]
    return None


# -- transcripts -------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Segment:
    """One narration cue or annotated phase: [start, end) seconds and its text."""

    start: float
    end: float
    text: str


_TIME = re.compile(r"(?:(\d+):)?(\d{1,2}):(\d{2})[.,](\d{1,3})")


def parse_timestamp(text: str) -> float:
    match = _TIME.fullmatch(text.strip())
    if not match:
        raise ValueError(f"not a timestamp: {text!r} (expected HH:MM:SS,mmm or MM:SS.mmm)")
    hours, minutes, seconds, millis = match.groups()
    return int(hours or 0) * 3600 + int(minutes) * 60 + int(seconds) + int(millis.ljust(3, "0")) / 1000.0


def parse_subtitles(text: str, origin: str) -> list[Segment]:
    """Cues of an SRT or WebVTT transcript (cue ids, styling lines and notes skipped)."""
    segments: list[Segment] = []
    blocks = re.split(r"\r?\n\s*\r?\n", text.replace("\ufeff", "").strip())
    for block in blocks:
        lines = [line.strip() for line in block.splitlines() if line.strip()]
        timing = next((i for i, line in enumerate(lines) if "-->" in line), None)
        if timing is None:
            continue  # WEBVTT header, NOTE, STYLE blocks
        left, _, right = lines[timing].partition("-->")
        try:
            start = parse_timestamp(left)
            end = parse_timestamp(right.split()[0])
        except (ValueError, IndexError) as exc:
            raise ConversionError("bad_transcript", f"{origin}: cue {lines[timing]!r}: {exc}") from exc
        words = " ".join(re.sub(r"<[^>]+>", "", line) for line in lines[timing + 1 :]).strip()
        if end <= start:
            raise ConversionError("bad_transcript", f"{origin}: cue {lines[timing]!r} ends before it starts")
        if words:
            segments.append(Segment(start, end, words))
    return segments


def segments_from_rows(rows: Iterable[dict[str, str]], header: Sequence[str], fps: float | None, origin: str) -> list[Segment]:
    """Phase annotations (Cataract-1K style: phase name, start/end in seconds or frames)."""
    text_col = find_column(header, "comment", "phase", "label", "name", "step")
    start_s = find_column(header, "sec", "start", "start_s", "start_sec", "startSec", "sec_start")
    end_s = find_column(header, "endSec", "end", "end_s", "end_sec", "sec_end")
    start_f = find_column(header, "frame", "start_frame", "startFrame", "frame_start")
    end_f = find_column(header, "endFrame", "end_frame", "frame_end")
    if text_col is None or not ((start_s and end_s) or (start_f and end_f)):
        raise ConversionError(
            "bad_table",
            f"{origin}: a phase table needs a phase column (comment/phase/label) and start/end columns "
            f"in seconds (sec/endSec, start/end) or frames (frame/endFrame); got {list(header)}",
        )
    out = []
    for number, row in enumerate(rows, start=2):
        try:
            if start_s and end_s and row.get(start_s) and row.get(end_s):
                start, end = float(row[start_s]), float(row[end_s])
            else:
                if not fps:
                    raise ValueError("frame numbers need the video's frame rate")
                start, end = float(row[start_f or ""]) / fps, float(row[end_f or ""]) / fps
        except (ValueError, KeyError) as exc:
            raise ConversionError("bad_table", f"{origin}: line {number}: {exc}") from exc
        if row.get(text_col) and end > start:
            out.append(Segment(start, end, row[text_col].replace("_", " ")))
    return out
