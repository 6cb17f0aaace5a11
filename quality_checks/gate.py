"""The quality gate: validate a build's shards, quarantine failures, decide publication.

``gate_build`` validates every shard (schema check, metrics, the common suite and the
family suite), moves each failing shard with its validation result JSON under
``<workdir>/quarantine/<build_id>/``, then validates the surviving rows as a whole
(global ``sample_id`` uniqueness, subject leakage across splits, row-count change and
modality-mix drift against the previous version). The build passes only when the
share of quarantined shards is within ``max_failed_shard_fraction`` and every
build-level expectation holds. Evidence lands under ``<workdir>/runs/<build_id>/``:
``data_docs/index.html`` (GX Data Docs), ``quality_metrics.parquet`` and
``gate_report.json``.

``validate_path`` runs the same suites on demand (``medcurate validate PATH``) without
moving anything.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import time
import uuid
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import Any, Literal

import fsspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from converters.io import read_each
from curation.hash_cache import workdir_cache_dir
from curation.schema import check_batch
from curation.shards import read_present_columns
from quality_checks.data_docs import site_config, write_gate_page
from quality_checks.gx_speed import (
    keep_validation_results_as_dicts,
    memoized_configurations,
    skip_project_config_saves,
)
from quality_checks.metrics import METRICS_VERSION, MetricsStage, SeverityBands, validation_table
from quality_checks.suites import (
    FAMILIES,
    SUBJECT_SPLIT_COUNT,
    SUITE_VERSIONS,
    Tolerances,
    build_rows_suite,
    import_gx,
    modality_mix_suite,
    shard_suite,
)

SCHEMA_SUITE = "medcurate.schema"
ResultFormat = Literal["BOOLEAN_ONLY", "BASIC", "SUMMARY"]
#: check_batch reasons that are structural (value rules are the GX suites' job)
_STRUCTURAL_REASONS = ("missing", "type ", "null value", "not part of")


@dataclasses.dataclass(frozen=True)
class FailedExpectation:
    """One expectation that did not hold, in words a person can act on."""

    suite: str
    expectation: str
    column: str | None
    observed: str
    scope: str  # shard file name, or "build"

    def __str__(self) -> str:
        column = f" column={self.column}" if self.column else ""
        return f"[{self.scope}] {self.suite}: {self.expectation}{column} observed {self.observed}"


@dataclasses.dataclass
class ShardResult:
    path: str
    rows: int
    passed: bool
    failures: list[FailedExpectation]
    quarantined_to: str | None = None
    result_json: str | None = None
    #: "sample_id: reason" for rows whose metrics explain a failure (first 50)
    row_problems: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class GateReport:
    """The gate's decision and where its evidence is."""

    passed: bool
    passed_shards: list[str]
    quarantined: list[str]
    failed_expectations: list[str]
    data_docs_path: str | None
    metrics_path: str | None
    seconds: float
    build_id: str = ""
    family: str | None = None
    failed_shard_fraction: float = 0.0
    shards_reused: int = 0  # shards whose earlier passing validation was reused
    shards: list[ShardResult] = dataclasses.field(default_factory=list)
    failures: list[FailedExpectation] = dataclasses.field(default_factory=list)
    suite_versions: dict[str, str] = dataclasses.field(default_factory=lambda: dict(SUITE_VERSIONS))
    #: the part of ``seconds`` spent writing Data Docs and ``gate.html`` (evidence, not verdicts)
    data_docs_seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class _GxSession:
    """One ephemeral GX context for one gate run, with an optional Data Docs site.

    A fresh ephemeral context costs milliseconds once GX is imported (the import is
    what is slow, and Python caches it per process); a context per run keeps each
    build's Data Docs to that build's validations.
    """

    def __init__(self, docs_dir: str | None, shared_static_dir: str | None = None):
        gx = import_gx()
        from great_expectations.data_context.types.base import (
            DataContextConfig,
            InMemoryStoreBackendDefaults,
            ProgressBarsConfig,
        )

        # without GX's default "local_site" in a temporary folder it never writes (and
        # logs at INFO into every build's flow log): the session's own site is the only one
        project = DataContextConfig(store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False))
        self.context = gx.get_context(mode="ephemeral", project_config=project)
        skip_project_config_saves(self.context)
        keep_validation_results_as_dicts(self.context)
        self.context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
        self.datasource = self.context.data_sources.add_pandas("medcurate")
        self.site = None
        if docs_dir:
            self.site = "medcurate_build"
            self.context.add_data_docs_site(site_name=self.site, site_config=site_config(docs_dir, shared_static_dir))
        self._suites: dict[str, Any] = {}
        self._batches: Any = None
        self._runs = 0
        #: (run name, scope, suite name, success) of every validation, for the summary page
        self.runs: list[tuple[str, str, str, bool]] = []
        #: how long :meth:`build_docs` took (0 without a site)
        self.docs_seconds = 0.0

    def validate(self, asset_label: str, frame: Any, suite: Any, result_format: ResultFormat = "SUMMARY") -> Any:
        """One GX run of ``suite`` over ``frame``, stored for Data Docs under its run name.
        ``SUMMARY`` (value counts of unexpected values) is for verdicts a person reads;
        ``BASIC`` (unexpected counts and up to 20 examples, a third cheaper) and
        ``BOOLEAN_ONLY`` (success alone, a quarter cheaper again) are for screening
        (:meth:`_ShardValidator.validate_many`).

        This is GX's ``ValidationDefinition.run`` without the validation definition: GX
        would first store a definition for the run, fetch the suite back from its store and
        check that the definition, suite and batch definition are unchanged since saved
        ("freshness", which re-reads and compares the whole suite). Here each of them was
        made a moment ago by this session, so those checks cannot fail; they cost ~15 % of
        a demo build's gate (cProfile). The expectations are evaluated by GX's own
        validator, and the result is stored exactly where ``run`` stores it.
        """
        from great_expectations.constants import DATAFRAME_REPLACEMENT_STR
        from great_expectations.core.run_identifier import RunIdentifier
        from great_expectations.data_context.types.resource_identifiers import (
            ExpectationSuiteIdentifier,
            ValidationResultIdentifier,
        )
        from great_expectations.validator.v1_validator import Validator

        if suite.name not in self._suites:
            if self.site:  # for its page in Data Docs; nothing else reads the context's suites
                self.context.suites.add(suite)
            self._suites[suite.name] = suite
        self._runs += 1
        # GX's file store refuses a key part holding '/' or '\\' (no page would be written)
        page_safe = asset_label.replace("/", "_").replace("\\", "_")
        run_id = RunIdentifier(run_name=f"{self._runs:04d}_{page_safe}")
        validator = Validator(
            batch_definition=self._batch_definition(), result_format=result_format, batch_parameters={"dataframe": frame}
        )
        with memoized_configurations():
            result = validator.validate_expectation_suite(self._suites[suite.name])
        meta: dict[str, Any] = result.meta  # type: ignore[assignment]  # GX types it as the fields it sets first
        meta.update(
            run_id=run_id, validation_time=run_id.run_time, batch_parameters={"dataframe": DATAFRAME_REPLACEMENT_STR},
            validation_id=None, checkpoint_id=None,
        )
        if self.site:  # Data Docs is the store's only reader
            suite_id = ExpectationSuiteIdentifier(name=suite.name)
            self.context.validation_results_store.store_validation_results(
                suite_validation_result=result,
                suite_validation_result_identifier=ValidationResultIdentifier(
                    batch_identifier=validator.active_batch_id, expectation_suite_identifier=suite_id, run_id=run_id
                ),
                expectation_suite_identifier=suite_id,
            )
        self.runs.append((run_id.run_name, asset_label, suite.name, bool(result.success)))
        return result

    def _batch_definition(self) -> Any:
        """The one data frame asset and batch definition of the session, made on first use:
        every run names itself by its run id, so one asset serves them all (GX keeps each
        asset in its config, and Data Docs lists pages by run, not by asset)."""
        if self._batches is None:
            asset = self.datasource.add_dataframe_asset("shards")
            self._batches = asset.add_batch_definition_whole_dataframe("whole")
        return self._batches

    def build_docs(self, title: str, verdict: str, failures: list[str]) -> str | None:
        """Build the GX site; add ``gate.html``, a static summary that links each
        validation page (GX's own index lists runs with JavaScript from CDNs, so it
        shows no table offline; the per-validation pages are static HTML)."""
        if not self.site:
            return None
        started = time.perf_counter()
        urls = self.context.build_data_docs(site_names=[self.site])
        url = urls.get(self.site, "")
        index = url[len("file://"):] if url.startswith("file://") else url
        write_gate_page(os.path.dirname(index), title, verdict, failures, self.runs)
        self.docs_seconds = time.perf_counter() - started
        return index


