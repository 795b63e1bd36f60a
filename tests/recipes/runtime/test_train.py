"""`fusion train`: artefacts, linked hyperparameters, test metrics, resume, config errors, DDP on CPU."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from recipes.runtime.runs import RunNotFoundError, list_runs, resolve_run
from recipes.runtime.train import TrainConfigError, TrainingInterrupted, train

ARTEFACTS = ("config.yaml", "hparams.yaml", "model.safetensors", "metrics.json", "checkpoints/last.ckpt", "MODEL_CARD.md", "run.json")


def global_step(run) -> int:
    return torch.load(run.checkpoint_path, weights_only=True, map_location="cpu")["global_step"]


def test_train_writes_every_artefact(trained_run):
    for name in ARTEFACTS:
        assert (trained_run.path / name).is_file(), name
    assert (trained_run.path / "feature_names.txt").is_file()  # the recipe's on_train_end artefact
    assert trained_run.path.parent.name == "toy"
    config = yaml.safe_load((trained_run.path / "config.yaml").read_text())
    assert config["seed_everything"] == 7 and config["trainer"]["max_epochs"] == 2 and config["data"]["batch_size"] == 8
    assert trained_run.info["status"] == "finished"
    assert trained_run.info["training"]["global_step"] == global_step(trained_run) == 16
    assert "FUSION_RUN_ID" not in os.environ


def test_hparams_hold_the_linked_value_and_rebuild_the_module(trained_run):
    hparams = yaml.safe_load((trained_run.path / "hparams.yaml").read_text())
    config = {"lr": 0.05, "weight_decay": 0.0, "modality_dropout": 0.0, "balance_missingness": False,
              "step_loss_weight": 0.0, "subset_table": True, "num_features": 4, "hidden": 8, "fusion": "concat",
              "interrupt_at_step": None, "kill_at_step": None}
    assert hparams == {"config": config}  # the one config, with the linked value, readable by yaml.safe_load


def test_metrics_json_holds_the_test_metrics(trained_run, toy):
    metrics = json.loads((trained_run.path / "metrics.json").read_text())
    subsets = {f"test/{name}@without_{m}" for name in ("acc", "auroc", "loss") for m in ("a", "b")}
    assert set(metrics) == {"test/acc", "test/auroc", "test/loss", "train_seconds"} | subsets
    assert metrics["train_seconds"] > 0
    data = toy.datamodule_class(**trained_run.config["data"])
    module = trained_run.load_module()
    test = data.dataset("test")
    x, y = test.tensors["x"][test.rows], test.tensors["label"][test.rows]
    with torch.no_grad():
        logits = module(x)
        without_b = module(x, {"a": torch.ones(len(y), dtype=torch.bool), "b": torch.zeros(len(y), dtype=torch.bool)})
    assert metrics["test/acc"] == pytest.approx(((logits > 0).float() == y).float().mean().item(), abs=1e-6)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, y).item()
    assert metrics["test/loss"] == pytest.approx(loss, rel=1e-5)
    # the robustness table: the same test rows with modality b switched off
    assert metrics["test/acc@without_b"] == pytest.approx(((without_b > 0).float() == y).float().mean().item(), abs=1e-6)


def test_overrides_reach_config_and_links(toy, tmp_path):
    run = train("toy", ["--config", "quick", "--runs-dir", str(tmp_path), "--data.noise_features", "2", "--trainer.max_epochs", "1"])
    assert run.hparams["config"]["num_features"] == 6
    assert run.config["data"]["noise_features"] == 2 and run.config["trainer"]["max_epochs"] == 1
    with torch.no_grad():
        assert run.load_module()(torch.zeros(3, 6)).shape == (3,)


def test_resume_continues_an_interrupted_run_with_its_config(toy, tmp_path):
    runs = str(tmp_path)
    with pytest.raises(TrainingInterrupted) as caught:
        train("toy", ["--config", "quick", "--runs-dir", runs, "--model.config.hidden", "6", "--model.config.interrupt_at_step", "3"])
    run = caught.value.run
    assert run.status == "interrupted" and not run.has_model
    assert global_step(run) == 3  # saved when the interrupt arrived
    with pytest.raises(RunNotFoundError, match="--resume"):
        resolve_run("toy", run.run_id, runs)

    resumed = train("toy", ["--resume", run.run_id, "--runs-dir", runs, "--model.config.interrupt_at_step", "null"])
    assert resumed == run and resumed.status == "finished"
    assert global_step(resumed) == 16
    assert resumed.hparams["config"]["hidden"] == 6  # the saved config, not the recipe default
    assert [r.run_id for r in list_runs(runs, "toy")] == [run.run_id]

    longer = train("toy", ["--resume", "latest", "--runs-dir", runs, "--trainer.max_epochs", "3"])
    assert longer == run and global_step(longer) == 24
    assert longer.config["trainer"]["max_epochs"] == 3
    assert len(longer.info["resumed"]) == 2
    # no last-v1.ckpt after resumes: the newest epoch end, last.ckpt and no step checkpoint (24 steps < the default 50)
    assert sorted(p.name for p in (run.path / "checkpoints").iterdir()) == ["epoch-end.ckpt", "last.ckpt"]


def test_config_mistakes_raise_train_config_error(toy, tmp_path):
    with pytest.raises(TrainConfigError, match=r"no config 'nope' for recipe toy; shipped configs: \['quick'\]"):
        train("toy", ["--config", "nope", "--runs-dir", str(tmp_path)])
    with pytest.raises(TrainConfigError, match="hiddn"):
        train("toy", ["--runs-dir", str(tmp_path), "--model.config.hiddn", "3"])
    with pytest.raises(TrainConfigError, match="--resume needs a value"):
        train("toy", ["--resume"])
    with pytest.raises(RunNotFoundError, match="not found"):
        train("toy", ["--resume", "nope", "--runs-dir", str(tmp_path)])
    assert list_runs(tmp_path) == []


SCRIPT = """\
import sys
sys.path.insert(0, {tests!r})
import toy_recipe
from recipes.runtime.registry import register_recipe
from recipes.cli import main

