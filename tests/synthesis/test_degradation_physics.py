"""Physics of the degradation engine: projector/FBP accuracy, Poisson counting noise,
k-space masks, Rician statistics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats
from skimage.data import shepp_logan_phantom
from skimage.transform import resize

from synthesis.degradation import degrade
from synthesis.degradation.ct import noisy_line_integrals
from synthesis.degradation.mr import undersampling_mask
from synthesis.degradation.ops import Draws
from synthesis.degradation.radon import FourierRadon, detector_count


def test_fbp_of_full_view_noiseless_sinogram_reconstructs_phantom():
    size = 128
    phantom = resize(shepp_logan_phantom(), (size, size), anti_aliasing=True).astype(np.float32)
    op = FourierRadon(size, np.arange(360) * np.pi / 360)
    sinogram = op.forward(torch.from_numpy(phantom)[None])
    assert sinogram.shape == (1, 360, detector_count(size))
    recon = op.fbp(sinogram)[0].numpy()
    psnr = 10 * math.log10(1.0 / float(np.mean((recon - phantom) ** 2)))
    assert psnr >= 35.0, psnr


def test_projection_preserves_mass_and_matches_a_disc_chord():
    # a uniform disc of radius R projects to the chord 2 sqrt(R^2 - t^2) at every angle
    size, radius = 128, 30.0
    yy, xx = np.mgrid[:size, :size] - size / 2
    disc = ((yy**2 + xx**2) <= radius**2).astype(np.float32)
    op = FourierRadon(size, np.array([0.0, 0.7, 1.9]))
    sino = op.forward(torch.from_numpy(disc)[None])[0].numpy()
    np.testing.assert_allclose(sino.sum(axis=1), disc.sum(), rtol=1e-3)
    centre = sino.shape[1] // 2
    assert sino[:, centre].mean() == pytest.approx(2 * radius, rel=0.03)


def test_low_dose_sinogram_noise_follows_poisson_model():
    incident, electronic = 2.0e4, 5.0
    line_integrals = torch.tensor([0.5, 2.0, 4.0]).repeat_interleave(40000).reshape(1, 3, 40000)
    draws = Draws([123], torch.device("cpu"))
    noisy = noisy_line_integrals(line_integrals, incident, electronic, draws)[0]
    for row, p in enumerate((0.5, 2.0, 4.0)):
        expected_counts = incident * math.exp(-p)
        # delta method: var(-log I) = var(I) / E[I]^2
        model_var = (expected_counts + electronic**2) / expected_counts**2
        measured_var = float(noisy[row].var())
        assert measured_var == pytest.approx(model_var, rel=0.05), (p, measured_var, model_var)
        assert float(noisy[row].mean()) == pytest.approx(p, abs=0.01)


@pytest.mark.parametrize("pattern", ["random", "equispaced"])
@pytest.mark.parametrize(("columns", "acceleration", "fraction"), [(256, 4, 0.08), (320, 8, 0.04), (368, 2, 0.16)])
def test_undersampling_mask_keeps_centre_and_acceleration(pattern, columns, acceleration, fraction):
    gen = torch.Generator().manual_seed(5)
    mask = undersampling_mask(columns, acceleration, fraction, pattern, gen)
    center = round(columns * fraction)
    start = (columns - center + 1) // 2
    assert mask[start : start + center].all()
    assert mask.sum() == round(columns / acceleration) if pattern == "random" else True
    assert columns / float(mask.sum()) == pytest.approx(acceleration, rel=0.03)
    if pattern == "equispaced":
        outer = torch.nonzero(mask).flatten()
        outer = outer[(outer < start) | (outer >= start + center)]
        gaps = torch.diff(outer).float()
        # regular lines: gaps vary by at most one (rounding) apart from the jump over the centre
        assert (gaps[gaps < center] .max() - gaps[gaps < center].min()) <= 1.0


def test_rician_background_is_rayleigh():
    sigma = 0.05
    image = np.zeros((192, 192), np.float32)
    out = degrade(image, modality="MR", kind="rician_noise", severity=2, seed=9).image
    values = out.ravel().astype(np.float64)
    assert values.mean() == pytest.approx(sigma * math.sqrt(math.pi / 2), rel=0.02)
    result = stats.kstest(values, "rayleigh", args=(0, sigma))
    assert result.pvalue > 0.01, result


def test_speckle_is_unit_mean_multiplicative():
    image = np.full((128, 128), 0.4, np.float32)
    mild = degrade(image, modality="US", kind="speckle", severity=1, seed=1).image
    severe = degrade(image, modality="US", kind="speckle", severity=3, seed=1).image
    assert mild.mean() == pytest.approx(0.4, rel=0.02)
    assert severe.std() > 2 * mild.std()
