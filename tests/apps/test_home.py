"""The home page lists every run under the runs root with its metrics, newest first."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from streamlit.testing.v1 import AppTest

HOME = Path(__file__).resolve().parents[2] / "apps" / "Home.py"


def make_run(root: Path, recipe: str, run_id: str, metrics: dict[str, float] | None, model: str | None = None) -> Path:
    """A run folder as ``fusion train`` leaves it, minus the model weights (the home page never loads them)."""
    folder = root / recipe / run_id
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump({"trainer": {"max_epochs": 1}}))
    (folder / "hparams.yaml").write_text(yaml.safe_dump({"config": {"model": model}} if model else {"config": {}}))
    if metrics is not None:
        (folder / "metrics.json").write_text(json.dumps(metrics))
    return folder


def run_home(runs_root: Path, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    monkeypatch.setenv("FUSION_RUNS_DIR", str(runs_root))
    at = AppTest.from_file(str(HOME), default_timeout=30).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_home_without_runs_shows_the_empty_state(runs_root: Path, monkeypatch: pytest.MonkeyPatch):
    at = run_home(runs_root, monkeypatch)
    assert at.title[0].value == "fusion-suite runs"
    assert len(at.dataframe) == 0
    empty = at.info[0].value
    assert "No runs yet" in empty and "make demo" in empty and "fusion train" in empty


def test_home_lists_runs_newest_first_with_their_metrics(runs_root: Path, monkeypatch: pytest.MonkeyPatch):
    make_run(runs_root, "longseq_rec", "20260101-120000-aaaa", {"test/auc": 0.61, "test/logloss": 0.69}, "twin")
    make_run(
        runs_root, "longseq_rec", "20260102-090000-bbbb", {"test/auc": 0.72, "test/logloss": 0.58, "train_seconds": 3.5}, "dare"
    )
    make_run(runs_root, "longseq_rec", "20260103-080000-cccc", None, "dare")  # still training: no metrics yet

    at = run_home(runs_root, monkeypatch)
    assert len(at.info) == 0
    table = at.dataframe[0].value
    assert list(table["run_id"]) == ["20260103-080000-cccc", "20260102-090000-bbbb", "20260101-120000-aaaa"]
    assert list(table["recipe"]) == ["longseq_rec"] * 3
    assert list(table["model"]) == ["dare", "dare", "twin"]
    assert list(table["date"]) == ["2026-01-03 08:00:00", "2026-01-02 09:00:00", "2026-01-01 12:00:00"]
    assert table["test/auc"].tolist()[1:] == pytest.approx([0.72, 0.61])
    assert table["test/auc"].isna().tolist() == [True, False, False]
    assert table["train_seconds"].tolist()[1] == pytest.approx(3.5)

    # the chart across runs starts on the AUC of the recipe's runs
    assert at.selectbox(key="home-recipe").value == "longseq_rec"
    assert at.selectbox(key="home-metric").value == "test/auc"
    assert set(at.selectbox(key="home-metric").options) == {"test/auc", "test/logloss", "train_seconds"}
    at.selectbox(key="home-metric").set_value("test/logloss").run()
    assert not at.exception
