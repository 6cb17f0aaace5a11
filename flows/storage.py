"""Object-storage defaults: retries and timeouts for s3fs, credentials from AWS's own chain.

s3fs (through aiobotocore) reads credentials the standard way — environment variables,
``~/.aws/credentials``/``config`` profiles, instance roles — and the endpoint from
``AWS_ENDPOINT_URL`` (MinIO, on-prem, moto). medcurate never takes credentials as
arguments and never logs them. What it adds are retries with backoff and timeouts, so
a throttled or flaky store (HTTP 5xx, slow responses) costs time, not the build; on top
of these, Prefect retries each partition task (its batch resumes after the partitions
already finished).
"""

from __future__ import annotations

import os
from typing import Any

import fsspec


def s3_config_kwargs() -> dict[str, Any]:
    """botocore retry/timeout settings from ``MEDCURATE_S3_*``, read when called (not at
    import), so a process that sets them after importing medcurate still gets them."""
    env = os.environ
    return {
        "retries": {"max_attempts": int(env.get("MEDCURATE_S3_MAX_ATTEMPTS", "10")), "mode": "adaptive"},
        "connect_timeout": float(env.get("MEDCURATE_S3_CONNECT_TIMEOUT", "10")),
        "read_timeout": float(env.get("MEDCURATE_S3_READ_TIMEOUT", "60")),
    }


def configure_object_storage() -> None:
    """Install the retry/timeout defaults into fsspec's s3 configuration (idempotent).

    Settings the user already put in ``fsspec.config.conf['s3']`` win over ours.
    """
    s3 = fsspec.config.conf.setdefault("s3", {})
    config_kwargs = s3.setdefault("config_kwargs", {})
    for key, value in s3_config_kwargs().items():
        config_kwargs.setdefault(key, value)
    # the endpoint is not pinned here: botocore reads AWS_ENDPOINT_URL(_S3) itself each time a
    # client is made, so a changed environment is honoured (a pinned one would go stale)
