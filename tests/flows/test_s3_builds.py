"""Builds with sources, workdir and warehouse on s3:// against a real S3 API on loopback.

moto's server mode answers the S3 REST API over HTTP; s3fs (shards, manifests, run
records, sources) and pyiceberg's pyarrow FileIO (table metadata) talk to it as to AWS.
A fault-injecting proxy in front of it answers 503/500 or stalls past the read
timeout, and the build must still publish, through the botocore retry/timeout
defaults of ``flows.storage``. No credential may appear in logs, output or files.
"""

from __future__ import annotations

import io
import json
import logging
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from catalogs import open_catalog
from flows.build import BuildOutcome, BuildRequest, run_build_inline
from tests.helpers import CT_DIR, XRAY_DIR
from tests.s3_support import SECRET_KEY, Fault, FaultProxy, moto_server, s3_environment

pytestmark = pytest.mark.timeout(150)  # a hung request must fail the test, not the suite

DATASET = "s3conv"
#: 2 chest X-rays (2 samples) and one 3-slice CT series with its label maps (3 samples)
SAMPLES = 5


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    with moto_server() as endpoint:
        yield endpoint


def upload_sources(endpoint: str, bucket: str) -> None:
    """The real sample files under ``s3://<bucket>/src/{xr,ct}``, written straight to moto."""
    with s3_environment(endpoint):
        fs = fsspec.filesystem("s3")
        fs.mkdir(bucket)
        fs.put(str(XRAY_DIR) + "/", f"{bucket}/src/xr/", recursive=True)
        fs.put(str(CT_DIR) + "/", f"{bucket}/src/ct/", recursive=True)
        assert len(fs.find(f"{bucket}/src")) == len(list(XRAY_DIR.iterdir())) + len(list(CT_DIR.iterdir()))


def s3_request(bucket: str, tmp_path: Path) -> BuildRequest:
    return BuildRequest(
        recipe="convert",
        sources=[f"s3://{bucket}/src"],
        dataset=DATASET,
        workdir=f"s3://{bucket}/work",
        warehouse=f"s3://{bucket}/wh",
        catalog_uri=f"sqlite:///{tmp_path}/catalog.db",
        options={"modality": "XR", "partition_items": 1},  # one partition per input: 3
    )


def pixels_by_sample(table: pa.Table) -> dict[str, list[np.ndarray]]:
    """Decoded image and mask pixels of every sample, keyed by sample id."""
    decoded: dict[str, list[np.ndarray]] = {}
    for row in table.select(["sample_id", "images", "masks"]).to_pylist():
        blobs = [i["data"] for i in row["images"]] + [m["data"] for m in row["masks"] or []]
        decoded[row["sample_id"]] = [np.asarray(Image.open(io.BytesIO(b))) for b in blobs]
    return decoded


def assert_secret_nowhere(caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str], bucket: str, tmp_path: Path) -> int:
    """The secret key is in no log record, no output, no object of the bucket, no local file.

    Returns how many log records were searched (a check over nothing proves nothing).
    """
    records = caplog.records
    assert records, "no log records captured"
    for record in records:
        assert SECRET_KEY not in record.getMessage(), f"secret in log record of {record.name}"
    out, err = capsys.readouterr()
    assert SECRET_KEY not in out and SECRET_KEY not in err
    fs = fsspec.filesystem("s3")
    objects = fs.find(bucket)
    assert any("/runs/" in o for o in objects) and any("/metadata/" in o for o in objects)
    for path in objects:
        assert SECRET_KEY.encode() not in fs.cat_file(path), f"secret in s3://{path}"
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert SECRET_KEY.encode() not in path.read_bytes(), f"secret in {path}"
    return len(records)


def botocore_retries(caplog: pytest.LogCaptureFixture) -> int:
    """How many times botocore's retry handler decided to retry a request."""
    return sum(1 for r in caplog.records if r.name.startswith("botocore.retries") and "Retry needed" in r.getMessage())


