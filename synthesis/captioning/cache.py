"""A persistent caption cache: SQLite on the workdir, reachable by local path or fsspec URL.

Key = hash of (facts hash, family, prompt id and file hash, model id, sampling params,
synonym-table version), so a nightly rebuild re-captions only what changed and a new
prompt version, model or decoding setting never serves an old caption.

Why SQLite: one file, atomic transactions, and safe concurrent writers on one machine
(several Ray actors on a node share it through SQLite's file locks). For a remote
fsspec URL (``s3://...``) the file is copied down on open and merged back on close
(the remote copy is re-read and our rows are added with ``INSERT OR IGNORE`` before an
upload to a temporary name and a rename). Two workers closing at the same instant can
still lose each other's new rows; that costs a re-generation next run, never a wrong
caption.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sqlite3
import tempfile
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

_SCHEMA = """
CREATE TABLE IF NOT EXISTS captions (
    key TEXT PRIMARY KEY,
    caption TEXT NOT NULL,
    kept TEXT NOT NULL,
    provenance_json TEXT NOT NULL,
    created_at REAL NOT NULL
)
"""


@dataclasses.dataclass(frozen=True)
class CachedCaption:
    caption: str
    kept: str
    provenance_json: str


def cache_key(**parts: Any) -> str:
    """A stable key from named parts (JSON-serialisable)."""
    blob = json.dumps(parts, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def _is_remote(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


class CaptionCache:
    """Get and put cached captions; ``open()`` before use, ``close()`` to persist."""

    def __init__(self, path: str):
        self.path = path
        self._conn: sqlite3.Connection | None = None
        self._local_path = ""
        self._dirty = False

    def open(self) -> CaptionCache:
        if _is_remote(self.path):
            import fsspec

            fd, self._local_path = tempfile.mkstemp(suffix=".sqlite", prefix="caption-cache-")
            os.close(fd)
            fs, remote = fsspec.core.url_to_fs(self.path)
            if fs.exists(remote):
                fs.get(remote, self._local_path)
        else:
            self._local_path = self.path.removeprefix("file://")
            parent = os.path.dirname(os.path.abspath(self._local_path))
            os.makedirs(parent, exist_ok=True)
        self._conn = sqlite3.connect(self._local_path, timeout=60, isolation_level=None)
        self._conn.execute("PRAGMA busy_timeout = 60000")
        self._conn.execute(_SCHEMA)
        return self

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError(f"caption cache {self.path} is not open; call open() first")
        return self._conn

    def get_many(self, keys: Iterable[str]) -> dict[str, CachedCaption]:
        wanted = list(dict.fromkeys(keys))
        found: dict[str, CachedCaption] = {}
        for offset in range(0, len(wanted), 500):  # stay under SQLite's variable limit
            chunk = wanted[offset : offset + 500]
            marks = ",".join("?" * len(chunk))
            rows = self.conn.execute(
                f"SELECT key, caption, kept, provenance_json FROM captions WHERE key IN ({marks})", chunk
            ).fetchall()
            found.update({key: CachedCaption(caption, kept, prov) for key, caption, kept, prov in rows})
        return found

    def put_many(self, entries: Mapping[str, CachedCaption]) -> None:
        if not entries:
            return
        import time

        now = time.time()
        self.conn.execute("BEGIN IMMEDIATE")  # one transaction, write lock taken up front
        try:
            self.conn.executemany(
                "INSERT OR REPLACE INTO captions VALUES (?, ?, ?, ?, ?)",
                [(k, e.caption, e.kept, e.provenance_json, now) for k, e in entries.items()],
            )
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")
        self._dirty = True

    def __len__(self) -> int:
        return int(self.conn.execute("SELECT COUNT(*) FROM captions").fetchone()[0])

    def close(self) -> None:
        if self._conn is None:
            return
        try:
            if _is_remote(self.path) and self._dirty:
                self._merge_and_upload()
        finally:
            self._conn.close()
            self._conn = None
            if _is_remote(self.path) and os.path.exists(self._local_path):
                os.remove(self._local_path)

    def _merge_and_upload(self) -> None:
        import fsspec

        fs, remote = fsspec.core.url_to_fs(self.path)
        if fs.exists(remote):
            fd, theirs = tempfile.mkstemp(suffix=".sqlite")
            os.close(fd)
            try:
                fs.get(remote, theirs)
                self.conn.execute("ATTACH DATABASE ? AS theirs", (theirs,))
                self.conn.execute("INSERT OR IGNORE INTO captions SELECT * FROM theirs.captions")
                self.conn.execute("DETACH DATABASE theirs")
            finally:
                os.remove(theirs)
        tmp_remote = f"{remote}.tmp-{uuid.uuid4().hex}"
        fs.put(self._local_path, tmp_remote)
        fs.mv(tmp_remote, remote)

    def __enter__(self) -> CaptionCache:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()