def _raised(exception: dict[str, Any] | None) -> str | None:
    """GX's exception message: ``exception_info`` is either the exception's fields or,
    when a metric failed, a mapping from metric ids to such fields."""
    if not exception:
        return None
    for info in (exception, *(v for v in exception.values() if isinstance(v, dict))):
        if info.get("raised_exception"):
            return str(info.get("exception_message"))
    return None


def _observed(result: dict[str, Any], exception: dict[str, Any] | None) -> str:
    message = _raised(exception)
    if message is not None:
        return f"error: {message[:200]}"
    if result.get("observed_value") is not None:
        return repr(result["observed_value"])
    if "unexpected_count" in result:
        examples = list(result.get("partial_unexpected_list") or [])[:3]
        return f"{result.get('unexpected_count')} of {result.get('element_count')} rows unexpected, e.g. {examples}"
    return json.dumps(result, default=str)[:200]


def _failures_of(validation: Any, scope: str) -> list[FailedExpectation]:
    failures = []
    for item in validation.results:
        if item.success:
            continue
        config = item.expectation_config
        exception = item.exception_info if isinstance(item.exception_info, dict) else None
        failures.append(
            FailedExpectation(
                suite=(config.meta or {}).get("suite", validation.suite_name),
                expectation=config.type,
                column=config.kwargs.get("column"),
                observed=_observed(dict(item.result or {}), exception),
                scope=scope,
            )
        )
    return failures


