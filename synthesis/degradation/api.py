"""``degrade``: the Python contract of the degradation engine.

Accepts a 2-D image ``[H, W]``, a colour image ``[H, W, 3]``, a batch ``[B, H, W]`` /
``[B, H, W, 3]`` (numpy float32 or torch), or a list of such images; returns the
degraded image in the same type and shape, with one record per image.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

# importing the kind modules registers them
from synthesis.degradation import cfp, ct, generic, mr, us, xr  # noqa: F401
from synthesis.degradation.describe import describe
from synthesis.degradation.levels import LEVELS
from synthesis.degradation.metrics import noise_sigma, psnr_db, ssim, to_measurement_range
from synthesis.degradation.ops import Draws
from synthesis.degradation.registry import DEFAULT_CACHE, REGISTRY, Context, OperatorCache

_GENERIC = ("motion_blur", "gaussian_blur", "noise", "brightness", "bubbles", "low_resolution")

#: degradation kinds per modality; modalities not listed use ``OTHER``
KINDS: dict[str, tuple[str, ...]] = {
    "CT": ("low_dose", "sparse_view", "limited_angle", "metal_artifact", "ring_artifact"),
    "MR": (
        "undersampling_random",
        "undersampling_equispaced",
        "motion",
        "ghosting",
        "spike",
        "gibbs",
        "rician_noise",
        "bias_field",
        "anisotropy",
    ),
    "XR": ("quantum_noise", "detector_blur", "exposure", "motion_blur"),
    "CFP": ("uneven_illumination", "spots", "defocus_blur", "low_contrast"),
    "US": ("speckle", "depth_attenuation", "shadowing"),
    "ENDO": _GENERIC,
    "PATH": _GENERIC,
    "OTHER": _GENERIC,
}


def kinds_for(modality: str) -> tuple[str, ...]:
    return KINDS.get(modality, KINDS["OTHER"])


@dataclass(frozen=True)
class DegradationRecord:
    """What was done to one image and how it measures against its clean original."""

    kind: str
    severity: int
    seed: int
    params: dict[str, Any]
    psnr_db: float
    ssim: float
    measures: dict[str, float]
    verdict: str
    description: str

    @property
    def params_json(self) -> str:
        return json.dumps(self.params, sort_keys=True)


@dataclass(frozen=True)
class Degraded:
    """The degraded image (same type and shape as the input) and one record per image.

    For a single image, ``params``/``psnr_db``/``ssim``/``verdict``/``description`` read
    its record; for a batch use ``records``.
    """

    image: Any
    modality: str
    kind: str
    severity: int
    records: list[DegradationRecord] = field(default_factory=list)

    def _single(self) -> DegradationRecord:
        if len(self.records) != 1:
            raise ValueError(f"this result holds {len(self.records)} images; read .records[i] instead")
        return self.records[0]

    @property
    def params(self) -> dict[str, Any]:
        return self._single().params

    @property
    def psnr_db(self) -> float:
        return self._single().psnr_db

    @property
    def ssim(self) -> float:
        return self._single().ssim

    @property
    def verdict(self) -> str:
        return self._single().verdict

    @property
    def description(self) -> str:
        return self._single().description


@dataclass(frozen=True)
class _Layout:
    kind: str  # "numpy" | "torch" | "list"
    single: bool
    colour: bool
    dtype: Any
    device: torch.device | None


def _to_batch(image: Any) -> tuple[torch.Tensor, _Layout]:
    """Any accepted input -> float32 ``[B, C, H, W]`` on the CPU, and how to undo it."""
    if isinstance(image, list | tuple):
        if not image:
            raise ValueError("an empty list of images was given")
        tensors = [_to_batch(item)[0] for item in image]
        shapes = {tuple(t.shape[1:]) for t in tensors}
        if len(shapes) != 1:
            raise ValueError(f"images in a list must share one shape to be batched, got {sorted(shapes)}")
        first = _to_batch(image[0])[1]
        return torch.cat(tensors), _Layout("list", False, first.colour, first.dtype, first.device)
    if isinstance(image, np.ndarray):
        tensor, kind, dtype, device = torch.from_numpy(np.ascontiguousarray(image)), "numpy", image.dtype, None
    elif isinstance(image, torch.Tensor):
        tensor, kind, dtype, device = image, "torch", image.dtype, image.device
    else:
        raise TypeError(f"image must be a numpy array, a torch tensor or a list of them, got {type(image).__name__}")
    t = tensor.detach().to(torch.float32)
    if t.ndim == 2:
        return t[None, None], _Layout(kind, True, False, dtype, device)
    if t.ndim == 3 and t.shape[-1] == 3:
        return t.permute(2, 0, 1)[None], _Layout(kind, True, True, dtype, device)
    if t.ndim == 3:
        return t[:, None], _Layout(kind, False, False, dtype, device)
    if t.ndim == 4 and t.shape[-1] == 3:
        return t.permute(0, 3, 1, 2), _Layout(kind, False, True, dtype, device)
    raise ValueError(
        f"image shape {tuple(t.shape)} is not [H, W], [H, W, 3], [B, H, W] or [B, H, W, 3]"
    )


def _from_batch(batch: torch.Tensor, layout: _Layout, count: int) -> Any:
    t = batch.permute(0, 2, 3, 1) if layout.colour else batch[:, 0]
    if layout.kind == "list":
        return [t[i].cpu().numpy() for i in range(count)]
    if layout.single:
        t = t[0]
    if layout.kind == "numpy":
        return t.cpu().numpy().astype(np.float32)
    return t.to(layout.device if layout.device is not None else "cpu")


def _seeds(seed: int | Sequence[int], count: int) -> list[int]:
    if isinstance(seed, int | np.integer):
        return [int(seed) + i for i in range(count)]
    seeds = [int(s) for s in seed]
    if len(seeds) != count:
        raise ValueError(f"got {len(seeds)} seeds for a batch of {count} images")
    return seeds


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def degrade(
    image: Any,
    *,
    modality: str,
    kind: str,
    severity: int,
    seed: int | Sequence[int],
    spacing_mm: float | Sequence[float] | None = None,
    device: torch.device | str | None = None,
    cache: OperatorCache | None = None,
) -> Degraded:
    """Degrade ``image`` with ``kind`` at ``severity`` (1 mild, 2 moderate, 3 severe).

    ``image`` is in Hounsfield units for CT and in [0, 1] otherwise. ``seed`` is one
    integer (image ``i`` of a batch uses ``seed + i``) or one per image, so
    ``degrade(batch, seed=s).image[i] == degrade(batch[i], seed=s + i).image``.
    ``spacing_mm`` (pixel size, row spacing first) matters for CT physics.
    Computation runs on ``device`` (default: CUDA when available); random draws are
    made on the CPU, so CPU and GPU agree within float tolerance.
    """
    allowed = kinds_for(modality)
    if kind not in allowed:
        raise ValueError(f"kind {kind!r} does not apply to modality {modality!r}; expected one of {allowed}")
    if severity not in (1, 2, 3):
        raise ValueError(f"severity must be 1, 2 or 3, got {severity!r}")
    batch, layout = _to_batch(image)
    if not torch.isfinite(batch).all():
        raise ValueError("image holds NaN or infinite values")
    if min(batch.shape[-2:]) < 16:
        raise ValueError(f"image is {tuple(batch.shape[-2:])} pixels; at least 16x16 is needed")
    work = torch.device(device) if device is not None else default_device()
    batch = batch.to(work)
    count = batch.shape[0]
    seeds = _seeds(seed, count)
    pixel = None
    if spacing_mm is not None:
        pixel = float(spacing_mm) if isinstance(spacing_mm, int | float) else float(min(spacing_mm))
    ctx = Context(modality, pixel, work, cache or DEFAULT_CACHE)
    spec = REGISTRY[kind]
    level = LEVELS[kind][severity]
    result = spec.fn(batch, level, Draws(seeds, work), ctx)
    degraded = result.images
    clean_m = to_measurement_range(batch, modality)
    degraded_m = to_measurement_range(degraded, modality)
    psnrs = psnr_db(clean_m, degraded_m).tolist()
    ssims = ssim(clean_m, degraded_m).tolist()
    sigmas = noise_sigma(batch, degraded, modality).tolist()
    records = []
    for i in range(count):
        measures = {"psnr_db": float(psnrs[i]), "ssim": float(ssims[i]), "noise_sigma": float(sigmas[i])}
        if result.measures is not None:
            measures.update(result.measures[i])
        verdict, text = describe(modality=modality, kind=kind, effect=spec.effect, severity=severity, measures=measures)
        params = _jsonable({**result.params[i], "seed": seeds[i]})
        records.append(
            DegradationRecord(kind, severity, seeds[i], params, measures["psnr_db"], measures["ssim"], measures, verdict, text)
        )
    return Degraded(_from_batch(degraded, layout, count), modality, kind, severity, records)


def _jsonable(value: Any) -> Any:
    """Params as plain JSON types (tuples -> lists, floats rounded to 6 significant digits)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, float | np.floating):
        f = float(value)
        return f if not math.isfinite(f) else float(f"{f:.6g}")
    if isinstance(value, np.integer):
        return int(value)
    return value
