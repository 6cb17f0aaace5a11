"""Great Expectations (GX Core 1.x) suites, declared in code and versioned.

Each suite is built by a function from :class:`Tolerances` (the recipe's ``gate:``
block), so the thresholds that judged a build are the ones recorded in its suite's
``meta``. Bump a suite's entry in :data:`SUITE_VERSIONS` whenever an expectation is
added, removed or changes meaning; the version is part of the suite name, so Data
Docs and validation results say which rules judged a shard.

Suites validate the flat table of :func:`quality_checks.metrics.validation_table`
(scalar sample columns + metrics) as a pandas dataframe. Row-level *soft* metrics
(image quality, text and video ranges, severity, grounding) take the recipe's
``mostly``; structural rules (schema, vocabularies, uniqueness, decoding, mask
geometry, PHI, leakage) are strict.

GX is slow to import (~4 s): it is imported inside functions only.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import json
import math
import os
import sys
import types
from collections.abc import Mapping
from typing import Any

from curation.schema import MODALITIES, SPLITS, TASKS, VERDICTS
from quality_checks.metrics import METRICS_SCHEMA, SCALAR_COLUMNS

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

FAMILIES: tuple[str, ...] = ("unimed", "imed", "retinalogos", "ophora", "medq_uni")

#: suite -> version; the version is part of the GX suite name
SUITE_VERSIONS: dict[str, str] = {
    "common": "1",
    "unimed": "1",
    "imed": "1",
    "retinalogos": "1",
    "ophora": "1",
    "medq_uni": "1",
    "build": "1",
}

#: columns added by the gate before validation (per-subject split count)
SUBJECT_SPLIT_COUNT = "subject_split_count"


@dataclasses.dataclass(frozen=True)
class Tolerances:
    """Thresholds of the gate; the recipe's ``gate:`` mapping overrides any of them.

    ``mostly`` is the fraction of rows a soft row-level expectation must hold for.
    ``max_failed_shard_fraction`` is the share of shards that may be quarantined before
    the whole build fails. ``max_row_count_change`` (relative) and
    ``max_modality_share_change`` (absolute change of a modality's share) compare with
    the previous published version; ``None`` disables a check.
    """

    mostly: float = 1.0
    max_failed_shard_fraction: float = 0.0
    max_row_count_change: float | None = 0.5
    max_modality_share_change: float | None = 0.2
    min_dynamic_range: float = 0.05
    max_saturated_fraction: float = 0.5
    max_black_fraction: float = 0.98
    min_blur_laplacian_var: float = 1.0
    min_mask_area_fraction: float = 0.0005
    min_text_length: int = 1
    max_text_length: int = 8000
    max_phi_hits: int = 0
    min_video_duration_s: float = 1.0
    max_video_duration_s: float = 30.0
    min_video_fps: float = 5.0
    max_video_fps: float = 120.0
    max_video_frozen_fraction: float = 0.5
    max_video_black_fraction: float = 0.5

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None) -> Tolerances:
        """Tolerances from a recipe dict; unknown keys are a configuration error."""
        if not values:
            return cls()
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown quality tolerance(s) {unknown}; known keys: {sorted(known)}")
        nullable = {f.name for f in dataclasses.fields(cls) if "None" in str(f.type)}  # the `float | None` fields
        for key, value in values.items():
            optional = key in nullable
            if (value is None and not optional) or (value is not None and (isinstance(value, bool) or not isinstance(value, int | float))):
                raise ValueError(f"gate.{key} must be a number{' or null' if optional else ''}, got {value!r}")
            if value is not None and (math.isnan(value) or value < 0):
                raise ValueError(f"gate.{key} must be a number that is not negative, got {value!r}")
        tolerances = cls(**dict(values))
        if not 0.0 < tolerances.mostly <= 1.0:
            raise ValueError(f"gate.mostly must be in (0, 1], got {tolerances.mostly}")
        for key in _SHARES:
            value = getattr(tolerances, key)
            if value is not None and value > 1.0:
                raise ValueError(f"gate.{key} is a fraction of 0..1, got {value}")
        for low, high in _RANGES:
            if getattr(tolerances, low) > getattr(tolerances, high):
                raise ValueError(f"gate.{low} ({getattr(tolerances, low)}) is above gate.{high} ({getattr(tolerances, high)})")
        return tolerances

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


#: tolerances that are fractions of 0..1 (dynamic range is measured on 0..1 too)
_SHARES = (
    "max_failed_shard_fraction", "max_modality_share_change", "min_dynamic_range", "max_saturated_fraction",
    "max_black_fraction", "min_mask_area_fraction", "max_video_frozen_fraction", "max_video_black_fraction",
)
#: (lower, upper) bounds of one range check
_RANGES = (
    ("min_text_length", "max_text_length"),
    ("min_video_duration_s", "max_video_duration_s"),
    ("min_video_fps", "max_video_fps"),
)


#: modules GX imports at start-up only for expectations and renderers our suites do not
#: declare: ``scipy.stats`` for the KL-divergence and KS-test expectations, ``altair`` for
#: the KL expectation's charts. They are ~0.7 CPU-s of GX's ~1.7 s import (``python -X
#: importtime``), paid by every build process; deferred, they load on first use instead.
GX_DEFERRED_MODULES = ("scipy.stats", "altair")


def import_gx() -> Any:
    """Import great_expectations with analytics off (lazily: the import costs seconds),
    with :data:`GX_DEFERRED_MODULES` deferred to their first use.

    The placeholders stand in ``sys.modules`` only while GX imports: GX's modules keep
    them (``stats.entropy`` inside its functions loads scipy.stats then), and every
    later ``import scipy.stats`` anywhere is an ordinary import of the real module.
    """
    os.environ["GX_ANALYTICS_ENABLED"] = "false"
    if "great_expectations" in sys.modules:
        import great_expectations as gx

        return gx
    placeholders = [p for name in GX_DEFERRED_MODULES if (p := defer_import(name)) is not None]
    try:
        import great_expectations as gx
    finally:
        for placeholder in placeholders:
            if sys.modules.get(placeholder.__name__) is placeholder:
                del sys.modules[placeholder.__name__]
    return gx


class DeferredModule(types.ModuleType):
    """Stands in for a module until one of its attributes is used; then imports the
    module and forwards every attribute to it.

    ``importlib.util.LazyLoader`` is the standard library's tool for this, but on Python
    3.11 the import system reads a placeholder's ``__spec__`` on every ``import x`` of an
    already-imported name, which makes the LazyLoader execute the module at once. This
    placeholder keeps ``__spec__`` None, so ``import x`` and ``from x import y`` hand it
    out while it is in ``sys.modules``; its first real attribute imports x.
    """

    def __getattr__(self, attr: str) -> Any:
        return getattr(self.load(), attr)

    def __dir__(self) -> list[str]:
        return dir(self.load())

    def load(self) -> types.ModuleType:
        """The real module, imported now if it was not yet. No lock of our own: the import
        system serialises concurrent imports of one module, and storing the same module
        twice is harmless."""
        target = self.__dict__.get("_deferred_target")
        if target is None:
            if sys.modules.get(self.__name__) is self:
                del sys.modules[self.__name__]
            target = importlib.import_module(self.__name__)
            self.__dict__["_deferred_target"] = target
        return target  # type: ignore[no-any-return]


def defer_import(name: str) -> DeferredModule | None:
    """Put a :class:`DeferredModule` for ``name`` in ``sys.modules`` and return it, unless
    ``name`` is imported already or not installed (its parent package is imported to
    find out): then None."""
    if name in sys.modules:
        return None
    try:
        if importlib.util.find_spec(name) is None:
            return None
    except (ImportError, ValueError):
        return None
    placeholder = DeferredModule(name)
    sys.modules[name] = placeholder
    return placeholder


def suite_name(suite: str) -> str:
    return f"medcurate.{suite}.v{SUITE_VERSIONS[suite]}"


#: fields GX ignores when it decides two expectations of a suite are the same one
_IDENTITY_EXCLUDED = {"id", "rendered_content", "notes", "meta"}


def _distinct(expectations: list[Any]) -> list[Any]:
    """``expectations`` without repeats, first kept, by GX's own rule (same type, same
    fields but id/meta/notes): e.g. a family's ``caption_length`` range equals the
    common one when ``min_text_length`` is 0."""
    seen: set[tuple[str, str]] = set()
    kept = []
    for expectation in expectations:
        fields = expectation.dict(exclude=_IDENTITY_EXCLUDED)
        key = (expectation.expectation_type, json.dumps(fields, sort_keys=True, default=str))
        if key not in seen:
            seen.add(key)
            kept.append(expectation)
    return kept


def _suite(name: str, meta: dict[str, Any], expectations: list[Any]) -> Any:
    """A GX suite holding ``expectations``, built in one constructor call.

    ``ExpectationSuite.add_expectation`` compares each new expectation with every one
    already added and asks the current context's store whether the suite was saved: ~25 ms
    for a 37-expectation shard suite, paid by every gate run. The constructor does
    neither: repeats are dropped first by the same rule (:func:`_distinct`), and since it
    logs and skips an expectation it cannot process, the count is checked here.
    """
    gx = import_gx()
    distinct = _distinct(expectations)
    result = gx.ExpectationSuite(name=name, meta=meta, expectations=distinct)
    if len(result.expectations) != len(distinct):
        raise ValueError(
            f"suite {name}: GX kept {len(result.expectations)} of {len(distinct)} expectations "
            "(see the GX log for the configuration it refused)"
        )
    return result


def _new_suite(suite: str, tolerances: Tolerances, expectations: list[Any]) -> Any:
    return _suite(
        suite_name(suite),
        {"medcurate_suite": suite, "suite_version": SUITE_VERSIONS[suite], "tolerances": tolerances.as_dict()},
        expectations,
    )


def common_suite(tolerances: Tolerances) -> Any:
    """Rules every family obeys: schema, vocabularies, identity, decoding, PHI, leakage."""
    return _new_suite("common", tolerances, common_expectations(tolerances))


def common_expectations(tolerances: Tolerances) -> list[Any]:
    import great_expectations.expectations as gxe

    strict = 1.0
    soft = tolerances.mostly
    # one expectation for "every schema and metric column is present" (extra columns allowed)
    exps: list[Any] = [
        gxe.ExpectTableColumnsToMatchSet(
            column_set=[*SCALAR_COLUMNS, *(f.name for f in METRICS_SCHEMA if f.name != "sample_id")],
            exact_match=False,
        )
    ]
    exps += [
        gxe.ExpectColumnValuesToNotBeNull(column=c)
        for c in ("sample_id", "dataset", "source", "source_uri", "source_sha256", "modality", "task", "split")
    ]
    exps += [
        gxe.ExpectColumnValuesToBeUnique(column="sample_id"),
        gxe.ExpectColumnValuesToBeInSet(column="modality", value_set=list(MODALITIES)),
        gxe.ExpectColumnValuesToBeInSet(column="task", value_set=list(TASKS)),
        gxe.ExpectColumnValuesToBeInSet(column="split", value_set=list(SPLITS)),
        gxe.ExpectColumnValuesToBeInSet(column="quality_verdict", value_set=list(VERDICTS)),
        gxe.ExpectColumnValuesToBeBetween(column="degradation_severity", min_value=1, max_value=3),
        gxe.ExpectColumnValuesToBeBetween(column="curriculum_stage", min_value=1, max_value=3),
        gxe.ExpectColumnValuesToBeInSet(column="image_decodes", value_set=[True]),
        gxe.ExpectColumnValuesToBeInSet(column="image_size_matches_declared", value_set=[True]),
        gxe.ExpectColumnValuesToBeInSet(column="mask_decodes", value_set=[True]),
        gxe.ExpectColumnValuesToBeInSet(column="video_decodes", value_set=[True]),
        gxe.ExpectColumnValuesToBeInSet(column="image_bit_depth", value_set=[1, 8, 16]),
        gxe.ExpectColumnValuesToBeBetween(
            column="dynamic_range", min_value=tolerances.min_dynamic_range, max_value=1.0, mostly=soft
        ),
        gxe.ExpectColumnValuesToBeBetween(
            column="saturated_fraction", min_value=0.0, max_value=tolerances.max_saturated_fraction, mostly=soft
        ),
        gxe.ExpectColumnValuesToBeBetween(
            column="black_fraction", min_value=0.0, max_value=tolerances.max_black_fraction, mostly=soft
        ),
        gxe.ExpectColumnValuesToBeBetween(
            column="blur_laplacian_var", min_value=tolerances.min_blur_laplacian_var, mostly=soft
        ),
        gxe.ExpectColumnValuesToBeBetween(
            column="phi_hits", min_value=0, max_value=tolerances.max_phi_hits, mostly=strict
        ),
        gxe.ExpectColumnValuesToBeBetween(
            column="caption_length", min_value=0, max_value=tolerances.max_text_length, mostly=soft
        ),
        gxe.ExpectColumnValuesToBeBetween(
            column="instruction_length", min_value=0, max_value=tolerances.max_text_length, mostly=soft
        ),
        # split leakage inside the shard: every subject appears in exactly one split
        gxe.ExpectColumnValuesToBeInSet(column=SUBJECT_SPLIT_COUNT, value_set=[1]),
    ]
    return _tagged(exps, "common")


def _mask_expectations(tolerances: Tolerances, *, required: bool) -> list[Any]:
    import great_expectations.expectations as gxe

    exps: list[Any] = [
        gxe.ExpectColumnValuesToBeInSet(column="mask_inside_image", value_set=[True]),
        gxe.ExpectColumnValuesToBeInSet(column="box_contains_mask", value_set=[True]),
        gxe.ExpectColumnValuesToBeInSet(column="mask_area_matches_declared", value_set=[True]),
        gxe.ExpectColumnValuesToBeBetween(column="clicks_inside_mask_fraction", min_value=1.0, max_value=1.0),
        gxe.ExpectColumnValuesToBeBetween(
            column="mask_area_fraction_min", min_value=tolerances.min_mask_area_fraction, max_value=1.0
        ),
    ]
    if required:
        exps.append(gxe.ExpectColumnValuesToBeBetween(column="n_masks", min_value=1))
        exps.append(gxe.ExpectColumnValuesToNotBeNull(column="mask_inside_image"))
    return exps


def _text_required(column: str, tolerances: Tolerances) -> list[Any]:
    import great_expectations.expectations as gxe

    return [
        gxe.ExpectColumnValuesToNotBeNull(column=column, mostly=tolerances.mostly),
        gxe.ExpectColumnValuesToBeBetween(
            column=column, min_value=tolerances.min_text_length, max_value=tolerances.max_text_length,
            mostly=tolerances.mostly,
        ),
    ]


def family_suite(family: str, tolerances: Tolerances) -> Any:
    """The suite of one dataset family (in addition to :func:`common_suite`)."""
    return _new_suite(family, tolerances, family_expectations(family, tolerances))


def shard_suite(family: str | None, tolerances: Tolerances) -> Any:
    """Common + family expectations in one suite, so a shard costs one GX run (GX's
    overhead is per run and per expectation, not per row). Every expectation keeps the
    suite it was declared in (``meta["suite"]``) and failures are reported under it."""
    expectations = common_expectations(tolerances)
    if family:
        expectations += family_expectations(family, tolerances)
    suites = ["common", *([family] if family else [])]
    return _suite(
        "medcurate.shard." + "+".join(suite_name(s).split(".", 1)[1] for s in suites),
        {"medcurate_suites": {s: SUITE_VERSIONS[s] for s in suites}, "tolerances": tolerances.as_dict()},
        expectations,
    )


def _tagged(expectations: list[Any], suite: str) -> list[Any]:
    for expectation in expectations:
        expectation.meta = {**(expectation.meta or {}), "suite": suite_name(suite)}
    return expectations


def family_expectations(family: str, tolerances: Tolerances) -> list[Any]:
    if family not in FAMILIES:
        raise ValueError(f"unknown dataset family {family!r}; known families: {list(FAMILIES)}")
    import great_expectations.expectations as gxe

    soft = tolerances.mostly
    exps: list[Any]
    if family == "imed":
        exps = _mask_expectations(tolerances, required=True)
        exps.append(gxe.ExpectColumnValuesToBeInSet(column="task", value_set=["interactive_seg", "referring_seg"]))
    elif family == "unimed":
        exps = _mask_expectations(tolerances, required=False)
        exps += _text_required("instruction_length", tolerances)
        exps.append(gxe.ExpectColumnValuesToNotBeNull(column="curriculum_stage"))
    elif family == "retinalogos":
        exps = _text_required("caption_length", tolerances)
        exps += [
            gxe.ExpectColumnValuesToBeInSet(column="grounding_ok", value_set=[True], mostly=soft),
            gxe.ExpectColumnValuesToBeInSet(column="modality", value_set=["CFP"]),
            gxe.ExpectColumnValuesToBeBetween(column="n_images", min_value=1),
        ]
    elif family == "ophora":
        exps = [
            gxe.ExpectColumnValuesToNotBeNull(column="video_decodes"),
            gxe.ExpectColumnValuesToBeBetween(
                column="video_duration_s", min_value=tolerances.min_video_duration_s,
                max_value=tolerances.max_video_duration_s, mostly=soft,
            ),
            gxe.ExpectColumnValuesToBeBetween(
                column="video_fps", min_value=tolerances.min_video_fps, max_value=tolerances.max_video_fps, mostly=soft
            ),
            gxe.ExpectColumnValuesToBeBetween(
                column="video_frozen_fraction", min_value=0.0, max_value=tolerances.max_video_frozen_fraction, mostly=soft
            ),
            gxe.ExpectColumnValuesToBeBetween(
                column="video_black_fraction", min_value=0.0, max_value=tolerances.max_video_black_fraction, mostly=soft
            ),
            gxe.ExpectColumnValuesToBeInSet(column="task", value_set=["video_instruction"]),
        ]
        exps += _text_required("instruction_length", tolerances)
    elif family == "medq_uni":
        exps = [
            gxe.ExpectColumnValuesToNotBeNull(column="degradation_type", mostly=soft),
            gxe.ExpectColumnValuesToBeInSet(column="severity_consistent", value_set=[True], mostly=soft),
            gxe.ExpectColumnValuesToBeInSet(column="verdict_consistent", value_set=[True]),
            gxe.ExpectColumnValuesToNotBeNull(column="quality_verdict"),
            gxe.ExpectColumnValuesToBeBetween(column="degradation_psnr_db", min_value=0.0, max_value=100.0),
        ]
    else:  # pragma: no cover - FAMILIES is checked above
        raise AssertionError(family)
    return _tagged(exps, family)


def build_rows_suite(tolerances: Tolerances, previous_rows: int | None) -> Any:
    """Build-level rules over every passed row: global uniqueness, leakage, row count."""
    return _new_suite("build", tolerances, build_rows_expectations(tolerances, previous_rows))


def build_rows_expectations(tolerances: Tolerances, previous_rows: int | None) -> list[Any]:
    import great_expectations.expectations as gxe

    exps: list[Any] = [
        gxe.ExpectColumnValuesToBeUnique(column="sample_id"),
        gxe.ExpectColumnValuesToBeInSet(column=SUBJECT_SPLIT_COUNT, value_set=[1]),
    ]
    change = tolerances.max_row_count_change
    if previous_rows is not None and change is not None:
        exps.append(
            gxe.ExpectTableRowCountToBeBetween(
                min_value=max(0, math.floor(previous_rows * (1.0 - change))),
                max_value=math.ceil(previous_rows * (1.0 + change)),
            )
        )
    return _tagged(exps, "build")


def modality_mix_suite(tolerances: Tolerances) -> Any:
    """Drift of the modality mix against the previous version (one row per modality)."""
    import great_expectations.expectations as gxe

    limit = tolerances.max_modality_share_change
    return _suite(
        f"medcurate.modality_mix.v{SUITE_VERSIONS['build']}",
        {"medcurate_suite": "modality_mix", "suite_version": SUITE_VERSIONS["build"], "tolerances": tolerances.as_dict()},
        [gxe.ExpectColumnValuesToBeBetween(column="share_change", min_value=0.0, max_value=limit)],
    )
