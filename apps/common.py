"""What every dashboard page shares: where the runs are, the runs table, cached predictors, a run picker and
Parquet upload scoring. Nothing here knows about a particular recipe; pages talk to recipes only through
:class:`recipes.runtime.recipe.Recipe`.
"""
from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl
import streamlit as st

from recipes.runtime import runs as run_folders
from recipes.runtime.registry import get_recipe
from recipes.runtime.runs import Run, list_runs
from recipes.runtime.inputs import data_root
from recipes.runtime.score import OUTPUT_COLUMNS, ScoreInputError, score_part

if TYPE_CHECKING:
    from recipes.runtime.recipe import Recipe

__all__ = [
    "UploadError",
    "runs_root",
    "list_runs_table",
    "metric_columns",
    "load_predictor_cached",
    "score_uploaded",
    "run_label",
    "run_picker",
    "upload_scorer",
    "EMPTY_RUNS_HELP",
]

EMPTY_RUNS_HELP = (
    "Create one with `make demo` (trains every recipe on its default data) or with "
    "`fusion train rec --config quick`, then reload this page. Runs are read from the folder in "
    "`$FUSION_RUNS_DIR` (or `fusion app --runs-dir DIR`)."
)
SCORE_CHUNK_ROWS = 4096
#: the folder an uploaded table's file paths may point into (unset: none — uploaded tables cannot name server files)
APP_DATA_ROOT_ENV = "FUSION_APP_DATA_ROOT"
_RUN_COLUMNS = ("recipe", "run_id", "created", "status", "model")


class UploadError(ScoreInputError):
    """An uploaded file cannot be scored as a whole (unreadable, or a required column is missing)."""


def runs_root() -> Path:
    """The runs root: ``$FUSION_RUNS_DIR`` (set by ``fusion app --runs-dir``), else ``./runs``."""
    return run_folders.runs_root()


def _model_name(run: Run) -> str | None:
    """Which of its recipe's models the run trained (``dare``, ``twin``, ``interaction`` …: the recipe's
    ``variant_field``); None when the recipe has one model or is not installed."""
    try:
        return get_recipe(run.recipe).variant_of(run)
    except ValueError:
        return None


def list_runs_table(root: str | Path | None = None, recipe: str | None = None) -> pl.DataFrame:
    """One row per run under ``root`` (default :func:`runs_root`), newest first.

    Columns: ``recipe``, ``run_id``, ``created`` (datetime), ``status``, ``model`` (the ``model``
    hyperparameter where a recipe has one), ``path``, then one Float64 column per metric in any run's
    ``metrics.json`` (null where a run lacks it), sorted by name.
    """
    runs = list_runs(runs_root() if root is None else root, recipe)
    records: list[dict[str, Any]] = []
    for run in runs:
        metrics = {str(k): float(v) for k, v in run.metrics.items() if isinstance(v, (int, float))}
        records.append(
            {
                "recipe": run.recipe,
                "run_id": run.run_id,
                "created": run.created,
                "status": run.status,
                "model": _model_name(run),
                "path": str(run.path),
                **metrics,
            }
        )
    base_schema = {
        "recipe": pl.Utf8,
        "run_id": pl.Utf8,
        "created": pl.Datetime("us"),
        "status": pl.Utf8,
        "model": pl.Utf8,
        "path": pl.Utf8,
    }
    metric_names = sorted({k for record in records for k in record} - set(base_schema))
    schema = {**base_schema, **{name: pl.Float64 for name in metric_names}}
    rows = [{name: record.get(name) for name in schema} for record in records]
    return pl.DataFrame(rows, schema=schema, orient="row") if rows else pl.DataFrame(schema=schema)


def metric_columns(table: pl.DataFrame) -> list[str]:
    """The metric columns of a :func:`list_runs_table` frame that hold at least one value."""
    return [
        name
        for name in table.columns
        if name not in (*_RUN_COLUMNS, "path") and table[name].null_count() < table.height
    ]


@st.cache_resource(show_spinner="Loading the model…", max_entries=8)
def _load_predictor(recipe_name: str, run_path: str, model_stamp: float) -> Any:
    # model_stamp (the model file's mtime) is part of the cache key: a resumed run saves a new model in place
    recipe = get_recipe(recipe_name)
    return recipe.load_predictor(Run(run_path))


def load_predictor_cached(recipe_name: str, run_path: str | Path) -> Any:
    """``recipe.load_predictor(Run(run_path))``, loaded once per run and model file for the whole server."""
    run = Run(run_path)
    stamp = run.model_path.stat().st_mtime if run.has_model else 0.0
    return _load_predictor(recipe_name, str(run.path.resolve()), stamp)


def _read_upload(uploaded_bytes: bytes) -> pl.DataFrame:
    try:
        return pl.read_parquet(io.BytesIO(uploaded_bytes))
    except Exception as error:  # polars raises several error types for a file that is not Parquet
        raise UploadError(
            f"the uploaded file is not a readable Parquet file ({type(error).__name__}: {error}); "
            "write it with polars `df.write_parquet(...)` or pandas `df.to_parquet(...)`"
        ) from None


