"""Parquet shard writer: bounded memory, deterministic names, atomic publication.

Rows stream in as Arrow tables; the writer holds at most one row group in memory,
flushes it to an open Parquet file under a temporary name, and starts a new file when
the current one reaches the target size. A closed shard is renamed to its final name,
``<prefix>-<index>.parquet``, where the prefix is a hash of the partition's inputs and
the code version (not of the run), so rebuilding the same inputs writes the same names
and a crash never leaves a visible partial shard (temporary names start with ``_tmp``
and are never registered).
"""

from __future__ import annotations

import dataclasses
import posixpath
import uuid
from collections.abc import Sequence
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.core import url_to_fs

from converters.io import url_prefix
from curation.schema import SAMPLE_SCHEMA, validate_batch

DEFAULT_SHARD_BYTES = 256 * 1024 * 1024
#: a row group per 16 MiB of in-memory (Arrow) bytes — images compress ~2.5x in the zstd
#: pages, so ~6 MiB on disk: large enough for sequential range reads from object storage,
#: small enough that a DataLoader worker's peak memory (one decompressed group plus its
#: shuffle buffer) stays low and groups spread evenly over ranks x workers. Measured with
#: 2 and 4 workers on 2 cores: 1.1-1.6x the samples/s of 32 MiB groups, equal with none
#: (docs/benchmarks.md, "Reading (training loaders)")
DEFAULT_ROW_GROUP_BYTES = 16 * 1024 * 1024
TMP_PREFIX = "_tmp-"


@dataclasses.dataclass(frozen=True)
class ShardInfo:
    path: str  # fsspec uri of the final shard
    rows: int
    bytes: int


