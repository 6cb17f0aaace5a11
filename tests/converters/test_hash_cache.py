"""The persistent content-hash cache: unchanged files are not read again, changed ones are."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

import converters.discover as discover_module
from converters.discover import discover
from curation import hash_cache
from curation.hash_cache import HashCache, cache_path, identity, remote_identity
from curation.recipes.demo_trees import fundus_image, pydicom_file, save

OLD = time.time() - 3600  # an hour ago: well outside the racy window


def age(*paths: Path, when: float = OLD) -> None:
    for path in paths:
        os.utime(path, (when, when))


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every file the cache or discovery reads in full."""
    seen: list[str] = []
    real_sha, real_read = hash_cache.read_sha256, discover_module._read

    def counted_sha(uri: str) -> str:
        seen.append(uri)
        return real_sha(uri)

    def counted_read(file: discover_module._File) -> bytes:
        seen.append(file.uri)
        return real_read(file)

    monkeypatch.setattr(hash_cache, "read_sha256", counted_sha)
    monkeypatch.setattr(discover_module, "_read", counted_read)
    return seen


def tree(root: Path) -> dict[str, Path]:
    """Rasters, a mask, a DICOM series file and a NIfTI volume, all an hour old."""
    files = {
        "photo": save(fundus_image(128, 1, 2), root / "photos" / "a.png"),
        "photo2": save(fundus_image(128, 2, 0), root / "photos" / "b.png"),
        "ct": root / "ct" / "slice.dcm",
        "mr": root / "mr" / "brain.nii.gz",
    }
    files["ct"].parent.mkdir(parents=True)
    files["ct"].write_bytes(pydicom_file("CT_small.dcm").read_bytes())
    files["mr"].parent.mkdir(parents=True)
    nib.save(nib.Nifti1Image(np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6), np.eye(4)), files["mr"])
    age(*files.values())
    return files


def rows(found: discover_module.Discovery) -> list[tuple[str, str, str, int]]:
    return [(i["key"], i["kind"], i["sha256"], i["size_bytes"]) for i in found.items]


def test_unchanged_files_are_not_read_again_and_results_equal_an_uncached_run(tmp_path: Path, reads: list[str]):
    files = tree(tmp_path / "src")
    db = str(tmp_path / "cache" / "hashes.sqlite")
    plain = rows(discover([str(tmp_path / "src")]))
    assert {r[0]: r[2] for r in plain}["photos/a.png"] == sha(files["photo"])
    assert {r[0]: r[2] for r in plain}["ct/slice.dcm"] == sha(files["ct"])

    with HashCache(db) as cache:
        first = rows(discover([str(tmp_path / "src")], cache))
    assert first == plain
    reads.clear()
    with HashCache(db) as cache:
        second = discover([str(tmp_path / "src")], cache)
    assert rows(second) == plain
    assert reads == []  # no file read, the DICOM file included (its grouping facts are cached)
    assert cache.hits == 4 and cache.misses == 0
    ct = next(i for i in second.items if i["key"] == "ct/slice.dcm")
    assert ct["kind"] == "dicom" and ct["size_bytes"] == files["ct"].stat().st_size


def test_a_changed_file_is_hashed_again(tmp_path: Path, reads: list[str]):
    files = tree(tmp_path / "src")
    db = str(tmp_path / "hashes.sqlite")
    with HashCache(db) as cache:
        discover([str(tmp_path / "src")], cache)

    # same size, new content, new mtime (a corrected re-export)
    photo = files["photo"]
    before = photo.stat().st_size
    data = bytearray(photo.read_bytes())
    data[-20] ^= 0xFF
    photo.write_bytes(bytes(data))
    age(photo, when=OLD + 60)
    assert photo.stat().st_size == before
    # same mtime, different size (a copy tool that keeps timestamps)
    mtime = files["ct"].stat().st_mtime_ns
    files["ct"].write_bytes(files["ct"].read_bytes() + b"\x00\x00")
    os.utime(files["ct"], ns=(mtime, mtime))
    reads.clear()
    with HashCache(db) as cache:
        found = {i["key"]: i["sha256"] for i in discover([str(tmp_path / "src")], cache).items}
    assert sorted(reads) == sorted([str(photo), str(files["ct"])])
    assert found["photos/a.png"] == sha(photo) and found["ct/slice.dcm"] == sha(files["ct"])
    assert found["photos/b.png"] == sha(files["photo2"])


