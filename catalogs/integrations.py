"""Hand a pinned version to Hugging Face ``datasets``, Ray Data and SQL engines.

Each function takes the version's shard list (``DatasetCatalog.files``), so what a job
reads is fixed when it starts; ``datasets`` and ``ray`` are imported only when called
(house rule: Ray belongs to flows/, except here where the point is to hand Ray data).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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
    filter: Any = None,  # noqa: A002
    **read_parquet_kwargs: Any,
) -> Any:
    """A ``ray.data.Dataset`` over the shards (``ray.data.read_parquet`` + ``filter(expr=)``).

    Ray Data refuses pyarrow filters on ``read_parquet``; it takes its own predicate
    expressions, which its optimiser pushes into the Parquet read. ``filter`` is a
    ``{column: value | [values]}`` mapping (translated here) or a ``ray.data.expressions``
    predicate. Ray must be initialised by the caller or starts locally on first use.
    """
    import ray.data

    fs, stripped = filesystem_for(paths)
    dataset = ray.data.read_parquet(
        stripped, filesystem=fs.get(), columns=list(columns) if columns else None, **read_parquet_kwargs
    )
    predicate = ray_predicate(filter)
    return dataset if predicate is None else dataset.filter(expr=predicate)


def ray_predicate(filter: Any) -> Any:  # noqa: A002
    """A Ray Data predicate from a ``{column: value | [values]}`` mapping (or a Ray Expr)."""
    if filter is None:
        return None
    if isinstance(filter, pads.Expression):
        raise TypeError(
            "Ray Data cannot take a pyarrow expression; pass {column: value | [values]} "
            "or a ray.data.expressions predicate (col('modality') == 'CT')"
        )
    if not isinstance(filter, Mapping):
        return filter
    from ray.data.expressions import col

    predicate = None
    for column, wanted in filter.items():
        as_filter({column: wanted})  # the same column/type checks as everywhere else
        term = col(column) == wanted if isinstance(wanted, str | int | float | bool) else col(column).is_in(list(wanted))
        predicate = term if predicate is None else predicate & term
    return predicate


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
