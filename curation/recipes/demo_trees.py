"""Small, realistic source trees per family, in the public datasets' layouts.

Real files where the project and its packages ship them (the CT series with liver /
spine / heart NRRD label maps and two NIH chest radiographs in ``flows/demo_data``,
pydicom's bundled CT and MR files, nibabel's bundled NIfTI); generated otherwise:
CT phantoms with label maps (MSD layout), fundus-like photographs with APTOS / IDRiD /
ODIR grading tables, short surgical-like videos with SRT / VTT narration and a phase
table, a VQA-RAD style JSON, reports with FINDINGS / IMPRESSION, T1/T2 phantom pairs and
class folders. Each tree also plants what the recipe must handle: an exact and a near
duplicate, a black and an over-exposed photograph, a video without narration, a static
cue, a cue the video ends in, a mask too small to keep.

``medcurate demo`` and the tests build from these trees; a user points the same recipe
at a real download instead (docs/families.md).
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

DEMO_DATA = Path(__file__).resolve().parents[2] / "flows" / "demo_data"
CT_DIR = DEMO_DATA / "ct_3slice_seg"
XRAY_DIR = DEMO_DATA / "chest_xray_nih"


def pydicom_file(name: str) -> Path:
    """A file from pydicom's own test folder (never its download fallback)."""
    import pydicom

    path = Path(pydicom.__file__).resolve().parent / "data" / "test_files" / name
    if not path.exists():
        raise FileNotFoundError(f"pydicom does not ship {name} in {path.parent}")
    return path


def nibabel_file(name: str) -> Path:
    import nibabel

    path = Path(nibabel.__file__).resolve().parent / "tests" / "data" / name
    if not path.exists():
        raise FileNotFoundError(f"nibabel does not ship {name} in {path.parent}")
    return path


