"""Video: probing, clips by time range and by shot, black/frozen/short drops, re-encoding
to H.264 at a chosen fps and size, and the conversion stage on a discovered MP4. The
videos are written by PyAV in the test (the format's own library)."""

from __future__ import annotations

import io
from pathlib import Path

import av
import numpy as np
import pytest

from converters.base import ConversionError, ConvertOptions
from converters.discover import discover
from converters.stage import ConvertStage
from converters.video import (
    ClipReject,
    ClipResult,
    cut_clips,
    cut_shots,
    detect_shots,
    encode_frames,
    probe,
)
from curation.schema import validate_batch
from curation.stages import run_stages_locally
from tests.helpers import TEST_SALT, write_h264

FPS = 25
W, H = 160, 120
#: scene plan: (start_s, end_s, kind); shot boundaries at 4, 6 and 9 s
SCENES = [(0.0, 4.0, "ramp"), (4.0, 6.0, "black"), (6.0, 9.0, "frozen"), (9.0, 12.0, "red")]


def scene_frame(index: int) -> np.ndarray:
    t = index / FPS
    img = np.zeros((H, W, 3), np.uint8)
    kind = next(k for s, e, k in SCENES if s <= t < e)
    if kind == "ramp":  # grey level encodes the frame index: 20 + i
        img[:] = 20 + index
        x = (index * 4) % (W - 10)
        img[:10, x : x + 10] = 255  # a moving marker in the top band
    elif kind == "frozen":
        img[..., 2] = 200
        img[40:80, 60:100] = 255
    elif kind == "red":
        img[..., 0] = 200
        x = (index * 5) % (W - 12)
        img[:, x : x + 12] = 255
    return img


def write_video(path: Path, seconds: float = 12.0, fps: int = FPS) -> Path:
    return write_h264(path, ((index, scene_frame(index)) for index in range(int(seconds * fps))), rate=fps)


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    return write_video(tmp_path_factory.mktemp("video") / "surgery.mp4")


def decoded(data: bytes) -> list[np.ndarray]:
    with av.open(io.BytesIO(data)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def test_probe_reads_rate_duration_and_size(video):
    info = probe(str(video))
    assert info.fps == pytest.approx(25.0) and info.duration_s == pytest.approx(12.0, abs=0.05)
    assert (info.width, info.height, info.num_frames) == (W, H, 300)
    with pytest.raises(ConversionError) as err:
        probe(b"definitely not a video")
    assert err.value.reason == "unreadable"


def test_clips_by_time_range_start_on_the_right_frame_at_the_requested_fps_and_size(video):
    results = list(cut_clips(str(video), [(2.0, 3.6, "insert the lens"), (0.5, 3.0, "overlapping")], fps=10, size=(80, 60)))
    clips = {r.text: r for r in results}
    assert all(isinstance(r, ClipResult) for r in results)
    clip = clips["insert the lens"]
    assert (clip.width, clip.height, clip.fps) == (80, 60, 10)
    assert clip.num_frames == 16  # 1.6 s at 10 fps
    info = probe(clip.data)
    assert info.codec == "h264" and info.fps == pytest.approx(10) and info.num_frames == 16
    frames = decoded(clip.data)
    # the first frame is source frame 50 (t = 2.0 s): grey level 20 + 50, away from the marker band
    assert frames[0][20:, :].mean() == pytest.approx(70, abs=3)
    # every kept frame is 0.1 s (2.5 source frames) after the previous one
    levels = [f[20:, :].mean() - 20 for f in frames]
    steps = np.diff(levels)
    assert steps.min() >= 1 and steps.max() <= 4  # 2 or 3 source frames, ±1 grey level of H.264 noise
    assert levels[-1] - levels[0] == pytest.approx(15 * 2.5, abs=3)
    assert clips["overlapping"].num_frames == 25
    record = clip.video_record()
    assert record["start_s"] == 2.0 and record["end_s"] == 3.6 and record["format"] == "mp4"


def test_black_frozen_short_and_out_of_range_clips_are_dropped_with_reasons(video):
    ranges = [(4.2, 5.8, "black"), (6.2, 8.8, "frozen"), (1.0, 1.4, "short"), (30.0, 35.0, "after the end"),
              (9.5, 11.5, "good")]
    by_text = {r.text: r for r in cut_clips(str(video), ranges, min_s=1.0)}
    assert isinstance(by_text["good"], ClipResult)
    assert {t: r.reason for t, r in by_text.items() if isinstance(r, ClipReject)} == {
        "black": "black_clip", "frozen": "frozen_clip", "short": "too_short", "after the end": "out_of_range",
    }


def test_shot_boundaries_are_found_within_a_frame(video):
    shots = detect_shots(str(video))
    boundaries = [start for start, _ in shots[1:]]
    assert len(boundaries) == 3
    assert np.allclose(boundaries, [4.0, 6.0, 9.0], atol=1.0 / FPS + 1e-6)


def test_cut_shots_splits_long_shots_and_drops_black_and_frozen(video):
    results = list(cut_shots(str(video), max_s=2.0))
    kept = [(round(r.start_s, 2), round(r.end_s, 2)) for r in results if isinstance(r, ClipResult)]
    dropped = sorted({r.reason for r in results if isinstance(r, ClipReject)})
    assert kept == [(0.0, 2.0), (2.0, 4.0), (9.0, 11.0), (11.0, 12.0)]
    assert dropped == ["black_clip", "frozen_clip"]


def test_truncated_video_is_a_reason_not_a_crash(video, tmp_path):
    data = video.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 3])
    outcome = []
    try:
        outcome = list(cut_clips(str(cut), [(0.0, 3.0, "a")]))
    except ConversionError as err:
        assert err.reason in ("unreadable", "truncated", "pixel_decode_failed", "bad_header")
    assert all(isinstance(r, ClipResult | ClipReject) for r in outcome)


def test_encode_frames_makes_a_playable_clip():
    frames = (np.full((64, 96, 3), v, np.uint8) for v in range(0, 250, 10))
    data, count, width, height = encode_frames(frames, 12.5)
    assert (count, width, height) == (25, 96, 64)
    info = probe(data)
    assert info.fps == pytest.approx(12.5) and info.num_frames == 25


def test_discovered_video_converts_to_clip_samples(video, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "case1.mp4").write_bytes(video.read_bytes())
    found = discover([str(src)])
    assert [i["kind"] for i in found.items] == ["video"]
    opts = ConvertOptions(dataset="t", source="t", salt=TEST_SALT, modality="SURG", video_clip_s=3.0, video_fps=5)
    out = run_stages_locally([ConvertStage(opts)], found.table())
    validate_batch(out.table)
    rows = out.table.to_pylist()
    assert out.rejects == []
    assert sorted(r["source_uri"] for r in rows) == [  # ramp split at 3 s; black 4-6 and frozen 6-9 dropped
        "case1.mp4#t=0.000-3.000", "case1.mp4#t=3.000-4.000", "case1.mp4#t=9.000-12.000",
    ]
    assert {r["modality"] for r in rows} == {"SURG"}
    assert all(r["video"]["fps"] == 5 and r["video"]["data"][4:8] == b"ftyp" for r in rows)