def score_uploaded(
    recipe: "Recipe", predictor: Any, uploaded_bytes: bytes, chunk_rows: int = SCORE_CHUNK_ROWS
) -> pl.DataFrame:
    """Score an uploaded Parquet file with ``recipe.score_frame``, in chunks of ``chunk_rows`` rows.

    Returns one row per input row, in input order, with the columns ``fusion score`` writes: ``row`` (input row
    index), the recipe's passthrough columns, ``score``, the extra outputs, ``warnings`` and ``error`` (a bad row gets
    a null score and a message; the other rows are still scored). Raises :class:`UploadError` when the file as a
    whole cannot be scored: unreadable, or missing one of ``recipe.score_columns``.

    Paths an uploaded table names are confined to ``$FUSION_APP_DATA_ROOT`` when it is set, else to an empty
    temporary folder: a table from a browser never makes the server open its own files.
    """
    if chunk_rows <= 0:
        raise ValueError(f"chunk_rows must be positive; got {chunk_rows}")
    frame = _read_upload(uploaded_bytes)
    missing = [c for c in recipe.score_columns if c not in frame.columns]
    if missing:
        raise UploadError(
            f"the uploaded file lacks the column(s) {missing} that recipe {recipe.name} needs; it has "
            f"{frame.columns}. Required: {list(recipe.score_columns)}"
        )
    passthrough = [c for c in dict.fromkeys(recipe.passthrough) if c in frame.columns and c not in OUTPUT_COLUMNS]
    parts: list[pl.DataFrame] = []
    with tempfile.TemporaryDirectory(prefix="fusion-upload-") as empty_root:
        with data_root(os.environ.get(APP_DATA_ROOT_ENV) or empty_root):
            for start in range(0, frame.height, chunk_rows):
                # score_part falls back to row by row, so one bad row costs only itself
                parts.append(score_part(recipe, predictor, frame.slice(start, chunk_rows), start, passthrough))
    if not parts:
        return score_part(recipe, predictor, frame.head(0), 0, passthrough)
    return pl.concat(parts, how="vertical")


def run_label(run: Run, metric: str | None = None) -> str:
    """``dare · 20261124-231500-ab12 · test/auc 0.712`` (model and metric where the run has them)."""
    model = _model_name(run)
    parts = [model, run.run_id] if model else [run.run_id]
    metrics = run.metrics
    if metric and metric in metrics:
        parts.append(f"{metric} {metrics[metric]:.3f}")
    return " · ".join(parts)


def run_picker(
    label: str,
    runs: Sequence[Run],
    *,
    key: str,
    default: Run | None = None,
    allow_none: bool = False,
    metric: str | None = None,
    help: str | None = None,
    container: Any = st,
) -> Run | None:
    """A select box over ``runs`` (labelled by :func:`run_label`); returns the chosen run.

    ``default`` is preselected (else the first run); with ``allow_none`` the first option is "none" and
    None is returned when it is chosen.
    """
    options: list[Run | None] = ([None] if allow_none else []) + list(runs)
    if not options:
        return None
    index = options.index(default) if default in options else 0
    return container.selectbox(
        label,
        options,
        index=index,
        key=key,
        help=help,
        format_func=lambda run: "— none —" if run is None else run_label(run, metric),
    )


def upload_scorer(recipe: "Recipe", predictor: Any, *, key: str, run_id: str = "") -> pl.DataFrame | None:
    """Upload a Parquet file, score it with ``predictor`` and offer the scored file for download.

    Shows a file-level problem as an error message, and per-row problems next to their rows. Returns the
    scored frame (or None when nothing was uploaded or the file was rejected).
    """
    columns = ", ".join(f"`{c}`" for c in recipe.score_columns) or "the recipe's input columns"
    uploaded = st.file_uploader(
        "Parquet file to score",
        type=["parquet"],
        key=key,
        help=f"Needs the columns {columns}; one score per row comes back, like `fusion score {recipe.name}`.",
    )
    if uploaded is None:
        return None
    try:
        with st.spinner("Scoring…"):
            scored = score_uploaded(recipe, predictor, uploaded.getvalue())
    except UploadError as error:
        st.error(str(error))
        return None
    failed = scored.filter(pl.col("error").is_not_null())
    warned = scored.filter(pl.col("warnings").is_not_null())
    st.write(f"**{scored.height}** rows scored from `{uploaded.name}`, **{failed.height}** with an error, "
             f"**{warned.height}** scored with a warning.")
    if failed.height:
        st.warning("Rows that could not be scored (null score):")
        st.dataframe(failed.select("row", "error"), hide_index=True, width="stretch")
    if warned.height:
        st.info("Rows scored without something (see `warnings`):")
        st.dataframe(warned.select("row", "score", "warnings"), hide_index=True, width="stretch")
    st.dataframe(scored, hide_index=True, width="stretch")
    buffer = io.BytesIO()
    scored.write_parquet(buffer)
    stem = Path(uploaded.name).stem
    st.download_button(
        "Download scored Parquet",
        data=buffer.getvalue(),
        file_name=f"{stem}.scored{'-' + run_id if run_id else ''}.parquet",
        mime="application/octet-stream",
        key=f"{key}-download",
    )
    return scored
