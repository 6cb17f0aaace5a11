"""Row-group planning and reading shared by the training loaders (no torch, no Ray here).

A loader's unit of work is a Parquet **row group** (~16 MiB, see ``curation.shards``),
not a file: a build often has fewer shards than there are DDP ranks × DataLoader
workers, and a row group is the smallest unit Parquet can read and prune on its own.
Planning reads only footers: the row groups a filter cannot match (by their min/max
statistics on ``modality``/``task``/``split``/...) are dropped before any data is read.
"""

from __future__ import annotations

import dataclasses
import os
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any, TypeAlias

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs
from fsspec.asyn import AsyncFileSystem
from fsspec.core import url_to_fs

from curation.schema import SAMPLE_SCHEMA

#: what ``filter=`` accepts: a pyarrow expression, or ``{column: value | [values]}``
FilterLike: TypeAlias = "pads.Expression | Mapping[str, Any] | None"


@dataclasses.dataclass(frozen=True)
class RowGroup:
    """One Parquet row group of a version: the unit split across ranks and workers."""

    path: str  # path as ``filesystem`` sees it (no protocol)
    index: int  # row-group number inside the file
    num_rows: int  # rows stored (before a row-level filter)


def as_filter(filter: FilterLike) -> pads.Expression | None:  # noqa: A002 - public word
    """A pyarrow expression from an expression or a ``{column: value or [values]}`` mapping.

    ``{"modality": "CT", "split": ["train", "val"]}`` means modality == CT and split in
    (train, val); the expression is pushed down to Parquet statistics and pages.
    """
    if filter is None or isinstance(filter, pads.Expression):
        return filter
    if not isinstance(filter, Mapping):
        raise TypeError(f"filter must be a pyarrow expression or a mapping, got {type(filter).__name__}")
    expression: pads.Expression | None = None
    for column, wanted in filter.items():
        if column not in SAMPLE_SCHEMA.names:
            raise KeyError(f"filter column {column!r} is not in the canonical schema ({', '.join(SAMPLE_SCHEMA.names)})")
        field = pads.field(column)
        if isinstance(wanted, str | int | float | bool):
            term = field == wanted
        else:
            term = field.isin(list(wanted))
        expression = term if expression is None else expression & term
    return expression


class FilesystemHandle:
    """A pyarrow filesystem that stays usable in forked DataLoader workers.

    s3fs (like every async fsspec filesystem) refuses to run in a forked child ("not
    fork-safe"); a worker therefore rebuilds it from its storage options on first use.
    """

    def __init__(self, filesystem: Any):
        self._source = filesystem
        self._pid = os.getpid()
        self._arrow = as_arrow_filesystem(filesystem)

    def get(self) -> pafs.FileSystem:
        if os.getpid() != self._pid and isinstance(self._source, AsyncFileSystem):
            fresh = type(self._source)(**self._source.storage_options)
            self._source, self._arrow, self._pid = fresh, as_arrow_filesystem(fresh), os.getpid()
        return self._arrow


def filesystem_for(paths: Sequence[str], filesystem: Any = None) -> tuple[FilesystemHandle, list[str]]:
    """(filesystem, stripped paths) for shard uris; native pyarrow for local files.

    pyarrow's own LocalFileSystem is used for local shards because wrapping fsspec's
    costs a Python call per read; remote stores (s3://, gs://) go through fsspec, which
    honours ``AWS_ENDPOINT_URL`` and the fsspec config. ``filesystem`` overrides (tests
    count bytes through a wrapping filesystem).
    """
    if not paths:
        return FilesystemHandle(filesystem if filesystem is not None else pafs.LocalFileSystem()), []
    fs, _ = url_to_fs(paths[0])
    stripped = [url_to_fs(p)[1] for p in paths]
    if filesystem is not None:
        return FilesystemHandle(filesystem), stripped
    protocol = fs.protocol[0] if isinstance(fs.protocol, tuple | list) else fs.protocol
    if protocol in ("file", "local"):
        return FilesystemHandle(pafs.LocalFileSystem()), stripped
    return FilesystemHandle(fs), stripped


