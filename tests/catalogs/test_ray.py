"""Ray Data reads a pinned version with the filter pushed into its read tasks."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture(scope="module")
def ray_local() -> Any:
    import ray

    ray.init(num_cpus=1, include_dashboard=False, ignore_reinit_error=True, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_ray_dataset_of_a_version(mixed: Any, ray_local: Any) -> None:
    cat, rows = mixed
    ds = cat.to_ray("mixed", "v1", columns=["sample_id", "modality", "split"], filter={"modality": "MR", "split": "val"})
    got = ds.take_all()
    expected = sorted(r["sample_id"] for r in rows if r["modality"] == "MR" and r["split"] == "val")
    assert sorted(g["sample_id"] for g in got) == expected and len(expected) == 12
    assert {(g["modality"], g["split"]) for g in got} == {("MR", "val")}
