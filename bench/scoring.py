"""Scoring at scale: the local engine against Ray with 1 and 2 workers, and training with 1 and 2 DDP processes.

For each recipe, a tiny run is trained (``tests/recipes/<recipe>/tiny.py``, on data generated under a temporary
``$FUSION_DATA_DIR``); its ``demo_input`` rows are repeated to an input the local engine scores in about
``--seconds`` (at most ``--max-rows``), cut into ``--chunks`` chunks, and scored three times:

- ``local``: ``fusion score`` in a fresh process (its peak resident memory is that process's);
- ``ray1`` / ``ray2``: a fresh local Ray instance with 1 / 2 CPUs and as many workers.

Per recipe: ``local_rows_per_s`` / ``ray1_rows_per_s`` / ``ray2_rows_per_s`` (rows over the job's wall time: the
predictor's loading included, Ray's start excluded), ``ray_init_s`` (``ray.init``), ``ray_overhead_s`` (what the
1-worker Ray job costs on top of the local one, its start included), ``ray2_steady_rows_per_s`` (rows over half
the 2 workers' summed chunk-scoring time: the rate once workers are up, which is what more workers multiply),
``identical`` (the three outputs have the same bytes) and ``peak_rss_mb`` (the local process; each Ray worker).
Then ``ddp_training``: ``fusion train <--ddp-recipe> --config quick`` with 1 and with 2 DDP processes (gloo):
wall seconds, ``train_seconds`` and the test metric of each.

Prints progress, then one JSON line. Run: ``.venv/bin/python bench/scoring.py`` (about 10 minutes on 2 CPU cores;
``--recipes longseq_rec --skip-training`` for a quick look).
"""
from __future__ import annotations

import argparse
import importlib
import json
import math
import multiprocessing
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # tests/recipes/<recipe>/tiny.py holds each recipe's tiny training

OBJECT_STORE_MB = 256


def log(message: str) -> None:
    print(message, flush=True)


def train(name: str, args: list[str], runs: Path, env: dict[str, str], processes: int = 1) -> tuple["object", float]:
    """``fusion train name args`` in a subprocess (``processes`` > 1: DDP on CPU); (the new run, wall seconds)."""
    from recipes.runtime.runs import list_runs

    command = [sys.executable, "-m", "recipes.cli", "train", name, *args, "--runs-dir", str(runs),
               "--trainer.enable_progress_bar", "false"]
    if processes > 1:
        command += ["--trainer.strategy", "ddp", "--trainer.devices", str(processes), "--trainer.accelerator", "cpu"]
    before = {run.run_id for run in list_runs(runs, name)}
    started = time.perf_counter()
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"training {name} failed:\n{result.stderr[-3000:]}")
    (run,) = [run for run in list_runs(runs, name) if run.run_id not in before]
    return run, seconds


def _score_locally(recipe: str, run: str, input_path: str, output: str, chunk_size: int, queue) -> None:
    """In a fresh process: the local engine's job time and this process's peak memory."""
    from recipes.runtime.registry import get_recipe
    from recipes.runtime.score import score_file

    get_recipe(recipe)  # imports outside the timing: a scoring job's cost starts at loading the predictor
    started = time.perf_counter()
    score_file(recipe, run, input_path, output, chunk_size=chunk_size, progress=False)
    queue.put((time.perf_counter() - started, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))


def score_local(recipe: str, run: Path, input_path: Path, output: Path, chunk_size: int) -> tuple[float, float]:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_score_locally, args=(recipe, str(run), str(input_path), str(output), chunk_size, queue))
    process.start()
    seconds, peak = queue.get(timeout=900)
    process.join()
    return seconds, peak


def score_on_ray(recipe, run, input_path: Path, output: Path, chunk_size: int, workers: int) -> dict:
    import ray

    from recipes.runtime.score import score_file
    from recipes.runtime.score_ray import RayEngine

    started = time.perf_counter()
    ray.init(num_cpus=workers, object_store_memory=OBJECT_STORE_MB * 2**20, include_dashboard=False, log_to_driver=False)
    init_s = time.perf_counter() - started
    try:
        engine = RayEngine(num_workers=workers)
        started = time.perf_counter()
        score_file(recipe, run, input_path, output, chunk_size=chunk_size, progress=False, engine=engine)
        job_s = time.perf_counter() - started
    finally:
        ray.shutdown()
    return {"init_s": init_s, "job_s": job_s, "rss": sorted(round(v, 1) for v in engine.worker_peak_rss_mb.values()),
            "scoring_s": sum(engine.chunk_seconds.values())}


