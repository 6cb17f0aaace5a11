"""One build of a dataset at a time on a workdir.

Two builds of one dataset compute the same partition keys, write the same shard and
manifest names and commit to the same Iceberg table: overlapping, they truncate each
other's temporary shards and race on the commit. A nightly schedule, a manual run from
the UI and a CLI build can overlap; a deployment's ``concurrency_limit`` covers only runs
of that one deployment. So every build holds an exclusive lock per (workdir, dataset)
from planning to publishing, and a second one waits for it.

The lock is an OS file lock (``fcntl.flock``) on ``<warehouse>/locks/<dataset>.lock``:
the warehouse holds the table every build of the dataset writes, whichever workdir it
plans in (two workdirs may share a warehouse and catalog). An object-storage warehouse
has no such primitive, so the lock then lives in a local workdir
(``<workdir>/locks/``), which covers the builds planned there. It is released when its
process dies (``kill -9`` included), so a crashed build never leaves a stale lock. With
both on object storage, builds of one dataset must be serialised by whoever schedules
them (docs/operations.md).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import multiprocessing
import os
import socket
import time
from collections.abc import Iterator

from catalogs.catalog import check_dataset_name
from converters.io import is_local, local_path

log = logging.getLogger(__name__)


@contextlib.contextmanager
def dataset_build_lock(workdir: str, warehouse: str, dataset: str) -> Iterator[None]:
    """Hold the dataset's build lock for the block; wait for it if another build has
    it, saying once which process that is."""
    check_dataset_name(dataset)  # it names a file: checked before it touches the disk
    if getattr(multiprocessing.current_process(), "_inheriting", False):
        # a worker process re-importing a script that starts builds without the
        # ``if __name__ == "__main__":`` guard (the flag multiprocessing's own check reads):
        # waiting for the build that holds the lock would never end; failing ends the
        # worker, and that build carries on in its own process (flows.engines.local_pool_map)
        raise RuntimeError(
            f"a build of {dataset} was started while a worker process imports the main script: "
            'scripts that start builds need the `if __name__ == "__main__":` guard'
        )
    home = next((where for where in (warehouse, workdir) if is_local(where)), None)
    if home is None:
        log.debug("no build lock for %s: object storage only, builds are serialised by their scheduler", dataset)
        yield
        return
    folder = os.path.join(local_path(home), "locks")
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"{dataset}.lock")
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            log.warning("another build of %s is running (%s); waiting for it to finish", dataset, holder)
            waited = time.perf_counter()
            fcntl.flock(handle, fcntl.LOCK_EX)
            log.warning("the other build of %s finished; this one starts after %.0f s", dataset, time.perf_counter() - waited)
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
