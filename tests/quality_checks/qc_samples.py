"""Realistic canonical rows for each family, built from real images in tests/data.

* CT: the three real DICOM slices (SimpleITK series read), windowed to 8-bit PNG
  (W400/L40); masks from the real label map ``liver_spine_seg.nrrd`` resampled onto the
  CT grid (label 1 liver, 2 spine); clicks = foreground pixel nearest the centroid.
* XR: the two NIH ChestX-ray14 radiographs.
* CFP: scikit-image's bundled real fundus photograph (``skimage.data.retina``).
* SURG: a real radiograph panned as a camera would move, encoded as H.264 with PyAV
  (no surgical video ships with the test data).
* medq_uni: Gaussian noise at three strengths on a real radiograph, PSNR measured.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from curation.schema import samples_to_table

DATA = Path(__file__).resolve().parents[1] / "data"
CT_DIR = DATA / "ct_3slice_seg"
XR_DIR = DATA / "chest_xray_nih"

#: PSNR bands the tests hand the gate (shape of synthesis.SEVERITY_BANDS)
TEST_BANDS: dict[str, dict[int, list[dict[str, Any]]]] = {
    "gaussian_noise": {
        1: [{"metric": "psnr_db", "low": 30.0, "high": 50.0}],
        2: [{"metric": "psnr_db", "low": 24.0, "high": 30.0}],
        3: [{"metric": "psnr_db", "low": 12.0, "high": 24.0}],
    }
}
NOISE_SIGMA = {1: 4.0, 2: 11.0, 3: 26.0}


def png_bytes(array: np.ndarray, mode: str | None = None) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array, mode=mode).save(buffer, format="PNG")
    return buffer.getvalue()


def mask_png(mask: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(mask.astype(bool)).convert("1").save(buffer, format="PNG")
    return buffer.getvalue()


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def provenance(steps: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "pipeline_version": "0.1.0",
        "steps_json": json.dumps(steps or [{"name": "test_fixture"}]),
        "run_id": "test-run",
        "created_at": dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    }


def image_entry(array: np.ndarray, role: str = "input") -> dict[str, Any]:
    channels = 1 if array.ndim == 2 else array.shape[2]
    return {
        "role": role, "data": png_bytes(array), "format": "png",
        "width": int(array.shape[1]), "height": int(array.shape[0]),
        "channels": channels, "bit_depth": 8,
    }


def base_row(dataset: str, source: str, uri: str, modality: str, task: str, split: str, subject: str) -> dict[str, Any]:
    return {
        "sample_id": sha(f"{dataset}|{source}|{uri}|{task}")[:32],
        "dataset": dataset, "source": source, "source_uri": uri, "source_sha256": sha(uri),
        "modality": modality, "task": task, "split": split, "subject_key": sha("subject:" + subject)[:16],
        "provenance": provenance(),
    }


@functools.cache
def ct_slices() -> tuple[np.ndarray, np.ndarray]:
    """(windowed uint8 slices z*y*x, label map z*y*x) of the real CT and its segmentation."""
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(CT_DIR)))
    ct = reader.Execute()
    seg = sitk.ReadImage(str(CT_DIR / "liver_spine_seg.nrrd"))
    seg = sitk.Resample(seg, ct, sitk.Transform(), sitk.sitkNearestNeighbor, 0, seg.GetPixelID())
    hu = sitk.GetArrayFromImage(ct).astype(np.float32)
    low, high = 40 - 200, 40 + 200
    windowed = np.clip((hu - low) / (high - low) * 255.0, 0, 255).astype(np.uint8)
    return windowed, sitk.GetArrayFromImage(seg)


@functools.cache
def xrays() -> tuple[np.ndarray, ...]:
    return tuple(np.asarray(Image.open(p).convert("L")) for p in sorted(XR_DIR.glob("*.png")))


@functools.cache
def fundus() -> np.ndarray:
    from skimage import data

    image = Image.fromarray(data.retina()).resize((384, 384), Image.Resampling.BILINEAR)
    return np.asarray(image)


def mask_entry(mask: np.ndarray, label: str, category: str) -> dict[str, Any]:
    ys, xs = np.nonzero(mask)
    cy, cx = ys.mean(), xs.mean()
    nearest = int(np.argmin((ys - cy) ** 2 + (xs - cx) ** 2))
    box = [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]
    return {
        "label": label, "category": category, "data": mask_png(mask), "area_px": int(mask.sum()),
        "bbox_xyxy": box, "clicks_xy": [[int(xs[nearest]), int(ys[nearest])]],
        "box_prompt_xyxy": [box[0] - 3, box[1] + 2, box[2] + 4, box[3] - 1],
    }


def imed_rows() -> list[dict[str, Any]]:
    windowed, labels = ct_slices()
    rows = []
    for z in range(windowed.shape[0]):
        uri = f"{CT_DIR}/0{z + 1}.dcm#slice={z}"
        row = base_row("imed", "dcmqi-ct", uri, "CT", "interactive_seg", "train", "ct-patient-1")
        row["images"] = [image_entry(windowed[z])]
        row["masks"] = [
            mask_entry(labels[z] == value, name, name)
            for value, name in ((1, "liver"), (2, "spine"))
            if (labels[z] == value).sum() > 0
        ]
        row["labels"] = [m["category"] for m in row["masks"]]
        rows.append(row)
    return rows


def unimed_rows() -> list[dict[str, Any]]:
    rows = []
    answers = ["The lungs are clear; no consolidation or effusion is seen.",
               "There is cardiomegaly with mild interstitial opacities."]
    for index, (image, answer) in enumerate(zip(xrays(), answers, strict=True)):
        row = base_row("unimed", "nih-cxr14", f"{XR_DIR}/xr{index}.png", "XR", "vqa",
                       ("train", "val")[index], f"xr-patient-{index}")
        row["images"] = [image_entry(image)]
        row["conversations"] = [
            {"from": "human", "value": "<image>\nDescribe the findings of this chest radiograph."},
            {"from": "gpt", "value": answer},
        ]
        row["curriculum_stage"] = 2
        rows.append(row)
    return rows


def retinalogos_rows() -> list[dict[str, Any]]:
    image = fundus()
    grounded = [{"name": "caption", "grounding": {"ok": True, "problems": []}, "kept": "llm"}]
    captions = ["Colour fundus photograph of a left eye: the optic disc is well defined, "
                "vessels are of normal calibre, no haemorrhages or exudates.",
                "Fundus image with a clear optic disc and normal retinal vasculature; grade 0 retinopathy."]
    rows = []
    for index, caption in enumerate(captions):
        view = image if index == 0 else image[:, ::-1].copy()
        row = base_row("retinalogos", "skimage-retina", f"retina.jpg#view={index}", "CFP", "caption",
                       "train", f"eye-{index}")
        row["images"] = [image_entry(view)]
        row["caption"] = caption
        row["labels"] = ["optic disc normal", "vessels normal"]
        row["provenance"] = provenance(grounded)
        rows.append(row)
    return rows


def encode_clip(frames: list[np.ndarray], fps: int = 25) -> bytes:
    import av

    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = frames[0].shape[1], frames[0].shape[0]
        stream.pix_fmt = "yuv420p"
        stream.options = {"preset": "ultrafast", "crf": "23"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="gray")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buffer.getvalue()


@functools.cache
def panning_clip(seconds: float = 5.5, fps: int = 25, frozen: bool = False) -> bytes:
    """A real radiograph panned left to right (camera motion); ``frozen`` repeats one frame."""
    source = xrays()[0]
    count = int(seconds * fps)
    frames = []
    for i in range(count):
        x = 0 if frozen else int(i * (source.shape[1] - 160) / max(1, count - 1))
        frames.append(np.ascontiguousarray(source[176:336, x:x + 160]))
    return encode_clip(frames, fps)


def ophora_rows() -> list[dict[str, Any]]:
    clip = panning_clip()
    rows = []
    for index in range(2):
        row = base_row("ophora", "demo-surgery", f"surgery.mp4#clip={index}", "SURG", "video_instruction",
                       "train", "surgery-video-1")
        row["video"] = {"data": clip, "format": "mp4", "fps": 25.0, "num_frames": 137, "width": 160,
                        "height": 160, "start_s": 5.5 * index, "end_s": 5.5 * (index + 1)}
        row["conversations"] = [
            {"from": "human", "value": "<video>\nWhat is the surgeon doing?"},
            {"from": "gpt", "value": "The surgeon moves the instrument across the field to expose the capsule."},
        ]
        rows.append(row)
    return rows


def noisy(clean: np.ndarray, severity: int, seed: int = 0) -> tuple[np.ndarray, float]:
    rng = np.random.default_rng(seed + severity)
    degraded = np.clip(clean + rng.normal(0.0, NOISE_SIGMA[severity], clean.shape), 0, 255).astype(np.uint8)
    mse = float(np.mean((degraded.astype(float) - clean.astype(float)) ** 2))
    return degraded, 10.0 * np.log10(255.0**2 / mse)


VERDICT_BY_SEVERITY = {1: "good", 2: "usable", 3: "reject"}


def medq_rows() -> list[dict[str, Any]]:
    clean = np.asarray(Image.fromarray(xrays()[1]).resize((256, 256), Image.Resampling.BILINEAR))
    rows = []
    for severity in (1, 2, 3):
        degraded, psnr = noisy(clean, severity)
        uri = f"{XR_DIR}/00027426_000.png"
        row = base_row("medq_uni", "nih-cxr14", uri, "XR", "quality_assessment", "test", "xr-patient-9")
        row["sample_id"] = sha(f"{uri}|noise|{severity}")[:32]
        row["images"] = [image_entry(clean, "clean"), image_entry(degraded, "degraded")]
        row["degradation"] = {"type": "gaussian_noise", "severity": severity,
                              "params_json": json.dumps({"sigma": NOISE_SIGMA[severity]}),
                              "psnr_db": float(psnr), "ssim": None}
        verdict = VERDICT_BY_SEVERITY[severity]
        row["quality"] = {"verdict": verdict,
                          "description": f"Gaussian noise with sigma {NOISE_SIGMA[severity]} obscures fine "
                                         f"detail (PSNR {psnr:.1f} dB). Overall, the quality of this image is {verdict}."}
        rows.append(row)
    return rows


FAMILY_ROWS = {
    "imed": imed_rows, "unimed": unimed_rows, "retinalogos": retinalogos_rows,
    "ophora": ophora_rows, "medq_uni": medq_rows,
}


def write_shard(rows: list[dict[str, Any]], path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(samples_to_table(rows), str(path), compression="zstd")
    return str(path)


def table_of(rows: list[dict[str, Any]]) -> pa.Table:
    return samples_to_table(rows)
