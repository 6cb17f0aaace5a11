"""GX's import: the modules deferred to their first use still work when used."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from quality_checks.suites import DeferredModule, defer_import

ROOT = Path(__file__).resolve().parents[2]


def test_gx_imports_without_executing_the_deferred_modules_which_load_on_first_use() -> None:
    """In a fresh interpreter: after ``import_gx`` neither scipy.stats nor altair ran and
    neither stands in ``sys.modules``; GX's own reference loads scipy.stats on first use
    and is the real module; ordinary imports (a submodule first, then pickling, which
    checks object identity) and a suite run all work."""
    script = textwrap.dedent(
        """
        import pickle, sys
        import pandas as pd
        from quality_checks.suites import DeferredModule, import_gx
        from quality_checks.gate import _GxSession

        gx = import_gx()
        print("in sys.modules", sorted(m for m in ("scipy.stats", "altair") if m in sys.modules))
        suite = gx.ExpectationSuite(name="t", expectations=[
            gx.expectations.ExpectColumnValuesToBeBetween(column="x", min_value=0, max_value=2)])
        print("validates", _GxSession(None).validate("t", pd.DataFrame({"x": [0, 1, 2]}), suite).success)
        from great_expectations.expectations.core import expect_column_kl_divergence_to_be_less_than as kl
        print("gx holds a placeholder", isinstance(kl.stats, DeferredModule), "scipy.stats" in sys.modules)
        import scipy.stats._stats_py
        import scipy.stats
        print("pickles", pickle.loads(pickle.dumps(scipy.stats.ttest_ind)) is scipy.stats.ttest_ind)
        print("entropy", round(float(kl.stats.entropy([0.5, 0.5])), 4), kl.stats.load() is scipy.stats)
        import altair as alt
        print("altair", alt.Chart.__name__, "Chart" in dir(sys.modules["great_expectations.expectations.core.expect_column_kl_divergence_to_be_less_than"].alt))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT), "GX_ANALYTICS_ENABLED": "false"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split("\n")[:-1] == [
        "in sys.modules []",
        "validates True",
        "gx holds a placeholder True False",
        "pickles True",
        "entropy 0.6931 True",
        "altair Chart True",
    ]


def test_defer_import_leaves_imported_and_missing_modules_alone() -> None:
    import json

    assert defer_import("json") is None and sys.modules["json"] is json  # imported already
    assert defer_import("medcurate_no_such_module") is None  # not installed
    assert "medcurate_no_such_module" not in sys.modules


def test_a_deferred_module_forwards_attributes_and_gives_way_to_the_real_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "colorsys", raising=False)
    placeholder = defer_import("colorsys")
    assert isinstance(placeholder, DeferredModule) and sys.modules["colorsys"] is placeholder
    import colorsys  # an import hands out the placeholder without running the module

    assert colorsys is placeholder
    assert colorsys.rgb_to_hsv(1.0, 0.0, 0.0) == (0.0, 1.0, 1.0)  # first use imports it
    real = sys.modules["colorsys"]
    assert not isinstance(real, DeferredModule) and colorsys.hsv_to_rgb is real.hsv_to_rgb
    assert "hsv_to_rgb" in dir(colorsys)
