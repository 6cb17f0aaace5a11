"""The pipeline version: package version plus a hash of the code that shapes samples.

Shard names and partition cache keys include it, so changing a converter or a recipe
stage invalidates the results it could change, without anyone remembering to bump a
number. It is conservative: every byte of ``curation/``, ``converters/`` and
``synthesis/`` counts, so any change there (a docstring, a helper no conversion uses)
invalidates every partition, and the next rebuild of each dataset is a full one.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
from pathlib import Path

from curation.schema import SCHEMA_VERSION

_CODE_PACKAGES = ("curation", "converters", "synthesis")


@functools.lru_cache(maxsize=1)
def code_hash() -> str:
    root = Path(__file__).resolve().parent.parent
    h = hashlib.sha256()
    for package in _CODE_PACKAGES:
        for path in sorted((root / package).rglob("*")):
            if path.suffix in (".py", ".yaml", ".json", ".txt", ".csv") and "__pycache__" not in path.parts:
                h.update(str(path.relative_to(root)).encode())
                h.update(path.read_bytes())
    return h.hexdigest()[:10]


@functools.lru_cache(maxsize=1)
def pipeline_version() -> str:
    try:
        package = importlib.metadata.version("medcurate")
    except importlib.metadata.PackageNotFoundError:
        package = "0+unknown"
    return f"{package}+s{SCHEMA_VERSION}.{code_hash()}"
