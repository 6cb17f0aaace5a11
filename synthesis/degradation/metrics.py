"""Measured image quality of a degraded image against its clean original.

PSNR and SSIM are computed on [0, 1] intensities. CT is measured on a fixed soft-tissue
display window, level 40 HU / width 400 HU ([-160, 240] HU clipped to [0, 1]): the
window a reader looks at, where noise and streaks matter; air and bone saturate as
they do on screen. SSIM is Wang et al. (2004): 11x11 Gaussian window, sigma 1.5,
K1 = 0.01, K2 = 0.03, averaged over pixels and channels (as ``skimage``'s
``structural_similarity(..., gaussian_weights=True, sigma=1.5, data_range=1)``).
"""

from __future__ import annotations

import math

import torch

CT_WINDOW_HU = (-160.0, 240.0)


def to_measurement_range(images: torch.Tensor, modality: str) -> torch.Tensor:
    if modality == "CT":
        low, high = CT_WINDOW_HU
        return ((images - low) / (high - low)).clamp(0.0, 1.0)
    return images.clamp(0.0, 1.0)


def psnr_db(clean: torch.Tensor, degraded: torch.Tensor) -> torch.Tensor:
    """PSNR per sample of ``[B, C, H, W]`` in [0, 1]; capped at 100 dB for identical images."""
    mse = ((clean - degraded) ** 2).mean(dim=(1, 2, 3))
    return (10 * torch.log10(1.0 / mse.clamp_min(1e-10))).clamp(max=100.0)


def _gaussian_window(device: torch.device) -> torch.Tensor:
    ax = torch.arange(11, dtype=torch.float32, device=device) - 5
    g = torch.exp(-(ax**2) / (2 * 1.5**2))
    return g / g.sum()


def ssim(clean: torch.Tensor, degraded: torch.Tensor) -> torch.Tensor:
    """Mean SSIM per sample of ``[B, C, H, W]`` in [0, 1] (valid region of the window)."""
    batch, channels, height, width = clean.shape
    if min(height, width) < 11:
        raise ValueError(f"SSIM needs images of at least 11x11 pixels, got {height}x{width}")
    g = _gaussian_window(clean.device)
    x = clean.reshape(batch * channels, 1, height, width)
    y = degraded.reshape(batch * channels, 1, height, width)

    def blur(t: torch.Tensor) -> torch.Tensor:
        # Gaussian window by FFT: circular wrap only touches the 5-px border, which the
        # "valid" crop drops, so this equals the direct convolution at ~4x less CPU
        h, w = t.shape[-2:]
        kernel = torch.zeros(h, w, dtype=t.dtype, device=t.device)
        kernel[:11, :11] = g[:, None] * g[None, :]
        spectrum = torch.fft.rfft2(t) * torch.fft.rfft2(kernel)
        return torch.fft.irfft2(spectrum, s=(h, w))[..., 10:, 10:]

    stack = blur(torch.cat([x, y, x * x, y * y, x * y], dim=0))
    n = x.shape[0]
    mx, my, xx, yy, xy = (stack[i * n : (i + 1) * n] for i in range(5))
    c1, c2 = 0.01**2, 0.03**2
    vx, vy, cov = xx - mx * mx, yy - my * my, xy - mx * my
    # the sample covariance, as skimage (use_sample_covariance=True)
    k = 121 / 120
    vx, vy, cov = vx * k, vy * k, cov * k
    s = ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return s.reshape(batch, channels, -1).mean(dim=(1, 2))


def noise_sigma(clean: torch.Tensor, degraded: torch.Tensor, modality: str) -> torch.Tensor:
    """Standard deviation of the residual, in HU for CT and in [0, 1] units otherwise.

    For CT it is measured inside the body (clean HU > -500) where the inserted noise is
    not clipped away by air.
    """
    residual = degraded - clean
    if modality != "CT":
        return residual.flatten(1).std(dim=1)
    inside = (clean > -500.0).to(residual.dtype)
    count = inside.flatten(1).sum(dim=1)
    mean = (residual * inside).flatten(1).sum(dim=1) / count.clamp_min(1)
    var = (((residual - mean[:, None, None, None]) ** 2) * inside).flatten(1).sum(dim=1) / (count - 1).clamp_min(1)
    return torch.where(count > 1, var.sqrt(), torch.full_like(var, math.nan))
