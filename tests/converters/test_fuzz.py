"""Fuzzing every converter with damaged copies of real seeds (hypothesis).

Each example takes a real file (pydicom's shipped DICOMs, a JPEG-compressed DICOM, a
PNG cut from the real chest radiograph, volumes written by SimpleITK, a video written by
PyAV, transcripts, sparse masks, a zip) and truncates it, flips bits in it, or overwrites
part of its header. Discovery plus conversion must then: not raise, finish within a
bounded time, and account for every item as rows or a reject with a *specific* reason
(``converter_error``, the catch-all for unexpected exceptions, counts as a failure).
Examples are few and derandomised so the whole module stays well under a minute.
"""

from __future__ import annotations

import datetime as dt
import io
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import av
import numpy as np
import pytest
import scipy.sparse
import SimpleITK as sitk
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from converters.base import ConversionError, ConvertOptions
from converters.discover import discover
from converters.stage import convert_item
from converters.text import parse_transcript, read_records, read_table
from converters.video import ClipReject, ClipResult, cut_clips
from tests.helpers import TEST_SALT, XRAY_DIR, pydicom_file

OPTS = ConvertOptions(dataset="fuzz", source="fuzz", salt=TEST_SALT, video_clip_s=1.0)
#: the most one damaged item may take (decoders on 100 kB inputs finish in milliseconds)
ITEM_SECONDS = 10.0
FUZZ = settings(
    max_examples=30,
    deadline=dt.timedelta(seconds=20),
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)


def _png_seed() -> bytes:
    with Image.open(XRAY_DIR / "00000001_000.png") as img:
        crop = img.convert("L").crop((400, 400, 464, 448))
    out = io.BytesIO()
    crop.save(out, format="PNG")
    return out.getvalue()


def _volume_seed(ext: str) -> bytes:
    image = sitk.GetImageFromArray(np.arange(4 * 6 * 5, dtype=np.int16).reshape(4, 6, 5))
    image.SetSpacing((0.8, 0.8, 2.0))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"v{ext}"
        sitk.WriteImage(image, str(path))
        return path.read_bytes()


def _nifti2_seed() -> bytes:
    import nibabel as nib

    image = nib.Nifti2Image(np.arange(5 * 6 * 4, dtype=np.int16).reshape(5, 6, 4), np.diag([0.8, 0.8, 2.0, 1.0]))
    return image.to_bytes()


