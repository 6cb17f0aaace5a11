"""CPU and CUDA give the same degradations for the same seed (runs only where a GPU is)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from synthesis.degradation import KINDS, degrade
from tests.synthesis.degradation_images import images_for

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.mark.parametrize("modality", ["CT", "MR", "XR", "CFP", "US", "ENDO"])
def test_cpu_and_gpu_agree(modality):
    images, spacing = images_for(modality, 128)
    for kind in KINDS[modality]:
        cpu = degrade(images, modality=modality, kind=kind, severity=2, seed=4, spacing_mm=spacing, device="cpu")
        gpu = degrade(images, modality=modality, kind=kind, severity=2, seed=4, spacing_mm=spacing, device="cuda")
        scale = 1000.0 if modality == "CT" else 1.0
        np.testing.assert_allclose(gpu.image, cpu.image, atol=2e-3 * scale, err_msg=kind)
        for a, b in zip(cpu.records, gpu.records, strict=True):
            assert a.psnr_db == pytest.approx(b.psnr_db, abs=0.1), kind