def as_arrow_filesystem(filesystem: Any) -> pafs.FileSystem:
    """A pyarrow filesystem (fsspec ones are wrapped; both pickle to DataLoader workers)."""
    if isinstance(filesystem, pafs.FileSystem):
        return filesystem
    return pafs.PyFileSystem(pafs.FSSpecHandler(filesystem))


def plan_row_groups(paths: Sequence[str], filesystem: Any, filter: pads.Expression | None) -> list[RowGroup]:  # noqa: A002
    """The row groups of ``paths`` that ``filter`` may match, in (path, index) order."""
    if not paths:
        return []
    dataset = pads.dataset(list(paths), schema=SAMPLE_SCHEMA, format="parquet", filesystem=filesystem)
    groups: list[RowGroup] = []
    for fragment in dataset.get_fragments(filter=filter):
        for piece in fragment.split_by_row_group(filter=filter):
            for info in piece.row_groups:
                groups.append(RowGroup(piece.path, info.id, info.num_rows))
    return sorted(groups, key=lambda g: (g.path, g.index))


_FORMAT = pads.ParquetFileFormat()

#: rows a training stream's shuffle buffer holds at most
DEFAULT_SHUFFLE_BUFFER = 512
#: payload bytes a stream's shuffle buffer holds at most: 256 CT slices of 512×512 uint8
#: (stored as unfiltered PNG, 256 KiB each); smaller rows (128×128 slices, text) stay
#: bounded by ``DEFAULT_SHUFFLE_BUFFER`` rows first
DEFAULT_SHUFFLE_BUFFER_BYTES = 64 * 2**20

#: parsed footers a reading process keeps (a footer parses to ~50 KiB per row group:
#: ~1.8 MiB for a shard of 35 row groups)
FOOTER_CACHE_FILES = 8


class FooterCache:
    """Parsed Parquet footers of the last few files a process read, by path.

    Without it every row-group read parses its file's footer again: ~1.5 ms for a shard
    of 35 row groups (the footer grows with the row-group count, so smaller row groups
    pay more), and on object stores one more request per row group. Entries belong to
    one process and one filesystem object: a forked DataLoader worker (which gets its own
    filesystem, see :class:`FilesystemHandle`) starts empty, and pickling drops them.
    """

    def __init__(self, max_files: int = FOOTER_CACHE_FILES):
        self.max_files = max_files
        self._fragments: OrderedDict[str, pads.ParquetFileFragment] = OrderedDict()
        self._owner: tuple[int, int] = (os.getpid(), 0)

    def __getstate__(self) -> dict[str, Any]:
        return {"max_files": self.max_files}  # parsed footers stay in their process

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.max_files = int(state["max_files"])
        self._fragments = OrderedDict()
        self._owner = (os.getpid(), 0)

    def __len__(self) -> int:
        return len(self._fragments)

    def fragment(self, path: str, filesystem: Any) -> pads.ParquetFileFragment:
        """The whole-file fragment of ``path`` with its footer parsed (read once)."""
        owner = (os.getpid(), id(filesystem))
        if owner != self._owner:
            self._fragments.clear()
            self._owner = owner
        cached = self._fragments.get(path)
        if cached is not None:
            self._fragments.move_to_end(path)
            return cached
        fragment = _FORMAT.make_fragment(path, filesystem=filesystem)
        fragment.ensure_complete_metadata()
        self._fragments[path] = fragment
        while len(self._fragments) > self.max_files:
            self._fragments.popitem(last=False)
        return fragment


def read_row_group(
    group: RowGroup,
    filesystem: Any,
    columns: Sequence[str] | None,
    filter: pads.Expression | None,  # noqa: A002
    *,
    use_threads: bool = True,
    footers: FooterCache | None = None,
) -> pa.Table:
    """One row group, projected and filtered (pages that cannot match are skipped).

    ``use_threads=False`` in processes that already run one per core (DataLoader
    workers): Arrow's thread pool on top of them only adds contention. ``footers``
    reuses parsed footers across row groups of the same file.
    """
    if footers is not None:
        fragment = footers.fragment(group.path, filesystem).subset(row_group_ids=[group.index])
    else:
        fragment = _FORMAT.make_fragment(group.path, filesystem=filesystem, row_groups=[group.index])
    return fragment.to_table(
        schema=SAMPLE_SCHEMA, columns=list(columns) if columns else None, filter=filter, use_threads=use_threads
    )
