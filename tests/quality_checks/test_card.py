"""The dataset card counts what is there and draws real pictures of it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
from PIL import Image
from qc_samples import FAMILY_ROWS, TEST_BANDS, table_of, write_shard

from curation.stages import Reject, rejects_to_table
from quality_checks.card import write_dataset_card
from quality_checks.metrics import MetricsStage


def test_card_from_shards_counts_rejects_and_draws(tmp_path: Path) -> None:
    imed = write_shard(FAMILY_ROWS["imed"](), tmp_path / "shards" / "imed.parquet")
    medq = write_shard(FAMILY_ROWS["medq_uni"](), tmp_path / "shards" / "medq.parquet")
    rejects = rejects_to_table([
        Reject("a.dcm", "convert", "unreadable", "a.dcm: no pixel data"),
        Reject("b.dcm", "convert", "unreadable", "b.dcm: truncated"),
        Reject("c.png", "dedup", "near_duplicate", "c.png: phash distance 2"),
    ])
    readme = write_dataset_card(
        [imed, medq], str(tmp_path / "card"), name="demo", version="v3", rejects=rejects,
        summary={"samples_written": 6, "data_docs_path": str(tmp_path / "runs" / "index.html")},
    )
    text = Path(readme).read_text()
    assert text.startswith("# Dataset card: demo v3")
    assert "6 samples from 2 subjects" in text
    assert "| CT | 3 | 50.0% |" in text and "| XR | 3 | 50.0% |" in text
    assert "| interactive_seg | 3 | 50.0% |" in text and "| quality_assessment | 3 | 50.0% |" in text
    assert "| train | 3 | 50.0% |" in text and "| test | 3 | 50.0% |" in text
    assert "| convert | unreadable | 2 |" in text and "| dedup | near_duplicate | 1 |" in text
    assert "![Contact sheet](contact_sheet.png)" in text
    assert "![Degradation panels](degradation_panels.png)" in text
    assert "[" + str(tmp_path / "runs" / "index.html") + "](../runs/index.html)" in text
    html = (tmp_path / "card" / "card.html").read_text()
    assert "<h2>Counts by modality</h2>" in html and "<table>" in html
    for name in ("contact_sheet.png", "degradation_panels.png", "metric_histograms.png"):
        pixels = np.asarray(Image.open(tmp_path / "card" / name).convert("RGB"))
        assert pixels.std() > 20, f"{name} looks blank"


def test_contact_sheet_shows_masks_in_colour(tmp_path: Path) -> None:
    table = table_of(FAMILY_ROWS["imed"]())
    write_dataset_card(table, str(tmp_path), name="imed", version="v1")
    sheet = np.asarray(Image.open(tmp_path / "contact_sheet.png").convert("RGB")).astype(int)
    # CT is grey (r == g == b); the liver and spine overlays are the only strongly coloured pixels
    coloured = np.abs(sheet[..., 0] - sheet[..., 1]) + np.abs(sheet[..., 1] - sheet[..., 2]) > 60
    assert coloured.mean() > 0.01
    assert "_no degraded samples in this version_" in (tmp_path / "README.md").read_text()


def test_histograms_use_the_gate_metrics_when_given(tmp_path: Path) -> None:
    table = table_of(FAMILY_ROWS["ophora"]())
    metrics = MetricsStage(severity_bands=TEST_BANDS).compute(table)
    path = tmp_path / "metrics.parquet"
    pa.parquet.write_table(metrics, path)
    write_dataset_card(table, str(tmp_path / "card"), name="ophora", version="v1", metrics=str(path))
    assert (tmp_path / "card" / "metric_histograms.png").exists()
    assert "| SURG | 2 | 100.0% |" in (tmp_path / "card" / "README.md").read_text()
