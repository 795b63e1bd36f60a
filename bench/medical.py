"""MoRE benchmark: what contrastive pre-training buys on the medical cohort, against a randomly initialised model.

Data: ``more-cohort`` (real IU report texts, synthesised 64×64 radiographs and 100 Hz ECGs; data_cards/more-cohort.md),
the frozen MiniLM report encoder with cached embeddings, the fixed train/val/test split of ``--patients`` patients
(default: all 3,927).

1. Pre-train :class:`recipes.medical_more.module.MoreModule` with InfoNCE(report, X-ray) + InfoNCE(report, ECG) for
   ``--pretrain-epochs`` epochs on 2 threads (``pretrain_seconds`` is that wall time); patients whose reports
   describe the same radiograph / ECG are positives of each other (``semantic_positives``).
2. On the test split, from the frozen projections: zero-shot AUROC per finding (X-ray embedding against the prompt
   pairs of ``recipes.medical_more.data.PROMPTS``); linear-probe AUROC per finding (logistic regression on the
   concatenated X-ray and ECG projections of the training split); retrieval recall@1/5/10 report→X-ray and
   report→ECG over the whole test split.
3. Fine-tune the diagnosis head (all weights, ECG dropped with p = 0.3) for ``--finetune-epochs`` epochs; mean AUROC
   over the findings with every modality and with the ECG missing.

The baseline repeats 2-3 with the same architecture and seed but no pre-training. Progress goes to stdout; the last
line is one JSON object with the keys of issue 4. Note: the report is one of the head's inputs and the labels are
read from it, so ``finetune_auroc`` is near 1 with the report; a progress line also prints the X-ray + ECG figure.
``recall_ceiling`` (an extra key) is the best recall@k any model can reach on this test split, because reports that
describe the same radiograph or ECG cannot be told apart (``fusion_core.losses.retrieval_recall_ceiling``): read
``recall_at`` against it, not against 1.

Run: ``.venv/bin/python bench/medical.py`` (about 2 minutes on 2 idle cores, the first run's MiniLM embedding of
the reports aside; ``--patients 1200`` is about 30 s).
"""
from __future__ import annotations

import argparse
import json
import time

import lightning.pytorch as pl
import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from fusion_core.losses.contrastive import retrieval_recall_at_k, retrieval_recall_ceiling
from recipes.medical_more.data import MoreDataModule
from recipes.medical_more.labels import FINDINGS
from recipes.medical_more.module import MoreModule, present_of

KS = (1, 5, 10)


def log(message: str) -> None:
    print(f"[bench medical] {message}", flush=True)


@torch.no_grad()
def split_outputs(module: MoreModule, datamodule: MoreDataModule, split: str) -> dict[str, torch.Tensor]:
    module.eval()
    parts: list[dict[str, torch.Tensor]] = []
    loader = torch.utils.data.DataLoader(datamodule.splits[split], batch_size=256)
    for batch in loader:
        present = present_of(batch)
        embeddings = module.model.encode(batch).embeddings
        no_ecg = {**present, "ecg": torch.zeros_like(present["ecg"])}
        no_report = {**present, "report": torch.zeros_like(present["report"])}
        parts.append({
            **{m: e for m, e in embeddings.items()},
            "all": torch.sigmoid(module.model.diagnose(embeddings, present)[0]),
            "no_ecg": torch.sigmoid(module.model.diagnose(embeddings, no_ecg)[0]),
            "no_report": torch.sigmoid(module.model.diagnose(embeddings, no_report)[0]),
            "labels": batch["labels"],
        })
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


def auroc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    return float(roc_auc_score(labels, scores)) if 0 < labels.sum() < len(labels) else None