register_recipe(toy_recipe.TOY)
sys.exit(main())
"""


def _toy_fusion(folder: Path, runs: Path, *args: str) -> subprocess.CompletedProcess:
    """``fusion train toy --runs-dir runs ...`` in its own process (one that can be SIGKILLed, or re-run by Lightning's
    DDP launcher: the script is a file)."""
    script = folder / "fusion_toy.py"
    if not script.is_file():
        script.write_text(SCRIPT.format(tests=str(Path(__file__).parent)))
    env = {k: v for k, v in os.environ.items() if k not in ("FUSION_RUN_ID", "WORLD_SIZE", "LOCAL_RANK", "RANK")}
    return subprocess.run([sys.executable, str(script), "train", "toy", "--runs-dir", str(runs), *args],
                          cwd=folder, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_makes_one_run(tmp_path):
    runs = tmp_path / "runs"
    result = _toy_fusion(tmp_path, runs, "--config", "quick", "--trainer.strategy", "ddp", "--trainer.devices", "2",
                         "--trainer.accelerator", "cpu")
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = list_runs(runs)
    for name in ARTEFACTS:
        assert (run.path / name).is_file(), name
    assert run.info["training"]["world_size"] == 2
    assert run.info["training"]["global_step"] == 8  # 64 rows / 2 ranks / batch 8, 2 epochs
    assert 0.0 <= run.metrics["test/acc"] <= 1.0
    assert f"run folder: {run.path}" in result.stdout


KILL_ARGS = ["--config", "quick", "--trainer.max_epochs", "3", "--model.config.modality_dropout", "0.3",
             "--checkpoint-every", "3"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The weights of the run the kill -9 tests resume towards, trained once without interruption."""
    from safetensors.torch import load_file

    folder = tmp_path_factory.mktemp("uninterrupted")
    reference = _toy_fusion(folder, folder / "runs", *KILL_ARGS)
    assert reference.returncode == 0, reference.stderr[-2000:]
    (whole,) = list_runs(folder / "runs")
    return load_file(whole.model_path)


@pytest.mark.parametrize("kill_at", [13, 17], ids=["mid-epoch", "after-an-epoch-end"])
def test_kill_9_then_resume_gives_the_weights_of_an_uninterrupted_run(kill_at, uninterrupted, tmp_path):
    """3 epochs of 8 steps with modality dropout (global RNG) and shuffling; checkpoints every 3 steps. SIGKILL at
    step 13 resumes from step 12 (mid-epoch: data position and RNG restored); at step 17 from the epoch-end
    checkpoint at 16. Either way the final weights equal an uninterrupted run's, bit for bit."""
    from safetensors.torch import load_file

    killed = _toy_fusion(tmp_path, tmp_path / "runs", *KILL_ARGS, "--model.config.kill_at_step", str(kill_at))
    assert killed.returncode == -9
    (run,) = list_runs(tmp_path / "runs")
    assert run.info["status"] == "running" and run.status == "interrupted"  # the process is gone
    steps = sorted(p.name for p in (run.path / "checkpoints").glob("step=*.ckpt"))
    assert steps == {13: ["step=12.ckpt", "step=9.ckpt"], 17: ["step=12.ckpt", "step=15.ckpt"]}[kill_at]  # the last two
    assert global_step(run) == {13: 12, 17: 16}[kill_at]

    resumed = _toy_fusion(tmp_path, tmp_path / "runs", "--resume", run.run_id, "--model.config.kill_at_step", "null")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert run.status == "finished" and run.info["training"]["global_step"] == 24
    got = load_file(run.model_path)
    assert uninterrupted.keys() == got.keys()
    for name in uninterrupted:
        assert torch.equal(uninterrupted[name], got[name]), name


@pytest.mark.parametrize("env", [{"WORLD_SIZE": "2"}, {"NODE_RANK": "1"}], ids=["torchrun", "second-node"])
def test_a_multi_process_launch_without_a_shared_run_id_is_refused(toy, tmp_path, monkeypatch, env):
    """Each copy would pick its own run id: the second node of a Lightning multi-node launch left a stray folder."""
    monkeypatch.delenv("FUSION_RUN_ID", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(TrainConfigError, match="export FUSION_RUN_ID"):
        train("toy", ["--config", "quick", "--runs-dir", str(tmp_path)])
    assert not any(tmp_path.rglob("*"))
