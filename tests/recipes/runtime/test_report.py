"""HtmlReport is one self-contained file; `explain` resolves a run and writes the recipe's report."""
from __future__ import annotations

import re

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import polars as pl
import pytest

from tests.recipes.runtime import toy_recipe
from recipes.runtime.explain import explain
from recipes.runtime.report import HtmlReport
from recipes.runtime.runs import RunNotFoundError
from recipes.runtime.score import ScoreInputError


def assert_self_contained(html: str) -> None:
    assert "data:image/png;base64," in html
    assert not re.search(r"<script[^>]*\bsrc=", html)
    assert not re.search(r"<link[^>]*\bhref=", html)
    assert not re.search(r"""(src|href)=["']?https?:""", html)


def test_report_inlines_figures_and_escapes_text(tmp_path):
    report = HtmlReport("A <b>report</b>", subtitle="run `abc`")
    report.heading("Section")
    report.text("first paragraph with <script>alert(1)</script> and `code`\n\n- item one\n- item **two**")
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    report.figure(fig, caption="a line")
    report.table(pl.DataFrame({"name": ["a", "b"], "value": [0.123456, 2]}), caption="frame")
    report.table({"auc": 0.75, "rows": 12345})
    report.table([{"x": 1}, {"x": 2, "y": "<i>"}])
    report.html("<p class='raw'>trusted</p>")
    path = report.save(tmp_path / "sub" / "report.html")
    html = path.read_text()
    assert_self_contained(html)
    assert plt.get_fignums() == []  # the figure was closed
    assert "<title>A &lt;b&gt;report&lt;/b&gt;</title>" in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "<script>" not in html
    assert "<code>code</code>" in html and "<li>item <strong>two</strong></li>" in html
    assert '<td class="num">0.1235</td>' in html and '<td class="num">12,345</td>' in html
    assert "<td>&lt;i&gt;</td>" in html and "<p class='raw'>trusted</p>" in html
    assert html.index("<h2>Section</h2>") < html.index("<figure>") < html.index("<table>")


def test_table_rejects_what_it_cannot_show():
    with pytest.raises(ValueError, match="equal lengths"):
        HtmlReport("t").table({"a": [1, 2], "b": [1]})
    with pytest.raises(ValueError, match="list of dicts"):
        HtmlReport("t").table([1, 2])


def test_explain_writes_the_recipes_report(trained_run, tmp_path):
    frame_path = tmp_path / "input.parquet"
    toy_recipe.make_frame(10).write_parquet(frame_path)
    out = explain("toy", trained_run.run_id, frame_path, tmp_path / "report.html", max_examples=3, runs_dir=trained_run.path.parents[1])
    html = out.read_text()
    assert_self_contained(html)
    assert "Score distribution" in html and "test/acc" in html
    default = explain("toy", str(trained_run.path), None, None)
    assert default == trained_run.path / "report.html" and default.is_file()
    with pytest.raises(ScoreInputError, match="nowhere.parquet: no such file"):
        explain("toy", str(trained_run.path), tmp_path / "nowhere.parquet", tmp_path / "r.html")
    with pytest.raises(RunNotFoundError, match="not found"):
        explain("toy", "nope", None, tmp_path / "r.html", runs_dir=trained_run.path.parents[1])


def test_metrics_section_shows_the_robustness_table():
    from recipes.runtime.report import HtmlReport

    metrics = {"test/auc": 0.8, "test/auc@without_history": 0.7, "test/auc@without_profile": 0.79,
               "test/logloss": 0.5, "test/logloss@without_history": 0.6, "train_seconds": 3.0}
    html = HtmlReport("t").metrics(metrics, caption="held-out").render()
    assert "Robustness to missing modalities" in html
    assert "<th>without history</th>" in html and "<th>without profile</th>" in html
    plain, robustness = html.split("Robustness to missing modalities")
    assert "@without_" not in plain  # the subset figures are in the table, not the plain list
    assert "0.7" in robustness and "test/auc" in robustness and "test/logloss" in robustness
    without = HtmlReport("t").metrics({"test/auc": 0.8}).render()
    assert "Robustness" not in without
