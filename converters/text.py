"""Text and label sources: tables, question files, transcripts, free-text reports.

These are *library functions* the recipes call: they read one file (through fsspec),
validate it, and return plain records; bad input raises :class:`ConversionError` with
the file and the line/field that is wrong. Free text that may carry identifiers
(notes, answers, transcripts, reports) goes through :func:`converters.deid.scrub_text`
unless the caller says the column is a controlled label (``scrub=False`` or
``keep_columns``).
"""

from __future__ import annotations

import dataclasses
import io
import json
import re
from collections.abc import Iterable
from typing import Any

import polars as pl

from converters.base import ConversionError
from converters.deid import scrub_text
from converters.io import read_bytes


# ------------------------------------------------------------------ tables
def read_table(
    uri: str,
    *,
    separator: str | None = None,
    scrub_columns: Iterable[str] = (),
    required: Iterable[str] = (),
) -> pl.DataFrame:
    """A CSV/TSV label table as a polars DataFrame.

    The separator follows the extension (``.tsv``/``.tab`` → tab) unless given. Columns in
    ``scrub_columns`` (free-text notes) are scrubbed of identifiers; ``required`` columns
    must exist (a missing one is a ``bad_table`` error naming the columns found).
    """
    data = _read(uri)
    sep = separator or ("\t" if uri.lower().endswith((".tsv", ".tab", ".tsv.gz")) else ",")
    try:
        frame = pl.read_csv(io.BytesIO(data), separator=sep, infer_schema_length=10_000, try_parse_dates=False)
    except (pl.exceptions.PolarsError, UnicodeDecodeError, ValueError) as exc:
        raise ConversionError("bad_table", f"{uri}: cannot parse as a {'TSV' if sep == chr(9) else 'CSV'} table ({_short(exc)})") from exc
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise ConversionError("bad_table", f"{uri}: missing column(s) {missing}; found {frame.columns}")
    for column in scrub_columns:
        if column in frame.columns:
            frame = frame.with_columns(
                pl.col(column).cast(pl.String).map_elements(scrub_text, return_dtype=pl.String).alias(column)
            )
    return frame


# ------------------------------------------------------------------ VQA question files
@dataclasses.dataclass(frozen=True)
class VQARecord:
    """One question about one image (VQA-RAD, SLAKE, PathVQA, PMC-VQA all reduce to this)."""

    image: str
    question: str
    answer: str
    answer_type: str | None  # CLOSED / OPEN (VQA-RAD, SLAKE); None when the file has none
    question_type: str | None
    qid: str | None
    language: str | None
    modality: str | None = None  # as the file writes it (SLAKE: "CT", "MRI", "X-Ray"); None when absent


#: field aliases of the public question files (VQA-RAD, SLAKE, PathVQA)
_VQA_FIELDS: dict[str, tuple[str, ...]] = {
    "image": ("image_name", "img_name", "image", "image_path", "img_id"),
    "question": ("question", "question_text", "Question"),
    "answer": ("answer", "answer_text", "Answer"),
    "answer_type": ("answer_type", "answer_type_", "Answer_type"),
    "question_type": ("question_type", "content_type", "qtype"),
    "qid": ("qid", "question_id", "id"),
    "language": ("q_lang", "lang", "language"),
    "modality": ("modality", "image_modality"),
}


def read_records(uri: str) -> list[dict[str, Any]]:
    """A JSON array or JSONL file as a list of objects (one per question/annotation)."""
    data = _read(uri)
    text = _decode(data, uri)
    stripped = text.lstrip()
    if not stripped:
        raise ConversionError("empty_file", f"{uri}: no JSON content")
    if stripped[0] == "[" or uri.lower().endswith(".json") and stripped[0] == "{":
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            if stripped[0] == "{":
                return _read_jsonl(text, uri)
            raise ConversionError("bad_json", f"{uri}: invalid JSON at line {exc.lineno} col {exc.colno}: {exc.msg}") from exc
        if isinstance(value, dict):
            for key in ("data", "questions", "annotations", "items"):
                if isinstance(value.get(key), list):
                    value = value[key]
                    break
            else:
                value = [value]
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise ConversionError("bad_json", f"{uri}: expected a list of objects")
        return value
    return _read_jsonl(text, uri)


