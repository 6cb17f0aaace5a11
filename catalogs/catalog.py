"""The dataset catalog: Iceberg tables whose snapshots are builds and whose tags are versions.

pyiceberg's SQL catalog keeps the table metadata (SQLite file in the workdir by
default; a Postgres URI works the same) and the warehouse holds data on any fsspec
path. A build registers its shards in place, in **one** snapshot whose data files are
exactly that build's shards: new shards are added, shards of the previous build that
are no longer part of it are removed from the table (never from older snapshots, whose
files stay on disk). The snapshot is tagged with the version and its summary carries
the run id, the pipeline version and the counts. A reader pinned to a tag keeps
reading the same files after later builds.
"""

from __future__ import annotations

import builtins
import dataclasses
import datetime as dt
import hashlib
import logging
import os
import posixpath
import re
from collections.abc import Collection, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.dataset as pads
from fsspec.core import url_to_fs

from catalogs.reading import (
    DEFAULT_SHUFFLE_BUFFER,
    DEFAULT_SHUFFLE_BUFFER_BYTES,
    FilterLike,
    as_filter,
)
from curation.schema import SAMPLE_SCHEMA

# pyiceberg warns once per nested column that Parquet keeps no statistics for it
logging.getLogger("pyiceberg.io.pyarrow").setLevel(logging.ERROR)

NAMESPACE = "medcurate"
SUMMARY_PREFIX = "medcurate."
_NAME = re.compile(r"[a-z][a-z0-9_]{0,62}")
_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class CatalogError(Exception):
    """A catalog request that cannot be answered (unknown dataset/version, bad name)."""


@dataclasses.dataclass(frozen=True)
class VersionInfo:
    version: str
    snapshot_id: int
    published_at: dt.datetime
    summary: dict[str, str]

    @property
    def medcurate(self) -> dict[str, str]:
        """The product's own summary keys, without the ``medcurate.`` prefix."""
        return {k[len(SUMMARY_PREFIX):]: v for k, v in self.summary.items() if k.startswith(SUMMARY_PREFIX)}


@dataclasses.dataclass(frozen=True)
class PublishResult:
    name: str
    version: str
    snapshot_id: int
    added: list[str]
    removed: list[str]
    unchanged: bool  # True when the build had exactly the files of the current snapshot


@dataclasses.dataclass(frozen=True)
class ExpireResult:
    name: str
    kept: list[str]  # versions that stay
    dropped: list[str]  # versions removed (or, with ``dry_run``, that would be)
    expired_snapshots: list[int]
    released_files: list[str]  # data files only the expired snapshots held (``catalog clean`` removes them)
    dry_run: bool


def check_dataset_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise CatalogError(
            f"dataset name {name!r} is not valid: use lower-case letters, digits and '_', starting with a letter"
        )
    return name


def _natural_key(version: str) -> list[tuple[int, int | str]]:
    """``v10`` after ``v9``; numbers before text in each position, so keys always compare."""
    return [(0, int(part)) if part.isdigit() else (1, part) for part in re.split(r"(\d+)", version) if part]


def check_version_name(version: str) -> str:
    if not _VERSION.fullmatch(version) or version == "latest":
        raise CatalogError(
            f"version {version!r} is not valid: letters, digits, '.', '_' and '-', not 'latest', at most 64 characters"
        )
    return version


def default_locations(workdir: str) -> tuple[str, str]:
    """(catalog uri, warehouse) under a workdir, as DESIGN.md defines them."""
    fs, path = url_to_fs(workdir)
    protocol = fs.protocol[0] if isinstance(fs.protocol, tuple | list) else fs.protocol
    if protocol in ("file", "local"):
        path = os.path.abspath(path)
        return f"sqlite:///{path}/catalog.db", f"{path}/warehouse"
    # a remote workdir keeps the catalog database locally (SQLite cannot live on S3)
    local = os.path.abspath(os.environ.get("MEDCURATE_CATALOG_DIR", "./medcurate-catalog"))
    return f"sqlite:///{local}/catalog.db", f"{protocol}://{path}/warehouse"


