"""Synthesis: physics-based degradations (``synthesis.degradation``) and captioning
(``synthesis.captioning``).

The degradation API is exposed lazily (``synthesis.degrade``, ``KINDS``, ``Degraded``,
``SEVERITY_BANDS``, ``Band``) so ``import synthesis`` and ``synthesis.captioning`` do not
import torch.
"""

from __future__ import annotations

from typing import Any

_LAZY = {
    "degrade": "synthesis.degradation.api",
    "KINDS": "synthesis.degradation.api",
    "Degraded": "synthesis.degradation.api",
    "DegradationRecord": "synthesis.degradation.api",
    "kinds_for": "synthesis.degradation.api",
    "SEVERITY_BANDS": "synthesis.degradation.calibration",
    "Band": "synthesis.degradation.calibration",
    "LEVELS": "synthesis.degradation.levels",
    "DegradeStage": "synthesis.degradation.stage",
    "DegradationPlan": "synthesis.degradation.stage",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'synthesis' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value
    return value
