"""Small real datasets for the catalog tests (helpers; fixtures are in conftest.py).

Rows are CT slices from the real DICOM in tests/data (windowed W400/L40 to 8-bit,
downsampled to 128×128 to keep tests fast), each with a small seeded perturbation so
no two samples are identical, a body mask (HU > -300, a real anatomical mask of that
slice) and a 16-bit ``raw`` copy. MR/XR rows reuse the pixels with another modality
tag; what the loader tests check is splitting, pushdown and decoding, not modality.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pydicom

from catalogs.catalog import DatasetCatalog, PublishResult
from curation.images import image_record, mask_record, to_uint8_window
from curation.schema import samples_to_table
from curation.shards import ShardWriter

CT_DIR = Path(__file__).resolve().parents[1] / "data" / "ct_3slice_seg"


@functools.cache
def ct_slices_hu() -> list[np.ndarray]:
    """The three real CT slices in Hounsfield units, downsampled to 128×128."""
    slices = []
    for path in sorted(CT_DIR.glob("*.dcm")):
        ds = pydicom.dcmread(path)
        hu = ds.pixel_array.astype(np.float32) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        slices.append(hu[::4, ::4])
    return slices


def make_rows(
    n: int,
    *,
    modality: str = "CT",
    task: str = "interactive_seg",
    split: str = "train",
    source: str = "CTSLICE",
    seed: int = 0,
    dataset: str = "test",
) -> list[dict[str, Any]]:
    """``n`` canonical rows with real pixels, a body mask and a 16-bit raw image."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        hu = ct_slices_hu()[i % 3] + rng.normal(0.0, 3.0, size=(128, 128)).astype(np.float32)
        image = to_uint8_window(hu, -160.0, 240.0)
        raw = np.clip(hu + 1024.0, 0, 65535).astype(np.uint16)
        body = hu > -300.0
        key = f"{source}/{seed}/{i}"
        rows.append(
            {
                "sample_id": hashlib.sha256(f"{dataset}|{key}|{task}".encode()).hexdigest()[:32],
                "dataset": dataset,
                "source": source,
                "source_uri": f"file:///data/{key}.dcm",
                "source_sha256": hashlib.sha256(key.encode()).hexdigest(),
                "modality": modality,
                "task": task,
                "split": split,
                "subject_key": f"subj{i % 5}",
                "images": [
                    image_record("input", image, spacing_mm=[3.0, 3.0], window=(40.0, 400.0)),
                    image_record("raw", raw, value_scale=1.0, value_offset=-1024.0),
                ],
                "masks": [mask_record(body, label="1", category="body")],
                "caption": None if i % 4 == 0 else f"CT slice {i} of the abdomen.",
                "provenance": {
                    "pipeline_version": "0.1.0",
                    "steps_json": "[]",
                    "run_id": "test-run",
                    "created_at": dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
                },
            }
        )
    return rows


def write_shards(cat: DatasetCatalog, name: str, rows: list[dict[str, Any]], *, prefix: str, rows_per_group: int = 6) -> list[str]:
    """Write rows as shards of 4 row groups of exactly ``rows_per_group`` rows each.

    The writer sizes row groups by bytes; the tests need exact row counts per group (so
    a group never mixes two modalities), hence the explicit flush after each slice.
    """
    table = samples_to_table(rows)
    with ShardWriter(cat.data_dir(name), prefix, row_group_bytes=1 << 40, target_bytes=1 << 40) as writer:
        for index, offset in enumerate(range(0, table.num_rows, rows_per_group)):
            if index and index % 4 == 0:
                writer.close_shard()
            writer.write(table.slice(offset, rows_per_group))
            writer.flush_row_group()
    return [s.path for s in writer.shards]


def publish_rows(
    cat: DatasetCatalog,
    name: str,
    rows: list[dict[str, Any]],
    *,
    prefix: str = "build1",
    rows_per_group: int = 6,
    version: str | None = None,
    summary: dict[str, Any] | None = None,
) -> PublishResult:
    paths = write_shards(cat, name, rows, prefix=prefix, rows_per_group=rows_per_group)
    return cat.publish(name, paths, version=version, summary=summary)


def mixed_rows(n_each: int = 12) -> list[dict[str, Any]]:
    """CT/MR/XR × train/val rows, sorted so each row group holds one modality and split."""
    rows = []
    for m_index, modality in enumerate(("CT", "MR", "XR")):
        for s_index, split in enumerate(("train", "val")):
            rows += make_rows(n_each, modality=modality, split=split, seed=10 * m_index + s_index, source=modality)
    return rows


def ids(rows: Sequence[dict[str, Any]]) -> list[str]:
    return [r["sample_id"] for r in rows]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
