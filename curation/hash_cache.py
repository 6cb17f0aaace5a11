"""A persistent content-hash cache: a file whose stat is unchanged is not read again.

Every plan hashes every source file (discovery, the family planners) and decodes every
image for its perceptual hash (dedup). On a rebuild where 1% of the sources changed,
that repeated reading dominated the plan. Like git's index, this cache remembers the
SHA-256 of a file together with its identity: the absolute URI, the size, the
modification time in nanoseconds and a token (local files: device, inode and ctime;
object stores: the ETag or generation). A later lookup with the same identity returns
the stored hash without opening the file; any difference (a rewrite of the same size
gets a new mtime/ctime, a replaced file a new inode) is a miss and the file is read.

The racy-git rule: a file whose mtime is within :data:`RACY_NS` (2 s) of the moment it
was hashed could be written again within the same timestamp tick (coarse filesystem
clocks, a writer still busy), and its identity would not change. Such a hash is used
for this run but not stored, so the file is read again next time. A file that changed
while it was read (its stat differs before and after) is not stored either.

Values derived from a file's content are stored by its SHA-256 and a kind that names the
algorithm and its version: perceptual hashes (:mod:`curation.dedup`) and the few header
facts discovery groups DICOM files by (:mod:`converters.discover`), so a rebuild decodes
and parses only new content.

The cache lives in ``<workdir>/cache/hashes/hashes.sqlite`` (SQLite in WAL mode: several
builds on one workdir read and write it concurrently; each write is one short
transaction). ``MEDCURATE_HASH_CACHE`` names another folder, or ``off`` disables it.
Deleting the folder clears it. A cache that cannot be opened or written is skipped with
a warning: it only ever saves time, never changes a result.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import logging
import os
import sqlite3
import stat
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any

from curation.ids import sha256_stream

log = logging.getLogger(__name__)

#: a hash is stored only when the file's mtime is older than this when it was hashed
RACY_NS = 2_000_000_000
DB_NAME = "hashes.sqlite"
ENV = "MEDCURATE_HASH_CACHE"
_OFF = ("off", "0", "false", "no", "none")
_FLUSH_EVERY = 2000
#: keys per ``IN (...)`` query: well under SQLite's 999 bound parameters of old builds
_QUERY_CHUNK = 500
_SCHEMA = """
CREATE TABLE IF NOT EXISTS files_v1 (
    uri TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    token TEXT NOT NULL,
    sha256 TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS derived_v1 (
    sha256 TEXT NOT NULL,
    kind TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (sha256, kind)
);
"""


@dataclasses.dataclass(frozen=True)
class Identity:
    """What says a file is unchanged without reading it; ``seen_ns`` is when it was taken."""

    uri: str
    size: int
    mtime_ns: int
    token: str
    local: bool  # stat-based: re-checked after reading, subject to the racy rule
    seen_ns: int = dataclasses.field(default=0, compare=False)


def _is_local(uri: str) -> bool:
    return "://" not in uri or uri.startswith("file://")


def _is_chained(uri: str) -> bool:
    """fsspec's ``proto://inner::outer`` (an archive member); a local name may hold '::'."""
    return "::" in uri and "://" in uri.split("::", 1)[0]


def local_identity(path: str) -> Identity | None:
    """Identity of a local regular file from ``os.stat``; None when it cannot be statted."""
    path = os.path.abspath(path.removeprefix("file://"))
    try:
        st = os.stat(path)
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    token = f"{st.st_dev}:{st.st_ino}:{st.st_ctime_ns}"
    return Identity(path, st.st_size, st.st_mtime_ns, token, True, time.time_ns())


def _mtime_ns(info: Mapping[str, Any]) -> int:
    value = info.get("mtime") or info.get("LastModified") or info.get("last_modified") or info.get("updated")
    if isinstance(value, datetime):
        return int(value.timestamp() * 1_000_000_000)
    if isinstance(value, int | float):
        return int(value * 1_000_000_000)
    return 0


def content_token(info: Mapping[str, Any]) -> str:
    """What an object store changes whenever an object's content changes (fsspec ``info``
    of s3fs/gcsfs/adlfs: ETag, generation, content MD5), or '' when the listing has none."""
    for key in ("ETag", "etag", "generation", "md5Hash", "md5"):
        if info.get(key):
            return str(info[key])
    return ""


def remote_identity(uri: str, info: Mapping[str, Any]) -> Identity | None:
    """Identity of an object-store file from its listing (fsspec ``info``): needs an ETag,
    generation or content MD5, which change whenever the content does; else None."""
    token = content_token(info)
    size = info.get("size")
    if not token or size is None:
        return None
    return Identity(uri, int(size), _mtime_ns(info), f"etag:{token}", False, time.time_ns())


def identity(uri: str, info: Mapping[str, Any] | None = None) -> Identity | None:
    """The file's identity, or None when it has none that can be trusted (not cached).

    A member of an archive (``zip://member::/path/a.zip``) takes the archive's identity:
    an unchanged archive has unchanged members.
    """
    if _is_chained(uri):
        outer = identity(uri.split("::", 1)[1])
        if outer is None:
            return None
        return dataclasses.replace(outer, uri=uri, token=f"member-of:{outer.token}")
    if _is_local(uri):
        return local_identity(uri)
    return remote_identity(uri, info) if info else None


def read_sha256(uri: str) -> str:
    """SHA-256 of the file's bytes, read in chunks (the only place the cache reads a file)."""
    if _is_local(uri) and not _is_chained(uri):
        with open(uri.removeprefix("file://"), "rb") as fh:
            return sha256_stream(fh)
    from fsspec.core import url_to_fs

    fs, path = url_to_fs(uri)
    with fs.open(path, "rb") as fh:
        return sha256_stream(fh)


class HashCache:
    """Content hashes by file identity, and values derived from content (perceptual
    hashes, DICOM header facts) by content hash, in SQLite.

    ``HashCache(None)`` is a disabled cache: every call reads the file (no state).
    Use as a context manager, or call :meth:`close`, so pending entries are written.
    """

    def __init__(self, path: str | None, *, racy_ns: int = RACY_NS):
        self.path = path
        self.racy_ns = racy_ns
        self.hits = 0
        self.misses = 0
        self._lock = threading.Lock()
        self._files: list[tuple[str, int, int, str, str]] = []
        self._derived: list[tuple[str, str, str]] = []
        self._db: sqlite3.Connection | None = _connect(path) if path else None

    @property
    def enabled(self) -> bool:
        return self._db is not None

    # -- content hashes --------------------------------------------------------------
    def lookup(self, ident: Identity) -> str | None:
        """The stored hash of a file with exactly this identity, else None."""
        return self.lookup_many([ident])[0]

    def lookup_many(self, idents: Sequence[Identity]) -> list[str | None]:
        """:meth:`lookup` of many files, in order, in one query per 500: a rebuild looks
        up every source file (one query each was ~15 us of the ~25 us per cached file)."""
        if self._db is None or not idents:
            return [None] * len(idents)
        stored: dict[str, tuple[int, int, str, str]] = {}
        uris = list(dict.fromkeys(ident.uri for ident in idents))
        with self._lock:
            try:
                for start in range(0, len(uris), _QUERY_CHUNK):
                    chunk = uris[start : start + _QUERY_CHUNK]
                    rows = self._db.execute(
                        f"SELECT uri, size, mtime_ns, token, sha256 FROM files_v1 WHERE uri IN ({','.join('?' * len(chunk))})",
                        chunk,
                    ).fetchall()
                    stored.update((uri, (size, mtime, token, sha)) for uri, size, mtime, token, sha in rows)
            except sqlite3.Error as exc:
                self._disable(exc)
                return [None] * len(idents)
        found: list[str | None] = []
        for ident in idents:
            row = stored.get(ident.uri)
            same = row is not None and (row[0], row[1], row[2]) == (ident.size, ident.mtime_ns, ident.token)
            found.append(str(row[3]) if row is not None and same else None)
        return found

    def remember(self, ident: Identity, digest: str) -> bool:
        """Store ``digest`` for ``ident`` (taken before the file was read) when it can be
        trusted: the file is unchanged since, and its mtime is outside the racy window."""
        if self._db is None:
            return False
        if ident.local:
            if ident.seen_ns - ident.mtime_ns < self.racy_ns:
                return False  # racy: the same mtime could still hide a later write
            if identity(ident.uri) != ident:
                return False  # changed while it was read
        with self._lock:
            self._files.append((ident.uri, ident.size, ident.mtime_ns, ident.token, digest))
            full = len(self._files) + len(self._derived) >= _FLUSH_EVERY
        if full:
            self.flush()
        return True

    def file_sha256(self, uri: str, info: Mapping[str, Any] | None = None) -> str:
        """The file's SHA-256, read only when its identity is new (``info``: its listing)."""
        return self.hash_with_identity(uri, info)[0]

    def hash_with_identity(self, uri: str, info: Mapping[str, Any] | None = None) -> tuple[str, Identity | None]:
        """The file's SHA-256, and its identity when the hash is trusted for it (stored or
        found in the cache; None when racy, changing or uncacheable)."""
        ident = identity(uri, info) if self._db is not None else None
        if ident is not None:
            digest = self.lookup(ident)
            if digest is not None:
                self.hits += 1
                return digest, ident
        self.misses += 1
        digest = read_sha256(uri)
        trusted = ident is not None and self.remember(ident, digest)
        return digest, ident if trusted else None

    # -- values derived from content -----------------------------------------------
    def derived(self, contents: Iterable[str], kind: str) -> dict[str, str]:
        """Stored values of ``kind`` (a perceptual hash, a DICOM header's facts; the kind
        names the algorithm and its version) for these content hashes; absent when not stored."""
        wanted = list(dict.fromkeys(contents))
        if self._db is None or not wanted:
            return {}
        out: dict[str, str] = {}
        with self._lock:
            try:
                for start in range(0, len(wanted), _QUERY_CHUNK):
                    chunk = wanted[start : start + _QUERY_CHUNK]
                    marks = ",".join("?" * len(chunk))
                    rows = self._db.execute(
                        f"SELECT sha256, value FROM derived_v1 WHERE kind = ? AND sha256 IN ({marks})", (kind, *chunk)
                    ).fetchall()
                    out.update((str(sha), str(value)) for sha, value in rows)
            except sqlite3.Error as exc:
                self._disable(exc)
                return {}
        return out

    def remember_derived(self, content: str, kind: str, value: str) -> None:
        if self._db is None:
            return
        with self._lock:
            self._derived.append((content, kind, value))
            full = len(self._files) + len(self._derived) >= _FLUSH_EVERY
        if full:
            self.flush()

    def phashes(self, contents: Iterable[str], version: str) -> dict[str, int]:
        """Stored perceptual hashes of these content hashes (those not stored are absent)."""
        return {sha: int(value, 16) for sha, value in self.derived(contents, f"phash:{version}").items()}

    def remember_phash(self, content: str, version: str, value: int) -> None:
        self.remember_derived(content, f"phash:{version}", format(value, "x"))

    # -- life cycle ------------------------------------------------------------------
    def flush(self) -> None:
        """Write pending entries in one short transaction (other builds wait at most 30 s)."""
        with self._lock:
            if self._db is None or not (self._files or self._derived):
                return
            files, derived = self._files, self._derived
            self._files, self._derived = [], []
            try:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.executemany("INSERT OR REPLACE INTO files_v1 VALUES (?, ?, ?, ?, ?)", files)
                self._db.executemany("INSERT OR REPLACE INTO derived_v1 VALUES (?, ?, ?)", derived)
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
                log.warning("hash cache %s: not written (%s); the next build hashes these files again", self.path, exc)

    def close(self) -> None:
        self.flush()
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def __enter__(self) -> HashCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _disable(self, exc: Exception) -> None:
        log.warning("hash cache %s: unreadable (%s); hashing without it", self.path, exc)
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
        self._db = None


def _connect(path: str) -> sqlite3.Connection | None:
    """The cache database in WAL mode (concurrent readers and one writer at a time)."""
    try:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        db = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(_SCHEMA)
        return db
    except (OSError, sqlite3.Error) as exc:
        log.warning("hash cache %s cannot be opened (%s); hashing every file", path, exc)
        return None


def cache_path(workdir: str) -> str | None:
    """Where the cache of ``workdir`` lives: ``$MEDCURATE_HASH_CACHE`` (``off``: none),
    else ``<workdir>/cache/hashes``; a remote workdir cannot hold SQLite, so then the
    user's cache folder. None without a workdir (a plan made outside a build)."""
    folder = os.environ.get(ENV, "")
    if folder.lower() in _OFF:
        return None
    if not folder:
        if not workdir:
            return None
        folder = workdir_cache_dir(workdir, "hashes")
    return os.path.join(os.path.abspath(folder), DB_NAME)


def workdir_cache_dir(workdir: str, name: str) -> str:
    """``<workdir>/cache/<name>`` for a local workdir; for a remote one (which cannot hold
    files that SQLite or imaging libraries open by path) the user's cache folder,
    ``$XDG_CACHE_HOME/medcurate/<name>`` (default ``~/.cache``)."""
    if _is_local(workdir):
        return os.path.join(os.path.abspath(workdir.removeprefix("file://")), "cache", name)
    return user_cache_dir(name)


def user_cache_dir(name: str) -> str:
    """``$XDG_CACHE_HOME/medcurate/<name>`` (default ``~/.cache``): this machine's caches
    that belong to no workdir (not created here)."""
    home = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(home, "medcurate", name)


def open_cache(workdir: str) -> HashCache:
    """The hash cache of a workdir (a disabled one when there is none)."""
    return HashCache(cache_path(workdir))


# -- the cache of the plan being made ----------------------------------------------------
_ACTIVE: contextvars.ContextVar[HashCache | None] = contextvars.ContextVar("medcurate_hash_cache", default=None)


@contextlib.contextmanager
def activated(cache: HashCache) -> Iterator[HashCache]:
    """Make ``cache`` the one :func:`file_sha256` uses while planning (families call it
    deep inside their item listing, where no cache argument reaches)."""
    token = _ACTIVE.set(cache)
    try:
        yield cache
    finally:
        _ACTIVE.reset(token)


def active() -> HashCache | None:
    return _ACTIVE.get()


def file_sha256(uri: str, info: Mapping[str, Any] | None = None) -> str:
    """SHA-256 of a file through the active cache, or read when none is active."""
    cache = active()
    return cache.file_sha256(uri, info) if cache is not None else read_sha256(uri)
