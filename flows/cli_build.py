"""``medcurate build`` and ``medcurate recipes``: run and inspect the dataset-family recipes.

``build`` takes a family name (its default recipe) or a recipe file (its keys on top of
the family's defaults). The CLI resolves and validates the recipe and its sources
before any engine starts, so a typo in a key or a missing folder is a usage error
(exit 2) naming the file, the key and what was expected; the build itself receives
the family name as ``recipe`` and the recipe file's keys as ``options``, which the
family planner merges onto the defaults again (``curation.recipes``).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any


def register(sub: Any) -> None:
    """Add ``build`` and ``recipes`` to the top-level subparsers of ``medcurate``."""
    from flows.cli import add_engine_options
    build = sub.add_parser("build", help="build a dataset family (unimed, imed, retinalogos, ophora, medq_uni)")
    build.add_argument("recipe", metavar="RECIPE.yaml|NAME", help="a recipe file, or a family name for its default recipe")
    build.add_argument("--source", action="append", default=[], metavar="PATH",
                       help="source root in the family's public layout (repeatable): a folder, s3://bucket/prefix, "
                       "or catalog://NAME[@VERSION] (medq_uni); default with a recipe file: its folder; "
                       "required with a family NAME")
    build.add_argument("--dataset", help="catalog table name (default: the recipe's dataset)")
    build.add_argument("--version", help="version tag (default v<N+1>)")
    add_engine_options(build)
    build.set_defaults(func=cmd_build)

    recipes = sub.add_parser("recipes", help="the dataset-family recipes and their layouts")
    recipes_sub = recipes.add_subparsers(dest="recipes_command", required=True, metavar="SUBCOMMAND")
    recipes_sub.add_parser("list", help="families, their accepted layouts and default recipe files")
    show = recipes_sub.add_parser("show", help="a family's default recipe (YAML), or a recipe file merged with its defaults")
    show.add_argument("name", metavar="NAME|RECIPE.yaml")
    recipes.set_defaults(func=cmd_recipes)


def resolve_request(args: argparse.Namespace, settings: Any = None) -> tuple[str, dict[str, Any], list[str], Any]:
    """(family, options, sources, recipe) of ``medcurate build``, validated; raises UsageError.

    With ``settings``, ``s3://`` and ``catalog://`` sources are staged (and so checked)
    here too; the build's own staging then finds them current."""
    from curation.recipes import FAMILIES, FAMILY_NAMES, RecipeError, recipe_for, resolve_sources
    from curation.recipes.common import stage_sources
    from curation.recipes.model import is_recipe_file, read_recipe_file
    from flows.cli import UsageError

    try:
        if is_recipe_file(args.recipe):
            path = Path(args.recipe)
            options = read_recipe_file(path)
            family = options["family"]
            origin = str(path)
            sources = args.source or [str(path.resolve().parent)]
        else:
            family, options, origin = args.recipe, {}, None
            if family not in FAMILY_NAMES:
                raise UsageError(f"no recipe named {family!r}: give a family ({', '.join(FAMILY_NAMES)}) or a recipe .yaml file")
            if not args.source:
                raise UsageError(f"medcurate build {family} needs --source PATH: the folder of a download in the layout docs/families.md shows")
            sources = list(args.source)
        sources = [s if "://" in s else os.path.abspath(s) for s in sources]
        recipe = recipe_for(family, options, origin=origin)
        if settings is not None and getattr(args, "version", None):  # before staging downloads anything
            settings.catalog().check_new_version(args.dataset or recipe.dataset_name(), args.version)
        local = sources
        if settings is not None:
            local = stage_sources(family, sources, options, settings.workdir, settings.catalog)
        resolve_sources(recipe, local, FAMILIES[family])
    except RecipeError as exc:
        raise UsageError(str(exc)) from exc
    return family, options, sources, recipe


def cmd_build(args: argparse.Namespace) -> int:
    from catalogs.catalog import check_dataset_name
    from flows.build import run_build
    from flows.cli import EXIT_OK, _settings, build_request, print_outcome

    settings = _settings(args)
    family, options, sources, recipe = resolve_request(args, settings)
    dataset = args.dataset or recipe.dataset_name()
    check_dataset_name(dataset)
    request = build_request(
        args, settings, family, sources, dataset, {k: v for k, v in options.items() if k != "family"}
    )
    outcome = run_build(request)
    print_outcome(outcome.summary, settings, dataset)
    return EXIT_OK


def cmd_recipes(args: argparse.Namespace) -> int:
    from curation.recipes import (
        FAMILIES,
        FAMILY_NAMES,
        RecipeError,
        default_recipe_path,
        load_recipe_file,
        recipe_for,
    )
    from curation.recipes.model import is_recipe_file
    from flows.cli import EXIT_OK, UsageError

    if args.recipes_command == "list":
        for name in FAMILY_NAMES:
            family = FAMILIES[name]
            print(f"{name}\t{recipe_for(name).description}")
            print(f"  default recipe: {default_recipe_path(name)}")
            for layout, text in family.layouts.items():
                print(f"  layout {layout}: {text}")
        return EXIT_OK
    ref = args.name
    try:
        if ref in FAMILY_NAMES:
            print(default_recipe_path(ref).read_text(), end="")
            return EXIT_OK
        if is_recipe_file(ref):
            import yaml

            print(yaml.safe_dump(load_recipe_file(ref).model_dump(mode="json"), sort_keys=False), end="")
            return EXIT_OK
    except RecipeError as exc:
        raise UsageError(str(exc)) from exc
    raise UsageError(f"no recipe named {ref!r}; known: {', '.join(FAMILY_NAMES)} (or give a .yaml file)")
