"""Benchmark of the dementia recipe on the embedded cohort: each acoustic encoder alone, text alone and fused, OT on
the telephone domain, calibration with and without label smoothing and before and after temperature scaling, over
speaker cross-validation folds.

For each fold k of ``--folds`` (validation = speaker fold k of the source training speakers), seven models are
trained with the quick config's architecture: audio only with the spectrogram transformer (``audio_vit``), audio only
with the acoustic markers (eGeMAPS functionals and pause statistics, ``audio_features``), text only, fused (``--acoustic``
encoder, default ``both``; without OT, with label smoothing), fused with Sinkhorn OT (joint DeepJDOT cost) towards the
unlabelled telephone-domain speakers, and fused without label smoothing. The fused model's temperature is fit on the
fold's validation speakers (:mod:`recipes.runtime.calibration`) and its ECE reported before and after scaling. Source
figures are on the source test speakers, target figures on the target test speakers; means over folds (``fold_std``:
standard deviations). The cohort is ``--cohort large`` (640 speakers, generated once and cached under
``$FUSION_DATA_DIR``) or ``quick`` (the 144-speaker demo cohort). With ``--results FILE`` every finished model's figures
are kept in FILE and not trained again, so the benchmark can run in slices (``--max-minutes``) that each stop after
the model in progress. The last line printed is one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

VARIANTS = {
    "audio_vit": {"modalities": ["audio"], "acoustic": "vit", "ot_weight": 0.0, "label_smoothing": 0.1},
    "audio_features": {"modalities": ["audio"], "acoustic": "features", "ot_weight": 0.0, "label_smoothing": 0.1},
    "text": {"modalities": ["text"], "ot_weight": 0.0, "label_smoothing": 0.1},
    "fused": {"modalities": ["audio", "text"], "ot_weight": 0.0, "label_smoothing": 0.1},
    "fused_ot": {"modalities": ["audio", "text"], "ot_weight": 0.1, "label_smoothing": 0.1},
    "fused_no_smoothing": {"modalities": ["audio", "text"], "ot_weight": 0.0, "label_smoothing": 0.0},
}

#: the variants whose model ignores --acoustic (the fused models' acoustic encoder)
SINGLE_BRANCH = ("audio_vit", "audio_features", "text")


def train_variant(datamodule, model_args: dict, variant: dict, epochs: int, seed: int) -> tuple[dict[str, float], object]:
    import lightning.pytorch as pl

    from recipes.dementia_speech.config import DementiaConfig
    from recipes.dementia_speech.module import DementiaModule

    pl.seed_everything(seed, verbose=False)
    module = DementiaModule(DementiaConfig(**{**model_args, **variant}))
    trainer = pl.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                         limit_val_batches=0)
    trainer.fit(module, datamodule=datamodule)
    metrics = {k: float(v) for k, v in trainer.test(module, datamodule=datamodule, verbose=False)[0].items()}
    return metrics, module


def temperature_scaling(module, datamodule) -> dict[str, float]:
    """Fit T on the fold's validation speakers; the source test speakers' ECE before and after."""
    import torch

    from recipes.runtime.calibration import (
        calibrated_probability, collect_logits, expected_calibration_error, fit_temperature,
    )

    def logits_of(model, batch):
        return model.logit(batch), batch["label"]

    val_logits, val_labels = collect_logits(module, datamodule.val_dataloader(), logits_of)
    temperature = fit_temperature(val_logits, val_labels)
    test_logits, test_labels = collect_logits(module, datamodule.test_dataloader(), logits_of)
    domain = torch.as_tensor(datamodule.tensors["domain"][torch.as_tensor(datamodule.split_rows["test"])])
    source = domain == 0
    logits, labels = test_logits[source], test_labels[source]
    return {"temperature": temperature,
            "before": expected_calibration_error(calibrated_probability(logits, 1.0), labels),
            "after": expected_calibration_error(calibrated_probability(logits, temperature), labels)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--cohort", choices=("large", "quick"), default="large")
    parser.add_argument("--acoustic", choices=("vit", "features", "both"), default="both",
                        help="the fused models' acoustic encoder")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset of the variants to train")
    parser.add_argument("--results", type=Path, default=None,
                        help="JSON file of finished models' figures: read to skip them, updated after each model")
    parser.add_argument("--max-minutes", type=float, default=None,
                        help="start no new model after this many minutes (with --results: continue in the next run)")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    warnings.filterwarnings("ignore")
    import logging

    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    import yaml

    from recipes.dementia_speech.cohort import LARGE_COHORT
    from recipes.dementia_speech.data import DementiaDataModule

    quick = yaml.safe_load((Path(__file__).resolve().parents[1] / "recipes/dementia_speech/configs/quick.yaml").read_text())
    data_args = {**quick["data"], "num_folds": max(2, args.folds), "acoustic": "both"}
    if args.cohort == "large":
        data_args["cohort"] = asdict(LARGE_COHORT)
    chosen = [name for name in args.variants.split(",") if name]
    unknown = sorted(set(chosen) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variants {unknown}; choose from {list(VARIANTS)}")
    results: dict[str, list[dict[str, float]]] = {name: [] for name in chosen}
    scaling: list[dict[str, float]] = []
    setting = f"{args.cohort}/{args.acoustic}/{args.epochs}"
    done: dict[str, dict] = json.loads(args.results.read_text()) if args.results and args.results.is_file() else {}
    started = time.perf_counter()
    stopped = False
    for fold in range(args.folds):
        datamodule = None
        for name in chosen:
            key = f"{setting}/{args.folds}/{fold}/{name}"
            if key not in done and name in SINGLE_BRANCH:  # its model does not depend on --acoustic
                same = [*key.split("/")[:1], *key.split("/")[2:]]  # everything but the acoustic setting
                key = next((k for k in done if [*k.split("/")[:1], *k.split("/")[2:]] == same), key)
            if key not in done:
                if args.max_minutes is not None and time.perf_counter() - started > 60 * args.max_minutes:
                    stopped = True
                    break
                if datamodule is None:
                    datamodule = DementiaDataModule(**{**data_args, "fold": fold})
                    datamodule.prepare_data()
                    datamodule.setup()
                    model_args = {**quick["model"]["config"], "text_dim": datamodule.text_dim,
                                  "image_size": datamodule.image_size, "text_encoder": datamodule.text_encoder,
                                  "acoustic": args.acoustic, "acoustic_features": datamodule.acoustic_features}
                metrics, module = train_variant(datamodule, model_args, VARIANTS[name], args.epochs, seed=fold)
                done[key] = {"metrics": metrics}
                if name == "fused":
                    done[key]["scaling"] = temperature_scaling(module, datamodule)
                if args.results:
                    args.results.write_text(json.dumps(done, indent=1))
            metrics = done[key]["metrics"]
            results[name].append(metrics)
            extra = ""
            if name == "fused":
                scaling.append(done[key]["scaling"])
                extra = (f" | T {scaling[-1]['temperature']:.2f}: ece {scaling[-1]['before']:.3f} → "
                         f"{scaling[-1]['after']:.3f}")
            print(f"fold {fold} {name:<19} source acc {metrics['test/acc']:.3f} f1 {metrics['test/f1']:.3f} "
                  f"ece {metrics['test/ece']:.3f} | target acc {metrics.get('test/target_acc', float('nan')):.3f} "
                  f"f1 {metrics.get('test/target_f1', float('nan')):.3f}{extra}  ({time.perf_counter() - started:.0f} s)",
                  flush=True)
        if stopped:
            print(f"stopped after {args.max_minutes} minutes at fold {fold}; run again with --results {args.results} "
                  "to continue", flush=True)
            return {}

    def values(name: str, key: str) -> list[float]:
        return [r[key] for r in results[name]] if name in results else []

    def mean(name: str, key: str) -> float | None:
        v = values(name, key)
        return round(sum(v) / len(v), 4) if v else None

    def std(name: str, key: str) -> float | None:
        v = values(name, key)
        if not v:
            return None
        centre = sum(v) / len(v)
        return round((sum((x - centre) ** 2 for x in v) / max(1, len(v) - 1)) ** 0.5, 4)

    for name in chosen:
        print(f"{name:<19} over {args.folds} folds: source acc {mean(name, 'test/acc'):.3f} ± {std(name, 'test/acc'):.3f}, "
              f"f1 {mean(name, 'test/f1'):.3f} ± {std(name, 'test/f1'):.3f}, ece {mean(name, 'test/ece'):.3f} ± "
              f"{std(name, 'test/ece'):.3f}; target acc {mean(name, 'test/target_acc'):.3f} ± "
              f"{std(name, 'test/target_acc'):.3f}", flush=True)

    def average(key: str) -> float | None:
        return round(sum(s[key] for s in scaling) / len(scaling), 4) if scaling else None

    audio = "audio_features" if args.acoustic == "features" else "audio_vit" if args.acoustic == "vit" else None
    summary = {
        "source": {
            **{m: {"acc": mean(m, "test/acc"), "f1": mean(m, "test/f1")} for m in ("text", "fused")},
            # the fused model's own acoustic encoder alone ("both" has no single-encoder run: the better of the two)
            "audio": {"acc": mean(audio, "test/acc"), "f1": mean(audio, "test/f1")} if audio else max(
                ({"acc": mean(m, "test/acc"), "f1": mean(m, "test/f1")} for m in ("audio_vit", "audio_features")
                 if m in results), key=lambda r: r["f1"] or 0.0, default={"acc": None, "f1": None}),
            "audio_vit": {"acc": mean("audio_vit", "test/acc"), "f1": mean("audio_vit", "test/f1")},
            "audio_features": {"acc": mean("audio_features", "test/acc"), "f1": mean("audio_features", "test/f1")},
        },
        "target": {
            "fused_no_ot": {"acc": mean("fused", "test/target_acc"), "f1": mean("fused", "test/target_f1")},
            "fused_ot": {"acc": mean("fused_ot", "test/target_acc"), "f1": mean("fused_ot", "test/target_f1")},
        },
        "ece": {"no_smoothing": mean("fused_no_smoothing", "test/ece"), "smoothing": mean("fused", "test/ece"),
                "before_scaling": average("before"), "after_scaling": average("after"),
                "temperature": average("temperature")},
        "fold_std": {name: {"f1": std(name, "test/f1"), "target_acc": std(name, "test/target_acc")} for name in chosen},
        "folds": args.folds,
        "cohort": args.cohort,
        "acoustic": args.acoustic,
        "epochs": args.epochs,
        "seconds": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(summary), flush=True)
    return summary


if __name__ == "__main__":
    main()
