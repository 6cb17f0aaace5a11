"""Severity bands (filled in after calibration)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Band:
    metric: str
    low: float
    high: float


SEVERITY_BANDS: dict[str, dict[int, list[Band]]] = {}
