"""The kind registry: one entry per degradation kind, with its modality and severities.

A kind is a function ``fn(images, level, draws, ctx) -> KindResult`` over a batch
``[B, C, H, W]`` (Hounsfield units for CT, [0, 1] otherwise). ``level`` is the
calibrated parameter set of the requested severity (``calibration.LEVELS``); whatever
the kind draws at random is returned per sample in ``KindResult.params`` so the record
says exactly what was done.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from synthesis.degradation.ops import Draws


@dataclass
class OperatorCache:
    """Precomputed operators (Radon/FBP matrices, masks) keyed by geometry, one per worker."""

    items: dict[tuple[Any, ...], Any] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def get(self, key: tuple[Any, ...], build: Callable[[], Any]) -> Any:
        with self.lock:
            if key not in self.items:
                self.items[key] = build()
            return self.items[key]


#: the process-wide cache ``degrade`` uses unless given another (a stage owns its own)
DEFAULT_CACHE = OperatorCache()


@dataclass(frozen=True)
class Context:
    modality: str
    spacing_mm: float | None
    device: torch.device
    cache: OperatorCache


@dataclass
class KindResult:
    images: torch.Tensor
    params: list[dict[str, Any]]
    #: measured quantities the kind knows best (e.g. the mask's acceleration), per sample
    measures: list[dict[str, float]] | None = None


KindFn = Callable[[torch.Tensor, dict[str, Any], Draws, Context], KindResult]


@dataclass(frozen=True)
class KindSpec:
    name: str
    fn: KindFn
    #: "CT", "MR", ... or "ANY" for kinds that apply to any [0, 1] image
    domain: str
    #: the measurable quantity the severities are calibrated on besides PSNR
    target_metric: str
    #: what the kind looks like, for the quality description ("grainy photon noise")
    effect: str


REGISTRY: dict[str, KindSpec] = {}


def register(name: str, *, domain: str, target_metric: str, effect: str) -> Callable[[KindFn], KindFn]:
    def wrap(fn: KindFn) -> KindFn:
        if name in REGISTRY:
            raise ValueError(f"degradation kind {name!r} registered twice")
        REGISTRY[name] = KindSpec(name, fn, domain, target_metric, effect)
        return fn

    return wrap


def same_params(level: dict[str, Any], batch: int, **extra: list[Any]) -> list[dict[str, Any]]:
    """Per-sample params: the severity level plus each sample's drawn values."""
    out = []
    for i in range(batch):
        row = dict(level)
        row.update({k: v[i] for k, v in extra.items()})
        out.append(row)
    return out
