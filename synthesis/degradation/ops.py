"""Tensor building blocks shared by the kinds: seeded draws, FFT convolution, PSF kernels.

Images inside the engine are ``[B, C, H, W]`` float32 tensors on the work device.
Every random draw is made on the CPU with one ``torch.Generator`` per sample (seeded
from that sample's seed) and then moved to the device, so a seed gives the same numbers
on CPU and GPU and a sample's result does not depend on the rest of its batch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F


class Draws:
    """Per-sample random streams: sample ``i`` of a batch draws only from ``seeds[i]``."""

    def __init__(self, seeds: Sequence[int], device: torch.device) -> None:
        self.seeds = [int(s) for s in seeds]
        self.device = device
        self._gens = [torch.Generator(device="cpu").manual_seed(s % (2**63)) for s in self.seeds]

    def __len__(self) -> int:
        return len(self._gens)

    def normal(self, *shape: int) -> torch.Tensor:
        """Standard normal ``[B, *shape]`` on the device."""
        return torch.stack([torch.randn(shape, generator=g) for g in self._gens]).to(self.device)

    def uniform(self, *shape: int) -> torch.Tensor:
        """Uniform [0, 1) ``[B, *shape]`` on the device."""
        return torch.stack([torch.rand(shape, generator=g) for g in self._gens]).to(self.device)

    def scalars(self, low: float, high: float) -> list[float]:
        """One uniform number in [low, high) per sample (recorded in params)."""
        return [float(low + (high - low) * torch.rand((), generator=g)) for g in self._gens]

    def choices(self, options: Sequence[float | int | str]) -> list[float | int | str]:
        return [options[int(torch.randint(len(options), (), generator=g))] for g in self._gens]

    def gamma(self, concentration: float, shape: Sequence[int]) -> torch.Tensor:
        """Gamma(k, scale 1/k) draws (mean 1) ``[B, *shape]``, via the seeded generators."""
        # torch's Gamma sampler takes no generator; sum of k exponentials is exact for
        # integer looks and the generator keeps it reproducible
        k = max(1, round(concentration))
        out = []
        for g in self._gens:
            u = torch.rand((k, *shape), generator=g).clamp_min(1e-12)
            out.append(-torch.log(u).sum(0) / k)
        return torch.stack(out).to(self.device)

    def poisson(self, rates: torch.Tensor) -> torch.Tensor:
        """Poisson counts with the given rates ``[B, ...]`` (drawn on CPU, returned on device)."""
        cpu = rates.detach().to("cpu", torch.float64)
        out = torch.stack([torch.poisson(cpu[i], generator=g) for i, g in enumerate(self._gens)])
        return out.to(self.device, torch.float32)

    def permutations(self, n: int) -> list[torch.Tensor]:
        return [torch.randperm(n, generator=g) for g in self._gens]


def reference_scale(height: int, width: int) -> float:
    """Spatial parameters are calibrated at 512 px; scale them with the image's short side."""
    return min(height, width) / 512.0


def fft_convolve(images: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """Convolve ``[B, C, H, W]`` with one kernel per sample ``[B, kh, kw]`` (odd, sum 1).

    Reflect padding keeps borders free of wrap-around; FFTs make a 40-px motion PSF cost
    the same as a 3-px one, and per-sample kernels need no grouped-conv gymnastics.
    """
    batch, _, height, width = images.shape
    kh, kw = kernels.shape[-2:]
    ph, pw = min(kh // 2, height - 1), min(kw // 2, width - 1)
    padded = F.pad(images, (pw, pw, ph, ph), mode="reflect")
    hp, wp = padded.shape[-2:]
    canvas = torch.zeros(batch, hp, wp, dtype=images.dtype, device=images.device)
    canvas[:, :kh, :kw] = kernels
    canvas = torch.roll(canvas, shifts=(-(kh // 2), -(kw // 2)), dims=(1, 2))
    out = torch.fft.irfft2(torch.fft.rfft2(padded) * torch.fft.rfft2(canvas)[:, None], s=(hp, wp))
    return out[..., ph : ph + height, pw : pw + width]


def gaussian_kernels(sigmas: Sequence[float], device: torch.device) -> torch.Tensor:
    """Isotropic Gaussian PSFs ``[B, k, k]`` (k covers 3 sigma of the widest)."""
    radius = max(1, math.ceil(3 * max(sigmas)))
    ax = torch.arange(-radius, radius + 1, dtype=torch.float32, device=device)
    s = torch.tensor(sigmas, dtype=torch.float32, device=device).clamp_min(1e-3)[:, None, None]
    k = torch.exp(-(ax[None, :, None] ** 2 + ax[None, None, :] ** 2) / (2 * s**2))
    return k / k.sum(dim=(1, 2), keepdim=True)


def disk_kernels(radii: Sequence[float], device: torch.device) -> torch.Tensor:
    """Defocus (pill-box) PSFs ``[B, k, k]`` with anti-aliased rims (sub-sampled coverage)."""
    radius = max(1, math.ceil(max(radii)) + 1)
    fine = 4
    ax = (torch.arange(-radius * fine, (radius + 1) * fine, device=device, dtype=torch.float32) + 0.5) / fine - 0.5
    r = torch.tensor(radii, dtype=torch.float32, device=device)[:, None, None]
    inside = ((ax[None, :, None] ** 2 + ax[None, None, :] ** 2) <= r**2).float()
    k = F.avg_pool2d(inside[:, None], fine)[:, 0]
    return k / k.sum(dim=(1, 2), keepdim=True)


def line_kernels(lengths: Sequence[float], angles_deg: Sequence[float], device: torch.device) -> torch.Tensor:
    """Linear motion PSFs ``[B, k, k]``: a segment of the given length and direction.

    Uniform-velocity motion during the exposure integrates the scene along a segment;
    the segment is rasterised by dense sampling with bilinear splatting.
    """
    radius = max(1, math.ceil(max(lengths) / 2) + 1)
    size = 2 * radius + 1
    kernels = []
    for length, angle in zip(lengths, angles_deg, strict=True):
        t = torch.linspace(-length / 2, length / 2, max(2, int(length * 8)), device=device)
        theta = math.radians(angle)
        xs, ys = t * math.cos(theta) + radius, t * math.sin(theta) + radius
        k = torch.zeros(size * size, device=device)
        x0, y0 = xs.floor(), ys.floor()
        for dx in (0, 1):
            for dy in (0, 1):
                wgt = (1 - (xs - x0 - dx).abs()) * (1 - (ys - y0 - dy).abs())
                xi, yi = (x0 + dx).clamp(0, size - 1).long(), (y0 + dy).clamp(0, size - 1).long()
                k.index_add_(0, yi * size + xi, wgt)
        kernels.append(k.reshape(size, size))
    stacked = torch.stack(kernels)
    return stacked / stacked.sum(dim=(1, 2), keepdim=True)


def resample_low_resolution(images: torch.Tensor, factors: tuple[float, float]) -> torch.Tensor:
    """Area-average down by ``factors`` (rows, cols), then bilinear back up to the input size."""
    height, width = images.shape[-2:]
    small = (max(1, round(height / factors[0])), max(1, round(width / factors[1])))
    low = F.interpolate(images, size=small, mode="area")
    return F.interpolate(low, size=(height, width), mode="bilinear", align_corners=False)


def coordinate_grid(height: int, width: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised coordinates in [-1, 1]: ``(y [H, 1], x [1, W])``."""
    y = torch.linspace(-1, 1, height, device=device)[:, None]
    x = torch.linspace(-1, 1, width, device=device)[None, :]
    return y, x
