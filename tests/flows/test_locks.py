"""One build of a dataset at a time on a workdir: a second waits, a dead holder frees it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from flows.locks import dataset_build_lock

HOLD = """
import sys, time
from flows.locks import dataset_build_lock
with dataset_build_lock(sys.argv[1] + "/work-a", sys.argv[1] + "/warehouse", "ds"):
    print("held", flush=True)
    time.sleep(600)
"""


def test_a_second_build_of_a_dataset_waits_and_a_killed_holder_releases_it(tmp_path: Path, caplog):
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        entered = threading.Event()

        def second_build() -> None:
            # another workdir, the same warehouse (and so the same table): the same lock
            with dataset_build_lock(str(tmp_path / "work-b"), str(tmp_path / "warehouse"), "ds"):
                entered.set()

        with dataset_build_lock(str(tmp_path / "work-b"), str(tmp_path / "warehouse"), "other"):  # another dataset does not wait
            pass
        waiter = threading.Thread(target=second_build)
        waiter.start()
        assert not entered.wait(1.0)  # held elsewhere: the second build waits
        assert f"pid {holder.pid}" in caplog.text  # and says for whom
        os.kill(holder.pid, signal.SIGKILL)  # a crashed build leaves no stale lock
        assert entered.wait(10.0)
        waiter.join()
    finally:
        holder.kill()
        holder.wait()
    assert (tmp_path / "warehouse" / "locks" / "ds.lock").read_text().startswith(f"pid {os.getpid()}")


def test_the_lock_lives_in_a_local_workdir_when_the_warehouse_is_remote_and_nowhere_when_both_are(tmp_path):
    with dataset_build_lock(str(tmp_path), "memory://warehouse", "ds"):
        assert (tmp_path / "locks" / "ds.lock").exists()
    started = time.perf_counter()
    with dataset_build_lock("memory://work", "memory://wh", "ds"), dataset_build_lock("memory://work", "memory://wh", "ds"):
        pass  # held twice at once: no lock was taken (locally this would wait for ever)
    assert time.perf_counter() - started < 1.0
