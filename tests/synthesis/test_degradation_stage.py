"""DegradeStage: canonical rows in, canonical clean/degraded pairs out; bad rows rejected."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from curation.images import decode_png
from curation.schema import validate_batch
from curation.stages import run_stages_locally
from synthesis.degradation.stage import DegradationPlan, DegradeStage
from tests.synthesis.degradation_rows import PARENT_CT_SIZE, parents_table

PLAN = DegradationPlan(kinds={"CT": ["low_dose", "ring_artifact"], "XR": ["quantum_noise"]}, severities=(1, 3), seed=5)


@pytest.fixture(scope="module")
def output():
    return run_stages_locally([DegradeStage(PLAN, prewarm_sizes=(PARENT_CT_SIZE,))], parents_table())


def test_rows_conform_and_every_input_is_accounted_for(output):
    table, rejects = output
    validate_batch(table)
    # 2 CT parents x 2 kinds x 2 severities + 2 XR parents x 1 kind x 2 severities
    assert table.num_rows == 12
    assert sorted((r.source_uri, r.reason) for r in rejects) == [
        ("fixture/broken", "undecodable_image"),
        ("fixture/tiny", "image_too_small"),
    ]
    assert set(table.column("task").to_pylist()) == {"restoration"}


def test_pairs_are_same_size_pngs_and_psnr_matches_the_pngs(output):
    for row in output.table.to_pylist():
        clean, degraded = row["images"]
        assert (clean["role"], degraded["role"]) == ("clean", "degraded")
        a, b = decode_png(clean["data"]).astype(np.float64), decode_png(degraded["data"]).astype(np.float64)
        assert a.shape == b.shape == (clean["height"], clean["width"])
        measured = 10 * math.log10(255.0**2 / max(np.mean((a - b) ** 2), 1e-12))
        assert measured == pytest.approx(row["degradation"]["psnr_db"], abs=1.0)
        description = row["quality"]["description"]
        assert description.endswith(f"Overall, the quality of this image is {row['quality']['verdict']}.")
        steps = json.loads(row["provenance"]["steps_json"])
        assert steps[0] == {"name": "convert"} and steps[-1]["name"] == "degrade"
        assert json.loads(row["degradation"]["params_json"])["seed"] == steps[-1]["seed"]


def test_severity_orders_psnr_per_parent(output):
    rows = output.table.to_pylist()
    by_key = {}
    for row in rows:
        d = row["degradation"]
        by_key[(row["source_uri"], d["type"], d["severity"])] = d["psnr_db"]
    for (uri, kind, severity), psnr in by_key.items():
        if severity == 1:
            assert psnr > by_key[(uri, kind, 3)]


def test_deterministic_ids_and_pixels():
    table, _ = run_stages_locally([DegradeStage(PLAN, prewarm_sizes=())], parents_table())
    again, _ = run_stages_locally([DegradeStage(PLAN, prewarm_sizes=())], parents_table().slice(3))
    first = {r["sample_id"]: r["images"][1]["data"] for r in table.to_pylist()}
    for row in again.to_pylist():  # same rows in another batch give the same ids and pixels
        assert first[row["sample_id"]] == row["images"][1]["data"]
    assert len(first) == 12


def test_unplanned_modality_is_rejected():
    table, rejects = run_stages_locally(
        [DegradeStage(DegradationPlan(kinds={"CT": ["low_dose"]}), prewarm_sizes=())], parents_table().slice(1, 1)
    )
    assert table.num_rows == 0 and [r.reason for r in rejects] == ["not_planned"]


def test_a_pair_whose_quality_misses_its_severity_band_is_a_reject_not_a_row():
    """A CT slice of air: low-dose noise of a few tens of HU never reaches the 40/400
    window, so the 'severity 1' pair would measure as untouched. It is rejected with the
    measured PSNR and the band; the real slice beside it is kept."""
    from curation.images import image_record
    from curation.schema import samples_to_table
    from quality_checks.metrics import psnr_band
    from synthesis.degradation.calibration import SEVERITY_BANDS
    from tests.synthesis.degradation_rows import ct_row, parent_row

    air = np.full((128, 128), -1000.0)
    raw = np.clip(np.rint(air + 1024.0), 0, 65535).astype(np.uint16)
    images = [
        image_record("input", np.zeros((128, 128), np.uint8), spacing_mm=[1.0, 1.0], window=(40.0, 400.0)),
        image_record("raw", raw, spacing_mm=[1.0, 1.0], value_scale=1.0, value_offset=-1024.0),
    ]
    table, rejects = run_stages_locally(
        [DegradeStage(DegradationPlan(kinds={"CT": ["low_dose"]}, severities=(1,), seed=5), prewarm_sizes=())],
        samples_to_table([parent_row("air", "CT", images), ct_row(0, PARENT_CT_SIZE)]),
    )
    assert [(r.source_uri, r.reason) for r in rejects] == [("fixture/air", "severity_out_of_band")]
    band = psnr_band(SEVERITY_BANDS, "low_dose", 1)
    assert band is not None and f"calibrated band [{band[0]}, {band[1]}] dB" in rejects[0].detail
    assert table.column("source_uri").to_pylist() == ["fixture/ct-0"]
    assert band[0] <= table.column("degradation").to_pylist()[0]["psnr_db"] <= band[1]