def _with_subject_split_count(table: pa.Table) -> pa.Table:
    """Add how many distinct splits each row's subject appears in (null subject: null)."""
    if "subject_key" not in table.schema.names or "split" not in table.schema.names:
        return table.append_column(SUBJECT_SPLIT_COUNT, pa.nulls(table.num_rows, pa.int64()))
    pairs = table.select(["subject_key", "split"]).filter(pc.is_valid(table.column("subject_key")))
    counts = pairs.group_by(["subject_key", "split"]).aggregate([]).group_by("subject_key").aggregate(
        [("split", "count")]
    )
    lookup = dict(zip(counts.column("subject_key").to_pylist(), counts.column("split_count").to_pylist(), strict=True))
    values = [lookup.get(key) if key is not None else None for key in table.column("subject_key").to_pylist()]
    return table.append_column(SUBJECT_SPLIT_COUNT, pa.array(values, pa.int64()))


def _read_table(path: str) -> pa.Table:
    fs, inner = fsspec.core.url_to_fs(path)
    with fs.open(inner, "rb") as handle:
        return pq.read_table(handle, page_checksum_verification=True)  # a flipped bit fails the shard


def _schema_failures(table: pa.Table, scope: str) -> list[FailedExpectation]:
    failures = []
    for problem in check_batch(table):
        if any(marker in problem.reason for marker in _STRUCTURAL_REASONS):
            failures.append(FailedExpectation(SCHEMA_SUITE, "conforms_to_canonical_schema", problem.column, problem.reason, scope))
    return failures


def infer_family(table: pa.Table) -> str | None:
    """The family a table belongs to, from its ``dataset`` column (``imed`` or ``imed-...``)."""
    if "dataset" not in table.schema.names or table.num_rows == 0:
        return None
    names = {str(v) for v in pc.unique(table.column("dataset")).to_pylist() if v is not None}
    matches = {f for f in FAMILIES for n in names if n == f or n.startswith((f + "-", f + "_", f + "."))}
    return matches.pop() if len(matches) == 1 else None


