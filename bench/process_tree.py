"""A thread that reads this process and its descendants every ``interval`` seconds.

The benchmarks' one way of watching a build's whole process tree (worker processes are
children of a fork server, a Dask nanny or a raylet, which ``getrusage`` does not see):
``bench/convert.py`` takes the peak of the summed RSS from it, ``bench/scale.py`` the
CPU of each role in a phase.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class ProcessTreeSampler(Generic[T]):
    """``samples``: (``perf_counter`` time, {pid: ``read(process)``}) every ``interval``
    seconds from ``start()`` to ``stop()``; a process that ends between listing and
    reading is left out of that sample."""

    def __init__(self, read: Callable[[Any], T], interval: float):
        import psutil

        self.read = read
        self.interval = interval
        self.me = psutil.Process()
        self.samples: list[tuple[float, dict[int, T]]] = []
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def start(self) -> ProcessTreeSampler[T]:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._done.set()
        self._thread.join()

    def _watch(self) -> None:
        import psutil

        while not self._done.is_set():
            row: dict[int, T] = {}
            for process in [self.me, *self.me.children(recursive=True)]:
                try:
                    row[process.pid] = self.read(process)
                except psutil.Error:
                    continue
            self.samples.append((time.perf_counter(), row))
            self._done.wait(self.interval)
