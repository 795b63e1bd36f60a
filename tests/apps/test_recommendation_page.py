"""The recommendation page against tiny trained runs, and Parquet upload scoring."""
from __future__ import annotations

import io
from pathlib import Path

import polars as pl
import pytest
from streamlit.testing.v1 import AppTest

from apps.common import UploadError, load_predictor_cached, score_uploaded
from recipes.runtime.registry import get_recipe
from tests.apps.apptest import open_page as open_app_page

PAGE = "pages/1_Recommendation.py"
TIMEOUT_S = 180

pytestmark = pytest.mark.slow


def open_page(monkeypatch: pytest.MonkeyPatch, root: Path) -> AppTest:
    at = open_app_page(monkeypatch, root, PAGE, TIMEOUT_S)
    assert_no_exception(at)
    return at


def assert_no_exception(at: AppTest) -> None:
    assert not at.exception, "\n".join(e.value for e in at.exception)
    assert not at.error, "\n".join(e.value for e in at.error)


def metric(at: AppTest, label: str) -> str:
    values = [m.value for m in at.metric if m.label == label]
    assert len(values) == 1, f"expected one metric {label!r}; labels: {[m.label for m in at.metric]}"
    return values[0]


def frames_with(at: AppTest, column: str) -> list:
    return [d.value for d in at.dataframe if column in d.value.columns]


def held_out(run, folder: Path) -> pl.DataFrame:
    """The run's held-out rows in the scoring schema, as the page loads them."""
    return pl.read_parquet(get_recipe("longseq_rec").demo_input(run, folder / f"{run.run_id}-held-out.parquet"))


def test_page_without_runs_says_how_to_train_one(runs_root: Path, monkeypatch: pytest.MonkeyPatch):
    at = open_page(monkeypatch, runs_root)
    assert at.title[0].value == "Long-sequence recommendation"
    assert len(at.selectbox) == 0
    assert "No finished `longseq_rec` run" in at.info[0].value
    assert "fusion train rec --config quick" in at.info[0].value