class _ShardValidator:
    def __init__(self, session: _GxSession, tolerances: Tolerances, severity_bands: SeverityBands | None):
        self.session = session
        self.tolerances = tolerances
        self.stage = MetricsStage(severity_bands=severity_bands)
        self.stage.setup()
        # one suite object per name and session: the session adds it to its context once
        # (``_GxSession.validate``), and screening and per-shard runs share it
        self._suites: dict[str, Any] = {}

    def suite_for(self, family: str | None) -> Any:
        key = family or ""
        if key not in self._suites:
            self._suites[key] = shard_suite(family, self.tolerances)
        return self._suites[key]

    def prepare(self, path: str, family: str | None) -> _PreparedShard:
        """Read one shard, check its structure and compute its metrics (no GX yet)."""
        return _prepare_shard(self.stage, path, family)

    def validate_many(self, prepared: list[_PreparedShard]) -> list[tuple[ShardResult, pa.Table | None, list[dict[str, Any]]]]:
        """GX verdicts for prepared shards: one GX run over all shards of a family when
        that run is clean, one run per shard otherwise.

        Why this is exact: every shard expectation is a per-row map expectation (or
        uniqueness, or the column set), and every row of the union carries the values it
        has in its own shard (``subject_split_count`` is counted per shard). A union run in
        which every expectation holds for *every* row (no unexpected row at all, whatever
        ``mostly`` allows) therefore implies each shard passes on its own. Anything less
        (a failure, or rows tolerated by ``mostly``) sends those shards to one run each,
        which decides per shard as before. A GX run costs ~0.1-0.3 s whatever its rows, so
        a clean build of N shards pays one run instead of N.

        The screening run asks GX for the least result that still tells "every row met
        every rule": when every expectation requires all rows (``mostly`` 1, the default),
        success is that, and ``BOOLEAN_ONLY`` (no counts at all) says it about a quarter
        faster than ``BASIC``; with a softer ``mostly`` it takes ``BASIC`` and requires zero
        unexpected rows. A single shard is screened the same way; a shard that is not
        clean gets its own ``SUMMARY`` run, whose result is its verdict and its
        quarantine record.
        """
        results: dict[str, tuple[ShardResult, pa.Table | None, list[dict[str, Any]]]] = {}
        groups: dict[str | None, list[_PreparedShard]] = {}
        for shard in prepared:
            if shard.flat is None:
                results[shard.path] = (ShardResult(shard.path, shard.rows, False, shard.failures), None, [])
            else:
                groups.setdefault(shard.family, []).append(shard)
        for family, shards in groups.items():
            if self._union_is_clean(family, shards):
                for shard in shards:
                    results[shard.path] = self._result(shard, [], [])
                continue
            for shard in shards:
                assert shard.flat is not None
                validation = self.session.validate(shard.scope, shard.flat.to_pandas(), self.suite_for(family))
                results[shard.path] = self._result(shard, _failures_of(validation, shard.scope), [validation.to_json_dict()])
        return [results[shard.path] for shard in prepared]

    def _union_is_clean(self, family: str | None, shards: list[_PreparedShard]) -> bool:
        flats = [s.flat for s in shards if s.flat is not None]
        union = pa.concat_tables(flats, promote_options="default") if len(flats) > 1 else flats[0]
        label = f"{len(shards)}_shards" if len(shards) > 1 else shards[0].scope
        suite = self.suite_for(family)
        every_row = all(getattr(e, "mostly", None) in (None, 1, 1.0) for e in suite.expectations)
        validation = self.session.validate(
            label, union.to_pandas(), suite, result_format="BOOLEAN_ONLY" if every_row else "BASIC"
        )
        clean = bool(validation.success) and all(not (item.result or {}).get("unexpected_count") for item in validation.results)
        if not clean:
            self.session.runs.pop()  # a screening run: the per-shard runs that follow are the verdict on the page
        return clean

    @staticmethod
    def _result(
        shard: _PreparedShard, gx_failures: list[FailedExpectation], raw: list[dict[str, Any]]
    ) -> tuple[ShardResult, pa.Table | None, list[dict[str, Any]]]:
        assert shard.flat is not None
        failures = shard.failures + gx_failures
        flat = shard.flat
        explained = flat.filter(pc.is_valid(flat.column("metric_errors"))).slice(0, 50)
        problems = [
            f"{sid}: {why}"
            for sid, why in zip(explained.column("sample_id").to_pylist(), explained.column("metric_errors").to_pylist(), strict=True)
        ]
        return ShardResult(shard.path, shard.rows, not failures, failures, row_problems=problems), flat, raw


def _prepare_shard(stage: MetricsStage, path: str, family: str | None) -> _PreparedShard:
    scope = os.path.basename(path.rstrip("/"))
    try:
        table = _read_table(path)
    except Exception as exc:  # noqa: BLE001 - an unreadable shard fails, it does not crash the gate
        failure = FailedExpectation(SCHEMA_SUITE, "shard_is_readable_parquet", None, f"error: {exc}", scope)
        return _PreparedShard(path, scope, 0, family, None, [failure])
    failures = _schema_failures(table, scope)
    try:
        metrics = stage.compute(table)
        flat = _with_subject_split_count(validation_table(table, metrics))
    except Exception as exc:  # noqa: BLE001
        failures.append(FailedExpectation(SCHEMA_SUITE, "metrics_computable", None, f"error: {exc}", scope))
        return _PreparedShard(path, scope, table.num_rows, family, None, failures)
    return _PreparedShard(path, scope, table.num_rows, family or infer_family(table), flat, failures)


