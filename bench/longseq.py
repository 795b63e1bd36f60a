"""Benchmark of the long-sequence recommendation models (issue 3): DIN, TWIN and DARE.

1. MovieLens-100K: test AUC, GAUC and logloss of din, twin and dare over 3 seeds (mean and std).
2. Lifelong synthetic histories of 10,000 behaviours: test AUC of twin and dare, and the search stage's recall of
   the planted relevant behaviours within its top-k (averaged over positive targets).
3. Search-stage speed on histories of 10,000: dare with a 16-d attention table against twin's single 64-d table on
   the same batch: median time of the stage-1 search alone and of the whole forward, and the AUC each reached in 2.

The lifelong data use one item per (category, hidden theme) (``--lifelong-items 200``), so a positive target's
planted relevant behaviours are interactions with that same item thousands of behaviours back; the model has to
learn to find and use them (both the search and the attention start from random embeddings). With the generator's
default 2,000 items (10 per theme) the relevant behaviours are *other* items of the target's hidden theme; in our
runs neither model got off the ground within a few hundred steps there (test AUC about 0.5, search recall at the
random level), because a relevant behaviour that is never retrieved gives the embeddings no gradient to learn from.

Models are the recipe's ``RecModule`` built from its ``RecConfig``, trained by a Lightning ``Trainer`` (the module's
own training step and AdamW) on the recipe's ``RecDataModule`` for a fixed number of steps, so every model sees the
same samples in the same order, and evaluated by ``Trainer.test`` (the module's test metrics). The sizes
below (defaults of the command-line options) keep the whole run to about 15 minutes on 2 CPU cores; every option
is printed at the start. Progress goes to stdout; the last line is one JSON object::

    {"ml100k": {"<model>": {"auc": m, "auc_std": s, "gauc": m, "logloss": m}},
     "lifelong": {"<model>": {"auc": m, "search_recall": m}}, "search_speedup_dare16_vs_twin64": r}

Run: ``.venv/bin/python bench/longseq.py`` (``--smoke`` for a one-minute check of the plumbing).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recipes.longseq_rec.config import RecConfig  # noqa: E402
from recipes.longseq_rec.data import RecDataModule  # noqa: E402
from recipes.longseq_rec.module import RecModule  # noqa: E402

STARTED = time.perf_counter()


def say(message: str) -> None:
    print(f"[{time.perf_counter() - STARTED:7.1f} s] {message}", flush=True)


def build(model: str, data: RecDataModule, seed: int, **settings) -> RecModule:
    """The recipe's module for ``model`` at the data's table sizes; ``settings`` are other RecConfig fields. The
    modality-subset table is off: the benchmark reports the whole-input metrics only."""
    torch.manual_seed(seed)
    return RecModule(RecConfig(
        model=model, num_users=data.num_users, num_items=data.num_items, num_cates=data.num_cates,
        num_time_buckets=data.num_time_buckets, profile_cardinalities=tuple(data.profile_cardinalities),
        subset_table=False, **settings,
    ))


class LossReport(pl.Callback):
    """Prints the mean training loss four times over a run of ``steps`` steps."""

    def __init__(self, label: str, steps: int) -> None:
        self.label, self.steps, self.running = label, steps, []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.running.append(float(outputs["loss"]))
        step = trainer.global_step
        if step % max(1, self.steps // 4) == 0 or step == self.steps:
            say(f"  {self.label}: step {step}/{self.steps}  loss {statistics.fmean(self.running):.4f}")
            self.running = []


def trainer(callbacks: list[pl.Callback] | None = None, steps: int = -1) -> pl.Trainer:
    return pl.Trainer(accelerator="cpu", devices=1, max_steps=steps, max_epochs=-1, limit_val_batches=0,
                      num_sanity_val_steps=0, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False, callbacks=callbacks)


def train(module: RecModule, data: RecDataModule, steps: int, label: str) -> float:
    """``steps`` optimiser steps over the training loader (cycled); returns the seconds it took."""
    started = time.perf_counter()
    trainer([LossReport(label, steps)], steps).fit(module, datamodule=data)
    return time.perf_counter() - started


def evaluate(module: RecModule, data: RecDataModule) -> dict[str, float]:
    """The module's test metrics (``auc``, ``gauc``, ``logloss``; ``search_recall`` on lifelong data)."""
    (logged,) = trainer().test(module, datamodule=data, verbose=False)
    return {key.removeprefix("test/"): float(value) for key, value in logged.items()}


