"""Where things live and which secrets apply: arguments, then environment, then defaults.

| setting      | option          | environment              | default                           |
|--------------|-----------------|--------------------------|-----------------------------------|
| workdir      | --workdir       | MEDCURATE_HOME           | ./medcurate-data                  |
| catalog uri  | --catalog-uri   | MEDCURATE_CATALOG_URI    | sqlite:///<workdir>/catalog.db    |
| warehouse    | --warehouse     | MEDCURATE_WAREHOUSE      | <workdir>/warehouse               |
| salt         | (none)          | MEDCURATE_SALT           | random, kept in <workdir>/salt    |
"""

from __future__ import annotations

import dataclasses
import os
import posixpath
import secrets
from collections.abc import Callable
from typing import Any

from fsspec.core import url_to_fs

from catalogs.catalog import CatalogError, DatasetCatalog, default_locations


@dataclasses.dataclass(frozen=True)
class Settings:
    workdir: str
    catalog_uri: str
    warehouse: str

    @classmethod
    def resolve(
        cls, workdir: str | None = None, catalog_uri: str | None = None, warehouse: str | None = None
    ) -> Settings:
        workdir = workdir or os.environ.get("MEDCURATE_HOME") or "./medcurate-data"
        if "://" not in workdir:
            workdir = os.path.abspath(workdir)
        default_uri, default_warehouse = default_locations(workdir)
        warehouse = warehouse or os.environ.get("MEDCURATE_WAREHOUSE") or default_warehouse
        if "://" not in warehouse:
            warehouse = os.path.abspath(warehouse)  # one place, one spelling: it is part of partition keys
        settings = cls(
            workdir=workdir.rstrip("/"),
            catalog_uri=catalog_uri or os.environ.get("MEDCURATE_CATALOG_URI") or default_uri,
            warehouse=warehouse.rstrip("/"),
        )
        settings.check_local_paths()
        return settings

    def check_local_paths(self) -> None:
        """Refuse a local workdir or warehouse whose path has ``#`` or ``%``, before any work.

        Iceberg (pyiceberg) and the SQLite URLs of the catalog and of Prefect's temporary
        server read local paths as URLs: ``#`` starts a fragment, ``%`` an escape. Such a
        build used to fail at publish, after conversion and the gate (or wait two minutes
        for a Prefect server that could not open its database).
        """
        for what, path in (("workdir", self.workdir), ("warehouse", self.warehouse)):
            if "://" not in path and any(c in path for c in "#%"):
                raise CatalogError(
                    f"{what} {path!r} has '#' or '%' in its path, which Iceberg and SQLite URLs "
                    "would misread: choose a folder without them"
                )

    def catalog(self) -> DatasetCatalog:
        return DatasetCatalog(self.catalog_uri, self.warehouse)

    def salt(self) -> str:
        """The pseudonymisation salt: ``MEDCURATE_SALT``, else one generated per workdir.

        A generated salt is stored (mode 0600 where the filesystem allows) so that the
        pseudonyms of a workdir stay stable across builds, and never printed.
        """
        env = os.environ.get("MEDCURATE_SALT")
        if env:
            return env
        fs, root = url_to_fs(self.workdir)
        path = posixpath.join(root, "salt")
        if fs.exists(path):
            with fs.open(path, "r") as fh:
                return fh.read().strip()
        fs.makedirs(root, exist_ok=True)
        value = secrets.token_hex(32)
        with fs.open(path, "w") as fh:
            fh.write(value)
        if "://" not in self.workdir:
            os.chmod(path, 0o600)
        return value


def configure_prefect(workdir: str) -> None:
    """Keep ad-hoc runs' Prefect state in the workdir unless a Prefect server is configured.

    Without ``PREFECT_API_URL`` Prefect starts a temporary local server backed by a SQLite
    file under ``PREFECT_HOME``; one per workdir stops concurrent builds of different
    workdirs from contending for ``~/.prefect/prefect.db``. Must run before Prefect is
    imported. Telemetry is off: nothing leaves the machine.
    """
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")  # 2 busy cores: the default 20 s is too short
    if os.environ.get("PREFECT_API_URL") or "://" in workdir:
        return
    home = os.path.join(workdir, ".prefect")
    os.makedirs(home, exist_ok=True)
    os.environ.setdefault("PREFECT_HOME", home)


_TEMPORARY_SERVER: Any = None


def on_temporary_prefect_server() -> bool:
    """Whether this process's flows report to a temporary Prefect server, one that lives
    and dies with this process: none configured (Prefect starts its own), or the one
    :func:`ensure_prefect_api` started."""
    url = os.environ.get("PREFECT_API_URL")
    return not url or (_TEMPORARY_SERVER is not None and url == _TEMPORARY_SERVER.api_url)


def ensure_prefect_api(*, while_starting: Callable[[], None] | None = None) -> None:
    """Give worker processes (Dask, Ray) the driver's Prefect API.

    Without a configured server each process would start a temporary server of its
    own (and leave it behind when the worker exits). The driver starts one temporary
    server and exports its URL, which worker processes inherit; it stops with the
    driver process. ``while_starting`` is called just before the start, which this
    process spends waiting (seconds).
    """
    global _TEMPORARY_SERVER
    if os.environ.get("PREFECT_API_URL"):
        return
    import atexit

    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()
    if while_starting is not None:
        while_starting()
    server.start()
    os.environ["PREFECT_API_URL"] = server.api_url
    _TEMPORARY_SERVER = server
    atexit.register(server.stop)
