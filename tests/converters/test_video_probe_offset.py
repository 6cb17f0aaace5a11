"""Video time is playback time: probing finds where the frames really end, and timestamps
are counted from the stream's start, not from pts 0.

Two ways sources break a naive clock: a variable-frame-rate MP4 states a duration shorter
than its frames (the clip cutter then rejected ranges after it before decoding), and an
MPEG-TS, a Matroska file or an MP4 with a delay starts its timestamps after 0 (1.4 s in
a TS straight from a recorder), while a transcript cue at 00:00:02 means what a player
shows 2 s into playback. Every source frame is flat grey ``8 + 4 × index`` so that a
decoded clip tells which source frame it shows at each moment; videos are 32×24, written
by PyAV with explicit pts."""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from converters.video import (
    ClipReject,
    ClipResult,
    ShotDetector,
    _pick_duration,
    cut_clips,
    cut_shots,
    detect_shots,
    iter_frames,
    probe,
)
from tests.helpers import TEST_SALT

W, H = 32, 24
#: 1 s at 30 fps, then 2 s at 5 fps: the last frame (2.8 s) lasts until 3.0 s
FAST_THEN_SLOW = [i / 30 for i in range(30)] + [1 + i / 5 for i in range(10)]
#: 3 s at 20 fps
STEADY_20 = [i / 20 for i in range(60)]
#: 2.4 s at 20 fps, then 5 fps to 3.0 s: with B-frames the MP4 states 2.55 s
SLOWING_TAIL = [i / 20 for i in range(48)] + [2.4, 2.6, 2.8]


def level(index: int) -> int:
    return 8 + 4 * index


def write_video(
    path: Path, times: Sequence[float], *, offset_s: float = 0.0, time_base: Fraction = Fraction(1, 90000),
    rate: int = 30, audio_s: float | None = None, bframes: int = 0,
) -> Path:
    """Frame ``i`` presented at ``offset_s + times[i]`` with grey ``level(i)``; the format
    follows the suffix (.ts is MPEG-TS). ``audio_s``: also a silent AAC track starting at
    0 and lasting that long (a video delayed behind its audio). B-frames make an MP4
    state its duration from the last decoding time: shorter than the frames run."""
    assert len(times) <= 61, "grey levels run out after 61 frames"
    with av.open(str(path), "w", format="mpegts" if path.suffix == ".ts" else None) as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        stream.options = {"crf": "10", "preset": "ultrafast", "bf": str(bframes)}
        stream.time_base = stream.codec_context.time_base = time_base
        if audio_s is not None:
            _write_silence(container, audio_s)
        for index, t in enumerate(times):
            frame = av.VideoFrame.from_ndarray(np.full((H, W, 3), level(index), np.uint8), format="rgb24")
            frame.pts, frame.time_base = round((offset_s + t) / time_base), time_base
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def _write_silence(container: av.container.OutputContainer, seconds: float) -> None:
    audio = container.add_stream("aac", rate=8000)
    audio.layout = "mono"
    for start in range(0, int(seconds * 8000), 400):
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 400), np.float32), format="fltp", layout="mono")
        frame.sample_rate, frame.pts = 8000, start
        for packet in audio.encode(frame):
            container.mux(packet)
    for packet in audio.encode():
        container.mux(packet)


def stated_duration_s(path: Path) -> float:
    """What the container itself says (the figure probe used to report)."""
    with av.open(str(path), "r") as container:
        stream = container.streams.video[0]
        assert stream.duration is not None and stream.time_base is not None
        return float(stream.duration * stream.time_base)


def shown(data: bytes) -> list[int]:
    """Source frame index of every frame of an encoded clip."""
    with av.open(io.BytesIO(data), "r") as container:
        return [round((float(f.to_ndarray(format="rgb24").mean()) - 8) / 4) for f in container.decode(video=0)]


def source_at(times: Sequence[float], t: float) -> int:
    """The source frame on screen at playback time ``t``: the latest one at or before it."""
    return max(i for i, ti in enumerate(times) if ti <= t + 1e-6)


def expected(clip: ClipResult, times: Sequence[float]) -> list[int]:
    return [source_at(times, clip.start_s + k / clip.fps) for k in range(clip.num_frames)]