def test_page_scores_retrieves_and_explains_a_chosen_candidate(
    tiny_rec_run, runs_root: Path, copy_run, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    run = copy_run(tiny_rec_run, runs_root)
    rows = held_out(run, tmp_path)
    at = open_page(monkeypatch, runs_root)
    assert metric(at, "Model") == "DARE"
    assert at.selectbox(key="rec-run").options == [f"dare · {run.run_id}"]  # labelled by the saved config's model
    assert any(run.run_id in c.value for c in at.caption)

    # a different user than the default, and that user's second held-out candidate
    user = rows["user_id"].unique().sort()[1]
    at.selectbox(key="rec-user").set_value(user).run()
    at.selectbox(key="rec-candidate").set_value(1).run()
    assert_no_exception(at)
    expected_row = rows.filter(pl.col("user_id") == user)[1]

    recipe = get_recipe("longseq_rec")
    expected = recipe.score_frame(recipe.load_predictor(run), expected_row)["score"][0]
    score = float(metric(at, "Click probability"))
    assert 0.0 <= score <= 1.0
    assert score == pytest.approx(expected, abs=5e-5)
    assert metric(at, "Held-out label") == ("clicked" if expected_row["label"][0] else "not clicked")

    retrieved = frames_with(at, "behaviours ago")
    assert len(retrieved) == 1  # one run: DARE's retrieval only
    top_k = run.hparams["config"]["top_k"]
    assert len(retrieved[0]) == top_k
    assert list(retrieved[0]["rank"]) == list(range(1, top_k + 1))
    assert retrieved[0]["weight"].is_monotonic_decreasing
    assert retrieved[0]["weight"].sum() == pytest.approx(1.0, abs=1e-5)
    history = set(expected_row["history_items"][0])
    assert set(retrieved[0]["item_id"]) <= history
    assert any("fusion train rec --config quick --model.config.model twin" in i.value for i in at.info)

    shapley = frames_with(at, "shapley")[0]
    assert list(shapley["group"]) == ["target item", "long history", "user profile", "time gaps"]
    full = float(metric(at, "Score with every group on"))
    base = float(metric(at, "Score with every group off"))
    assert full == pytest.approx(score, abs=1e-4)
    assert shapley["shapley"].sum() == pytest.approx(full - base, abs=2e-4)


def test_page_compares_dare_with_a_twin_run_and_scores_any_item(
    tiny_rec_run, tiny_twin_run, runs_root: Path, copy_run, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    dare, twin = copy_run(tiny_rec_run, runs_root), copy_run(tiny_twin_run, runs_root)
    at = open_page(monkeypatch, runs_root)
    # the newest run (TWIN, trained second) is the default; its counterpart DARE is the default comparison
    at.selectbox(key="rec-run").set_value(dare).run()
    assert at.selectbox(key="rec-compare").value == twin
    assert_no_exception(at)
    retrieved = frames_with(at, "behaviours ago")
    assert [len(frame) for frame in retrieved] == [dare.hparams["config"]["top_k"], twin.hparams["config"]["top_k"]]

    # any catalogue item can be the candidate; its score is what score_frame gives for that row
    at.radio(key="rec-candidate-source").set_value("any item").run()
    item_id = int(load_predictor_cached("longseq_rec", dare.path).vocab.items["item_id"][3])
    at.selectbox(key="rec-any-item").set_value(item_id).run()
    assert_no_exception(at)
    rows = held_out(dare, tmp_path)
    user = at.selectbox(key="rec-user").value
    row = rows.filter(pl.col("user_id") == user).head(1)
    row = row.with_columns(pl.lit(item_id).alias("target_item")).drop("label")
    recipe = get_recipe("longseq_rec")
    expected = recipe.score_frame(recipe.load_predictor(dare), row)["score"][0]
    assert float(metric(at, "Click probability")) == pytest.approx(expected, abs=5e-5)
    assert len(frames_with(at, "behaviours ago")) == 2


def test_page_scores_an_uploaded_parquet_file(
    tiny_rec_run, runs_root: Path, copy_run, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    run = copy_run(tiny_rec_run, runs_root)
    rows = held_out(run, tmp_path).head(3)
    buffer = io.BytesIO()
    rows.write_parquet(buffer)
    at = open_page(monkeypatch, runs_root)
    at.file_uploader(key="rec-upload").upload("mine.parquet", buffer.getvalue()).run()
    assert_no_exception(at)
    scored = frames_with(at, "score")
    assert len(scored) == 1 and len(scored[0]) == 3
    assert scored[0]["error"].isna().all()
    assert any(b.label == "Download scored Parquet" for b in at.download_button)


def test_score_uploaded_scores_every_row_and_reports_bad_ones(tiny_rec_run, tmp_path: Path):
    recipe = get_recipe("longseq_rec")
    predictor = load_predictor_cached(recipe.name, tiny_rec_run.path)
    good = held_out(tiny_rec_run, tmp_path).head(4)
    bad_item = good.head(1).with_columns(pl.lit(999_999, dtype=pl.Int64).alias("target_item"))
    no_history = good.head(1).with_columns(
        pl.lit([], dtype=pl.List(pl.Int64)).alias("history_items"),
        pl.lit([], dtype=pl.List(pl.Int64)).alias("history_timestamps"),
    )
    upload = pl.concat([good.head(2), bad_item, no_history, good.tail(2)])
    buffer = io.BytesIO()
    upload.write_parquet(buffer)

    scored = score_uploaded(recipe, predictor, buffer.getvalue(), chunk_rows=4)
    assert scored.columns == ["row", "user_id", "target_item", "label", "score", "warnings", "error"]
    assert scored["row"].to_list() == list(range(6))
    assert scored["target_item"].to_list() == upload["target_item"].to_list()
    assert scored["score"].is_null().to_list() == [False, False, True, False, False, False]
    assert "999999" in scored["error"][2] and "vocabulary" in scored["error"][2]
    # no history: scored from the target and the user, with a warning saying so
    assert scored["error"][3] is None and "history_items is empty or null" in scored["warnings"][3]
    assert scored["warnings"].is_null().to_list() == [True, True, True, False, True, True]
    expected = recipe.score_frame(predictor, good)["score"]
    assert scored["score"][[0, 1, 4, 5]].to_list() == pytest.approx(expected[[0, 1, 2, 3]].to_list())


def test_score_uploaded_rejects_files_it_cannot_score(tiny_rec_run):
    recipe = get_recipe("longseq_rec")
    predictor = load_predictor_cached(recipe.name, tiny_rec_run.path)
    with pytest.raises(UploadError, match="not a readable Parquet file"):
        score_uploaded(recipe, predictor, b"user_id,target_item\n1,2\n")
    buffer = io.BytesIO()
    pl.DataFrame({"user_id": [1], "history_items": [[2]]}).write_parquet(buffer)
    with pytest.raises(UploadError, match=r"lacks the column\(s\) \['target_item'\]"):
        score_uploaded(recipe, predictor, buffer.getvalue())
