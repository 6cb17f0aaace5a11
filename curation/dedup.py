"""Exact and near-duplicate removal of work items, within and across sources.

Public medical datasets overlap: APTOS images reappear in other fundus collections,
Kaggle re-uploads re-encode the same radiograph. Two checks run over all items of a
build before any conversion:

* **exact**: items with the same ``exact_key`` (by default the SHA-256 of the file
  content, including attached label maps) are duplicates;
* **near**: images whose perceptual hash (pHash: the signs, against their median, of
  the 16x16 lowest-frequency DCT coefficients of a 64x64 grey thumbnail, DC left out:
  255 bits) differ in at most ``threshold`` bits are near duplicates. The default, 12
  of 255 bits (~5%), catches re-uploads that were rescaled and re-encoded (4-6 bits in
  our tests, JPEG q85 and half-size copies) while distinct photographs of one kind
  (fundus, dermoscopy, radiographs) differ in 16-60 bits. The 64-bit difference hash
  is too coarse for medical images, whose global layout is shared (every fundus
  photograph is a bright disc on black), and flips bits on flat, noisy regions.

The first item in key order is kept; every later one becomes a ``Reject`` with reason
``duplicate`` or ``near_duplicate`` whose detail names the kept item: the provenance of
what was dropped lands in the run's ``rejects.parquet``.

pHash is written here (a few lines over Pillow and scipy) rather than adding
``imagehash``: it is the same algorithm at a larger size, and the candidate search uses
the pigeonhole bands below, which ``imagehash`` does not provide.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image
from scipy.fft import dctn

from curation.stages import Reject

STAGE = "dedup"
DEFAULT_HAMMING_THRESHOLD = 12
HASH_SIZE = 16  # 16x16 low-frequency DCT coefficients, DC dropped: 255 bits
HASH_BITS = HASH_SIZE * HASH_SIZE - 1
THUMB = 64


def phash(path: str) -> int:
    """The 255-bit DCT perceptual hash of an image file (see the module docstring)."""
    with Image.open(path) as img:
        img.draft("L", (256, 256))  # JPEG: decode at reduced size, much faster for big photos
        grey = np.asarray(img.convert("L").resize((THUMB, THUMB), Image.Resampling.LANCZOS), dtype=np.float64)
    coefficients = dctn(grey, norm="ortho")[:HASH_SIZE, :HASH_SIZE].flatten()[1:]
    bits = coefficients > np.median(coefficients)
    return int("".join("1" if b else "0" for b in bits), 2)


def hamming(a: int, b: int) -> int:
    return (a ^ b).bit_count()


def _bands(value: int, count: int) -> list[tuple[int, int]]:
    """Split the hash bits into ``count`` contiguous bands: (band index, band bits)."""
    out = []
    edges = np.linspace(0, HASH_BITS, count + 1).astype(int)
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
    hasher: Any = phash,
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
                            f"{key} is a near duplicate of {other} (pHash distance {distance} ≤ {threshold} of {HASH_BITS} bits), "
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