def _read_jsonl(text: str, uri: str) -> list[dict[str, Any]]:
    records = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConversionError("bad_json", f"{uri}: line {number} is not JSON ({exc.msg})") from exc
        if not isinstance(value, dict):
            raise ConversionError("bad_json", f"{uri}: line {number} is not an object")
        records.append(value)
    return records


def read_vqa(uri: str, *, language: str | None = None, scrub: bool = True, strict: bool = True) -> list[VQARecord]:
    """Questions of a VQA-RAD / SLAKE style file (JSON array or JSONL).

    ``language`` keeps only that language (SLAKE mixes ``en`` and ``zh``). Questions and
    answers are scrubbed of identifiers unless ``scrub=False``. A record without image,
    question or answer fails the whole file; with ``strict=False`` it is returned with
    those fields empty, so a caller can reject that one question and keep the rest.
    """
    out = []
    for index, record in enumerate(read_records(uri)):
        fields = {name: _first(record, aliases) for name, aliases in _VQA_FIELDS.items()}
        missing = [n for n in ("image", "question", "answer") if fields[n] in (None, "")]
        if missing and strict:
            raise ConversionError("bad_json", f"{uri}: record {index} lacks {missing} (keys: {sorted(record)})")
        if language and fields["language"] and str(fields["language"]) != language:
            continue
        question, answer = _text(fields["question"]).strip(), _text(fields["answer"]).strip()
        if scrub:
            question, answer = scrub_text(question), scrub_text(answer)
        out.append(
            VQARecord(
                image=_text(fields["image"]),
                question=question,
                answer=answer,
                answer_type=_opt(fields["answer_type"], upper=True),
                question_type=_opt(fields["question_type"]),
                qid=_opt(fields["qid"]),
                language=_opt(fields["language"]),
                modality=_opt(fields["modality"]),
            )
        )
    return out


# ------------------------------------------------------------------ transcripts
@dataclasses.dataclass(frozen=True)
class Segment:
    """A timed piece of narration (seconds from the start of the video)."""

    start_s: float
    end_s: float
    text: str


_TIMESTAMP = re.compile(r"(?:(\d+):)?(\d{1,2}):(\d{2})[.,](\d{1,3})")
_CUE_TIMING = re.compile(rf"({_TIMESTAMP.pattern})\s*-->\s*({_TIMESTAMP.pattern})")


def parse_timestamp(text: str) -> float:
    """``HH:MM:SS,mmm`` (SRT) or ``[HH:]MM:SS.mmm`` (WebVTT) → seconds."""
    match = _TIMESTAMP.fullmatch(text.strip())
    if not match:
        raise ValueError(f"not a timestamp: {text!r}")
    hours, minutes, seconds, millis = match.groups()
    return int(hours or 0) * 3600 + int(minutes) * 60 + int(seconds) + int(millis.ljust(3, "0")) / 1000.0


def parse_transcript(text: str, *, uri: str = "<text>", scrub: bool = True) -> list[Segment]:
    """Cues of an SRT or WebVTT transcript, in time order, markup removed.

    Cue settings (``align:start``), ``NOTE``/``STYLE`` blocks and voice/italic tags are
    dropped; a cue whose end precedes its start is an error naming its line.
    """
    lines = text.replace("\r\n", "\n").replace("\r", "\n").replace("\ufeff", "").split("\n")
    segments: list[Segment] = []
    index = 0
    found_cue = False
    while index < len(lines):
        line = lines[index]
        match = _CUE_TIMING.search(line)
        if not match:
            index += 1
            continue
        found_cue = True
        start = parse_timestamp(match.group(1))
        end = parse_timestamp(match.group(6))
        if end < start:
            raise ConversionError("bad_transcript", f"{uri}: cue at line {index + 1} ends before it starts ({end}s < {start}s)")
        index += 1
        body: list[str] = []
        while index < len(lines) and lines[index].strip():
            body.append(lines[index].strip())
            index += 1
        cue_text = re.sub(r"<[^>]+>", "", " ".join(body))
        cue_text = re.sub(r"\s+", " ", cue_text).strip()
        if cue_text:
            segments.append(Segment(start, end, scrub_text(cue_text) if scrub else cue_text))
    if not found_cue:
        raise ConversionError("bad_transcript", f"{uri}: no cue timings ('00:00:01,000 --> 00:00:02,000') found")
    return sorted(segments, key=lambda s: (s.start_s, s.end_s))


