"""Family builds from the demo source trees, once per test module, without Prefect."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest

from tests.curation.recipes.families import Built, build_family
from tests.helpers import TEST_SALT


@pytest.fixture(scope="module")
def salt() -> Iterator[str]:
    old = os.environ.get("MEDCURATE_SALT")
    os.environ["MEDCURATE_SALT"] = TEST_SALT
    yield TEST_SALT
    if old is None:
        os.environ.pop("MEDCURATE_SALT", None)
    else:
        os.environ["MEDCURATE_SALT"] = old


@pytest.fixture(scope="module")
def demo_build(tmp_path_factory: pytest.TempPathFactory, salt: str) -> Callable[[str], Built]:
    """Build a family's demo tree with the demo's recipe overrides (cached per module)."""
    from curation.recipes.demo_trees import DEMO_OPTIONS, write_tree

    cache: dict[str, Built] = {}

    def run(family: str) -> Built:
        if family not in cache:
            root = tmp_path_factory.mktemp(family)
            tree = write_tree(family, root / "src")
            cache[family] = build_family(family, root / "work", tree, DEMO_OPTIONS[family])
        return cache[family]

    return run