def prepare_shard(path: str, family: str | None = None, severity_bands: SeverityBands | None = None) -> _PreparedShard:
    """Read, verify (page checksums) and measure one shard, standalone: the unit
    ``gate_build``'s ``shard_map`` runs elsewhere (another process: picklable, no GX)."""
    stage = MetricsStage(severity_bands=severity_bands)
    stage.setup()
    return _prepare_shard(stage, path, family)


@dataclasses.dataclass
class _PreparedShard:
    path: str
    scope: str
    rows: int
    family: str | None
    flat: pa.Table | None  # the validation table; None when the shard could not be measured
    failures: list[FailedExpectation]  # structural failures found before GX


class PassedShardCache:
    """Validation tables of shards that already passed, reused by the next build.

    A shard's name derives from its inputs and the code version, so the same name and
    size is the same content; with the same suite versions, family and tolerances its
    verdict cannot change. An incremental rebuild therefore validates only its new
    shards, while the build-level checks (uniqueness, leakage, drift) still see every
    shard's table.
    """

    def __init__(self, directory: str, family: str | None, tolerances: Tolerances):
        self.fs, self.root = fsspec.core.url_to_fs(directory)
        self.fs.makedirs(self.root, exist_ok=True)
        self.salt = json.dumps(
            [SUITE_VERSIONS, METRICS_VERSION, family, dataclasses.asdict(tolerances)], sort_keys=True, default=str
        )

    def _key(self, path: str) -> str | None:
        fs, inner = fsspec.core.url_to_fs(path)
        try:
            size = fs.size(inner)
        except (OSError, FileNotFoundError):
            return None
        digest = hashlib.sha256(f"{self.salt}|{os.path.basename(inner)}|{size}".encode()).hexdigest()[:32]
        return f"{self.root.rstrip('/')}/{digest}.parquet"

    def get(self, path: str) -> pa.Table | None:
        key = self._key(path)
        if key is None:
            return None
        try:  # open, not exists() then open: one round trip on object storage
            with self.fs.open(key, "rb") as handle:
                # ParquetFile.read, not read_table: no dataset layer for one small file (~1/3 less per file)
                return pq.ParquetFile(handle).read()
        except FileNotFoundError:
            return None

    def get_many(self, paths: list[str]) -> list[pa.Table | None]:
        """:meth:`get` for every path, in order, several at a time: a rebuild looks up
        every shard of the build (hundreds of small files, each a round trip on object
        storage; Arrow's reads release the GIL)."""
        return read_each(self.get, paths)

    def put(self, path: str, flat: pa.Table) -> None:
        key = self._key(path)
        if key is None:
            return
        tmp = f"{key}.tmp-{uuid.uuid4().hex}"
        with self.fs.open(tmp, "wb") as handle:
            pq.write_table(flat, handle)
        self.fs.mv(tmp, key)


def _write_json_atomically(fs: Any, path: str, payload: Any) -> None:
    tmp = f"{path}.tmp-{uuid.uuid4().hex}"
    with fs.open(tmp, "w") as handle:
        json.dump(payload, handle, indent=2, default=str)
    fs.mv(tmp, path)


def _move_atomically(source: str, dest_fs: Any, dest: str) -> None:
    """Move a shard: ``os.replace`` when both ends are local on one device, else copy
    to a temporary name beside the destination, rename, and delete the source."""
    src_fs, src_inner = fsspec.core.url_to_fs(source)
    local = "file" in _protocols(src_fs) and "file" in _protocols(dest_fs)
    if local:
        try:
            os.replace(src_inner, dest)
            return
        except OSError:
            pass  # another device: fall through to copy + rename
    _copy_atomically(source, dest_fs, dest)
    src_fs.rm(src_inner)


def _protocols(fs: Any) -> tuple[str, ...]:
    protocol = fs.protocol
    return tuple(protocol) if isinstance(protocol, (tuple, list)) else (protocol,)


