"""Home page of ``fusion app``: every run under the runs root with its metrics, newest first."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import polars as pl  # noqa: E402
import streamlit as st  # noqa: E402

from apps.common import EMPTY_RUNS_HELP, list_runs_table, metric_columns, runs_root  # noqa: E402


def metric_figure(labels: list[str], values: list[float], groups: list[str], metric: str):
    """Horizontal bars, one per run (oldest at the top), coloured by ``groups`` (the model), with their values."""
    palette = plt.get_cmap("tab10").colors
    colour_of = {g: palette[i % len(palette)] for i, g in enumerate(dict.fromkeys(groups))}
    fig, ax = plt.subplots(figsize=(7, 0.32 * len(labels) + 1.0))
    bars = ax.barh(labels, values, color=[colour_of[g] for g in groups])
    ax.bar_label(bars, labels=[f"{v:.4f}" for v in values], padding=3, fontsize=9)
    ax.invert_yaxis()
    ax.set_xlabel(metric)
    ax.set_xlim(min(0.0, min(values)), max(values) * 1.15 if max(values) > 0 else 1.0)
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    return fig


st.set_page_config(page_title="fusion-suite", page_icon="🧬", layout="wide")

st.title("fusion-suite runs")
st.markdown(
    "A multimodal fusion library (`fusion_core`) and vertical recipes built on it. "
    "Each recipe trains with `fusion train`, scores with `fusion score` and explains with `fusion explain`; "
    "these pages read the run folders those commands write."
)

root = runs_root()
table = list_runs_table(root)
st.caption(f"Runs root: `{root.resolve()}`")

if table.is_empty():
    st.info(f"**No runs yet** under `{root}`. {EMPTY_RUNS_HELP}", icon="📭")
    st.stop()

metrics = metric_columns(table)
shown = table.select(
    pl.col("recipe"),
    pl.col("run_id"),
    pl.col("created").dt.strftime("%Y-%m-%d %H:%M:%S").alias("date"),
    pl.col("model"),
    pl.col("status"),
    *[pl.col(name) for name in metrics],
)
st.subheader(f"{table.height} run{'s' if table.height != 1 else ''}")
st.dataframe(
    shown,
    hide_index=True,
    width="stretch",
    column_config={name: st.column_config.NumberColumn(name, format="%.4f") for name in metrics},
)
newest = table.row(0, named=True)
st.caption(
    f"Newest: `{newest['run_id']}` ({newest['recipe']}{', ' + newest['model'] if newest['model'] else ''}, "
    f"{newest['status']}), created {newest['created']:%Y-%m-%d %H:%M}. Run folders: `<runs root>/<recipe>/<run id>/`."
)

st.subheader("Metrics across runs")
recipes = table["recipe"].unique(maintain_order=True).to_list()
left, right = st.columns(2)
recipe = left.selectbox("Recipe", recipes, key="home-recipe")
of_recipe = table.filter(pl.col("recipe") == recipe)
recipe_metrics = metric_columns(of_recipe)
if not recipe_metrics:
    st.info(f"No {recipe} run has metrics yet (a run writes `metrics.json` when training finishes).")
else:
    preferred = next((m for m in recipe_metrics if m.endswith("/auc")), recipe_metrics[0])
    metric = right.selectbox("Metric", recipe_metrics, index=recipe_metrics.index(preferred), key="home-metric")
    chart = of_recipe.filter(pl.col(metric).is_not_null()).sort("created")
    labels = [f"{run_id} {model}" if model else run_id for run_id, model in zip(chart["run_id"], chart["model"])]
    groups = chart["model"].fill_null("").to_list()
    plot_column, _ = st.columns([3, 2])
    plot_column.pyplot(metric_figure(labels, chart[metric].to_list(), groups, metric), clear_figure=True)

st.subheader("Dashboards")
for page in sorted((Path(__file__).parent / "pages").glob("*.py")):
    st.page_link(f"pages/{page.name}", label=page.stem.split("_", 1)[-1].replace("_", " "))
