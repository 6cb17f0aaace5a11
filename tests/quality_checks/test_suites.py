"""GX's import: the modules deferred to their first use still work when used."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from quality_checks.suites import GX_DEFERRED_MODULES, DeferredModule, defer_import

ROOT = Path(__file__).resolve().parents[2]


def test_gx_imports_without_executing_the_deferred_modules_which_load_on_first_use() -> None:
    """In a fresh interpreter: after ``import_gx`` scipy.stats and altair are placeholders;
    GX's own reference to scipy.stats, ``from scipy.stats import ...``, a submodule
    import and altair all work on first use, and a suite still validates."""
    script = textwrap.dedent(
        """
        import sys
        import pandas as pd
        from quality_checks.suites import DeferredModule, GX_DEFERRED_MODULES, import_gx
        from quality_checks.gate import _GxSession

        gx = import_gx()
        print("deferred", sorted(m for m in GX_DEFERRED_MODULES if isinstance(sys.modules[m], DeferredModule)))
        session = _GxSession(None)
        suite = gx.ExpectationSuite(name="t", expectations=[
            gx.expectations.ExpectColumnValuesToBeBetween(column="x", min_value=0, max_value=2)])
        print("validates", session.validate("t", pd.DataFrame({"x": [0, 1, 2]}), suite).success)
        print("still deferred", isinstance(sys.modules["scipy.stats"], DeferredModule))
        from great_expectations.expectations.core import expect_column_kl_divergence_to_be_less_than as kl
        print("entropy", round(float(kl.stats.entropy([0.5, 0.5])), 4))
        print("loaded", not isinstance(sys.modules["scipy.stats"], DeferredModule))
        from scipy.stats import norm
        import scipy.stats._stats_py
        print("norm", round(float(norm.cdf(0.0)), 2))
        import altair as alt
        print("altair", alt.Chart.__name__)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT), "GX_ANALYTICS_ENABLED": "false"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split("\n")[:-1] == [
        "deferred ['altair', 'scipy.stats']",
        "validates True",
        "still deferred True",
        "entropy 0.6931",
        "loaded True",
        "norm 0.5",
        "altair Chart",
    ]


def test_defer_import_leaves_imported_and_missing_modules_alone() -> None:
    import json

    defer_import("json")  # imported already: the module itself stays
    assert sys.modules["json"] is json
    defer_import("medcurate_no_such_module")  # not installed: nothing is put in its place
    assert "medcurate_no_such_module" not in sys.modules
    assert GX_DEFERRED_MODULES == ("scipy.stats", "altair")


def test_a_deferred_module_forwards_attributes_and_replaces_itself_in_sys_modules(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "colorsys", raising=False)
    defer_import("colorsys")
    placeholder = sys.modules["colorsys"]
    assert isinstance(placeholder, DeferredModule)
    import colorsys  # an import hands out the placeholder without running the module

    assert colorsys is placeholder
    assert colorsys.rgb_to_hsv(1.0, 0.0, 0.0) == (0.0, 1.0, 1.0)  # first use imports it
    assert not isinstance(sys.modules["colorsys"], DeferredModule)
    assert colorsys.hsv_to_rgb is sys.modules["colorsys"].hsv_to_rgb