def read_transcript(uri: str, *, scrub: bool = True) -> list[Segment]:
    """An SRT or WebVTT file's segments (see :func:`parse_transcript`)."""
    return parse_transcript(_decode(_read(uri), uri), uri=uri, scrub=scrub)


def merge_segments(segments: list[Segment], *, min_s: float, max_s: float, max_gap_s: float = 1.0) -> list[Segment]:
    """Join consecutive short cues into instruction-sized segments (Ophora clips ~5.5 s).

    Cues are merged while the gap between them is ≤ ``max_gap_s`` and the merged span
    stays ≤ ``max_s``; merged spans shorter than ``min_s`` are kept (the clip cutter
    decides whether they are too short, with a reason).
    """
    out: list[Segment] = []
    for seg in segments:
        if out and seg.start_s - out[-1].end_s <= max_gap_s and seg.end_s - out[-1].start_s <= max_s and (
            out[-1].end_s - out[-1].start_s < min_s
        ):
            last = out.pop()
            out.append(Segment(last.start_s, max(last.end_s, seg.end_s), f"{last.text} {seg.text}".strip()))
        else:
            out.append(seg)
    return out


# ------------------------------------------------------------------ reports
@dataclasses.dataclass(frozen=True)
class ReportSections:
    findings: str | None
    impression: str | None
    other: dict[str, str]


_SECTION_HEADER = re.compile(
    r"(?im)^[ \t]*(FINDINGS?|IMPRESSIONS?|CONCLUSIONS?|INDICATIONS?|CLINICAL HISTORY|HISTORY|TECHNIQUE|"
    r"COMPARISONS?|EXAMINATION|EXAM|RECOMMENDATIONS?|OPINION|SUMMARY)[ \t]*:[ \t]*"
)
_FINDINGS = ("FINDING", "FINDINGS")
_IMPRESSION = ("IMPRESSION", "IMPRESSIONS", "CONCLUSION", "CONCLUSIONS", "OPINION", "SUMMARY")


def split_report(text: str, *, scrub: bool = True) -> ReportSections:
    """FINDINGS and IMPRESSION of a free-text radiology report (MIMIC-CXR / IU-Xray style).

    Headers are recognised at line starts, case-insensitively (``Findings:``,
    ``IMPRESSION:``, ``Conclusion:`` counts as impression). Other sections are returned in
    ``other`` by upper-case name. Text is scrubbed of identifiers unless ``scrub=False``.
    """
    clean = scrub_text(text) if scrub else text
    matches = list(_SECTION_HEADER.finditer(clean))
    sections: dict[str, str] = {}
    for number, match in enumerate(matches):
        end = matches[number + 1].start() if number + 1 < len(matches) else len(clean)
        body = re.sub(r"\s+", " ", clean[match.end() : end]).strip()
        name = match.group(1).upper()
        if body:
            sections[name] = f"{sections[name]} {body}" if name in sections else body
    findings = next((sections.pop(n) for n in _FINDINGS if n in sections), None)
    impression = next((sections.pop(n) for n in _IMPRESSION if n in sections), None)
    return ReportSections(findings, impression, sections)


# ------------------------------------------------------------------ helpers
def _read(uri: str) -> bytes:
    try:
        data = read_bytes(uri)
    except (OSError, ValueError) as exc:
        raise ConversionError("unreadable", f"{uri}: {exc}") from exc
    if not data:
        raise ConversionError("empty_file", f"{uri}: file is empty (0 bytes)")
    return data


def _decode(data: bytes, uri: str) -> str:
    for encoding in ("utf-8-sig", "utf-16"):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    raise ConversionError("bad_encoding", f"{uri}: text is neither UTF-8 nor UTF-16")


def _first(record: dict[str, Any], aliases: tuple[str, ...]) -> Any:
    for alias in aliases:
        if alias in record and record[alias] is not None:
            return record[alias]
    return None


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _opt(value: Any, *, upper: bool = False) -> str | None:
    if value in (None, ""):
        return None
    text = str(value).strip()
    return text.upper() if upper else text


def _short(exc: BaseException) -> str:
    return (str(exc) or type(exc).__name__).splitlines()[0][:200]
