"""Deterministic identifiers: sample ids, subject pseudonyms, content hashes.

Everything that names data is a hash of what the data *is*, never of when or where a
run happened, so re-running a build yields the same ids and shard names.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import IO

_CHUNK = 1 << 20


def stable_hash(*parts: object, length: int = 32) -> str:
    """Hex digest of the parts, each length-prefixed so ("ab", "c") != ("a", "bc")."""
    h = hashlib.sha256()
    for part in parts:
        data = str(part).encode("utf-8")
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()[:length]


def sample_id(dataset: str, source: str, source_key: str, task: str, variant: str = "") -> str:
    """The id DESIGN.md defines: a hash of (dataset, source, source key, task, variant)."""
    return stable_hash(dataset, source, source_key, task, variant)


def subject_pseudonym(identifier: str, salt: str) -> str:
    """Salted hash pseudonym of a patient/subject identifier.

    The salt comes from configuration (``MEDCURATE_SALT``); without it the pseudonym of a
    known patient id could be recomputed by anyone, so it is never hard-coded in data.
    """
    if not salt:
        raise ValueError("a non-empty salt is required to pseudonymise subjects")
    return "subj-" + hashlib.sha256(f"{salt}\x00{identifier}".encode()).hexdigest()[:24]


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_stream(stream: IO[bytes]) -> str:
    h = hashlib.sha256()
    for chunk in iter(lambda: stream.read(_CHUNK), b""):
        h.update(chunk)
    return h.hexdigest()


def combine_hashes(hashes: Iterable[str]) -> str:
    """One content hash for several files (a DICOM series, an image and its label maps)."""
    h = hashlib.sha256()
    for digest in hashes:
        h.update(digest.encode("ascii"))
    return h.hexdigest()
