"""Degradations of optical images (endoscopy, pathology, and any other [0, 1] image)."""

from __future__ import annotations

from typing import Any

import torch

from synthesis.degradation.ops import (
    Draws,
    coordinate_grid,
    fft_convolve,
    gaussian_kernels,
    reference_scale,
    resample_low_resolution,
)
from synthesis.degradation.registry import Context, KindResult, register, same_params


@register("gaussian_blur", domain="ANY", target_metric="ssim", effect="soft, out-of-focus detail")
def gaussian_blur(images: torch.Tensor, level: dict[str, Any], draws: Draws, ctx: Context) -> KindResult:
    """Optical blur (focus, scatter) approximated by a Gaussian PSF of ``sigma_px`` at 512 px."""
    sigma = max(0.6, level["sigma_px"] * reference_scale(*images.shape[-2:]))
    kernels = gaussian_kernels([sigma] * len(draws), images.device)
    degraded = fft_convolve(images, kernels).clamp(0, 1)
    return KindResult(degraded, same_params(level, len(draws), sigma_px_applied=[sigma] * len(draws)))


@register("noise", domain="ANY", target_metric="noise_sigma", effect="grainy sensor noise")
def noise(images: torch.Tensor, level: dict[str, Any], draws: Draws, ctx: Context) -> KindResult:
    """Camera sensor noise: signal-dependent shot noise plus read noise.

    Physics: Poisson-Gaussian model with variance ``a x + b``; ``sigma`` is the noise
    standard deviation at mid-grey (``a = sigma^2``, ``b = sigma^2 / 2``, so
    ``var = sigma^2 (x + 1/2)``).
    """
    sigma = level["sigma"]
    std = sigma * torch.sqrt(images + 0.5)
    degraded = (images + std * draws.normal(*images.shape[1:])).clamp(0, 1)
    return KindResult(degraded, same_params(level, len(draws)))


@register("brightness", domain="ANY", target_metric="ssim", effect="over- or under-exposure with clipped highlights or crushed shadows")
def brightness(images: torch.Tensor, level: dict[str, Any], draws: Draws, ctx: Context) -> KindResult:
    """Exposure error: the sensor integrates ``gain`` times the right amount of light.

    Physics: linear exposure scaling before the sensor's saturation (clip at 1);
    over-exposure (``gain``) or under-exposure (``1/gain``), drawn at random.
    """
    directions = draws.choices(("over", "under"))
    gains = [level["gain"] if d == "over" else 1.0 / level["gain"] for d in directions]
    g = torch.tensor(gains, device=images.device)[:, None, None, None]
    return KindResult((images * g).clamp(0, 1), same_params(level, len(draws), direction=directions, gain_applied=gains))


@register("bubbles", domain="ANY", target_metric="ssim", effect="round bubbles with bright specular rims obscuring the view")
def bubbles(images: torch.Tensor, level: dict[str, Any], draws: Draws, ctx: Context) -> KindResult:
    """Air/fluid bubbles in front of the lens (endoscopy) or under the coverslip (pathology).

    Physics: each bubble refracts (a locally blurred, brighter copy of the scene) and
    reflects (a bright specular rim); composited with alpha ``opacity``.
    """
    batch, channels, height, width = images.shape
    y, x = coordinate_grid(height, width, images.device)
    count = level["count"]
    draw = draws.uniform(count, 3)
    blurred = fft_convolve(images, gaussian_kernels([3.0 * reference_scale(height, width)] * batch, images.device))
    out = images.clone()
    for k in range(count):
        cy = draw[:, k, 0, None, None] * 1.6 - 0.8
        cx = draw[:, k, 1, None, None] * 1.6 - 0.8
        radius = level["radius"] * (0.5 + draw[:, k, 2, None, None])
        r = torch.sqrt((y - cy) ** 2 + (x - cx) ** 2) / radius
        body = torch.sigmoid((1 - r) * 30)[:, None]
        rim = torch.exp(-((r - 0.9) ** 2) / 0.004)[:, None]
        inner = (blurred * 1.1 + 0.08).clamp(0, 1)
        out = out * (1 - level["opacity"] * body) + level["opacity"] * body * inner
        out = out + 0.6 * level["opacity"] * rim
    return KindResult(out.clamp(0, 1), same_params(level, batch))


@register("low_resolution", domain="ANY", target_metric="ssim", effect="pixelated, blurred detail from low resolution")
def low_resolution(images: torch.Tensor, level: dict[str, Any], draws: Draws, ctx: Context) -> KindResult:
    """A lower-resolution sensor: area-average by ``factor`` then bilinear upsampling."""
    factor = float(level["factor"])
    return KindResult(resample_low_resolution(images, (factor, factor)).clamp(0, 1), same_params(level, len(draws)))
