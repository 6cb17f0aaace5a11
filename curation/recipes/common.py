"""What every family shares: work items, source resolution, the family stage, the planner.

A family (one module per published dataset family) says three things: which source
layouts it recognises (:meth:`Family.detect`), which work items a source yields
(:meth:`Family.items`, at plan time, cheap: file listing, tables, hashes), and which
canonical rows one item becomes (:meth:`Family.rows`, in the stage, on workers). The
planner here does the rest for every family the same way: resolve sources, dedup,
balance, and hand the items to ``flows/`` as a :class:`~curation.build.BuildPlan`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import posixpath
import random
import re
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa
from pydantic import BaseModel

from converters.base import ConversionError, ConvertOptions, SlicePolicy, json_dumps
from curation import hash_cache
from curation.balance import balance_items
from curation.build import BuildPlan, PlanContext, register_planner
from curation.dedup import dedup_items
from curation.ids import combine_hashes, stable_hash
from curation.recipes.model import (
    FAMILY_OPTIONS,
    Recipe,
    RecipeError,
    SourceSpec,
    family_options,
    recipe_for,
)
from curation.schema import SAMPLE_SCHEMA, samples_to_table
from curation.shards import DEFAULT_SHARD_BYTES
from curation.stages import Reject, Resources, Stage, StageOutput
from curation.version import pipeline_version

log = logging.getLogger(__name__)

#: one row per unit of work of a family build (a superset of converters' WORK_ITEM_SCHEMA,
#: so converters' ``convert_item`` reads these rows as they are)
FAMILY_ITEM_SCHEMA = pa.schema(
    [
        pa.field("uri", pa.string(), nullable=False),
        pa.field("key", pa.string(), nullable=False),  # '<source>/<relative path>[#inner]', unique
        pa.field("kind", pa.string(), nullable=False),
        pa.field("members", pa.list_(pa.string())),
        pa.field("label_uris", pa.list_(pa.string())),
        pa.field("sha256", pa.string(), nullable=False),
        pa.field("size_bytes", pa.int64(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("layout", pa.string(), nullable=False),
        pa.field("payload_json", pa.string()),  # the item's labels / question / segments ...
        pa.field("exact_key", pa.string()),  # exact-dedup key (null: never deduplicated)
        pa.field("near_uri", pa.string()),  # image to perceptually hash (null: no near-dup check)
    ]
)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".m4v", ".webm")

#: folder-name hints for sources without a modality header (used when the recipe sets none)
MODALITY_HINTS: tuple[tuple[str, str], ...] = (
    (r"fundus|retina|cfp|aptos|eyepacs|idrid|odir|messidor", "CFP"),
    (r"x-?ray|cxr|chest|radiograph|\bxr\b|nih", "XR"),
    (r"\bct\b|_ct\b|\bct_|computed", "CT"),
    (r"\bmri?\b|_mri?\b|\bmri?_|brats|t1|t2|flair", "MR"),
    (r"ultrasound|\bus\b|busi|echo", "US"),
    (r"endo|kvasir|colon|polyp", "ENDO"),
    (r"patho|histo|wsi", "PATH"),
    (r"derm|skin|isic|ham10000", "DERM"),
    (r"\boct\b", "OCT"),
    (r"surg|cataract|video", "SURG"),
)


def guess_modality(name: str, default: str = "OTHER") -> str:
    lowered = name.lower().replace("-", "_")
    for pattern, modality in MODALITY_HINTS:
        if re.search(pattern, lowered):
            return modality
    return default


def file_sha256(path: str | Path) -> str:
    """The file's SHA-256, read in chunks (a surgical video need not fit in memory); while
    a plan is made, through its hash cache, so an unchanged file is not read again."""
    return hash_cache.file_sha256(os.path.abspath(path))


@dataclasses.dataclass(frozen=True)
class ResolvedSource:
    """A source of the build: a folder, its layout, and its recipe settings.

    ``origin`` is what the user named when ``path`` is a staged copy (``s3://bucket/aptos``,
    ``catalog://name@v1``): messages show it instead of the cache folder.
    """

    name: str
    path: str
    layout: str
    spec: SourceSpec
    origin: str = ""

    def modality(self, default: str = "OTHER") -> str:
        return self.spec.modality or guess_modality(self.name, default)

    def public(self, text: str) -> str:
        """``text`` with the staged copy's folder written as its origin."""
        return public_text(text, {self.path: self.origin} if self.origin else {})


def public_text(text: str, origins: dict[str, str]) -> str:
    """Cache folders in ``text`` replaced by the URIs they mirror (longest folder first)."""
    for local in sorted(origins, key=len, reverse=True):
        text = text.replace(local, origins[local])
    return text


def work_item(
    source: ResolvedSource,
    path: str | Path,
    *,
    kind: str,
    key: str | None = None,
    payload: dict[str, Any] | None = None,
    sha256: str | None = None,
    members: Sequence[str] | None = None,
    label_uris: Sequence[str] | None = None,
    exact_key: str | None = "",
    near: bool = False,
) -> dict[str, Any]:
    """One work item row; ``exact_key=""`` means "the content hash", None "never dedup"."""
    path = str(path)
    rel = os.path.relpath(path, source.path) if os.path.isdir(source.path) else os.path.basename(path)
    digest = sha256 or file_sha256(path)
    extra = [file_sha256(u) for u in label_uris or ()]
    content = combine_hashes([digest, *extra]) if extra else digest
    return {
        "uri": path,
        "key": key or f"{source.name}/{rel}",
        "kind": kind,
        "members": list(members) if members else None,
        "label_uris": list(label_uris) if label_uris else None,
        "sha256": content,
        "size_bytes": sum(os.path.getsize(m) for m in (members or [path])) + sum(os.path.getsize(u) for u in label_uris or ()),
        "source": source.name,
        "layout": source.layout,
        "payload_json": json.dumps(payload, sort_keys=True) if payload is not None else None,
        "exact_key": content if exact_key == "" else exact_key,
        "near_uri": path if near else None,
    }


@dataclasses.dataclass
class Produced:
    """One canonical row a family made, and the facts its caption is grounded in."""

    row: dict[str, Any]
    facts: dict[str, Any] | None = None


@dataclasses.dataclass
class FamilyContext:
    """What ``Family.rows`` needs on a worker: the recipe, options and naming settings."""

    recipe: Recipe
    options: Any  # the family's options model
    sources: dict[str, SourceSpec]
    salt: str
    run_id: str
    pipeline_version: str

    def convert_options(self, source: str, modality: str | None = None, **extra: Any) -> ConvertOptions:
        return ConvertOptions(
            dataset=self.recipe.dataset_name(),
            source=source,
            salt=self.salt,
            modality=modality,
            split_ratios=self.recipe.splits.ratios(),
            deid_dates=self.recipe.deid.dates,
            burned_in=self.recipe.deid.burned_in,
            pipeline_version=self.pipeline_version,
            run_id=self.run_id,
            slices=extra.pop("slices", SlicePolicy()),
            **extra,
        )

    def rng(self, *parts: object) -> random.Random:
        """A generator seeded by the recipe seed and ``parts``: independent of batching."""
        return random.Random(int(stable_hash(self.recipe.seed, *parts, length=15), 16))

    def spec(self, source: str) -> SourceSpec:
        return self.sources.get(source) or SourceSpec(name=source)


def payload_of(item: dict[str, Any]) -> dict[str, Any]:
    text = item.get("payload_json")
    return json.loads(text) if text else {}


class Family:
    """Base of the five families; subclasses fill in the class attributes and methods."""

    name: ClassVar[str] = ""
    layouts: ClassVar[dict[str, str]] = {}  # layout name -> one-line description
    options_model: ClassVar[type[BaseModel]]
    caption_family: ClassVar[str] = "generic"
    #: curriculum stage by task when the source sets none (1 perception, 2 instruction, 3 reasoning/generation)
    curriculum: ClassVar[dict[str, int]] = {}
    partition_items: ClassVar[int | None] = None

    def detect(self, path: Path, nested: bool) -> str | None:
        """The layout of the folder ``path``, or None. ``nested``: a sub-folder of a root."""
        raise NotImplementedError

    def items(self, source: ResolvedSource, recipe: Recipe) -> tuple[list[dict[str, Any]], list[Reject]]:
        raise NotImplementedError

    def rows(self, item: dict[str, Any], ctx: FamilyContext) -> Sequence[Produced | Reject]:
        """Rows of one item; a Reject in the list drops a part (a clip) but not the item."""
        raise NotImplementedError

    def extra_stages(self, recipe: Recipe) -> list[Stage]:
        """Stages after the family stage (medq_uni: degradation, QA conversations)."""
        return []

    def stage_catalog(self, uri: str, cache: str, catalog: Callable[[], Any]) -> str:
        """A local folder holding the published dataset ``catalog://NAME[@VERSION]``;
        only families that read published datasets (medq_uni) override this."""
        readers = [f.name for f in FAMILIES.values() if type(f).stage_catalog is not Family.stage_catalog]
        raise RecipeError(
            f"source {uri}: {self.name} reads folders in its layouts (docs/families.md); "
            f"catalog:// sources are read by {', '.join(readers) or 'no family'}"
        )


FAMILIES: dict[str, Family] = {}


def register_family(family: Family) -> Family:
    FAMILIES[family.name] = family
    FAMILY_OPTIONS[family.name] = family.options_model
    register_planner(family.name)(functools.partial(plan_family, family.name))
    return family


# -- sources -----------------------------------------------------------------------------
CATALOG_SCHEME = "catalog://"


def is_remote(uri: str) -> bool:
    """A source the families cannot open by path: ``s3://``, ``gs://``, ``catalog://`` ..."""
    return "://" in uri and not uri.startswith("file://")


def source_cache_root(workdir: str) -> str:
    """Where remote sources are staged: ``$MEDCURATE_SOURCE_CACHE``, else
    ``<workdir>/cache/sources``; a remote workdir cannot hold files libraries open by
    path, so then the user's cache folder (``$XDG_CACHE_HOME`` or ``~/.cache``) is used."""
    if os.environ.get("MEDCURATE_SOURCE_CACHE"):
        return os.path.abspath(os.environ["MEDCURATE_SOURCE_CACHE"])
    return hash_cache.workdir_cache_dir(workdir, "sources")


def stage_sources(
    family_name: str,
    roots: Sequence[str],
    options: dict[str, Any],
    workdir: str,
    catalog: Callable[[], Any],
) -> list[str]:
    """``--source`` roots as local folders: remote trees mirrored, ``catalog://`` datasets
    written out, under :func:`source_cache_root` (``<cache>/<hash of the URI>/<name>``).

    Called before planning (``flows.build.prepare`` and ``medcurate build``); anything but
    a family build, and local roots, pass through unchanged. Only the recipe's source
    ``path``s are mirrored when every source names one. ``catalog`` opens the build's
    catalog (called only for ``catalog://`` roots).
    """
    if family_name not in FAMILIES or not any(is_remote(r) for r in roots):
        return list(roots)
    from curation.recipes.readers import mirror_tree

    family = FAMILIES[family_name]
    recipe = recipe_for(family_name, options)
    specs = recipe.sources or [SourceSpec()]
    cache = source_cache_root(workdir)
    staged = []
    for root in roots:
        if not is_remote(root):
            staged.append(root)
        elif root.startswith(CATALOG_SCHEME):
            if any(s.path not in ("", ".") for s in specs):
                raise RecipeError(f"source {root}: a catalog:// source is one dataset; its recipe sources take no 'path'")
            staged.append(family.stage_catalog(root, cache, catalog))
        else:
            subpaths = _relative_paths(specs)
            base = os.path.join(cache, stable_hash(root.rstrip("/"), length=16))
            staged.append(mirror_tree(root.rstrip("/"), base, subpaths).path)
    return staged


def _relative_paths(specs: Sequence[SourceSpec]) -> list[str]:
    """The sub-folders to mirror: every source's relative ``path``, or all (``[]``) when one has none."""
    paths = []
    for spec in specs:
        if "://" in spec.path or os.path.isabs(spec.path):
            continue  # read as it is (a URI here is refused by resolve_sources)
        rel = posixpath.normpath(spec.path.replace(os.sep, "/")) if spec.path else ""
        if rel in ("", "."):
            return []
        if rel == ".." or rel.startswith("../"):
            raise RecipeError(f"sources: path {spec.path!r} leaves the --source folder")
        paths.append(rel)
    return sorted(set(paths))


def staged_origin(path: Path) -> str:
    """The URI a staged folder copies (from the manifest its staging wrote), else ''."""
    from curation.recipes.readers import MIRROR_MANIFEST

    manifest = path.parent / MIRROR_MANIFEST
    try:
        with open(manifest) as fh:
            saved = json.load(fh)
    except (OSError, ValueError):
        return ""
    return str(saved.get("uri") or "") if saved.get("root") == path.name else ""


def resolve_sources(recipe: Recipe, roots: Sequence[str], family: Family) -> list[ResolvedSource]:
    """The recipe's sources under each root (``--source``); auto layouts are detected on the
    folder itself, else on each of its sub-folders (one source per matching sub-folder).

    Roots are local folders; remote ones are staged by :func:`stage_sources` first."""
    specs = recipe.sources or [SourceSpec()]
    roots = list(roots) or [""]
    resolved: list[ResolvedSource] = []
    for root in (r.removeprefix("file://") for r in roots):
        if is_remote(root):
            raise RecipeError(f"source {root!r}: remote sources are staged before planning (stage_sources); got the URI itself")
        top = str(Path(root).resolve()) if root else ""
        origin = staged_origin(Path(top)) if root else ""
        for spec in specs:
            if "://" in spec.path:
                raise RecipeError(f"source {spec.path!r}: give remote folders with --source (a recipe path is relative or local)")
            path = Path(spec.path if os.path.isabs(spec.path) or not root else os.path.join(root, spec.path))
            if not path.exists():
                shown = f"{origin}/{spec.path}" if origin and not os.path.isabs(spec.path) else str(path)
                raise RecipeError(f"sources: path {shown!r} does not exist (key 'path' = {spec.path!r})")
            try:
                found = _resolve_one(spec, path.resolve(), family)
            except RecipeError as exc:  # name the bucket, not the cache folder
                raise RecipeError(public_text(str(exc), {top: origin} if origin else {})) from None
            if origin:
                found = [dataclasses.replace(s, origin=_origin_of(s.path, top, origin)) for s in found]
            resolved.extend(found)
    names = [s.name for s in resolved]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise RecipeError(f"sources: names {dupes} occur twice; give each source a distinct 'name'")
    return resolved


def _origin_of(path: str, top: str, origin: str) -> str:
    rel = os.path.relpath(path, top).replace(os.sep, "/")
    return origin if rel == "." else f"{origin.rstrip('/')}/{rel}"


def _resolve_one(spec: SourceSpec, path: Path, family: Family) -> list[ResolvedSource]:
    if spec.layout != "auto":
        if spec.layout not in family.layouts:
            raise RecipeError(
                f"sources: layout: expected one of {['auto', *family.layouts]} for family {family.name}, got {spec.layout!r}"
            )
        return [ResolvedSource(spec.name or path.name, str(path), spec.layout, spec)]
    found = []
    for child in sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")):
        child_layout = family.detect(child, nested=True)
        if child_layout:
            name = f"{spec.name}_{child.name}" if spec.name else child.name
            found.append(ResolvedSource(name, str(child), child_layout, spec))
    # a folder of several datasets: one source per sub-folder; one dataset: the folder itself
    layout = family.detect(path, nested=False) if len(found) < 2 else None
    if layout:
        return [ResolvedSource(spec.name or path.name, str(path), layout, spec)]
    if not found:
        accepted = "; ".join(f"{k}: {v}" for k, v in family.layouts.items())
        raise RecipeError(
            f"sources: {path} holds no {family.name} source in a known layout, neither itself nor a sub-folder. "
            f"Accepted layouts (docs/families.md): {accepted}"
        )
    return found


# -- the stage ---------------------------------------------------------------------------
class Captioner:
    """Captions from facts: the family template, or the LLM captioner when configured."""

    def __init__(self, family: str, recipe: Recipe):
        self.family = family
        self.recipe = recipe
        self.stage: Stage | None = None

    def setup(self) -> None:
        spec = self.recipe.captioner
        if spec is None:
            return
        from synthesis.captioning import BackendConfig, CaptionStage

        self.stage = CaptionStage(
            self.family,
            BackendConfig(**spec.backend),
            spec.cache_path,
            max_generated_tokens=spec.max_generated_tokens,
        )
        self.stage.setup()

    def teardown(self) -> None:
        if self.stage is not None:
            self.stage.teardown()

    def captions(self, ids: list[str], facts: list[dict[str, Any]]) -> tuple[dict[str, tuple[str, str]], list[str]]:
        """sample_id -> (caption, source); and the ids whose facts were rejected (with why)."""
        from synthesis.captioning import FactsError, normalize_facts, render_template

        if self.stage is None:
            out: dict[str, tuple[str, str]] = {}
            bad: list[str] = []
            for sid, fact in zip(ids, facts, strict=True):
                try:
                    out[sid] = (render_template(self.family, normalize_facts(fact)), "template")
                except FactsError as exc:
                    bad.append(f"{sid}: {exc}")
            return out, bad
        table = pa.table({"sample_id": ids, "facts_json": [json.dumps(f, sort_keys=True) for f in facts]})
        result = self.stage.process(table)
        got = {
            r["sample_id"]: (r["caption"], r["caption_source"]) for r in result.table.to_pylist() if r.get("caption")
        }
        return got, [f"{r.source_uri}: {r.detail}" for r in result.rejects]


class FamilyStage(Stage):
    """Work items of one family → canonical rows (with captions); bad items → Rejects."""

    name: ClassVar[str] = "family"
    resources = Resources(cpus=1, memory_gb=2)
    batch_size = 4
    output_schema = SAMPLE_SCHEMA

    def __init__(
        self, family: str, recipe_json: str, sources_json: str, salt: str, run_id: str, version: str,
        origins: dict[str, str] | None = None,
    ):
        self.family_name = family
        self.origins = dict(origins or {})  # staged folder -> the URI the user gave
        self.recipe_json = recipe_json
        self.sources_json = sources_json
        self.salt = salt
        self.run_id = run_id
        self.version = version
        self.ctx: FamilyContext | None = None
        self.captioner: Captioner | None = None

    def setup(self) -> None:
        import curation.recipes  # noqa: F401  (families register on import)

        family = FAMILIES[self.family_name]
        recipe = Recipe.model_validate_json(self.recipe_json)
        sources = {k: SourceSpec.model_validate(v) for k, v in json.loads(self.sources_json).items()}
        self.ctx = FamilyContext(recipe, family_options(recipe), sources, self.salt, self.run_id, self.version)
        self.captioner = Captioner(family.caption_family, recipe)
        self.captioner.setup()

    def teardown(self) -> None:
        if self.captioner is not None:
            self.captioner.teardown()

    def params(self) -> dict[str, Any]:
        return {"family": self.family_name, "recipe": json.loads(self.recipe_json)}

    def process(self, batch: pa.Table) -> StageOutput:
        if self.ctx is None or self.captioner is None:
            self.setup()
        assert self.ctx is not None and self.captioner is not None
        family = FAMILIES[self.family_name]
        produced: list[Produced] = []
        rejects: list[Reject] = []
        for item in batch.to_pylist():
            out, rejected = self._rows_of(family, item)
            produced.extend(out)
            rejects.extend(rejected)
        with_facts = [p for p in produced if p.facts is not None and not p.row.get("caption")]
        if with_facts:
            texts, bad = self.captioner.captions([p.row["sample_id"] for p in with_facts], [p.facts or {} for p in with_facts])
            for p in with_facts:
                text = texts.get(p.row["sample_id"])
                if text is not None:
                    p.row["caption"] = text[0]
                    _fill_caption_turn(p.row, text[0])
                    add_step(p.row, {"step": "caption", "params": {"source": text[1], "family": self.captioner.family}})
            for detail in bad:
                log.warning("caption facts rejected: %s", detail)
        rows = []
        for p in produced:
            if p.row.get("curriculum_stage") is None:
                spec = self.ctx.spec(p.row["source"])
                p.row["curriculum_stage"] = spec.curriculum_stage or family.curriculum.get(p.row["task"])
            rows.append(p.row)
        return StageOutput(samples_to_table(rows), rejects)

    def _rows_of(self, family: Family, item: dict[str, Any]) -> tuple[list[Produced], list[Reject]]:
        assert self.ctx is not None
        stage = self.family_name
        try:
            out = family.rows(item, self.ctx)
        except ConversionError as err:
            return [], [Reject(item["key"], stage, err.reason, public_text(err.detail, self.origins))]
        except MemoryError:
            raise
        except Exception as exc:  # a family bug must not stop the run; the trace goes to the log
            log.warning("%s failed on %s:\n%s", stage, item["key"], traceback.format_exc())
            detail = public_text(f"{item['key']}: {type(exc).__name__}: {str(exc)[:300]}", self.origins)
            return [], [Reject(item["key"], stage, "converter_error", detail)]
        produced = [o for o in out if isinstance(o, Produced)]
        rejects = [dataclasses.replace(o, detail=public_text(o.detail, self.origins)) for o in out if isinstance(o, Reject)]
        if not produced and not rejects:
            rejects = [Reject(item["key"], stage, "no_samples", f"{item['key']}: the item produced no sample")]
        return produced, rejects


CAPTION_PLACEHOLDER = "{caption}"


def add_step(row: dict[str, Any], step: dict[str, Any]) -> None:
    """Append ``step`` (``{"step": name, "params": {...}}``) to a row's provenance."""
    steps = json.loads(row["provenance"]["steps_json"])
    steps.append(step)
    row["provenance"]["steps_json"] = json_dumps(steps)


def _fill_caption_turn(row: dict[str, Any], caption: str) -> None:
    """Conversations built before the caption existed carry a placeholder answer."""
    for turn in row.get("conversations") or []:
        if CAPTION_PLACEHOLDER in turn["value"]:
            turn["value"] = turn["value"].replace(CAPTION_PLACEHOLDER, caption)


def family_stages(
    family: str, recipe_json: str, sources_json: str, salt: str, run_id: str, version: str,
    origins: dict[str, str] | None = None,
) -> list[Stage]:
    import curation.recipes  # noqa: F401

    recipe = Recipe.model_validate_json(recipe_json)
    stage = FamilyStage(family, recipe_json, sources_json, salt, run_id, version, origins=origins)
    return [stage, *FAMILIES[family].extra_stages(recipe)]


# -- the planner -------------------------------------------------------------------------
def plan_family(family_name: str, ctx: PlanContext) -> BuildPlan:
    """Plan a family build: recipe (defaults + ``ctx.options``), sources, dedup, balance."""
    family = FAMILIES[family_name]
    recipe = recipe_for(family_name, ctx.options, origin=f"recipe {family_name} (defaults + options)")
    if ctx.dataset and ctx.dataset != recipe.dataset_name():
        recipe = recipe.model_copy(update={"dataset": ctx.dataset})
    sources = resolve_sources(recipe, ctx.sources, family)
    items: list[dict[str, Any]] = []
    rejects: list[Reject] = []
    with hash_cache.open_cache(ctx.workdir) as hashes, hash_cache.activated(hashes):
        for source in sources:
            try:
                found, rejected = family.items(source, recipe)
            except ConversionError as err:  # an unreadable label table rejects its source, not the build
                found, rejected = [], [Reject(f"{source.name}/", family.name, err.reason, err.detail)]
            items.extend(found)
            rejects.extend(dataclasses.replace(r, detail=source.public(r.detail)) for r in rejected)
        items, dropped = dedup_items(
            items, exact=recipe.dedup.exact, near=recipe.dedup.near, threshold=recipe.dedup.hamming_threshold
        )
    rejects.extend(dropped)
    items, sampled_out = balance_items(
        items, {s.name: (s.spec.sample_ratio, s.spec.cap) for s in sources}, seed=recipe.seed
    )
    rejects.extend(sampled_out)
    recipe_json = recipe.to_json()
    sources_json = json.dumps({s.name: s.spec.model_dump(mode="json") for s in sources}, sort_keys=True)
    version = pipeline_version()
    origins = {s.path: s.origin for s in sources if s.origin}  # not in the fingerprint: where, not what
    return BuildPlan(
        dataset=recipe.dataset_name(),
        recipe=family_name,
        items=items,
        stage_factory=functools.partial(
            family_stages, family_name, recipe_json, sources_json, ctx.salt, ctx.run_id, version, origins=origins
        ),
        fingerprint=stable_hash(family_name, recipe_json, sources_json, version, ctx.salt, length=40),
        item_schema=FAMILY_ITEM_SCHEMA,
        rejects=rejects,
        partition_items=recipe.partition_items or family.partition_items,
        shard_bytes=recipe.shard_bytes or DEFAULT_SHARD_BYTES,
        family=family_name,
        gate=dict(recipe.gate),
    )