def median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up: allocator, first-call dispatch
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def movielens(args) -> dict[str, dict[str, float]]:
    if args.ml_seeds < 1:
        say("== 1. MovieLens-100K: skipped (--ml-seeds 0)")
        return {}
    say(f"== 1. MovieLens-100K: {args.ml_models}, seeds {list(range(args.ml_seeds))}, {args.ml_steps} steps of "
        f"{args.ml_batch}, histories of {args.ml_history}")
    sizes = dict(attention_dim=16, representation_dim=64, top_k=args.ml_top_k, din_window=args.ml_top_k,
                 mlp_hidden=[200, 80], lr=args.ml_lr)
    runs: dict[str, list[dict[str, float]]] = {m: [] for m in args.ml_models}
    for seed in range(args.ml_seeds):
        data = RecDataModule(dataset="movielens-100k", max_history=args.ml_history, batch_size=args.ml_batch,
                             seed=seed, max_users=args.ml_users)
        for name in args.ml_models:
            module = build(name, data, seed, **sizes)
            seconds = train(module, data, args.ml_steps, f"{name} seed {seed}")
            metrics = evaluate(module, data)
            runs[name].append(metrics)
            say(f"  {name} seed {seed}: auc {metrics['auc']:.4f} gauc {metrics['gauc']:.4f} "
                f"logloss {metrics['logloss']:.4f} ({seconds:.0f} s training)")
    summary = {}
    for name, results in runs.items():
        aucs = [r["auc"] for r in results]
        summary[name] = {
            "auc": statistics.fmean(aucs),
            "auc_std": statistics.stdev(aucs) if len(aucs) > 1 else 0.0,
            "gauc": statistics.fmean(r["gauc"] for r in results),
            "logloss": statistics.fmean(r["logloss"] for r in results),
        }
    return summary


