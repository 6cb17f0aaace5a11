"""A wall-clock limit per item: heavy decodes run in a child process that can be killed.

Why a process: a hang inside a C decoder (a crafted JPEG 2000 codestream, a huge
declared frame count) cannot be interrupted from Python: ``signal.alarm`` only fires
between bytecodes and only in the main thread, and conversion runs in worker threads
(Prefect's thread pool, Dask workers). A child process can always be terminated.

:class:`ItemGuard` keeps one ``forkserver`` worker process alive across items (the
imports of pydicom/SimpleITK/PyAV are paid once per stage, not per item), sends it
``(function, item, options)`` and waits at most ``timeout_s`` for the rows. On timeout
the worker is killed (and restarted lazily for the next item) and the item becomes a
``timeout`` reject. A worker that dies (segfault, OOM kill) gives ``worker_crashed``.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
from collections.abc import Callable
from typing import Any

from converters.base import ConversionError


def _worker_init() -> None:
    """In the killable worker, decoders that may abort() the process are allowed."""
    from converters import dicom

    dicom.GDCM_FALLBACK = True


class ItemGuard:
    """Runs ``fn(*args)`` in a killable worker process with a wall-clock limit."""

    def __init__(self, timeout_s: float, start_method: str = "forkserver"):
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s}")
        self.timeout_s = float(timeout_s)
        self._context = multiprocessing.get_context(start_method)
        self._pool: cf.ProcessPoolExecutor | None = None

    def _executor(self) -> cf.ProcessPoolExecutor:
        if self._pool is None:
            self._pool = cf.ProcessPoolExecutor(
                max_workers=1, mp_context=self._context, initializer=_worker_init
            )
        return self._pool

    def call(self, fn: Callable[..., Any], *args: Any, what: str = "item") -> Any:
        """The result of ``fn(*args)``; ConversionError('timeout' | 'worker_crashed') otherwise.

        ConversionErrors raised by ``fn`` pass through unchanged.
        """
        future = self._executor().submit(fn, *args)
        try:
            return future.result(timeout=self.timeout_s)
        except cf.TimeoutError as exc:
            self._kill()
            raise ConversionError(
                "timeout", f"{what}: conversion took longer than {self.timeout_s:g}s (worker killed)"
            ) from exc
        except cf.process.BrokenProcessPool as exc:
            self._kill()
            raise ConversionError("worker_crashed", f"{what}: the conversion process died ({exc})") from exc

    def _kill(self) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return
        processes = list(getattr(pool, "_processes", {}).values())
        for process in processes:  # only the workers this guard started
            process.kill()
        pool.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __enter__(self) -> ItemGuard:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
