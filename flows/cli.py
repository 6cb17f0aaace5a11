"""``medcurate``: the command line of DESIGN.md.

Exit codes: 0 ok · 1 failure · 2 usage or configuration error (the message says what
and how to fix) · 3 quality gate failed (nothing published).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import posixpath
import sys
from collections.abc import Callable, Sequence
from typing import Any

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_GATE = 0, 1, 2, 3

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")


class UsageError(Exception):
    """A problem the user fixes by changing the command or the configuration (exit 2)."""


def _settings(args: argparse.Namespace) -> Any:
    from flows.settings import Settings
    from flows.storage import configure_object_storage

    configure_object_storage()
    return Settings.resolve(args.workdir, args.catalog_uri, args.warehouse)


def _number_or_text(value: str) -> int | str:
    """Counts come back from the snapshot summary as text; JSON readers want numbers."""
    return int(value) if value.isdigit() else value


def split_ref(ref: str) -> tuple[str, str | None]:
    """``NAME@V`` → (NAME, V); ``NAME`` → (NAME, None) meaning the latest version."""
    name, _, version = ref.partition("@")
    return name, (version or None)


# -- catalog ---------------------------------------------------------------------------
def cmd_catalog(args: argparse.Namespace) -> int:
    if args.catalog_command == "clean":
        return _catalog_clean(args)
    if args.catalog_command == "expire":
        return _catalog_expire(args)
    catalog = _settings(args).catalog()
    if args.catalog_command == "list":
        names = catalog.list()
        if not names:
            print("(no datasets yet: run 'medcurate demo' or 'medcurate convert SRC --dataset NAME')")
        for name in names:
            versions = catalog.versions(name)
            latest = versions[-1] if versions else None
            samples = latest.medcurate.get("samples", "?") if latest else "-"
            print(f"{name}\t{len(versions)} version(s)\tlatest {latest.version if latest else '-'}\t{samples} samples")
        return EXIT_OK
    if args.catalog_command == "show":
        name, version = split_ref(args.ref)
        info = catalog.version_info(name, version)
        files = catalog.files(name, info.version)
        versions = catalog.versions(name)
        # the snapshot's summary names the version it was built as; a later build that
        # changed nothing tags the same snapshot: the version shown is the one asked for
        built = {k: _number_or_text(v) for k, v in info.medcurate.items() if k != "version"}
        show = {
            "dataset": name,
            "version": info.version,
            "snapshot_id": info.snapshot_id,
            "published_at": info.published_at.isoformat(),
            "files": len(files),
            **built,
            "same_data_as": [v.version for v in versions if v.snapshot_id == info.snapshot_id and v.version != info.version],
            "all_versions": [v.version for v in versions],
        }
        card = posixpath.join(catalog.artifacts_dir(name, info.version), "README.md")
        if os.path.exists(card):
            show["card"] = card
            show["card_html"] = card[: -len("README.md")] + "card.html"
        print(json.dumps(show, indent=2, default=str))
        return EXIT_OK
    if args.catalog_command == "files":
        name, version = split_ref(args.ref)
        for path in catalog.files(name, version):
            print(path)
        return EXIT_OK
    if args.catalog_command == "history":
        for row in catalog.history(args.name):
            versions = ",".join(row["versions"]) or "-"
            summary = row["summary"]
            print(
                f"{row['published_at'].isoformat()}\tsnapshot {row['snapshot_id']}\t{row['operation']}\t"
                f"versions {versions}\trun {summary.get('medcurate.run_id', '-')}\t"
                f"{summary.get('medcurate.samples', '?')} samples"
            )
        return EXIT_OK
    if args.catalog_command == "diff":
        name_a, version_a = split_ref(args.a)
        name_b, version_b = split_ref(args.b)
        if name_a != name_b or not version_a or not version_b:
            raise UsageError("diff compares two versions of one dataset: medcurate catalog diff NAME@A NAME@B")
        diff = catalog.diff(name_a, version_a, version_b)
        print(json.dumps({k: {"count": len(v), "sample_ids": v} for k, v in diff.items()}, indent=2))
        return EXIT_OK
    raise UsageError(f"unknown catalog command {args.catalog_command!r}")


def _catalog_expire(args: argparse.Namespace) -> int:
    from flows.maintenance import expire_dataset_versions

    result = expire_dataset_versions(_settings(args), args.name, keep_last=args.keep_last, keep=args.keep or (), dry_run=args.dry_run)
    for version in result.dropped:
        print(f"{args.name}@{version}")
    verb = "would expire" if result.dry_run else "expired"
    print(
        f"{args.name}: {verb} {len(result.dropped)} version(s) and {len(result.expired_snapshots)} snapshot(s); "
        f"kept {', '.join(result.kept)}. Their files go with: medcurate catalog clean {args.name}",
        file=sys.stderr,
    )
    return EXIT_OK


def _catalog_clean(args: argparse.Namespace) -> int:
    from flows.maintenance import clean_dataset_files

    if args.min_age_hours < 0:
        raise UsageError(f"--min-age-hours must be >= 0, got {args.min_age_hours}")
    report = clean_dataset_files(_settings(args), args.name, min_age_s=args.min_age_hours * 3600, dry_run=args.dry_run)
    for path in report.removed:
        print(path)
    verb = "would remove" if report.dry_run else "removed"
    print(
        f"{args.name}: {verb} {len(report.removed)} file(s), {report.removed_bytes / 2**20:.1f} MiB, from {report.data_dir}; "
        f"kept {report.held_by_versions} held by versions, {report.kept_for_reuse} of finished partitions, "
        f"{report.kept_young} younger than {args.min_age_hours:g} h",
        file=sys.stderr,
    )
    return EXIT_OK


# -- convert ---------------------------------------------------------------------------
def cmd_convert(args: argparse.Namespace) -> int:
    from catalogs.catalog import check_dataset_name
    from converters.base import SlicePolicy
    from curation.schema import MODALITIES
    from flows.build import run_build

    try:
        SlicePolicy.parse(args.slices)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    if args.modality and args.modality not in MODALITIES:
        raise UsageError(f"--modality must be one of {' '.join(MODALITIES)}, got {args.modality!r}")
    for source in args.sources:
        if "://" not in source and not os.path.exists(source):
            # a mistyped argument, not bad input: nothing is converted until every source
            # named on the command line exists (files inside them that fail are rejects)
            raise UsageError(f"source {source!r} does not exist; check the path (nothing was converted)")
    settings = _settings(args)
    options: dict[str, Any] = {
        "slices": args.slices,
        "modality": args.modality,
        "subject_pattern": args.subject_pattern,
        "hash_source_uri": args.hash_source_uri,
        "allow_burned_in": args.allow_burned_in,
        "burned_in": args.burned_in,
        "shard_bytes": int(args.shard_size_mb * 1024 * 1024),
        "partition_items": args.partition_items,
        "label_names": parse_label_names(args.label_names),
        "deid_dates": args.deid_dates,
        "item_timeout_s": args.item_timeout,
    }
    check_dataset_name(args.dataset)
    if args.version:  # before a flow run starts (the build checks again in prepare)
        settings.catalog().check_new_version(args.dataset, args.version)
    request = build_request(args, settings, "convert", list(args.sources), args.dataset, options)
    outcome = run_build(request)
    print_outcome(outcome.summary, settings, args.dataset)
    return EXIT_OK


def build_request(
    args: argparse.Namespace, settings: Any, recipe: str, sources: list[str], dataset: str, options: dict[str, Any]
) -> Any:
    """The BuildRequest of a ``convert``/``build`` command: settings and engine options from ``args``."""
    from flows.build import BuildRequest

    return BuildRequest(
        recipe=recipe,
        sources=[s if "://" in s else os.path.abspath(s) for s in sources],
        dataset=dataset,
        version=args.version,
        options=options,
        workdir=settings.workdir,
        catalog_uri=settings.catalog_uri,
        warehouse=settings.warehouse,
        executor=args.executor,
        dask_address=args.dask_address,
        ray_address=args.ray_address,
        workers=args.workers,
    )


def parse_label_names(text: str | None) -> dict[int, str]:
    """``1=liver,2=spine`` → {1: 'liver', 2: 'spine'}."""
    if not text:
        return {}
    names: dict[int, str] = {}
    for part in text.split(","):
        value, sep, name = part.partition("=")
        if not sep or not value.strip().isdigit() or not name.strip():
            raise UsageError(f"--label-names takes VALUE=NAME pairs like '1=liver,2=spine', got {part!r}")
        names[int(value)] = name.strip()
    return names


def print_outcome(summary: dict[str, Any], settings: Any, dataset: str) -> None:
    s = summary
    print(
        f"{dataset}: {s['samples_written']} samples from {s['inputs_converted']}/{s['inputs_total']} inputs "
        f"({s['inputs_rejected']} rejected) in {s['seconds']:.1f}s"
    )
    for reason, count in s["rejects_by_reason"].items():
        print(f"  rejected {count:>4} × {reason}")
    if s.get("version"):
        state = " (unchanged: no new snapshot)" if s.get("unchanged") else ""
        print(f"  published {dataset}@{s['version']}{state}")
    else:
        print("  nothing published: no samples (the catalog is unchanged)")
    print(f"  run record: {settings.workdir}/runs/{s['run_id']}/summary.json")


# -- validate --------------------------------------------------------------------------
def cmd_validate(args: argparse.Namespace) -> int:
    """Run the quality suites on a published version or on shard files; nothing moves."""
    from flows.runs import new_run_id
    from quality_checks.gate import validate_path

    settings = _settings(args)
    target = args.target
    if "://" in target or os.path.exists(target) or target.endswith(".parquet"):
        import fsspec

        fs, inner = fsspec.core.url_to_fs(target)
        if not fs.exists(inner):  # a mistyped path is a usage error (2), not a failed gate (3)
            raise UsageError(f"{target}: no such file or folder; give a shard, a folder of shards or NAME[@V]")
        paths: str | list[str] = target
        label = target
    else:
        name, version = split_ref(target)
        paths = settings.catalog().files(name, version)
        label = f"{name}@{settings.catalog().version_info(name, version).version}"
    docs_dir = posixpath.join(settings.workdir, "runs", f"validate-{new_run_id()}", "data_docs")
    report = validate_path(paths, family=args.family, docs_dir=docs_dir)
    state = "passed" if report.passed else "FAILED"
    print(f"{label}: quality suites {state} in {report.seconds:.1f}s")
    for line in report.failed_expectations:
        print(f"  failed: {line}")
    if report.data_docs_path:
        print(f"  data docs: {report.data_docs_path}")
    return EXIT_OK if report.passed else EXIT_GATE


# -- demo ------------------------------------------------------------------------------
def cmd_demo(args: argparse.Namespace) -> int:
    from flows.demo import run_demo

    return run_demo(_settings(args))


def cmd_serve(args: argparse.Namespace) -> int:
    from flows.deployments import DeploymentConfigError, default_specs, load_specs, serve
    from flows.settings import configure_prefect

    settings = _settings(args)
    try:
        specs = load_specs(args.config, settings.workdir) if args.config else default_specs(settings.workdir, args.cron)
    except DeploymentConfigError as exc:
        raise UsageError(str(exc)) from exc
    for spec in specs:
        print(f"{spec.name}\t{spec.cron} {spec.timezone}\trecipe {spec.recipe} → {spec.dataset}\tsources {', '.join(spec.sources)}")
    if args.dry_run:
        return EXIT_OK
    configure_prefect(settings.workdir)
    if not os.environ.get("PREFECT_API_URL"):
        raise UsageError(
            "serve needs a Prefect server: start one with 'prefect server start' and "
            "export PREFECT_API_URL=http://127.0.0.1:4200/api (see docs/operations.md)"
        )
    serve(specs, settings.workdir, limit=args.limit)
    return EXIT_OK


def add_engine_options(parser: argparse.ArgumentParser) -> None:
    """--executor and cluster addresses, shared by convert and build."""
    parser.add_argument("--executor", choices=["local", "dask", "ray"], default="local",
                        help="where partitions run: local worker processes, a Dask cluster, or Ray (default local)")
    parser.add_argument("--dask-address", help="Dask scheduler address (default: a LocalCluster)")
    parser.add_argument("--ray-address", help="Ray cluster address (default: Ray in this process)")
    parser.add_argument("--workers", type=int, help="parallel workers (local: processes, default every core for builds of >= 64 MiB; Dask: LocalCluster processes; Ray: CPUs and GPU actors; with a cluster address: the parallelism it will grow to)")


def add_global_options(parser: argparse.ArgumentParser, default: Any = None) -> None:
    """--workdir, --catalog-uri, --warehouse and -v. ``default``: what a parser that did
    not see the option leaves in the namespace (``argparse.SUPPRESS``: nothing)."""
    parser.add_argument("--workdir", default=default, help="working directory (default $MEDCURATE_HOME or ./medcurate-data)")
    parser.add_argument("--catalog-uri", default=default, help="catalog database URI (default sqlite:///<workdir>/catalog.db)")
    parser.add_argument("--warehouse", default=default, help="warehouse path, any fsspec URI (default <workdir>/warehouse)")
    parser.add_argument("-v", "--verbose", action="store_true", default=default if default is not None else False, help="log more")


class _CommandParser(argparse.ArgumentParser):
    """A command's parser (and its subcommands', which argparse makes of the same class):
    it also accepts the global options after the command, as DESIGN.md writes them
    (``medcurate convert SRC --dataset X --workdir DIR``). Their default is SUPPRESS, so
    an option given before the command is kept unless the command repeats it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        add_global_options(self, default=argparse.SUPPRESS)


