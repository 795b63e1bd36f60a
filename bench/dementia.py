"""Benchmark of the dementia recipe on the embedded cohort: unimodal vs fused, OT on the telephone domain,
calibration with and without label smoothing, over speaker cross-validation folds.

For each fold k of ``--folds`` (validation = speaker fold k of the source training speakers), five models are
trained with the quick config's architecture: audio only, text only and fused (all without OT, with label
smoothing), fused with Sinkhorn OT (joint DeepJDOT cost) towards the unlabelled telephone-domain speakers, and
fused without label smoothing. Source figures are on the source test speakers, target figures on the target test
speakers; means over folds. The last line printed is one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

VARIANTS = {
    "audio": {"modalities": ["audio"], "ot_weight": 0.0, "label_smoothing": 0.1},
    "text": {"modalities": ["text"], "ot_weight": 0.0, "label_smoothing": 0.1},
    "fused": {"modalities": ["audio", "text"], "ot_weight": 0.0, "label_smoothing": 0.1},
    "fused_ot": {"modalities": ["audio", "text"], "ot_weight": 0.1, "label_smoothing": 0.1},
    "fused_no_smoothing": {"modalities": ["audio", "text"], "ot_weight": 0.0, "label_smoothing": 0.0},
}


def train_variant(datamodule, model_args: dict, variant: dict, epochs: int, seed: int) -> dict[str, float]:
    import lightning.pytorch as pl

    from recipes.dementia_speech.config import DementiaConfig
    from recipes.dementia_speech.module import DementiaModule

    pl.seed_everything(seed, verbose=False)
    module = DementiaModule(DementiaConfig(**{**model_args, **variant}))
    trainer = pl.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                         limit_val_batches=0)
    trainer.fit(module, datamodule=datamodule)
    return {k: float(v) for k, v in trainer.test(module, datamodule=datamodule, verbose=False)[0].items()}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=20)
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    warnings.filterwarnings("ignore")
    import logging

    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    import yaml

    from recipes.dementia_speech.data import DementiaDataModule

    quick = yaml.safe_load((Path(__file__).resolve().parents[1] / "recipes/dementia_speech/configs/quick.yaml").read_text())
    model_args = {**quick["model"]["config"], "text_dim": 384, "image_size": quick["data"]["image_size"],
                  "text_encoder": quick["data"]["text_encoder"]}
    data_args = {**quick["data"], "num_folds": max(2, args.folds)}
    results: dict[str, list[dict[str, float]]] = {name: [] for name in VARIANTS}
    started = time.perf_counter()
    for fold in range(args.folds):
        datamodule = DementiaDataModule(**{**data_args, "fold": fold})
        datamodule.prepare_data()
        datamodule.setup()
        for name, variant in VARIANTS.items():
            metrics = train_variant(datamodule, model_args, variant, args.epochs, seed=fold)
            results[name].append(metrics)
            print(f"fold {fold} {name:<19} source acc {metrics['test/acc']:.3f} f1 {metrics['test/f1']:.3f} "
                  f"ece {metrics['test/ece']:.3f} | target acc {metrics.get('test/target_acc', float('nan')):.3f} "
                  f"f1 {metrics.get('test/target_f1', float('nan')):.3f}  ({time.perf_counter() - started:.0f} s)",
                  flush=True)

    def mean(name: str, key: str) -> float:
        return round(sum(r[key] for r in results[name]) / len(results[name]), 4)

    def std(name: str, key: str) -> float:
        values = [r[key] for r in results[name]]
        centre = sum(values) / len(values)
        return round((sum((v - centre) ** 2 for v in values) / max(1, len(values) - 1)) ** 0.5, 4)

    for name in VARIANTS:
        print(f"{name:<19} over {args.folds} folds: source acc {mean(name, 'test/acc'):.3f} ± {std(name, 'test/acc'):.3f}, "
              f"f1 {mean(name, 'test/f1'):.3f} ± {std(name, 'test/f1'):.3f}, ece {mean(name, 'test/ece'):.3f} ± "
              f"{std(name, 'test/ece'):.3f}; target acc {mean(name, 'test/target_acc'):.3f} ± {std(name, 'test/target_acc'):.3f}",
              flush=True)

    summary = {
        "source": {m: {"acc": mean(m, "test/acc"), "f1": mean(m, "test/f1")} for m in ("audio", "text", "fused")},
        "target": {
            "fused_no_ot": {"acc": mean("fused", "test/target_acc"), "f1": mean("fused", "test/target_f1")},
            "fused_ot": {"acc": mean("fused_ot", "test/target_acc"), "f1": mean("fused_ot", "test/target_f1")},
        },
        "ece": {"no_smoothing": mean("fused_no_smoothing", "test/ece"), "smoothing": mean("fused", "test/ece")},
        "folds": args.folds,
    }
    print(json.dumps(summary), flush=True)
    return summary


if __name__ == "__main__":
    main()
