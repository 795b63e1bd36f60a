"""Recommendation dashboard: a user's history, a candidate's score, what DARE and TWIN retrieve, and why.

Reads ``longseq_rec`` runs (``fusion train rec ...``) and their held-out split; never trains.
"""
from __future__ import annotations

import io
import tempfile
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import polars as pl  # noqa: E402
import streamlit as st  # noqa: E402
import torch  # noqa: E402

from apps.common import load_predictor_cached, run_label, run_picker, runs_root, upload_scorer  # noqa: E402
from fusion_core.explain import modality_shapley  # noqa: E402
from recipes.longseq_rec.explain import GROUP_LABELS  # noqa: E402
from recipes.longseq_rec.model import FEATURE_GROUPS  # noqa: E402
from recipes.runtime.registry import get_recipe  # noqa: E402
from recipes.runtime.runs import Run, list_runs  # noqa: E402

RECIPE = "longseq_rec"
TWIN_COMMAND = "fusion train rec --config quick --model.config.model twin"
COUNTERPART = {"dare": "twin", "twin": "dare", "din": "dare"}  # the model a run's retrieval is compared with
PRIMARY_COLOR, COMPARE_COLOR = "#d62728", "#1f77b4"


# --- data -------------------------------------------------------------------------------------------------------


@st.cache_data(show_spinner="Loading the held-out split…", max_entries=8)
def held_out_frame(run_path: str, model_stamp: float) -> pl.DataFrame:
    """The run's held-out rows in the scoring schema (``recipe.demo_input``), one row per candidate target."""
    recipe, run = get_recipe(RECIPE), Run(run_path)
    with tempfile.TemporaryDirectory() as folder:
        return pl.read_parquet(recipe.demo_input(run, Path(folder) / "held_out.parquet"))


def item_catalogue(predictor: Any) -> pl.DataFrame:
    """``item_id``, ``label`` (title or "item N"), ``category`` of every item in the run's vocabulary."""
    items = predictor.vocab.items
    return items.select(
        "item_id",
        pl.coalesce(pl.col("title"), pl.format("item {}", pl.col("item_id"))).alias("label"),
        pl.col("category"),
    )


def model_config(run: Run) -> dict[str, Any]:
    """The run's saved ``RecConfig`` as a mapping (``hparams.yaml``'s ``config``)."""
    return dict(run.hparams.get("config") or {})


def model_name(run: Run) -> str:
    return str(model_config(run).get("model", "model"))


def seen_behaviours(predictor: Any, row: dict[str, Any], batch: dict[str, torch.Tensor]) -> pl.DataFrame:
    """The behaviours of ``row`` the model sees, with their column in the encoded batch.

    The encoder keeps the known items, ordered by timestamp, and right-aligns the last ``max_history`` of them in
    the ``(1, L)`` history; this recovers which raw behaviour sits in each column, checked against the batch.
    Columns: ``position`` (batch column), ``index`` (in the row's ``history_items``), ``item_id``, ``timestamp``.
    """
    items = np.asarray(row["history_items"], dtype=np.int64)
    stamps = row.get("history_timestamps")
    stamps = np.asarray(stamps, dtype=np.int64) if stamps is not None and len(stamps) == len(items) else None
    order = np.argsort(stamps, kind="stable") if stamps is not None else np.arange(items.size)
    known = order[predictor.vocab.item_index(items[order]) > 0]
    length = batch["hist_item"].shape[1]
    kept = known[-length:]
    positions = np.arange(length - kept.size, length)
    expected = predictor.vocab.item_index(items[kept])
    if not np.array_equal(batch["hist_item"][0, positions].numpy(), expected):
        raise RuntimeError("the encoded history does not match the row's behaviours; the encoder's ordering changed")
    return pl.DataFrame(
        {
            "position": positions,
            "index": kept,
            "item_id": items[kept],
            "timestamp": stamps[kept] if stamps is not None else np.full(kept.size, None),
        },
        schema={"position": pl.Int64, "index": pl.Int64, "item_id": pl.Int64, "timestamp": pl.Int64},
    )


