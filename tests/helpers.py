"""Paths of the real sample files and small helpers shared by tests."""

from __future__ import annotations

from pathlib import Path

DATA = Path(__file__).resolve().parent / "data"
CT_DIR = DATA / "ct_3slice_seg"
XRAY_DIR = DATA / "chest_xray_nih"
TEST_SALT = "test-salt-not-secret"


def pydicom_file(name: str) -> Path:
    """A file pydicom ships in its wheel (never its download fallback)."""
    import pydicom

    path = Path(pydicom.__file__).resolve().parent / "data" / "test_files" / name
    assert path.exists(), f"pydicom does not ship {name}"
    return path


def write_h264(path: Path, frames, *, rate: int, crf: int = 18, time_base=None) -> Path:
    """An H.264 video of ``frames``, (pts, RGB array) pairs; ``time_base`` (a Fraction)
    gives the pts their clock (default 1 / ``rate``: pts are frame indices)."""
    import av
    import numpy as np

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(crf), "preset": "ultrafast"}
        if time_base is not None:
            stream.time_base = stream.codec_context.time_base = time_base
        for index, (pts, pixels) in enumerate(frames):
            if index == 0:  # the size of the first frame
                stream.height, stream.width = pixels.shape[:2]
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(pixels, np.uint8), format="rgb24")
            frame.pts = pts
            if time_base is not None:
                frame.time_base = time_base
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
