"""The dataset card counts what is there and draws real pictures of it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
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


def test_pictures_are_picked_without_bytes_and_only_drawn_rows_are_read_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Counts cover every row of every shard; pictures are picked from the first
    SAMPLE_ROWS_PER_CARD rows read without image/mask/clip bytes, and only the row
    groups holding the picked rows are then read whole (a CT row is ~0.8 MB)."""
    from quality_checks import card

    monkeypatch.setattr(card, "SAMPLE_ROWS_PER_CARD", 4)
    imed = FAMILY_ROWS["imed"]() + FAMILY_ROWS["imed"]()  # 6 rows, row groups of 2
    path = tmp_path / "shards" / "imed.parquet"
    path.parent.mkdir(parents=True)
    pq.write_table(table_of(imed), path, row_group_size=2)
    medq = write_shard(FAMILY_ROWS["medq_uni"](), tmp_path / "shards" / "medq.parquet")
    light, candidates = card._load([str(path), medq])
    assert light.num_rows == 6 + len(FAMILY_ROWS["medq_uni"]())
    assert set(light.schema.names) == {"modality", "task", "split", "source", "dataset", "subject_key"}
    assert [row[card.POSITION] for row in candidates] == [(0, 0), (0, 1), (0, 2), (0, 3)]
    assert all(row["images"] and all("data" not in image for image in row["images"]) for row in candidates)
    assert all(row["masks"] and all("data" not in mask for mask in row["masks"]) for row in candidates)

    groups_read: list[list[int]] = []
    read_row_groups = pq.ParquetFile.read_row_groups

    def counting(self: pq.ParquetFile, groups: list[int], *args: object, **kwargs: object) -> pa.Table:
        groups_read.append(list(groups))
        return read_row_groups(self, groups, *args, **kwargs)

    monkeypatch.setattr(pq.ParquetFile, "read_row_groups", counting)
    full = card._full_rows([str(path), medq], {(0, 3), (0, 1), (1, 0)})
    assert groups_read == [[0, 1], [0]]  # imed rows 1 and 3 live in row groups 0 and 1
    expected = pq.read_table(path).take([1, 3]).to_pylist() + pq.read_table(medq).take([0]).to_pylist()
    assert full is not None and full.to_pylist() == expected  # whole rows, bytes and all, in position order


def test_histogram_bars_are_drawn_in_proportion(tmp_path: Path) -> None:
    """caption_length of 9 rows at 10 and 3 at 30: the tall bar is three times the short one."""
    metrics = pa.table({"caption_length": [10] * 9 + [30] * 3})
    from quality_checks.card import BAR_COLOUR, _histograms

    assert _histograms(metrics, str(tmp_path / "h.png"))
    pixels = np.asarray(Image.open(tmp_path / "h.png").convert("RGB"))
    bars = np.all(pixels == BAR_COLOUR, axis=2)
    columns = np.nonzero(bars.any(axis=0))[0]
    runs = np.split(columns, np.nonzero(np.diff(columns) > 1)[0] + 1)  # one run of columns per bar
    heights = [int(bars[:, run].sum(axis=0).max()) for run in runs]
    assert len(runs) == 2 and abs(heights[0] / heights[1] - 3.0) < 0.1, heights  # to a pixel


def test_counts_come_from_the_gate_metrics_when_they_cover_the_versions_shards(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The gate's quality_metrics.parquet has a row per row of every shard it measured,
    with the shard's name: the card counts from it (one read, not a footer per shard),
    restricted to the version's shards, and the counts equal those read from the shards."""
    from quality_checks import card
    from quality_checks.gate import gate_build

    imed = write_shard(FAMILY_ROWS["imed"](), tmp_path / "shards" / "imed.parquet")
    medq = write_shard(FAMILY_ROWS["medq_uni"](), tmp_path / "shards" / "medq.parquet")
    report = gate_build([imed, medq], family=None, workdir=str(tmp_path / "work"), build_id="b1",
                        severity_bands=TEST_BANDS, data_docs=False)
    assert report.passed and report.metrics_path

    def counts(readme: str) -> str:
        text = Path(readme).read_text()
        return text[: text.index("## Rejects")]

    from_shards = write_dataset_card([imed, medq], str(tmp_path / "a"), name="d", version="v1")
    read: list[str] = []
    real = card.read_present_columns

    def recorded(path: str, columns: object) -> pa.Table:
        read.append(path)
        return real(path, columns)  # type: ignore[arg-type]

    monkeypatch.setattr(card, "read_present_columns", recorded)
    from_gate = write_dataset_card([imed, medq], str(tmp_path / "b"), name="d", version="v1", metrics=report.metrics_path)
    assert read == [report.metrics_path]
    assert counts(from_gate) == counts(from_shards) and "| CT | 3 | 50.0% |" in counts(from_gate)

    only_imed = write_dataset_card([imed], str(tmp_path / "c"), name="d", version="v1", metrics=report.metrics_path)
    assert "3 samples from 1 subjects" in counts(only_imed) and "| CT | 3 | 100.0% |" in counts(only_imed)

    other = write_shard(FAMILY_ROWS["retinalogos"](), tmp_path / "shards" / "other.parquet")
    read.clear()
    uncovered = write_dataset_card([imed, other], str(tmp_path / "e"), name="d", version="v1", metrics=report.metrics_path)
    assert read[0] == report.metrics_path and sorted(read[1:]) == sorted([imed, other])  # `other` unmeasured: shards read
    with pytest.raises(ValueError, match="at least one shard path"):
        write_dataset_card([], str(tmp_path / "f"), name="d", version="v1", metrics=report.metrics_path)
    assert "| CFP |" in counts(uncovered)
