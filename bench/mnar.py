"""MNAR benchmark: does a fusion operator survive a shift in *why* a modality is missing?

Planted task (data_cards/mnar_synthetic.md): three modalities a, b, c, each a noisy token view of its own latent
block; the label is a logistic of a weighted sum of the three blocks, b weighted most. Training removes b for
p = 50% of the POSITIVE samples only (missing not at random: absence of b signals "positive"). Test sets:

- ``clean``   no missingness;
- ``same``    the training pattern (b removed for 50% of positives);
- ``flipped`` b removed for 50% of the NEGATIVE samples.

Every registered operator is trained without and with :class:`fusion_core.missing.MissingnessBalancer`
(``<op>+balanced``), plus ``sequential_batchskip`` = ``create_fusion("sequential", ..., skip="batch")``, the
reference MultiModN behaviour. Model = fusion + linear head on ``pooled`` (task BCE + ``aux_loss``); for
``sequential`` the decoder reads every state and the loss averages BCE over all steps, as MultiModN does, and the
prediction is the last step. Adam with a cosine schedule; the epoch kept is the one with the best AUROC on a
validation set drawn with the training missingness pattern. Progress lines go to stdout; the last line is one
JSON object: means over seeds, plus ``<test>_std`` (standard deviation over seeds).

Run: ``.venv/bin/python bench/mnar.py`` (about 5–10 minutes on 2 CPU cores).
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics.functional.classification import binary_auroc

from fusion_core.fusion import create_fusion, list_fusions
from fusion_core.missing import MissingnessBalancer

MODALITIES = ("a", "b", "c")
FEATURE_DIM = 8  # per-token feature width of every modality
LATENT_DIM = 2  # latent block per modality
MAX_TOKENS = 4  # token slots per modality; 2–4 of them are real
TOKEN_NOISE = 1.0
# Planted signal: label logit = SHARPNESS · Σ_m WEIGHT[m] · ⟨u_m, z_m⟩ with unit vectors u_m.
WEIGHT = {"a": 1.0, "b": 1.6, "c": 0.8}
SHARPNESS = 2.0
STRUCTURE_SEED = 12345  # fixes u_m and the token projections W_m: the same task for every bench seed


class Split(NamedTuple):
    tokens: dict[str, Tensor]  # (N, MAX_TOKENS, FEATURE_DIM), NaN in padded slots
    token_mask: dict[str, Tensor]  # (N, MAX_TOKENS) bool
    labels: Tensor  # (N,) float 0/1
    score: Tensor  # (N,) the planted logit (oracle)
    score_without_b: Tensor  # (N,) the planted logit with b's part removed


def planted_structure() -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    gen = torch.Generator().manual_seed(STRUCTURE_SEED)
    directions, projections = {}, {}
    for m in MODALITIES:
        u = torch.randn(LATENT_DIM, generator=gen)
        directions[m] = u / u.norm()
        projections[m] = torch.randn(FEATURE_DIM, LATENT_DIM, generator=gen) / LATENT_DIM**0.5
    return directions, projections


def generate(n: int, seed: int) -> Split:
    """Draw ``n`` samples of the planted task (structure fixed, samples from ``seed``)."""
    directions, projections = planted_structure()
    gen = torch.Generator().manual_seed(seed)
    tokens, token_mask, parts = {}, {}, {}
    for m in MODALITIES:
        z = torch.randn(n, LATENT_DIM, generator=gen)  # (N, L)
        parts[m] = WEIGHT[m] * (z @ directions[m])  # (N,)
        clean = z @ projections[m].T  # (N, F)
        x = clean[:, None, :] + TOKEN_NOISE * torch.randn(n, MAX_TOKENS, FEATURE_DIM, generator=gen)  # (N, T, F)
        num_real = torch.randint(2, MAX_TOKENS + 1, (n,), generator=gen)
        mask = torch.arange(MAX_TOKENS)[None, :] < num_real[:, None]  # (N, T)
        tokens[m] = x.masked_fill(~mask[..., None], float("nan"))
        token_mask[m] = mask
    score = SHARPNESS * sum(parts.values())
    labels = (torch.rand(n, generator=gen) < torch.sigmoid(score)).float()
    return Split(tokens, token_mask, labels, score, score - SHARPNESS * parts["b"])


def remove_b(labels: Tensor, target_label: float | None, p: float, seed: int) -> dict[str, Tensor]:
    """``present`` masks: b removed for a fraction ``p`` of the samples whose label is ``target_label``."""
    n = labels.shape[0]
    present = {m: torch.ones(n, dtype=torch.bool) for m in MODALITIES}
    if target_label is not None:
        draw = torch.rand(n, generator=torch.Generator().manual_seed(seed))
        present["b"] = ~((labels == target_label) & (draw < p))
    return present


class Model(nn.Module):
    """Fusion operator + linear head on ``pooled``; a ``steps`` operator predicts with its own decoder."""

    def __init__(self, operator: str, dim: int, **options) -> None:
        super().__init__()
        self.fusion = create_fusion(operator, modality_dims={m: FEATURE_DIM for m in MODALITIES}, dim=dim, **options)
        self.uses_steps = operator == "sequential"
        self.head = None if self.uses_steps else nn.Linear(dim, 1)

    def forward(self, tokens, token_mask, present, labels: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        out = self.fusion(tokens, token_mask, present)
        if self.uses_steps:
            logits = out.steps[-1][:, 0]
            step_logits = [step[:, 0] for step in out.steps]
        else:
            logits = self.head(out.pooled)[:, 0]
            step_logits = [logits]
        if labels is None:
            return logits, None
        task = torch.stack([F.binary_cross_entropy_with_logits(s, labels) for s in step_logits]).mean()
        return logits, task + out.aux_loss


def _take(split: Split, present: dict[str, Tensor], idx: Tensor):
    return (
        {m: t[idx] for m, t in split.tokens.items()},
        {m: t[idx] for m, t in split.token_mask.items()},
        {m: t[idx] for m, t in present.items()},
    )


def train(model: Model, split: Split, present: dict[str, Tensor], balancer: MissingnessBalancer | None,
          val: Split, val_present: dict[str, Tensor], epochs: int, batch_size: int, lr: float, seed: int) -> int:
    """Adam + cosine schedule; keeps the weights of the epoch with the best validation AUROC (returned, 1-based).

    The validation set has the training missingness pattern (the only data a practitioner holds); a balanced model
    is validated on it after the same balancing (fixed draw), i.e. under the distribution it was trained on —
    selecting it on raw MNAR data would reward epochs that happen to read absence as "positive".
    """
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    gen = torch.Generator().manual_seed(seed)
    strata = split.labels.long()
    if balancer is not None:
        val_present = balancer(val_present, val.labels.long(), generator=torch.Generator().manual_seed(seed + 1))
    best, best_epoch, best_state = -1.0, 0, None
    for epoch in range(1, epochs + 1):
        model.train()
        for idx in torch.randperm(split.labels.shape[0], generator=gen).split(batch_size):
            tokens, token_mask, batch_present = _take(split, present, idx)
            if balancer is not None:
                batch_present = balancer(batch_present, strata[idx], generator=gen)
            _, loss = model(tokens, token_mask, batch_present, split.labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sched.step()
        score = auroc(model, val, val_present, batch_size)
        if score > best:
            best, best_epoch = score, epoch
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    model.load_state_dict(best_state)
    return best_epoch


@torch.no_grad()
def auroc(model: Model, split: Split, present: dict[str, Tensor], batch_size: int) -> float:
    model.eval()
    # Batches of the training size: sequential_batchskip's skip decision depends on the batch, as in the reference.
    logits = torch.cat([model(*_take(split, present, idx))[0] for idx in torch.arange(split.labels.shape[0]).split(batch_size)])
    return float(binary_auroc(logits, split.labels.long()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--p", type=float, default=0.5)
    parser.add_argument("--n-train", type=int, default=3000)
    parser.add_argument("--n-val", type=int, default=1000)
    parser.add_argument("--n-test", type=int, default=4000)
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--operators", nargs="*", default=None, help="default: every registered operator")
    args = parser.parse_args()
    torch.set_num_threads(2)

    operators = args.operators or list_fusions()
    configs: list[tuple[str, str, dict, bool]] = []  # (label, operator, options, balanced)
    for op in operators:
        try:  # an operator made for another number of modalities (``interaction``: two streams) cannot take part
            create_fusion(op, modality_dims={m: FEATURE_DIM for m in MODALITIES}, dim=args.dim)
        except ValueError as error:
            print(f"skipping {op}: {error}", flush=True)
            continue
        configs.append((op, op, {}, False))
        configs.append((f"{op}+balanced", op, {}, True))
    configs.append(("sequential_batchskip", "sequential", {"skip": "batch"}, False))

    results: dict[str, dict[str, list[float]]] = {label: {"clean": [], "same": [], "flipped": []} for label, *_ in configs}
    start = time.perf_counter()
    for seed in range(args.seeds):
        train_split = generate(args.n_train, seed=1000 + seed)
        test_split = generate(args.n_test, seed=2000 + seed)
        val_split = generate(args.n_val, seed=6000 + seed)
        train_present = remove_b(train_split.labels, 1.0, args.p, seed=3000 + seed)
        val_present = remove_b(val_split.labels, 1.0, args.p, seed=7000 + seed)
        tests = {
            "clean": remove_b(test_split.labels, None, args.p, seed=0),
            "same": remove_b(test_split.labels, 1.0, args.p, seed=4000 + seed),
            "flipped": remove_b(test_split.labels, 0.0, args.p, seed=5000 + seed),
        }
        y = test_split.labels.long()
        print(
            f"seed {seed}: train {args.n_train}, val {args.n_val} (positives {train_split.labels.mean():.2f}, "
            f"b missing {1 - train_present['b'].float().mean():.2f}), test {args.n_test}; oracle AUROC "
            f"{float(binary_auroc(test_split.score, y)):.3f}, oracle without b "
            f"{float(binary_auroc(test_split.score_without_b, y)):.3f}",
            flush=True,
        )
        for label, op, options, balanced in configs:
            t0 = time.perf_counter()
            torch.manual_seed(seed)
            model = Model(op, args.dim, **options)
            balancer = MissingnessBalancer().fit(train_present, train_split.labels.long()) if balanced else None
            best_epoch = train(model, train_split, train_present, balancer, val_split, val_present,
                               args.epochs, args.batch_size, args.lr, seed)
            scores = {name: auroc(model, test_split, present, args.batch_size) for name, present in tests.items()}
            for name, value in scores.items():
                results[label][name].append(value)
            print(
                f"  seed {seed} {label:<32} clean {scores['clean']:.3f}  same {scores['same']:.3f}  "
                f"flipped {scores['flipped']:.3f}  (best epoch {best_epoch}, {time.perf_counter() - t0:.1f}s, total {time.perf_counter() - start:.0f}s)",
                flush=True,
            )

    summary = {}
    for label, by_test in results.items():
        entry = {}
        for name, values in by_test.items():
            entry[name] = round(statistics.fmean(values), 4)
        for name, values in by_test.items():
            entry[f"{name}_std"] = round(statistics.stdev(values), 4) if len(values) > 1 else 0.0
        summary[label] = entry
    print(f"done in {time.perf_counter() - start:.0f}s", flush=True)
    print(json.dumps({"p": args.p, "seeds": args.seeds, "auroc": summary}))


if __name__ == "__main__":
    main()
