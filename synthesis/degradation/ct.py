"""CT degradations, simulated in the projection domain and reconstructed by FBP.

Every CT kind follows the same path: Hounsfield units -> linear attenuation per pixel
(``mu = mu_water * (1 + HU/1000) * pixel size``) -> parallel-beam line integrals
(:class:`~synthesis.degradation.radon.FourierRadon`) -> the physical corruption of the
measurement -> filtered back-projection. The clean slice is itself a reconstruction of a
real scan, so the corruption is *inserted*: the degraded slice is
``clean + FBP(corrupted) - FBP(ideal)`` (Zeng et al., Med. Phys. 2016, "A simple
low-dose x-ray CT simulation from high-dose scan"); the FBP's own discretisation error
cancels and only the modelled artefact remains.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from synthesis.degradation.ops import Draws
from synthesis.degradation.radon import FourierRadon
from synthesis.degradation.registry import Context, KindResult, register, same_params

#: linear attenuation of water at ~70 keV (effective energy of a 120 kVp beam), per mm
MU_WATER_PER_MM = 0.0192
#: pixel size assumed when the slice carries no spacing
DEFAULT_PIXEL_MM = 0.7
#: views of the reference full scan over 180 degrees
FULL_VIEWS = 720
HU_MIN, HU_MAX = -1024.0, 3071.0

# 120 kVp tungsten spectrum (relative photon fluence, 10 keV bins) and attenuation
# coefficients (cm^-1) from NIST XCOM: water (1.0 g/cm3), titanium (4.5), iron (7.87).
SPECTRUM_KEV = np.array([40.0, 50, 60, 70, 80, 90, 100, 110])
SPECTRUM_WEIGHT = np.array([0.10, 0.17, 0.19, 0.17, 0.14, 0.11, 0.08, 0.04])
MU_WATER_CM = np.array([0.268, 0.227, 0.206, 0.193, 0.184, 0.177, 0.171, 0.166])
MU_METAL_CM = {
    "titanium": np.array([9.96, 5.45, 3.41, 2.39, 1.82, 1.47, 1.22, 1.05]),
    "iron": np.array([28.6, 15.4, 9.52, 6.51, 4.72, 3.68, 2.93, 2.45]),
}
REFERENCE_BIN = 3  # 70 keV


def pixel_mm(ctx: Context) -> float:
    return float(ctx.spacing_mm) if ctx.spacing_mm else DEFAULT_PIXEL_MM


def hu_to_mu(hu: torch.Tensor, px_mm: float) -> torch.Tensor:
    """Attenuation per pixel (dimensionless line-integral units) from HU; air and below -> 0."""
    return (MU_WATER_PER_MM * px_mm * (1.0 + hu / 1000.0)).clamp_min(0.0)


def mu_to_hu(mu: torch.Tensor, px_mm: float) -> torch.Tensor:
    return (mu / (MU_WATER_PER_MM * px_mm) - 1.0) * 1000.0


def radon_operator(ctx: Context, size: int, views: int, arc_deg: float = 180.0) -> FourierRadon:
    """The cached operator for ``views`` equally spaced views over ``arc_deg`` (step of a 180-degree scan)."""
    step = math.pi / round(views * 180.0 / arc_deg)

    def build() -> FourierRadon:
        angles = np.arange(views) * step
        return FourierRadon(size, angles, angle_step_rad=step, device=ctx.device)

    return ctx.cache.get(("radon", size, views, round(arc_deg, 6), str(ctx.device)), build)


def _square(images: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
    """Pad ``[B, 1, H, W]`` HU with air to a square ``[B, S, S]`` (the scanner's FOV)."""
    height, width = images.shape[-2:]
    size = max(height, width)
    size += size % 2
    pad = (0, size - width, 0, size - height)
    return F.pad(images[:, 0], pad, value=-1000.0), (height, width)


def _crop(square: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    return square[:, None, : shape[0], : shape[1]]


def noisy_line_integrals(
    line_integrals: torch.Tensor, incident_photons: float, electronic_sigma: float, draws: Draws
) -> torch.Tensor:
    """Beer-Lambert measurement: ``I = Poisson(I0 exp(-p)) + N(0, sigma_e^2)``, ``p = -log(I / I0)``.

    Counts are floored at 1 photon before the log (what a scanner's log table does with
    photon starvation). Variance of ``p`` is ``(I0 e^-p + sigma_e^2) / (I0 e^-p)^2``.
    """
    expected = incident_photons * torch.exp(-line_integrals)
    counts = draws.poisson(expected)
    if electronic_sigma > 0:
        counts = counts + electronic_sigma * draws.normal(*line_integrals.shape[1:])
    return -torch.log(counts.clamp_min(1.0) / incident_photons)


def _insert(images: torch.Tensor, delta_mu: torch.Tensor, px_mm: float, shape: tuple[int, int]) -> torch.Tensor:
    hu_delta = delta_mu / (MU_WATER_PER_MM * px_mm) * 1000.0
    return (images + _crop(hu_delta, shape)).clamp(HU_MIN, HU_MAX)


@register("low_dose", domain="CT", target_metric="noise_sigma", effect="grainy quantum noise from a reduced tube current")
def low_dose(images: torch.Tensor, level: dict[str, Any], draws: Draws, ctx: Context) -> KindResult:
    """Low-dose CT: fewer incident photons ``I0`` per detector bin.

    Physics: line integrals of the slice -> transmitted photons ``I0 exp(-p)`` ->
    Poisson counting noise plus Gaussian electronic noise -> log -> FBP (ramp filter).
    Image noise grows as ``1/sqrt(I0)``; severity lowers ``I0``.
    """
    px = pixel_mm(ctx)
    square, shape = _square(images)
    op = radon_operator(ctx, square.shape[-1], level["views"])
    clean = op.forward(hu_to_mu(square, px))
    noisy = noisy_line_integrals(clean, level["incident_photons"], level["electronic_sigma"], draws)
    degraded = _insert(images, op.fbp(noisy - clean), px, shape)
    return KindResult(degraded, same_params(level, len(draws), pixel_mm=[px] * len(draws)))


def _view_subset(images: torch.Tensor, level: dict[str, Any], ctx: Context, views: int, arc: float) -> torch.Tensor:
    px = pixel_mm(ctx)
    square, shape = _square(images)
    mu = hu_to_mu(square, px)
    reference = radon_operator(ctx, square.shape[-1], level["reference_views"])
    subset = radon_operator(ctx, square.shape[-1], views, arc)
    artefact = subset.fbp(subset.forward(mu)) - reference.fbp(reference.forward(mu))
    return _insert(images, artefact, px, shape)


@register("sparse_view", domain="CT", target_metric="ssim", effect="streaks radiating from high-contrast edges, from too few projection views")
def sparse_view(images: torch.Tensor, level: dict[str, Any], draws: Draws, ctx: Context) -> KindResult:
    """Sparse-view CT: the scan keeps ``views`` equally spaced projections over 180 degrees.

    Physics: angular undersampling of the sinogram; FBP of too few views leaves
    view-aliasing streaks tangent to edges. Severity lowers the number of views.
    """
    degraded = _view_subset(images, level, ctx, level["views"], 180.0)
    return KindResult(degraded, same_params(level, len(draws), pixel_mm=[pixel_mm(ctx)] * len(draws)))


@register("limited_angle", domain="CT", target_metric="ssim", effect="directional smearing of edges from a missing wedge of projection angles")
def limited_angle(images: torch.Tensor, level: dict[str, Any], draws: Draws, ctx: Context) -> KindResult:
    """Limited-angle CT: projections cover only ``arc_deg`` of the required 180 degrees.

    Physics: a missing wedge in Fourier space (Fourier slice theorem); edges tangent to
    the missing directions blur out and streak. Severity shortens the arc.
    """
    views = round(level["reference_views"] * level["arc_deg"] / 180.0)
    degraded = _view_subset(images, level, ctx, views, level["arc_deg"])
    return KindResult(degraded, same_params(level, len(draws), views=[views] * len(draws)))


def _metal_masks(images: torch.Tensor, level: dict[str, Any], draws: Draws, px: float) -> tuple[torch.Tensor, list[list[list[float]]]]:
    """Disk inserts (radius in mm) centred on random body pixels (HU > -300)."""
    batch, _, height, width = images.shape
    yy = torch.arange(height, device=images.device, dtype=torch.float32)[:, None]
    xx = torch.arange(width, device=images.device, dtype=torch.float32)[None, :]
    radius_px = level["radius_mm"] / px
    masks = torch.zeros(batch, height, width, device=images.device)
    centres: list[list[list[float]]] = []
    picks = draws.uniform(level["count"], 1)
    for b in range(batch):
        body = torch.nonzero(images[b, 0] > -300.0)
        if body.numel() == 0:
            body = torch.tensor([[height // 2, width // 2]], device=images.device)
        chosen = []
        for k in range(level["count"]):
            idx = min(int(picks[b, k, 0] * body.shape[0]), body.shape[0] - 1)
            cy, cx = (float(v) for v in body[idx])
            chosen.append([cy, cx])
            masks[b] = torch.maximum(masks[b], (((yy - cy) ** 2 + (xx - cx) ** 2) <= radius_px**2).float())
        centres.append(chosen)
    return masks, centres


@register("metal_artifact", domain="CT", target_metric="ssim", effect="bright and dark streaks between metal implants from beam hardening and photon starvation")
def metal_artifact(images: torch.Tensor, level: dict[str, Any], draws: Draws, ctx: Context) -> KindResult:
    """Metal artefact: a metal insert measured with a polychromatic 120 kVp beam.

    Physics: transmitted intensity ``sum_E s(E) exp(-r_w(E) p_water - mu_m(E) L_metal)``
    (NIST attenuation of water and titanium/iron per 10-keV bin), Poisson + electronic
    noise (photon starvation behind metal), the scanner's water beam-hardening
    correction, log, FBP. The reconstruction error versus a monochromatic 70-keV
    measurement of the same object gives the dark/bright streaks between inserts.
    """
    px = pixel_mm(ctx)
    square, shape = _square(images)
    masks, centres = _metal_masks(images, level, draws, px)
    size = square.shape[-1]
    metal_sq = F.pad(masks, (0, size - shape[1], 0, size - shape[0]))
    op = radon_operator(ctx, size, level["views"])
    water = op.forward(hu_to_mu(square, px) * (1 - metal_sq))  # tissue line integrals at 70 keV
    metal_len_cm = op.forward(metal_sq).clamp_min(0) * (px / 10.0)
    device = images.device
    weight = torch.tensor(SPECTRUM_WEIGHT / SPECTRUM_WEIGHT.sum(), dtype=torch.float32, device=device)
    ratio_w = torch.tensor(MU_WATER_CM / MU_WATER_CM[REFERENCE_BIN], dtype=torch.float32, device=device)
    mu_m = torch.tensor(MU_METAL_CM[level["metal"]], dtype=torch.float32, device=device)
    transmitted = (weight * torch.exp(-water[..., None] * ratio_w - metal_len_cm[..., None] * mu_m)).sum(-1)
    i0 = float(level["incident_photons"])
    counts = draws.poisson(i0 * transmitted) + level["electronic_sigma"] * draws.normal(*water.shape[1:])
    measured = -torch.log(counts.clamp_min(1.0) / i0)
    corrected = _water_correction(measured, weight, ratio_w)
    ideal = water + metal_len_cm * mu_m[REFERENCE_BIN]
    metal_hu = float((MU_METAL_CM[level["metal"]][REFERENCE_BIN] / MU_WATER_CM[REFERENCE_BIN] - 1) * 1000)
    with_metal = torch.where(masks[:, None] > 0.5, torch.full_like(images, metal_hu), images)
    degraded = _insert(with_metal, op.fbp(corrected - ideal), px, shape)
    return KindResult(degraded, same_params(level, len(draws), centres_px=centres, pixel_mm=[px] * len(draws)))


def _water_correction(measured: torch.Tensor, weight: torch.Tensor, ratio_w: torch.Tensor) -> torch.Tensor:
    """Invert the polychromatic water curve (the scanner's beam-hardening pre-correction)."""
    grid = torch.linspace(0, 30, 3001, device=measured.device)
    poly = -torch.log((weight * torch.exp(-grid[:, None] * ratio_w)).sum(-1))
    flat = measured.reshape(-1).clamp(float(poly[0]), float(poly[-1]))
    idx = torch.searchsorted(poly, flat).clamp(1, grid.numel() - 1)
    lo, hi = poly[idx - 1], poly[idx]
    frac = (flat - lo) / (hi - lo).clamp_min(1e-12)
    return (grid[idx - 1] + frac * (grid[idx] - grid[idx - 1])).reshape(measured.shape)


@register("ring_artifact", domain="CT", target_metric="ssim", effect="concentric rings around the rotation centre from miscalibrated detector elements")
def ring_artifact(images: torch.Tensor, level: dict[str, Any], draws: Draws, ctx: Context) -> KindResult:
    """Ring artefact: detector elements with gain errors ``g_d`` fixed over the rotation.

    Physics: a gain error adds ``-log(g_d)`` to every view of detector bin ``d``; a
    constant stripe in the sinogram back-projects to a ring. A fraction of the elements
    are defective with relative gain error of standard deviation ``gain_sigma``.
    """
    px = pixel_mm(ctx)
    square, shape = _square(images)
    op = radon_operator(ctx, square.shape[-1], level["views"])
    detectors = op.geometry.detectors
    gains = level["gain_sigma"] * draws.normal(detectors)
    defective = (draws.uniform(detectors) < level["defective_fraction"]).float()
    stripe = -torch.log1p((gains * defective).clamp(-0.5, 0.5))
    sinogram = stripe[:, None, :].expand(-1, op.angles.size, -1)
    degraded = _insert(images, op.fbp(sinogram), px, shape)
    count = [int(v) for v in defective.sum(-1).tolist()]
    return KindResult(degraded, same_params(level, len(draws), defective_elements=count))
