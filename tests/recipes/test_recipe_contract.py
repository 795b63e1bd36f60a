"""Every registered recipe has the same shape, trains with the fusion_core missing-modality machinery switched on from
its config, and reports the same test metrics from 2 DDP processes as from 1.

Each vertical's test package provides ``tests/recipes/<recipe>/tiny.py`` with:

``TINY_OVERRIDES``       ``fusion train`` arguments (``--config quick`` plus overrides) that train for seconds on a
                         tiny data set built under ``$FUSION_DATA_DIR``; its test split has an even number of rows,
                         so DDP's sampler pads nothing and 2 processes see exactly the 1-process test set
``SEQUENTIAL_OVERRIDES`` arguments that switch the fusion of pooled modalities to ``sequential`` (MultiModN) with its
                         per-step loss on, or None where the recipe does not fuse pooled modalities
``DDP_TOLERANCE``        how far the test metrics of a 1-process and a 2-process training of the tiny run may differ
                         (the two see different batch compositions; the evaluation itself is exact, checked below)
"""
from __future__ import annotations

import contextlib
import importlib
import itertools
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from recipes.runtime.datamodule import RecipeDataModule
from recipes.runtime.module import SUBSET_MARK, RecipeModule
from recipes.runtime.registry import get_recipe, list_recipes
from recipes.runtime.runs import list_runs

RECIPES = list_recipes()
REPO = Path(__file__).resolve().parents[2]
SCORED_ROWS = 16  # the demo input's first rows: enough for chunks of 1 and 7 and every modality subset
SHARED_FILES = ("data.py", "model.py", "module.py", "recipe.py", "explain.py", "metrics.py", "configs/quick.yaml",
                "configs/full.yaml")


def tiny(name: str):
    return importlib.import_module(f"tests.recipes.{name}.tiny")


def package_dir(name: str) -> Path:
    return Path(importlib.import_module(type(get_recipe(name)).__module__).__file__).parent


@pytest.mark.parametrize("name", RECIPES)
def test_every_recipe_has_the_same_shape(name):
    recipe = get_recipe(name)
    assert issubclass(recipe.module_class, RecipeModule)
    assert issubclass(recipe.datamodule_class, RecipeDataModule)
    folder = package_dir(name)
    missing = [f for f in SHARED_FILES if not (folder / f).exists()]
    assert not missing, f"{folder} lacks {missing}"
    assert (folder / "readers.py").is_file() or (folder / "readers").is_dir(), f"{folder} has no readers"
    for method in ("load_predictor", "score_frame", "demo_input", "explain", "card_notes"):
        assert callable(getattr(recipe, method))
    config_class = recipe.module_class.config_class
    assert config_class is not RecipeModule.config_class, f"{name} declares no config of its own"
    assert recipe.config_chain("quick")[-1].name == "quick.yaml"


def _train(name: str, tmp_path: Path, extra: list[str], *, processes: int = 1) -> "object":
    runs = tmp_path / "runs"
    env = {k: v for k, v in os.environ.items() if k not in ("FUSION_RUN_ID", "WORLD_SIZE", "LOCAL_RANK", "RANK")}
    env.update(FUSION_DATA_DIR=str(tmp_path / "data"), FUSION_RUNS_DIR=str(runs), PYTHONPATH=str(REPO))
    args = [*tiny(name).TINY_OVERRIDES, *extra, "--runs-dir", str(runs)]
    if processes > 1:
        args += ["--trainer.strategy", "ddp", "--trainer.devices", str(processes), "--trainer.accelerator", "cpu"]
    before = {run.run_id for run in list_runs(runs, name)}
    result = subprocess.run([sys.executable, "-m", "recipes.cli", "train", name, *args], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    (run,) = [run for run in list_runs(runs, name) if run.run_id not in before]
    return run


@pytest.mark.slow
@pytest.mark.parametrize("name", RECIPES)
def test_quick_config_trains_with_missingness_machinery_on(name, tmp_path):
    spec = tiny(name)
    run = _train(name, tmp_path, ["--model.config.balance_missingness", "true", "--model.config.modality_dropout", "0.3"])
    assert run.status == "finished"
    assert run.hparams["config"]["balance_missingness"] is True
    test = {k: v for k, v in run.metrics.items() if k.startswith("test/")}
    assert test and all(math.isfinite(v) for v in test.values())
    modalities = run.load_module().modalities
    if len(modalities) > 1:  # the robustness table: one column per dropped modality at least
        assert {m for m in modalities if any(k.endswith(f"{SUBSET_MARK}{m}") for k in test)} == set(modalities)
    if spec.SEQUENTIAL_OVERRIDES is not None:
        sequential = _train(name, tmp_path, list(spec.SEQUENTIAL_OVERRIDES))
        assert sequential.status == "finished"
        assert "sequential" in str(sequential.hparams)
        assert sequential.hparams["config"]["step_loss_weight"] > 0


def _evaluate_in_one_process(run) -> dict[str, float]:
    """The run's saved weights evaluated on its test split by one process."""
    import lightning.pytorch as pl

    recipe = get_recipe(run.recipe)
    module = run.load_module()
    data = recipe.datamodule_class(**run.config["data"])
    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, enable_model_summary=False)
    (results,) = trainer.test(module, datamodule=data, verbose=False)
    return {k: float(v) for k, v in results.items()}


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
    """``tiny_runs(name) -> (run, folder)``: one tiny 1-process run per recipe, trained on first use into ``folder``
    (its data under ``folder/data``) and shared by the tests below."""
    made: dict[str, tuple[object, Path]] = {}

    def get(name: str):
        if name not in made:
            folder = tmp_path_factory.mktemp(name)
            made[name] = (_train(name, folder, []), folder)
        return made[name]

    return get


