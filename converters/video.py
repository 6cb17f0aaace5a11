"""Video (MP4/AVI/MOV/MKV) → H.264 clips, by time ranges or by detected shots.

Everything streams: a video is decoded once, front to back, and each frame is handed to
the clip encoders whose range contains it; a clip's bytes are yielded as soon as its
range closes. Memory therefore depends on the clip length and the frame size, never on
the video length (``bench/video.py`` measures it on a 10-minute video).

Clips are re-encoded with libx264 (PyAV) at a configurable frame rate and size, and
dropped with a reason when they are too short, black (mean luma of nearly every frame
below ``black_luma``) or frozen (nearly every frame identical to the previous one).
Black/frozen/shot statistics are computed on a small grey (or HSV) thumbnail of each
frame, which is what keeps the analysis cheap next to decoding.

Shot boundaries use a content detector of our own, the algorithm of PySceneDetect's
``ContentDetector`` (mean absolute change of H, S and V between consecutive frames above
a threshold, with a minimum shot length) on 64-pixel-wide thumbnails: it runs inside the
same single decoding pass as the encoders, which scenedetect's own pass cannot.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import math
import threading
from collections.abc import Iterable, Iterator, Sequence
from fractions import Fraction
from typing import Any

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from converters.base import ConversionError

#: container extensions read as video
VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg")
#: analysis thumbnail width (height keeps the aspect ratio)
THUMB_WIDTH = 64


@dataclasses.dataclass(frozen=True)
class VideoInfo:
    fps: float
    duration_s: float
    width: int
    height: int
    num_frames: int  # as the container states it, else duration × fps
    codec: str


@dataclasses.dataclass(frozen=True)
class ClipPolicy:
    """How clips are encoded and which are dropped.

    ``fps``/``size`` None keep the source's; ``size`` is (width, height) and is rounded to
    even numbers (H.264 4:2:0 needs them). A clip is *black* when ≥ ``bad_fraction`` of its
    frames have mean luma < ``black_luma`` (0–255), *frozen* when ≥ ``bad_fraction`` of
    frame-to-frame mean absolute differences are < ``frozen_diff``.
    """

    fps: float | None = None
    size: tuple[int, int] | None = None
    min_s: float = 1.0
    max_s: float | None = None
    black_luma: float = 12.0
    frozen_diff: float = 0.5
    bad_fraction: float = 0.95
    crf: int = 23
    preset: str = "veryfast"


@dataclasses.dataclass(frozen=True)
class ClipResult:
    """One encoded clip (H.264 in MP4) with the text it was cut for."""

    start_s: float
    end_s: float
    text: str | None
    data: bytes
    fps: float
    num_frames: int
    width: int
    height: int

    def video_record(self) -> dict[str, Any]:
        """The ``video`` struct of the canonical schema."""
        return {
            "data": self.data,
            "format": "mp4",
            "fps": float(self.fps),
            "num_frames": int(self.num_frames),
            "width": int(self.width),
            "height": int(self.height),
            "start_s": float(self.start_s),
            "end_s": float(self.end_s),
        }


@dataclasses.dataclass(frozen=True)
class ClipReject:
    """A requested or detected clip that was dropped, and why."""

    start_s: float
    end_s: float
    text: str | None
    reason: str  # too_short | out_of_range | black_clip | frozen_clip
    detail: str


# ------------------------------------------------------------------ probing
def open_container(source: str | bytes) -> av.container.InputContainer:
    """Open a video by path/uri (through fsspec) or from bytes; unreadable → ConversionError."""
    try:
        if isinstance(source, bytes):
            return av.open(io.BytesIO(source), "r")
        from converters.io import is_local, local_path

        if is_local(source):
            return av.open(local_path(source), "r")
        import fsspec

        return av.open(fsspec.open(source, "rb").open(), "r")
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        raise ConversionError("unreadable", f"{_name(source)}: not a readable video ({_short(exc)})") from exc


def probe(source: str | bytes) -> VideoInfo:
    """Frame rate, duration, size and frame count of the first video stream."""
    with open_container(source) as container:
        stream = _video_stream(container, source)
        return _info(container, stream, source)


def _video_stream(container: av.container.InputContainer, source: str | bytes) -> av.video.stream.VideoStream:
    if not container.streams.video:
        raise ConversionError("no_video_stream", f"{_name(source)}: the container has no video stream")
    return container.streams.video[0]


def _info(container: av.container.InputContainer, stream: av.video.stream.VideoStream, source: str | bytes) -> VideoInfo:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    fps = float(rate) if rate else 0.0
    if not fps or not math.isfinite(fps) or fps <= 0 or fps > 1000:
        raise ConversionError("bad_header", f"{_name(source)}: video stream has no usable frame rate ({rate})")
    if stream.duration and stream.time_base:
        duration = float(stream.duration * stream.time_base)
    elif container.duration:
        duration = container.duration / av.time_base
    else:
        duration = stream.frames / fps if stream.frames else 0.0
    frames = int(stream.frames) if stream.frames else int(round(duration * fps))
    width, height = int(stream.codec_context.width or 0), int(stream.codec_context.height or 0)
    if width <= 0 or height <= 0:
        raise ConversionError("bad_header", f"{_name(source)}: video stream has no frame size")
    return VideoInfo(fps, duration, width, height, frames, stream.codec_context.name)


def iter_frames(source: str | bytes) -> Iterator[tuple[float, av.VideoFrame]]:
    """(time in seconds, frame) of every decoded frame, in order; corrupt data ends the video
    with a ``ConversionError`` naming the time reached."""
    with open_container(source) as container:
        stream = _video_stream(container, source)
        stream.thread_type = "AUTO"
        info = _info(container, stream, source)
        count = 0
        reached = 0.0
        try:
            for frame in container.decode(stream):
                t = float(frame.time) if frame.time is not None else count / info.fps
                reached = t
                count += 1
                yield t, frame
        except (av.error.FFmpegError, ValueError) as exc:
            if count == 0:
                raise ConversionError("pixel_decode_failed", f"{_name(source)}: no frame decodes ({_short(exc)})") from exc
            raise ConversionError(
                "truncated", f"{_name(source)}: decoding stopped at {reached:.2f}s after {count} frames ({_short(exc)})"
            ) from exc


# ------------------------------------------------------------------ encoding
class ClipEncoder:
    """Encodes frames of one clip to H.264/MP4 in memory, resampling to the target fps.

    Frames are taken on the output grid ``start + k / fps`` (the first frame at or after
    each tick), so a 30 fps source cut at 10 fps keeps every third frame.
    """

    def __init__(self, start_s: float, width: int, height: int, fps: float, policy: ClipPolicy):
        self.start_s = start_s
        self.fps = fps
        self.width, self.height = _even(width), _even(height)
        self.policy = policy
        self._reformatter = VideoReformatter()
        self._buffer = io.BytesIO()
        self._container = av.open(self._buffer, "w", format="mp4")
        rate = Fraction(fps).limit_denominator(1001)
        self._time_base = 1 / rate
        self._stream = self._container.add_stream("libx264", rate=rate)
        self._stream.width, self._stream.height = self.width, self.height
        self._stream.pix_fmt = "yuv420p"
        self._stream.options = {"crf": str(policy.crf), "preset": policy.preset}
        self._stream.codec_context.thread_count = 1
        self.frames = 0
        self.last_t = start_s
        self._next_tick = start_s
        self._ticks = 0
        self._dark = 0
        self._still = 0
        self._prev_thumb: np.ndarray | None = None

    def wants(self, t: float) -> bool:
        return t + 1e-6 >= self._next_tick

    def add(self, t: float, frame: av.VideoFrame | np.ndarray, thumb: np.ndarray) -> None:
        """Encode one frame (the caller checked :meth:`wants`); ``thumb`` is its RGB thumbnail.

        Black: the brightest channel (HSV value) is dark on average. Frozen: no channel
        changes; colour matters, two colours of equal luma are not the same picture."""
        if isinstance(frame, np.ndarray):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24" if frame.ndim == 3 else "gray")
        out = self._reformatter.reformat(
            frame, width=self.width, height=self.height, format="yuv420p", interpolation="AREA"
        )
        out.pts = self.frames
        out.time_base = self._time_base
        for packet in self._stream.encode(out):
            self._container.mux(packet)
        self.frames += 1
        self.last_t = t
        while self._next_tick <= t + 1e-6:  # ticks from an integer count: no float drift
            self._ticks += 1
            self._next_tick = self.start_s + self._ticks / self.fps
        if float(thumb.max(axis=-1).mean() if thumb.ndim == 3 else thumb.mean()) < self.policy.black_luma:
            self._dark += 1
        if self._prev_thumb is not None and float(np.abs(thumb - self._prev_thumb).mean()) < self.policy.frozen_diff:
            self._still += 1
        self._prev_thumb = thumb

    def verdict(self) -> tuple[str, str] | None:
        """(reason, detail) when the clip is black or frozen, else None."""
        if self.frames and self._dark >= self.policy.bad_fraction * self.frames:
            return "black_clip", f"{self._dark}/{self.frames} frames have mean luma < {self.policy.black_luma}"
        pairs = self.frames - 1
        if pairs > 0 and self._still >= self.policy.bad_fraction * pairs:
            return "frozen_clip", f"{self._still}/{pairs} consecutive frames differ by < {self.policy.frozen_diff} grey levels"
        return None

    def finish(self) -> bytes:
        for packet in self._stream.encode():
            self._container.mux(packet)
        self._container.close()
        return self._buffer.getvalue()

    def abort(self) -> None:
        with contextlib.suppress(av.error.FFmpegError, ValueError):
            self._container.close()


def encode_frames(
    frames: Iterable[np.ndarray], fps: float, *, size: tuple[int, int] | None = None, crf: int = 23
) -> tuple[bytes, int, int, int]:
    """H.264/MP4 bytes of RGB or grey uint8 frames (a DICOM cine loop); returns
    (data, num_frames, width, height). Frames are consumed one at a time."""
    encoder: ClipEncoder | None = None
    policy = ClipPolicy(fps=fps, size=size, crf=crf)
    for index, frame in enumerate(frames):
        if encoder is None:
            width, height = size or (frame.shape[1], frame.shape[0])
            encoder = ClipEncoder(0.0, width, height, fps, policy)
        t = index / fps
        encoder.add(t, frame, np.zeros(1))
    if encoder is None:
        raise ConversionError("no_samples", "no frames to encode")
    return encoder.finish(), encoder.frames, encoder.width, encoder.height


# ------------------------------------------------------------------ cutting
_local = threading.local()


def _reformatter() -> VideoReformatter:
    """A per-thread swscale context: reusing it is ~6x faster than ``frame.reformat``
    (which builds a new context every call); contexts are not thread-safe."""
    if not hasattr(_local, "reformatter"):
        _local.reformatter = VideoReformatter()
    return _local.reformatter


def _thumb(frame: av.VideoFrame) -> np.ndarray:
    """RGB float thumbnail, THUMB_WIDTH wide (aspect kept), for black/frozen/shot statistics."""
    height = max(2, round(THUMB_WIDTH * frame.height / max(frame.width, 1)))
    small = _reformatter().reformat(frame, width=THUMB_WIDTH, height=height, format="rgb24", interpolation="AREA")
    return small.to_ndarray().astype(np.float32)


def _rgb_to_hsv(rgb: np.ndarray) -> np.ndarray:
    """HSV on the 0–255 scale (what PySceneDetect's content score is computed on)."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    value = rgb.max(axis=-1)
    delta = value - rgb.min(axis=-1)
    safe = np.maximum(delta, np.float32(1e-6))
    sat = delta * np.float32(255.0) / np.maximum(value, np.float32(1e-6))
    hue = np.where(value == r, (g - b) / safe, np.where(value == g, (b - r) / safe + 2, (r - g) / safe + 4))
    hue = np.where(delta > 0, (hue % 6) * np.float32(255.0 / 6.0), np.float32(0.0))
    return np.stack([hue, sat, value], axis=-1)


def _clip_geometry(info: VideoInfo, policy: ClipPolicy) -> tuple[int, int, float]:
    width, height = policy.size or (info.width, info.height)
    return width, height, float(policy.fps or info.fps)


def cut_clips(
    source: str | bytes,
    ranges: Sequence[tuple[float, float, str | None]],
    policy: ClipPolicy | None = None,
    **overrides: Any,
) -> Iterator[ClipResult | ClipReject]:
    """Clips for time ranges ``(start_s, end_s, text)`` (transcript cues, annotations).

    The video is decoded once; ranges may overlap and come in any order; results are
    yielded in order of range end. Each range yields exactly one :class:`ClipResult` or
    :class:`ClipReject`. ``overrides`` set :class:`ClipPolicy` fields (``fps=10``,
    ``size=(320, 240)``, ``min_s=2``).
    """
    policy = dataclasses.replace(policy or ClipPolicy(), **overrides)
    info = probe(source)
    width, height, fps = _clip_geometry(info, policy)
    pending: list[tuple[float, float, str | None]] = []
    for start, end, text in ranges:
        start, end = max(0.0, float(start)), float(end)
        if policy.max_s is not None and end - start > policy.max_s:
            end = start + policy.max_s
        if end - start < policy.min_s:
            yield ClipReject(start, end, text, "too_short", f"{end - start:.2f}s < min {policy.min_s}s")
        elif start >= info.duration_s > 0:
            yield ClipReject(start, end, text, "out_of_range", f"starts at {start:.2f}s, the video lasts {info.duration_s:.2f}s")
        else:
            pending.append((start, end, text))
    pending.sort(key=lambda r: (r[0], r[1]))
    if not pending:
        return
    active: list[tuple[float, float, str | None, ClipEncoder]] = []
    next_index = 0
    frame_dt = 1.0 / info.fps
    try:
        for t, frame in iter_frames(source):
            while next_index < len(pending) and pending[next_index][0] <= t + frame_dt / 2:
                start, end, text = pending[next_index]
                active.append((start, end, text, ClipEncoder(start, width, height, fps, policy)))
                next_index += 1
            still_open = []
            for start, end, text, encoder in active:
                if t >= end - 1e-6:
                    yield _close(start, end, text, encoder, policy)
                    continue
                if encoder.wants(t):
                    encoder.add(t, frame, _thumb(frame))
                still_open.append((start, end, text, encoder))
            active = still_open
            if not active and next_index >= len(pending):
                break  # nothing left to cut: stop decoding early
    except BaseException:
        for *_, encoder in active:
            encoder.abort()
        raise
    for start, end, text, encoder in active:  # ranges that run past the last frame
        yield _close(start, min(end, encoder.last_t + frame_dt), text, encoder, policy)
    for start, end, text in pending[next_index:]:
        yield ClipReject(start, end, text, "out_of_range", f"starts at {start:.2f}s, after the last decoded frame")


def _close(start: float, end: float, text: str | None, encoder: ClipEncoder, policy: ClipPolicy) -> ClipResult | ClipReject:
    verdict = encoder.verdict()
    if encoder.frames == 0:
        encoder.abort()
        return ClipReject(start, end, text, "too_short", "no frame fell inside the range")
    data = encoder.finish()
    covered = encoder.frames / encoder.fps
    if covered + 1e-6 < policy.min_s:
        return ClipReject(start, end, text, "too_short", f"only {covered:.2f}s of video inside the range (min {policy.min_s}s)")
    if verdict is not None:
        return ClipReject(start, end, text, *verdict)
    return ClipResult(start, end, text, data, encoder.fps, encoder.frames, encoder.width, encoder.height)


@dataclasses.dataclass(frozen=True)
class ShotDetector:
    """PySceneDetect ``ContentDetector``'s rule: a cut where the mean absolute change of
    H, S and V between consecutive thumbnails exceeds ``threshold`` (0–255 scale, its
    default 27) and the current shot is at least ``min_shot_s`` long."""

    threshold: float = 27.0
    min_shot_s: float = 0.6

    def score(self, previous: np.ndarray, current: np.ndarray) -> float:
        diff = np.abs(current - previous)
        # hue is circular: a change from 250 to 5 is small
        diff[..., 0] = np.minimum(diff[..., 0], 255.0 - diff[..., 0])
        return float(diff.mean())


def detect_shots(source: str | bytes, detector: ShotDetector | None = None) -> list[tuple[float, float]]:
    """Shot (start_s, end_s) spans of a video from one decoding pass."""
    detector = detector or ShotDetector()
    shots: list[tuple[float, float]] = []
    start = 0.0
    previous: np.ndarray | None = None
    last_t = 0.0
    frame_dt = 0.0
    for t, frame in iter_frames(source):
        hsv = _rgb_to_hsv(_thumb(frame))
        if previous is not None and t - start >= detector.min_shot_s and detector.score(previous, hsv) > detector.threshold:
            shots.append((start, t))
            start = t
        frame_dt = t - last_t if t > last_t else frame_dt
        previous, last_t = hsv, t
    shots.append((start, last_t + frame_dt))
    return shots


def cut_shots(
    source: str | bytes,
    policy: ClipPolicy | None = None,
    detector: ShotDetector | None = None,
    **overrides: Any,
) -> Iterator[ClipResult | ClipReject]:
    """Clips at detected shot boundaries, in one decoding pass (shots longer than
    ``max_s`` are split into consecutive ``max_s`` pieces)."""
    policy = dataclasses.replace(policy or ClipPolicy(), **overrides)
    detector = detector or ShotDetector()
    info = probe(source)
    width, height, fps = _clip_geometry(info, policy)
    encoder: ClipEncoder | None = None
    shot_start = 0.0
    previous: np.ndarray | None = None
    last_t = 0.0
    try:
        for t, frame in iter_frames(source):
            rgb = _thumb(frame)
            hsv = _rgb_to_hsv(rgb)
            cut = previous is not None and t - shot_start >= detector.min_shot_s and detector.score(previous, hsv) > detector.threshold
            too_long = policy.max_s is not None and t - shot_start >= policy.max_s - 1e-6
            if encoder is not None and (cut or too_long):
                yield _close(shot_start, t, None, encoder, policy)
                encoder, shot_start = None, t
            if encoder is None:
                encoder = ClipEncoder(t, width, height, fps, policy)
                shot_start = t
            if encoder.wants(t):
                encoder.add(t, frame, rgb)
            previous, last_t = hsv, t
    except BaseException:
        if encoder is not None:
            encoder.abort()
        raise
    if encoder is not None:
        yield _close(shot_start, last_t + 1.0 / info.fps, None, encoder, policy)


# ------------------------------------------------------------------ helpers
def _even(value: int) -> int:
    return max(2, int(value) // 2 * 2)


def _name(source: str | bytes) -> str:
    return "<bytes>" if isinstance(source, bytes) else source


def _short(exc: BaseException) -> str:
    return (str(exc) or type(exc).__name__).splitlines()[0][:200]
