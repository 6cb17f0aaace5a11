"""Small readers the families need that converters/ does not offer yet.

Label tables (CSV with a header, columns matched by name, case and spaces ignored),
image indexes by file stem, and phase annotation tables. Transcripts (SRT / WebVTT),
VQA files and reports are read by :mod:`converters.text`; what stays here has no
converters counterpart (the recipes match columns by loose names over plain dict rows).
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from converters.base import ConversionError
from converters.text import Segment
from curation.recipes.common import IMAGE_EXTENSIONS

IMAGE_SUFFIXES = IMAGE_EXTENSIONS


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


# -- phase tables --------------------------------------------------------------------------
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
