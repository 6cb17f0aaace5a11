"""MR degradations, modelled in k-space (the domain an MR scanner measures).

The magnitude image is treated as the object; ``k = FFT2(image)`` (centred) stands for
the acquired k-space with columns as the phase-encode direction and rows as readout.
Each kind corrupts k-space (or the complex image) the way the scanner would and
returns the magnitude of the inverse FFT, clipped to [0, 1].
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from synthesis.degradation.ops import Draws, coordinate_grid, resample_low_resolution
from synthesis.degradation.registry import Context, KindResult, register, same_params


def to_kspace(images: torch.Tensor) -> torch.Tensor:
    """k-space in FFT order (DC at index 0): no fftshift, which costs more than the FFT."""
    return torch.fft.fft2(images, norm="ortho")


def to_image(kspace: torch.Tensor) -> torch.Tensor:
    return torch.fft.ifft2(kspace, norm="ortho")


def fft_order(centred: torch.Tensor, dim: int | tuple[int, ...] = -1) -> torch.Tensor:
    """A mask or modulation written with the centre in the middle, reordered to FFT order."""
    return torch.fft.ifftshift(centred, dim=dim)


def centred_to_fft_index(position: int, size: int) -> int:
    return (position - size // 2) % size


def _magnitude(kspace: torch.Tensor) -> torch.Tensor:
    parts = torch.view_as_real(to_image(kspace))
    return torch.hypot(parts[..., 0], parts[..., 1]).clamp_(0.0, 1.0)


def undersampling_mask(
    columns: int, acceleration: float, center_fraction: float, pattern: str, generator: torch.Generator
) -> torch.Tensor:
    """fastMRI-style phase-encode mask ``[columns]`` (1 = line acquired).

    The central ``round(columns * center_fraction)`` lines are always acquired (the
    calibration region). ``random``: the remaining lines are drawn uniformly without
    replacement so that exactly ``round(columns / acceleration)`` lines are acquired;
    ``equispaced``: every ``a``-th line from a random offset, with ``a`` adjusted as in
    fastMRI's ``EquispacedMaskFractionFunc`` so the total matches the acceleration.
    """
    center = round(columns * center_fraction)
    total = max(center, round(columns / acceleration))
    mask = torch.zeros(columns)
    start = (columns - center + 1) // 2
    mask[start : start + center] = 1
    outer = torch.nonzero(mask == 0).flatten()
    need = total - center
    if need <= 0:
        return mask
    if pattern == "random":
        chosen = outer[torch.randperm(outer.numel(), generator=generator)[:need]]
        mask[chosen] = 1
        return mask
    if pattern != "equispaced":
        raise ValueError(f"unknown undersampling pattern {pattern!r}; expected 'random' or 'equispaced'")
    spacing = outer.numel() / need
    offset = float(torch.rand((), generator=generator)) * spacing
    picks = torch.floor(offset + spacing * torch.arange(need)).long().clamp(max=outer.numel() - 1)
    mask[outer[torch.unique(picks)]] = 1
    return mask


def _undersample(images: torch.Tensor, level: dict[str, Any], draws: Draws, pattern: str) -> KindResult:
    columns = images.shape[-1]
    masks = torch.stack(
        [
            undersampling_mask(columns, level["acceleration"], level["center_fraction"], pattern, g)
            for g in draws._gens
        ]
    ).to(images.device)
    degraded = _magnitude(to_kspace(images) * fft_order(masks)[:, None, None, :])
    acquired = masks.sum(-1).tolist()
    measures = [{"acceleration": columns / a, "center_fraction_kept": level["center_fraction"]} for a in acquired]
    return KindResult(degraded, same_params(level, len(draws), lines_acquired=[int(a) for a in acquired]), measures)


@register("undersampling_random", domain="MR", target_metric="acceleration", effect="aliasing and blurring from random k-space undersampling")
def undersampling_random(images: torch.Tensor, level: dict[str, Any], draws: Draws, ctx: Context) -> KindResult:
    """Accelerated acquisition: random phase-encode lines kept, fully sampled centre.

    Physics: skipped k-space lines, zero-filled reconstruction (incoherent aliasing).
    Severity raises the acceleration factor and shrinks the centre fraction.
    """
    return _undersample(images, level, draws, "random")


@register("undersampling_equispaced", domain="MR", target_metric="acceleration", effect="coherent fold-over ghosts from regular k-space undersampling")
def undersampling_equispaced(images: torch.Tensor, level: dict[str, Any], draws: Draws, ctx: Context) -> KindResult:
    """Parallel-imaging style undersampling: every R-th phase-encode line, fully sampled centre.

    Physics: regular k-space skipping folds the object over itself (coherent aliasing)
    in a zero-filled reconstruction.
    """
    return _undersample(images, level, draws, "equispaced")


def _rigid_copies(images: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, angle_deg: torch.Tensor) -> torch.Tensor:
    """Each image of ``[B, C, H, W]`` moved by its own (dy, dx) pixels and rotation (bilinear)."""
    height, width = images.shape[-2:]
    theta = torch.deg2rad(angle_deg).to(images.dtype)[:, None, None]
    cos, sin = torch.cos(theta), torch.sin(theta)
    # the sampling grid of F.affine_grid (align_corners=False), written out: affine_grid's
    # generic batched matmul costs more than the resampling itself on CPU
    ys = ((torch.arange(height, device=images.device, dtype=images.dtype) * 2 + 1) / height - 1)[None, :, None]
    xs = ((torch.arange(width, device=images.device, dtype=images.dtype) * 2 + 1) / width - 1)[None, None, :]
    tx = (-2 * dx / width).to(images.dtype)[:, None, None]
    ty = (-2 * dy / height).to(images.dtype)[:, None, None]
    grid = torch.stack([cos * xs - sin * ys + tx, sin * xs + cos * ys + ty], dim=-1)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _kspace_columns(images: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
    """``to_kspace(images)[..., columns]`` without transforming the other columns.

    Real input: a half-spectrum FFT along the phase-encode axis (negative frequencies
    are conjugates of positive ones), then the readout FFT of the wanted columns only.
    """
    width = images.shape[-1]
    half = torch.fft.rfft(images, dim=-1, norm="ortho")
    negative = columns > width // 2
    picked = half[..., torch.where(negative, width - columns, columns)]
    picked = torch.where(negative, picked.conj(), picked)
    return torch.fft.fft(picked, dim=-2, norm="ortho")


@register("motion", domain="MR", target_metric="ssim", effect="ghosting and smearing along the phase-encode direction from patient motion")
def motion(images: torch.Tensor, level: dict[str, Any], draws: Draws, ctx: Context) -> KindResult:
    """Rigid patient motion during the scan.

    Physics: k-space is filled line by line over time; the patient holds ``moves``
    different rigid poses (translation up to ``max_shift_px`` at 512 px, rotation up to
    ``max_rotation_deg``), so each contiguous block of phase-encode lines comes from the
    FFT of a moved copy (as TorchIO's RandomMotion). The centre block keeps the
    reference pose.
    """
    batch, _, height, width = images.shape
    scale = min(height, width) / 512.0
    moves = level["moves"]
    draw = draws.uniform(moves + 1, 3)
    edges = [round(e) for e in torch.linspace(0, width, moves + 2).tolist()]
    fft_columns = torch.fft.fftshift(torch.arange(width, device=images.device))  # centred -> FFT index
    kspace = to_kspace(images)
    poses: list[list[list[float]]] = [[] for _ in range(batch)]
    for segment in range(moves + 1):
        lo, hi = edges[segment], edges[segment + 1]
        if lo <= width // 2 < hi or hi <= lo:
            continue  # the block holding the k-space centre defines the reference pose
        direction = 2 * math.pi * draw[:, segment, 0]
        magnitude = level["max_shift_px"] * scale * (0.6 + 0.4 * draw[:, segment, 1])
        dy, dx = magnitude * torch.sin(direction), magnitude * torch.cos(direction)
        rot = (2 * draw[:, segment, 2] - 1) * level["max_rotation_deg"]
        columns = fft_columns[lo:hi]
        kspace[..., columns] = _kspace_columns(_rigid_copies(images, dy, dx, rot), columns)
        for b in range(batch):
            poses[b].append([lo, hi, round(float(dy[b]), 3), round(float(dx[b]), 3), round(float(rot[b]), 3)])
    out = _magnitude(kspace)
    return KindResult(out, same_params(level, batch, segments_lo_hi_dy_dx_rot=poses))


@register("ghosting", domain="MR", target_metric="ssim", effect="faint shifted replicas of the anatomy along the phase-encode direction")
def ghosting(images: torch.Tensor, level: dict[str, Any], draws: Draws, ctx: Context) -> KindResult:
    """Ghosting from periodic motion (respiration, pulsation) or line-to-line inconsistency.

    Physics: phase-encode lines at frequencies ``0 mod n`` are scaled by ``1 - intensity``; the
    periodic modulation of k-space replicates the object ``n`` times across the
    field of view. The k-space centre is kept (as TorchIO's RandomGhosting).
    """
    height, width = images.shape[-2:]
    ghosts = draws.choices(level["num_ghosts"])
    # lines at frequencies f = 0 mod n (a set symmetric in +/-f) keep the image real, so
    # the half-spectrum FFT along the phase-encode axis suffices
    freqs = torch.fft.rfftfreq(width, d=1.0 / width, device=images.device).round().long()
    modulation = torch.ones(len(draws), freqs.numel(), device=images.device)
    for b, n in enumerate(ghosts):
        modulation[b, freqs % int(n) == 0] = 1.0 - level["intensity"]
    modulation[:, :2] = 1.0  # the k-space centre is kept
    spectrum = torch.fft.rfft2(images) * modulation[:, None, None, :]
    degraded = torch.fft.irfft2(spectrum, s=(height, width)).abs().clamp_(0.0, 1.0)
    return KindResult(degraded, same_params(level, len(draws), num_ghosts_drawn=ghosts))


@register("spike", domain="MR", target_metric="ssim", effect="a herringbone stripe pattern over the whole image from a k-space spike")
def spike(images: torch.Tensor, level: dict[str, Any], draws: Draws, ctx: Context) -> KindResult:
    """Spike (herringbone) artefact from an electrical discharge during readout.

    Physics: one corrupted k-space sample of amplitude ``intensity * max|k|`` at a
    random off-centre position; its inverse FFT is a plane wave over the whole image.
    """
    batch, _, height, width = images.shape
    kspace = to_kspace(images)
    peak = kspace.abs().amax(dim=(-3, -2, -1))
    pos = draws.uniform(level["spikes"], 2)
    out_params = []
    for b in range(batch):
        spots = []
        for s in range(level["spikes"]):
            # between 4% and 30% of the half-width from the centre, random direction
            r = 0.04 + 0.26 * float(pos[b, s, 0])
            angle = 2 * math.pi * float(pos[b, s, 1])
            ky = int(height // 2 + r * height / 2 * math.sin(angle))
            kx = int(width // 2 + r * width / 2 * math.cos(angle))
            fy, fx = centred_to_fft_index(ky, height), centred_to_fft_index(kx, width)
            kspace[b, :, fy, fx] = kspace[b, :, fy, fx] + level["intensity"] * peak[b]
            spots.append([ky, kx])
        out_params.append(spots)
    return KindResult(_magnitude(kspace), same_params(level, batch, spikes_at=out_params))


@register("gibbs", domain="MR", target_metric="ssim", effect="ringing lines parallel to sharp edges from k-space truncation")
def gibbs(images: torch.Tensor, level: dict[str, Any], draws: Draws, ctx: Context) -> KindResult:
    """Gibbs ringing from a truncated acquisition matrix.

    Physics: only the central ``keep_fraction`` of k-space (both directions) is
    acquired; the box truncation convolves the image with a sinc, ringing at edges.
    """
    height, width = images.shape[-2:]
    keep = level["keep_fraction"]
    # a mask symmetric in +/-k keeps the image real, so the half-spectrum FFT suffices
    fy = torch.fft.fftfreq(height, d=1.0 / height, device=images.device).abs()
    fx = torch.fft.rfftfreq(width, d=1.0 / width, device=images.device)
    rows = (fy <= keep * height / 2) & (fy < height / 2)
    cols = (fx <= keep * width / 2) & (fx < width / 2)
    mask = (rows[:, None] & cols[None, :]).to(images.dtype)
    truncated = torch.fft.irfft2(torch.fft.rfft2(images) * mask, s=(height, width))
    return KindResult(truncated.abs().clamp_(0.0, 1.0), same_params(level, len(draws)))


@register("rician_noise", domain="MR", target_metric="noise_sigma", effect="grainy noise with a raised, speckled background from thermal noise")
def rician_noise(images: torch.Tensor, level: dict[str, Any], draws: Draws, ctx: Context) -> KindResult:
    """Thermal noise of a magnitude image.

    Physics: white Gaussian noise of standard deviation ``sigma`` in the real and the
    imaginary channel; the magnitude is Rician-distributed, Rayleigh where there is no
    signal (mean ``sigma sqrt(pi/2)`` in the background).
    """
    sigma = level["sigma"]
    shape = images.shape[1:]
    real = images + sigma * draws.normal(*shape)
    imag = sigma * draws.normal(*shape)
    degraded = torch.sqrt(real**2 + imag**2).clamp(0.0, 1.0)
    return KindResult(degraded, same_params(level, len(draws)))


@register("bias_field", domain="MR", target_metric="ssim", effect="smooth shading, one region brighter than another, from receive-coil inhomogeneity")
def bias_field(images: torch.Tensor, level: dict[str, Any], draws: Draws, ctx: Context) -> KindResult:
    """Intensity inhomogeneity (bias field) from the receive-coil sensitivity.

    Physics: a smooth multiplicative field ``exp(sum c_ij P_i(y) P_j(x))`` of order 3
    polynomials with coefficients uniform in ``[-coefficient, coefficient]`` (the model
    of TorchIO's RandomBiasField), scaled so the brightest tissue keeps its value.
    """
    batch, _, height, width = images.shape
    y, x = coordinate_grid(height, width, images.device)
    terms = [(i, j) for i in range(4) for j in range(4 - i) if i + j > 0]
    coeffs = (draws.uniform(len(terms)) * 2 - 1) * level["coefficient"]
    log_field = torch.zeros(batch, height, width, device=images.device)
    for t, (i, j) in enumerate(terms):
        log_field = log_field + coeffs[:, t, None, None] * (y**i) * (x**j)
    field = torch.exp(log_field)[:, None]
    degraded = (images * field).clamp(0.0, 1.0)
    return KindResult(degraded, same_params(level, batch, coefficients=[[round(v, 5) for v in c] for c in coeffs.tolist()]))


@register("anisotropy", domain="MR", target_metric="ssim", effect="blocky, blurred detail along one axis from thick slices / low resolution")
def anisotropy(images: torch.Tensor, level: dict[str, Any], draws: Draws, ctx: Context) -> KindResult:
    """Low through-plane resolution (anisotropic voxels) seen in a reformatted plane.

    Physics: a thick slab averages ``factor`` pixels along one axis (area
    down-sampling), then the viewer interpolates linearly back to the grid.
    """
    axes = draws.choices(("rows", "columns"))
    out = torch.empty_like(images)
    for b, axis in enumerate(axes):
        factors = (level["factor"], 1.0) if axis == "rows" else (1.0, level["factor"])
        out[b] = resample_low_resolution(images[b : b + 1], factors)[0]
    return KindResult(out.clamp(0.0, 1.0), same_params(level, len(draws), axis=axes))