def build_parser() -> argparse.ArgumentParser:
    from converters.base import BURNED_IN_POLICIES, DATE_POLICIES

    parser = argparse.ArgumentParser(
        prog="medcurate",
        description="Turn unimodal medical data into multimodal, versioned Parquet datasets.",
    )
    add_global_options(parser)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_CommandParser)

    demo = sub.add_parser("demo", help="every family end to end on bundled samples")
    demo.set_defaults(func=cmd_demo)

    conv = sub.add_parser("convert", help="any folder of DICOM/NIfTI/NRRD/MHA/PNG/JPEG/TIFF → a published dataset")
    conv.add_argument("sources", nargs="+", metavar="SRC", help="folders or files (local or fsspec URIs)")
    conv.add_argument("--dataset", required=True, help="catalog table name (lower-case, digits, _)")
    conv.add_argument("--version", help="version tag (default v<N+1>)")
    conv.add_argument("--slices", default="all", help="3D inputs: all | every:N | middle (default all)")
    conv.add_argument("--modality", help="modality of inputs without a DICOM header (CT, MR, XR, CFP, ...)")
    conv.add_argument("--subject-pattern", help="regex on the relative path; group 1 names the subject")
    conv.add_argument("--hash-source-uri", action="store_true", help="store salted hashes instead of paths")
    conv.add_argument("--allow-burned-in", action="store_true", help="keep DICOM with BurnedInAnnotation=YES")
    conv.add_argument(
        "--burned-in", choices=BURNED_IN_POLICIES, default="declared",
        help="strict: also reject ultrasound, fluoroscopy, endoscopy, photographs and secondary "
        "captures unless BurnedInAnnotation is NO (default declared: reject only YES)",
    )
    conv.add_argument("--label-names", help="names of label-map values, e.g. '1=liver,2=spine'")
    conv.add_argument("--deid-dates", choices=DATE_POLICIES, default="shift",
                      help="DICOM dates: shift by a per-subject salted offset (default) or remove")
    conv.add_argument("--item-timeout", type=float,
                      help="seconds one input may take; each item then converts in a killable worker process")
    conv.add_argument("--shard-size-mb", type=float, default=256.0, help="target shard size (default 256)")
    conv.add_argument("--partition-items", type=int, help="items per partition (default: about one shard)")
    add_engine_options(conv)
    conv.set_defaults(func=cmd_convert)

    val = sub.add_parser("validate", help="run the quality suites on NAME[@V] or on shard files")
    val.add_argument("target", metavar="NAME[@V]|PATH")
    val.add_argument("--family", help="family suite to apply (default: inferred from the dataset column)")
    val.set_defaults(func=cmd_validate)

    srv = sub.add_parser("serve", help="scheduled rebuilds as Prefect deployments (needs PREFECT_API_URL)")
    srv.add_argument("--config", help="YAML file of deployments (default: one nightly deployment per family)")
    srv.add_argument("--cron", default="0 2 * * *", help="schedule of the default deployments (default nightly 02:00)")
    srv.add_argument("--limit", type=int, default=1, help="flow runs at a time in this server process (default 1)")
    srv.add_argument("--dry-run", action="store_true", help="print the deployments and exit")
    srv.set_defaults(func=cmd_serve)

    cat = sub.add_parser("catalog", help="datasets, versions and shard files")
    cat_sub = cat.add_subparsers(dest="catalog_command", required=True, metavar="SUBCOMMAND")
    cat_sub.add_parser("list", help="datasets and their latest versions")
    show = cat_sub.add_parser("show", help="one version: counts, run, files")
    show.add_argument("ref", metavar="NAME[@V]")
    files = cat_sub.add_parser("files", help="absolute shard paths, one per line")
    files.add_argument("ref", metavar="NAME[@V]")
    hist = cat_sub.add_parser("history", help="every build (snapshot) of a dataset")
    hist.add_argument("name", metavar="NAME")
    diff = cat_sub.add_parser("diff", help="samples added, removed and changed between two versions")
    diff.add_argument("a", metavar="NAME@A")
    diff.add_argument("b", metavar="NAME@B")
    clean = cat_sub.add_parser("clean", help="remove shard files no version holds (left by crashed builds)")
    clean.add_argument("name", metavar="NAME")
    clean.add_argument("--dry-run", action="store_true", help="list what would be removed; remove nothing")
    clean.add_argument("--min-age-hours", type=float, default=24.0,
                       help="keep files modified more recently than this (default 24): a build may be writing them")
    expire = cat_sub.add_parser("expire", help="drop all but the latest versions (a retention policy), then expire their snapshots")
    expire.add_argument("name", metavar="NAME")
    expire.add_argument("--keep-last", type=int, required=True, metavar="N", help="versions to keep, newest first (at least 1)")
    expire.add_argument("--keep", action="append", metavar="V", help="a version to keep as well (repeatable), e.g. one a paper used")
    expire.add_argument("--dry-run", action="store_true", help="list what would be expired; change nothing")
    cat.set_defaults(func=cmd_catalog)
    __import__("flows.cli_build", fromlist=["register"]).register(sub)  # build, recipes (flows/cli_build.py)
    return parser


