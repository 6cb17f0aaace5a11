"""``medcurate demo``: build and publish datasets from bundled real samples.

The demo stages a small source tree in ``<workdir>/demo-sources`` from files the
project and its packages ship (real CT slices with liver/spine/heart label maps and
real NIH chest radiographs in ``flows/demo_data``, pydicom's bundled CT, MR and
ultrasound files) and runs the same code paths a user runs on a real download.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

from flows.settings import Settings

DEMO_DATA = Path(__file__).resolve().parent / "demo_data"
#: pydicom ships these in its wheel (no download): CT, MR, and colour/palette ultrasound
PYDICOM_FILES = ("CT_small.dcm", "MR_small.dcm", "examples_rgb_color.dcm", "examples_palette.dcm")


def pydicom_test_file(name: str) -> Path:
    """A file from pydicom's own test data folder, without pydicom's download fallback."""
    import pydicom

    path = Path(pydicom.__file__).resolve().parent / "data" / "test_files" / name
    if not path.exists():
        raise FileNotFoundError(f"pydicom does not ship {name} in {path.parent}")
    return path


def stage_imaging_sources(root: Path) -> Path:
    """Source tree: CT series + label maps, chest X-rays, pydicom's CT/MR/US files."""
    if root.exists():
        shutil.rmtree(root)
    (root / "ct_liver_spine_heart").mkdir(parents=True)
    for file in (DEMO_DATA / "ct_3slice_seg").iterdir():
        shutil.copy2(file, root / "ct_liver_spine_heart" / file.name)
    shutil.copytree(DEMO_DATA / "chest_xray_nih", root / "chest_xray_nih")
    (root / "pydicom_samples").mkdir()
    for name in PYDICOM_FILES:
        shutil.copy2(pydicom_test_file(name), root / "pydicom_samples" / name)
    return root


def build_family_demos(settings: Settings) -> list[tuple[str, dict[str, Any], float]]:
    """Each dataset family on its demo source tree (curation.recipes.demo_trees), with the
    family's default recipe plus the demo's small overrides: (family, summary, seconds)."""
    from curation.recipes.demo_trees import DEMO_OPTIONS, write_tree
    from curation.recipes.model import FAMILY_NAMES
    from flows.build import BuildRequest, run_build

    results = []
    for family in FAMILY_NAMES:
        started = time.perf_counter()
        tree = write_tree(family, Path(settings.workdir) / "demo-sources" / family)
        outcome = run_build(
            BuildRequest(
                recipe=family,
                sources=[str(tree)],
                dataset=family,
                options=DEMO_OPTIONS[family],
                workdir=settings.workdir,
                catalog_uri=settings.catalog_uri,
                warehouse=settings.warehouse,
            )
        )
        results.append((family, outcome.summary, time.perf_counter() - started))
    return results


def print_family_table(results: list[tuple[str, dict[str, Any], float]]) -> None:
    print(f"\n{'family':<12} {'samples':>7} {'inputs':>7} {'rejected':>8} {'seconds':>7}  rejects by reason")
    for family, summary, seconds in results:
        reasons = ", ".join(f"{r}={n}" for r, n in summary["rejects_by_reason"].items()) or "-"
        print(
            f"{family:<12} {summary['samples_written']:>7} {summary['inputs_total']:>7} "
            f"{summary['inputs_rejected']:>8} {seconds:>7.1f}  {reasons}"
        )


def run_demo(settings: Settings) -> int:
    from flows.build import BuildRequest, run_build
    from flows.cli import print_outcome

    started = time.perf_counter()
    sources = stage_imaging_sources(Path(settings.workdir) / "demo-sources" / "imaging")
    outcome = run_build(
        BuildRequest(
            recipe="convert",
            sources=[str(sources)],
            dataset="demo_imaging",
            options={
                "modality": "XR",  # the only inputs without a DICOM header are the chest radiographs
                "subject_pattern": r"(\d{8})_\d{3}\.png$",  # NIH names: <patient>_<follow-up>.png
            },
            workdir=settings.workdir,
            catalog_uri=settings.catalog_uri,
            warehouse=settings.warehouse,
        )
    )
    print_outcome(outcome.summary, settings, "demo_imaging")
    families = build_family_demos(settings)
    print_family_table(families)
    print(f"\nDemo finished in {time.perf_counter() - started:.1f}s. Shards:")
    for path in outcome.shards:
        print(f"  {path}")
    command = "medcurate" if settings.workdir == os.path.abspath("medcurate-data") else f"medcurate --workdir {settings.workdir}"
    print(
        "\nRead them:\n"
        f"  {command} catalog list\n"
        f"  {command} catalog files demo_imaging   # or unimed, imed, retinalogos, ophora, medq_uni\n"
        "  python -c \"import pyarrow.parquet as pq, sys; print(pq.read_table(sys.argv[1]).num_rows)\" <shard>\n"
        f"  python -c \"from catalogs import open_catalog; "
        f"print(open_catalog(workdir='{settings.workdir}').to_arrow('demo_imaging').num_rows)\""
    )
    return 0
