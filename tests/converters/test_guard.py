"""The per-item wall-clock guard: hangs and hard crashes in a decoder become rejects,
and guarded conversion gives the same samples as in-process conversion."""

from __future__ import annotations

import operator
import os
import shutil
import time

import pytest

from converters.base import ConversionError, ConvertOptions
from converters.discover import discover
from converters.guard import ItemGuard
from converters.stage import ConvertStage
from curation.stages import run_stages_locally
from tests.helpers import TEST_SALT, pydicom_file


def test_a_hanging_call_is_killed_after_the_limit_and_the_guard_recovers():
    with ItemGuard(timeout_s=5.0) as guard:
        assert guard.call(operator.add, 2, 3) == 5  # worker started (imports paid) before timing
        guard.timeout_s = 0.5
        started = time.perf_counter()
        with pytest.raises(ConversionError) as err:
            guard.call(time.sleep, 30, what="slow.dcm")
        assert err.value.reason == "timeout" and "slow.dcm" in err.value.detail
        assert time.perf_counter() - started < 5
        guard.timeout_s = 30.0
        assert guard.call(operator.mul, 6, 7) == 42  # a fresh worker after the kill


def test_a_worker_that_dies_is_a_reject_not_a_dead_run():
    with ItemGuard(timeout_s=30.0) as guard:
        with pytest.raises(ConversionError) as err:
            guard.call(os._exit, 3, what="abort.dcm")
        assert err.value.reason == "worker_crashed"
        assert guard.call(operator.add, 1, 1) == 2


def test_guarded_stage_gives_the_same_samples(tmp_path):
    for name in ("CT_small.dcm", "MR_small_RLE.dcm"):
        shutil.copy2(pydicom_file(name), tmp_path / name)
    table = discover([str(tmp_path)]).table()
    plain = ConvertOptions(dataset="t", source="t", salt=TEST_SALT)
    guarded = ConvertOptions(dataset="t", source="t", salt=TEST_SALT, item_timeout_s=60)
    # the samples are the same; the cache key is not: a limit decides which items time out,
    # and a rebuild with another one must retry them
    assert plain.fingerprint() != guarded.fingerprint()
    a = run_stages_locally([ConvertStage(plain)], table).table.to_pylist()
    b = run_stages_locally([ConvertStage(guarded)], table).table.to_pylist()
    strip = lambda rows: [{k: v for k, v in r.items() if k != "provenance"} for r in rows]  # noqa: E731
    assert strip(a) == strip(b) and len(a) == 2


def test_guarded_rejects_keep_their_reason(tmp_path):
    """A ConversionError raised in the worker crosses back whole (it pickles with both
    arguments): the reject says what was wrong, not ``worker_crashed``."""
    shutil.copy2(pydicom_file("CT_small.dcm"), tmp_path / "ok.dcm")
    (tmp_path / "truncated.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00")
    table = discover([str(tmp_path)]).table()
    plain = ConvertOptions(dataset="t", source="t", salt=TEST_SALT)
    guarded = ConvertOptions(dataset="t", source="t", salt=TEST_SALT, item_timeout_s=60)
    expected = [(r.source_uri, r.reason) for r in run_stages_locally([ConvertStage(plain)], table).rejects]
    output = run_stages_locally([ConvertStage(guarded)], table)
    assert [(r.source_uri, r.reason) for r in output.rejects] == expected
    assert expected and expected[0][1] != "worker_crashed" and output.table.num_rows == 1
