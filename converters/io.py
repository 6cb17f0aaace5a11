"""Reading inputs through fsspec (local paths, ``s3://`` and friends)."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import fsspec
from fsspec.core import url_to_fs

_Item = TypeVar("_Item")
_Read = TypeVar("_Read")
#: concurrent reads of many small files (I/O: latency on object storage, not CPU)
READ_THREADS = 8


def read_each(read: Callable[[_Item], _Read], items: Sequence[_Item]) -> list[_Read]:
    """``[read(item) for item in items]``, several at a time: for the many small reads a
    build makes of its shards' footers and side files (each a round trip on object
    storage; Arrow's Parquet reads release the GIL)."""
    if len(items) < 2:
        return [read(item) for item in items]
    with ThreadPoolExecutor(max_workers=READ_THREADS) as pool:
        return list(pool.map(read, items))


def read_bytes(uri: str) -> bytes:
    fs, path = url_to_fs(uri)
    with fs.open(path, "rb") as fh:
        return fh.read()


def url_prefix(fs: Any) -> str:
    """What goes before a path of ``fs`` to make it a URL again: ``""`` for the local
    disk (plain paths), ``"s3://"`` etc. otherwise (``url_to_fs`` drops it)."""
    protocol = fs.protocol[0] if isinstance(fs.protocol, tuple | list) else fs.protocol
    return "" if protocol in ("file", "local") else f"{protocol}://"


def is_local(uri: str) -> bool:
    fs, _ = url_to_fs(uri)
    return "file" in fs.protocol or "local" in fs.protocol


def local_path(uri: str) -> str:
    fs, path = url_to_fs(uri)
    return str(path)


@contextlib.contextmanager
def as_local_file(uri: str, companions: tuple[str, ...] = ()) -> Iterator[str]:
    """A local path for libraries that only read paths (SimpleITK).

    Local files are used in place; remote ones (with companion files such as an MHD's
    ``.raw``) are copied into a temporary folder that is removed afterwards.
    """
    if is_local(uri):
        yield local_path(uri)
        return
    tmp = tempfile.mkdtemp(prefix="medcurate-")
    try:
        for each in (uri, *companions):
            target = os.path.join(tmp, os.path.basename(local_path(each)))
            with fsspec.open(each, "rb") as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst)
        yield os.path.join(tmp, os.path.basename(local_path(uri)))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def member_path(uri: str) -> str:
    """The file path a uri names, for its extension and stem: the archive member of a
    chained ``zip://ct/a.nrrd::/data/x.zip`` uri (``ct/a.nrrd``), else the uri itself."""
    if "::" in uri:
        inner = uri.split("::", 1)[0]
        return inner.split("://", 1)[1] if "://" in inner else inner
    return uri


def is_hidden(key: str) -> bool:
    """Whether a '/'-separated path is not an input: a hidden file or folder (``.git/``,
    ``.DS_Store``, macOS ``._*`` resource forks) or a zip's ``__MACOSX/`` folder."""
    return any((part.startswith(".") and part not in (".", "..")) or part == "__MACOSX" for part in key.split("/"))


def local_tree(root: str) -> list[tuple[str, int]]:
    """(path, size) of every file under a local folder, sorted, links followed, hidden
    entries (:func:`is_hidden`) skipped.

    Our own walk rather than fsspec's ``find``, which reports a link as type ``other``
    and does not descend into linked folders. Each folder is listed once, by its real
    path, so a link loop (``a/b -> a``) or two links to one folder add nothing twice; a
    link to a folder that contains ``root`` (``a/up -> ..``) is a loop too, and is not
    followed out of the source.
    """
    found: list[tuple[str, int]] = []
    real_root = os.path.realpath(root)
    seen: set[str] = set()
    pending = [root]
    while pending:
        folder = pending.pop()
        real = os.path.realpath(folder)
        if real in seen or (folder != root and real_root.startswith(real.rstrip("/") + "/")):
            continue
        seen.add(real)
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue  # unreadable folder (permissions): nothing in it can be read either
        for entry in entries:
            if is_hidden(entry.name):
                continue
            try:
                if entry.is_dir():  # follows links
                    pending.append(entry.path)
                elif entry.is_file():
                    found.append((entry.path, entry.stat().st_size))
                elif entry.is_symlink():  # dangling: listed, rejected as unreadable when read
                    found.append((entry.path, 0))
            except OSError:
                found.append((entry.path, 0))
    return sorted(found)