def retrieval(predictor: Any, row_frame: pl.DataFrame) -> tuple[pl.DataFrame | None, str | None]:
    """What the model attended to for the single row in ``row_frame``: one row per retrieved behaviour with
    ``rank``, ``item_id``, ``timestamp``, ``behaviours ago`` and ``weight``, best first; or an error text."""
    encoded = predictor.encode(row_frame)
    if not encoded.valid_rows:
        return None, encoded.errors[0]
    out = predictor.forward(encoded.batch)
    filled = out.retrieved[0] >= 0
    positions = out.retrieved[0][filled].numpy()
    weights = out.weights[0][filled].double().numpy()
    seen = seen_behaviours(predictor, row_frame.row(0, named=True), encoded.batch)
    length = encoded.batch["hist_item"].shape[1]
    found = pl.DataFrame({"position": positions, "weight": weights}).join(seen, on="position", how="left")
    found = found.sort("weight", descending=True).with_row_index("rank", offset=1)
    return (
        found.select(
            pl.col("rank").cast(pl.Int64),
            "item_id",
            "timestamp",
            (length - 1 - pl.col("position")).alias("behaviours ago"),
            "weight",
            "index",
        ),
        None,
    )


def feature_group_shapley(predictor: Any, row_frame: pl.DataFrame) -> tuple[pl.DataFrame, float, float]:
    """Exact Shapley values of the feature groups for the row's click probability: (table, f(none), f(all))."""
    encoded = predictor.encode(row_frame)
    batch = encoded.batch
    result = modality_shapley(lambda present: predictor.probability(batch, present), list(FEATURE_GROUPS), batch_size=1)
    table = pl.DataFrame(
        {
            "group": [GROUP_LABELS[g] for g in FEATURE_GROUPS],
            "shapley": [float(result.values[g][0]) for g in FEATURE_GROUPS],
        }
    )
    return table, float(result.base[0]), float(result.full[0])


# --- plots ------------------------------------------------------------------------------------------------------


def timeline_figure(
    history: pl.DataFrame, retrieved: dict[str, pl.DataFrame], target: dict[str, Any], categories: list[str]
):
    """History as a timeline: time on x, category on y; each model's retrieved behaviours are highlighted with
    marker size by attention weight; the candidate is a star at the target time."""
    fig, ax = plt.subplots(figsize=(12, 0.35 * len(categories) + 2.8))
    row_of = {c: i for i, c in enumerate(categories)}
    timed = history["time"].null_count() == 0
    x = history["time"].to_list() if timed else history["index"].to_list()
    ax.scatter(x, [row_of[c] for c in history["category"]], s=14, color="#b0b0b0", label="behaviour", zorder=1)
    styles = [(PRIMARY_COLOR, "o", "full"), (COMPARE_COLOR, "s", "none")]
    for (name, found), (color, marker, fill) in zip(retrieved.items(), styles):
        if found is None or found.is_empty():
            continue
        picked = found.join(history.select("index", "time", "category"), on="index", how="left")
        sizes = 60 + 600 * picked["weight"].to_numpy() / max(float(picked["weight"].max()), 1e-9)
        ax.scatter(
            picked["time"].to_list() if timed else picked["index"].to_list(),
            [row_of[c] for c in picked["category"]],
            s=sizes,
            marker=marker,
            facecolors=color if fill == "full" else "none",
            edgecolors=color,
            alpha=0.75 if fill == "full" else 1.0,
            linewidths=1.6,
            label=f"{name}: retrieved (size ∝ weight)",
            zorder=3 if fill == "full" else 4,
        )
    if target.get("category") in row_of:
        tx = target.get("time") if timed and target.get("time") is not None else (len(history) if not timed else None)
        if tx is not None:
            ax.scatter([tx], [row_of[target["category"]]], marker="*", s=320, color="#ff9f1c", edgecolors="black",
                       label="candidate", zorder=5)
    ax.set_yticks(range(len(categories)), categories)
    ax.set_ylabel("category")
    ax.set_xlabel("time" if timed else "behaviour (oldest first)")
    ax.set_ylim(-0.7, len(categories) - 0.3)
    ax.grid(axis="y", color="#eeeeee")
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=4, fontsize=8, frameon=False, markerscale=0.6)
    fig.autofmt_xdate()
    fig.tight_layout()
    return fig


