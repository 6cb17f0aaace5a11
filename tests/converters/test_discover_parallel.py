"""Discovery's per-file work on other processes gives the same items, rejects and cache
as the serial loop; a rebuild then opens nothing."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import pytest

import converters.discover as discover_module
from converters.discover import discover
from curation.hash_cache import HashCache
from tests.converters.test_hash_cache import age, reads, rows, tree  # noqa: F401 - `reads` is a fixture


@pytest.fixture(scope="module")
def pool_map() -> Any:
    """A real pool of two worker processes (spawned: nothing inherited from the test)."""
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        calls: list[tuple[int, int]] = []  # (chunks, files) per call

        def mapped(fn: Callable[[Any], Any], chunks: Sequence[Any]) -> list[Any]:
            calls.append((len(chunks), sum(len(chunk) for chunk in chunks)))
            return list(pool.map(fn, chunks))

        mapped.calls = calls  # type: ignore[attr-defined]
        yield mapped


def mixed_tree(root: Path) -> None:
    """Rasters, a NIfTI volume, a DICOM series of 3 slices, a DICOM with a damaged header
    element, a DICOM without extension, a file without extension that is not DICOM, an
    empty PNG."""
    files = tree(root)
    ct = files["ct"].read_bytes()
    for i in range(3):
        (root / "ct" / f"s{i}.dcm").write_bytes(ct)
    # SliceLocation (0020,1041) with the unknown VR 'ZZ': pydicom fails only when the value is read
    (root / "ct" / "bad.dcm").write_bytes(ct.replace(b"\x20\x00\x41\x10DS", b"\x20\x00\x41\x10ZZ", 1))
    (root / "ct" / "noext").write_bytes(ct)
    (root / "other").write_bytes(b"not an image at all" * 20)
    (root / "photos" / "empty.png").write_bytes(b"")
    age(*[p for p in root.rglob("*") if p.is_file()])


def outcome(found: discover_module.Discovery) -> tuple[Any, ...]:
    return rows(found), sorted((r.source_uri, r.reason, r.detail) for r in found.rejects), found.files_seen


def test_parallel_examination_equals_the_serial_loop(tmp_path: Path, pool_map: Any, monkeypatch: pytest.MonkeyPatch):
    mixed_tree(tmp_path / "src")
    monkeypatch.setattr(discover_module, "PARALLEL_MIN_BYTES", 0)
    monkeypatch.setattr(discover_module, "PARALLEL_CHUNK_FILES", 3)
    serial = discover([str(tmp_path / "src")])
    parallel = discover([str(tmp_path / "src")], parallel_map=pool_map)
    assert outcome(parallel) == outcome(serial)
    assert pool_map.calls[-1] == (4, 11)  # every file, in chunks of 3
    reasons = {Path(r.source_uri).name: r.reason for r in parallel.rejects}
    assert reasons == {"bad.dcm": "bad_header", "other": "unsupported_format"}
    series = next(i for i in parallel.items if i["key"].startswith("ct/series-"))
    assert sorted(Path(m).name for m in series["members"]) == ["noext", "s0.dcm", "s1.dcm", "s2.dcm", "slice.dcm"]


def test_what_workers_learn_is_cached_so_a_rebuild_opens_nothing(
    tmp_path: Path, pool_map: Any, reads: list[str], monkeypatch: pytest.MonkeyPatch  # noqa: F811
):
    mixed_tree(tmp_path / "src")
    monkeypatch.setattr(discover_module, "PARALLEL_MIN_BYTES", 0)
    db = str(tmp_path / "hashes.sqlite")
    with HashCache(db) as cache:
        first = discover([str(tmp_path / "src")], cache, parallel_map=pool_map)
    assert reads == []  # every file was read by the workers (this process read none)
    assert pool_map.calls[-1] == (1, 11)
    with HashCache(db) as cache:
        again = discover([str(tmp_path / "src")], cache, parallel_map=pool_map)
    assert outcome(again) == outcome(first)
    assert pool_map.calls[-1] == (1, 2)  # only the two rejects, never cached as good, are examined again
    assert cache.hits == 9 and reads == []


def test_few_bytes_stay_in_this_process(tmp_path: Path, pool_map: Any):
    mixed_tree(tmp_path / "src")
    before = len(pool_map.calls)
    serial = discover([str(tmp_path / "src")])
    assert outcome(discover([str(tmp_path / "src")], parallel_map=pool_map)) == outcome(serial)
    assert len(pool_map.calls) == before  # under PARALLEL_MIN_BYTES (64 MiB): no worker round trip