def _video_seed() -> bytes:
    out = io.BytesIO()
    with av.open(out, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 32, 24, "yuv420p"
        for index in range(20):
            frame = av.VideoFrame.from_ndarray(np.full((24, 32, 3), index * 12, np.uint8), format="rgb24")
            frame.pts = index
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return out.getvalue()


def _npz_seed() -> tuple[bytes, bytes]:
    mask = np.zeros((2, 8 * 8), bool)
    mask[0, :10] = True
    out = io.BytesIO()
    scipy.sparse.save_npz(out, scipy.sparse.csr_matrix(mask))
    image = io.BytesIO()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(image, format="PNG")
    return out.getvalue(), image.getvalue()


SEEDS: dict[str, tuple[str, Callable[[], bytes]]] = {
    "dicom_ct": (".dcm", lambda: pydicom_file("CT_small.dcm").read_bytes()),
    "dicom_mr_rle": (".dcm", lambda: pydicom_file("MR_small_RLE.dcm").read_bytes()),
    "dicom_jpeg": (".dcm", lambda: pydicom_file("SC_rgb_jpeg_dcmtk.dcm").read_bytes()),
    "dicom_j2k": (".dcm", lambda: pydicom_file("MR_small_jp2klossless.dcm").read_bytes()),
    "png": (".png", _png_seed),
    "nifti": (".nii.gz", lambda: _volume_seed(".nii.gz")),
    "nifti2": (".nii", _nifti2_seed),  # uncompressed: damage reaches the header the NIfTI-2 rewrite reads
    "nrrd": (".nrrd", lambda: _volume_seed(".nrrd")),
    "mha": (".mha", lambda: _volume_seed(".mha")),
    "mp4": (".mp4", _video_seed),
}
_CACHE: dict[str, bytes] = {}


def seed(name: str) -> bytes:
    if name not in _CACHE:
        _CACHE[name] = SEEDS[name][1]()
    return _CACHE[name]


@st.composite
def damage(draw: st.DrawFn, data: bytes) -> bytes:
    """Truncate, flip bits, or overwrite a header region of ``data``."""
    kind = draw(st.sampled_from(["truncate", "flip", "mangle"]))
    if kind == "truncate":
        return data[: draw(st.integers(0, len(data) - 1))]
    buf = bytearray(data)
    if kind == "flip":
        for _ in range(draw(st.integers(1, 16))):
            pos = draw(st.integers(0, len(buf) - 1))
            buf[pos] ^= 1 << draw(st.integers(0, 7))
        return bytes(buf)
    start = draw(st.integers(0, min(len(buf) - 1, 1024)))
    patch = draw(st.binary(min_size=1, max_size=64))
    buf[start : start + len(patch)] = patch
    return bytes(buf)


KNOWN_REASONS = {
    "unreadable", "truncated", "empty_file", "bad_header", "not_dicom", "no_pixel_data", "pixel_decode_failed",
    "unsupported_format", "unsupported_dimension", "unsupported_pixel_type", "too_large", "bad_label_map",
    "label_grid_mismatch", "orphan_label_map", "no_video_stream", "no_usable_clip", "no_samples",
    "burned_in_annotation", "burned_in_unknown", "mask_size_mismatch", "bad_archive", "unsafe_archive_member", "timeout",
}


def account_for(files: dict[str, bytes]) -> None:
    """Discover and convert ``files``; every item converted or rejected for a known reason."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for name, data in files.items():
            (root / name).write_bytes(data)
        found = discover([str(root)])
        reasons = [r.reason for r in found.rejects]
        for item in found.items:
            started = time.perf_counter()
            rows, reject = convert_item(item, OPTS)
            assert time.perf_counter() - started < ITEM_SECONDS, item["key"]
            assert rows or reject is not None
            if reject is not None:
                reasons.append(reject.reason)
                assert reject.detail
        unknown = [r for r in reasons if r not in KNOWN_REASONS]
        assert not unknown, unknown


@pytest.mark.parametrize("name", sorted(SEEDS))
def test_seed_itself_converts(name):
    ext, _ = SEEDS[name]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"seed{ext}"
        path.write_bytes(seed(name))
        found = discover([tmp])
        assert found.rejects == [] and len(found.items) == 1
        rows, reject = convert_item(found.items[0], OPTS)
        assert reject is None and rows, reject


@pytest.mark.parametrize("name", sorted(SEEDS))
def test_damaged_inputs_are_converted_or_rejected_with_a_reason(name):
    ext, _ = SEEDS[name]

    @FUZZ
    @given(data=damage(seed(name)))
    def check(data: bytes) -> None:
        account_for({f"item{ext}": data})

    check()


@FUZZ
@given(image=damage(_npz_seed()[1]), masks=damage(_npz_seed()[0]))
def test_damaged_image_with_sparse_masks(image, masks):
    account_for({"x.png": image, "x.npz": masks})


@FUZZ
@given(data=damage(b"1\n00:00:01,000 --> 00:00:02,500\nInsert the lens\n\n2\n00:00:03,000 --> 00:00:04,000\nDone\n"))
def test_damaged_transcripts_parse_or_raise_conversion_errors(data):
    try:
        segments = parse_transcript(data.decode("utf-8", "replace"))
    except ConversionError as err:
        assert err.reason == "bad_transcript"
    else:
        assert all(s.end_s >= s.start_s for s in segments)


@FUZZ
@given(data=damage(b'[{"image_name": "a.jpg", "question": "Is this normal?", "answer": "yes"}]\n'))
def test_damaged_json_and_csv_raise_conversion_errors_only(data):
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("q.json", "q.jsonl", "t.csv"):
            (Path(tmp) / name).write_bytes(data)
            try:
                read_table(str(Path(tmp) / name)) if name.endswith(".csv") else read_records(str(Path(tmp) / name))
            except ConversionError as err:
                assert err.reason in ("bad_json", "bad_table", "empty_file", "bad_encoding")


@FUZZ
@given(data=damage(seed("mp4")))
def test_damaged_video_clip_cutting_yields_results_or_conversion_errors(data):
    try:
        outcome = list(cut_clips(data, [(0.0, 1.0, "a"), (0.5, 1.9, "b")], min_s=0.2))
    except ConversionError as err:
        assert err.reason in KNOWN_REASONS
    else:
        assert len(outcome) == 2 and all(isinstance(r, ClipResult | ClipReject) for r in outcome)


@FUZZ
@given(data=damage(pydicom_file("CT_small.dcm").read_bytes()))
def test_damaged_members_of_a_zip_archive(data):
    out = io.BytesIO()
    import zipfile

    with zipfile.ZipFile(out, "w") as zf:
        zf.writestr("study/ct.dcm", data)
        zf.writestr("study/ok.dcm", pydicom_file("MR_small.dcm").read_bytes())
    account_for({"a.zip": out.getvalue()})


def test_damaged_archive_bytes_are_a_reject(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    out = io.BytesIO()
    import zipfile

    with zipfile.ZipFile(out, "w") as zf:
        zf.writestr("x.dcm", pydicom_file("CT_small.dcm").read_bytes())
    (src / "a.zip").write_bytes(out.getvalue()[:-30])
    found = discover([str(src)])
    assert found.items == [] and [r.reason for r in found.rejects] == ["bad_archive"]
    shutil.rmtree(src)