def shapley_figure(table: pl.DataFrame):
    fig, ax = plt.subplots(figsize=(6, 2.4))
    values = table["shapley"].to_numpy()
    ax.barh(table["group"].to_list(), values, color=["#55a868" if v >= 0 else "#c44e52" for v in values])
    ax.axvline(0, color="black", linewidth=0.8)
    ax.invert_yaxis()
    ax.set_xlabel("Shapley value (click probability)")
    fig.tight_layout()
    return fig


# --- page -------------------------------------------------------------------------------------------------------

st.set_page_config(page_title="Recommendation · fusion-suite", page_icon="🎬", layout="wide")
st.title("Long-sequence recommendation")
st.caption(
    "DIN, TWIN and DARE click models over a user's behaviour history. DARE searches the whole history with a "
    "small attention embedding table and sums a separate representation table over the top-k it keeps; TWIN "
    "uses one table for both."
)

recipe = get_recipe(RECIPE)
root = runs_root()
runs = [run for run in list_runs(root, RECIPE) if run.has_model]
if not runs:
    st.info(
        f"**No finished `{RECIPE}` run** under `{root}`. Train one with `fusion train rec --config quick` "
        f"(DARE on MovieLens-100K, a few minutes) or `make demo`, and a TWIN run to compare with: `{TWIN_COMMAND}`.",
        icon="📭",
    )
    st.stop()

with st.sidebar:
    st.header("Runs")
    run = run_picker("Run", runs, key="rec-run")
    others = [r for r in runs if r != run]
    wanted = COUNTERPART.get(model_name(run))
    default_compare = next((r for r in others if model_name(r) == wanted), None)
    compare = run_picker(
        "Compare retrieval with",
        others,
        key="rec-compare",
        default=default_compare,
        allow_none=True,
        help="Another run on the same data, e.g. a TWIN run next to a DARE run.",
    )

predictor = load_predictor_cached(RECIPE, run.path)
held_out = held_out_frame(str(run.path.resolve()), run.model_path.stat().st_mtime)
catalogue = item_catalogue(predictor)
categories = list(predictor.vocab.categories)
run_model = model_name(run)

metrics = run.metrics
cols = st.columns(4)
cols[0].metric("Model", run_model.upper())
for col, name in zip(cols[1:], ("test/auc", "test/gauc", "test/search_recall")):
    if name in metrics:
        col.metric(f"held-out {name.split('/')[-1].replace('_', ' ')}", f"{metrics[name]:.4f}")
st.caption(
    f"Run `{run.run_id}` trained on `{predictor.vocab.dataset}`: {predictor.vocab.users.height:,} users, "
    f"{predictor.vocab.items.height:,} items, {len(categories)} categories; histories up to "
    f"{predictor.max_history:,} behaviours."
)

if held_out.is_empty():
    st.warning(f"Run {run.run_id} has no held-out rows to browse; upload a Parquet file below to score one.")
    st.stop()

# --- user and candidate -------------------------------------------------------------------------------------------
st.header("User and candidate")
users = held_out["user_id"].unique(maintain_order=True).sort().to_list()
pick_user, pick_source, pick_item = st.columns([1, 1, 2])
user = pick_user.selectbox("User (held-out split)", users, key="rec-user")
user_rows = held_out.filter(pl.col("user_id") == user).with_row_index("candidate")
source = pick_source.radio("Candidate from", ["held-out targets", "any item"], key="rec-candidate-source")

