"""Dataset families as declarative recipes (``recipes/*.yaml``) that ``medcurate build`` runs.

Importing this package registers one build planner per family (``unimed``, ``imed``,
``retinalogos``, ``ophora``, ``medq_uni``) with :mod:`curation.build`. A recipe is the
family's default YAML (``curation/recipes/defaults/<family>.yaml``) with the build's
options merged on top; see docs/families.md for layouts and keys.
"""

from curation.recipes import imed, medq_uni, ophora, retinalogos, unimed  # noqa: F401  (register)
from curation.recipes.common import (
    FAMILIES,
    FAMILY_ITEM_SCHEMA,
    Family,
    FamilyStage,
    resolve_sources,
)
from curation.recipes.model import (
    FAMILY_NAMES,
    Recipe,
    RecipeError,
    SourceSpec,
    default_recipe_path,
    load_recipe_file,
    recipe_for,
    validate_recipe,
)

__all__ = [
    "FAMILIES",
    "FAMILY_ITEM_SCHEMA",
    "FAMILY_NAMES",
    "Family",
    "FamilyStage",
    "Recipe",
    "RecipeError",
    "SourceSpec",
    "default_recipe_path",
    "load_recipe_file",
    "recipe_for",
    "resolve_sources",
    "validate_recipe",
]
