"""The recipe model: what a family build reads from ``recipes/*.yaml``, validated.

A recipe is declarative: which family, which sources (with per-source sampling ratio,
cap, curriculum stage and modality), how to split, dedup and caption, and the family's
own options. Every key is validated by pydantic with ``extra="forbid"`` so a typo is an
error, and :class:`RecipeError` names the file, the key path and what was expected.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from converters.base import BurnedInPolicy, DatePolicy, SlicePolicy
from curation.schema import MODALITIES

FAMILY_NAMES: tuple[str, ...] = ("unimed", "imed", "retinalogos", "ophora", "medq_uni")
DEFAULTS_DIR = Path(__file__).resolve().parent / "defaults"


def _slice_policy_text(value: str) -> str:
    SlicePolicy.parse(value)
    return value


#: a recipe option naming which slices of a 3D input are used (``all | every:N | middle``),
#: checked when the recipe loads
SliceSpec = Annotated[str, AfterValidator(_slice_policy_text)]


class RecipeError(ValueError):
    """A recipe that cannot be used; the message names the file, key and expected value."""


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SourceSpec(StrictModel):
    """One source of a build: a folder in a public layout, and how much of it to use."""

    name: str | None = None  # default: the folder's name
    path: str = "."  # relative to each --source root (or to the recipe file), or absolute
    layout: str = "auto"  # a layout of the family (docs/families.md), or auto-detect
    modality: str | None = None  # for inputs without a modality header
    sample_ratio: float = Field(default=1.0, gt=0)  # GMAI-VL's sample_ratio: <1 subsamples, >1 repeats
    cap: int | None = Field(default=None, ge=1)  # at most this many items (after the ratio)
    curriculum_stage: int | None = Field(default=None, ge=1, le=3)  # default: by task
    options: dict[str, Any] = Field(default_factory=dict)  # layout options (label names, ...)

    @field_validator("modality")
    @classmethod
    def _modality(cls, value: str | None) -> str | None:
        if value is not None and value not in MODALITIES:
            raise ValueError(f"expected one of {list(MODALITIES)}, got {value!r}")
        return value


class SplitSpec(StrictModel):
    train: float = Field(default=0.8, ge=0)
    val: float = Field(default=0.1, ge=0)
    test: float = Field(default=0.1, ge=0)

    @model_validator(mode="after")
    def _sum_to_one(self) -> SplitSpec:
        if abs(self.train + self.val + self.test - 1.0) > 1e-6:
            raise ValueError(f"train + val + test must sum to 1, got {self.train + self.val + self.test:g}")
        return self

    def ratios(self) -> tuple[float, float, float]:
        return (self.train, self.val, self.test)


class DedupSpec(StrictModel):
    exact: bool = True
    near: bool = True
    #: near duplicates: 255-bit pHash within this Hamming distance (see curation/dedup.py)
    hamming_threshold: int = Field(default=12, ge=0, le=64)


class DeidSpec(StrictModel):
    """How DICOM sources are de-identified beyond what always happens (converters/deid.py)."""

    dates: DatePolicy = "shift"  # per-subject salted shift, or removed
    #: declared: reject BurnedInAnnotation=YES; strict: also ultrasound, fluoroscopy,
    #: endoscopy, photographs and secondary captures unless the header says NO
    burned_in: BurnedInPolicy = "declared"


class CaptionerSpec(StrictModel):
    """An LLM rewrite of the template captions (synthesis.captioning); absent: templates."""

    backend: dict[str, Any]  # synthesis.captioning.BackendConfig keyword arguments
    cache_path: str | None = None
    max_generated_tokens: int | None = Field(default=None, ge=1)


class Recipe(StrictModel):
    family: Literal["unimed", "imed", "retinalogos", "ophora", "medq_uni"]
    dataset: str | None = None  # catalog table name; default: the family name
    description: str = ""
    seed: int = 0
    sources: list[SourceSpec] = Field(default_factory=list)  # empty: auto-detect under --source
    splits: SplitSpec = SplitSpec()
    dedup: DedupSpec = DedupSpec()
    deid: DeidSpec = DeidSpec()
    captioner: CaptionerSpec | None = None
    options: dict[str, Any] = Field(default_factory=dict)  # family options (validated per family)
    gate: dict[str, Any] = Field(default_factory=dict)
    partition_items: int | None = Field(default=None, ge=1)
    shard_bytes: int | None = Field(default=None, ge=1024)

    def dataset_name(self) -> str:
        return self.dataset or self.family

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), sort_keys=True)


#: family name -> pydantic model of its ``options`` (filled by the family modules)
FAMILY_OPTIONS: dict[str, type[BaseModel]] = {}
#: family name -> check of one source's ``options`` (raises ValidationError), filled by the family modules
SOURCE_OPTIONS_CHECKS: dict[str, Callable[[SourceSpec], None]] = {}


def format_validation_error(exc: ValidationError, origin: str, prefix: str = "") -> str:
    lines = []
    for err in exc.errors():
        key = prefix + ".".join(str(p) for p in err["loc"]) if err["loc"] else (prefix.rstrip(".") or "(top level)")
        message = err["msg"]
        if err["type"] == "extra_forbidden":
            message = "unknown key (check the spelling; see docs/families.md for the keys)"
        got = err.get("input")
        got_text = "" if err["type"] in ("missing", "extra_forbidden") else f" (got {json.dumps(got, default=str)[:80]})"
        lines.append(f"{origin}: {key}: {message}{got_text}")
    return "\n".join(lines)


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``override`` on top of ``base``: mappings merge key by key, anything else replaces."""
    merged = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _check_gate_tolerances(gate: Mapping[str, Any], origin: str) -> None:
    """The ``gate:`` keys and values, checked with the recipe (a typo would otherwise
    surface only at the gate, after the whole conversion)."""
    from quality_checks.suites import Tolerances

    try:
        Tolerances.from_mapping(gate)
    except (TypeError, ValueError) as exc:
        raise RecipeError(f"{origin}: gate: {exc}") from None