# -- generated images --------------------------------------------------------------------
def fundus_image(size: int, seed: int, grade: int = 0, exposure: float = 1.0) -> np.ndarray:
    """A fundus-like RGB photograph: black border, orange-red disc of retina with a
    bright optic disc, dark vessels, and lesions that grow with the DR grade
    (microaneurysms ≥ 1, exudates ≥ 2, haemorrhages ≥ 3, new vessels 4)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    c = size / 2
    r = np.hypot(xx - c, yy - c) / (0.46 * size)
    fov = r <= 1.0
    # uneven illumination and pigmentation differ from eye to eye (and camera to camera)
    lx, ly = rng.uniform(-0.4, 0.4, 2) * size
    shade = np.clip(1.0 - rng.uniform(0.3, 0.6) * (np.hypot(xx - c - lx, yy - c - ly) / (0.46 * size)) ** 2, 0, 1)
    tint = rng.uniform(0.8, 1.1, 3)
    texture = np.asarray(Image.fromarray(rng.integers(0, 255, (size // 16, size // 16), dtype=np.uint8)).resize((size, size), Image.Resampling.BICUBIC), np.float32)
    rgb = np.zeros((size, size, 3), np.float32)
    rgb[..., 0] = (190 + 0.15 * texture) * shade * tint[0]
    rgb[..., 1] = (70 + 0.12 * texture) * shade * tint[1]
    rgb[..., 2] = 35 * shade * tint[2]
    img = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    side = 1 if seed % 2 else -1
    dx, dy = c + side * 0.22 * size, c + rng.uniform(-0.05, 0.05) * size
    for angle in rng.uniform(0, 2 * math.pi, 7):
        points = [(dx, dy)]
        x, y, a = dx, dy, angle
        for _ in range(8):
            a += rng.normal(0, 0.25)
            x, y = x + math.cos(a) * size * 0.06, y + math.sin(a) * size * 0.06
            points.append((x, y))
        draw.line(points, fill=(120, 25, 20), width=max(1, size // 90))
    rad = size * 0.06
    draw.ellipse([dx - rad, dy - rad, dx + rad, dy + rad], fill=(250, 215, 140))
    for kind, count, colour, radius in (
        ("ma", 4 * grade, (110, 10, 10), 1.2),
        ("ex", 5 * max(0, grade - 1), (235, 215, 90), 2.0),
        ("he", 3 * max(0, grade - 2), (90, 5, 5), 4.0),
    ):
        del kind
        for _ in range(count):
            px, py = c + rng.uniform(-0.3, 0.3) * size, c + rng.uniform(-0.3, 0.3) * size
            s = radius * size / 256
            draw.ellipse([px - s, py - s, px + s, py + s], fill=colour)
    if grade >= 4:
        draw.line([(c - 0.1 * size, c), (c + 0.05 * size, c + 0.08 * size)], fill=(160, 20, 30), width=1)
    out = np.asarray(img.filter(ImageFilter.GaussianBlur(0.6)), dtype=np.float32) * exposure
    out[~fov] = rng.normal(3, 1.5, (int((~fov).sum()), 3))
    return np.clip(out, 0, 255).astype(np.uint8)


def save(array: np.ndarray, path: Path, **kwargs: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **kwargs)
    return path


def ellipse_mask(shape: tuple[int, ...], centre: tuple[float, ...], radii: tuple[float, ...]) -> np.ndarray:
    grids = np.ogrid[tuple(slice(0, s) for s in shape)]
    total = sum(((g - c) / r) ** 2 for g, c, r in zip(grids, centre, radii, strict=True))
    return np.asarray(total <= 1.0)


def phantom_ct(seed: int, size: int = 96, depth: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """(HU volume [z, y, x] int16, label map uint8): body, liver (1), tumour (2), a speck (3)."""
    rng = np.random.default_rng(seed)
    shape = (depth, size, size)
    hu = np.full(shape, -1000, np.float32)
    body = ellipse_mask(shape, (depth / 2, size / 2, size / 2), (depth * 4, size * 0.42, size * 0.46))
    hu[body] = 30
    liver = ellipse_mask(shape, (depth / 2, size * 0.45, size * 0.38), (depth * 2, size * 0.18, size * 0.2)) & body
    hu[liver] = 60
    tumour = ellipse_mask(shape, (depth / 2, size * 0.45, size * 0.36), (depth, size * 0.05, size * 0.05)) & liver
    hu[tumour] = 20
    hu += rng.normal(0, 8, shape)
    labels = np.zeros(shape, np.uint8)
    labels[liver] = 1
    labels[tumour] = 2
    labels[:, int(size * 0.7), int(size * 0.6)] = 3  # a 1-voxel speck per slice: below 0.05%, dropped
    return hu.astype(np.int16), labels


def write_nifti(array_zyx: np.ndarray, path: Path, spacing: tuple[float, float, float] = (0.8, 0.8, 2.5)) -> Path:
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(array_zyx)
    image.SetSpacing(spacing)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path))
    return path


def write_video(path: Path, frames: list[np.ndarray], fps: int) -> Path:
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "28", "preset": "ultrafast"}
        for array in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def surgery_frames(seconds: float, fps: int, seed: int, static: tuple[float, float] | None = None,
                   black: tuple[float, float] | None = None, size: tuple[int, int] = (160, 120)) -> list[np.ndarray]:
    """A microscope-view-like scene: an eye (iris, pupil) and an instrument sweeping over
    it; frames inside ``static`` repeat one frame, inside ``black`` are black."""
    width, height = size
    rng = np.random.default_rng(seed)
    base = np.zeros((height, width, 3), np.uint8)
    yy, xx = np.mgrid[0:height, 0:width]
    r = np.hypot(xx - width / 2, yy - height / 2)
    base[r < 50] = (190, 150, 140)
    base[r < 30] = (90, 120, 80)
    base[r < 14] = (20, 20, 25)
    frames: list[np.ndarray] = []
    held: np.ndarray | None = None
    for index in range(int(round(seconds * fps))):
        t = index / fps
        if black and black[0] <= t < black[1]:
            frames.append(np.zeros_like(base))
            continue
        if static and static[0] <= t < static[1] and held is not None:
            frames.append(held.copy())
            continue
        frame = Image.fromarray(base.copy())
        draw = ImageDraw.Draw(frame)
        x = width / 2 + 45 * math.sin(t * 1.7 + seed)
        y = height / 2 + 25 * math.cos(t * 1.3)
        draw.line([(x, y), (x + 40, y - 40)], fill=(225, 225, 230), width=3)
        array = np.asarray(frame).astype(np.int16) + rng.integers(-4, 5, (height, width, 3))
        held = np.clip(array, 0, 255).astype(np.uint8)
        frames.append(held)
    return frames


# -- trees -------------------------------------------------------------------------------
def write_retinalogos_tree(root: Path) -> Path:
    """APTOS 2019, IDRiD grading and ODIR-5K layouts, with planted QC failures and duplicates."""
    aptos = root / "aptos2019"
    rows = ["id_code,diagnosis"]
    for number, grade in enumerate((0, 1, 2, 3, 4, 2)):
        code = f"{0x1a2b3c + number * 7919:x}"
        save(fundus_image(256, 10 + number, grade), aptos / "train_images" / f"{code}.png")
        rows.append(f"{code},{grade}")
    save(np.zeros((256, 256, 3), np.uint8), aptos / "train_images" / "fblack00.png")
    rows.append("fblack00,0")
    save(fundus_image(256, 31, 1, exposure=2.6), aptos / "train_images" / "fbright0.png")
    rows.append("fbright0,1")
    shutil.copy2(aptos / "train_images" / f"{0x1a2b3c:x}.png", aptos / "train_images" / "fdupe000.png")
    rows.append("fdupe000,0")  # the same photograph uploaded twice: an exact duplicate
    rows.append("fmissing,2")  # graded, but the image is not in the download
    (aptos / "train.csv").write_text("\n".join(rows) + "\n")

    idrid = root / "idrid" / "B. Disease Grading"
    lines = ["Image name,Retinopathy grade,Risk of macular edema "]
    for number, (grade, dme) in enumerate(((2, 1), (4, 2), (0, 0)), start=1):
        name = f"IDRiD_{number:03d}"
        save(fundus_image(256, 40 + number, grade), idrid / "1. Original Images" / "a. Training Set" / f"{name}.jpg", quality=95)
        lines.append(f"{name},{grade},{dme}")
    table = idrid / "2. Groundtruths" / "a. IDRiD_Disease Grading_Training Labels.csv"
    table.parent.mkdir(parents=True, exist_ok=True)
    table.write_text("\n".join(lines) + "\n")

    odir = root / "odir5k"
    lines = ["ID,Patient Age,Patient Sex,Left-Fundus,Right-Fundus,Left-Diagnostic Keywords,Right-Diagnostic Keywords"]
    for number, (left, right) in enumerate(
        (("moderate non proliferative retinopathy，hard exudate", "normal fundus"), ("cataract", "glaucoma，drusen"))
    ):
        lines.append(f'{number},{60 + number},Female,{number}_left.jpg,{number}_right.jpg,"{left}","{right}"')
        for side in ("left", "right"):
            save(fundus_image(256, 60 + 2 * number + (side == "right"), 2 if "retinopathy" in left and side == "left" else 0),
                 odir / "Training Images" / f"{number}_{side}.jpg", quality=95)
    (odir / "full_df.csv").write_text("\n".join(lines) + "\n")
    return root


def write_ophora_tree(root: Path, fps: int = 10) -> Path:
    """Narrated videos (SRT and VTT), one without narration, and a Cataract-1K phase table."""
    narrated = root / "narrated"
    write_video(narrated / "case01.mp4", surgery_frames(14.0, fps, 1, static=(6.0, 12.0)), fps)
    (narrated / "case01.srt").write_text(
        "1\n00:00:00,500 --> 00:00:06,000\nMake the main incision with the keratome.\n\n"
        "2\n00:00:06,000 --> 00:00:12,000\nInject viscoelastic into the anterior chamber.\n\n"
        "3\n00:00:12,500 --> 00:00:13,900\nRemove the speculum.\n"
    )
    write_video(narrated / "case02.mp4", surgery_frames(12.0, fps, 2, black=(0.0, 5.6)), fps)
    (narrated / "case02.vtt").write_text(
        "WEBVTT\n\n00:00.000 --> 00:05.000\nThe microscope light is switched on.\n\n"
        "capsulorhexis\n00:06.000 --> 00:11.500\nPerform the capsulorhexis with the forceps.\n"
    )
    write_video(narrated / "case03.mp4", surgery_frames(4.0, fps, 3), fps)  # no narration: rejected
    phases = root / "cataract1k_phases"
    write_video(phases / "case_4687.mp4", surgery_frames(9.0, fps, 4), fps)
    (phases / "case_4687_annotations_phases.csv").write_text(
        "caseId,comment,frame,endFrame,sec,endSec\n4687,Phacoemulsification,5,60,0.5,6.0\n4687,Irrigation_Aspiration,60,88,6.0,8.8\n"
    )
    return root


def write_imed_tree(root: Path) -> Path:
    """An MSD-layout liver task of CT phantoms, the real CT series with NRRD label maps,
    and a Kvasir-SEG style 2D images/ + masks/ pair."""
    task = root / "Task03_Liver"
    for case in range(2):
        hu, labels = phantom_ct(case)
        write_nifti(hu, task / "imagesTr" / f"liver_{case}.nii.gz")
        write_nifti(labels, task / "labelsTr" / f"liver_{case}.nii.gz")
    (task / "dataset.json").write_text(
        json.dumps(
            {
                "name": "Liver", "modality": {"0": "CT"},
                "labels": {"0": "background", "1": "Liver", "2": "liver tumour", "3": "hepatic vessel"},
                "numTraining": 2,
                "training": [{"image": f"./imagesTr/liver_{c}.nii.gz", "label": f"./labelsTr/liver_{c}.nii.gz"} for c in range(2)],
            },
            indent=2,
        )
    )
    ct = root / "ct_liver_spine_heart"
    ct.mkdir(parents=True, exist_ok=True)
    for file in CT_DIR.iterdir():
        shutil.copy2(file, ct / file.name)
    polyps = root / "kvasir_seg"
    rng = np.random.default_rng(5)
    for number in range(2):
        image = np.clip(rng.normal(150, 20, (128, 160, 3)), 0, 255).astype(np.uint8)
        mask = ellipse_mask((128, 160), (60 + 10 * number, 70), (22, 30))
        image[mask] = (200, 90, 80)
        save(image, polyps / "images" / f"cju{number}d.jpg", quality=95)
        save((mask * 255).astype(np.uint8), polyps / "masks" / f"cju{number}d.jpg", quality=95)
    return root


def write_unimed_tree(root: Path) -> Path:
    """VQA-RAD JSON over real chest X-rays, APTOS-style CSV, class folders with a planted
    near duplicate, IU-X-ray-style reports, the real CT with label maps (region questions),
    and T1/T2 phantom pairs."""
    xrays = sorted(XRAY_DIR.glob("*.png"))
    vqa = root / "vqa_rad"
    (vqa / "VQA_RAD Image Folder").mkdir(parents=True)
    for xray in xrays:
        shutil.copy2(xray, vqa / "VQA_RAD Image Folder" / xray.name)
    entries = [
        {"qid": 1, "image_name": xrays[0].name, "image_organ": "CHEST", "question": "Is this a chest radiograph?",
         "answer": "Yes", "answer_type": "CLOSED", "question_type": "MODALITY"},
        {"qid": 2, "image_name": xrays[0].name, "image_organ": "CHEST", "question": "Which plane is this image taken in?",
         "answer": "PA", "answer_type": "OPEN", "question_type": "PLANE"},
        {"qid": 3, "image_name": xrays[1].name, "image_organ": "CHEST", "question": "Is the heart enlarged?",
         "answer": "No", "answer_type": "CLOSED", "question_type": "SIZE"},
        {"qid": 4, "image_name": "synpic99999.jpg", "image_organ": "HEAD", "question": "Is there a bleed?",
         "answer": "No", "answer_type": "CLOSED", "question_type": "PRES"},
    ]
    (vqa / "VQA_RAD Dataset Public.json").write_text(json.dumps(entries, indent=1))

    aptos = root / "aptos_grading"
    rows = ["id_code,diagnosis"]
    for number, grade in enumerate((0, 2, 4)):
        save(fundus_image(192, 80 + number, grade), aptos / "train_images" / f"c{number:07x}.png")
        rows.append(f"c{number:07x},{grade}")
    (aptos / "train.csv").write_text("\n".join(rows) + "\n")

    derm = root / "derm_classes"
    rng = np.random.default_rng(9)
    for cls, colour in (("benign_nevus", (120, 80, 50)), ("melanoma", (40, 25, 20))):
        for number in range(2):
            skin = np.clip(rng.normal((225, 180, 160), 6, (128, 128, 3)), 0, 255).astype(np.uint8)
            centre = (40 + 50 * rng.random(), 40 + 50 * rng.random())
            blob = ellipse_mask((128, 128), centre, (15 + 20 * rng.random(), 15 + 20 * rng.random()))
            skin[blob] = colour
            save(skin, derm / cls / f"ISIC_{cls[:3]}{number:04d}.png")
    # a re-upload of the same photograph, rescaled and re-encoded: a near duplicate
    with Image.open(derm / "melanoma" / "ISIC_mel0000.png") as original:
        original.resize((112, 112), Image.Resampling.BILINEAR).save(derm / "melanoma" / "ISIC_mel9999.jpg", quality=85)

    reports = root / "iu_xray_reports"
    texts = (
        "INDICATION: cough.\nFINDINGS: The lungs are clear. Heart size is normal. No pleural effusion.\n"
        "IMPRESSION: No acute cardiopulmonary abnormality.",
        "FINDINGS: Mild cardiomegaly. No focal consolidation.\nIMPRESSION: Mild cardiomegaly.",
    )
    for xray, text in zip(xrays, texts, strict=False):
        image = np.asarray(Image.open(xray).convert("L"))[::2, ::2]
        save(image, reports / f"CXR{xray.stem[:8]}.png")
        (reports / f"CXR{xray.stem[:8]}.txt").write_text(text)

    seg = root / "ct_organs"
    seg.mkdir(parents=True, exist_ok=True)
    for file in CT_DIR.iterdir():
        shutil.copy2(file, seg / file.name)

    pairs = root / "brain_t1_t2"
    for number in range(3):
        head = ellipse_mask((128, 128), (64, 64), (52, 44))
        white = ellipse_mask((128, 128), (64 + 3 * number, 64), (30, 24))
        csf = ellipse_mask((128, 128), (64, 64), (6 + number, 10))
        t1 = np.where(head, 90, 0) + np.where(white, 80, 0) - np.where(csf, 120, 0)
        t2 = np.where(head, 140, 0) - np.where(white, 60, 0) + np.where(csf, 100, 0)
        save(np.clip(t1, 0, 255).astype(np.uint8), pairs / "T1" / f"sub-{number:02d}.png")
        save(np.clip(t2, 0, 255).astype(np.uint8), pairs / "T2" / f"sub-{number:02d}.png")
    return root


def write_medq_uni_tree(root: Path) -> Path:
    """Clean images of four modalities: a real CT slice, pydicom's MR, NIH X-rays, generated
    fundus photographs."""
    (root / "ct").mkdir(parents=True, exist_ok=True)
    shutil.copy2(CT_DIR / "02.dcm", root / "ct" / "abdomen_02.dcm")  # a real 512x512 abdominal CT slice
    (root / "mr").mkdir(parents=True, exist_ok=True)
    shutil.copy2(pydicom_file("MR_small.dcm"), root / "mr" / "MR_small.dcm")
    shutil.copytree(XRAY_DIR, root / "xray")
    for number in range(2):
        save(fundus_image(192, 90 + number, number * 2), root / "fundus" / f"{number}_left.png")
    return root


WRITERS: dict[str, Callable[[Path], Path]] = {
    "unimed": write_unimed_tree,
    "imed": write_imed_tree,
    "retinalogos": write_retinalogos_tree,
    "ophora": write_ophora_tree,
    "medq_uni": write_medq_uni_tree,
}

#: recipe overrides the demo builds with (small and fast; the defaults are for real data)
DEMO_OPTIONS: dict[str, dict[str, Any]] = {
    "unimed": {
        "sources": [
            {"name": "VQA_RAD", "path": "vqa_rad", "modality": "XR", "curriculum_stage": 2},
            {"name": "APTOS2019", "path": "aptos_grading", "modality": "CFP", "options": {"label_names": {
                "0": "no diabetic retinopathy", "1": "mild diabetic retinopathy", "2": "moderate diabetic retinopathy",
                "3": "severe diabetic retinopathy", "4": "proliferative diabetic retinopathy"}}},
            {"name": "ISIC_classes", "path": "derm_classes", "modality": "DERM"},
            {"name": "IU_Xray", "path": "iu_xray_reports", "modality": "XR"},
            {"name": "CT_organs", "path": "ct_organs"},
            {"name": "BrainT1T2", "path": "brain_t1_t2", "modality": "MR", "options": {"from": "T1", "to": "T2"}},
        ]
    },
    "imed": {
        "sources": [
            {"path": "Task03_Liver"},
            {"path": "ct_liver_spine_heart"},
            {"name": "Kvasir_SEG", "path": "kvasir_seg", "modality": "ENDO", "options": {"category": "polyp"}},
        ],
        "options": {"clicks": 3},
    },
    "retinalogos": {},
    "ophora": {},
    "medq_uni": {
        "options": {
            "kinds": {"CT": ["low_dose"], "MR": ["motion", "rician_noise"], "XR": ["quantum_noise"], "CFP": ["uneven_illumination"]},
            "severities": [1, 3],
        }
    },
}


def write_tree(family: str, root: Path) -> Path:
    """Write ``family``'s demo tree under ``root`` (replacing what was there)."""
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    return WRITERS[family](root)
