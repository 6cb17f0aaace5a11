"""Metrics measured on real images, masks and clips are the numbers we expect."""

from __future__ import annotations

import copy
import json

import numpy as np
import pyarrow as pa
import pytest
from qc_samples import (
    TEST_BANDS,
    ct_slices,
    encode_clip,
    imed_rows,
    mask_png,
    medq_rows,
    ophora_rows,
    panning_clip,
    png_bytes,
    provenance,
    retinalogos_rows,
    table_of,
    unimed_rows,
)

from curation.stages import run_stages_locally
from quality_checks.metrics import (
    METRICS_SCHEMA,
    METRICS_VERSION,
    MetricsStage,
    measure_video,
    psnr_band,
    validation_table,
)


def metrics_of(rows: list[dict], bands: dict | None = None) -> list[dict]:
    table = MetricsStage(severity_bands=TEST_BANDS if bands is None else bands).compute(table_of(rows))
    assert table.schema.equals(METRICS_SCHEMA, check_metadata=False)
    return table.to_pylist()


def test_ct_slice_masks_match_the_real_label_map() -> None:
    windowed, labels = ct_slices()
    metrics = metrics_of(imed_rows())
    for z, row in enumerate(metrics):
        assert (row["image_width"], row["image_height"], row["image_bit_depth"]) == (512, 512, 8)
        assert row["image_decodes"] and row["image_size_matches_declared"]
        smallest = min((labels[z] == v).sum() for v in (1, 2)) / labels[z].size
        assert row["mask_area_fraction_min"] == pytest.approx(smallest)
        assert row["mask_inside_image"] and row["mask_area_matches_declared"]
        assert row["box_contains_mask"] and row["box_is_tight"]
        assert row["clicks_inside_mask_fraction"] == 1.0
        # the W400/L40 window clips air to 0 and bone to 255: the body is a part of the slice
        assert row["black_fraction"] == pytest.approx(np.mean(windowed[z] == 0))
        assert row["saturated_fraction"] == pytest.approx(np.mean(windowed[z] == 255))
        assert row["dynamic_range"] == 1.0


def test_mask_one_row_short_is_outside_the_image() -> None:
    rows = imed_rows()[:1]
    liver = rows[0]["masks"][0]
    _, labels = ct_slices()
    liver["data"] = mask_png((labels[0] == 1)[:-1])
    row = metrics_of(rows)[0]
    assert row["mask_inside_image"] is False
    assert "512x511" in row["metric_errors"]


def test_bbox_is_exclusive_and_clicks_are_xy() -> None:
    rows = imed_rows()[:1]
    spine = rows[0]["masks"][1]
    x0, y0, x1, y1 = spine["bbox_xyxy"]
    spine["bbox_xyxy"] = [x0, y0, x1 - 1, y1]  # inclusive x1 no longer contains the mask
    cx, cy = spine["clicks_xy"][0]
    spine["clicks_xy"] = [[cx, cy], [cy, cx]]  # the second click swaps x/y: lands outside the spine
    row = metrics_of(rows)[0]
    assert row["box_contains_mask"] is False and row["box_is_tight"] is False
    assert row["clicks_inside_mask_fraction"] == pytest.approx(2 / 3)  # liver click + spine click in, swapped out


def test_text_metrics_and_grounding() -> None:
    retina = retinalogos_rows()
    retina[1]["caption"] = "  "
    retina[1]["provenance"] = provenance([{"name": "caption", "grounding": {"ok": False, "problems": ["grade"]}}])
    first, second = metrics_of(retina)
    assert first["caption_length"] == len(retina[0]["caption"]) and first["grounding_ok"] is True
    assert second["caption_length"] == 0 and second["grounding_ok"] is False
    vqa = metrics_of(unimed_rows())[0]
    assert vqa["instruction_length"] == len(unimed_rows()[0]["conversations"][-1]["value"])
    assert vqa["caption_length"] is None and vqa["grounding_ok"] is None


def test_phi_in_a_caption_is_counted() -> None:
    rows = retinalogos_rows()
    rows[0]["caption"] += " Photographed by Dr. Alan Grant on 2019-05-04."
    row = metrics_of(rows)[0]
    assert row["phi_hits"] == 2 and row["phi_kinds"] == "date_numeric,name_with_title"


