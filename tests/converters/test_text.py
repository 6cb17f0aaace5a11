"""Text and label sources: CSV/TSV tables, VQA-RAD / SLAKE question files, SRT/WebVTT
transcripts and free-text reports, each with its failure modes."""

from __future__ import annotations

import json

import polars as pl
import pytest

from converters.base import ConversionError
from converters.text import (
    Segment,
    merge_segments,
    parse_timestamp,
    parse_transcript,
    read_records,
    read_table,
    read_transcript,
    read_vqa,
    split_report,
)


def test_csv_and_tsv_tables_with_scrubbed_notes(tmp_path):
    csv = tmp_path / "labels.csv"
    csv.write_text(
        "image,diagnosis,grade,notes\n"
        "a.png,DR,2,Seen by Dr. Maria Okafor on 03/14/2021\n"
        "b.png,normal,0,no findings\n"
    )
    frame = read_table(str(csv), scrub_columns=["notes"], required=["image", "diagnosis"])
    assert frame.shape == (2, 4)
    assert frame["grade"].dtype == pl.Int64 and frame["grade"].to_list() == [2, 0]
    note = frame["notes"][0]
    assert "Okafor" not in note and "2021" not in note and "[NAME]" in note and "[DATE]" in note
    assert frame["notes"][1] == "no findings"

    tsv = tmp_path / "labels.tsv"
    tsv.write_text("id\tlabel\nx\t1\ny\t0\n")
    assert read_table(str(tsv))["label"].to_list() == [1, 0]
    with pytest.raises(ConversionError) as err:
        read_table(str(tsv), required=["image"])
    assert err.value.reason == "bad_table" and "image" in err.value.detail


VQA_RAD = [
    {"qid": 1, "image_name": "synpic54610.jpg", "question": "Is there evidence of an aortic aneurysm?",
     "answer": "yes", "answer_type": "CLOSED", "question_type": "PRES", "phrase_type": "freeform"},
    {"qid": 2, "image_name": "synpic29265.jpg", "question": "What organ is abnormal?", "answer": "Liver",
     "answer_type": "OPEN", "question_type": "ORGAN"},
]
SLAKE = [
    {"img_id": 1, "img_name": "xmlab1/source.jpg", "question": "What modality is used to take this image?",
     "answer": "MRI", "q_lang": "en", "qid": 0, "answer_type": "OPEN", "content_type": "Modality"},
    {"img_id": 1, "img_name": "xmlab1/source.jpg", "question": "这张图片的成像方式是什么?", "answer": "MRI",
     "q_lang": "zh", "qid": 1, "answer_type": "OPEN", "content_type": "Modality"},
]


def test_vqa_rad_json_and_slake_language_filter(tmp_path):
    rad = tmp_path / "VQA_RAD Dataset Public.json"
    rad.write_text(json.dumps(VQA_RAD))
    records = read_vqa(str(rad))
    assert [r.image for r in records] == ["synpic54610.jpg", "synpic29265.jpg"]
    assert records[0].answer_type == "CLOSED" and records[1].answer == "Liver"
    assert records[1].question_type == "ORGAN" and records[0].qid == "1"

    slake = tmp_path / "train.json"
    slake.write_text(json.dumps(SLAKE, ensure_ascii=False))
    english = read_vqa(str(slake), language="en")
    assert len(english) == 1 and english[0].image == "xmlab1/source.jpg" and english[0].question_type == "Modality"
    assert len(read_vqa(str(slake))) == 2


def test_jsonl_records_and_bad_lines(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in VQA_RAD) + "\n")
    assert len(read_records(str(path))) == 2
    path.write_text(json.dumps(VQA_RAD[0]) + "\n{not json\n")
    with pytest.raises(ConversionError) as err:
        read_records(str(path))
    assert err.value.reason == "bad_json" and "line 2" in err.value.detail
    missing = tmp_path / "missing.json"
    missing.write_text(json.dumps([{"question": "q?"}]))
    with pytest.raises(ConversionError, match="lacks"):
        read_vqa(str(missing))


SRT = """1
00:00:01,000 --> 00:00:03,500
Now we make the <i>capsulorhexis</i>
with the cystotome.

2
00:00:04,000 --> 00:00:06,250
Call Dr. Maria Okafor at 617-555-0199 if needed.

"""

VTT = """WEBVTT

NOTE recorded in theatre 3

00:01.000 --> 00:03.500 align:start
<v Surgeon>Inject the viscoelastic</v>

01:02:04.250 --> 01:02:05.000
Phacoemulsification of the nucleus
"""


def test_srt_and_webvtt_transcripts(tmp_path):
    segments = parse_transcript(SRT)
    assert segments[0] == Segment(1.0, 3.5, "Now we make the capsulorhexis with the cystotome.")
    assert segments[1].start_s == 4.0 and segments[1].end_s == 6.25
    assert "Okafor" not in segments[1].text and "555" not in segments[1].text
    path = tmp_path / "narration.vtt"
    path.write_text(VTT)
    vtt = read_transcript(str(path))
    assert [(s.start_s, s.end_s) for s in vtt] == [(1.0, 3.5), (3724.25, 3725.0)]
    assert vtt[0].text == "Inject the viscoelastic"
    assert parse_timestamp("01:02:03,004") == pytest.approx(3723.004)


def test_transcript_errors_name_the_problem():
    with pytest.raises(ConversionError) as err:
        parse_transcript("just some words", uri="x.srt")
    assert err.value.reason == "bad_transcript"
    with pytest.raises(ConversionError, match="line 2"):
        parse_transcript("1\n00:00:05,000 --> 00:00:01,000\nbackwards\n", uri="x.srt")


def test_merging_short_cues_into_instruction_spans():
    cues = [Segment(0.0, 1.5, "Insert"), Segment(1.7, 3.0, "the lens"), Segment(10.0, 16.0, "Now irrigate")]
    merged = merge_segments(cues, min_s=4.0, max_s=8.0)
    assert merged == [Segment(0.0, 3.0, "Insert the lens"), Segment(10.0, 16.0, "Now irrigate")]


def test_report_split_into_findings_and_impression():
    report = (
        "EXAMINATION: CHEST (PA AND LAT)\n"
        "INDICATION: ___ year old woman with cough.\n"
        "Findings: The lungs are clear. No pleural effusion or pneumothorax.\n"
        "  Heart size is normal.\n"
        "IMPRESSION:\nNo acute cardiopulmonary process. Reviewed by Dr. John Smith on 2/3/2020."
    )
    sections = split_report(report)
    assert sections.findings == "The lungs are clear. No pleural effusion or pneumothorax. Heart size is normal."
    assert sections.impression is not None and sections.impression.startswith("No acute cardiopulmonary process.")
    assert "Smith" not in sections.impression and "2020" not in sections.impression
    assert sections.other["EXAMINATION"] == "CHEST (PA AND LAT)"
    assert split_report("Conclusion: stable.").impression == "stable."
    assert split_report("no headers here").findings is None
