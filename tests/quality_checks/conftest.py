"""Shared fixtures: GX is imported once per session (it costs seconds)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

os.environ["GX_ANALYTICS_ENABLED"] = "false"


@pytest.fixture(scope="session", autouse=True)
def _gx_imported_once() -> None:
    from quality_checks.suites import import_gx

    import_gx()


# the tests import their realistic-row builders as ``qc_samples`` (import-mode=importlib
# does not put test folders on sys.path)
sys.path.insert(0, str(Path(__file__).resolve().parent))
