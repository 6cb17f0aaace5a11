"""A real headless Chromium opens the Data Docs and the dataset card of a build.

Skips (with the reason) where Debian's ``chromium`` is not installed at /usr/bin/chromium.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest
from PIL import Image
from qc_samples import FAMILY_ROWS, TEST_BANDS, write_shard

from quality_checks.card import write_dataset_card
from quality_checks.gate import GateReport, gate_build

CHROMIUM = "/usr/bin/chromium"

pytestmark = pytest.mark.skipif(
    not os.path.exists(CHROMIUM),
    reason=f"headless browser test needs Debian's chromium at {CHROMIUM} (apt-get install -y chromium)",
)


def chromium(args: list[str], profile: Path) -> subprocess.CompletedProcess[str]:
    command = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--host-resolver-rules=MAP * ~NOTFOUND",  # Data Docs pull CDN assets: fail them fast, offline
        f"--user-data-dir={profile}", "--window-size=1200,900", *args,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=90, check=False)


def render(page: Path, tmp: Path) -> tuple[np.ndarray, str]:
    """(screenshot pixels, serialised DOM after scripts ran) of a local page."""
    shot = tmp / f"{page.stem}.png"
    result = chromium([f"--screenshot={shot}", page.as_uri()], tmp / "profile-shot")
    assert shot.exists(), f"no screenshot of {page}: {result.stderr[-500:]}"
    dom = chromium(["--dump-dom", page.as_uri()], tmp / "profile-dom").stdout
    return np.asarray(Image.open(shot).convert("L")), dom


def assert_not_blank(pixels: np.ndarray) -> None:
    assert pixels.shape == (900, 1200)
    assert pixels.std() > 5 and len(np.unique(pixels)) > 10, "screenshot is (nearly) uniform"


@pytest.fixture(scope="module")
def demo_build(tmp_path_factory: pytest.TempPathFactory) -> tuple[GateReport, Path]:
    """A build of imed shards (one broken) gated with Data Docs, and a card of what passed."""
    root = tmp_path_factory.mktemp("demo")
    good = write_shard(FAMILY_ROWS["imed"](), root / "build" / "imed-good.parquet")
    rows = FAMILY_ROWS["imed"]()
    rows[2]["sample_id"] = rows[0]["sample_id"]
    bad = write_shard(rows, root / "build" / "imed-bad.parquet")
    report = gate_build([good, bad], family="imed", workdir=str(root / "work"), build_id="demo-1",
                        severity_bands=TEST_BANDS, tolerances={"max_failed_shard_fraction": 0.5})
    medq = write_shard(FAMILY_ROWS["medq_uni"](), root / "build" / "medq.parquet")
    card_dir = root / "card"
    write_dataset_card([*report.passed_shards, medq], str(card_dir), name="demo", version="v1",
                       summary={"data_docs_path": report.data_docs_path, "gate_passed": report.passed})
    return report, card_dir


def test_data_docs_render(demo_build: tuple[GateReport, Path], tmp_path: Path) -> None:
    report, _ = demo_build
    assert report.data_docs_path and report.data_docs_path.endswith("runs/demo-1/data_docs/index.html")
    pixels, dom = render(Path(report.data_docs_path), tmp_path)
    assert_not_blank(pixels)
    assert "Data Docs" in dom and "Validation Results" in dom and "Expectation Suites" in dom


def test_gate_summary_page_links_the_failed_validation(demo_build: tuple[GateReport, Path], tmp_path: Path) -> None:
    report, _ = demo_build
    page = Path(report.data_docs_path or "").parent / "gate.html"
    pixels, dom = render(page, tmp_path)
    assert_not_blank(pixels)
    assert "<h1>Quality gate: imed build demo-1</h1>" in dom and "<h2>Decision: passed</h2>" in dom
    assert "expect_column_values_to_be_unique column=sample_id" in dom
    rows = re.findall(r'<tr class="failed">(.*?)</tr>', dom)
    assert len(rows) == 1 and "imed-bad.parquet" in rows[0] and "medcurate.shard.common.v1+imed.v1" in rows[0]
    assert len(re.findall(r'<tr class="passed">', dom)) == 2  # the good shard, the build rows
    link = re.search(r'href="(validations/[^"]+)"', rows[0]).group(1)  # type: ignore[union-attr]
    assert "_imed-bad.parquet/" in link  # the page of that shard's own run, named by its run id
    _, result_dom = render(page.parent / unquote(link), tmp_path / "result")  # a URL: quoted
    assert "Expectation Validation Result" in result_dom and "sample_id" in result_dom


def test_dataset_card_renders(demo_build: tuple[GateReport, Path], tmp_path: Path) -> None:
    _, card_dir = demo_build
    pixels, dom = render(card_dir / "card.html", tmp_path)
    assert_not_blank(pixels)
    for heading in ("Dataset card: demo v1", "Counts by modality", "Rejects by reason", "Contact sheet",
                    "Degradation panels", "Metric histograms"):
        assert heading in dom, heading
    assert '<img alt="Contact sheet" src="contact_sheet.png"' in dom
