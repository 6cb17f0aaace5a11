"""The Python contract: types and shapes, seeds, descriptions, validation of arguments."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import synthesis
from synthesis.degradation import KINDS, degrade
from synthesis.degradation.describe import verdict
from tests.synthesis.degradation_images import chest_xrays, fundus


def test_kinds_cover_every_modality_of_the_issue():
    for modality in ("CT", "MR", "XR", "CFP", "US", "ENDO", "PATH", "OTHER"):
        assert KINDS[modality], modality
    assert "low_dose" in KINDS["CT"] and "gibbs" in KINDS["MR"] and "speckle" in KINDS["US"]
    assert synthesis.KINDS is KINDS and synthesis.degrade is degrade


def test_numpy_in_numpy_out_with_record():
    xr = chest_xrays(128)[0]
    out = degrade(xr, modality="XR", kind="quantum_noise", severity=2, seed=4)
    assert isinstance(out.image, np.ndarray) and out.image.shape == xr.shape and out.image.dtype == np.float32
    assert out.image.min() >= 0.0 and out.image.max() <= 1.0
    assert json.loads(json.dumps(out.params))["photons"] == 4000.0
    assert out.description.endswith(f"Overall, the quality of this image is {out.verdict}.")
    assert out.verdict == verdict(out.psnr_db, out.ssim)


def test_torch_colour_and_list_inputs_keep_type_and_shape():
    rgb = torch.from_numpy(fundus(96))
    out = degrade(rgb, modality="CFP", kind="defocus_blur", severity=3, seed=0)
    assert isinstance(out.image, torch.Tensor) and out.image.shape == (96, 96, 3)
    listed = degrade([fundus(96, 0), fundus(96, 1)], modality="CFP", kind="spots", severity=1, seed=0)
    assert isinstance(listed.image, list) and len(listed.records) == 2
    with pytest.raises(ValueError, match="records"):
        _ = listed.psnr_db


def test_same_seed_same_output_and_batch_member_equals_single():
    batch = chest_xrays(128)
    a = degrade(batch, modality="XR", kind="motion_blur", severity=2, seed=10)
    b = degrade(batch, modality="XR", kind="motion_blur", severity=2, seed=10)
    np.testing.assert_array_equal(a.image, b.image)
    single = degrade(batch[1], modality="XR", kind="motion_blur", severity=2, seed=11)
    np.testing.assert_allclose(a.image[1], single.image, atol=1e-5)
    other = degrade(batch, modality="XR", kind="motion_blur", severity=2, seed=99)
    assert not np.array_equal(a.image, other.image)


def test_measured_verdict_not_the_label():
    flat = np.full((64, 64), 0.5, np.float32)  # nothing to blur: severe blur measures as good
    out = degrade(flat, modality="ENDO", kind="gaussian_blur", severity=3, seed=0)
    assert out.verdict == "good" and out.psnr_db > 60


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"modality": "CT", "kind": "gibbs", "severity": 1}, "does not apply"),
        ({"modality": "MR", "kind": "gibbs", "severity": 4}, "severity"),
    ],
)
def test_bad_arguments_say_what_was_expected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        degrade(np.zeros((32, 32), np.float32), seed=0, **kwargs)


def test_bad_shapes_and_values_are_refused():
    with pytest.raises(ValueError, match="shape"):
        degrade(np.zeros((2, 3, 32, 32), np.float32), modality="MR", kind="gibbs", severity=1, seed=0)
    bad = np.zeros((32, 32), np.float32)
    bad[3, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        degrade(bad, modality="MR", kind="gibbs", severity=1, seed=0)


def test_ssim_and_psnr_match_scikit_image():
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    from synthesis.degradation.metrics import psnr_db, ssim

    clean = chest_xrays(128)[0]
    noisy = degrade(clean, modality="XR", kind="quantum_noise", severity=3, seed=2).image
    a, b = torch.from_numpy(clean)[None, None], torch.from_numpy(noisy)[None, None]
    expected = structural_similarity(clean, noisy, data_range=1.0, gaussian_weights=True, sigma=1.5)
    assert float(ssim(a, b)[0]) == pytest.approx(expected, abs=1e-4)
    assert float(psnr_db(a, b)[0]) == pytest.approx(peak_signal_noise_ratio(clean, noisy, data_range=1.0), abs=1e-3)


def test_ct_measured_on_soft_tissue_window():
    hu = np.full((64, 64), 40.0, np.float32)
    hu[:, :32] = -1000.0  # air saturates at the window's floor
    out = degrade(hu, modality="CT", kind="ring_artifact", severity=3, seed=1, spacing_mm=0.8)
    assert out.image.dtype == np.float32 and out.image.shape == hu.shape
    assert "HU" in out.description and out.params["gain_sigma"] == 0.04
