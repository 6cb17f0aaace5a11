"""Clip timing by presentation time: variable-frame-rate sources are resampled to a
constant output rate (ffmpeg's ``fps`` filter rule: output tick k shows the latest source
frame whose time is ≤ ``start + k / fps``), so a clip plays exactly the source time it
covers and its transcript stays in sync.

Every source frame is flat grey at level ``8 + 4 × index``, so decoding a clip tells which
source frame is shown at each output time. Sources are written by PyAV with explicit pts
on a fine time base (1/90000 for MP4, the 1/1000 Matroska imposes for MKV)."""

from __future__ import annotations

import io
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from converters.video import ClipReject, ClipResult, ShotDetector, cut_clips, cut_shots
from tests.helpers import write_h264

W, H = 32, 24
#: 1 s at 30 fps, then 2 s at 5 fps: a phone or screen recording that slows down
FAST_THEN_SLOW = [i / 30 for i in range(30)] + [1 + i / 5 for i in range(10)]


def level(index: int) -> int:
    """Grey level of source frame ``index`` (4 levels apart: robust to H.264 noise)."""
    return 8 + 4 * index


def write_vfr(path: Path, times: Sequence[float], time_base: Fraction = Fraction(1, 90000)) -> Path:
    """A video whose frame ``i`` is presented at ``times[i]`` seconds and is grey ``level(i)``."""
    assert len(times) <= 61, "grey levels run out after 61 frames"
    frames = ((round(t / time_base), np.full((H, W, 3), level(i), np.uint8)) for i, t in enumerate(times))
    return write_h264(path, frames, rate=30, crf=10, time_base=time_base)


def shown(data: bytes) -> list[tuple[float, int]]:
    """(clip time, source frame index) of every frame of an encoded clip."""
    with av.open(io.BytesIO(data), "r") as container:
        return [
            (float(f.time), round((float(f.to_ndarray(format="rgb24").mean()) - 8) / 4))
            for f in container.decode(video=0)
        ]


def source_at(times: Sequence[float], t: float) -> int:
    """Index of the source frame on screen at time ``t``: the latest one presented at or before it."""
    return max(i for i, ti in enumerate(times) if ti <= t + 1e-6)


def assert_plays_source_time(clip: ClipResult, times: Sequence[float]) -> None:
    """The clip lasts its source span (within one frame) and shows the source frame of each moment."""
    frames = shown(clip.data)
    assert len(frames) == clip.num_frames
    span = clip.end_s - clip.start_s
    assert abs(clip.num_frames / clip.fps - span) <= 1 / clip.fps + 1e-6, (clip.num_frames, clip.fps, span)
    for k, (t, index) in enumerate(frames):
        assert t == pytest.approx(k / clip.fps, abs=1e-3)
        assert index == source_at(times, clip.start_s + k / clip.fps), f"output frame {k} at {t:.3f}s"


@pytest.fixture(scope="module")
def fast_then_slow(tmp_path_factory) -> Path:
    return write_vfr(tmp_path_factory.mktemp("vfr") / "vfr.mp4", FAST_THEN_SLOW)


