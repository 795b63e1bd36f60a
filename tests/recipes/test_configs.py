"""Every shipped YAML config parses against its recipe's entry point (module, data module, Trainer), and so does
every `fusion train` command of the README."""
import shlex
from pathlib import Path

import pytest
import yaml

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
    linked = {target.removeprefix("model.config.") for _, target in get_recipe(name).links}
    written = (yaml.safe_load(path.read_text()).get("model") or {}).get("config") or {}
    assert not linked & set(written), f"{path.name} sets linked model args {linked & set(written)}"


def test_a_misspelt_override_is_a_config_error():
    name = list_recipes()[0]
    with pytest.raises(TrainConfigError, match="no_such_option"):
        parse_config(name, ["quick"], ["--model.no_such_option", "1"])


def _readme_train_commands() -> list[list[str]]:
    readme = (Path(__file__).parents[2] / "README.md").read_text().replace("\\\n", " ")
    commands = []
    for line in readme.splitlines():
        if not line.startswith("fusion train "):
            continue
        words = shlex.split(line.split("#")[0])
        if len(words) >= 3 and words[:2] == ["fusion", "train"] and not words[2].startswith("-"):
            commands.append(words[2:])
    return commands


def test_readme_train_commands_parse():
    commands = _readme_train_commands()
    assert len(commands) >= 4
    for name, *args in commands:
        if "--resume" in args:
            continue  # needs a run; the resume path is tested in tests/recipes/runtime
        configs = [args[i + 1] for i, a in enumerate(args) if a == "--config"]
        skip = {i for i, a in enumerate(args) if a == "--config"} | {i + 1 for i, a in enumerate(args) if a == "--config"}
        overrides = [a for i, a in enumerate(args) if i not in skip]
        parse_config(name, configs or ["quick"], overrides)
