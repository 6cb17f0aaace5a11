"""Subject-level train/val/test assignment.

The split of a sample is a pure function of its subject pseudonym, so every sample of a
subject lands in the same split in every build, whatever order or partition it came in.
"""

from __future__ import annotations

import hashlib

from curation.schema import SPLITS

DEFAULT_RATIOS: tuple[float, float, float] = (0.8, 0.1, 0.1)


def check_ratios(ratios: tuple[float, float, float]) -> None:
    if len(ratios) != 3 or any(r < 0 for r in ratios) or abs(sum(ratios) - 1.0) > 1e-6:
        raise ValueError(f"split ratios must be three non-negative numbers summing to 1, got {ratios}")


def split_for_subject(subject_key: str, ratios: tuple[float, float, float] = DEFAULT_RATIOS) -> str:
    """``train``/``val``/``test`` from a stable hash of the subject key."""
    check_ratios(ratios)
    bucket = int.from_bytes(hashlib.sha256(subject_key.encode()).digest()[:8], "big") / 2**64
    cumulative = 0.0
    for split, ratio in zip(SPLITS, ratios, strict=True):
        cumulative += ratio
        if bucket < cumulative:
            return split
    return SPLITS[-1]
