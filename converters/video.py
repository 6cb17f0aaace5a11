"""Video (MP4/AVI/MOV/MKV) → H.264 clips, by time ranges or by detected shots.

Everything streams: a video is decoded once, front to back, and each frame is handed to
the clip encoders whose range contains it; a clip's bytes are yielded as soon as its
range closes. Memory therefore depends on the clip length and the frame size, never on
the video length (``bench/video.py`` measures it on a 10-minute video).

Clips are cut and measured in seconds of source time: pts × time_base minus the
container's start time (:func:`start_time`, the stream's when the container states
none), i.e. the playback clock a player and a transcript use, also for an MPEG-TS
starting at 1.4 s. They are re-encoded
with libx264 (PyAV) at a configurable, constant frame rate and size: each output tick
shows the latest source frame at or before it (ffmpeg's ``fps`` filter), so a
variable-frame-rate video plays as long as the span it was cut from. Clips are dropped
with a reason when they are too short, black (mean luma of nearly every frame
below ``black_luma``) or frozen (nearly every output frame showing no change: see
:meth:`ClipEncoder._encode`).
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
    """What a video holds, on the playback clock (see :func:`start_time`).

    ``duration_s`` is where the last frame ends in playback time, measured from the last
    packets' timestamps; the container's figure only when that cannot be read (see
    :func:`_pick_duration` for why the stated figure is not trusted)."""

    fps: float
    duration_s: float
    width: int
    height: int
    num_frames: int  # as the container states it, else duration × fps
    codec: str
    start_time_s: float = 0.0  # pts × time_base of playback time 0 (subtracted from every frame time)


@dataclasses.dataclass(frozen=True)
class ClipPolicy:
    """How clips are encoded and which are dropped.

    ``fps``/``size`` None keep the source's; ``size`` is (width, height) and is rounded to
    even numbers (H.264 4:2:0 needs them). A clip is *black* when ≥ ``bad_fraction`` of its
    frames have mean luma < ``black_luma`` (0–255), *frozen* when ≥ ``bad_fraction`` of
    its output frames show no change: a new source frame within ``frozen_diff`` of the
    one before, or one source frame on screen for over ``STILL_AFTER_S`` (a frame repeated
    to fill the output rate is not compared with itself); or when one source frame is
    shown for the whole clip.
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
    """Frame rate, duration, size and frame count of the first video stream, on the
    playback clock. The duration is checked against the frames themselves: the last
    packets' presentation times are read without decoding (see :func:`_packets_end_s`)."""
    with open_container(source) as container:
        stream = _video_stream(container, source)
        info, origin, stated = _header_info(container, stream, source)
        measured = None
        if stated is None or _seek_tail(container, stream, info.start_time_s + stated - _TAIL_S):
            measured = _packets_end_s(container, stream, info.fps, origin)
        slack, counted = _slack_s(stream.time_base, info.fps), bool(stream.frames)
    if measured is None and stated is not None:  # no seeking here: read every packet from the start
        with open_container(source) as container:
            measured = _packets_end_s(container, _video_stream(container, source), info.fps, origin)
    duration = _pick_duration(stated, measured, slack)
    frames = info.num_frames if counted else int(round(duration * info.fps))
    return dataclasses.replace(info, duration_s=duration, num_frames=frames)


def _video_stream(container: av.container.InputContainer, source: str | bytes) -> av.video.stream.VideoStream:
    if not container.streams.video:
        raise ConversionError("no_video_stream", f"{_name(source)}: the container has no video stream")
    return container.streams.video[0]