# ------------------------------------------------------------------ understated duration
@pytest.fixture(scope="module")
def understated(tmp_path_factory) -> Path:
    """A VFR MP4 on a 1 ms clock whose container states 2.5 s for frames running to 3.0 s."""
    path = write_video(tmp_path_factory.mktemp("vfr") / "vfr.mp4", FAST_THEN_SLOW, time_base=Fraction(1, 1000), bframes=2)
    assert stated_duration_s(path) < 2.6, "the container no longer understates: the test proves nothing"
    return path


def test_probe_reports_where_the_last_frame_ends(understated):
    info = probe(str(understated))
    assert info.duration_s == pytest.approx(3.0)  # 2.8 s + the 0.2 s interval before it
    assert (info.num_frames, info.start_time_s) == (40, 0.0)


def test_ranges_after_the_stated_duration_are_cut_from_the_frames_there(understated):
    ranges = [(2.6, 3.0, "after the stated end"), (2.5, 4.0, "runs past the end"), (3.05, 4.0, "after the frames")]
    results = {r.text: r for r in cut_clips(str(understated), ranges, fps=10, min_s=0.3)}
    late, long = results["after the stated end"], results["runs past the end"]
    assert isinstance(late, ClipResult) and isinstance(long, ClipResult)
    assert shown(late.data) == [38, 38, 39, 39] == expected(late, FAST_THEN_SLOW)
    assert long.end_s == pytest.approx(3.0) and shown(long.data) == expected(long, FAST_THEN_SLOW)
    beyond = results["after the frames"]
    assert isinstance(beyond, ClipReject) and beyond.reason == "out_of_range" and "3.00s" in beyond.detail


@pytest.mark.parametrize(
    ("stated", "measured", "picked"),
    [
        (2.5, 3.0, 3.0),  # understated (VFR MP4)
        (4.4, 3.0, 3.0),  # overstated (longer audio; a Matroska end on the raw clock)
        (None, 3.0, 3.0),  # nothing stated
        (3.0, None, 3.0),  # no packet timestamps: the header is all there is
        (12.0, 12.0 + 1e-12, 12.0),  # float noise keeps the stated figure bit for bit
        (None, None, 0.0),
    ],
)
def test_duration_prefers_the_frames_to_the_header(stated, measured, picked):
    assert _pick_duration(stated, measured, 1e-6) == picked


# ------------------------------------------------------------------ start offset
OFFSET_SOURCES = [
    pytest.param(("offset.ts", 1.4, Fraction(1, 90000)), id="mpegts-1.4s"),
    pytest.param(("offset.mkv", 1.4, Fraction(1, 1000)), id="mkv-1.4s"),
    pytest.param(("delayed.mp4", 0.04, Fraction(1, 90000)), id="mp4-0.04s"),
    pytest.param(("third.ts", 1 / 15, Fraction(1, 90000)), id="mpegts-1/15s"),  # not a whole µs
]


@pytest.fixture(scope="module", params=OFFSET_SOURCES)
def offset_video(request, tmp_path_factory) -> tuple[Path, float]:
    name, offset, time_base = request.param
    path = write_video(tmp_path_factory.mktemp("offset") / name, STEADY_20, offset_s=offset, time_base=time_base, rate=20)
    return path, offset


def test_probe_counts_from_the_start_of_playback(offset_video):
    path, offset = offset_video
    info = probe(str(path))
    assert info.start_time_s == pytest.approx(offset)
    assert info.duration_s == pytest.approx(3.0)  # not 4.4: the Matroska header states its end on the raw clock
    assert info.num_frames == 60


def test_frame_times_start_at_zero(offset_video):
    path, _ = offset_video
    times = [t for t, _ in iter_frames(str(path))]
    assert times[0] == 0.0
    assert times == pytest.approx(STEADY_20, abs=1e-9)


def test_a_cue_shows_what_a_player_shows_at_its_time(offset_video):
    path, _ = offset_video
    ranges = [(1.0, 2.0, "second 1-2"), (2.5, 3.5, "to the end"), (0.0, 0.5, "the start")]
    results = {r.text: r for r in cut_clips(str(path), ranges, min_s=0.4)}
    middle = results["second 1-2"]
    assert isinstance(middle, ClipResult)
    assert (middle.start_s, middle.end_s, middle.num_frames) == (1.0, 2.0, 20)
    assert shown(middle.data) == list(range(20, 40))
    end = results["to the end"]
    assert isinstance(end, ClipResult) and end.end_s == pytest.approx(3.0)
    assert shown(end.data) == list(range(50, 60))
    start = results["the start"]
    assert isinstance(start, ClipResult) and start.start_s == 0.0 and shown(start.data) == list(range(10))


