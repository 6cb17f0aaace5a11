"""Ultrasound (US) degradations on [0, 1] B-mode images (rows = depth)."""

from __future__ import annotations

from typing import Any

import torch

from synthesis.degradation.ops import Draws, fft_convolve, gaussian_kernels
from synthesis.degradation.registry import Context, KindResult, register, same_params


@register("speckle", domain="US", target_metric="noise_sigma", effect="granular speckle texture masking tissue boundaries")
def speckle(images: torch.Tensor, level: dict[str, Any], draws: Draws, ctx: Context) -> KindResult:
    """Fully developed speckle: interference of sub-resolution scatterers.

    Physics: the echo intensity is multiplied by a Gamma(L, 1/L) variable (``L`` looks;
    L = 1 is exponential intensity, i.e. Rayleigh-distributed amplitude); the amplitude
    image is ``x * sqrt(g)``, lightly correlated by the system PSF (Gaussian, 0.7 px).
    Severity lowers the number of looks.
    """
    looks = level["looks"]
    gains = draws.gamma(looks, images.shape[1:])
    kernels = gaussian_kernels([0.7] * len(draws), images.device)
    amplitude = fft_convolve(torch.sqrt(gains), kernels)
    amplitude = amplitude / amplitude.mean(dim=(-2, -1), keepdim=True)
    return KindResult((images * amplitude).clamp(0, 1), same_params(level, len(draws)))


@register("depth_attenuation", domain="US", target_metric="ssim", effect="darkening with depth, the far field too dim to read")
def depth_attenuation(images: torch.Tensor, level: dict[str, Any], draws: Draws, ctx: Context) -> KindResult:
    """Uncompensated attenuation: time-gain compensation set too low.

    Physics: round-trip attenuation ``alpha f 2 z`` in dB grows linearly with depth;
    ``loss_db`` is the loss at the bottom of the image, so ``y = x 10^(-loss_db z / 20)``.
    """
    height = images.shape[-2]
    z = torch.linspace(0, 1, height, device=images.device)[:, None]
    gain = torch.pow(10.0, -level["loss_db"] * z / 20.0)
    return KindResult((images * gain).clamp(0, 1), same_params(level, len(draws)))


@register("shadowing", domain="US", target_metric="ssim", effect="a dark acoustic shadow band beneath a strong reflector")
def shadowing(images: torch.Tensor, level: dict[str, Any], draws: Draws, ctx: Context) -> KindResult:
    """Acoustic shadowing behind a strong reflector/attenuator (bone, calculus, gas).

    Physics: below the reflector depth nearly all energy is reflected, so echoes in
    a column band are scaled by ``transmission``; the band's edges are smooth (beam
    width). Column position and reflector depth are drawn at random.
    """
    batch, _, height, width = images.shape
    pos = draws.uniform(2)
    cols = torch.arange(width, device=images.device, dtype=torch.float32)[None, :]
    rows = torch.arange(height, device=images.device, dtype=torch.float32)[:, None]
    band = level["width_fraction"] * width
    centre = (0.25 + 0.5 * pos[:, 0])[:, None, None] * width
    top = (0.15 + 0.35 * pos[:, 1])[:, None, None] * height
    edge = max(1.0, 0.03 * width)
    inside_cols = torch.sigmoid((band / 2 - (cols - centre).abs()) / edge)
    below = torch.sigmoid((rows - top) / edge)
    factor = 1 - (1 - level["transmission"]) * inside_cols * below
    params = same_params(level, batch, centre_col=[round(float(c), 2) for c in centre.flatten()], top_row=[round(float(t), 2) for t in top.flatten()])
    return KindResult((images * factor[:, None]).clamp(0, 1), params)