def validate_recipe(data: Mapping[str, Any], origin: str) -> Recipe:
    """A :class:`Recipe` from a mapping, or :class:`RecipeError` naming ``origin`` and the key."""
    if not isinstance(data, Mapping):
        raise RecipeError(f"{origin}: a recipe must be a mapping of keys, got {type(data).__name__}")
    try:
        recipe = Recipe.model_validate(dict(data))
    except ValidationError as exc:
        raise RecipeError(format_validation_error(exc, origin)) from None
    _check_gate_tolerances(recipe.gate, origin)
    options_model = FAMILY_OPTIONS.get(recipe.family)
    if options_model is not None:
        try:
            options_model.model_validate(recipe.options)
        except ValidationError as exc:
            raise RecipeError(format_validation_error(exc, origin, prefix="options.")) from None
    check = SOURCE_OPTIONS_CHECKS.get(recipe.family)
    if check is not None:
        for number, spec in enumerate(recipe.sources):
            try:
                check(spec)
            except ValidationError as exc:
                raise RecipeError(format_validation_error(exc, origin, prefix=f"sources.{number}.options.")) from None
    return recipe


def family_options(recipe: Recipe) -> Any:
    """The recipe's family options as the family's typed model (defaults filled in)."""
    return FAMILY_OPTIONS[recipe.family].model_validate(recipe.options)


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise RecipeError(f"{path}: recipe file not found") from None
    except yaml.YAMLError as exc:
        raise RecipeError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: a recipe must be a mapping of keys, got {type(data).__name__}")
    return data


def default_recipe_path(family: str) -> Path:
    return DEFAULTS_DIR / f"{family}.yaml"


def default_recipe_data(family: str) -> dict[str, Any]:
    if family not in FAMILY_NAMES:
        raise RecipeError(f"no recipe named {family!r}; known families: {list(FAMILY_NAMES)}")
    return read_yaml(default_recipe_path(family))


def recipe_for(family: str, overrides: Mapping[str, Any] | None = None, origin: str | None = None) -> Recipe:
    """The family's default recipe with ``overrides`` merged on top, validated."""
    data = default_recipe_data(family)
    if overrides:
        if "family" in overrides and overrides["family"] != family:
            raise RecipeError(f"{origin or 'options'}: family: expected {family!r}, got {overrides['family']!r}")
        data = deep_merge(data, overrides)
    if origin is None:
        origin = str(default_recipe_path(family)) + (" + build options" if overrides else "")
    return validate_recipe(data, origin)


def is_recipe_file(ref: str) -> bool:
    """Whether a recipe reference names a file (else a family or ``convert``)."""
    return ref.endswith((".yaml", ".yml")) or os.path.isfile(ref)


def read_recipe_file(path: str | Path) -> dict[str, Any]:
    """A recipe file's keys, its ``family`` checked (the defaults are not merged yet)."""
    data = read_yaml(Path(path))
    family = data.get("family")
    if family not in FAMILY_NAMES:
        raise RecipeError(f"{path}: family: expected one of {list(FAMILY_NAMES)}, got {family!r}")
    return data


def load_recipe_file(path: str | Path) -> Recipe:
    """A recipe file: its keys on top of its family's defaults. Relative source paths
    resolve against each ``--source`` root, or the file's folder when none is given."""
    data = read_recipe_file(path)
    return recipe_for(data["family"], data, origin=str(path))