def bench_recipe(name: str, work: Path, user_env: dict[str, str], seconds: float, max_rows: int, chunks: int) -> dict:
    import polars as pl

    from recipes.runtime.inputs import data_root
    from recipes.runtime.registry import get_recipe
    from recipes.runtime.score import score_chunk

    recipe = get_recipe(name)
    tiny = importlib.import_module(f"tests.recipes.{name}.tiny")
    # the data root (the inputs' folder): demo inputs name files next to themselves or under $FUSION_DATA_DIR;
    # set before Ray starts so its workers see it too
    folder = work / name
    os.environ["FUSION_DATA_DIR"] = str(folder / "data")
    run, train_s = train(name, list(tiny.TINY_OVERRIDES), work / "runs", {**user_env, "FUSION_DATA_DIR": str(folder / "data")})
    log(f"{name}: tiny run trained in {train_s:.1f} s")
    sample = recipe.demo_input(run, folder / "sample.parquet")
    sample_rows = pl.read_parquet(sample)
    # the steady rate (predictor loaded) sizes the input so that scoring, not start-up, fills --seconds
    predictor = recipe.load_predictor(run)
    with data_root(folder):
        score_chunk(recipe, predictor, sample_rows)  # warm-up
        started, scored = time.perf_counter(), 0
        while time.perf_counter() - started < 1.0:
            scored += score_chunk(recipe, predictor, sample_rows).height
    rate = scored / (time.perf_counter() - started)
    del predictor
    rows = max(sample_rows.height, min(max_rows, int(rate * seconds)))
    frame = pl.concat([sample_rows] * math.ceil(rows / sample_rows.height)).head(rows)
    input_path = folder / "input.parquet"
    frame.write_parquet(input_path)
    chunk_size = math.ceil(rows / chunks)
    log(f"{name}: {rows} rows ({sample_rows.height} demo rows repeated; {rate:.0f} rows/s once loaded), chunks of {chunk_size}")

    outputs = {engine: folder / f"scores-{engine}.parquet" for engine in ("local", "ray1", "ray2")}
    local_s, local_rss = score_local(name, run.path, input_path, outputs["local"], chunk_size)
    log(f"{name}: local {local_s:.1f} s")
    ray = {}
    for workers in (1, 2):
        ray[workers] = score_on_ray(recipe, run, input_path, outputs[f"ray{workers}"], chunk_size, workers)
        log(f"{name}: ray with {workers} worker(s): start {ray[workers]['init_s']:.1f} s, job {ray[workers]['job_s']:.1f} s")
    reference = outputs["local"].read_bytes()
    scored = pl.read_parquet(outputs["local"])
    balanced_s = max(ray[2]["scoring_s"] / 2, 1e-9)  # the 2 workers' scoring time if evenly shared
    return {
        "rows": rows,
        "chunk_size": chunk_size,
        "errors": scored["error"].is_not_null().sum(),
        "local_rows_per_s": round(rows / local_s, 1),
        "ray1_rows_per_s": round(rows / ray[1]["job_s"], 1),
        "ray2_rows_per_s": round(rows / ray[2]["job_s"], 1),
        "ray2_steady_rows_per_s": round(rows / balanced_s, 1),
        "ray_init_s": round(ray[1]["init_s"], 2),
        "ray_overhead_s": round(ray[1]["init_s"] + ray[1]["job_s"] - local_s, 2),
        "identical": all(path.read_bytes() == reference for path in outputs.values()),
        "peak_rss_mb": {"local": round(local_rss, 1), "ray1": ray[1]["rss"], "ray2": ray[2]["rss"]},
    }


def bench_ddp(name: str, work: Path, env: dict[str, str]) -> dict:
    figures = {}
    for processes in (1, 2):
        run, wall = train(name, ["--config", "quick"], work / "ddp-runs", env, processes)
        metric = next(k for k in run.metrics if k.startswith("test/"))
        figures[f"ddp{processes}"] = {"wall_s": round(wall, 1), "train_seconds": run.metrics["train_seconds"],
                                      metric: round(run.metrics[metric], 4),
                                      "world_size": run.info["training"]["world_size"]}
        log(f"{name} quick training with {processes} process(es): {wall:.1f} s wall, "
            f"{run.metrics['train_seconds']:.1f} s in fit, {metric} {run.metrics[metric]:.4f}")
    return {"recipe": name, "config": "quick", **figures}


def main() -> None:
    from recipes.runtime.registry import list_recipes

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", nargs="+", default=list_recipes(), help="recipes to score (default: all)")
    parser.add_argument("--seconds", type=float, default=6.0, help="target local scoring time per recipe, start-up "
                        "aside (default 6)")
    parser.add_argument("--max-rows", type=int, default=50_000, help="cap on the rows scored per recipe")
    parser.add_argument("--chunks", type=int, default=8, help="chunks per input (default 8)")
    parser.add_argument("--ddp-recipe", default="longseq_rec", help="recipe whose quick training is timed")
    parser.add_argument("--skip-training", action="store_true", help="no DDP training timing")
    parser.add_argument("--skip-scoring", action="store_true", help="only the DDP training timing")
    parser.add_argument("--budget-s", type=float, default=540.0, help="start no further recipe after this many "
                        "seconds (default 540); a skipped recipe says so in the JSON")
    args = parser.parse_args()
    started = time.perf_counter()

    user_env = {**os.environ, "PYTHONPATH": str(REPO)}
    results: dict[str, object] = {}
    with tempfile.TemporaryDirectory(prefix="fusion-bench-scoring-") as tmp:
        work = Path(tmp)
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        if not args.skip_training:
            results["ddp_training"] = bench_ddp(args.ddp_recipe, work, user_env)  # the real quick data (cache)
        for name in [] if args.skip_scoring else args.recipes:
            if time.perf_counter() - started > args.budget_s:
                results[name] = {"skipped": f"time budget of {args.budget_s:.0f} s spent"}
                continue
            try:
                results[name] = bench_recipe(name, work, user_env, args.seconds, args.max_rows, args.chunks)
            except Exception as error:  # noqa: BLE001 - one recipe failing must not hide the others' figures
                results[name] = {"error": f"{type(error).__name__}: {str(error).strip().splitlines()[-1:]}"}
            log(f"{name}: {json.dumps(results[name])}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