def test_shots_are_on_the_playback_clock(offset_video):
    path, _ = offset_video
    assert detect_shots(str(path), ShotDetector(threshold=200)) == [(0.0, pytest.approx(3.0))]
    clips = list(cut_shots(str(path), detector=ShotDetector(threshold=200), max_s=1.0, min_s=0.5))
    assert [(round(c.start_s, 6), round(c.end_s, 6)) for c in clips] == [(0.0, 1.0), (1.0, 2.0), (2.0, 3.0)]
    for clip in clips:
        assert isinstance(clip, ClipResult)
        assert shown(clip.data) == expected(clip, STEADY_20)


def test_video_delayed_behind_its_audio_keeps_the_delay(tmp_path):
    """Playback starts with the audio (the container's start time): the first frame is at
    0.1 s, as a player and the transcript see it, not pulled to 0."""
    path = write_video(tmp_path / "av.mp4", STEADY_20[:40], offset_s=0.1, rate=20, audio_s=2.0)
    info = probe(str(path))
    assert info.start_time_s == 0.0 and info.duration_s == pytest.approx(2.1)
    assert next(iter_frames(str(path)))[0] == pytest.approx(0.1)
    (clip,) = cut_clips(str(path), [(0.5, 1.5, "cue")], min_s=0.5)
    assert isinstance(clip, ClipResult)
    times = [0.1 + t for t in STEADY_20[:40]]
    assert shown(clip.data) == expected(clip, times) and shown(clip.data)[0] == 8  # the frame at 0.5 s


# ------------------------------------------------------------------ Ophora
def test_ophora_cuts_narration_on_the_playback_clock(tmp_path, monkeypatch):
    """An MPEG-TS-like offset (here Matroska, which Ophora reads) and an understated VFR
    MP4: the clip records and keys stay in the transcript's time."""
    from tests.curation.recipes.families import build_family

    monkeypatch.setenv("MEDCURATE_SALT", TEST_SALT)
    tree = tmp_path / "src" / "narrated"
    tree.mkdir(parents=True)
    write_video(tree / "offset.mkv", STEADY_20, offset_s=1.4, time_base=Fraction(1, 1000), rate=20)
    (tree / "offset.srt").write_text("1\n00:00:01,000 --> 00:00:02,000\nIncise the cornea.\n")
    vfr = write_video(tree / "vfr.mp4", SLOWING_TAIL, time_base=Fraction(1, 1000), rate=20, bframes=2)
    assert stated_duration_s(vfr) < 2.6
    (tree / "vfr.srt").write_text("1\n00:00:01,800 --> 00:00:02,800\nInsert the lens.\n")
    options = {"options": {"clip_seconds": 1.0, "min_clip_seconds": 0.8, "max_clips_per_cue": 1}}
    built = build_family("ophora", tmp_path / "work", tmp_path / "src" / "narrated", options)
    rows = {r["source_uri"]: r for r in built.rows}
    assert set(rows) == {"narrated/offset.mkv#t=1.00-2.00", "narrated/vfr.mp4#t=1.80-2.80"}, built.rejects
    offset = rows["narrated/offset.mkv#t=1.00-2.00"]
    assert (offset["video"]["start_s"], offset["video"]["end_s"]) == (1.0, 2.0)
    assert shown(offset["video"]["data"]) == list(range(20, 40))
    clip_step = next(s for s in json.loads(offset["provenance"]["steps_json"]) if s["step"] == "video.clip")
    assert clip_step["params"]["source_start_time_s"] == pytest.approx(1.4)
    clip = rows["narrated/vfr.mp4#t=1.80-2.80"]["video"]  # was capped at the stated 2.55 s: 0.75 s, too short
    assert (clip["start_s"], clip["end_s"], clip["fps"], clip["num_frames"]) == (1.8, 2.8, 20.0, 20)
    assert shown(clip["data"]) == [source_at(SLOWING_TAIL, 1.8 + k / 20) for k in range(20)]