def test_a_file_modified_within_the_racy_window_is_not_trusted(tmp_path: Path, reads: list[str]):
    path = save(fundus_image(64, 3, 1), tmp_path / "src" / "fresh.png")  # mtime: now
    db = str(tmp_path / "hashes.sqlite")
    for _ in range(2):  # hashed, but not stored: read again the next time
        with HashCache(db) as cache:
            assert cache.file_sha256(str(path)) == sha(path)
    assert reads == [str(path), str(path)]
    age(path)  # now old enough: stored, then trusted
    with HashCache(db) as cache:
        cache.file_sha256(str(path))
    with HashCache(db) as cache:
        assert cache.file_sha256(str(path)) == sha(path)
    assert len(reads) == 3


def test_a_file_that_changes_while_it_is_read_is_not_stored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    path = tmp_path / "a.bin"
    path.write_bytes(b"x" * 1000)
    age(path)
    real = hash_cache.read_sha256

    def read_then_rewrite(uri: str) -> str:
        digest = real(uri)
        path.write_bytes(b"y" * 1000)
        age(path, when=OLD + 5)
        return digest

    monkeypatch.setattr(hash_cache, "read_sha256", read_then_rewrite)
    with HashCache(str(tmp_path / "h.sqlite")) as cache:
        cache.file_sha256(str(path))
    monkeypatch.setattr(hash_cache, "read_sha256", real)
    with HashCache(str(tmp_path / "h.sqlite")) as cache:
        assert cache.file_sha256(str(path)) == sha(path)
        assert cache.misses == 1


def test_archive_members_follow_their_archive(tmp_path: Path, reads: list[str]):
    src = tmp_path / "src"
    src.mkdir()
    archive = src / "photos.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("a.png", save(fundus_image(64, 5, 1), tmp_path / "a.png").read_bytes())
    age(archive)
    db = str(tmp_path / "h.sqlite")
    with HashCache(db) as cache:
        first = rows(discover([str(src)], cache))
    reads.clear()
    with HashCache(db) as cache:
        assert rows(discover([str(src)], cache)) == first
    assert not any(r.startswith("zip://") for r in reads)
    with zipfile.ZipFile(archive, "w") as zf:  # the member's content changes with the archive
        zf.writestr("a.png", save(fundus_image(64, 6, 1), tmp_path / "b.png").read_bytes())
    age(archive, when=OLD + 60)
    with HashCache(db) as cache:
        third = rows(discover([str(src)], cache))
    assert third[0][2] == sha(tmp_path / "b.png") != first[0][2]


def test_object_store_identity_is_the_etag():
    info = {"size": 10, "ETag": '"abc"', "LastModified": None}
    ident = remote_identity("s3://b/k.png", info)
    assert ident is not None and ident.token == 'etag:"abc"'
    assert remote_identity("s3://b/k.png", {**info, "ETag": '"abd"'}) != ident
    assert remote_identity("memory://k.png", {"size": 10}) is None  # nothing that tracks content: not cached
    assert identity("memory://k.png", {"size": 10, "created": 1.0}) is None


def test_location_switch_and_a_damaged_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    assert cache_path(str(tmp_path)) == str(tmp_path / "cache" / "hashes" / "hashes.sqlite")
    assert cache_path("") is None
    monkeypatch.setenv("MEDCURATE_HASH_CACHE", "off")
    assert cache_path(str(tmp_path)) is None
    monkeypatch.delenv("MEDCURATE_HASH_CACHE")
    bad = tmp_path / "bad.sqlite"
    bad.write_bytes(b"this is not a database" * 100)
    path = tmp_path / "a.bin"
    path.write_bytes(b"z" * 10)
    with HashCache(str(bad)) as cache:  # a warning, and hashing as without a cache
        assert not cache.enabled
        assert cache.file_sha256(str(path)) == sha(path)


