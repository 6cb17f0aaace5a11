"""Progress bars for the CLI: one bar per phase of a build, fed by the flow.

The bars advance as partitions finish: the local executor's tasks report each partition
from their threads as it ends; a Dask or Ray task reports its batch of partitions when
the batch is done. Reused partitions advance them at once. Nothing is drawn when the
output is not a terminal, so logs and CI stay clean.
"""

from __future__ import annotations

import sys
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from curation.partitions import PartitionResult


class BuildProgress:
    def __init__(self, label: str, *, enabled: bool | None = None):
        self.label = label
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self._progress: Any = None
        self._items: Any = None
        self._partitions: Any = None
        self.reused = 0
        self._lock = threading.Lock()  # partition tasks report from their own threads
        self._seen: set[str] = set()

    def __getstate__(self) -> dict[str, Any]:
        """A copy that draws nothing: the build's flow function holds these bars, and
        Prefect serializes the flow with its context into every Dask or Ray task, where
        a live terminal display (threads, locks) could not go and is not wanted."""
        return {"label": self.label, "reused": self.reused, "seen": set(self._seen)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["label"], enabled=False)  # type: ignore[misc]
        self.reused, self._seen = state["reused"], state["seen"]

    @property
    def done(self) -> int:
        """Partitions counted, reused ones included."""
        return len(self._seen)

    def __enter__(self) -> BuildProgress:
        if self.enabled:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )

            self._progress = Progress(
                TextColumn("{task.description:<28}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                transient=False,
            )
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def start_partitions(self, items: int, partitions: int) -> None:
        if self._progress is not None:
            self._items = self._progress.add_task(f"{self.label}: items", total=items)
            self._partitions = self._progress.add_task(f"{self.label}: partitions", total=partitions)

    def partition_done(self, result: PartitionResult) -> None:
        """One partition finished (``result.cached``: reused from an earlier run). One
        reported again (a retried batch that finished it in its failed attempt) is
        counted once, by its key."""
        with self._lock:
            if result.key in self._seen:
                return
            self._seen.add(result.key)
            self.reused += int(result.cached)
        if self._progress is not None:  # rich's Progress takes its own lock
            self._progress.advance(self._items, result.items)
            self._progress.advance(self._partitions, 1)
