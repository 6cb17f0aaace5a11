"""Prefect deployments: one per dataset, each on a cron schedule (nightly by default).

``medcurate serve`` registers them with the Prefect API (a ``prefect server start``
server, or Prefect Cloud) and runs them when they are due, or when someone triggers
them from the UI or ``prefect deployment run``. Every deployment runs the same flow,
``medcurate-build`` (:func:`flows.prefect_flows.build_dataset`), with its own
parameters: recipe, sources, dataset, version, executor and cluster addresses.

Without a configuration file there is one deployment per dataset family, reading its
sources from ``<workdir>/sources/<family>`` (the layout of the public dataset, see
docs/families.md). A YAML file names them explicitly::

    defaults:                     # applied to every deployment
      cron: "0 2 * * *"           # 02:00 every night
      timezone: UTC
      executor: dask
      dask_address: tcp://scheduler:8786
    deployments:
      - name: imed-nightly
        recipe: imed
        dataset: imed
        sources: [s3://bucket/raw/Task03_Liver]
        cron: "30 1 * * *"
        options: {options: {slices: "every:2"}}   # recipe keys (docs/families.md), checked when served
        keep_last: 14                 # retention: after each passed build, expire all but the
        keep_versions: [v3]           # newest 14 versions and v3, then remove unheld files
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import yaml

DEFAULT_CRON = "0 2 * * *"  # nightly at 02:00
DEFAULT_TIMEZONE = "UTC"
FAMILIES = ("unimed", "imed", "retinalogos", "ophora", "medq_uni")
_PARAMETER_KEYS = (
    "executor", "dask_address", "ray_address", "workers", "version", "catalog_uri", "warehouse", "keep_last", "keep_versions",
)


class DeploymentConfigError(ValueError):
    """The serve configuration is wrong; the message names the file, entry and key."""


@dataclasses.dataclass(frozen=True)
class DeploymentSpec:
    name: str
    recipe: str
    dataset: str
    sources: tuple[str, ...]
    cron: str = DEFAULT_CRON
    timezone: str = DEFAULT_TIMEZONE
    options: dict[str, Any] = dataclasses.field(default_factory=dict)
    parameters: dict[str, Any] = dataclasses.field(default_factory=dict)  # executor, addresses, version
    paused: bool = False

    def flow_parameters(self, workdir: str) -> dict[str, Any]:
        return {
            "recipe": self.recipe,
            "sources": list(self.sources),
            "dataset": self.dataset,
            "options": dict(self.options),
            "workdir": workdir,
            **self.parameters,
        }


def default_specs(workdir: str, cron: str = DEFAULT_CRON, timezone: str = DEFAULT_TIMEZONE) -> list[DeploymentSpec]:
    """One nightly deployment per family, sources under ``<workdir>/sources/<family>``."""
    return [
        DeploymentSpec(
            name=f"{family}-nightly",
            recipe=family,
            dataset=family,
            sources=(os.path.join(workdir, "sources", family),),
            cron=cron,
            timezone=timezone,
        )
        for family in FAMILIES
    ]


def load_specs(path: str, workdir: str) -> list[DeploymentSpec]:
    """Deployments from a YAML file (see the module docstring), validated with clear errors."""
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise DeploymentConfigError(f"{path}: cannot read the serve configuration ({exc})") from exc
    if not isinstance(data, dict):
        raise DeploymentConfigError(f"{path}: expected a mapping with 'deployments', got {type(data).__name__}")
    defaults = data.get("defaults") or {}
    entries = data.get("deployments")
    if not isinstance(entries, list) or not entries:
        raise DeploymentConfigError(f"{path}: 'deployments' must be a non-empty list")
    specs = []
    for index, raw in enumerate(entries):
        entry = {**defaults, **(raw or {})}
        where = f"{path}: deployments[{index}]"
        for key in ("recipe", "sources"):
            if key not in entry:
                raise DeploymentConfigError(f"{where}: '{key}' is required")
        sources = entry["sources"]
        if isinstance(sources, str):
            sources = [sources]
        if not isinstance(sources, list) or not all(isinstance(s, str) for s in sources):
            raise DeploymentConfigError(f"{where}: 'sources' must be a path or a list of paths")
        cron = str(entry.get("cron", DEFAULT_CRON))
        if len(cron.split()) != 5:
            raise DeploymentConfigError(f"{where}: 'cron' must have 5 fields (minute hour day month weekday), got {cron!r}")
        unknown = set(entry) - {"name", "recipe", "dataset", "sources", "cron", "timezone", "options", "paused", *_PARAMETER_KEYS}
        if unknown:
            raise DeploymentConfigError(f"{where}: unknown key(s) {sorted(unknown)}")
        if not isinstance(entry.get("options") or {}, dict):
            raise DeploymentConfigError(f"{where}: 'options' must be a mapping of recipe keys")
        _check_retention(entry, where)
        recipe, options, default_dataset = resolve_recipe(str(entry["recipe"]), dict(entry.get("options") or {}), where)
        dataset = str(entry.get("dataset") or default_dataset)
        specs.append(
            DeploymentSpec(
                name=str(entry.get("name") or f"{dataset}-nightly"),
                recipe=recipe,
                dataset=dataset,
                sources=tuple(sources),
                cron=cron,
                timezone=str(entry.get("timezone", DEFAULT_TIMEZONE)),
                options=options,
                parameters={k: entry[k] for k in _PARAMETER_KEYS if entry.get(k) is not None},
                paused=bool(entry.get("paused", False)),
            )
        )
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise DeploymentConfigError(f"{path}: deployment names must be unique, got {names}")
    return specs


def _check_retention(entry: dict[str, Any], where: str) -> None:
    """``keep_last`` (an int ≥ 1) and ``keep_versions`` (version names, only with
    ``keep_last``): checked when served, since a wrong one would fail every run."""
    keep_last, keep_versions = entry.get("keep_last"), entry.get("keep_versions")
    if keep_last is not None and (isinstance(keep_last, bool) or not isinstance(keep_last, int) or keep_last < 1):
        raise DeploymentConfigError(f"{where}: 'keep_last' must be a whole number of versions, at least 1; got {keep_last!r}")
    if keep_versions is not None:
        if keep_last is None:
            raise DeploymentConfigError(f"{where}: 'keep_versions' needs 'keep_last' (how many of the newest to keep)")
        if not isinstance(keep_versions, list) or not all(isinstance(v, str) for v in keep_versions):
            raise DeploymentConfigError(f"{where}: 'keep_versions' must be a list of version names, e.g. [v3]")


def resolve_recipe(recipe: str, options: dict[str, Any], where: str) -> tuple[str, dict[str, Any], str]:
    """(planner, options, default dataset name) of a deployment entry, checked when it is
    served: a misspelt recipe or option key would otherwise fail every scheduled run, at night.

    ``recipe`` is a family, ``convert``, or a recipe file (its keys, with the entry's
    ``options`` merged over them key by key), named as ``medcurate build`` names it: the
    recipe's ``dataset``, else its family (``convert`` for convert).
    """
    from curation.build import CONVERT_OPTION_KEYS
    from curation.recipes import FAMILY_NAMES, RecipeError, recipe_for
    from curation.recipes.model import deep_merge, is_recipe_file, read_recipe_file

    if is_recipe_file(recipe):
        try:
            options = deep_merge(read_recipe_file(recipe), options)
        except (OSError, RecipeError) as exc:
            raise DeploymentConfigError(f"{where}: recipe file {exc}") from exc
        if options.get("family") not in FAMILY_NAMES:  # the entry's options may not change it
            raise DeploymentConfigError(f"{where}: recipe file {recipe}: family: expected one of {list(FAMILY_NAMES)}, got {options.get('family')!r}")
        recipe = str(options["family"])
    if recipe == "convert":
        unknown = sorted(set(options) - set(CONVERT_OPTION_KEYS))
        if unknown:
            raise DeploymentConfigError(f"{where}: options {unknown} unknown to convert; known: {list(CONVERT_OPTION_KEYS)}")
        return recipe, options, recipe
    if recipe not in FAMILY_NAMES:
        raise DeploymentConfigError(f"{where}: no recipe named {recipe!r}: give a family ({', '.join(FAMILY_NAMES)}), convert, or a recipe .yaml file")
    try:
        resolved = recipe_for(recipe, options)
    except RecipeError as exc:
        raise DeploymentConfigError(f"{where}: {exc}") from exc
    return recipe, options, resolved.dataset_name()


def to_deployments(specs: list[DeploymentSpec], workdir: str) -> list[Any]:
    """Prefect ``RunnerDeployment`` objects of the ``medcurate-build`` flow."""
    from prefect.deployments.runner import EntrypointType
    from prefect.schedules import Cron

    from flows.prefect_flows import build_dataset

    return [
        build_dataset.to_deployment(
            name=spec.name,
            schedule=Cron(spec.cron, timezone=spec.timezone),
            parameters=spec.flow_parameters(workdir),
            tags=["medcurate", spec.recipe],
            description=f"Rebuild {spec.dataset} with recipe {spec.recipe} from {', '.join(spec.sources)}",
            paused=spec.paused,
            concurrency_limit=1,  # a dataset's rebuilds never overlap
            entrypoint_type=EntrypointType.MODULE_PATH,
        )
        for spec in specs
    ]


def serve(specs: list[DeploymentSpec], workdir: str, *, limit: int | None = 1) -> None:
    """Register the deployments and run them when due (blocks until interrupted)."""
    from prefect import serve as prefect_serve

    prefect_serve(*to_deployments(specs, workdir), limit=limit)