def test_video_duration_fps_and_frozen_frames() -> None:
    row = metrics_of(ophora_rows())[0]
    assert row["video_decodes"] and row["video_fps"] == 25.0
    assert row["video_duration_s"] == pytest.approx(137 / 25)
    assert row["video_frozen_fraction"] == 0.0 and row["video_black_fraction"] == 0.0
    _, _, frozen, _ = measure_video(panning_clip(frozen=True))
    assert frozen == 1.0
    dark = encode_clip([np.zeros((64, 64), np.uint8)] * 30, fps=10)
    duration, fps, _, black = measure_video(dark)
    assert (duration, fps, black) == (3.0, 10.0, 1.0)


def test_undecodable_image_and_video_are_reported_not_raised() -> None:
    rows = unimed_rows()[:1] + ophora_rows()[:1]
    rows[0]["images"][0]["data"] = b"\x89PNG truncated"
    rows[1]["video"]["data"] = b"not an mp4"
    image_row, video_row = metrics_of(rows)
    assert image_row["image_decodes"] is False and "does not decode" in image_row["metric_errors"]
    assert video_row["video_decodes"] is False


def test_severity_against_declared_psnr_bands() -> None:
    rows = medq_rows()
    good = metrics_of(rows)
    assert [r["severity_consistent"] for r in good] == [True, True, True]
    assert all(r["degradation_psnr_db"] == pytest.approx(r["degradation_psnr_measured_db"], abs=1e-3) for r in good)
    assert all(r["verdict_consistent"] for r in good)
    rows[0]["degradation"]["psnr_db"] = 15.0  # "mild" noise that destroyed the image
    bad = metrics_of(rows)[0]
    assert bad["severity_check"] == "band" and bad["severity_consistent"] is False
    assert (bad["severity_band_low_db"], bad["severity_band_high_db"]) == (30.0, 50.0)


def test_severity_falls_back_to_monotonic_without_bands() -> None:
    rows = medq_rows()
    assert [r["severity_consistent"] for r in metrics_of(rows, bands={})] == [True, True, True]
    rows[0]["degradation"]["psnr_db"] = 15.0
    result = metrics_of(rows, bands={})
    assert result[0]["severity_check"] == "monotonic"
    # severity 1 now looks worse than severities 2 and 3: every row of the family is inconsistent
    assert [r["severity_consistent"] for r in result] == [False, False, False]


def test_band_lookup_accepts_objects_and_string_severities() -> None:
    class Band:
        def __init__(self, metric: str, low: float, high: float) -> None:
            self.metric, self.low, self.high = metric, low, high

    bands = {"blur": {"2": [Band("ssim", 0.5, 0.8), Band("psnr_db", 25.0, 30.0)]}}
    assert psnr_band(bands, "blur", 2) == (25.0, 30.0)
    assert psnr_band(bands, "blur", 1) is None and psnr_band(bands, "noise", 2) is None


def test_verdict_must_match_the_last_sentence() -> None:
    rows = medq_rows()
    rows[2]["quality"] = {"verdict": "good", "description": copy.copy(rows[2]["quality"]["description"])}
    assert metrics_of(rows)[2]["verdict_consistent"] is False


def test_stage_runs_under_the_local_engine_and_flattens() -> None:
    table = table_of(imed_rows() + medq_rows())
    stage = MetricsStage(severity_bands=TEST_BANDS)
    stage.batch_size = 2
    out = run_stages_locally([stage], table)
    assert out.rejects == [] and out.table.column("sample_id").to_pylist() == table.column("sample_id").to_pylist()
    flat = validation_table(table, out.table)
    assert flat.column("degradation_severity").to_pylist() == [None] * 3 + [1, 2, 3]
    assert flat.column("quality_verdict").to_pylist()[3:] == ["good", "usable", "reject"]
    assert json.loads(json.dumps(stage.params()))["metrics_version"] == METRICS_VERSION
    with pytest.raises(ValueError, match="6 samples but 5"):
        validation_table(table, out.table.slice(0, 5))