labels = dict(zip(catalogue["item_id"].to_list(), catalogue["label"].to_list()))
category_of = dict(zip(catalogue["item_id"].to_list(), catalogue["category"].to_list()))
if source == "held-out targets":
    candidate_row = pick_item.selectbox(
        "Candidate item",
        user_rows["candidate"].to_list(),
        key="rec-candidate",
        format_func=lambda i: (
            f"{labels.get(user_rows['target_item'][i], user_rows['target_item'][i])} · category "
            f"{category_of.get(user_rows['target_item'][i], '?')}"
            + ((" · clicked" if user_rows["label"][i] else " · not clicked") if "label" in user_rows.columns else "")
        ),
    )
    row_frame = user_rows.filter(pl.col("candidate") == candidate_row).drop("candidate")
else:
    item = pick_item.selectbox(
        "Candidate item",
        catalogue["item_id"].to_list(),
        key="rec-any-item",
        format_func=lambda i: f"{labels[i]} · category {category_of[i]}",
    )
    row_frame = user_rows.head(1).drop("candidate").with_columns(pl.lit(item, dtype=pl.Int64).alias("target_item"))
    if "label" in row_frame.columns:
        row_frame = row_frame.drop("label")
row = row_frame.row(0, named=True)

scored = recipe.score_frame(predictor, row_frame)
score, error = scored["score"][0], scored["error"][0]
if error is not None:
    st.error(f"This row cannot be scored: {error}")
    st.stop()
if scored["warnings"][0] is not None:  # scored without the user or the history, or with time gaps unknown
    st.info(f"Scored with a warning: {scored['warnings'][0]}")
result = st.columns([1, 1, 2])
result[0].metric("Click probability", f"{score:.4f}", help=f"`recipe.score_frame` with run {run.run_id}")
if row.get("label") is not None:
    result[1].metric("Held-out label", "clicked" if row["label"] else "not clicked")
result[2].markdown(
    f"**Candidate:** {labels.get(row['target_item'], row['target_item'])} (item `{row['target_item']}`)  \n"
    f"**Category:** {category_of.get(row['target_item'], 'unknown')}  \n"
    f"**User:** `{user}`, {len(row['history_items'])} behaviours in the held-out history"
)

# --- retrieval ----------------------------------------------------------------------------------------------------
compare_predictor = load_predictor_cached(RECIPE, compare.path) if compare is not None else None
found, found_error = retrieval(predictor, row_frame)
compare_found, compare_error = (None, None)
if compare_predictor is not None:
    compare_found, compare_error = retrieval(compare_predictor, row_frame)

history_items = np.asarray(row["history_items"], dtype=np.int64)
history_stamps = row.get("history_timestamps")
history = pl.DataFrame(
    {
        "index": np.arange(history_items.size),
        "item_id": history_items,
        "timestamp": history_stamps if history_stamps is not None else [None] * history_items.size,
    },
    schema={"index": pl.Int64, "item_id": pl.Int64, "timestamp": pl.Int64},
).with_columns(
    pl.from_epoch("timestamp", time_unit="s").alias("time"),
    pl.col("item_id").replace_strict(category_of, default="unknown", return_dtype=pl.Utf8).alias("category"),
)

st.header("History")
compare_name = model_name(compare) if compare is not None else None
retrieved_sets = {f"{run_model.upper()} ({run.run_id})": found}
if compare is not None:
    retrieved_sets[f"{compare_name.upper()} ({compare.run_id})"] = compare_found
target_time = row.get("target_timestamp")
target_point = {
    "category": category_of.get(row["target_item"]),
    "time": pl.from_epoch(pl.Series([target_time]), time_unit="s")[0] if target_time is not None else None,
}
plot_categories = categories + (["unknown"] if "unknown" in history["category"].to_list() else [])
st.pyplot(timeline_figure(history, retrieved_sets, target_point, plot_categories), clear_figure=True)
st.caption(
    f"{history.height} behaviours of user {user}, oldest left. Grey: every behaviour; "
    f"filled red: behaviours {run_model.upper()} attended to"
    + (f"; hollow blue squares: those {compare_name.upper()} attended to" if compare is not None else "")
    + "; the star is the candidate at the time it is shown."
)

st.header("Retrieved behaviours")
top_k = int(model_config(run).get("top_k", 0))


