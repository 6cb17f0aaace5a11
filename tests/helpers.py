"""Paths of the real sample files and small helpers shared by tests."""

from __future__ import annotations

from pathlib import Path

DATA = Path(__file__).resolve().parent / "data"
CT_DIR = DATA / "ct_3slice_seg"
XRAY_DIR = DATA / "chest_xray_nih"
TEST_SALT = "test-salt-not-secret"


def pydicom_file(name: str) -> Path:
    """A file pydicom ships in its wheel (never its download fallback)."""
    import pydicom

    path = Path(pydicom.__file__).resolve().parent / "data" / "test_files" / name
    assert path.exists(), f"pydicom does not ship {name}"
    return path