@pytest.mark.parametrize("encode", ["stored", "pillow"])
@pytest.mark.parametrize(
    "shape, dtype, maxval",
    [((40, 56), np.uint8, 255), ((40, 56), np.uint16, 65535), ((40, 56, 3), np.uint8, 255), ((40, 56, 2), np.uint8, 255)],
)
def test_blur_measure_is_the_variance_of_the_laplacian_on_0_255_grey(encode, shape, dtype, maxval) -> None:
    """The same number as scipy's Laplacian over the interior pixels, whichever PNG
    encoder wrote the image (ours, stored, decodes on the fast path; Pillow's is deflated)."""
    from scipy import ndimage

    from curation.images import encode_png

    image = np.random.default_rng(5).integers(0, maxval + 1, shape, dtype=dtype)
    rows = unimed_rows()[:1]
    data = encode_png(image) if encode == "stored" else png_bytes(image)
    rows[0]["images"][0].update(data=data, width=shape[1], height=shape[0], bit_depth=16 if dtype == np.uint16 else 8)
    row = metrics_of(rows)[0]
    colour = image[..., :1] if image.ndim == 3 and shape[2] == 2 else image  # grey + alpha: the grey plane
    grey = colour.astype(np.float64).mean(axis=2) if colour.ndim == 3 else colour.astype(np.float64)
    expected = ndimage.laplace(grey * (255.0 / maxval))[1:-1, 1:-1].var()
    assert row["image_decodes"] and row["image_bit_depth"] == (16 if dtype == np.uint16 else 8)
    assert row["blur_laplacian_var"] == pytest.approx(expected, rel=1e-6)
    blurred = ndimage.uniform_filter(image, size=(3, 3, 1) if image.ndim == 3 else 3)
    rows[0]["images"][0]["data"] = encode_png(blurred)
    assert metrics_of(rows)[0]["blur_laplacian_var"] < expected / 4  # smoothing lowers it


@pytest.mark.parametrize("channels", [2, 4])
def test_alpha_is_left_out_of_the_pixel_metrics(channels) -> None:
    """An opaque grey+alpha or RGBA image of mid grey: no dynamic range, nothing saturated
    (alpha 255 used to count as saturated pixels and as range)."""
    from curation.images import encode_png

    image = np.full((32, 48, channels), 100, np.uint8)
    image[..., -1] = 255
    image[0, 0, 0] = 60
    rows = unimed_rows()[:1]
    rows[0]["images"][0].update(data=encode_png(image), width=48, height=32, bit_depth=8)
    row = metrics_of(rows)[0]
    assert row["dynamic_range"] == pytest.approx(40 / 255)
    assert row["saturated_fraction"] == 0.0 and row["black_fraction"] == 0.0


def test_png_16_bit_depth_is_measured() -> None:
    rows = unimed_rows()[:1]
    deep = (np.linspace(0, 4095, 64 * 64).reshape(64, 64)).astype(np.uint16)
    rows[0]["images"][0].update(data=png_bytes(deep), width=64, height=64, bit_depth=16)
    row = metrics_of(rows)[0]
    assert row["image_bit_depth"] == 16
    assert row["dynamic_range"] == pytest.approx(4095 / 65535)
    assert isinstance(pa.array([row["blur_laplacian_var"]]), pa.Array)


def test_real_severity_bands_from_synthesis_are_used_by_default() -> None:
    from quality_checks.metrics import load_severity_bands

    bands = load_severity_bands()
    if not bands:
        pytest.skip("synthesis.SEVERITY_BANDS is not importable here")
    kind = next(iter(bands))
    low, high = psnr_band(bands, kind, 1) or (None, None)
    assert low is not None and high is not None, f"{kind} severity 1 has no psnr_db band"
    rows = medq_rows()[:1]
    rows[0]["degradation"].update(type=kind, severity=1, psnr_db=(low + high) / 2)
    inside = MetricsStage().compute(table_of(rows)).to_pylist()[0]
    assert inside["severity_check"] == "band" and inside["severity_consistent"] is True
    rows[0]["degradation"]["psnr_db"] = high + 10.0
    outside = MetricsStage().compute(table_of(rows)).to_pylist()[0]
    assert outside["severity_consistent"] is False