def _copy_atomically(source: str, dest_fs: Any, dest: str) -> None:
    src_fs, src_inner = fsspec.core.url_to_fs(source)
    tmp = f"{dest}.tmp-{uuid.uuid4().hex}"
    with src_fs.open(src_inner, "rb") as reader, dest_fs.open(tmp, "wb") as writer:
        writer.write(reader.read())
    dest_fs.mv(tmp, dest)


def _quarantine(shard: ShardResult, raw: list[dict[str, Any]], workdir: str, build_id: str, *, keep_original: bool) -> None:
    """Put a failing shard and its validation result under ``quarantine/<build>/``.

    A shard this build wrote is moved. One an earlier build wrote (``keep_original``) is
    copied: a published version may hold it, and a stricter suite or a cleared gate cache
    must not take data from under a version training jobs read."""
    fs, root = fsspec.core.url_to_fs(workdir)
    folder = f"{root.rstrip('/')}/quarantine/{build_id}"
    fs.makedirs(folder, exist_ok=True)
    name = os.path.basename(shard.path.rstrip("/"))
    if fs.exists(f"{folder}/{name}"):  # same file name from another folder: keep both
        name = f"{uuid.uuid4().hex[:8]}-{name}"
    result_path = f"{folder}/{name}.validation.json"
    _write_json_atomically(
        fs,
        result_path,
        {
            "shard": shard.path,
            "build_id": build_id,
            "rows": shard.rows,
            "failed_expectations": [str(f) for f in shard.failures],
            "row_problems": shard.row_problems,
            "suite_versions": SUITE_VERSIONS,
            "validation_results": raw,
        },
    )
    destination = f"{folder}/{name}"
    if keep_original:
        _copy_atomically(shard.path, fs, destination)
    else:
        _move_atomically(shard.path, fs, destination)
    shard.quarantined_to = destination
    shard.result_json = result_path


def _modality_mix(current: pa.Table, previous: pa.Table) -> pa.Table:
    def shares(table: pa.Table) -> dict[str, float]:
        counts = table.column("modality").value_counts().to_pylist() if table.num_rows else []
        total = max(1, table.num_rows)
        return {str(c["values"]): c["counts"] / total for c in counts}

    now, before = shares(current), shares(previous)
    modalities = sorted(set(now) | set(before))
    return pa.table(
        {
            "modality": modalities,
            "share_now": [now.get(m, 0.0) for m in modalities],
            "share_previous": [before.get(m, 0.0) for m in modalities],
            "share_change": [abs(now.get(m, 0.0) - before.get(m, 0.0)) for m in modalities],
        }
    )


def _previous_rows(shards: Sequence[str], measured: dict[str, pa.Table]) -> pa.Table:
    """The ``modality`` of every row of the previous version's shards: from this build's
    validation tables where it has the shard (same path, same rows), else read from the
    shard (a shard the build dropped). A 1 % rebuild of 100 shards reads one file, not 100."""
    unseen = [path for path in shards if path not in measured]
    read = dict(zip(unseen, read_each(functools.partial(read_present_columns, columns=["modality"]), unseen), strict=True))
    columns = [(measured[path] if path in measured else read[path]).column("modality") for path in shards]
    chunks = [chunk.cast(pa.string()) for column in columns for chunk in column.chunks]
    return pa.table({"modality": pa.chunked_array(chunks, pa.string())})


def _build_failures(
    session: _GxSession, flats: list[pa.Table], tolerances: Tolerances, previous: pa.Table | None
) -> list[FailedExpectation]:
    keep = ["sample_id", "subject_key", "split", "modality"]
    parts = [t.select([c for c in keep if c in t.schema.names]) for t in flats]
    rows = pa.concat_tables(parts, promote_options="default") if parts else pa.table({c: pa.array([], pa.string()) for c in keep})
    rows = _with_subject_split_count(rows)
    previous_rows = previous.num_rows if previous is not None else None
    failures = _failures_of(session.validate("build_rows", rows.to_pandas(), build_rows_suite(tolerances, previous_rows)), "build")
    if previous is not None and tolerances.max_modality_share_change is not None and "modality" in previous.schema.names:
        mix = _modality_mix(rows, previous)
        failures += _failures_of(session.validate("modality_mix", mix.to_pandas(), modality_mix_suite(tolerances)), "build")
    return failures


