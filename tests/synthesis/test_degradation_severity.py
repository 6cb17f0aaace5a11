"""Severity calibration on realistic images: every kind gets worse with severity on its
measured quantity, and lands in its documented bands (PSNR and the target metric)."""

from __future__ import annotations

import functools

import numpy as np
import pytest

from synthesis.degradation import KINDS, SEVERITY_BANDS, degrade
from synthesis.degradation.registry import REGISTRY
from tests.synthesis.degradation_images import images_for

CASES = [(modality, kind) for modality in ("CT", "MR", "XR", "CFP", "US", "ENDO") for kind in KINDS[modality]]
SIZES = {"CT": 256, "MR": 128, "XR": 256, "CFP": 128, "US": 128, "ENDO": 128}


@functools.cache
def measured(modality: str, kind: str) -> dict[int, list[dict[str, float]]]:
    images, spacing = images_for(modality, SIZES[modality])
    out = {}
    for severity in (1, 2, 3):
        result = degrade(images, modality=modality, kind=kind, severity=severity, seed=21, spacing_mm=spacing)
        out[severity] = [r.measures for r in result.records]
    return out


@pytest.mark.parametrize(("modality", "kind"), CASES)
def test_kind_is_monotone_in_severity(modality, kind):
    values = measured(modality, kind)
    metric = REGISTRY[kind].target_metric
    psnr = [np.mean([m["psnr_db"] for m in values[s]]) for s in (1, 2, 3)]
    target = [np.mean([m[metric] for m in values[s]]) for s in (1, 2, 3)]
    assert psnr[0] > psnr[1] > psnr[2], (kind, psnr)
    if metric == "ssim":
        assert target[0] > target[1] > target[2], (kind, target)
    else:  # noise sigma and acceleration grow with severity
        assert target[0] < target[1] < target[2], (kind, target)


@pytest.mark.parametrize(("modality", "kind"), CASES)
def test_measurements_fall_in_documented_bands(modality, kind):
    values = measured(modality, kind)
    for severity in (1, 2, 3):
        bands = SEVERITY_BANDS[kind][severity]
        assert {b.metric for b in bands} >= {"psnr_db", REGISTRY[kind].target_metric}
        for band in bands:
            for m in values[severity]:
                assert band.low <= m[band.metric] <= band.high, (kind, severity, band, m[band.metric])


def test_every_kind_has_bands_for_each_severity():
    for kinds in KINDS.values():
        for kind in kinds:
            assert sorted(SEVERITY_BANDS[kind]) == [1, 2, 3]
