"""Recipes and data sets are found through entry points: a new vertical touches no file of recipes.runtime."""
from __future__ import annotations

import subprocess
import sys
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest

from recipes.cli import main
from recipes.runtime import registry
from recipes.runtime.registry import RECIPE_GROUP, get_recipe, list_recipes

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
def toy_entry_point(monkeypatch):
    """The installed entry points plus one for the toy recipe, as a new vertical's pyproject.toml would add it."""
    real = registry.discovered
    entry = EntryPoint(name="toy", value="tests.recipes.runtime.toy_recipe:TOY", group=RECIPE_GROUP)

    def discovered(group: str):
        found = real(group)
        return {**found, "toy": entry} if group == RECIPE_GROUP else found

    monkeypatch.setattr(registry, "discovered", discovered)
    yield entry
    registry._RECIPES.pop("toy", None)
    registry._ALIASES.pop("toy-alias", None)
    registry._LOADED.discard(("toy", entry.value))


def test_a_recipe_entry_point_appears_in_help_and_the_registry(toy_entry_point, capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "toy" in capsys.readouterr().out.split("recipes:")[1].splitlines()[0]
    assert get_recipe("toy-alias").name == "toy"
    assert "toy" in list_recipes()
    assert main(["train", "--help"]) == 0
    assert "toy" in capsys.readouterr().out


def test_installed_verticals_are_listed_without_importing_them():
    code = ("import sys; from recipes.runtime.registry import recipe_names; print(','.join(recipe_names())); "
            "print(any(m.startswith(('torch', 'polars', 'recipes.longseq_rec')) for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO).stdout.split()
    assert set(out[0].split(",")) >= {"longseq_rec", "medical_more", "dementia_speech", "driving_interaction"}
    assert out[1] == "False"


def test_a_broken_vertical_is_reported_not_skipped(monkeypatch):
    entry = EntryPoint(name="broken", value="tests.recipes.runtime.no_such_helper_module:RECIPE", group=RECIPE_GROUP)
    # its own module missing means "not installed": skipped
    assert registry.load_entry_point(entry) is None
    bad = EntryPoint(name="bad", value="json:no_such_attribute", group=RECIPE_GROUP)
    with pytest.raises(AttributeError):
        registry.load_entry_point(bad)


def test_the_runtime_names_no_vertical():
    for file in (REPO / "recipes" / "runtime").glob("*.py"):
        text = file.read_text()
        for vertical in ("longseq_rec", "medical_more", "dementia_speech", "driving_interaction"):
            assert vertical not in text, f"{file.name} names {vertical}"


def test_a_config_can_extend_another(toy_entry_point, tmp_path):
    from recipes.runtime.train import parse_config

    wide = tmp_path / "wide.yaml"
    wide.write_text("# A wider toy model.\n# extends: quick\nmodel:\n  config:\n    hidden: 16\n")
    recipe = get_recipe("toy")
    assert [p.name for p in recipe.config_chain(wide)] == ["quick.yaml", "wide.yaml"]
    config = parse_config("toy", [wide])
    assert config["model"]["config"]["hidden"] == 16  # from wide.yaml
    assert config["model"]["config"]["lr"] == 0.05 and config["data"]["num_train"] == 64  # from quick.yaml