def test_slow_stretch_is_repeated_so_the_clip_plays_the_time_it_covers(fast_then_slow):
    results = {r.text: r for r in cut_clips(str(fast_then_slow), [(0.0, 3.0, "whole"), (1.0, 3.0, "slow")], fps=10)}
    whole, slow = results["whole"], results["slow"]
    assert isinstance(whole, ClipResult) and isinstance(slow, ClipResult)
    assert (whole.start_s, whole.end_s, whole.num_frames) == (0.0, pytest.approx(3.0), 30)
    assert (slow.start_s, slow.end_s, slow.num_frames) == (1.0, pytest.approx(3.0), 20)
    assert_plays_source_time(whole, FAST_THEN_SLOW)
    assert_plays_source_time(slow, FAST_THEN_SLOW)
    # each 5 fps frame is held for two 10 fps ticks
    assert [index for _, index in shown(slow.data)] == [30 + k // 2 for k in range(20)]


def test_default_rate_keeps_the_playback_time_of_a_variable_rate_source(fast_then_slow):
    (whole,) = cut_clips(str(fast_then_slow), [(0.0, 3.0, "whole")])
    assert isinstance(whole, ClipResult)
    assert whole.num_frames / whole.fps == pytest.approx(3.0, abs=1 / whole.fps)
    assert_plays_source_time(whole, FAST_THEN_SLOW)


def test_too_short_is_measured_in_source_time(fast_then_slow):
    ranges = [(1.0, 2.2, "slow, long enough"), (2.2, 5.0, "past the end")]
    results = {r.text: r for r in cut_clips(str(fast_then_slow), ranges, fps=10, min_s=1.0)}
    assert isinstance(results["slow, long enough"], ClipResult)  # only 6 source frames, but 1.2 s
    assert results["slow, long enough"].num_frames == 12
    late = results["past the end"]
    # the last frame (2.8 s) lasts as long as the 5 fps frames before it: the video ends at 3.0 s
    assert isinstance(late, ClipReject) and late.reason == "too_short"
    assert late.end_s == pytest.approx(3.0) and "0.80s" in late.detail


def test_dense_source_is_dropped_to_the_latest_frame_at_each_tick(tmp_path):
    times = [i / 60 for i in range(60)]  # 60 fps for 1 s
    path = write_vfr(tmp_path / "dense.mp4", times)
    (clip,) = cut_clips(str(path), [(0.1, 0.9, "dense")], fps=12.5, min_s=0.5)
    assert isinstance(clip, ClipResult) and clip.num_frames == 10  # 0.8 s at 12.5 fps
    assert_plays_source_time(clip, times)


def test_a_range_starting_between_frames_shows_the_frame_on_screen_at_its_start(fast_then_slow):
    (clip,) = cut_clips(str(fast_then_slow), [(1.3, 2.5, "mid-gap")], fps=10)
    assert isinstance(clip, ClipResult) and (clip.start_s, clip.end_s) == (1.3, 2.5)
    assert shown(clip.data)[0][1] == 31  # the 1.2 s frame, on screen from 1.2 s to 1.4 s
    assert_plays_source_time(clip, FAST_THEN_SLOW)


def test_millisecond_timestamps_of_a_constant_rate_mkv_neither_drop_nor_repeat(tmp_path):
    times = [round(i * 1000 / 24) / 1000 for i in range(48)]  # 24 fps on a 1 ms clock: 0, 42, 83, 125 ms…
    path = write_vfr(tmp_path / "cfr24.mkv", times, Fraction(1, 1000))
    (clip,) = cut_clips(str(path), [(0.0, 2.0, "all")], fps=24)
    assert isinstance(clip, ClipResult) and clip.num_frames == 48
    assert [index for _, index in shown(clip.data)] == list(range(48))


def test_shots_split_at_max_s_of_source_time_across_a_gap(tmp_path):
    # 30 fps for 1 s, a 3 s gap with no frame (a screen recorder on a still screen), 30 fps again
    times = [i / 30 for i in range(31)] + [4 + i / 30 for i in range(30)]
    path = write_vfr(tmp_path / "gap.mp4", times)
    results = list(cut_shots(str(path), detector=ShotDetector(threshold=200), max_s=1.5, min_s=0.4, fps=10))
    spans = [(round(r.start_s, 3), round(r.end_s, 3)) for r in results]
    assert spans == [(0.0, 1.5), (1.5, 3.0), (3.0, 4.5), (4.5, 5.0)]
    reasons = [r.reason if isinstance(r, ClipReject) else "ok" for r in results]
    assert reasons == ["ok", "frozen_clip", "ok", "ok"]  # 1.5–3.0 s is the 1.0 s frame, held
    for result in results:
        if isinstance(result, ClipResult):
            assert_plays_source_time(result, times)


def test_a_slow_source_repeated_to_the_output_rate_is_not_frozen_but_a_still_one_is(tmp_path):
    """Repeating a 2 fps source's frames at 25 fps does not make the clip frozen: only
    changes between source frames count. The same frames all alike are frozen."""
    times = [k * 0.5 for k in range(8)]  # 2 fps, a different grey each
    (moving,) = cut_clips(str(write_vfr(tmp_path / "slow.mp4", times)), [(0.0, 4.0, "slow")], fps=25)
    assert isinstance(moving, ClipResult) and moving.num_frames == 100
    still = write_h264(tmp_path / "still.mp4", ((index, np.full((H, W, 3), 120, np.uint8)) for index in range(8)), rate=2)
    (frozen,) = cut_clips(str(still), [(0.0, 4.0, "still")], fps=25)
    assert isinstance(frozen, ClipReject) and frozen.reason == "frozen_clip" and frozen.detail.startswith("87/87 frames")


def test_a_fast_source_holding_one_picture_for_seconds_is_frozen(tmp_path):
    """0.2 s of motion at 30 fps, then one frame held for 5.3 s: frozen, though its
    source frames all differ (the hold is far longer than the source's own pace)."""
    times = [i / 30 for i in range(6)] + [5.5]
    (clip,) = cut_clips(str(write_vfr(tmp_path / "held.mp4", times)), [(0.0, 5.5, "cue")], fps=25)
    assert isinstance(clip, ClipReject) and clip.reason == "frozen_clip"
