"""The structured quality description, written from measured values.

The verdict comes from what was measured (PSNR, SSIM), never from the severity label
alone: a "severe" blur of an already smooth image may still measure as usable.
"""

from __future__ import annotations

import math

#: verdict thresholds on the measured values (CT on its 40/400 HU window)
GOOD_MIN_PSNR_DB = 30.0
GOOD_MIN_SSIM = 0.85
REJECT_BELOW_PSNR_DB = 20.0
REJECT_BELOW_SSIM = 0.5

SEVERITY_WORDS = {1: "mild", 2: "moderate", 3: "severe"}
MODALITY_NAMES = {
    "CT": "CT slice",
    "MR": "MR image",
    "XR": "radiograph",
    "CFP": "colour fundus photograph",
    "US": "ultrasound image",
    "ENDO": "endoscopy frame",
    "PATH": "pathology image",
}


def verdict(psnr_db: float, ssim: float) -> str:
    """``good`` / ``usable`` / ``reject`` from measured PSNR (dB) and SSIM."""
    if math.isnan(psnr_db) or math.isnan(ssim):
        return "reject"
    if psnr_db < REJECT_BELOW_PSNR_DB or ssim < REJECT_BELOW_SSIM:
        return "reject"
    if psnr_db >= GOOD_MIN_PSNR_DB and ssim >= GOOD_MIN_SSIM:
        return "good"
    return "usable"


def _impact(ssim: float) -> str:
    if ssim >= 0.95:
        return "barely visible and leaves all structures readable"
    if ssim >= 0.85:
        return "visible but fine structures remain readable"
    if ssim >= 0.65:
        return "clearly visible and obscures fine detail"
    if ssim >= 0.5:
        return "strong and hides small or low-contrast structures"
    return "dominant and makes the anatomy unreliable to read"


def describe(
    *,
    modality: str,
    kind: str,
    effect: str,
    severity: int,
    measures: dict[str, float],
) -> tuple[str, str]:
    """``(verdict, description)``; the description ends with the fixed verdict sentence."""
    psnr, ssim_value = measures["psnr_db"], measures["ssim"]
    decided = verdict(psnr, ssim_value)
    noun = MODALITY_NAMES.get(modality, "image")
    parts = [
        f"This {noun} shows {effect} ({kind.replace('_', ' ')}, {SEVERITY_WORDS.get(severity, str(severity))}).",
        f"Measured against the clean image: PSNR {psnr:.1f} dB, SSIM {ssim_value:.3f}",
    ]
    sigma = measures.get("noise_sigma")
    if sigma is not None and not math.isnan(sigma):
        unit = " HU" if modality == "CT" else ""
        parts[-1] += f", residual noise {sigma:.3g}{unit}"
    if "acceleration" in measures:
        parts[-1] += f", acceleration {measures['acceleration']:.2f}x"
    parts[-1] += "."
    parts.append(f"The degradation is {_impact(ssim_value)}.")
    parts.append(f"Overall, the quality of this image is {decided}.")
    return decided, " ".join(parts)
