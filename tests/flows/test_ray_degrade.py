"""DegradeStage on a Ray actor pool gives exactly the rows of the local run."""

from __future__ import annotations

import pytest

from curation.stages import run_stages_locally
from flows.engines import run_stage_ray
from synthesis.degradation.stage import DegradationPlan, DegradeStage
from tests.synthesis.degradation_rows import PARENT_CT_SIZE, parents_table

PLAN = DegradationPlan(kinds={"CT": ["ring_artifact"], "XR": ["quantum_noise", "motion_blur"]}, severities=(1, 2), seed=3)


@pytest.fixture(scope="module")
def ray_local():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, ignore_reinit_error=True)
    yield
    ray.shutdown()


def test_ray_degrade_matches_local(ray_local):
    table = parents_table()
    stage = DegradeStage(PLAN, prewarm_sizes=(PARENT_CT_SIZE,))
    stage.batch_size = 2  # several batches, so both actors work
    local = run_stages_locally([stage], table)
    remote = run_stage_ray(DegradeStage(PLAN, prewarm_sizes=(PARENT_CT_SIZE,)), table, num_actors=2, batch_size=2)
    assert remote.table.num_rows == local.table.num_rows == 12
    assert remote.table.column("sample_id").to_pylist() == local.table.column("sample_id").to_pylist()
    assert remote.table.column("images").to_pylist() == local.table.column("images").to_pylist()
    # same pixels (above) and parameters; SSIM's float sums may differ in the last bits
    # with the actors' thread count
    remote_records, local_records = remote.table.column("degradation").to_pylist(), local.table.column("degradation").to_pylist()
    assert [{**r, "ssim": None} for r in remote_records] == [{**r, "ssim": None} for r in local_records]
    assert [r["ssim"] for r in remote_records] == pytest.approx([r["ssim"] for r in local_records], abs=1e-6)
    assert sorted(r.reason for r in remote.rejects) == sorted(r.reason for r in local.rejects)
