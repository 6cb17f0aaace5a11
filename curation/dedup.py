"""Exact and near-duplicate removal of work items, within and across sources.

Public medical datasets overlap: APTOS images reappear in other fundus collections,
Kaggle re-uploads re-encode the same radiograph. Two checks run over all items of a
build before any conversion:

* **exact**: items with the same ``exact_key`` (by default the SHA-256 of the file
  content, including attached label maps) are duplicates;
* **near**: images whose 64-bit difference hash (dHash: a 9x8 grey thumbnail, one bit
  per horizontal gradient sign) differ in at most ``threshold`` bits are near
  duplicates. The default threshold, 6 of 64 bits, catches re-encodes, rescales and
  mild brightness changes (which flip 0-3 bits in our tests) while distinct fundus
  photographs of different eyes differ in about 20-35 bits.

The first item in key order is kept; every later one becomes a ``Reject`` with reason
``duplicate`` or ``near_duplicate`` whose detail names the kept item: the provenance of
what was dropped lands in the run's ``rejects.parquet``.

dHash is written here (ten lines over Pillow) rather than adding ``imagehash``: it is
the same algorithm, and the candidate search uses the pigeonhole bands below, which
``imagehash`` does not provide.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

from curation.stages import Reject

STAGE = "dedup"
DEFAULT_HAMMING_THRESHOLD = 6


def dhash64(path: str) -> int:
    """The 64-bit difference hash of an image file (grey, 9x8, row-wise gradient signs)."""
    with Image.open(path) as img:
        img.draft("L", (64, 64))  # JPEG: decode at reduced size, much faster for big photos
        grey = img.convert("L").resize((9, 8), Image.Resampling.LANCZOS)
    pixels = np.asarray(grey, dtype=np.int16)
    bits = (pixels[:, 1:] > pixels[:, :-1]).flatten()
    return int("".join("1" if b else "0" for b in bits), 2)


def hamming(a: int, b: int) -> int:
    return (a ^ b).bit_count()


def _bands(value: int, count: int) -> list[tuple[int, int]]:
    """Split 64 bits into ``count`` contiguous bands: (band index, band bits)."""
    out = []
    edges = np.linspace(0, 64, count + 1).astype(int)
    for index in range(count):
        width = edges[index + 1] - edges[index]
        out.append((index, (value >> int(edges[index])) & ((1 << int(width)) - 1)))
    return out


def dedup_items(
    items: Sequence[dict[str, Any]],
    *,
    exact: bool = True,
    near: bool = True,
    threshold: int = DEFAULT_HAMMING_THRESHOLD,
    hasher: Any = dhash64,
) -> tuple[list[dict[str, Any]], list[Reject]]:
    """Items without duplicates (first in key order kept) and a reject per dropped item."""
    ordered = sorted(items, key=lambda i: i["key"])
    kept: list[dict[str, Any]] = []
    rejects: list[Reject] = []
    seen_exact: dict[str, str] = {}
    # pigeonhole: hashes within `threshold` bits agree exactly on at least one of
    # threshold+1 bands, so only items sharing a band value are compared
    buckets: dict[tuple[int, int], list[tuple[int, str]]] = defaultdict(list)
    for item in ordered:
        key = item["key"]
        content = item.get("exact_key")
        if exact and content:
            first = seen_exact.get(content)
            if first is not None:
                rejects.append(
                    Reject(key, STAGE, "duplicate", f"{key} has the same content (sha256 {content[:16]}…) as {first}, which is kept")
                )
                continue
            seen_exact[content] = key
        uri = item.get("near_uri")
        if near and uri:
            try:
                value = hasher(uri)
            except OSError:
                value = None  # unreadable here: the family stage rejects it with the reason
            if value is not None:
                match = _near_match(value, buckets, threshold)
                if match is not None:
                    other, distance = match
                    rejects.append(
                        Reject(
                            key,
                            STAGE,
                            "near_duplicate",
                            f"{key} is a near duplicate of {other} (dHash distance {distance} ≤ {threshold} of 64 bits), "
                            f"{other} is kept",
                        )
                    )
                    if exact and content:
                        seen_exact.pop(content, None)
                    continue
                for band in _bands(value, threshold + 1):
                    buckets[band].append((value, key))
        kept.append(item)
    return kept, rejects


def _near_match(
    value: int, buckets: dict[tuple[int, int], list[tuple[int, str]]], threshold: int
) -> tuple[str, int] | None:
    best: tuple[str, int] | None = None
    for band in _bands(value, threshold + 1):
        for other_value, other_key in buckets.get(band, ()):
            distance = hamming(value, other_value)
            if distance <= threshold and (best is None or distance < best[1]):
                best = (other_key, distance)
    return best