def show_retrieved(title: str, found: pl.DataFrame | None, error: str | None, key: str) -> None:
    st.subheader(title)
    if found is None:
        st.error(f"Not scored: {error}")
        return
    table = found.with_columns(
        pl.col("item_id").replace_strict(labels, default="unknown", return_dtype=pl.Utf8).alias("item"),
        pl.col("item_id").replace_strict(category_of, default="unknown", return_dtype=pl.Utf8).alias("category"),
        pl.from_epoch("timestamp", time_unit="s").alias("time"),
    ).select("rank", "item_id", "item", "category", "time", "behaviours ago", "weight")
    st.dataframe(
        table,
        hide_index=True,
        width="stretch",
        key=key,
        column_order=["rank", "item", "category", "time", "behaviours ago", "weight"],
        column_config={
            "rank": st.column_config.NumberColumn("#", width="small"),
            "category": st.column_config.TextColumn("category", width="small"),
            "time": st.column_config.DatetimeColumn("time", format="YYYY-MM-DD HH:mm"),
            "behaviours ago": st.column_config.NumberColumn(
                "ago", help="how many behaviours before the candidate", width="small"
            ),
            "weight": st.column_config.ProgressColumn("weight", min_value=0.0, max_value=1.0, format="%.3f"),
        },
    )


left, right = st.columns(2)
with left:
    what = f"top-{top_k} search" if run_model in ("dare", "twin") else "recent window"
    show_retrieved(f"{run_model.upper()} · {what} · {run.run_id}", found, found_error, "rec-retrieved")
with right:
    if compare is not None:
        compare_k = int(model_config(compare).get("top_k", 0))
        what = f"top-{compare_k} search" if compare_name in ("dare", "twin") else "recent window"
        show_retrieved(f"{compare_name.upper()} · {what} · {compare.run_id}", compare_found, compare_error,
                       "rec-compare-retrieved")
        if found is not None and compare_found is not None:
            shared = set(found["index"].to_list()) & set(compare_found["index"].to_list())
            st.caption(f"{len(shared)} of {found.height} behaviours retrieved by both models.")
    else:
        st.subheader("Compare with TWIN")
        st.info(
            "Only one run is selected. To see which behaviours TWIN retrieves for the same user and candidate, "
            f"train a TWIN run on the same data, e.g. `{TWIN_COMMAND}` (add the same `--data.*` options as "
            f"this run), then pick it under **Compare retrieval with** in the sidebar.",
            icon="🔍",
        )

# --- explanation --------------------------------------------------------------------------------------------------
st.header("Explanation")
shapley, base, full = feature_group_shapley(predictor, row_frame)
explain_left, explain_right = st.columns([3, 2])
with explain_left:
    st.pyplot(shapley_figure(shapley), clear_figure=True)
with explain_right:
    st.dataframe(shapley, hide_index=True, width="stretch", key="rec-shapley",
                 column_config={"shapley": st.column_config.NumberColumn("Shapley value", format="%+.4f")})
    st.metric("Score with every group off", f"{base:.4f}")
    st.metric("Score with every group on", f"{full:.4f}", delta=f"{full - base:+.4f}")
st.caption(
    "Exact Shapley values of four feature groups (target item, long history, user profile, time gaps) for this "
    "candidate's click probability, from all 16 on/off combinations (`fusion_core.explain.modality_shapley`). "
    "A group that is off contributes nothing; the values add up to the score minus the score with every group off."
)

# --- upload -------------------------------------------------------------------------------------------------------
st.header("Score a Parquet file")
st.markdown(
    f"Columns: `user_id`, `target_item`, `history_items` (list of item ids, oldest first); optional "
    f"`history_timestamps`, `target_timestamp`, `label`. Scored with run `{run_label(run)}`; rows that cannot be "
    "scored keep a null score and say why."
)
example = io.BytesIO()
held_out.head(200).write_parquet(example)
st.download_button("Download an example input (held-out rows)", data=example.getvalue(),
                   file_name=f"{RECIPE}-{run.run_id}-example.parquet", mime="application/octet-stream",
                   key="rec-example")
upload_scorer(recipe, predictor, key="rec-upload", run_id=run.run_id)
