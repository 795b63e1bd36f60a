"""MoRE benchmark: what contrastive pre-training buys on the medical cohort, against a randomly initialised model.

Data: ``more-cohort`` (real IU report texts, synthesised 64×64 radiographs and 100 Hz ECGs; data_cards/more-cohort.md),
the frozen MiniLM report encoder with cached embeddings, the fixed train/val/test split of ``--patients`` patients
(default: all 3,927).

1. Pre-train :class:`recipes.medical_more.module.MoreModule` with InfoNCE(report, X-ray) + InfoNCE(report, ECG) for
   ``--pretrain-epochs`` epochs on 2 threads (``pretrain_seconds`` is that wall time, validation included); patients
   whose reports describe the same radiograph / ECG are positives of each other (``semantic_positives``). Every epoch
   is validated; the epoch with the best validation ``alignment_score`` (zero-shot mean AUROC + recall@10
   report→X-ray / its ceiling, :func:`recipes.medical_more.module.alignment_score`) is the pre-trained model
   (``select_pretraining``; ``--last-epoch`` keeps the last one instead). ``pretrain_selection`` in the JSON: the
   chosen epoch and the validation curve. The test split is never looked at before the choice.
2. On the test split, from the frozen projections: zero-shot AUROC per finding from the X-ray alone (its embedding
   against the prompt ensembles of ``recipes.medical_more.data.PROMPTS``: each side's prompts averaged, then the
   present/absent pair softmaxed; the prompts are printed in the JSON as ``zero_shot_prompts``); linear-probe AUROC per finding (logistic regression on the
   concatenated X-ray and ECG projections of the training split); retrieval recall@1/5/10 report→X-ray and
   report→ECG over the whole test split. Zero-shot AUROC, retrieval and its ceiling are the module's own test metrics
   (``recipes.medical_more.metrics``, the names ``fusion train`` logs).
3. Fine-tune the diagnosis head (all weights, ECG dropped with p = 0.3, the report with p = 0.5) for
   ``--finetune-epochs`` epochs; mean AUROC over the findings with every modality and with the ECG missing
   (``auroc`` and ``auroc@without_ecg`` of the module's robustness table).

The baseline repeats 2-3 with the same architecture and seed but no pre-training. Progress goes to stdout; the last
line is one JSON object with the keys of issue 4. Note: the report is one of the head's inputs and the labels are
read from it, so ``finetune_auroc`` is near 1 with the report; a progress line also prints the X-ray + ECG figure.
``zero_shot_ceiling`` (an extra key) is the AUROC per finding of a perfect reader of the synthesised radiographs:
with ``label_noise`` 0.1 a tenth of the findings the reports state are not drawn and as many unstated ones are
(:func:`recipes.medical_more.cohort.appearance_labels`), so no X-ray-only score can exceed it (up to ties; 0.88-0.96
on the 1,200-patient test split since synthesis version 4; 0.82-0.91 before, when every label flipped at 0.1). ``recall_ceiling`` is the best recall@k any model can reach on this test split, because reports that
describe the same radiograph or ECG cannot be told apart (``fusion_core.losses.retrieval_recall_ceiling``): read
``recall_at`` against it, not against 1.

Pre-training and fine-tuning see each training radiograph shifted by up to ``--xray-shift`` (0.05: 3 pixels) of its
side: each patient has one synthesised image, and without it the encoder memorises them (on the 1,200-patient split,
80 epochs: recall@10 report→X-ray 0.257 without, 0.410 with; 30 epochs without: 0.235).

Run: ``.venv/bin/python bench/medical.py --patients 1200`` (about 4 minutes on 2 cores, 80 pre-training epochs,
validation included); all 3,927 patients take about three times as long.
"""
from __future__ import annotations

import argparse
import json
import time

import lightning.pytorch as pl
import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from torchmetrics.functional.classification import binary_auroc

from recipes.medical_more.cohort import cohort_arrays
from recipes.medical_more.config import MoreConfig
from recipes.medical_more.data import PROMPTS, MoreDataModule
from recipes.medical_more.labels import FINDINGS
from recipes.medical_more.metrics import RECALL_KS
from recipes.medical_more.module import MoreModule


def log(message: str) -> None:
    print(f"[bench medical] {message}", flush=True)