@pytest.fixture(scope="module")
def scoring_runs(tiny_runs):
    """The tiny run of a recipe and the first rows of its demo input (:data:`SCORED_ROWS`), with $FUSION_DATA_DIR
    pointing at its data while the test uses it."""

    @contextlib.contextmanager
    def use(name: str):
        run, folder = tiny_runs(name)
        path = folder / "input" / "input.parquet"
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("FUSION_DATA_DIR", str(folder / "data"))
            if not path.is_file():
                import polars as pl

                path.parent.mkdir()
                demo = get_recipe(name).demo_input(run, folder / "input" / "demo.parquet")
                pl.read_parquet(demo).head(SCORED_ROWS).write_parquet(path)
            yield run, path

    return use


@pytest.mark.slow
@pytest.mark.parametrize("name", RECIPES)
def test_two_processes_report_the_metrics_of_the_whole_test_set(name, tiny_runs, monkeypatch):
    spec = tiny(name)
    one, folder = tiny_runs(name)
    two = _train(name, folder, [], processes=2)
    assert two.info["training"]["world_size"] == 2
    one_test = {k: v for k, v in one.metrics.items() if k.startswith("test/")}
    two_test = {k: v for k, v in two.metrics.items() if k.startswith("test/")}
    assert set(one_test) == set(two_test)
    # the metrics logged by the 2-process run are those of the whole test set: one process evaluating the same
    # weights gets the same numbers (a per-rank mean would not)
    monkeypatch.setenv("FUSION_DATA_DIR", str(folder / "data"))
    again = _evaluate_in_one_process(two)
    for key, value in two_test.items():
        assert again[key] == pytest.approx(value, abs=1e-4), key
    # and 1-process training lands within the stated tolerance of 2-process training
    for key, value in one_test.items():
        assert abs(value - two_test[key]) <= spec.DDP_TOLERANCE, (key, value, two_test[key])


@pytest.mark.slow
@pytest.mark.parametrize("name", RECIPES)
def test_a_rows_score_depends_only_on_the_row(name, scoring_runs, tmp_path):
    """The same file scored in chunks of 1, 7 and the default gives the same bytes, and reversing the rows
    gives each row the same score and messages: nothing depends on a row's neighbours or position."""
    import polars as pl

    from recipes.runtime.score import score_file

    recipe = get_recipe(name)
    with scoring_runs(name) as (run, path):
        outputs = [score_file(recipe, run, path, tmp_path / f"chunk{size}.parquet", chunk_size=size, progress=False)
                   for size in (1, 7, 10_000)]
        frame = pl.read_parquet(path)
        reversed_path = path.with_name("reversed.parquet")
        frame.reverse().write_parquet(reversed_path)
        backwards = pl.read_parquet(score_file(recipe, run, reversed_path, tmp_path / "reversed.parquet", progress=False))
    first = outputs[0].read_bytes()
    assert all(out.read_bytes() == first for out in outputs[1:])
    forwards = pl.read_parquet(outputs[0])
    assert forwards.height == frame.height and forwards["score"].null_count() < frame.height
    assert forwards.drop("row").equals(backwards.reverse().drop("row"))


@pytest.mark.slow
@pytest.mark.parametrize("name", RECIPES)
def test_every_modality_subset_scores(name, scoring_runs, tmp_path):
    """Blank the input columns of any modalities (recipe.modality_columns): every row the full input scored still
    scores, with a finite score and no error."""
    import polars as pl

    from recipes.runtime.score import score_file

    recipe = get_recipe(name)
    modalities = list(recipe.modality_columns)
    assert len(modalities) >= 2, f"{name} declares no modality_columns"
    with scoring_runs(name) as (run, path):
        frame = pl.read_parquet(path)
        full = pl.read_parquet(score_file(recipe, run, path, tmp_path / "full.parquet", progress=False))
        scored = full["error"].is_null()
        assert scored.sum() > 0, full["error"].to_list()[:3]

        def has(modality: str) -> pl.Series:
            columns = [c for c in recipe.modality_columns[modality] if c in frame.columns]
            return frame.select(pl.any_horizontal(pl.col(c).is_not_null() for c in columns) if columns else pl.lit(False)).to_series()

        for size in range(1, len(modalities)):
            for kept in itertools.combinations(modalities, size):
                dropped = [c for m in modalities if m not in kept for c in recipe.modality_columns[m] if c in frame.columns]
                subset = path.with_name(f"without_{'+'.join(m for m in modalities if m not in kept)}.parquet")
                frame.with_columns(pl.lit(None, dtype=frame.schema[c]).alias(c) for c in dropped).write_parquet(subset)
                out = pl.read_parquet(score_file(recipe, run, subset, tmp_path / subset.name, progress=False))
                assert out.height == frame.height
                # the rows that scored in full and still hold one of the kept modalities
                left = has(kept[0])
                for modality in kept[1:]:
                    left = left | has(modality)
                rows = out.filter(scored & left)
                assert rows.height > 0, kept
                assert rows["error"].null_count() == rows.height, (kept, rows["error"].drop_nulls().to_list()[:3])
                assert rows["score"].is_finite().all(), kept
