"""``fusion explain``: resolve a run and let its recipe write a self-contained HTML report."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from recipes.runtime.runs import Run

__all__ = ["explain"]


def explain(
    recipe_name: str,
    run_spec: "str | Path | Run | None",
    input: "str | Path | None",
    out: "str | Path | None",
    max_examples: int = 4,
    runs_dir: "str | Path | None" = None,
) -> Path:
    """Write ``recipe_name``'s report for a run (a run folder, a run id or ``latest``) on ``input`` (a Parquet file
    in the scoring schema; None: the recipe's own held-out data) to ``out`` (default ``<run>/report.html``)."""
    from recipes.runtime.registry import get_recipe
    from recipes.runtime.runs import resolve_run
    from recipes.runtime.score import ScoreInputError

    recipe = get_recipe(recipe_name)
    run = resolve_run(recipe.name, run_spec, runs_dir)
    input_path = Path(input) if input is not None else None
    if input_path is not None and not input_path.is_file():
        raise ScoreInputError(f"{input_path}: no such file; pass a Parquet file in the scoring schema with --input, or leave it out")
    if max_examples < 1:
        raise ValueError(f"max_examples must be >= 1, got {max_examples}")
    out_path = Path(out) if out is not None else run.path / "report.html"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    written = Path(recipe.explain(run, input_path, out_path, max_examples=max_examples))
    print(f"wrote {written}")
    return written
