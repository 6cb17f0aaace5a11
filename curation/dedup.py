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

Decoding is most of a plan's dedup time (a 1024² PNG ≈ 20 ms), so perceptual hashes are
kept in the build's hash cache (:mod:`curation.hash_cache`) under the image's content
SHA-256 and :data:`PHASH_VERSION`: a rebuild decodes only new content. Missing hashes of
many images are computed on a thread pool: Pillow decodes and resizes without holding the
GIL, so threads scale like processes here (measured 1.9× on 2 cores, same as a forked
pool) without a process pool's start-up (≈1 s spawned) or forking a threaded process.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from PIL import Image
from scipy.fft import dctn

from curation import hash_cache
from curation.hash_cache import HashCache, Identity
from curation.stages import Reject

STAGE = "dedup"
DEFAULT_HAMMING_THRESHOLD = 12
HASH_SIZE = 16  # 16x16 low-frequency DCT coefficients, DC dropped: 255 bits
HASH_BITS = HASH_SIZE * HASH_SIZE - 1
THUMB = 64
#: names the algorithm and its parameters in the hash cache; change it when phash changes
PHASH_VERSION = f"dct{HASH_SIZE}-thumb{THUMB}-lanczos-v1"
#: from this many images to hash, a thread pool (fewer: not worth the threads)
PARALLEL_MIN = 200
#: what an image that cannot be hashed raises; it is left to the family stage to reject
_UNHASHABLE = (OSError, ValueError, Image.DecompressionBombError)


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
    cache: HashCache | None = None,
) -> tuple[list[dict[str, Any]], list[Reject]]:
    """Items without duplicates (first in key order kept) and a reject per dropped item.

    ``cache`` (else the plan's active hash cache) keeps perceptual hashes across builds.
    """
    ordered = sorted(items, key=lambda i: i["key"])
    values = near_hashes([i["near_uri"] for i in ordered if i.get("near_uri")], hasher, cache) if near else {}
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
            value = values.get(uri)  # None: unreadable here, the family stage rejects it with the reason
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


def near_hashes(
    uris: Iterable[str], hasher: Callable[[str], int] = phash, cache: HashCache | None = None
) -> dict[str, int | None]:
    """Perceptual hash of each image (None: it cannot be read), computing only those the
    hash cache does not hold for the image's content (the default ``phash`` only)."""
    uris = list(dict.fromkeys(uris))
    cache = cache or hash_cache.active()
    if hasher is not phash or cache is None or not cache.enabled:
        return dict(zip(uris, _compute(uris, hasher), strict=True))
    content: dict[str, tuple[str, Identity | None] | None] = {}
    for uri in uris:
        try:
            content[uri] = cache.hash_with_identity(uri)
        except OSError:
            content[uri] = None
    stored = cache.phashes((c[0] for c in content.values() if c is not None), PHASH_VERSION)
    todo: dict[str, str] = {}  # content sha256 -> one uri holding it
    for uri, known in content.items():
        if known is not None and known[0] not in stored:
            todo.setdefault(known[0], uri)
    computed = dict(zip(todo, _compute(list(todo.values()), hasher), strict=True))
    for sha, value in computed.items():
        known = content[todo[sha]]
        ident = known[1] if known is not None else None
        # stored only for a file whose content hash is trusted and that did not change since
        if value is not None and ident is not None and hash_cache.identity(ident.uri) == ident:
            cache.remember_phash(sha, PHASH_VERSION, value)
    out: dict[str, int | None] = {}
    for uri, known in content.items():
        out[uri] = None if known is None else stored.get(known[0], computed.get(known[0]))
    return out


def _compute(uris: list[str], hasher: Callable[[str], int]) -> list[int | None]:
    if len(uris) < PARALLEL_MIN or (os.cpu_count() or 1) < 2:
        return [_hash_or_none(hasher, u) for u in uris]
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1), thread_name_prefix="phash") as pool:
        return list(pool.map(lambda u: _hash_or_none(hasher, u), uris))


def _hash_or_none(hasher: Callable[[str], int], uri: str) -> int | None:
    try:
        return hasher(uri)
    except _UNHASHABLE:
        return None
