"""Physics-based degradation engine (MedQ-UNI / MedQ-Deg): see docs/degradation.md."""

from synthesis.degradation.api import KINDS, DegradationRecord, Degraded, degrade, kinds_for
from synthesis.degradation.calibration import SEVERITY_BANDS, Band
from synthesis.degradation.levels import LEVELS

__all__ = ["KINDS", "LEVELS", "SEVERITY_BANDS", "Band", "DegradationRecord", "Degraded", "degrade", "kinds_for"]
