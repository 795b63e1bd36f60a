"""The longseq_rec recipe end to end through the runtime: train a shrunk shipped config, score, explain."""
import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from recipes.runtime.registry import get_recipe
from recipes.runtime.score import score_file
from recipes.runtime.train import train

pytestmark = pytest.mark.slow

SHRINK = [
    "--data.max_users", "20", "--data.batch_size", "16",
    "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "3", "--trainer.limit_val_batches", "1",
    "--trainer.limit_test_batches", "2", "--trainer.enable_progress_bar", "false", "--trainer.logger", "false",
    "--model.config.representation_dim", "16", "--model.config.attention_dim", "8", "--model.config.mlp_hidden", "[16]",
    "--model.config.top_k", "4", "--model.config.din_window", "4",
]


def fake_movielens(folder: Path) -> Path:
    """A complete-sized ML-100K (100,000 ratings, 943 users, 1,682 items) in RecBole's atomic layout."""
    folder.mkdir(parents=True)
    row = np.arange(100_000)
    user, occurrence = row % 943 + 1, row // 943
    item = (user * 13 + occurrence) % 1682 + 1
    stamp = 880_000_000 + occurrence * 3_600 + user * 7
    lines = ["user_id:token\titem_id:token\trating:float\ttimestamp:float"]
    lines += [f"{u}\t{i}\t{r}\t{t}" for u, i, r, t in zip(user, item, row % 5 + 1, stamp)]
    (folder / "ml-100k.inter").write_text("\n".join(lines) + "\n")
    genres = ("Comedy", "Drama", "Action Sci-Fi", "Thriller")
    lines = ["item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq"]
    lines += [f"{i}\tMovie {i}\t{1990 + i % 9}\t{genres[i % 4]}" for i in range(1, 1683)]
    (folder / "ml-100k.item").write_text("\n".join(lines) + "\n")
    lines = ["user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token"]
    lines += [f"{u}\t{15 + u % 50}\t{'MF'[u % 2]}\t{('student', 'writer', 'other')[u % 3]}\t{10000 + u}" for u in range(1, 944)]
    (folder / "ml-100k.user").write_text("\n".join(lines) + "\n")
    return folder


@pytest.fixture(scope="module")
def movielens_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("rec")
    data = fake_movielens(root / "ml")
    run = train("rec", ["--config", "quick", "--runs-dir", str(root / "runs"), "--data.data_path", str(data), *SHRINK])
    return run, root


def test_quick_config_trains_and_saves_the_vocabulary(movielens_run):
    run, _ = movielens_run
    assert {"test/auc", "test/gauc", "test/logloss"} <= set(run.metrics)
    assert (run.path / "vocab" / "vocab.json").is_file()
    assert run.hparams["config"]["model"] == "dare" and run.hparams["config"]["num_items"] == 1683
    module = run.load_module()
    assert module.recommender.attention_table.dim == 8 and module.recommender.representation_table.dim == 16


def test_scoring_keeps_order_and_row_count_and_flags_bad_rows(movielens_run):
    run, root = movielens_run
    recipe = get_recipe("longseq_rec")
    exported = pl.read_parquet(recipe.demo_input(run, root / "held_out.parquet"))
    assert exported.height > 0 and {"user_id", "target_item", "history_items", "label"} <= set(exported.columns)
    bad = pl.DataFrame({
        "user_id": [1, 2, 3, 4],
        "target_item": [999_999, 5, 5, 6],
        "history_items": [[1, 2], [], [999_998], [3, 4]],
    }).with_columns(pl.col("history_items").cast(exported.schema["history_items"]))
    good = exported.select("user_id", "target_item", "history_items")
    frame = pl.concat([good.head(3), bad, good.slice(3, 5)])
    frame.write_parquet(root / "mixed.parquet")
    out = pl.read_parquet(score_file(recipe, run, root / "mixed.parquet", root / "scores.parquet", chunk_size=4))
    assert out.height == frame.height
    assert out["row"].to_list() == list(range(frame.height))
    assert out["target_item"].to_list() == frame["target_item"].to_list()
    errors, warnings = out["error"].to_list(), out["warnings"].to_list()
    assert [e is not None for e in errors] == [False] * 3 + [True, False, False, False] + [False] * 5
    assert "target_item 999999" in errors[3]
    # no history, or none of it known: scored from the target and the user, and told so
    assert "history_items is empty or null" in warnings[4] and "none of the 1 history_items" in warnings[5]
    scores = out["score"].to_list()
    assert all(0.0 < s < 1.0 for s, e in zip(scores, errors) if e is None)
    assert all(s is None for s, e in zip(scores, errors) if e is not None)


def test_scores_are_the_logits_divided_by_the_runs_temperature(movielens_run):
    """The run writes calibration.json (its 40 validation impressions are fewer than 100, so T stays 1 and says so);
    the predictor divides every logit by the temperature it loads."""
    import json

    import torch

    run, root = movielens_run
    calibration = json.loads((run.path / "calibration.json").read_text())
    assert calibration["rows"] == 40 and calibration["fitted"] is False and calibration["temperature"] == 1.0
    recipe = get_recipe("longseq_rec")
    predictor = recipe.load_predictor(run)
    assert predictor.temperature == 1.0
    frame = pl.read_parquet(recipe.demo_input(run, root / "calibration_input.parquet")).head(6)
    batch = predictor.encode(frame).batch
    logits = torch.logit(predictor.row_probabilities(batch).double())
    hotter = predictor._replace(temperature=2.0).row_probabilities(batch).double()
    torch.testing.assert_close(hotter, torch.sigmoid(logits / 2.0), rtol=0, atol=1e-6)


def test_explain_report_has_the_three_sections_with_plots(movielens_run):
    run, root = movielens_run
    path = get_recipe("rec").explain(run, None, root / "report.html", max_examples=2)
    html = path.read_text()
    for heading in ("Feature-group Shapley values", "Field attributions (SHAP)", "Retrieved behaviours"):
        assert heading in html
    assert len(re.findall(r"<img [^>]*src=\"data:image/png;base64,", html)) >= 3
    assert "KernelExplainer" in html and "Movie " in html  # item titles from the vocabulary


def test_lifelong_run_reports_search_recall_and_planted_behaviours(tmp_path):
    run = train("rec", [
        "--config", "lifelong", "--runs-dir", str(tmp_path / "runs"), *SHRINK,
        "--data.lifelong_users", "20", "--data.lifelong_history", "300", "--data.max_history", "300",
        "--data.lifelong_items", "200", "--data.lifelong_targets_per_user", "4",
    ])
    assert 0.0 <= run.metrics["test/search_recall"] <= 1.0
    html = get_recipe("rec").explain(run, None, tmp_path / "report.html", max_examples=2).read_text()
    assert "planted relevant" in html