def s3_properties_from_env(warehouse: str) -> dict[str, str]:
    """pyiceberg ``s3.*`` properties from the standard AWS variables, for an s3:// warehouse.

    s3fs (our shard writer and loaders) reads ``AWS_ENDPOINT_URL`` and the credentials
    from the environment, but pyiceberg's FileIO does not pick up the endpoint; without
    this a MinIO/moto/on-prem endpoint works for shards and fails for table metadata.
    """
    if not warehouse.startswith(("s3://", "s3a://")):
        return {}
    env = os.environ
    mapping = {
        "s3.endpoint": env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL"),
        "s3.access-key-id": env.get("AWS_ACCESS_KEY_ID"),
        "s3.secret-access-key": env.get("AWS_SECRET_ACCESS_KEY"),
        "s3.session-token": env.get("AWS_SESSION_TOKEN"),
        "s3.region": env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION"),
    }
    return {k: v for k, v in mapping.items() if v}


class DatasetCatalog:
    """Versioned datasets in an Iceberg SQL catalog (see the module docstring)."""

    def __init__(self, uri: str, warehouse: str, *, properties: dict[str, str] | None = None):
        from pyiceberg.catalog.sql import SqlCatalog

        self.uri = uri
        self.warehouse = warehouse.rstrip("/")
        if uri.startswith("sqlite:///"):
            os.makedirs(os.path.dirname(uri[len("sqlite:///"):]) or ".", exist_ok=True)
        fs, path = url_to_fs(self.warehouse)
        fs.makedirs(path, exist_ok=True)
        warehouse_uri = self.warehouse if "://" in self.warehouse else "file://" + os.path.abspath(self.warehouse)
        properties = {**s3_properties_from_env(self.warehouse), **(properties or {})}
        self._catalog = SqlCatalog("medcurate", uri=uri, warehouse=warehouse_uri, **properties)
        self._catalog.create_namespace_if_not_exists(NAMESPACE)

    # -- locations -------------------------------------------------------------------
    def data_dir(self, name: str) -> str:
        """Where a dataset's shards live (named by partition key, shared by versions, never replaced)."""
        return dataset_data_dir(self.warehouse, name)

    def artifacts_dir(self, name: str, version: str) -> str:
        """Where a version's evidence lives (dataset card, validation results)."""
        return posixpath.join(self.warehouse, NAMESPACE, check_dataset_name(name), "versions", version)

    # -- writing ---------------------------------------------------------------------
    def _table(self, name: str, *, create: bool = False) -> Any:
        from pyiceberg.exceptions import NoSuchTableError

        identifier = (NAMESPACE, check_dataset_name(name))
        try:
            return self._catalog.load_table(identifier)
        except NoSuchTableError:
            if not create:
                known = ", ".join(self.list()) or "none yet"
                raise CatalogError(
                    f"no dataset named {name!r} in the catalog ({self.uri}); its datasets: {known} "
                    f"(another catalog? check --workdir / --catalog-uri)"
                ) from None
        from pyiceberg.table import TableProperties

        table = self._catalog.create_table(identifier, schema=SAMPLE_SCHEMA)
        with table.transaction() as tx:
            tx.set_properties(
                **{TableProperties.DEFAULT_NAME_MAPPING: table.metadata.schema().name_mapping.model_dump_json()}  # type: ignore[arg-type]
            )
        return self._catalog.load_table(identifier)

    def next_version(self, name: str) -> str:
        """``v<N+1>`` after the highest ``v<N>`` tag (``v1`` for a new dataset)."""
        numbers = [int(v.version[1:]) for v in self._versions_or_empty(name) if re.fullmatch(r"v\d+", v.version)]
        return f"v{max(numbers, default=0) + 1}"

    def publish(
        self,
        name: str,
        shard_paths: Sequence[str],
        *,
        version: str | None = None,
        summary: dict[str, Any] | None = None,
    ) -> PublishResult:
        """Commit one snapshot whose data files are exactly ``shard_paths``, tagged ``version``.

        When the shards are exactly those of the current snapshot no snapshot is made;
        the version tag (if new) then points at the current snapshot.
        """
        from pyiceberg.io.pyarrow import parquet_file_to_data_file

        table = self._table(name, create=True)
        explicit = version is not None
        version = self._check_new_version(table, name, version) if version else self.next_version(name)
        wanted = list(dict.fromkeys(shard_paths))
        current = {task.file.file_path: task.file for task in self._scan_tasks(table, None)}
        to_add = [p for p in wanted if p not in current]
        to_remove = [p for p in current if p not in set(wanted)]
        properties = {f"{SUMMARY_PREFIX}{k}": str(v) for k, v in (summary or {}).items()}
        properties[f"{SUMMARY_PREFIX}version"] = version
        if not to_add and not to_remove and table.current_snapshot() is not None:
            # nothing changed: no snapshot; an explicit version still names the current data,
            # an automatic one is not minted (the latest version already names it)
            snapshot_id = table.current_snapshot().snapshot_id
            existing = None if explicit else self._latest_tag_of(table, snapshot_id)
            if existing is None:
                # an explicit version names the current data; so does v<N+1> when the
                # current snapshot has no tag yet (a publish stopped between commit and tag)
                table.manage_snapshots().create_tag(snapshot_id, version).commit()
            return PublishResult(name, existing or version, snapshot_id, [], [], unchanged=True)
        with (
            table.transaction() as tx,
            tx.update_snapshot(snapshot_properties=properties).overwrite() as overwrite,
        ):
            for path in to_remove:
                overwrite.delete_data_file(current[path])
            for path in to_add:
                overwrite.append_data_file(parquet_file_to_data_file(table.io, tx.table_metadata, path))
        table = self._table(name)
        snapshot_id = table.current_snapshot().snapshot_id
        table.manage_snapshots().create_tag(snapshot_id, version).commit()
        return PublishResult(name, version, snapshot_id, to_add, to_remove, unchanged=False)

    def check_new_version(self, name: str, version: str) -> str:
        """``version``, when it is a valid name not yet published for ``name``; else a
        CatalogError that says which versions exist. A build checks this before it
        converts anything (``publish`` checks again when it commits)."""
        if not self.exists(name):
            return check_version_name(version)
        return self._check_new_version(self._table(name), name, version)

    def _check_new_version(self, table: Any, name: str, version: str) -> str:
        version = check_version_name(version)
        if version in table.metadata.refs:
            published = ", ".join(v.version for v in self._versions_or_empty(name)) or "none"
            raise CatalogError(
                f"{name}@{version} already exists (published versions: {published}); choose another --version, "
                f"or leave it out for v<N+1>"
            )
        return version

    @staticmethod
    def _latest_tag_of(table: Any, snapshot_id: int) -> str | None:
        tags = [n for n, r in table.metadata.refs.items() if r.snapshot_ref_type == "tag" and r.snapshot_id == snapshot_id]
        return max(tags, key=_natural_key) if tags else None

    def expire_versions(
        self, name: str, *, keep_last: int, keep: Collection[str] = (), dry_run: bool = False
    ) -> ExpireResult:
        """Drop all but the last ``keep_last`` versions of ``name`` (and those in ``keep``),
        then expire every snapshot no remaining version names, with pyiceberg's
        ``expire_snapshots``.

        Why: a nightly rebuild publishes a version a night, and every snapshot keeps its
        metadata (and, through ``catalog clean``, its data files) for ever. A version is a
        tag; removing the tag makes its snapshot unprotected, and expiring the snapshot
        drops it from the table's metadata. The current snapshot is never expired
        (Iceberg protects a branch head), nor a snapshot a kept version names; untagged
        snapshots (a publish stopped between its commit and its tag) go as well. Data
        files are not touched here: ``catalog clean`` then removes the files no snapshot
        holds. The versions' evidence (``versions/<V>/``: the card) is kept for audit.
        """
        if keep_last < 1:
            raise CatalogError(f"keep_last must be at least 1 (the latest version always stays), got {keep_last}")
        versions = self.versions(name)
        known = {v.version for v in versions}
        unknown = sorted(set(keep) - known)
        if unknown:
            raise CatalogError(
                f"{name} has no version {', '.join(map(repr, unknown))} to keep; published versions: "
                f"{', '.join(v.version for v in versions) or 'none'}"
            )
        kept = {v.version for v in versions[-keep_last:]} | set(keep)
        dropped = [v.version for v in versions if v.version not in kept]
        table = self._table(name)
        current = table.current_snapshot()
        protected = {v.snapshot_id for v in versions if v.version in kept} | ({current.snapshot_id} if current else set())
        files = self._files_by_snapshot(table)
        expired = [snapshot_id for snapshot_id in files if snapshot_id not in protected]
        still_held = {path for snapshot_id, paths in files.items() if snapshot_id in protected for path in paths}
        released = sorted({path for snapshot_id in expired for path in files[snapshot_id]} - still_held)
        if not dry_run:
            if dropped:
                tags = table.manage_snapshots()
                for version in dropped:
                    tags = tags.remove_tag(version)
                tags.commit()
            if expired:
                self._table(name).maintenance.expire_snapshots().by_ids(expired).commit()
        return ExpireResult(name, [v.version for v in versions if v.version in kept], dropped, expired, released, dry_run)

    # -- reading ---------------------------------------------------------------------
    def list(self) -> builtins.list[str]:
        return sorted(ident[-1] for ident in self._catalog.list_tables(NAMESPACE))

    def exists(self, name: str) -> bool:
        return name in self.list()

    def _versions_or_empty(self, name: str) -> builtins.list[VersionInfo]:
        try:
            return self.versions(name)
        except CatalogError:
            return []

    def versions(self, name: str) -> builtins.list[VersionInfo]:
        """Published versions (tags), oldest first."""
        table = self._table(name)
        infos = []
        for ref_name, ref in table.metadata.refs.items():
            if ref.snapshot_ref_type != "tag":
                continue
            snap = table.snapshot_by_id(ref.snapshot_id)
            if snap is None:
                continue
            summary = dict(snap.summary.additional_properties) if snap.summary else {}
            if snap.summary is not None:
                summary["operation"] = str(snap.summary.operation.value)
            infos.append(
                VersionInfo(
                    ref_name,
                    ref.snapshot_id,
                    dt.datetime.fromtimestamp(snap.timestamp_ms / 1000, tz=dt.UTC),
                    summary,
                )
            )
        # tags of one snapshot (a rebuild that changed nothing) in the order v2 < v10
        return sorted(infos, key=lambda v: (v.published_at, v.snapshot_id, _natural_key(v.version)))

    def version_info(self, name: str, version: str | None = None) -> VersionInfo:
        """The named version, or the latest published when ``version`` is None/'latest'."""
        versions = self.versions(name)
        if not versions:
            raise CatalogError(f"dataset {name!r} has no published version")
        if version in (None, "latest"):
            return versions[-1]
        for info in versions:
            if info.version == version:
                return info
        known = ", ".join(v.version for v in versions)
        raise CatalogError(f"{name} has no version {version!r}; published versions: {known}")

    def history(self, name: str) -> builtins.list[dict[str, Any]]:
        """Every snapshot (build) of the table, oldest first, with the tags that point at it."""
        table = self._table(name)
        tags: dict[int, list[str]] = {}
        for ref_name, ref in table.metadata.refs.items():
            if ref.snapshot_ref_type == "tag":
                tags.setdefault(ref.snapshot_id, []).append(ref_name)
        rows = []
        for snap in table.metadata.snapshots:
            summary = dict(snap.summary.additional_properties) if snap.summary else {}
            rows.append(
                {
                    "snapshot_id": snap.snapshot_id,
                    "published_at": dt.datetime.fromtimestamp(snap.timestamp_ms / 1000, tz=dt.UTC),
                    "operation": str(snap.summary.operation.value) if snap.summary else "",
                    "versions": sorted(tags.get(snap.snapshot_id, [])),
                    "summary": summary,
                }
            )
        return rows

    def _scan_tasks(self, table: Any, snapshot_id: int | None) -> builtins.list[Any]:
        if snapshot_id is None and table.current_snapshot() is None:
            return []
        return list(table.scan(snapshot_id=snapshot_id).plan_files())

    def files_of_every_snapshot(self, name: str) -> set[str]:
        """Every data file a snapshot still in the table's metadata holds: every version,
        tagged or not, since any of them can still be read (time travel) until expired."""
        return {path for paths in self._files_by_snapshot(self._table(name)).values() for path in paths}

    def _files_by_snapshot(self, table: Any) -> dict[int, set[str]]:
        """The data files of each snapshot in the table's metadata, oldest first."""
        return {
            snap.snapshot_id: {task.file.file_path for task in self._scan_tasks(table, snap.snapshot_id)}
            for snap in table.metadata.snapshots
        }

    def files(self, name: str, version: str | None = None) -> builtins.list[str]:
        """Absolute shard paths of a version, sorted (what SQL engines and loaders read)."""
        info = self.version_info(name, version)
        table = self._table(name)
        return sorted(task.file.file_path for task in self._scan_tasks(table, info.snapshot_id))

    def dataset(self, name: str, version: str | None = None) -> pads.Dataset:
        """A pyarrow dataset over a version's shards, in the canonical schema."""
        paths = self.files(name, version)
        if not paths:
            return pads.dataset(SAMPLE_SCHEMA.empty_table())
        fs, _ = url_to_fs(paths[0])
        stripped = [url_to_fs(p)[1] for p in paths]
        return pads.dataset(stripped, schema=SAMPLE_SCHEMA, format="parquet", filesystem=fs)

    def to_arrow(
        self,
        name: str,
        version: str | None = None,
        columns: builtins.list[str] | None = None,
        filter: FilterLike = None,  # noqa: A002 - the public API's word
    ) -> pa.Table:
        """A version as one Arrow table (projection and predicate pushed down to Parquet);
        ``filter`` is a pyarrow expression or ``{column: value | [values]}``, as everywhere."""
        return self.dataset(name, version).to_table(columns=columns, filter=as_filter(filter))

    def diff(self, name: str, a: str, b: str) -> dict[str, builtins.list[str]]:
        """Sample ids added, removed and changed (same id, other content) from ``a`` to ``b``.

        Content is every column but the run's own stamp (``provenance.run_id`` and
        ``created_at``): a label corrected in a table, a caption rewritten or a source URI
        hashed all count, as do new pixels. A data file both versions hold has the same
        rows in both, so only the files one version does not share with the other are
        read — a 1 % rebuild reads about 1 % of the data.
        """
        files_a, files_b = set(self.files(name, a)), set(self.files(name, b))
        left, right = _row_digests(sorted(files_a - files_b)), _row_digests(sorted(files_b - files_a))
        return {
            "added": sorted(set(right) - set(left)),
            "removed": sorted(set(left) - set(right)),
            "changed": sorted(k for k in set(left) & set(right) if left[k] != right[k]),
        }

    # -- training jobs (thin: the work is in lineage.py, torch_loader.py, mixtures.py,
    #    integrations.py, imported here lazily so the catalog needs no torch/datasets/ray)
    def lineage(self, name: str, version: str | None = None) -> Any:
        """Run id, recipe, pipeline version, source hashes and gate result of a version."""
        from catalogs.lineage import build_lineage

        info = self.version_info(name, version)
        return build_lineage(name, info, self.to_arrow(name, info.version, columns=["source_sha256"]))

    def to_torch(
        self,
        name: str,
        version: str | None = None,
        *,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        columns: builtins.list[str] | None = None,
        filter: Any = None,  # noqa: A002 - the public API's word
        shuffle: bool = True,
        shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER,
        shuffle_buffer_bytes: int | None = DEFAULT_SHUFFLE_BUFFER_BYTES,
        decode: bool = True,
        transform: Any = None,
        filesystem: Any = None,
    ) -> Any:
        """A torch ``IterableDataset`` over the version (pinned now: later builds change nothing).

        The shuffle buffer holds at most ``shuffle_buffer`` rows and ``shuffle_buffer_bytes``
        of payload (None: rows only). See ``catalogs/torch_loader.py`` for the
        split/shuffle/resume policy and docs/training.md for DDP use.
        """
        from catalogs.torch_loader import CatalogIterableDataset

        info = self.version_info(name, version)
        return CatalogIterableDataset(
            self.files(name, info.version),
            name=name,
            version=info.version,
            rank=rank,
            world_size=world_size,
            seed=seed,
            columns=columns,
            filter=filter,
            shuffle=shuffle,
            shuffle_buffer=shuffle_buffer,
            shuffle_buffer_bytes=shuffle_buffer_bytes,
            decode=decode,
            transform=transform,
            filesystem=filesystem,
        )

    def mixture(
        self,
        components: Sequence[Any],
        *,
        num_samples: int | None = None,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        **torch_kwargs: Any,
    ) -> Any:
        """A weighted mixture of datasets/versions (``MixtureComponent`` or ``(name, version, weight)``)."""
        from catalogs.mixtures import MixtureComponent, MixtureIterableDataset

        parts = [c if isinstance(c, MixtureComponent) else MixtureComponent(*c) for c in components]
        datasets = [
            self.to_torch(p.name, p.version, rank=rank, world_size=world_size, seed=seed, filter=p.filter, **torch_kwargs)
            for p in parts
        ]
        labels = [p.label or f"{d.name}@{d.version}" for p, d in zip(parts, datasets, strict=True)]
        return MixtureIterableDataset(
            datasets,
            [p.weight for p in parts],
            labels=labels,
            num_samples=num_samples,
            seed=seed,
            rank=rank,
            world_size=world_size,
        )

    def to_hf(
        self,
        name: str,
        version: str | None = None,
        *,
        columns: builtins.list[str] | None = None,
        filter: Any = None,  # noqa: A002
        streaming: bool = False,
    ) -> Any:
        """A Hugging Face ``datasets.Dataset`` (``IterableDataset`` if streaming) of the version."""
        from catalogs.integrations import to_hf

        return to_hf(self.files(name, version), columns=columns, filter=filter, streaming=streaming)

    def to_ray(
        self,
        name: str,
        version: str | None = None,
        *,
        columns: builtins.list[str] | None = None,
        filter: Any = None,  # noqa: A002
        **read_parquet_kwargs: Any,
    ) -> Any:
        """A Ray Data dataset of the version (``ray.data.read_parquet`` over its shards)."""
        from catalogs.integrations import to_ray

        return to_ray(self.files(name, version), columns=columns, filter=filter, **read_parquet_kwargs)

    def to_duckdb(self, name: str, version: str | None = None, connection: Any = None, view: str | None = None) -> Any:
        """A DuckDB connection with the version as a view (named ``view``, default ``name``)."""
        from catalogs.integrations import duckdb_view

        return duckdb_view(self.files(name, version), view or name, connection)

