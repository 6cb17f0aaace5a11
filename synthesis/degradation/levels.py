"""Calibrated parameters of each kind at severity 1 (mild), 2 (moderate) and 3 (severe).

Spatial sizes (``*_px``) are given at 512 px and scale with the image's short side.
The measured bands these produce on real images are in ``calibration.SEVERITY_BANDS``.
"""

from __future__ import annotations

from typing import Any

LEVELS: dict[str, dict[int, dict[str, Any]]] = {
    # CT (views are over 180 degrees; the full reference scan has 720)
    "low_dose": {
        1: {"incident_photons": 1.0e6, "electronic_sigma": 5.0, "views": 720},
        2: {"incident_photons": 2.0e5, "electronic_sigma": 5.0, "views": 720},
        3: {"incident_photons": 5.0e4, "electronic_sigma": 5.0, "views": 720},
    },
    "sparse_view": {
        1: {"views": 240, "reference_views": 720},
        2: {"views": 120, "reference_views": 720},
        3: {"views": 60, "reference_views": 720},
    },
    "limited_angle": {
        1: {"arc_deg": 175.0, "reference_views": 360},
        2: {"arc_deg": 165.0, "reference_views": 360},
        3: {"arc_deg": 150.0, "reference_views": 360},
    },
    "metal_artifact": {
        1: {"metal": "titanium", "radius_mm": 1.5, "count": 1, "incident_photons": 2.0e5, "electronic_sigma": 5.0, "views": 360},
        2: {"metal": "titanium", "radius_mm": 3.0, "count": 2, "incident_photons": 2.0e5, "electronic_sigma": 5.0, "views": 360},
        3: {"metal": "iron", "radius_mm": 4.0, "count": 2, "incident_photons": 2.0e5, "electronic_sigma": 5.0, "views": 360},
    },
    "ring_artifact": {
        1: {"gain_sigma": 0.01, "defective_fraction": 0.05, "views": 360},
        2: {"gain_sigma": 0.02, "defective_fraction": 0.1, "views": 360},
        3: {"gain_sigma": 0.04, "defective_fraction": 0.2, "views": 360},
    },
    # MR
    "undersampling_random": {
        1: {"acceleration": 2.0, "center_fraction": 0.16},
        2: {"acceleration": 4.0, "center_fraction": 0.08},
        3: {"acceleration": 8.0, "center_fraction": 0.04},
    },
    "undersampling_equispaced": {
        1: {"acceleration": 2.0, "center_fraction": 0.16},
        2: {"acceleration": 4.0, "center_fraction": 0.08},
        3: {"acceleration": 8.0, "center_fraction": 0.04},
    },
    "motion": {
        1: {"moves": 1, "max_shift_px": 2.0, "max_rotation_deg": 0.5},
        2: {"moves": 2, "max_shift_px": 8.0, "max_rotation_deg": 3.0},
        3: {"moves": 4, "max_shift_px": 16.0, "max_rotation_deg": 6.0},
    },
    "ghosting": {
        1: {"num_ghosts": (2, 3, 4), "intensity": 0.25},
        2: {"num_ghosts": (2, 3, 4), "intensity": 0.5},
        3: {"num_ghosts": (2, 3, 4), "intensity": 0.9},
    },
    "spike": {
        1: {"spikes": 1, "intensity": 0.02},
        2: {"spikes": 1, "intensity": 0.06},
        3: {"spikes": 2, "intensity": 0.15},
    },
    "gibbs": {
        1: {"keep_fraction": 0.6},
        2: {"keep_fraction": 0.4},
        3: {"keep_fraction": 0.25},
    },
    "rician_noise": {
        1: {"sigma": 0.02},
        2: {"sigma": 0.05},
        3: {"sigma": 0.10},
    },
    "bias_field": {
        1: {"coefficient": 0.15},
        2: {"coefficient": 0.35},
        3: {"coefficient": 0.7},
    },
    "anisotropy": {
        1: {"factor": 2.0},
        2: {"factor": 4.0},
        3: {"factor": 8.0},
    },
    # XR
    "quantum_noise": {
        1: {"photons": 20000.0, "electronic_sigma": 2.0},
        2: {"photons": 4000.0, "electronic_sigma": 2.0},
        3: {"photons": 800.0, "electronic_sigma": 2.0},
    },
    "detector_blur": {
        1: {"sigma_px": 1.0},
        2: {"sigma_px": 2.5},
        3: {"sigma_px": 5.0},
    },
    "exposure": {
        1: {"contrast": 0.92, "shift": 0.02},
        2: {"contrast": 0.75, "shift": 0.06},
        3: {"contrast": 0.5, "shift": 0.15},
    },
    "motion_blur": {
        1: {"length_px": 5.0},
        2: {"length_px": 12.0},
        3: {"length_px": 25.0},
    },
    # CFP
    "uneven_illumination": {
        1: {"amplitude": 0.15},
        2: {"amplitude": 0.35},
        3: {"amplitude": 0.6},
    },
    "spots": {
        1: {"count": 2, "radius": 0.05, "opacity": 0.3},
        2: {"count": 4, "radius": 0.07, "opacity": 0.5},
        3: {"count": 8, "radius": 0.09, "opacity": 0.7},
    },
    "defocus_blur": {
        1: {"radius_px": 2.0},
        2: {"radius_px": 5.0},
        3: {"radius_px": 10.0},
    },
    "low_contrast": {
        1: {"contrast": 0.75},
        2: {"contrast": 0.5},
        3: {"contrast": 0.3},
    },
    # US
    "speckle": {
        1: {"looks": 16},
        2: {"looks": 4},
        3: {"looks": 1},
    },
    "depth_attenuation": {
        1: {"loss_db": 2.0},
        2: {"loss_db": 6.0},
        3: {"loss_db": 15.0},
    },
    "shadowing": {
        1: {"width_fraction": 0.1, "transmission": 0.6},
        2: {"width_fraction": 0.2, "transmission": 0.35},
        3: {"width_fraction": 0.3, "transmission": 0.1},
    },
    # generic (ENDO, PATH, other)
    "gaussian_blur": {
        1: {"sigma_px": 1.0},
        2: {"sigma_px": 2.5},
        3: {"sigma_px": 5.0},
    },
    "noise": {
        1: {"sigma": 0.02},
        2: {"sigma": 0.05},
        3: {"sigma": 0.10},
    },
    "brightness": {
        1: {"gain": 1.08},
        2: {"gain": 1.3},
        3: {"gain": 1.8},
    },
    "bubbles": {
        1: {"count": 2, "radius": 0.08, "opacity": 0.4},
        2: {"count": 5, "radius": 0.1, "opacity": 0.6},
        3: {"count": 10, "radius": 0.12, "opacity": 0.8},
    },
    "low_resolution": {
        1: {"factor": 2.0},
        2: {"factor": 4.0},
        3: {"factor": 8.0},
    },
}