@torch.no_grad()
def split_embeddings(module: MoreModule, datamodule: MoreDataModule, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(features (N, 2P), labels (N, F))``: the normalised X-ray and ECG projections of ``split``, concatenated."""
    module.eval()
    features, labels = [], []
    for batch in datamodule.loader(split, shuffle=False, batch_size=256):
        embeddings = module.model.encode(batch).embeddings
        features.append(torch.cat([torch.nn.functional.normalize(embeddings[m], dim=-1) for m in ("xray", "ecg")], -1))
        labels.append(batch["labels"])
    return torch.cat(features), torch.cat(labels)


def test_metrics(module: MoreModule, datamodule: MoreDataModule) -> dict[str, float]:
    """The module's own test metrics (``test/<name>``, the names ``fusion train`` logs), over the whole test split."""
    (results,) = trainer(0).test(module, datamodule=datamodule, verbose=False)
    return {k.removeprefix("test/"): float(v) for k, v in results.items()}


def auroc(labels: torch.Tensor, scores: torch.Tensor) -> float | None:
    return float(binary_auroc(scores, labels.long())) if 0 < labels.sum() < len(labels) else None


def representation_metrics(module: MoreModule, datamodule: MoreDataModule) -> dict:
    metrics = test_metrics(module, datamodule)
    features_train, labels_train = split_embeddings(module, datamodule, "train")
    features_test, labels_test = split_embeddings(module, datamodule, "test")
    probe = {}
    for f, finding in enumerate(FINDINGS):
        classifier = LogisticRegression(max_iter=2000, C=1.0).fit(features_train.numpy(), labels_train[:, f].numpy())
        probe[finding] = auroc(labels_test[:, f], torch.from_numpy(classifier.predict_proba(features_test.numpy())[:, 1]))
    return {
        "zero_shot_auroc": {finding: metrics.get(f"zero_shot_auroc_{finding}") for finding in FINDINGS},
        "linear_probe_auroc": probe,
        "recall_at": {f"report_to_{m}": {str(k): metrics[f"recall@{k}_report_to_{m}"] for k in RECALL_KS}
                      for m in ("xray", "ecg")},
        "recall_ceiling": {f"report_to_{m}": {str(k): metrics[f"recall_ceiling@{k}_report_to_{m}"] for k in RECALL_KS}
                           for m in ("xray", "ecg")},
    }


def zero_shot_ceiling(datamodule: MoreDataModule) -> dict[str, float | None]:
    """Per finding, the test AUROC of a perfect reader of the synthesised images: the labels the synthesiser drew
    (``shown``: the labels of :func:`recipes.medical_more.cohort.appearance_labels`; ``normal`` = none shown) scored against
    the report labels. No model that sees only the X-ray can do better than this on the split (up to ties)."""
    arrays = cohort_arrays(datamodule.folder, datamodule.image_size, datamodule.sampling_rate, datamodule.label_noise,
                           datamodule.seed)
    test = datamodule.dataset("test").tensors
    shown = torch.from_numpy(np.asarray(arrays["shown"])[test["index"].numpy()].astype(np.float32))  # (N, 3)
    shown = torch.cat([shown, (shown.sum(1, keepdim=True) == 0).float()], dim=1)  # + normal
    return {finding: auroc(test["labels"][:, f], shown[:, f]) for f, finding in enumerate(FINDINGS)}


def finetune_metrics(module: MoreModule, datamodule: MoreDataModule) -> dict:
    """Mean AUROC over the findings with every modality, and with the ECG / the report removed (the robustness table)."""
    metrics = test_metrics(module, datamodule)
    return {"all": metrics["auroc"], "no_ecg": metrics["auroc@without_ecg"], "no_report": metrics["auroc@without_report"]}


def trainer(epochs: int, callbacks: list[pl.Callback] | None = None) -> pl.Trainer:
    """A CPU trainer; validation runs every epoch only when ``callbacks`` are given (they read it)."""
    return pl.Trainer(accelerator="cpu", devices=1, max_epochs=epochs, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                      limit_val_batches=1.0 if callbacks else 0, callbacks=callbacks or [])


class ValidationCurve(pl.Callback):
    """Records each epoch's validation zero-shot mean AUROC, recall@10 report→X-ray and alignment score."""

    def __init__(self) -> None:
        self.epochs: list[dict[str, float]] = []

    def on_validation_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        metrics = trainer.callback_metrics
        row = {"epoch": trainer.current_epoch}
        for key in ("zero_shot_auroc", "recall@10_report_to_xray", "alignment_score"):
            if f"val/{key}" in metrics:
                row[key] = round(float(metrics[f"val/{key}"]), 4)
        self.epochs.append(row)
        log(f"validation after epoch {trainer.current_epoch}: {row}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=None, help="a seeded subset of the cohort (default: all)")
    parser.add_argument("--pretrain-epochs", type=int, default=80)
    parser.add_argument("--finding-target-weight", type=float, default=0.0,
                        help="weight of the finding-aware soft targets in the contrastive loss (0: instance targets only)")
    parser.add_argument("--last-epoch", action="store_true",
                        help="keep the last pre-training epoch instead of the one with the best validation alignment_score")
    parser.add_argument("--xray-shift", type=float, default=0.05,
                        help="training radiographs shifted by up to this share of their side (MoreConfig.xray_shift)")
    parser.add_argument("--finetune-epochs", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    datamodule = MoreDataModule(image_size=64, sampling_rate=100, report_encoder="minilm", max_patients=args.patients,
                                batch_size=args.batch_size, seed=args.seed)
    datamodule.prepare_data()
    datamodule.setup()
    log("patients per split: " + ", ".join(f"{k} {len(v)}" for k, v in datamodule.splits.items()))
    sizes = dict(image_size=64, ecg_samples=datamodule.ecg_samples, report_encoder="minilm", lr=2e-3,
                 fusion="gated_self_attention", fusion_options={"num_layers": 1, "num_heads": 4}, contrastive_weight=0.1,
                 finding_target_weight=args.finding_target_weight, xray_shift=args.xray_shift)

    pl.seed_everything(args.seed, verbose=False)
    pretrained = MoreModule(MoreConfig(**sizes, pretrain_epochs=args.pretrain_epochs, select_pretraining=not args.last_epoch))
    pl.seed_everything(args.seed, verbose=False)
    baseline = MoreModule(MoreConfig(**sizes, pretrain_epochs=0))
    curve = ValidationCurve()
    started = time.perf_counter()
    trainer(args.pretrain_epochs, [curve]).fit(pretrained, datamodule=datamodule)
    pretrain_seconds = time.perf_counter() - started
    log(f"pre-training: {args.pretrain_epochs} epochs in {pretrain_seconds:.1f} s on {args.threads} threads")
    selected = pretrained.restore_selected_pretraining()  # None with --last-epoch
    selection = {"epoch": args.pretrain_epochs - 1 if selected is None else selected[1],
                 "rule": "last epoch" if selected is None else "best validation alignment_score",
                 "validation": curve.epochs}
    log(f"pre-trained model: epoch {selection['epoch']} ({selection['rule']})")

    results = representation_metrics(pretrained, datamodule)
    base = representation_metrics(baseline, datamodule)
    ceiling = results.pop("recall_ceiling")  # the split's, the same for both models
    del base["recall_ceiling"]
    log(f"representations: pre-trained {json.dumps(results)}")
    log(f"representations: random init {json.dumps(base)}")

    pretrained.config.pretrain_epochs = 0  # a fresh trainer counts epochs from 0: every epoch now fine-tunes
    tuned = {}
    for name, module in (("pre-trained", pretrained), ("random init", baseline)):
        pl.seed_everything(args.seed, verbose=False)
        module.train()  # evaluation left it in eval mode, and Lightning keeps a module's mode when fit starts
        trainer(args.finetune_epochs).fit(module, datamodule=datamodule)
        tuned[name] = finetune_metrics(module, datamodule)
        log(f"fine-tuned from {name}: {tuned[name]}")
    base["finetune_auroc"] = {"all": tuned["random init"]["all"], "no_ecg": tuned["random init"]["no_ecg"]}
    log(f"retrieval ceiling (reports that describe the same radiograph / ECG tie): {ceiling}")
    print(json.dumps({
        **results,
        "finetune_auroc": {"all": tuned["pre-trained"]["all"], "no_ecg": tuned["pre-trained"]["no_ecg"]},
        "baseline": base,
        "pretrain_seconds": round(pretrain_seconds, 1),
        "pretrain_selection": selection,
        "recall_ceiling": ceiling,
        "zero_shot_ceiling": zero_shot_ceiling(datamodule),
        "zero_shot_prompts": {finding: {side: list(texts) for side, texts in PROMPTS[finding].items()} for finding in FINDINGS},
        "settings": {"patients": args.patients, "pretrain_epochs": args.pretrain_epochs, "finetune_epochs": args.finetune_epochs,
                     "finding_target_weight": args.finding_target_weight, "batch_size": args.batch_size,
                     "xray_shift": args.xray_shift, "selection": "last epoch" if args.last_epoch else "validation"},
    }))


if __name__ == "__main__":
    main()
