"""Severity bands: what each kind at each severity measures on real images.

``SEVERITY_BANDS[kind][severity]`` is a list of :class:`Band`: always a ``psnr_db`` band
(dB, CT on the 40/400 HU window, see ``metrics``) and a band of the kind's target metric
(``ssim``; ``noise_sigma``: std of the residual in HU for CT, in [0, 1] units
otherwise; ``acceleration``: k-space lines / lines acquired).

How the numbers were made (re-run after any change to ``levels.LEVELS``): every kind at
every severity with seeds 3 and 11 on the repository's realistic images
(``tests/synthesis/degradation_images.py``): the three real CT slices at 256 and 512 px,
the two NIH chest X-rays at 128/256/512, pydicom's MR_small and the Shepp-Logan head at
64/128/256, synthetic fundus and ultrasound images at 128/256, scikit-image's
immunohistochemistry slide and coffee photo at 128/256 (ENDO/PATH/generic kinds). The
band is the observed range widened by 2.5 dB (PSNR), 0.05 (SSIM), x0.75/x1.33 (noise
sigma) or 3 % (acceleration). Bands of a kind overlap between severities where content
matters more than the parameter (blur of a smooth MR phantom vs a detailed slide);
within one image, every kind is monotone in severity (tests check both).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Band:
    """A closed interval ``[low, high]`` of a measured quantity ``metric``."""

    metric: str
    low: float
    high: float

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high


SEVERITY_BANDS: dict[str, dict[int, list[Band]]] = {
    "low_dose": {
        1: [Band("psnr_db", 22.5, 34.5), Band("noise_sigma", 12.2, 45.6)],
        2: [Band("psnr_db", 16.0, 27.5), Band("noise_sigma", 28.0, 104.0)],
        3: [Band("psnr_db", 11.0, 21.0), Band("noise_sigma", 60.6, 227.0)],
    },
    "sparse_view": {
        1: [Band("psnr_db", 22.5, 41.0), Band("ssim", 0.8300000000000001, 1.0)],
        2: [Band("psnr_db", 17.0, 28.5), Band("ssim", 0.7000000000000001, 0.92)],
        3: [Band("psnr_db", 12.5, 21.5), Band("ssim", 0.59, 0.76)],
    },
    "limited_angle": {
        1: [Band("psnr_db", 21.5, 27.0), Band("ssim", 0.87, 1.0)],
        2: [Band("psnr_db", 15.0, 20.5), Band("ssim", 0.72, 0.87)],
        3: [Band("psnr_db", 11.0, 17.0), Band("ssim", 0.5700000000000001, 0.74)],
    },
    "metal_artifact": {
        1: [Band("psnr_db", 13.0, 24.0), Band("ssim", 0.61, 0.8300000000000001)],
        2: [Band("psnr_db", 12.5, 23.5), Band("ssim", 0.6, 0.8300000000000001)],
        3: [Band("psnr_db", 10.0, 20.0), Band("ssim", 0.54, 0.75)],
    },
    "ring_artifact": {
        1: [Band("psnr_db", 35.5, 50.0), Band("ssim", 0.9400000000000001, 1.0)],
        2: [Band("psnr_db", 25.5, 39.0), Band("ssim", 0.89, 1.0)],
        3: [Band("psnr_db", 18.5, 29.0), Band("ssim", 0.79, 0.96)],
    },
    "undersampling_random": {
        1: [Band("psnr_db", 18.0, 44.0), Band("acceleration", 1.94, 2.06)],
        2: [Band("psnr_db", 15.0, 35.0), Band("acceleration", 3.88, 4.12)],
        3: [Band("psnr_db", 13.5, 29.5), Band("acceleration", 7.76, 8.24)],
    },
    "undersampling_equispaced": {
        1: [Band("psnr_db", 19.0, 44.0), Band("acceleration", 1.94, 2.06)],
        2: [Band("psnr_db", 15.5, 34.5), Band("acceleration", 3.88, 4.12)],
        3: [Band("psnr_db", 14.0, 29.0), Band("acceleration", 7.76, 8.24)],
    },
    "motion": {
        1: [Band("psnr_db", 27.0, 47.0), Band("ssim", 0.85, 1.0)],
        2: [Band("psnr_db", 17.5, 45.0), Band("ssim", 0.41000000000000003, 1.0)],
        3: [Band("psnr_db", 15.5, 41.5), Band("ssim", 0.3, 1.0)],
    },
    "ghosting": {
        1: [Band("psnr_db", 27.0, 41.5), Band("ssim", 0.61, 1.0)],
        2: [Band("psnr_db", 21.0, 35.5), Band("ssim", 0.51, 1.0)],
        3: [Band("psnr_db", 16.5, 30.5), Band("ssim", 0.43, 0.97)],
    },
    "spike": {
        1: [Band("psnr_db", 46.5, 56.0), Band("ssim", 0.92, 1.0)],
        2: [Band("psnr_db", 37.0, 46.5), Band("ssim", 0.77, 1.0)],
        3: [Band("psnr_db", 26.0, 35.5), Band("ssim", 0.48, 0.97)],
    },
    "gibbs": {
        1: [Band("psnr_db", 22.5, 42.0), Band("ssim", 0.67, 1.0)],
        2: [Band("psnr_db", 18.5, 39.5), Band("ssim", 0.52, 1.0)],
        3: [Band("psnr_db", 16.5, 36.5), Band("ssim", 0.37, 1.0)],
    },
    "rician_noise": {
        1: [Band("psnr_db", 29.5, 37.0), Band("noise_sigma", 0.0149, 0.0275)],
        2: [Band("psnr_db", 21.5, 29.0), Band("noise_sigma", 0.036, 0.067)],
        3: [Band("psnr_db", 15.5, 23.0), Band("noise_sigma", 0.0669, 0.125)],
    },
    "bias_field": {
        1: [Band("psnr_db", 22.5, 45.0), Band("ssim", 0.93, 1.0)],
        2: [Band("psnr_db", 16.0, 37.5), Band("ssim", 0.88, 1.0)],
        3: [Band("psnr_db", 11.0, 32.0), Band("ssim", 0.74, 1.0)],
    },
    "anisotropy": {
        1: [Band("psnr_db", 20.5, 55.5), Band("ssim", 0.79, 1.0)],
        2: [Band("psnr_db", 17.0, 45.5), Band("ssim", 0.53, 1.0)],
        3: [Band("psnr_db", 15.0, 36.5), Band("ssim", 0.3, 1.0)],
    },
    "quantum_noise": {
        1: [Band("psnr_db", 41.5, 47.0), Band("noise_sigma", 0.00451, 0.00826)],
        2: [Band("psnr_db", 34.5, 40.0), Band("noise_sigma", 0.0103, 0.0188)],
        3: [Band("psnr_db", 27.0, 32.5), Band("noise_sigma", 0.024, 0.0436)],
    },
    "detector_blur": {
        1: [Band("psnr_db", 36.0, 46.0), Band("ssim", 0.92, 1.0)],
        2: [Band("psnr_db", 32.0, 41.0), Band("ssim", 0.87, 1.0)],
        3: [Band("psnr_db", 27.5, 34.5), Band("ssim", 0.8200000000000001, 0.99)],
    },
    "exposure": {
        1: [Band("psnr_db", 28.0, 33.5), Band("ssim", 0.88, 1.0)],
        2: [Band("psnr_db", 18.0, 24.0), Band("ssim", 0.84, 1.0)],
        3: [Band("psnr_db", 11.0, 16.5), Band("ssim", 0.72, 0.92)],
    },
    "motion_blur": {
        1: [Band("psnr_db", 30.5, 44.0), Band("ssim", 0.89, 1.0)],
        2: [Band("psnr_db", 24.5, 37.5), Band("ssim", 0.68, 1.0)],
        3: [Band("psnr_db", 20.5, 33.5), Band("ssim", 0.45, 0.97)],
    },
    "uneven_illumination": {
        1: [Band("psnr_db", 27.5, 39.5), Band("ssim", 0.9400000000000001, 1.0)],
        2: [Band("psnr_db", 20.0, 32.0), Band("ssim", 0.92, 1.0)],
        3: [Band("psnr_db", 15.5, 27.5), Band("ssim", 0.87, 1.0)],
    },
    "spots": {
        1: [Band("psnr_db", 36.5, 52.0), Band("ssim", 0.9400000000000001, 1.0)],
        2: [Band("psnr_db", 27.0, 39.5), Band("ssim", 0.91, 1.0)],
        3: [Band("psnr_db", 18.5, 28.0), Band("ssim", 0.8200000000000001, 1.0)],
    },
    "defocus_blur": {
        1: [Band("psnr_db", 30.5, 39.0), Band("ssim", 0.89, 1.0)],
        2: [Band("psnr_db", 29.0, 34.5), Band("ssim", 0.85, 0.99)],
        3: [Band("psnr_db", 25.5, 31.5), Band("ssim", 0.77, 0.91)],
    },
    "low_contrast": {
        1: [Band("psnr_db", 23.5, 29.0), Band("ssim", 0.73, 0.9)],
        2: [Band("psnr_db", 17.5, 23.0), Band("ssim", 0.67, 0.8200000000000001)],
        3: [Band("psnr_db", 15.0, 20.5), Band("ssim", 0.6, 0.73)],
    },
    "speckle": {
        1: [Band("psnr_db", 33.5, 39.5), Band("noise_sigma", 0.011, 0.02)],
        2: [Band("psnr_db", 27.5, 33.5), Band("noise_sigma", 0.0221, 0.0401)],
        3: [Band("psnr_db", 21.5, 27.0), Band("noise_sigma", 0.0457, 0.083)],
    },
    "depth_attenuation": {
        1: [Band("psnr_db", 26.0, 31.5), Band("ssim", 0.93, 1.0)],
        2: [Band("psnr_db", 18.0, 23.5), Band("ssim", 0.84, 0.98)],
        3: [Band("psnr_db", 12.5, 18.0), Band("ssim", 0.59, 0.76)],
    },
    "shadowing": {
        1: [Band("psnr_db", 28.0, 35.0), Band("ssim", 0.93, 1.0)],
        2: [Band("psnr_db", 20.0, 27.0), Band("ssim", 0.87, 1.0)],
        3: [Band("psnr_db", 15.0, 21.5), Band("ssim", 0.73, 0.91)],
    },
    "gaussian_blur": {
        1: [Band("psnr_db", 30.5, 40.0), Band("ssim", 0.89, 1.0)],
        2: [Band("psnr_db", 26.0, 35.5), Band("ssim", 0.76, 1.0)],
        3: [Band("psnr_db", 22.0, 29.0), Band("ssim", 0.49, 0.9)],
    },
    "noise": {
        1: [Band("psnr_db", 31.0, 37.5), Band("noise_sigma", 0.0138, 0.0276)],
        2: [Band("psnr_db", 23.0, 29.5), Band("noise_sigma", 0.0338, 0.0685)],
        3: [Band("psnr_db", 17.0, 24.0), Band("noise_sigma", 0.0652, 0.134)],
    },
    "brightness": {
        1: [Band("psnr_db", 23.5, 32.0), Band("ssim", 0.9400000000000001, 1.0)],
        2: [Band("psnr_db", 13.5, 22.0), Band("ssim", 0.84, 1.0)],
        3: [Band("psnr_db", 7.5, 16.0), Band("ssim", 0.54, 0.85)],
    },
    "bubbles": {
        1: [Band("psnr_db", 33.0, 46.5), Band("ssim", 0.93, 1.0)],
        2: [Band("psnr_db", 24.5, 34.5), Band("ssim", 0.89, 1.0)],
        3: [Band("psnr_db", 19.0, 27.0), Band("ssim", 0.8, 0.98)],
    },
    "low_resolution": {
        1: [Band("psnr_db", 25.0, 33.5), Band("ssim", 0.72, 0.96)],
        2: [Band("psnr_db", 20.0, 28.5), Band("ssim", 0.45, 0.8300000000000001)],
        3: [Band("psnr_db", 16.5, 25.0), Band("ssim", 0.27, 0.6900000000000001)],
    },
}