def _write_metrics(flats: list[tuple[str, pa.Table]], path: str) -> str | None:
    if not flats:
        return None
    tables = [t.append_column("shard", pa.array([os.path.basename(p)] * t.num_rows, pa.string())) for p, t in flats]
    fs, inner = fsspec.core.url_to_fs(path)
    tmp = f"{inner}.tmp-{uuid.uuid4().hex}"
    with fs.open(tmp, "wb") as handle:
        pq.write_table(pa.concat_tables(tables, promote_options="default"), handle, compression="zstd")
    fs.mv(tmp, inner)
    return path


def gate_build(
    shard_paths: list[str],
    *,
    family: str | None,
    workdir: str,
    tolerances: dict[str, Any] | None = None,
    previous: pa.Table | Sequence[str] | None = None,
    build_id: str,
    severity_bands: SeverityBands | None = None,
    data_docs: bool = True,
    cache_passed: bool = True,
    shard_map: Callable[[Callable[[str], Any], list[str]], Iterable[Any]] | None = None,
    earlier_shards: Collection[str] = (),
) -> GateReport:
    """Validate a build's shards, quarantine failing ones, and decide whether it may publish.

    ``cache_passed``: reuse the validation of shards that passed an earlier build
    (:class:`PassedShardCache` under ``<workdir>/cache/gate``).

    ``tolerances`` is the recipe's ``gate:`` mapping (see :class:`Tolerances`);
    ``previous``, for the drift checks: the previous published version's table (at least
    ``modality``) or its shard paths (read only where this build did not measure them:
    a rebuild shares nearly all); ``severity_bands`` overrides
    ``synthesis.SEVERITY_BANDS`` (tests).

    ``shard_map``: how the new shards are read, verified and measured — reading back every
    byte is the gate's main per-row cost, and shards are independent, so a build with
    worker processes passes its pool's ``map`` (results in order); default: here, in turn.

    ``earlier_shards``: shards earlier builds wrote (reused partitions), which published
    versions may hold: a failing one is quarantined as a copy and stays in place.
    """
    started = time.perf_counter()
    earlier = set(earlier_shards)
    if family is not None and family not in FAMILIES:
        raise ValueError(f"unknown dataset family {family!r}; known families: {list(FAMILIES)}")
    limits = Tolerances.from_mapping(tolerances)
    fs, root = fsspec.core.url_to_fs(workdir)
    run_dir = f"{root.rstrip('/')}/runs/{build_id}"
    fs.makedirs(run_dir, exist_ok=True)
    # data docs are written only for a local workdir (flows.build), whose cache folder is local too
    session = _GxSession(f"{run_dir}/data_docs" if data_docs else None, workdir_cache_dir(workdir, "data_docs_static"))
    validator = _ShardValidator(session, limits, severity_bands)

    shards: list[ShardResult] = []
    passed_flats: list[tuple[str, pa.Table]] = []
    all_flats: list[tuple[str, pa.Table]] = []
    # the workdir URL, not ``root``: ``root`` has lost the protocol (s3://) and would resolve locally
    cache = PassedShardCache(f"{workdir.rstrip('/')}/cache/gate", family, limits) if cache_passed else None
    reused = 0
    new_paths: list[str] = []
    hits = cache.get_many(shard_paths) if cache is not None else [None] * len(shard_paths)
    for path, hit in zip(shard_paths, hits, strict=True):
        if hit is not None:
            reused += 1
            shards.append(ShardResult(path, hit.num_rows, True, []))
            all_flats.append((path, hit))
            passed_flats.append((path, hit))
        else:
            new_paths.append(path)
    if shard_map is not None and len(new_paths) > 1:
        to_validate = list(shard_map(functools.partial(prepare_shard, family=family, severity_bands=severity_bands), new_paths))
    else:
        to_validate = [validator.prepare(path, family) for path in new_paths]
    validated = validator.validate_many(to_validate)
    if previous is not None and not isinstance(previous, pa.Table):
        # before any quarantine moves a shard the previous version also holds
        measured = dict(all_flats) | {result.path: flat for result, flat, _ in validated if flat is not None}
        previous = _previous_rows([previous] if isinstance(previous, str) else list(previous), measured)
    for result, flat, raw in validated:
        if cache is not None and result.passed and flat is not None:
            cache.put(result.path, flat)
        shards.append(result)
        if flat is not None:
            all_flats.append((result.path, flat))
        if result.passed and flat is not None:
            passed_flats.append((result.path, flat))
        else:
            _quarantine(result, raw, workdir, build_id, keep_original=result.path in earlier)

    failures = [f for s in shards for f in s.failures]
    failed_fraction = sum(not s.passed for s in shards) / len(shards) if shards else 0.0
    if not shards:
        failures.append(FailedExpectation("medcurate.build", "build_has_shards", None, "no shards to validate", "build"))
    if failed_fraction > limits.max_failed_shard_fraction:
        failures.append(
            FailedExpectation(
                "medcurate.build", "failed_shard_fraction_within_tolerance", None,
                f"{failed_fraction:.3f} > max_failed_shard_fraction {limits.max_failed_shard_fraction}", "build",
            )
        )
    build_level = _build_failures(session, [t for _, t in passed_flats], limits, previous)
    failures += build_level
    passed = bool(shards) and failed_fraction <= limits.max_failed_shard_fraction and not build_level

    docs = session.build_docs(
        f"Quality gate: {family or 'common'} build {build_id}", "passed" if passed else "FAILED", [str(f) for f in failures]
    )
    # the full URL: ``run_dir`` has lost the protocol (s3://) and would resolve to a local path
    metrics_path = _write_metrics(all_flats, f"{workdir.rstrip('/')}/runs/{build_id}/quality_metrics.parquet")
    report = GateReport(
        passed=passed,
        passed_shards=[p for p, _ in passed_flats],
        quarantined=[s.quarantined_to for s in shards if s.quarantined_to],
        failed_expectations=[str(f) for f in failures],
        data_docs_path=docs,
        metrics_path=metrics_path,
        seconds=time.perf_counter() - started,
        data_docs_seconds=session.docs_seconds,
        build_id=build_id,
        family=family,
        failed_shard_fraction=failed_fraction,
        shards_reused=reused,
        shards=shards,
        failures=failures,
    )
    _write_json_atomically(fs, f"{run_dir}/gate_report.json", report.to_dict())
    return report


