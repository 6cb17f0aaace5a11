"""``medcurate demo`` end to end, as the README's first command runs it: a fresh process,
its own temporary Prefect server, every family built, gated and published with a card."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from catalogs import open_catalog

#: samples each demo dataset publishes from the bundled files (deterministic: fixed
#: inputs, seeded prompts and degradations, salted ids)
DEMO_SAMPLES = {"demo_imaging": 9, "unimed": 18, "imed": 17, "retinalogos": 13, "ophora": 4, "medq_uni": 42}


@pytest.mark.slow
def test_demo_builds_and_publishes_every_family(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}  # its own server
    env.update(MEDCURATE_SALT="demo-test", PREFECT_SERVER_ANALYTICS_ENABLED="false")
    work = tmp_path / "w"
    done = subprocess.run(
        [str(Path(sys.executable).parent / "medcurate"), "--workdir", str(work), "demo"],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Demo finished" in done.stdout and "medcurate --workdir" in done.stdout
    catalog = open_catalog(workdir=str(work))
    assert sorted(catalog.list()) == sorted(DEMO_SAMPLES)
    for name, samples in DEMO_SAMPLES.items():
        assert catalog.to_arrow(name, columns=["sample_id"]).num_rows == samples, name
        (version,) = catalog.versions(name)
        card = Path(catalog.artifacts_dir(name, version.version)) / "README.md"
        assert card.read_text().startswith(f"# Dataset card: {name} {version.version}")
