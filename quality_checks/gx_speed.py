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
family's suites with and without it); the methods are replaced once per process.

Within the same block, ``IDDict.to_id`` (the name of every metric GX plans) skips GX's
generic JSON conversion when the kwargs are plain JSON (:func:`_plain_json_ids`); and
:func:`skip_project_config_saves` spares an ephemeral context the YAML nobody reads, and
:func:`keep_validation_results_as_dicts` its results store the JSON text only Data Docs reads back.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import json
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


def _is_plain_json(value: Any) -> bool:
    """Whether ``value`` is made only of JSON's own types (exact types, no subclasses,
    no NaN), which GX's ``convert_to_json_serializable`` returns unchanged but for
    tuples made lists, a difference ``json.dumps`` does not show."""
    kind = type(value)
    if kind is str or kind is int or kind is bool or value is None:
        return True
    if kind is float:
        return value == value  # NaN becomes null in GX's conversion
    if kind is dict:
        return all(type(key) is str and _is_plain_json(item) for key, item in value.items())
    if kind is list or kind is tuple:
        return all(_is_plain_json(item) for item in value)
    return False


def _plain_json_ids(to_id_by_gx: Any) -> Any:
    """``IDDict.to_id`` answered without GX's generic conversion when the dict is plain JSON.

    GX names every metric by the MD5 of ``json.dumps(convert_to_json_serializable(kwargs),
    sort_keys=True)``; that conversion walks each value through a chain of ``isinstance``
    and ``numpy.issubdtype`` tests (~200,000 of them per build, most for ``None``), and
    cost ~9 % of a demo build's gate. For plain JSON the conversion changes nothing the
    dump shows, so the same text is hashed directly; anything else goes to GX's code.
    """

    def to_id(self: Any, id_keys: Any = None, id_ignore_keys: Any = None) -> Any:
        if _MEMO.get() is None or id_keys is not None or id_ignore_keys is not None:
            return to_id_by_gx(self, id_keys, id_ignore_keys)
        keys = set(self.keys()) - set(self._id_ignore_keys)
        if len(keys) < 2:
            return to_id_by_gx(self)
        identified = {key: self[key] for key in keys}
        if not _is_plain_json(identified):
            return to_id_by_gx(self)
        return hashlib.md5(json.dumps(identified, sort_keys=True).encode("utf-8"), usedforsecurity=False).hexdigest()

    to_id.__doc__ = to_id_by_gx.__doc__
    return to_id


def skip_project_config_saves(context: Any) -> None:
    """Stop an ephemeral GX context from saving its project config after each change.

    Adding a data source, an asset, a batch definition, a suite or a Data Docs site makes
    GX serialise its whole project config to YAML (``_save_project_config``, ~13 ms each
    and growing with the config). An ephemeral context's config store is in memory and
    nothing in GX reads it back (checked on 1.24.1: only ``variables.save`` writes it),
    so for such a context the YAML is written for no reader; the config itself, in
    memory, is unchanged. Other contexts are refused: their saves are real.
    """
    if context.mode != "ephemeral":
        raise ValueError(f"only an ephemeral GX context keeps its config unsaved, not a {context.mode!r} one")
    context._save_project_config = _nothing_to_save


def _nothing_to_save() -> None:
    return None


def keep_validation_results_as_dicts(context: Any) -> None:
    """Let an ephemeral context's validation results store keep each result's JSON dict
    instead of JSON text.

    GX's store serialises a result to ``result.to_json_dict()``, then dumps that dict
    through its marshmallow schema to indented, key-sorted JSON text; Data Docs loads the
    text back (``deserialize``). For a store held in memory the text has no reader but
    that load, and GX's ``deserialize`` takes the dict itself as well (``schema.load``,
    which leaves its input as it was). The dump was half the cost of storing a result
    (~11 of ~21 ms for a shard suite's ``SUMMARY`` result); the loaded results are equal
    (tests/quality_checks/test_gx_speed.py). Stores kept anywhere else are refused.
    """
    from great_expectations.data_context.store.in_memory_store_backend import InMemoryStoreBackend

    store = context.validation_results_store
    if context.mode != "ephemeral" or not isinstance(store._store_backend, InMemoryStoreBackend):
        raise ValueError(f"only an ephemeral GX context's in-memory results store keeps dicts, not a {context.mode!r} one's")
    store.serialize = _as_json_dict


def _as_json_dict(result: Any) -> dict[str, Any]:
    return result.to_json_dict()  # type: ignore[no-any-return]


def _install() -> None:
    from great_expectations.core.id_dict import IDDict
    from great_expectations.expectations.expectation import Expectation
    from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

    with _install_lock:  # two gates starting together in two threads patch once
        if _installed:
            return
        Expectation.configuration = property(_memoized(vars(Expectation)["configuration"].fget))  # type: ignore[method-assign,assignment]
        ExpectationConfiguration.to_domain_obj = _memoized(ExpectationConfiguration.to_domain_obj)  # type: ignore[method-assign]
        IDDict.to_id = _plain_json_ids(IDDict.to_id)  # type: ignore[method-assign]
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
