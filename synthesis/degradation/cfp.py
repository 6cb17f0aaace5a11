"""Colour fundus photograph (CFP) degradations on [0, 1] RGB images."""

from __future__ import annotations

from typing import Any

import torch

from synthesis.degradation.ops import (
    Draws,
    coordinate_grid,
    disk_kernels,
    fft_convolve,
    reference_scale,
)
from synthesis.degradation.registry import Context, KindResult, register, same_params


@register("uneven_illumination", domain="CFP", target_metric="ssim", effect="uneven brightness with a bright halo or a dark central hole")
def uneven_illumination(images: torch.Tensor, level: dict[str, Any], draws: Draws, ctx: Context) -> KindResult:
    """Uneven illumination of the fundus camera.

    Physics: the illuminating ring is off-axis or the pupil is small: a smooth
    multiplicative field, either a *halo* (brightening ``1 + a g(r)`` rising towards the
    rim) or a *dark hole* (``1 - a g(r)`` around a random centre), ``a`` by severity.
    """
    batch, _, height, width = images.shape
    y, x = coordinate_grid(height, width, images.device)
    styles = draws.choices(("halo", "dark_hole"))
    centres = draws.uniform(2) * 0.6 - 0.3
    fields = torch.empty(batch, 1, height, width, device=images.device)
    for b, style in enumerate(styles):
        r2 = (y - centres[b, 0]) ** 2 + (x - centres[b, 1]) ** 2
        if style == "halo":
            fields[b, 0] = 1.0 + level["amplitude"] * (1 - torch.exp(-r2 / 0.5))
        else:
            fields[b, 0] = 1.0 - level["amplitude"] * torch.exp(-r2 / 0.15)
    degraded = (images * fields).clamp(0.0, 1.0)
    return KindResult(degraded, same_params(level, batch, style=styles, centre_yx=[[round(v, 4) for v in c] for c in centres.tolist()]))


@register("spots", domain="CFP", target_metric="ssim", effect="blurry dark spots from dust or debris on the lens")
def spots(images: torch.Tensor, level: dict[str, Any], draws: Draws, ctx: Context) -> KindResult:
    """Dust/debris on the camera optics.

    Physics: out-of-focus occluders attenuate light in soft-edged discs: each spot
    multiplies the image by ``1 - opacity * exp(-r^2 / (2 s^2))``.
    """
    batch, _, height, width = images.shape
    y, x = coordinate_grid(height, width, images.device)
    count = level["count"]
    draw = draws.uniform(count, 3)
    attenuation = torch.ones(batch, 1, height, width, device=images.device)
    for k in range(count):
        cy = draw[:, k, 0, None, None] * 1.6 - 0.8
        cx = draw[:, k, 1, None, None] * 1.6 - 0.8
        s = level["radius"] * (0.6 + 0.8 * draw[:, k, 2, None, None])
        blob = torch.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * s**2))
        attenuation = attenuation * (1 - level["opacity"] * blob[:, None])
    return KindResult((images * attenuation).clamp(0, 1), same_params(level, batch))


@register("defocus_blur", domain="CFP", target_metric="ssim", effect="overall softness with vessels and disc margin out of focus")
def defocus_blur(images: torch.Tensor, level: dict[str, Any], draws: Draws, ctx: Context) -> KindResult:
    """Defocus: geometric optics gives a pill-box PSF of radius ``radius_px`` (at 512 px)."""
    radius = max(1.0, level["radius_px"] * reference_scale(*images.shape[-2:]))
    kernels = disk_kernels([radius] * len(draws), images.device)
    degraded = fft_convolve(images, kernels).clamp(0, 1)
    return KindResult(degraded, same_params(level, len(draws), radius_px_applied=[radius] * len(draws)))


@register("low_contrast", domain="CFP", target_metric="ssim", effect="hazy, low-contrast view as through a cataract")
def low_contrast(images: torch.Tensor, level: dict[str, Any], draws: Draws, ctx: Context) -> KindResult:
    """Media opacity / haze: scattered light adds a veil and lowers contrast.

    Physics: ``y = t x + (1 - t) A`` (the atmospheric-scattering model) with
    transmission ``t = contrast`` and veil ``A`` = the image mean colour.
    """
    veil = images.mean(dim=(-2, -1), keepdim=True)
    t = level["contrast"]
    return KindResult((t * images + (1 - t) * veil).clamp(0, 1), same_params(level, len(draws)))
