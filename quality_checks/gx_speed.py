"""One run's worth of GX's expectation objects, each built once.

GX 1.x (checked on 1.24.1, the newest release) rebuilds the same objects over and over
while it plans a validation run: an expectation's ``configuration`` is built afresh —
``pydantic.dict()``, a new ``ExpectationConfiguration``, ``camel_to_snake`` of the class
name — every time one of its kwargs is looked up (``_get_domain_kwargs``,
``_get_success_kwargs`` and ``_get_runtime_kwargs`` read ``self.configuration.kwargs``
once per key), and ``ExpectationConfiguration.to_domain_obj()`` builds a new, validated
pydantic expectation for every metric the expectation needs (``registry.get_metric_kwargs``).
On our 37-expectation shard suite that is ~1,400 configurations and ~440 expectations per
run, about a third of it (cProfile), while nothing changes during a run.

:func:`memoized_configurations` makes both return the object first built for the same
expectation (configuration) object for as long as the block runs, in this thread and
context only (a :class:`~contextvars.ContextVar`): anywhere else, including other
threads' GX runs, they behave exactly as GX's. This is our own code around GX's
internals, kept because it is measurably faster (bench/gate.py, docs/benchmarks.md) and
exact (tests/quality_checks/test_gx_speed.py compares whole validation results of every
family's suites with and without it); the two methods are replaced once per process.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
from collections.abc import Iterator
from typing import Any

#: (id(object), method) -> (object, what the method returned); the object is held so that
#: its id cannot be reused by another object while the block runs
_MEMO: contextvars.ContextVar[dict[tuple[int, Any], tuple[Any, Any]] | None] = contextvars.ContextVar(
    "medcurate_gx_configurations", default=None
)
_installed: list[bool] = []
_install_lock = threading.Lock()


def _memoized(built_by_gx: Any) -> Any:
    """``built_by_gx`` (a method without arguments), answered from the block's memo."""

    def once_per_object(self: Any) -> Any:
        memo = _MEMO.get()
        if memo is None:
            return built_by_gx(self)
        key = (id(self), built_by_gx)
        hit = memo.get(key)
        if hit is None:
            hit = memo[key] = (self, built_by_gx(self))
        return hit[1]

    once_per_object.__doc__ = built_by_gx.__doc__
    return once_per_object


def _install() -> None:
    from great_expectations.expectations.expectation import Expectation
    from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

    with _install_lock:  # two gates starting together in two threads patch once
        if _installed:
            return
        Expectation.configuration = property(_memoized(vars(Expectation)["configuration"].fget))  # type: ignore[method-assign,assignment]
        ExpectationConfiguration.to_domain_obj = _memoized(ExpectationConfiguration.to_domain_obj)  # type: ignore[method-assign]
        _installed.append(True)


@contextlib.contextmanager
def memoized_configurations() -> Iterator[None]:
    """Within the block, each expectation's configuration is built once (see module)."""
    _install()
    token = _MEMO.set({})
    try:
        yield
    finally:
        _MEMO.reset(token)
