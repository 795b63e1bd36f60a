"""Recipes found through entry points, and the registry the CLI, the scorer, the reports and the apps look them up in.

A vertical announces itself in its package's ``pyproject.toml``; nothing in ``recipes.runtime`` names it::

    [project.entry-points."fusion_suite.recipes"]
    my_vertical = "my_package.recipe:RECIPE"          # a Recipe instance

    [project.entry-points."fusion_suite.datasets"]
    my-data-set = "my_package.readers"                # a module whose import registers the data set

A recipe can also be registered by calling :func:`register_recipe` (tests, notebooks); both paths end in the same
table. An entry point whose module is not importable because an optional part of the installation is missing
(``pip install fusion-suite`` without the extra the vertical needs) is skipped; one that fails for any other
reason (a bug, a missing dependency of the vertical itself) raises, naming the entry point.

Nothing here imports torch or Lightning.
"""
from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from recipes.runtime.recipe import Recipe

__all__ = [
    "RECIPE_GROUP",
    "DATASET_GROUP",
    "register_recipe",
    "get_recipe",
    "list_recipes",
    "recipe_names",
    "discovered",
    "load_entry_point",
]

RECIPE_GROUP = "fusion_suite.recipes"
DATASET_GROUP = "fusion_suite.datasets"

_RECIPES: dict[str, "Recipe"] = {}
_ALIASES: dict[str, str] = {}
_LOADED: set[tuple[str, str]] = set()


def discovered(group: str) -> dict[str, EntryPoint]:
    """``{name: entry point}`` of ``group`` in the installed distributions."""
    return {ep.name: ep for ep in entry_points(group=group)}


def load_entry_point(entry: EntryPoint) -> Any:
    """``entry.load()``, or None when its module belongs to a part of the installation that is not there."""
    module = entry.value.partition(":")[0].strip()
    try:
        return entry.load()
    except ModuleNotFoundError as error:
        # only the vertical's own module being absent means "not installed"; a missing dependency inside it is a bug
        if error.name is not None and (module == error.name or module.startswith(error.name + ".")):
            return None
        raise ImportError(f"entry point {entry.group}:{entry.name} = {entry.value!r} failed to import: {error}") from error


def register_recipe(recipe: "Recipe") -> "Recipe":
    """Add ``recipe`` (a :class:`recipes.runtime.recipe.Recipe`) under its name and aliases; returns it."""
    known = _RECIPES.get(recipe.name)
    if known is not None and type(known) is not type(recipe):
        raise ValueError(f"recipe {recipe.name!r} is already registered by {type(known).__module__}.{type(known).__qualname__}")
    _RECIPES[recipe.name] = recipe
    for alias in recipe.aliases:
        _ALIASES[alias] = recipe.name
    return recipe


def _load(name: str | None = None) -> None:
    """Load the recipe entry points (only ``name``'s when it is an entry point name), once each."""
    entries = discovered(RECIPE_GROUP)
    chosen = [entries[name]] if name in entries else list(entries.values())
    for entry in chosen:
        key = (entry.name, entry.value)
        if key in _LOADED:
            continue
        _LOADED.add(key)
        recipe = load_entry_point(entry)
        if recipe is not None and getattr(recipe, "name", None) is not None:
            register_recipe(recipe)


def get_recipe(name: str) -> "Recipe":
    """The recipe registered as ``name`` or with ``name`` among its aliases."""
    if name not in _RECIPES and name not in _ALIASES:
        _load(name)
    if name not in _RECIPES and name not in _ALIASES:
        _load()
    name = _ALIASES.get(name, name)
    if name not in _RECIPES:
        raise ValueError(f"unknown recipe {name!r}; choose one of {list_recipes()} (a new vertical registers itself "
                         f"under the {RECIPE_GROUP!r} entry point group of its pyproject.toml)")
    return _RECIPES[name]


def list_recipes() -> list[str]:
    """Names of every recipe (loads the entry points)."""
    _load()
    return sorted(_RECIPES)


def recipe_names() -> list[str]:
    """Names of the installed and registered recipes without importing any of them (for ``fusion --help``)."""
    return sorted(set(discovered(RECIPE_GROUP)) | set(_RECIPES))