#: what differs between two builds of the same content: not part of a sample's content
_RUN_STAMP = ("run_id", "created_at")


def _row_digests(paths: Sequence[str]) -> dict[str, str]:
    """sample_id → a digest of the row's content (see :meth:`DatasetCatalog.diff`), file by file."""
    digests: dict[str, str] = {}
    for path in paths:
        fs, inner = url_to_fs(path)
        # in the canonical schema, as readers see it: a shard written before a column was
        # added reads with it null, and does not differ from a new one by that alone
        table = pads.dataset(inner, schema=SAMPLE_SCHEMA, format="parquet", filesystem=fs).to_table()
        provenance = table.column("provenance").combine_chunks()
        kept = [f.name for f in provenance.type if f.name not in _RUN_STAMP]
        content = table.set_column(
            table.schema.get_field_index("provenance"),
            "provenance",
            pa.StructArray.from_arrays([provenance.field(f) for f in kept], names=kept),
        )
        for row in content.to_pylist():
            digests[row["sample_id"]] = hashlib.sha256(repr(sorted(row.items())).encode()).hexdigest()
    return digests


def dataset_data_dir(warehouse: str, name: str) -> str:
    """Where a dataset's shards live in a warehouse (no catalog needed to know it)."""
    return posixpath.join(warehouse.rstrip("/"), NAMESPACE, check_dataset_name(name), "data")


def open_catalog(
    uri: str | None = None,
    warehouse: str | None = None,
    *,
    workdir: str | None = None,
    properties: dict[str, str] | None = None,
) -> DatasetCatalog:
    """The catalog from arguments, then ``MEDCURATE_CATALOG_URI``/``MEDCURATE_WAREHOUSE``,
    then the defaults under the workdir (``$MEDCURATE_HOME`` or ``./medcurate-data``)."""
    workdir = workdir or os.environ.get("MEDCURATE_HOME") or "./medcurate-data"
    default_uri, default_warehouse = default_locations(workdir)
    uri = uri or os.environ.get("MEDCURATE_CATALOG_URI") or default_uri
    warehouse = warehouse or os.environ.get("MEDCURATE_WAREHOUSE") or default_warehouse
    return DatasetCatalog(uri, warehouse, properties=properties)