WRITER = textwrap.dedent(
    """
    import os, sys, time
    from curation.hash_cache import HashCache
    db, folder, start, go = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    names = sorted(os.listdir(folder))
    cache = HashCache(db)  # both create the database at once too
    while not os.path.exists(go):
        time.sleep(0.005)
    for n, name in enumerate(names[start:] + names[:start]):
        digest = cache.file_sha256(os.path.join(folder, name))
        cache.remember_phash(digest, "v", n)
        if n % 4 == 0:
            cache.flush()  # many short write transactions, interleaved with the other writer
    cache.close()
    """
)


def test_two_processes_writing_the_cache_at_once_do_not_corrupt_it(tmp_path: Path):
    folder = tmp_path / "files"
    folder.mkdir()
    for n in range(1000):
        (folder / f"{n:04d}.bin").write_bytes(n.to_bytes(2, "little") * 500)
    age(*folder.iterdir())
    db = str(tmp_path / "cache" / "hashes.sqlite")
    go = tmp_path / "go"
    root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": root}
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, db, str(folder), str(start), str(go)], env=env, stderr=subprocess.PIPE)
        for start in (0, 500)
    ]
    time.sleep(0.3)
    go.touch()
    for proc in procs:
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err.decode()
        assert b"not written" not in err and b"unreadable" not in err
    with sqlite3.connect(db) as con:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        stored = dict(con.execute("SELECT uri, sha256 FROM files_v1").fetchall())
        phashes = con.execute("SELECT COUNT(*) FROM derived_v1 WHERE kind = 'phash:v'").fetchone()[0]
    assert stored == {str(p): sha(p) for p in folder.iterdir()}
    assert phashes == 1000  # one row per content, whichever writer came last


def test_a_local_name_with_double_colons_is_a_plain_file(tmp_path: Path, reads: list[str]):
    path = tmp_path / "scan::v2.bin"
    path.write_bytes(b"q" * 100)
    age(path)
    for _ in range(2):
        with HashCache(str(tmp_path / "h.sqlite")) as cache:
            assert cache.file_sha256(str(path)) == sha(path)
    assert reads == [str(path)]


def test_unchanged_dicom_files_are_not_opened_and_a_bad_header_is_never_cached(tmp_path: Path, reads: list[str]):
    src = tmp_path / "src"
    files = tree(src)
    good = files["ct"].read_bytes()
    # SliceLocation (0020,1041) with the unknown VR 'ZZ': pydicom fails only when the value is read
    (src / "ct" / "second.dcm").write_bytes(good.replace(b"\x20\x00\x41\x10DS", b"\x20\x00\x41\x10ZZ", 1))
    age(src / "ct" / "second.dcm")
    db = str(tmp_path / "hashes.sqlite")
    with HashCache(db) as cache:
        first = discover([str(src)], cache)
    assert [r.reason for r in first.rejects] == ["bad_header"]

    reads.clear()
    with HashCache(db) as cache:
        again = discover([str(src)], cache)
    assert rows(again) == rows(first)
    assert [r.reason for r in again.rejects] == ["bad_header"]  # checked again: never remembered as good
    assert reads == [str(src / "ct" / "second.dcm")]  # the good file is not opened; the damaged one is checked again


def test_lookup_many_answers_each_file_in_order_across_query_chunks(tmp_path: Path):
    """A rebuild looks every source up at once: more files than one query takes, with an
    unknown file, a changed one and a repeated one among them."""
    count = hash_cache._QUERY_CHUNK + 37
    files = [tmp_path / f"f{i:04d}.bin" for i in range(count)]
    for i, path in enumerate(files):
        path.write_bytes(i.to_bytes(4, "little"))
    age(*files)
    unknown = tmp_path / "unknown.bin"
    unknown.write_bytes(b"never hashed")
    age(unknown)
    with HashCache(str(tmp_path / "cache.db")) as cache:
        for path in files:
            assert cache.file_sha256(str(path)) == sha(path)
    files[3].write_bytes(b"changed")  # another size: its stored hash no longer applies
    age(files[3])
    asked = [*files, unknown, files[0]]
    with HashCache(str(tmp_path / "cache.db")) as cache:
        found = cache.lookup_many([identity(str(p)) for p in asked])
        assert found == [cache.lookup(identity(str(p))) for p in asked]
    expected = [sha(p) for p in files]
    expected[3] = None
    assert found == [*expected, None, sha(files[0])]