@pytest.fixture
def all_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Every logger at DEBUG (medcurate, s3fs, botocore, pyiceberg): the strictest capture."""
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="medcurate")
    return caplog


def test_convert_build_on_s3_publishes_reads_back_like_local_and_rebuilds_incrementally(
    moto_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    all_logs: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str],
) -> None:
    bucket = "medcurate-s3"
    upload_sources(moto_endpoint, bucket)
    monkeypatch.chdir(tmp_path)  # anything written to a local path by mistake would land here
    with s3_environment(moto_endpoint):
        first = run_build_inline(s3_request(bucket, tmp_path))
        fs = fsspec.filesystem("s3")

        assert first.published is not None and first.published.version == "v1"
        assert first.summary["inputs_total"] == 3 and first.summary["inputs_rejected"] == 0
        assert first.summary["samples_written"] == SAMPLES and first.summary["gate"]["passed"]
        assert first.shards and all(s.startswith(f"s3://{bucket}/wh/medcurate/{DATASET}/data/") for s in first.shards)
        assert all(fs.exists(s) for s in first.shards)
        run_dir = f"{bucket}/work/runs/{first.run_id}"
        summary = json.loads(fs.cat_file(f"{run_dir}/summary.json"))
        assert summary["run_id"] == first.run_id and summary["version"] == "v1"
        assert {"rejects.parquet", "gate_report.json", "quality_metrics.parquet"} <= {
            p.rsplit("/", 1)[1] for p in fs.ls(run_dir)
        }
        manifests = fs.ls(f"{bucket}/work/cache/partitions")
        assert len(manifests) == first.summary["partitions"] == 3
        assert sorted(p.name for p in tmp_path.iterdir()) == ["catalog.db"]  # nothing leaked to local disk

        remote = open_catalog(f"sqlite:///{tmp_path}/catalog.db", f"s3://{bucket}/wh").to_arrow(DATASET)
        assert remote.num_rows == SAMPLES

        again = run_build_inline(s3_request(bucket, tmp_path))
        assert again.summary["partitions_reused"] == again.summary["partitions"] == 3
        assert again.summary["stages"] == {}  # no conversion ran
        assert again.summary["unchanged"] is True and again.summary["version"] == "v1"
        assert sorted(again.shards) == sorted(first.shards)
        assert len(open_catalog(f"sqlite:///{tmp_path}/catalog.db", f"s3://{bucket}/wh").history(DATASET)) == 1

        assert assert_secret_nowhere(all_logs, capsys, bucket, tmp_path) > 100

    local_src = tmp_path / "local" / "src"
    shutil.copytree(XRAY_DIR, local_src / "xr")
    shutil.copytree(CT_DIR, local_src / "ct")
    local = run_build_inline(
        BuildRequest(
            recipe="convert", sources=[str(local_src)], dataset=DATASET,
            workdir=str(tmp_path / "local" / "work"), options={"modality": "XR", "partition_items": 1},
        )
    )
    local_table = open_catalog(workdir=str(tmp_path / "local" / "work")).to_arrow(DATASET)
    remote_pixels, local_pixels = pixels_by_sample(remote), pixels_by_sample(local_table)
    assert sorted(remote_pixels) == sorted(local_pixels) and len(remote_pixels) == SAMPLES
    for sample_id, arrays in local_pixels.items():
        assert len(arrays) == len(remote_pixels[sample_id])
        for expected, got in zip(arrays, remote_pixels[sample_id], strict=True):
            assert got.dtype == expected.dtype and np.array_equal(got, expected)
    assert any(a.std() > 0 for arrays in local_pixels.values() for a in arrays)  # real images, not blanks
    assert local.summary["samples_written"] == SAMPLES


def faulty_build(endpoint: str, bucket: str, tmp_path: Path, faults: list[Fault], **env: str) -> tuple[BuildOutcome, FaultProxy, float]:
    """The S3 build through a :class:`FaultProxy`; the caller runs it in ``tmp_path`` (a stray local write lands there)."""
    upload_sources(endpoint, bucket)
    with FaultProxy(endpoint, faults) as proxy, s3_environment(proxy.endpoint, **env):
        started = time.perf_counter()
        outcome = run_build_inline(s3_request(bucket, tmp_path))
        seconds = time.perf_counter() - started
        config: dict[str, Any] = fsspec.config.conf["s3"]["config_kwargs"]
        retries = config["retries"]  # botocore rewrites max_attempts as total_max_attempts in place
        assert retries["mode"] == "adaptive" and retries.get("total_max_attempts", retries.get("max_attempts", 0)) >= 3
        if "MEDCURATE_S3_READ_TIMEOUT" in env:
            assert config["read_timeout"] == float(env["MEDCURATE_S3_READ_TIMEOUT"])
        assert open_catalog(f"sqlite:///{tmp_path}/catalog.db", f"s3://{bucket}/wh").to_arrow(DATASET).num_rows == SAMPLES
    assert proxy.forwarded > 50  # the build really went through the proxy
    assert sorted(p.name for p in tmp_path.iterdir()) == ["catalog.db"]  # nothing leaked to local disk
    return outcome, proxy, seconds


def test_build_survives_throttling_and_server_errors(
    moto_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, all_logs: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    bucket = "medcurate-5xx"
    faults = [
        Fault("GET", rf"^/{bucket}/src/", count=2, kind="500"),  # reading sources
        Fault("PUT", rf"^/{bucket}/wh/medcurate/{DATASET}/data/", count=2, kind="503"),  # shard uploads
        Fault("PUT", rf"^/{bucket}/work/cache/partitions/", count=2, kind="503"),  # partition manifests
        Fault("GET", rf"^/{bucket}\?list-type=2", count=2, kind="503"),  # listings
    ]
    outcome, proxy, _ = faulty_build(moto_endpoint, bucket, tmp_path, faults)
    assert outcome.published is not None and outcome.published.version == "v1"
    assert outcome.summary["samples_written"] == SAMPLES and outcome.summary["inputs_rejected"] == 0
    assert [f.injected for f in faults] == [2, 2, 2, 2]
    assert proxy.injected("500") == 2 and proxy.injected("503") == 6
    assert botocore_retries(all_logs) >= 8  # each injected error was retried by botocore
    with s3_environment(moto_endpoint):
        assert_secret_nowhere(all_logs, capsys, bucket, tmp_path)


def test_build_survives_stalled_requests_through_read_timeout(
    moto_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, all_logs: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    bucket = "medcurate-slow"
    stall = 60.0  # the proxy would answer only after this: a build that waited for it fails the bound below
    faults = [
        Fault("GET", rf"^/{bucket}/src/", count=2, kind="stall", stall_seconds=stall),  # reading sources
        Fault("PUT", rf"^/{bucket}/work/runs/", count=1, kind="stall", stall_seconds=stall),  # the run record
    ]
    outcome, proxy, seconds = faulty_build(
        moto_endpoint, bucket, tmp_path, faults, MEDCURATE_S3_READ_TIMEOUT="1", MEDCURATE_S3_CONNECT_TIMEOUT="2",
    )
    assert outcome.published is not None and outcome.summary["samples_written"] == SAMPLES
    assert proxy.injected("stall") == 3
    messages = {r.getMessage() for r in all_logs.records if r.name == "botocore.endpoint"}
    assert "Setting s3 timeout as (2.0, 1.0)" in messages  # (connect, read) from MEDCURATE_S3_*
    assert botocore_retries(all_logs) >= 3
    assert seconds < 30  # each stall cost the 1 s read timeout and a retry, not a wait for the server
    with s3_environment(moto_endpoint):
        summary = json.loads(fsspec.filesystem("s3").cat_file(f"{bucket}/work/runs/{outcome.run_id}/summary.json"))
        assert summary["version"] == "v1"  # the stalled run record was written on retry
        assert_secret_nowhere(all_logs, capsys, bucket, tmp_path)
