"""Every shipped YAML config parses against its recipe's entry point (module, data module, Trainer)."""
from pathlib import Path

import pytest

from recipes.runtime.registry import get_recipe, list_recipes
from recipes.runtime.train import TrainConfigError, parse_config

SHIPPED = [(name, path) for name in list_recipes() for path in sorted(get_recipe(name).configs_dir.glob("*.yaml"))]


def test_every_recipe_ships_quick_and_full():
    for name in list_recipes():
        stems = {p.stem for p in get_recipe(name).configs_dir.glob("*.yaml")}
        assert {"quick", "full"} <= stems, f"{name} ships {sorted(stems)}"


@pytest.mark.parametrize("name, path", SHIPPED, ids=[f"{n}:{p.stem}" for n, p in SHIPPED])
def test_shipped_config_parses(name, path):
    config = parse_config(name, [path])
    assert {"model", "data", "trainer"} <= set(config)
    # a config names only arguments that exist, and the linked sizes come from the data, not the file
    linked = {target.split(".", 1)[1] for _, target in get_recipe(name).links}
    assert not linked & set(config["model"] or {}), f"{path.name} sets linked model args {linked & set(config['model'])}"


def test_a_misspelt_override_is_a_config_error():
    name = list_recipes()[0]
    with pytest.raises(TrainConfigError, match="no_such_option"):
        parse_config(name, ["quick"], ["--model.no_such_option", "1"])


def test_readme_commands_name_real_recipes_and_configs():
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    for line in readme.splitlines():
        words = line.split()
        if len(words) >= 3 and words[:2] == ["fusion", "train"] and not words[2].startswith("-"):
            recipe = get_recipe(words[2])
            if "--config" in words:
                recipe.config_path(words[words.index("--config") + 1])
