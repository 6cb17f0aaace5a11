"""Shared fixtures: real sample files and a small build runner without Prefect."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")

from tests.helpers import CT_DIR, TEST_SALT


@pytest.fixture(autouse=True)
def _salt(monkeypatch):
    monkeypatch.setenv("MEDCURATE_SALT", TEST_SALT)


@pytest.fixture(autouse=True)
def _user_cache_in_tmp(monkeypatch, tmp_path_factory):
    """Builds whose workdir is remote keep their hash cache and staged sources in the
    user's cache folder; tests must not write to the real ``~/.cache``."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.getbasetemp() / "xdg-cache"))


@pytest.fixture
def ct_series(tmp_path: Path) -> Path:
    """The real 3-slice CT series with its liver, spine and heart label maps."""
    target = tmp_path / "src" / "ct"
    target.mkdir(parents=True)
    for name in ("01.dcm", "02.dcm", "03.dcm", "liver_seg.nrrd", "spine_seg.nrrd", "heart_seg.nrrd"):
        shutil.copy2(CT_DIR / name, target / name)
    return target


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    path = tmp_path / "work"
    path.mkdir()
    return path


@pytest.fixture(autouse=True)
def _restore_root_logging():
    """Tests that run the CLI's ``main()`` configure logging as an application does
    (``logging.basicConfig``), binding a handler to pytest's captured stderr; once that
    stream closes, every later record would print a logging error. Put root back."""
    import logging

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Stop the temporary Prefect servers the session's flows started while pytest's
    output streams are still open. Left to Prefect's own exit hook, each logs "Stopping
    temporary server" to a console handler bound to pytest's capture stream, closed by
    then: a "--- Logging error ---" traceback after the summary of a green run."""
    handlers = sys.modules.get("prefect.logging.handlers")
    if handlers is not None:  # flow-run logs still queued go to the API while it is up
        handlers.APILogWorker.drain_all(timeout=5)
    server_module = sys.modules.get("prefect.server.api.server")
    if server_module is not None:
        for server in list(server_module.SubprocessASGIServer._instances.values()):
            server.stop()
