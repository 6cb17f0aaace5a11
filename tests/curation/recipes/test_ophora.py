"""Ophora: narrated videos → filtered H.264 clips aligned to the narration."""

from __future__ import annotations

import io

import av
import numpy as np
import pytest

from converters.base import ConversionError
from converters.text import parse_transcript
from converters.video import encode_frames
from tests.curation.recipes.families import assert_subject_level_splits


def test_clips_have_the_stated_duration_fps_and_narration(demo_build):
    built = demo_build("ophora")
    reasons = built.reasons()
    assert reasons["no_narration"] == ["narrated/case03.mp4"]
    assert reasons["static_clip"] == ["narrated/case01.mp4#t=6.00-11.50"]
    assert reasons["too_short"] == ["narrated/case01.mp4#t=12.50-18.00"]
    assert reasons["black_clip"] == ["narrated/case02.mp4#t=0.00-5.50"]
    clips = {r["source_uri"]: r for r in built.rows}
    assert set(clips) == {
        "narrated/case01.mp4#t=0.50-6.00",
        "narrated/case02.mp4#t=6.00-11.50",
        "cataract1k_phases/case_4687.mp4#t=0.50-6.00",
        "cataract1k_phases/case_4687.mp4#t=6.00-11.50",
    }
    for uri, row in clips.items():
        video = row["video"]
        assert row["task"] == "video_instruction" and row["modality"] == "SURG"
        assert video["fps"] == 10.0
        expected = 3.0 if uri.endswith("6.00-11.50") and "case_4687" in uri else 5.5  # that video ends at 9 s
        assert video["end_s"] - video["start_s"] == pytest.approx(expected)
        assert video["num_frames"] == round(expected * 10)
        with av.open(io.BytesIO(video["data"])) as container:
            stream = container.streams.video[0]
            assert stream.codec_context.name == "h264"
            assert float(stream.average_rate) == 10.0
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        assert len(frames) == video["num_frames"]
        assert frames[0].shape == (video["height"], video["width"], 3)
        assert row["conversations"][0]["value"].startswith("<video>\n")
        assert row["conversations"][1]["value"] == row["caption"]
    assert clips["narrated/case01.mp4#t=0.50-6.00"]["caption"] == "Make the main incision with the keratome."
    assert clips["narrated/case02.mp4#t=6.00-11.50"]["labels"] == ["Perform the capsulorhexis with the forceps."]
    assert "Phacoemulsification" in clips["cataract1k_phases/case_4687.mp4#t=0.50-6.00"]["caption"]
    assert "Irrigation Aspiration" in clips["cataract1k_phases/case_4687.mp4#t=6.00-11.50"]["caption"]
    assert_subject_level_splits(built.rows)


def test_srt_and_vtt_cues():
    srt = "1\n00:00:01,500 --> 00:00:04,000\nIncise the <i>cornea</i>.\n\n2\n00:01:00,000 --> 00:01:02,250\nIrrigate.\n"
    cues = parse_transcript(srt, uri="a.srt")
    assert [(c.start_s, c.end_s, c.text) for c in cues] == [(1.5, 4.0, "Incise the cornea."), (60.0, 62.25, "Irrigate.")]
    vtt = "WEBVTT\n\nNOTE recorded in theatre 2\n\nstep-1\n00:02.000 --> 00:03.500 align:start\nInsert the lens.\n"
    assert [(c.start_s, c.end_s, c.text) for c in parse_transcript(vtt, uri="b.vtt")] == [(2.0, 3.5, "Insert the lens.")]
    with pytest.raises(ConversionError, match="ends before it starts"):
        parse_transcript("1\n00:00:05,000 --> 00:00:04,000\nx\n", uri="c.srt")


def test_h264_round_trip_keeps_frames():
    frames = [np.full((32, 48, 3), 10 * i, np.uint8) for i in range(12)]
    data, *_ = encode_frames(frames, 12.0, crf=10)
    with av.open(io.BytesIO(data)) as container:
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(decoded) == 12
    assert [int(round(f.mean())) for f in decoded] == pytest.approx([10 * i for i in range(12)], abs=3)