def start_time(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> Fraction:
    """The presentation time (pts × time_base, seconds, as an exact fraction: frame times
    computed with it carry no float noise) that is playback time 0.

    Transcripts (SRT/VTT) and players count from the start of playback, not from pts 0:
    an MPEG-TS typically starts at ~1.4 s, an MP4 with a B-frame delay a few hundredths
    in. ffmpeg shifts every stream by the container's ``start_time`` (the earliest stream
    start, so audio and video stay in sync) and so do players; the video stream's own
    start is the fallback, and pts are taken as they are when neither is known."""
    own = stream.start_time * stream.time_base if stream.start_time is not None and stream.time_base else None
    if container.start_time is not None:
        # the container's figure is rounded to microseconds: the stream's own start, when it is
        # that instant, keeps the first frame at exactly 0 (an MPEG-TS starting at 1/15 s)
        if own is not None and abs(own * av.time_base - container.start_time) < 1:
            return own
        return Fraction(container.start_time, av.time_base)
    return own if own is not None else Fraction(0)


def _header_info(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream, source: str | bytes
) -> tuple[VideoInfo, Fraction, float | None]:
    """What the headers say, without reading any packet: the info (its duration the stated
    one, 0 when none), the start time (:func:`start_time`) and the stated end (None: none)."""
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    fps = float(rate) if rate else 0.0
    if not fps or not math.isfinite(fps) or fps <= 0 or fps > 1000:
        raise ConversionError("bad_header", f"{_name(source)}: video stream has no usable frame rate ({rate})")
    origin = start_time(container, stream)
    stated = _stated_end_s(container, stream, fps, origin)
    duration = stated or 0.0
    frames = int(stream.frames) if stream.frames else int(round(duration * fps))
    width, height = int(stream.codec_context.width or 0), int(stream.codec_context.height or 0)
    if width <= 0 or height <= 0:
        raise ConversionError("bad_header", f"{_name(source)}: video stream has no frame size")
    return VideoInfo(fps, duration, width, height, frames, stream.codec_context.name, float(origin)), origin, stated


def _stated_end_s(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream, fps: float, origin: Fraction
) -> float | None:
    """Where the headers say the video ends, in playback time; None when they say nothing.

    The stream's duration counts from the stream's own start, which may lie after the
    container's (video delayed behind audio); the container's duration already counts
    from the playback start."""
    if stream.duration and stream.time_base:
        begin = stream.start_time * stream.time_base if stream.start_time is not None else origin
        return float(begin - origin) + float(stream.duration * stream.time_base)
    if container.duration:
        return container.duration / av.time_base
    if stream.frames:
        return stream.frames / fps
    return None


#: how far before the stated end :func:`probe` starts reading packets (seconds)
_TAIL_S = 2.0


def _seek_tail(container: av.container.InputContainer, stream: av.video.stream.VideoStream, from_s: float) -> bool:
    """Move the demuxer to the keyframe at or before presentation time ``from_s`` (pts ×
    time_base in seconds, not shifted to playback time), where :func:`_packets_end_s`
    starts reading: seeking keeps probing cheap on long videos. False when the container
    cannot seek there."""
    if not stream.time_base:
        return False
    try:
        container.seek(int(max(0.0, from_s) / float(stream.time_base)), backward=True, any_frame=False, stream=stream)
    except (av.error.FFmpegError, OverflowError, ValueError):
        return False
    return True


def _packets_end_s(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream, fps: float, origin: Fraction
) -> float | None:
    """Where the last frame ends in playback time, from the timestamps of the packets
    from the demuxer's position to the end of the file (no decoding: a fraction of the
    cost). Packets carry no reliable duration for the last frame (an MP4 muxer writes
    whatever the encoder guessed), so it lasts as in :func:`cut_clips`: as long as the
    interval before it, or 1 / fps. None when no packet has a timestamp; a damaged tail
    ends the reading (decoding will report it)."""
    base = stream.time_base
    if not base:
        return None
    last: int | None = None  # the two largest distinct timestamps
    before: int | None = None
    try:
        for packet in container.demux(stream):
            pts = packet.pts if packet.pts is not None else packet.dts
            if pts is None or not packet.size:
                continue
            if last is None or pts > last:
                last, before = int(pts), last
            elif pts < last and (before is None or pts > before):
                before = int(pts)
    except (av.error.FFmpegError, ValueError):
        pass
    if last is None:
        return None
    gap = float((last - before) * base) if before is not None else None
    return float(last * base - origin) + _last_frame_s(gap, 1.0 / fps, _slack_s(base, fps))


def _pick_duration(stated: float | None, measured: float | None, slack_s: float) -> float:
    """The end of the frames when it could be measured, else the stated figure.

    A stated duration is often not where the video's frames end: a variable-frame-rate
    MP4 understates it, a container with longer audio overstates it, and a Matroska file
    whose timestamps start at 1.4 s states its end on the raw clock (4.4 s for 3 s of
    video) while an MPEG-TS states end − start. The stated figure is kept when the two
    agree within ``slack_s`` (float noise must not move a constant-rate video's clips)."""
    if measured is None or (stated is not None and abs(measured - stated) <= slack_s):
        return stated if stated is not None else 0.0
    return measured


def _frame_s(frame: av.VideoFrame, origin: Fraction) -> float:
    """A frame's playback time: pts × time_base − ``origin``, computed exactly; a stream
    starting at 0 keeps PyAV's ``frame.time`` to the last bit."""
    if not origin or frame.pts is None or not frame.time_base:
        return float(frame.time)
    return float(frame.pts * frame.time_base - origin)


def iter_frames(source: str | bytes) -> Iterator[tuple[float, av.VideoFrame]]:
    """(playback time in seconds, frame) of every decoded frame, in order: pts × time_base
    minus the start time (:func:`start_time`), so that 2 s is what a player shows at
    2 s. Corrupt data ends the video with a ``ConversionError`` naming the time reached."""
    with open_container(source) as container:
        stream = _video_stream(container, source)
        stream.thread_type = "AUTO"
        info, origin, _ = _header_info(container, stream, source)
        count = 0
        reached = 0.0
        try:
            for frame in container.decode(stream):
                t = _frame_s(frame, origin) if frame.time is not None else count / info.fps
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
#: float noise allowed when a frame time is compared with an output tick (seconds)
_EPS_S = 1e-6


@dataclasses.dataclass(eq=False)
class TimedFrame:
    """A frame and its time in seconds of source time (pts × time_base − start time).

    The analysis thumbnail is made on first use: frames the resampler drops (a source
    denser than the output rate) then cost no thumbnail."""

    t: float
    frame: av.VideoFrame | np.ndarray
    _thumb: np.ndarray | None = None

    @property
    def thumb(self) -> np.ndarray:
        if self._thumb is None:
            if isinstance(self.frame, np.ndarray):
                raise ValueError(f"frame at {self.t:.3f}s is an array and was given no thumbnail")
            self._thumb = _thumb(self.frame)
        return self._thumb


def _slack_s(time_base: Fraction | None, fps: float) -> float:
    """How far after an output tick a source frame may lie and still count as "at" it.

    The rule is pts ≤ tick, but a tick is generally not representable on the source's
    clock: a 24 fps MKV stores frame 1 at 42 ms for a tick at 41.67 ms. One unit of the
    source ``time_base`` absorbs that rounding (so a constant-rate source neither drops nor
    repeats frames); it is at least float noise, and at most a quarter of a 1 / ``fps``
    output frame so that a coarse time base cannot move a frame to the wrong tick."""
    base = float(time_base) if time_base else 0.0
    return max(_EPS_S, min(base, 0.25 / fps))


#: a source frame on screen longer than this (or than twice the source's frame gap before
#: it, if shorter) is a still picture — a frozen stretch of a variable-rate recording —
#: not the normal hold of a slow but moving source
STILL_AFTER_S = 1.0


class ClipEncoder:
    """Encodes one clip to H.264/MP4 in memory at a constant rate, resampling in time.

    Output frame k is shown at clip time k / fps, i.e. source time ``start + k / fps``, and
    carries the latest source frame whose time is ≤ that tick (ffmpeg's ``fps`` filter):
    a frame is repeated across the ticks a sparse stretch of a variable-frame-rate source
    skips, and dropped when frames are denser than the output rate. The clip's playback
    time therefore equals the source time it covers, which keeps narration in sync.
    A constant-rate source cut at its own rate from a frame time gets one output frame per
    source frame, with the same timestamps as before this resampling existed.

    Feed frames in presentation order with :meth:`add`; :meth:`flush` at the clip's end
    emits the ticks the last frame covers, then :meth:`finish` returns the bytes.
    """

    def __init__(
        self, start_s: float, width: int, height: int, fps: float, policy: ClipPolicy, *, slack_s: float = _EPS_S
    ):
        self.start_s = start_s
        self.fps = fps
        self.width, self.height = _even(width), _even(height)
        self.policy = policy
        self.slack_s = slack_s
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
        self.frames = 0  # output frames encoded = ticks emitted
        self.held: TimedFrame | None = None  # the latest source frame, not yet shown at every tick it covers
        self._held_out: av.VideoFrame | None = None  # ``held`` converted to the output size and format
        self._held_dark = False  # ``held`` counts as black (worked out with ``_held_out``)
        self._held_still_after_s = STILL_AFTER_S  # on screen longer than this, ``held`` counts as frozen
        self._dark = 0
        self._still = 0
        self._held_gap_s: float | None = None  # source time from the frame before ``held`` to it
        self._unchanged = False  # the frame shown looks like the one shown before it
        self._judged = 0  # output frames from the clip's second source frame on (0: one picture so far)
        self._prev_thumb: np.ndarray | None = None

    def tick_s(self, index: int) -> float:
        """Source time of output frame ``index`` (from an integer count: no float drift)."""
        return self.start_s + index / self.fps

    def add(self, frame: TimedFrame) -> None:
        """Take the next source frame: the frame held so far is shown at every tick before it.

        The first frame of a clip opened on a frame later than ``start_s`` (nothing is
        known of the source before it) moves the clip's start to that frame. A frame whose
        time is not after the held one's (a damaged timestamp) replaces it, the latest
        decoded winning, as in ffmpeg."""
        gap = None
        if self.held is None:
            if frame.t > self.start_s + self.slack_s:
                self.start_s = frame.t
        else:
            self._emit_until(frame.t - self.slack_s)
            gap = frame.t - self.held.t
        self.held, self._held_out, self._held_gap_s = frame, None, gap

    def flush(self, end_s: float) -> None:
        """Show the held frame at the remaining ticks before ``end_s`` (the clip's end)."""
        self._emit_until(end_s - self.slack_s)

    def _emit_until(self, limit_s: float) -> None:
        """Encode the held frame at every pending tick earlier than ``limit_s``."""
        while self.held is not None and self.tick_s(self.frames) < limit_s:
            self._encode(self.held)

    def _encode(self, held: TimedFrame) -> None:
        """Encode ``held`` as output frame ``self.frames``; count it black or frozen.

        Black: the brightest channel (HSV value) is dark on average, counted per output
        frame (time on screen). Frozen, per output frame too: no channel changes from the
        source frame shown before (colour matters, two colours of equal luma are not the
        same picture), or the same source frame has been on screen for more than twice the
        source's own frame gap just before it (at most :data:`STILL_AFTER_S`) — a 1 fps
        recording of a moving scene shown at 25 fps is not frozen, a 30 fps recording that
        holds one picture for seconds is."""
        if self._held_out is None:
            source = held.frame
            if isinstance(source, np.ndarray):
                source = av.VideoFrame.from_ndarray(
                    np.ascontiguousarray(source), format="rgb24" if source.ndim == 3 else "gray"
                )
            self._held_out = self._reformatter.reformat(
                source, width=self.width, height=self.height, format="yuv420p", interpolation="AREA"
            )
            # once per source frame, however many ticks show it (a 1 fps source at 25 fps: 25)
            thumb = held.thumb
            self._held_dark = float(thumb.max(axis=-1).mean() if thumb.ndim == 3 else thumb.mean()) < self.policy.black_luma
            # the source's own pace just before: a hold far longer than that is a freeze
            self._held_still_after_s = min(2 * self._held_gap_s, STILL_AFTER_S) if self._held_gap_s else STILL_AFTER_S
        out = self._held_out
        out.pts = self.frames
        out.time_base = self._time_base
        for packet in self._stream.encode(out):
            self._container.mux(packet)
        on_screen_s = self.tick_s(self.frames) - held.t
        self.frames += 1
        self._dark += self._held_dark
        thumb = held.thumb
        previous, new_frame = self._prev_thumb, False
        if previous is not None and thumb is not previous:
            new_frame = True
            self._unchanged = float(np.abs(thumb - previous).mean()) < self.policy.frozen_diff
        if new_frame or self._judged:  # from the clip's second source frame on: the first has nothing to compare with
            self._judged += 1
            self._still += self._unchanged or on_screen_s > self._held_still_after_s
        self._prev_thumb = thumb

    def verdict(self) -> tuple[str, str] | None:
        """(reason, detail) when the clip is black or frozen, else None."""
        if self.frames and self._dark >= self.policy.bad_fraction * self.frames:
            return "black_clip", f"{self._dark}/{self.frames} frames have mean luma < {self.policy.black_luma}"
        if self.frames > 1 and not self._judged:  # one source frame held for the whole clip: a still
            return "frozen_clip", f"one source frame shown for all {self.frames} frames"
        if self._judged and self._still >= self.policy.bad_fraction * self._judged:
            return (
                "frozen_clip",
                f"{self._still}/{self._judged} frames show no change (< {self.policy.frozen_diff} grey levels, "
                f"or one picture held over {STILL_AFTER_S:g} s)",
            )
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
    no_thumb = np.zeros(1)
    index = -1
    for index, frame in enumerate(frames):
        if encoder is None:
            width, height = size or (frame.shape[1], frame.shape[0])
            encoder = ClipEncoder(0.0, width, height, fps, policy)
        encoder.add(TimedFrame(index / fps, frame, no_thumb))
    if encoder is None:
        raise ConversionError("no_samples", "no frames to encode")
    encoder.flush((index + 1) / fps)
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


def _last_frame_s(last_gap_s: float | None, nominal_s: float, slack_s: float) -> float:
    """How long the last decoded frame lasts: as long as the interval before it (a 5 fps
    stretch ends with a 0.2 s frame), the nominal 1 / fps when they agree or when there is
    no interval (the container's own last duration is often just the encoder's 1 / rate)."""
    if last_gap_s is None or last_gap_s <= 0 or abs(last_gap_s - nominal_s) <= slack_s:
        return nominal_s
    return last_gap_s


def cut_clips(
    source: str | bytes,
    ranges: Sequence[tuple[float, float, str | None]],
    policy: ClipPolicy | None = None,
    *,
    info: VideoInfo | None = None,
    **overrides: Any,
) -> Iterator[ClipResult | ClipReject]:
    """Clips for time ranges ``(start_s, end_s, text)`` (transcript cues, annotations).

    Ranges are in seconds of source time (pts × time_base − the start time: the playback
    clock transcripts use, see :func:`start_time`), and so are the clips' start,
    end and ``too_short`` durations: a clip shows at clip time x what the source shows at
    ``start_s + x`` (see :class:`ClipEncoder`), also for variable-frame-rate video.
    The video is decoded once; ranges may overlap and come in any order; results are
    yielded in order of range end. Each range yields exactly one :class:`ClipResult` or
    :class:`ClipReject`. ``overrides`` set :class:`ClipPolicy` fields (``fps=10``,
    ``size=(320, 240)``, ``min_s=2``). ``info``: the source's :func:`probe`, when the
    caller has it already (probing reads the file's head and tail).
    """
    policy = dataclasses.replace(policy or ClipPolicy(), **overrides)
    info = info or probe(source)
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
    active: list[tuple[float, str | None, ClipEncoder]] = []
    next_index = 0
    previous: TimedFrame | None = None
    last_gap: float | None = None
    slack = _EPS_S

    def open_clip(start: float, seed: TimedFrame | None) -> ClipEncoder:
        """An encoder for a range, given the frame on screen at its start if it precedes it."""
        encoder = ClipEncoder(start, width, height, fps, policy, slack_s=slack)
        if seed is not None:
            encoder.add(seed)
        return encoder

    try:
        for t, frame in iter_frames(source):
            current = TimedFrame(t, frame)
            if previous is None:
                slack = _slack_s(frame.time_base, fps)
            # a range opens on the first frame at or after its start, seeded with the frame before
            # it (the one on screen at the start) unless this frame lies on the start itself
            while next_index < len(pending) and pending[next_index][0] <= t + slack:
                start, end, text = pending[next_index]
                seed = previous if previous is not None and t > start + slack else None
                active.append((end, text, open_clip(start, seed)))
                next_index += 1
            still_open = []
            for end, text, encoder in active:
                if t >= end - slack:
                    encoder.flush(end)
                    yield _close(end, text, encoder, policy)
                    continue
                encoder.add(current)
                still_open.append((end, text, encoder))
            active = still_open
            last_gap = t - previous.t if previous is not None else None
            previous = current
            if not active and next_index >= len(pending):
                break  # nothing left to cut: stop decoding early
    except BaseException:
        for *_, encoder in active:
            encoder.abort()
        raise
    if previous is None:
        for start, end, text in pending[next_index:]:
            yield ClipReject(start, end, text, "out_of_range", f"starts at {start:.2f}s, no frame decodes")
        return
    video_end = previous.t + _last_frame_s(last_gap, 1.0 / info.fps, slack)
    for start, end, text in pending[next_index:]:  # ranges starting while the last frame is on screen
        if start < video_end - slack:
            active.append((end, text, open_clip(start, previous)))
        else:
            yield ClipReject(start, end, text, "out_of_range",
                             f"starts at {start:.2f}s, after the last decoded frame ends ({video_end:.2f}s)")
    for end, text, encoder in active:  # ranges that run past the last frame
        end = min(end, video_end)
        encoder.flush(end)
        yield _close(end, text, encoder, policy)


def _close(end: float, text: str | None, encoder: ClipEncoder, policy: ClipPolicy) -> ClipResult | ClipReject:
    """The clip ``[encoder.start_s, end)`` (the caller flushed the encoder to ``end``), or why it
    is dropped; its duration is source time, which is also its playback time."""
    start = encoder.start_s
    verdict = encoder.verdict()
    if encoder.frames == 0:
        encoder.abort()
        return ClipReject(start, end, text, "too_short", "no frame fell inside the range")
    data = encoder.finish()
    covered = end - start
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
    ``max_s`` are split into consecutive ``max_s`` pieces of source time: a piece whose
    boundary falls in a gap of a variable-frame-rate video starts with the frame on
    screen there)."""
    policy = dataclasses.replace(policy or ClipPolicy(), **overrides)
    detector = detector or ShotDetector()
    info = probe(source)
    width, height, fps = _clip_geometry(info, policy)
    encoder: ClipEncoder | None = None
    shot_start = 0.0
    previous: np.ndarray | None = None
    last: TimedFrame | None = None
    last_gap: float | None = None
    slack = _EPS_S
    try:
        for t, frame in iter_frames(source):
            current = TimedFrame(t, frame)
            if last is None:
                slack = _slack_s(frame.time_base, fps)
            hsv = _rgb_to_hsv(current.thumb)
            # pieces of max_s whose boundary no frame lands on (a gap longer than the rest of the piece)
            while encoder is not None and policy.max_s is not None and t > shot_start + policy.max_s + slack:
                boundary = shot_start + policy.max_s
                held = encoder.held
                encoder.flush(boundary)
                yield _close(boundary, None, encoder, policy)
                encoder, shot_start = ClipEncoder(boundary, width, height, fps, policy, slack_s=slack), boundary
                if held is not None:
                    encoder.add(held)
            cut = previous is not None and t - shot_start >= detector.min_shot_s and detector.score(previous, hsv) > detector.threshold
            too_long = policy.max_s is not None and t - shot_start >= policy.max_s - slack
            if encoder is not None and (cut or too_long):
                encoder.flush(t)
                yield _close(t, None, encoder, policy)
                encoder = None
            if encoder is None:
                encoder = ClipEncoder(t, width, height, fps, policy, slack_s=slack)
                shot_start = t
            encoder.add(current)
            last_gap = t - last.t if last is not None else None
            previous, last = hsv, current
    except BaseException:
        if encoder is not None:
            encoder.abort()
        raise
    if encoder is not None and last is not None:
        end = last.t + _last_frame_s(last_gap, 1.0 / info.fps, slack)
        encoder.flush(end)
        yield _close(end, None, encoder, policy)


# ------------------------------------------------------------------ helpers
def _even(value: int) -> int:
    return max(2, int(value) // 2 * 2)


def _name(source: str | bytes) -> str:
    return "<bytes>" if isinstance(source, bytes) else source


def _short(exc: BaseException) -> str:
    return (str(exc) or type(exc).__name__).splitlines()[0][:200]
