"""``make demo``: for every recipe, fetch its data, train its ``quick`` config, score the held-out set,
write the explain report, then print one table of metrics and how to open the dashboards."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

__all__ = ["main", "DEMO_RECIPES"]

# Recipes in the order the demo runs them; each must ship a `quick` config.
DEMO_RECIPES: tuple[str, ...] = ("longseq_rec", "medical_more", "dementia_speech", "driving_interaction")


def run_recipe(name: str, runs_dir: Path, extra: list[str]) -> dict:
    from recipes.runtime.datasets import fetch_dataset
    from recipes.runtime.explain import explain
    from recipes.runtime.registry import get_recipe
    from recipes.runtime.score import score_file
    from recipes.runtime.train import train

    recipe = get_recipe(name)
    print(f"\n=== {recipe.name}: fetching data {list(recipe.datasets)}", flush=True)
    for dataset in recipe.datasets:
        print(f"    {dataset}: {fetch_dataset(dataset)}", flush=True)

    print(f"=== {recipe.name}: training the quick config", flush=True)
    started = time.perf_counter()
    run = train(recipe.name, ["--config", "quick", "--runs-dir", str(runs_dir), *extra])
    train_seconds = time.perf_counter() - started

    print(f"=== {recipe.name}: scoring the held-out set", flush=True)
    scoring_input = recipe.demo_input(run, run.path / "demo_input.parquet")
    scored = score_file(recipe, run, scoring_input, run.path / "scores.parquet")

    print(f"=== {recipe.name}: writing the explain report", flush=True)
    report = explain(recipe.name, str(run.path), scoring_input, run.path / "report.html", runs_dir=runs_dir)

    import polars as pl

    scores = pl.read_parquet(scored)
    return {
        "recipe": recipe.name,
        "run": str(run.path),
        "metrics": run.metrics,
        "scored_rows": scores.height,
        "score_errors": int(scores["error"].is_not_null().sum()),
        "report": str(report),
        "seconds": round(train_seconds, 1),
    }


def print_table(results: list[dict]) -> None:
    width = max([30, *(len(k) for result in results for k in result["metrics"])])
    rule = "=" * (width + 34)
    print("\n" + rule)
    print(f"{'recipe':<20} {'metric':<{width}} {'value':>10}")
    print("-" * len(rule))
    for result in results:
        shown = {k: v for k, v in sorted(result["metrics"].items()) if isinstance(v, (int, float))}
        for i, (key, value) in enumerate(shown.items()):
            print(f"{result['recipe'] if i == 0 else '':<20} {key:<{width}} {value:>10.4f}")
        print(f"{'':<20} {'scored rows (errors)':<{width}} {result['scored_rows']:>6} ({result['score_errors']})")
        print(f"{'':<20} run:    {result['run']}")
        print(f"{'':<20} report: {result['report']}")
    print(rule)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m recipes.demo", description=__doc__)
    parser.add_argument("--runs-dir", default=os.environ.get("FUSION_RUNS_DIR", "runs"))
    parser.add_argument("--recipes", nargs="*", default=list(DEMO_RECIPES), help="recipes to run (default: all)")
    args, extra = parser.parse_known_args(argv)
    runs_dir = Path(args.runs_dir).resolve()
    results = [run_recipe(name, runs_dir, extra) for name in args.recipes]
    print_table(results)
    (runs_dir / "demo_summary.json").write_text(json.dumps(results, indent=2))
    print(f"\nOpen the dashboards:  .venv/bin/fusion app --runs-dir {runs_dir}   (or: make app)")
    print("then browse to http://localhost:8501")
    return 0


if __name__ == "__main__":
    sys.exit(main())
