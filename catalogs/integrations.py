"""Hand a pinned version to Hugging Face ``datasets``, Ray Data and SQL engines.

Each function takes the version's shard list (``DatasetCatalog.files``), so what a job
reads is fixed when it starts; ``datasets`` and ``ray`` are imported only when called
(house rule: Ray belongs to flows/, except here where the point is to hand Ray data).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyarrow.dataset as pads

from catalogs.reading import FilterLike, as_filter, filesystem_for


def arrow_dataset(paths: Sequence[str], filesystem: Any = None) -> pads.Dataset:
    """A pyarrow dataset over shard uris (native local filesystem, fsspec otherwise)."""
    from curation.schema import SAMPLE_SCHEMA

    fs, stripped = filesystem_for(paths, filesystem)
    if not stripped:
        return pads.dataset(SAMPLE_SCHEMA.empty_table())
    return pads.dataset(stripped, schema=SAMPLE_SCHEMA, format="parquet", filesystem=fs.get())


def to_hf(
    paths: Sequence[str],
    *,
    columns: Sequence[str] | None = None,
    filter: FilterLike = None,  # noqa: A002 - the public API's word
    streaming: bool = False,
) -> Any:
    """A ``datasets.Dataset`` (or ``IterableDataset`` when ``streaming``) of the shards.

    Non-streaming reads through pyarrow with the filter pushed down and wraps the Arrow
    table (no copy into the HF cache); streaming yields row by row from the shards with
    the same projection and filter, for versions larger than memory.
    """
    import datasets

    expression = as_filter(filter)
    cols = list(columns) if columns else None
    if not streaming:
        table = arrow_dataset(paths).to_table(columns=cols, filter=expression)
        return datasets.Dataset(table)

    paths_list = list(paths)

    def rows() -> Any:
        for batch in arrow_dataset(paths_list).to_batches(columns=cols, filter=expression, batch_size=256):
            yield from batch.to_pylist()

    return datasets.IterableDataset.from_generator(rows)


def to_ray(
    paths: Sequence[str],
    *,
    columns: Sequence[str] | None = None,
    filter: FilterLike = None,  # noqa: A002
    **read_parquet_kwargs: Any,
) -> Any:
    """A ``ray.data.Dataset`` over the shards (``ray.data.read_parquet``).

    The filter is passed to pyarrow's scanner (row-group and page pruning in the Ray read
    tasks). Ray must be initialised by the caller or starts locally on first use.
    """
    import ray.data

    fs, stripped = filesystem_for(paths)
    expression = as_filter(filter)
    if expression is not None:
        read_parquet_kwargs["filter"] = expression
    return ray.data.read_parquet(
        stripped, filesystem=fs.get(), columns=list(columns) if columns else None, **read_parquet_kwargs
    )


def duckdb_view(paths: Sequence[str], view: str, connection: Any = None, *, filesystem: Any = None) -> Any:
    """A DuckDB connection on which ``view`` scans the shards through pyarrow.

    DuckDB's own ``read_parquet`` needs its httpfs extension for object stores (a
    download at run time); scanning the pyarrow dataset works for local and s3://
    warehouses alike, with projection and filters pushed into the scan.
    """
    import duckdb

    con = connection if connection is not None else duckdb.connect()
    con.register(view, arrow_dataset(paths, filesystem))
    return con
