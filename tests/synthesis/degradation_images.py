"""Realistic test images per modality: real files where the repository has them
(CT slices, chest X-rays, pydicom's MR), synthetic fundus and ultrasound images built
in code, and scikit-image's bundled photographs for endoscopy/pathology stand-ins."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

DATA = Path(__file__).resolve().parents[1] / "data"


def _resize(image: np.ndarray, size: int) -> np.ndarray:
    t = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))
    colour = t.ndim == 3
    t = t.permute(2, 0, 1)[None] if colour else t[None, None]
    mode = "area" if t.shape[-1] > size else "bicubic"
    kwargs = {} if mode == "area" else {"align_corners": False}
    out = F.interpolate(t, size=(size, size), mode=mode, **kwargs)
    out = out[0].permute(1, 2, 0) if colour else out[0, 0]
    return out.numpy().astype(np.float32)


@functools.cache
def ct_slices(size: int = 256) -> tuple[np.ndarray, float]:
    """The three real CT slices in HU ``[3, size, size]`` and their pixel size (mm)."""
    import pydicom
    from pydicom.pixels import apply_modality_lut

    slices, spacing = [], 0.0
    for path in sorted((DATA / "ct_3slice_seg").glob("*.dcm")):
        ds = pydicom.dcmread(path)
        hu = apply_modality_lut(ds.pixel_array, ds).astype(np.float32)
        spacing = float(ds.PixelSpacing[0]) * hu.shape[0] / size
        slices.append(_resize(hu, size) if hu.shape[0] != size else hu)
    return np.stack(slices), spacing


@functools.cache
def chest_xrays(size: int = 256) -> np.ndarray:
    from PIL import Image

    out = []
    for path in sorted((DATA / "chest_xray_nih").glob("*.png")):
        img = np.asarray(Image.open(path).convert("L"), dtype=np.float32) / 255.0
        out.append(_resize(img, size))
    return np.stack(out)


@functools.cache
def mr_images(size: int = 128) -> np.ndarray:
    """pydicom's real MR_small (64x64, upsampled) and scikit-image's Shepp-Logan head."""
    import pydicom
    from pydicom.data import get_testdata_file
    from skimage.data import shepp_logan_phantom

    mr = pydicom.dcmread(get_testdata_file("MR_small.dcm")).pixel_array.astype(np.float32)
    mr = mr / mr.max()
    phantom = shepp_logan_phantom().astype(np.float32)
    return np.stack([_resize(mr, size), _resize(phantom, size)]).clip(0, 1)


def fundus(size: int = 256, seed: int = 0) -> np.ndarray:
    """Synthetic colour fundus: orange retina in a dark circle, bright disc, dark macula, vessels."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size - 0.5
    r = np.sqrt(x**2 + y**2)
    field = (r < 0.47).astype(np.float32)
    base = np.stack([0.75 - 0.3 * r, 0.35 - 0.2 * r, 0.15 - 0.05 * r], -1)
    disc = np.exp(-(((x - 0.18) ** 2 + y**2) / (2 * 0.045**2)))[..., None] * np.array([0.25, 0.45, 0.35])
    macula = np.exp(-((x + 0.05) ** 2 + y**2) / (2 * 0.06**2))[..., None] * np.array([0.25, 0.12, 0.05])
    img = base + disc - macula
    vessels = np.zeros((size, size), np.float32)
    for k in range(10):
        angle = 2 * np.pi * k / 10 + rng.normal(0, 0.2)
        t = np.linspace(0, 0.45, 400)
        wiggle = 0.03 * np.sin(t * 20 + k)
        vx = 0.18 + t * np.cos(angle) + wiggle * np.sin(angle)
        vy = t * np.sin(angle) - wiggle * np.cos(angle)
        for px, py in zip(vx, vy, strict=True):
            d2 = (x - px) ** 2 + (y - py) ** 2
            vessels = np.maximum(vessels, np.exp(-d2 / (2 * (0.006 - 0.008 * (px - 0.18) ** 2 + 0.002) ** 2)))
    img = img * (1 - 0.45 * vessels[..., None] * np.array([0.6, 1.0, 1.0]))
    img = img + rng.normal(0, 0.01, img.shape)
    return (img * field[..., None]).clip(0, 1).astype(np.float32)


def ultrasound(size: int = 256, seed: int = 0) -> np.ndarray:
    """Synthetic B-mode: fan-shaped field, echogenic layers, an anechoic cyst, mild texture."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    angle = np.arctan2(x - 0.5, y + 0.1)
    radius = np.sqrt((x - 0.5) ** 2 + (y + 0.1) ** 2)
    fan = ((np.abs(angle) < 0.6) & (radius < 1.05)).astype(np.float32)
    layers = 0.35 + 0.15 * np.sin(radius * 25) + 0.2 * (np.abs(radius - 0.45) < 0.02)
    cyst = np.sqrt((x - 0.55) ** 2 + (y - 0.6) ** 2) < 0.1
    tissue = np.where(cyst, 0.05, layers)
    texture = np.asarray(
        F.avg_pool2d(torch.from_numpy(rng.random((1, size, size)).astype(np.float32)), 3, 1, 1)[0]
    )
    return ((tissue * (0.8 + 0.4 * texture)) * fan).clip(0, 1).astype(np.float32)


@functools.cache
def photos(size: int = 256) -> np.ndarray:
    """scikit-image's bundled immunohistochemistry slide and coffee-cup photo ``[2, size, size, 3]``."""
    from skimage.data import coffee, immunohistochemistry

    out = [_resize(img()[:400, :400].astype(np.float32) / 255.0, size) for img in (immunohistochemistry, coffee)]
    return np.stack(out).clip(0, 1)


def images_for(modality: str, size: int = 256) -> tuple[np.ndarray, float | None]:
    """Realistic inputs of a modality ``[N, H, W(, 3)]`` and the CT pixel size."""
    if modality == "CT":
        return ct_slices(size)
    if modality == "XR":
        return chest_xrays(size), None
    if modality == "MR":
        return mr_images(size), None
    if modality == "CFP":
        return np.stack([fundus(size, 0), fundus(size, 1)]), None
    if modality == "US":
        return np.stack([ultrasound(size, 0), ultrasound(size, 1)]), None
    return photos(size), None
