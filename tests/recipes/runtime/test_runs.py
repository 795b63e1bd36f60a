"""Run folders: ids, listing, resolving, loading the saved module, the model card."""
from __future__ import annotations

import json
import re

import pytest
import torch

from recipes.runtime.card import write_model_card
from recipes.runtime.runs import (Run, RunIncompatibleError, RunNotFoundError, list_runs, new_run_id, resolve_run, runs_root,
                                  to_plain)


def make_run(root, recipe, run_id, *, model=True):
    folder = root / recipe / run_id
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text("model: {}\n")
    if model:
        (folder / "model.safetensors").write_bytes(b"")
    return folder


def test_run_ids_sort_by_creation_time_and_differ():
    early, late = new_run_id(1_700_000_000), new_run_id(1_700_000_001)
    assert re.fullmatch(r"\d{8}-\d{6}-[0-9a-f]{4}", early)
    assert sorted([late, early]) == [early, late]
    assert len({new_run_id(1_700_000_000) for _ in range(20)}) > 1


def test_runs_root_comes_from_argument_then_env_then_default(tmp_path, monkeypatch):
    monkeypatch.delenv("FUSION_RUNS_DIR", raising=False)
    assert runs_root() == runs_root("runs")
    monkeypatch.setenv("FUSION_RUNS_DIR", str(tmp_path / "env"))
    assert runs_root() == tmp_path / "env"
    assert runs_root(tmp_path / "arg") == tmp_path / "arg"


def test_list_runs_newest_first_and_per_recipe(tmp_path):
    make_run(tmp_path, "a", "20260101-000000-aaaa")
    make_run(tmp_path, "a", "20260301-000000-cccc")
    make_run(tmp_path, "b", "20260201-000000-bbbb")
    (tmp_path / "a" / "not-a-run").mkdir()
    assert [r.run_id for r in list_runs(tmp_path)] == ["20260301-000000-cccc", "20260201-000000-bbbb", "20260101-000000-aaaa"]
    assert [r.run_id for r in list_runs(tmp_path, "a")] == ["20260301-000000-cccc", "20260101-000000-aaaa"]
    assert list_runs(tmp_path, "missing") == [] and list_runs(tmp_path / "nothing") == []


def test_resolve_run_by_latest_id_prefix_and_path(tmp_path):
    old = make_run(tmp_path, "a", "20260101-000000-aaaa")
    make_run(tmp_path, "a", "20260301-000000-cccc", model=False)  # interrupted: no model yet
    assert resolve_run("a", "latest", tmp_path).path == old
    assert resolve_run("a", None, tmp_path).path == old
    assert resolve_run("a", "latest", tmp_path, require_model=False).run_id == "20260301-000000-cccc"
    assert resolve_run("a", "20260101-000000-aaaa", tmp_path).path == old
    assert resolve_run("a", "20260101", tmp_path).path == old
    assert resolve_run("a", str(old), tmp_path / "elsewhere") == Run(old)


def test_resolve_run_errors_list_what_there_is(tmp_path):
    make_run(tmp_path, "a", "20260101-000000-aaaa")
    make_run(tmp_path, "a", "20260301-000000-cccc", model=False)
    with pytest.raises(RunNotFoundError, match=r"'nope'.*not found.*20260301-000000-cccc, 20260101-000000-aaaa.*latest"):
        resolve_run("a", "nope", tmp_path)
    with pytest.raises(RunNotFoundError, match=r"ambiguous"):
        resolve_run("a", "2026", tmp_path)
    with pytest.raises(RunNotFoundError, match=r"--resume 20260301-000000-cccc"):
        resolve_run("a", "20260301-000000-cccc", tmp_path)
    with pytest.raises(RunNotFoundError, match=r"no runs of recipe b .*fusion train b"):
        resolve_run("b", "latest", tmp_path)


def test_to_plain_makes_yaml_safe_values(tmp_path):
    assert to_plain({"p": tmp_path, "t": (1, 2), "x": torch.tensor(0.5), "n": None}) == {
        "p": str(tmp_path), "t": [1, 2], "x": 0.5, "n": None,
    }


def test_load_module_reproduces_the_trained_weights(trained_run, toy):
    module = trained_run.load_module()
    assert not module.training
    assert module.mirror.weight is module.proj_a.weight  # tied weights survive the safetensors round trip
    checkpoint = torch.load(trained_run.checkpoint_path, weights_only=True, map_location="cpu")
    reference = toy.module_class(**trained_run.hparams)
    reference.load_state_dict(checkpoint["state_dict"])
    reference.eval()
    x = torch.randn(16, 4, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert torch.equal(module(x), reference(x))


@pytest.mark.parametrize("change, named", [
    ("rename", "missing: proj_b.weight; not in this version: old_proj_b.weight"),
    ("reshape", "reshaped: proj_b.weight"),
], ids=["renamed-weight", "reshaped-weight"])
def test_weights_of_another_version_are_a_clear_error_naming_them(trained_run, copy_run, tmp_path, change, named):
    """A run saved before a layer was renamed or resized cannot load; the error names the weights and the fix."""
    from safetensors.torch import load_file, save_file

    run = copy_run(trained_run, tmp_path)
    weights = load_file(run.model_path)
    assert "proj_b.weight" in weights
    if change == "rename":
        weights["old_proj_b.weight"] = weights.pop("proj_b.weight")
    else:
        weights["proj_b.weight"] = torch.zeros(weights["proj_b.weight"].shape[0] + 1, *weights["proj_b.weight"].shape[1:])
    save_file(weights, run.model_path)
    with pytest.raises(RunIncompatibleError) as caught:
        run.load_module()
    message = str(caught.value)
    assert named in message and "saved by another version of" in message
    assert "Train it again with this version (`fusion train toy`" in message and str(run.path / "config.yaml") in message


def test_run_properties_read_the_folder(trained_run):
    assert trained_run.recipe == "toy"
    assert trained_run.status == "finished"
    assert trained_run.config["model"]["config"]["hidden"] == 8
    assert trained_run.hparams["config"]["num_features"] == 4
    assert json.loads((trained_run.path / "metrics.json").read_text()) == trained_run.metrics


def test_model_card_names_recipe_metrics_and_notes(trained_run, toy):
    card = write_model_card(trained_run, toy).read_text()
    assert card.startswith(f"# Model card — toy / {trained_run.run_id}")
    assert "A toy classifier used by the runtime tests." in card
    for metric, value in trained_run.metrics.items():
        if metric != "train_seconds" and "@without_" not in metric:
            assert f"| {metric} | {value:.4g} |" in card
    metrics = trained_run.metrics
    row = f"| test/acc | {metrics['test/acc']:.4g} | {metrics['test/acc@without_a']:.4g} | {metrics['test/acc@without_b']:.4g} |"
    assert row in card
    assert "| config.num_features | 4 |" in card
    assert "## Robustness to missing modalities" in card and "| metric | all | without a | without b |" in card
    assert "## Intended use" in card and "## Limitations" in card
    assert "- `model.safetensors`" in card and "- `feature_names.txt`" in card