def _expand(paths: str | Sequence[str]) -> list[str]:
    items: Iterable[str] = [paths] if isinstance(paths, str) else paths
    shards: list[str] = []
    for item in items:
        fs, inner = fsspec.core.url_to_fs(item)
        if fs.isdir(inner):
            found = sorted(fs.glob(f"{inner.rstrip('/')}/**/*.parquet"))
            protocol = _protocols(fs)[0]
            shards += [p if protocol == "file" else f"{protocol}://{p}" for p in found]
        else:
            shards.append(item)
    return shards


def validate_path(
    path_or_paths: str | Sequence[str],
    family: str | None = None,
    *,
    tolerances: dict[str, Any] | None = None,
    previous: pa.Table | None = None,
    docs_dir: str | None = None,
    severity_bands: SeverityBands | None = None,
) -> GateReport:
    """Run the suites on shards or folders of shards without moving anything
    (``medcurate validate PATH``). ``family=None`` infers it per shard from ``dataset``."""
    started = time.perf_counter()
    if family is not None and family not in FAMILIES:
        raise ValueError(f"unknown dataset family {family!r}; known families: {list(FAMILIES)}")
    limits = Tolerances.from_mapping(tolerances)
    paths = _expand(path_or_paths)
    session = _GxSession(docs_dir)
    validator = _ShardValidator(session, limits, severity_bands)
    shards, flats = [], []
    for result, flat, _ in validator.validate_many([validator.prepare(path, family) for path in paths]):
        shards.append(result)
        if flat is not None and result.passed:
            flats.append(flat)
    failures = [f for s in shards for f in s.failures]
    if not shards:
        failures.append(FailedExpectation("medcurate.build", "build_has_shards", None, f"no parquet shards under {path_or_paths}", "build"))
    build_level = _build_failures(session, flats, limits, previous) if flats else []
    failures += build_level
    failed_fraction = sum(not s.passed for s in shards) / len(shards) if shards else 0.0
    docs = session.build_docs("medcurate validate", "passed" if not failures else "FAILED", [str(f) for f in failures])
    return GateReport(
        passed=bool(shards) and failed_fraction == 0.0 and not build_level,
        passed_shards=[s.path for s in shards if s.passed],
        quarantined=[],
        failed_expectations=[str(f) for f in failures],
        data_docs_path=docs,
        metrics_path=None,
        seconds=time.perf_counter() - started,
        data_docs_seconds=session.docs_seconds,
        family=family,
        failed_shard_fraction=failed_fraction,
        shards=shards,
        failures=failures,
    )
