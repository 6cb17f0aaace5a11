"""Fixtures: tmp catalogs with small real datasets, and a moto S3 server on loopback."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# the tests import their row builders as ``catalog_rows`` (test folders are not packages)
sys.path.insert(0, str(Path(__file__).resolve().parent))

from catalog_rows import free_port, mixed_rows, publish_rows  # noqa: E402

from catalogs.catalog import DatasetCatalog  # noqa: E402


@pytest.fixture
def catalog(tmp_path: Path) -> DatasetCatalog:
    return DatasetCatalog(f"sqlite:///{tmp_path}/catalog.db", str(tmp_path / "warehouse"))


@pytest.fixture
def mixed(catalog: DatasetCatalog) -> tuple[DatasetCatalog, list[dict[str, Any]]]:
    """A published dataset ``mixed`` of 72 rows in 12 row groups of 6 (v1)."""
    rows = mixed_rows()
    publish_rows(catalog, "mixed", rows, version="v1")
    return catalog, rows


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """A moto S3 server on loopback with fake credentials in the environment."""
    import s3fs
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    env = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    s3fs.S3FileSystem.clear_instance_cache()
    try:
        yield endpoint
    finally:
        s3fs.S3FileSystem.clear_instance_cache()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        server.stop()
