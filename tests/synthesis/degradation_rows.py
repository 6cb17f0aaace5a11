"""Canonical parent rows for the degradation stage tests (real CT and chest X-ray pixels)."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np

from curation.images import encode_png, image_record, to_uint8_window
from curation.schema import samples_to_table
from tests.synthesis.degradation_images import chest_xrays, ct_slices


def parent_row(sample_id: str, modality: str, images: list[dict]) -> dict:
    return {
        "sample_id": sample_id,
        "dataset": "test",
        "source": "fixture",
        "source_uri": f"fixture/{sample_id}",
        "source_sha256": "0" * 64,
        "modality": modality,
        "task": "caption",
        "split": "train",
        "subject_key": "subj-x",
        "images": images,
        "provenance": {
            "pipeline_version": "0.1.0",
            "steps_json": json.dumps([{"name": "convert"}]),
            "run_id": "run-1",
            "created_at": dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
        },
    }


def ct_row(index: int, size: int = 128) -> dict:
    hu, spacing = ct_slices(size)
    values = hu[index]
    raw = np.clip(np.rint(values + 1024.0), 0, 65535).astype(np.uint16)
    images = [
        image_record("input", to_uint8_window(values, -160, 240), spacing_mm=[spacing, spacing], window=(40.0, 400.0)),
        image_record("raw", raw, spacing_mm=[spacing, spacing], value_scale=1.0, value_offset=-1024.0),
    ]
    return parent_row(f"ct-{index}", "CT", images)


def xr_row(index: int, size: int = 128) -> dict:
    pixels = np.clip(np.rint(chest_xrays(size)[index] * 255), 0, 255).astype(np.uint8)
    return parent_row(f"xr-{index}", "XR", [image_record("input", pixels)])


def broken_row() -> dict:
    image = image_record("input", np.zeros((32, 32), np.uint8))
    image["data"] = b"not a png"
    return parent_row("broken", "XR", [image])


def tiny_row() -> dict:
    return parent_row("tiny", "XR", [image_record("input", np.zeros((8, 8), np.uint8), png=encode_png(np.zeros((8, 8), np.uint8)))])


#: CT parents at a size the severity bands were calibrated on: at 128 px the same dose
#: measures less noise per (coarser) pixel and the stage rejects the pairs out of band
PARENT_CT_SIZE = 256


def parents_table():
    return samples_to_table(
        [ct_row(0, PARENT_CT_SIZE), xr_row(0), broken_row(), ct_row(1, PARENT_CT_SIZE), xr_row(1), tiny_row()]
    )