def _stdout_reader_gone() -> bool:
    """Whether stdout is a pipe whose reader has closed it (Linux and BSD report POLLERR
    on such a write end), as opposed to another broken pipe met while working."""
    import select

    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLERR)
        return any(event & select.POLLERR for _, event in poller.poll(0))
    except (AttributeError, OSError, ValueError):  # no poll(), or stdout has no descriptor
        return False


def _not_a_gate_verdict(record: logging.LogRecord) -> bool:
    """Console filter: a failed gate's verdict lines are for the run's log in the UI;
    :func:`main` prints the verdict on stderr itself."""
    from flows.build import GATE_VERDICT_RECORD

    return not getattr(record, GATE_VERDICT_RECORD, False)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    # pyiceberg warns once per nested column that Parquet keeps no statistics for it
    logging.getLogger("pyiceberg.io.pyarrow").setLevel(logging.ERROR)
    consoles = list(logging.getLogger().handlers)
    for console in consoles:  # the verdict is printed below, once
        console.addFilter(_not_a_gate_verdict)
    try:
        return _run_command(args)
    finally:  # a process that embeds main() (tests, notebooks) keeps its handlers as they were
        for console in consoles:
            console.removeFilter(_not_a_gate_verdict)


def _run_command(args: argparse.Namespace) -> int:
    """The subcommand, with its failures turned into exit codes and messages."""
    from catalogs.catalog import CatalogError
    from flows.build import GateFailed

    handler: Callable[[argparse.Namespace], int] = args.func
    try:
        code = handler(args)
        sys.stdout.flush()  # inside the try: a closed pipe is found here, not at exit
        return code
    except BrokenPipeError:
        if not _stdout_reader_gone():
            raise  # a socket or another pipe broke: a real failure, with its traceback
        # the reader went away (`medcurate catalog files X | head`): stop quietly, as
        # Python's documentation advises, with nothing left to flush into the pipe at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILURE
    except (UsageError, CatalogError) as exc:
        print(f"medcurate: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except GateFailed as exc:
        print(f"medcurate: {exc}", file=sys.stderr)
        for line in exc.report.failed_expectations:
            print(f"  failed: {line}", file=sys.stderr)
        for path in exc.report.quarantined:
            print(f"  quarantined: {path}", file=sys.stderr)
        if exc.report.data_docs_path:
            print(f"  data docs: {exc.report.data_docs_path}", file=sys.stderr)
        return EXIT_GATE
    except KeyboardInterrupt:
        print("medcurate: interrupted", file=sys.stderr)
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