def lifelong(args) -> tuple[dict[str, dict[str, float]], float, dict[str, float]]:
    say(f"== 2. lifelong synthetic: {args.lifelong_users} users × {args.lifelong_history} behaviours, "
        f"{args.lifelong_steps} steps of {args.lifelong_batch}, top-k {args.lifelong_top_k}")
    data = RecDataModule(
        dataset="lifelong-synthetic", max_history=args.lifelong_history, batch_size=args.lifelong_batch, seed=0,
        lifelong_users=args.lifelong_users, lifelong_history=args.lifelong_history, lifelong_items=args.lifelong_items,
        lifelong_interests=args.lifelong_interests, lifelong_relevant=args.lifelong_relevant,
    )
    settings = {
        "twin": dict(representation_dim=64),  # one 64-d table searched, attended and summed
        "dare": dict(attention_dim=16, representation_dim=64),  # 16-d attention table, 64-d representation table
    }
    results, modules = {}, {}
    for name, dims in settings.items():
        if name not in args.lifelong_models:
            continue
        module = build(name, data, 0, top_k=args.lifelong_top_k, mlp_hidden=[200, 80], lr=args.lifelong_lr, **dims)
        seconds = train(module, data, args.lifelong_steps, f"{name} lifelong")
        metrics = evaluate(module, data)
        results[name] = {"auc": metrics["auc"], "search_recall": metrics.get("search_recall", float("nan"))}
        modules[name] = module
        say(f"  {name}: auc {metrics['auc']:.4f}  search recall {results[name]['search_recall']:.4f} "
            f"({seconds:.0f} s training)")

    say(f"== 3. search-stage speed: one test batch of {args.speed_batch} × {args.lifelong_history} behaviours, "
        f"median of {args.speed_repeats} repeats")
    batch = data.batch_builder("test")(np.arange(min(args.speed_batch, len(data.samples["test"]))))
    timings = {}
    if set(modules) != {"twin", "dare"}:
        return results, float("nan"), {}
    with torch.no_grad():
        for name, module in modules.items():
            module.eval()
            search = median_seconds(lambda m=module: m.recommender.search(batch), args.speed_repeats)
            forward = median_seconds(lambda m=module: m(batch), args.speed_repeats)
            timings[name] = {"search_s": search, "forward_s": forward}
            say(f"  {name}: stage-1 search {1e3 * search:.1f} ms, whole forward {1e3 * forward:.1f} ms")
    speedup = timings["twin"]["search_s"] / timings["dare"]["search_s"]
    forward_speedup = timings["twin"]["forward_s"] / timings["dare"]["forward_s"]
    say(f"  search speed-up dare16 vs twin64: {speedup:.2f}x (whole forward {forward_speedup:.2f}x); "
        f"AUC twin64 {results['twin']['auc']:.4f}, dare16 {results['dare']['auc']:.4f}")
    return results, speedup, {"forward_speedup": forward_speedup, **{f"{m}_{k}": v for m, t in timings.items() for k, v in t.items()}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ml-models", nargs="+", default=["din", "twin", "dare"])
    parser.add_argument("--ml-seeds", type=int, default=3)
    parser.add_argument("--ml-steps", type=int, default=300)
    parser.add_argument("--ml-batch", type=int, default=256)
    parser.add_argument("--ml-history", type=int, default=50)
    parser.add_argument("--ml-top-k", type=int, default=20, help="top-k of twin/dare and din's window")
    parser.add_argument("--ml-users", type=int, default=None, help="keep a seeded subset of users (default: all 943)")
    parser.add_argument("--lifelong-users", type=int, default=600)
    parser.add_argument("--lifelong-history", type=int, default=10_000)
    parser.add_argument("--lifelong-items", type=int, default=200,
                        help="a multiple of 20 categories × 10 themes; 200 = one item per theme (see the docstring)")
    parser.add_argument("--lifelong-interests", type=int, default=4, help="categories each user's history draws from")
    parser.add_argument("--lifelong-relevant", type=int, default=3, help="behaviours planted per target")
    parser.add_argument("--lifelong-models", nargs="+", default=["twin", "dare"])
    parser.add_argument("--lifelong-lr", type=float, default=2e-3)
    parser.add_argument("--lifelong-steps", type=int, default=200)
    parser.add_argument("--lifelong-batch", type=int, default=32)
    parser.add_argument("--lifelong-top-k", type=int, default=32)
    parser.add_argument("--speed-batch", type=int, default=64)
    parser.add_argument("--speed-repeats", type=int, default=10)
    parser.add_argument("--ml-lr", type=float, default=1e-2)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: checks the plumbing in about a minute")
    args = parser.parse_args(argv)
    if args.smoke:
        args.ml_seeds, args.ml_steps, args.ml_users = 2, 10, 100
        args.lifelong_users, args.lifelong_history, args.lifelong_steps = 40, 2_000, 5
        args.speed_batch, args.speed_repeats = 16, 3
    say(f"torch {torch.__version__}, {torch.get_num_threads()} threads; options {vars(args)}")

    ml = movielens(args)
    life, speedup, timings = lifelong(args)
    say(f"done; search timings {json.dumps({k: round(v, 5) for k, v in timings.items()})}")
    print(json.dumps({"ml100k": ml, "lifelong": life, "search_speedup_dare16_vs_twin64": speedup}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
