"""Versioned label-synonym → canonical category tables (IMed's 204 targets).

Source datasets name the same structure many ways (``Liver``, ``hepatic``, ``liver_1``;
``tumour``/``tumor``; MSD's ``PZ``). A table ``<name>.v<N>.csv`` (columns ``synonym``,
``category``) maps normalised label names to one canonical category. Tables are
versioned by file name: a change is a new version, and the version used is recorded in
each sample's provenance, so a category rename never silently changes old builds.
"""

from __future__ import annotations

import csv
import functools
import re
from pathlib import Path

TABLES_DIR = Path(__file__).resolve().parent
DEFAULT_TABLE = "imed_categories"
DEFAULT_VERSION = 1


def normalise_label(name: str) -> str:
    """``Liver_Tumour-1`` → ``liver tumour``: lower case, separators to spaces, no digits."""
    text = re.sub(r"[_\-./]+", " ", name.strip().lower())
    text = re.sub(r"\b\d+\b", " ", text)
    return re.sub(r"\s+", " ", text).strip()


@functools.lru_cache(maxsize=8)
def load_table(name: str = DEFAULT_TABLE, version: int = DEFAULT_VERSION) -> dict[str, str]:
    path = TABLES_DIR / f"{name}.v{version}.csv"
    if not path.exists():
        known = sorted(p.name for p in TABLES_DIR.glob("*.csv"))
        raise FileNotFoundError(f"category table {path.name} not found; known tables: {known}")
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    table: dict[str, str] = {}
    for number, row in enumerate(rows, start=2):
        synonym, category = normalise_label(row.get("synonym") or ""), (row.get("category") or "").strip()
        if not synonym or not category:
            raise ValueError(f"{path}: line {number}: both 'synonym' and 'category' are required, got {row}")
        if table.get(synonym, category) != category:
            raise ValueError(f"{path}: line {number}: {synonym!r} maps to both {table[synonym]!r} and {category!r}")
        table[synonym] = category
    return table


def canonical_category(name: str, table: dict[str, str]) -> tuple[str, bool]:
    """(canonical category, whether the table knew it); unknown names are kept normalised."""
    key = normalise_label(name)
    if key in table:
        return table[key], True
    return key or name, False