class ShardWriter:
    """Write canonical sample tables into size-bounded zstd Parquet shards.

    Use as a context manager; ``close()`` (or leaving the block without an exception)
    publishes the last shard; an exception discards the partial one.
    """

    def __init__(
        self,
        directory: str,
        name_prefix: str,
        *,
        target_bytes: int = DEFAULT_SHARD_BYTES,
        row_group_bytes: int = DEFAULT_ROW_GROUP_BYTES,
        schema: pa.Schema = SAMPLE_SCHEMA,
        validate: bool = True,
        compression_level: int = 3,
    ):
        if target_bytes <= 0 or row_group_bytes <= 0:
            raise ValueError("shard and row-group sizes must be positive")
        self.fs, self.directory = url_to_fs(directory)
        self._protocol_prefix = url_prefix(self.fs)
        self.name_prefix = name_prefix
        self.target_bytes = target_bytes
        self.row_group_bytes = min(row_group_bytes, target_bytes)
        self.schema = schema
        self.validate = validate
        self.compression_level = compression_level
        self.shards: list[ShardInfo] = []
        self._buffer: list[pa.Table] = []
        self._buffer_bytes = 0
        self._writer: pq.ParquetWriter | None = None
        self._handle: Any = None
        self._tmp_path: str | None = None
        self._rows_in_file = 0
        self._bytes_in_file = 0
        self.fs.makedirs(self.directory, exist_ok=True)

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def write(self, table: pa.Table) -> None:
        """Append rows; flushes row groups and rolls shards as sizes are reached."""
        if table.num_rows == 0:
            return
        if self.validate:
            validate_batch(table)
        table = table.cast(self.schema) if not table.schema.equals(self.schema) else table
        # take only the rows that fit the row group's remaining room, so a group ends near
        # its budget instead of at up to twice it (a buffer just under the budget plus a
        # whole budget-sized chunk); a single row larger than the budget is a group alone
        per_row = max(1, table.nbytes // max(table.num_rows, 1))
        offset = 0
        while offset < table.num_rows:
            room = (self.row_group_bytes - self._buffer_bytes) // per_row
            if room < 1 and self._buffer:
                self._flush_row_group()
                continue
            chunk = table.slice(offset, max(1, room))
            offset += chunk.num_rows
            self._buffer.append(chunk)
            self._buffer_bytes += chunk.nbytes
            if self._buffer_bytes >= self.row_group_bytes:
                self._flush_row_group()

    def flush_row_group(self) -> None:
        """End the current row group now (callers that want exact row-group boundaries)."""
        self._flush_row_group()

    def close_shard(self) -> None:
        """Publish the shard in progress now; the next rows start a new shard."""
        self._flush_row_group()
        self._finish_file()

    def close(self) -> list[ShardInfo]:
        self._flush_row_group()
        self._finish_file()
        return self.shards

    def abort(self) -> None:
        """Drop the shard in progress (already published shards stay)."""
        self._buffer, self._buffer_bytes = [], 0
        if self._writer is not None:
            try:
                self._writer.close()
                self._handle.close()
            finally:
                self._writer = None
                if self._tmp_path and self.fs.exists(self._tmp_path):
                    self.fs.rm(self._tmp_path)

    def _flush_row_group(self) -> None:
        if not self._buffer:
            return
        group = pa.concat_tables(self._buffer)
        self._buffer, self._buffer_bytes = [], 0
        if self._writer is None:
            self._open_file()
        assert self._writer is not None
        self._writer.write_table(group, row_group_size=group.num_rows)
        self._rows_in_file += group.num_rows
        self._bytes_in_file = self._bytes_written(self._bytes_in_file + group.nbytes)
        if self._bytes_in_file >= self.target_bytes:
            self._finish_file()

    def _bytes_written(self, estimate: int) -> int:
        """Compressed bytes in the open shard: the target is a size on disk, and images
        stored as unfiltered PNG compress ~2.5x in the zstd pages (``curation/images.py``)."""
        try:
            return int(self._handle.tell())
        except (AttributeError, OSError, ValueError):  # a sink that cannot tell: count in-memory bytes
            return estimate

    def _open_file(self) -> None:
        # one temporary name per (writer prefix, shard index): a rerun overwrites what a
        # crashed run left, so leftovers never accumulate. Two writers of one prefix would
        # truncate each other's file: builds of a dataset hold its lock (flows/locks.py)
        token = self.name_prefix or uuid.uuid4().hex
        self._tmp_path = posixpath.join(self.directory, f"{TMP_PREFIX}{token}-{len(self.shards):05d}.parquet")
        self._handle = self.fs.open(self._tmp_path, "wb")
        self._writer = pq.ParquetWriter(
            self._handle,
            self.schema,
            compression="zstd",
            compression_level=self.compression_level,
            write_statistics=["sample_id", "dataset", "source", "modality", "task", "split", "curriculum_stage"],
            write_page_index=True,
            # CRC32 per page: image bytes (unfiltered PNG, whose adler32 the fast decoder
            # skips) are covered end to end; the gate verifies every page before publishing
            write_page_checksum=True,
            use_dictionary=["dataset", "source", "modality", "task", "split"],
        )
        self._rows_in_file = 0
        self._bytes_in_file = 0

    def _finish_file(self) -> None:
        if self._writer is None:
            return
        self._writer.close()
        self._handle.close()
        self._writer = None
        final = posixpath.join(self.directory, f"{self.name_prefix}-{len(self.shards):05d}.parquet")
        if self.fs.exists(final):
            # never replace a finished shard: a published version may hold it (a rebuild
            # after cache/partitions was cleared, a partition redone after a crash between
            # its shard and its manifest), and Iceberg records each file's size
            final = posixpath.join(self.directory, f"{self.name_prefix}-{len(self.shards):05d}-{uuid.uuid4().hex[:8]}.parquet")
        assert self._tmp_path is not None
        self.fs.mv(self._tmp_path, final)
        size = int(self.fs.info(final).get("size") or 0)
        self.shards.append(ShardInfo(self._protocol_prefix + final, self._rows_in_file, size))
        self._tmp_path = None


def read_present_columns(path: str, columns: Sequence[str]) -> pa.Table:
    """Those of ``columns`` a Parquet file has (a shard of another family lacks some),
    read through ``ParquetFile`` (no dataset layer for one file)."""
    fs, inner = url_to_fs(path)
    with fs.open(inner, "rb") as handle:
        parquet = pq.ParquetFile(handle)
        return parquet.read(columns=[c for c in columns if c in parquet.schema_arrow.names])
