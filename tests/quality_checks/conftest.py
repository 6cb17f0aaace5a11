"""Shared fixtures: GX is imported once per session (it costs seconds)."""

from __future__ import annotations

import os

import pytest

os.environ["GX_ANALYTICS_ENABLED"] = "false"


@pytest.fixture(scope="session", autouse=True)
def _gx_imported_once() -> None:
    from quality_checks.suites import import_gx

    import_gx()
