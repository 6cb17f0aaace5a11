"""Projection radiography (XR) degradations on [0, 1] images (bright = attenuating)."""

from __future__ import annotations

from typing import Any

import torch

from synthesis.degradation.ops import (
    Draws,
    fft_convolve,
    gaussian_kernels,
    line_kernels,
    reference_scale,
)
from synthesis.degradation.registry import Context, KindResult, register, same_params

#: display value 1 corresponds to this line integral (transmission e^-4 ~ 2%)
DISPLAY_ATTENUATION = 4.0


@register("quantum_noise", domain="XR", target_metric="noise_sigma", effect="grainy mottle, strongest in dense regions, from too few X-ray photons")
def quantum_noise(images: torch.Tensor, level: dict[str, Any], draws: Draws, ctx: Context) -> KindResult:
    """Quantum (Poisson-Gaussian) noise of a low-exposure radiograph.

    Physics: the displayed value is a log-transmission, ``p = 4 x``; the detector
    counts ``Poisson(N0 exp(-p))`` photons per pixel plus Gaussian electronic noise of
    ``electronic_sigma`` counts; the image is re-formed as ``-log(counts/N0) / 4``.
    Severity lowers the photons per pixel ``N0``.
    """
    n0 = float(level["photons"])
    expected = n0 * torch.exp(-DISPLAY_ATTENUATION * images)
    counts = draws.poisson(expected) + level["electronic_sigma"] * draws.normal(*images.shape[1:])
    degraded = (-torch.log(counts.clamp_min(0.5) / n0) / DISPLAY_ATTENUATION).clamp(0.0, 1.0)
    return KindResult(degraded, same_params(level, len(draws)))


@register("detector_blur", domain="XR", target_metric="ssim", effect="loss of fine detail and soft edges from detector light spread")
def detector_blur(images: torch.Tensor, level: dict[str, Any], draws: Draws, ctx: Context) -> KindResult:
    """Detector unsharpness: light spread in the scintillator, modelled as a Gaussian PSF.

    ``sigma_px`` is given at 512 px and scales with the image's short side.
    """
    sigma = max(0.6, level["sigma_px"] * reference_scale(*images.shape[-2:]))
    kernels = gaussian_kernels([sigma] * len(draws), images.device)
    return KindResult(fft_convolve(images, kernels).clamp(0, 1), same_params(level, len(draws), sigma_px_applied=[sigma] * len(draws)))


@register("exposure", domain="XR", target_metric="ssim", effect="washed-out or overly dark contrast from incorrect exposure")
def exposure(images: torch.Tensor, level: dict[str, Any], draws: Draws, ctx: Context) -> KindResult:
    """Wrong exposure and windowing: the log-transmission is scaled and offset.

    Physics: the detector's dynamic range is set for another dose; contrast in the log
    domain is multiplied by ``contrast`` and shifted by ``+/- shift`` (over- or
    under-exposed, drawn at random), then clipped by the detector's range.
    """
    signs = draws.choices((-1, 1))
    shift = torch.tensor([float(s) * level["shift"] for s in signs], device=images.device)[:, None, None, None]
    mean = images.mean(dim=(-3, -2, -1), keepdim=True)
    degraded = ((images - mean) * level["contrast"] + mean + shift).clamp(0.0, 1.0)
    return KindResult(degraded, same_params(level, len(draws), direction=["brighter" if float(s) > 0 else "darker" for s in signs]))


def motion_kernel_params(level: dict[str, Any], draws: Draws, height: int, width: int) -> tuple[list[float], list[float]]:
    length = level["length_px"] * reference_scale(height, width)
    angles = draws.scalars(0.0, 180.0)
    return [max(1.0, length)] * len(draws), angles


def apply_motion_blur(images: torch.Tensor, level: dict[str, Any], draws: Draws) -> KindResult:
    lengths, angles = motion_kernel_params(level, draws, *images.shape[-2:])
    kernels = line_kernels(lengths, angles, images.device)
    degraded = fft_convolve(images, kernels).clamp(0, 1)
    return KindResult(degraded, same_params(level, len(draws), length_px_applied=lengths, angle_deg=[round(a, 3) for a in angles]))


@register("motion_blur", domain="ANY", target_metric="ssim", effect="directional smearing of edges from movement during the exposure")
def motion_blur(images: torch.Tensor, level: dict[str, Any], draws: Draws, ctx: Context) -> KindResult:
    """Linear motion blur: uniform motion of ``length_px`` (at 512 px) in a random direction.

    Physics: the detector integrates the moving scene over the exposure, i.e. a
    convolution with a line-segment PSF.
    """
    return apply_motion_blur(images, level, draws)