def representation_metrics(module: MoreModule, datamodule: MoreDataModule, prompts: dict[str, torch.Tensor]) -> dict:
    train, test = split_outputs(module, datamodule, "train"), split_outputs(module, datamodule, "test")
    with torch.no_grad():
        zero_shot = module.model.zero_shot(test["xray"], module.model.encode_report(prompts)).numpy()
    labels_train, labels_test = train["labels"].numpy(), test["labels"].numpy()
    features_train = torch.cat([torch.nn.functional.normalize(train[m], dim=-1) for m in ("xray", "ecg")], -1).numpy()
    features_test = torch.cat([torch.nn.functional.normalize(test[m], dim=-1) for m in ("xray", "ecg")], -1).numpy()
    zero, probe = {}, {}
    for f, finding in enumerate(FINDINGS):
        zero[finding] = auroc(labels_test[:, f], zero_shot[:, f])
        classifier = LogisticRegression(max_iter=2000, C=1.0).fit(features_train, labels_train[:, f])
        probe[finding] = auroc(labels_test[:, f], classifier.predict_proba(features_test)[:, 1])
    recall = {
        f"report_to_{other}": {str(k): v for k, v in retrieval_recall_at_k(test["report"], test[other], KS).items()}
        for other in ("xray", "ecg")
    }
    return {"zero_shot_auroc": zero, "linear_probe_auroc": probe, "recall_at": recall}


def finetune_metrics(module: MoreModule, datamodule: MoreDataModule) -> dict:
    test = split_outputs(module, datamodule, "test")
    labels = test["labels"].numpy()
    out = {}
    for key in ("all", "no_ecg", "no_report"):
        values = [auroc(labels[:, f], test[key][:, f].numpy()) for f in range(len(FINDINGS))]
        out[key] = float(np.mean([v for v in values if v is not None]))
    return out


def trainer(epochs: int) -> pl.Trainer:
    return pl.Trainer(accelerator="cpu", devices=1, max_epochs=epochs, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=None, help="a seeded subset of the cohort (default: all)")
    parser.add_argument("--pretrain-epochs", type=int, default=14)
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
    prompts = datamodule.prompt_inputs()
    log("patients per split: " + ", ".join(f"{k} {len(v)}" for k, v in datamodule.splits.items()))
    sizes = dict(image_size=64, ecg_samples=datamodule.ecg_samples, report_encoder="minilm", lr=2e-3,
                 fusion="gated_self_attention", fusion_options={"num_layers": 1, "num_heads": 4}, contrastive_weight=0.1)

    pl.seed_everything(args.seed, verbose=False)
    pretrained = MoreModule(**sizes, pretrain_epochs=args.pretrain_epochs)
    pl.seed_everything(args.seed, verbose=False)
    baseline = MoreModule(**sizes, pretrain_epochs=0)
    started = time.perf_counter()
    trainer(args.pretrain_epochs).fit(pretrained, datamodule=datamodule)
    pretrain_seconds = time.perf_counter() - started
    log(f"pre-training: {args.pretrain_epochs} epochs in {pretrain_seconds:.1f} s on {args.threads} threads")

    results = representation_metrics(pretrained, datamodule, prompts)
    base = representation_metrics(baseline, datamodule, prompts)
    log(f"representations: pre-trained {json.dumps(results)}")
    log(f"representations: random init {json.dumps(base)}")

    pretrained.hparams.pretrain_epochs = 0  # a fresh trainer counts epochs from 0: every epoch now fine-tunes
    for name, module in (("pre-trained", pretrained), ("random init", baseline)):
        pl.seed_everything(args.seed, verbose=False)
        module.train()  # split_outputs left it in eval mode, and Lightning keeps a module's mode when fit starts
        trainer(args.finetune_epochs).fit(module, datamodule=datamodule)
        log(f"fine-tuned from {name}: {finetune_metrics(module, datamodule)}")
    tuned, tuned_base = finetune_metrics(pretrained, datamodule), finetune_metrics(baseline, datamodule)
    base["finetune_auroc"] = {"all": tuned_base["all"], "no_ecg": tuned_base["no_ecg"]}
    test_groups = datamodule.splits["test"].tensors
    ceiling = {
        f"report_to_{m}": {str(k): v for k, v in retrieval_recall_ceiling(test_groups[f"group_{m}"].tolist(), KS).items()}
        for m in ("xray", "ecg")
    }
    log(f"retrieval ceiling (reports that describe the same radiograph / ECG tie): {ceiling}")
    print(json.dumps({
        **results,
        "finetune_auroc": {"all": tuned["all"], "no_ecg": tuned["no_ecg"]},
        "baseline": base,
        "pretrain_seconds": round(pretrain_seconds, 1),
        "recall_ceiling": ceiling,
    }))


if __name__ == "__main__":
    main()
