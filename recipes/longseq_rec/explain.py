"""``fusion explain longseq_rec``: one self-contained HTML report on a run — feature-group Shapley values, SHAP
field attributions, and the behaviours the search stage retrieved (with the planted ones on lifelong data).

:func:`write_report` takes the predictor (``recipe.py`` loads it), so this module never imports the recipe.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl
import torch

from recipes.longseq_rec.predictor import BEHAVIOURS_PER_STEP

if TYPE_CHECKING:
    from recipes.longseq_rec.encoding import RecVocab
    from recipes.longseq_rec.predictor import RecPredictor
    from recipes.runtime.report import HtmlReport
    from recipes.runtime.runs import Run

__all__ = ["write_report", "GROUP_LABELS"]

GROUP_LABELS = {"target": "target item", "history": "long history", "profile": "user profile", "time": "time gaps"}


def write_report(run: "Run", predictor: "RecPredictor", input_path: Path | None, out_path: Path, *,
                 max_examples: int = 4) -> Path:
    """The report on ``input_path`` (a scoring Parquet) or, when None, the run's held-out test split; written to
    ``out_path``, which is returned."""
    import matplotlib

    matplotlib.use("Agg")
    from recipes.runtime.report import HtmlReport

    frame, reference, source = _explain_input(predictor, input_path)
    config = predictor.module.config
    report = HtmlReport(
        f"{run.recipe} — {config.model.upper()} explained",
        f"run `{run.run_id}`; input: {source}",
    )
    report.heading("Model")
    widths = (f"attention table {config.attention_dim}-d, representation table {config.representation_dim}-d"
              if config.model == "dare" else f"one {config.representation_dim}-d embedding table")
    attends = f"the top {config.top_k} behaviours of the whole history found by the search stage" if config.model != "din" \
        else f"the most recent {config.din_window} behaviours"
    report.text(f"`{config.model}` with {widths}; it attends to {attends}.")
    if run.metrics:
        report.metrics(run.metrics, caption="held-out metrics of the run")

    shap_rows = min(256, max(16, 2 * BEHAVIOURS_PER_STEP // predictor.max_history))
    encoded = predictor.encode(frame.head(shap_rows))
    bad = sum(e is not None for e in encoded.errors)
    first_error = next((e for e in encoded.errors if e), None)
    if not encoded.valid_rows:
        report.heading("Nothing to explain")
        report.text(f"None of the first {len(encoded.errors)} rows could be scored; first error: {first_error}"
                    if first_error else "The input has no rows.")
        return report.save(out_path)
    batch = dict(encoded.batch)
    batch.pop("relevant", None)  # the raw schema carries no planted behaviours; only the reference below does
    if reference is not None and max(encoded.valid_rows) < reference["hist_item"].shape[0]:
        same = reference["hist_item"][encoded.valid_rows]
        if torch.equal(same, batch["hist_item"]):  # the exported rows encode back to the same histories
            batch["relevant"] = reference["relevant"][encoded.valid_rows]
    rows = frame.head(shap_rows)[encoded.valid_rows]
    if bad:
        report.text(f"{bad} of the first {len(encoded.errors)} rows could not be encoded and are left out "
                    f"(first error: {first_error}).")

    _group_shapley_section(report, predictor, batch, rows, max_examples)
    _field_shap_section(report, predictor, batch, rows, max_examples)
    _retrieval_section(report, predictor, batch, rows, max_examples)
    return report.save(out_path)


def _explain_input(predictor: "RecPredictor", input_path: Path | None) -> tuple[pl.DataFrame, dict | None, str]:
    """The frame to explain, the data module's batch of its first rows when it carries planted relevant
    behaviours (lifelong synthetic data), and a description of the input."""
    if input_path is not None:
        return pl.read_parquet(input_path), None, f"`{Path(input_path).name}`"
    from recipes.longseq_rec.data import RecDataModule

    datamodule = RecDataModule.from_vocab(predictor.vocab)
    frame = datamodule.scoring_frame("test")
    reference = None
    if predictor.vocab.dataset == "lifelong-synthetic":  # the planted behaviours are known: keep them for the plots
        reference = datamodule.batch_builder("test")(np.arange(min(frame.height, 256)))
    return frame, reference, "the run's held-out test split"


def _title_of(vocab: "RecVocab", item_index: np.ndarray) -> list[str]:
    items = vocab.items
    titles = items["title"].to_list()
    categories = items["category"].to_list()
    raw = vocab.item_raw(np.maximum(item_index, 1))
    out = []
    for index, raw_id in zip(item_index.tolist(), raw.tolist()):
        if index <= 0:
            out.append("")
            continue
        title = titles[index - 1]
        out.append(f"{title} ({categories[index - 1]})" if title else f"item {raw_id} (category {categories[index - 1]})")
    return out


def _group_shapley_section(report: "HtmlReport", predictor: "RecPredictor", batch: dict[str, torch.Tensor],
                           rows: pl.DataFrame, max_examples: int) -> None:
    import matplotlib.pyplot as plt

    from fusion_core.explain import modality_shapley
    from recipes.longseq_rec.model import FEATURE_GROUPS

    size = batch["target_item"].shape[0]
    result = modality_shapley(lambda present: predictor.probability(batch, present), list(FEATURE_GROUPS), batch_size=size)
    values = {g: result.values[g].double().numpy() for g in FEATURE_GROUPS}
    report.heading("Feature-group Shapley values")
    report.text(
        "Exact Shapley values of four feature groups for the predicted click probability, over all 16 on/off "
        "combinations per example. A group that is off contributes nothing: no target embedding (target item), "
        "an empty history (long history), a zero profile vector (user profile), zero time-gap embeddings (time gaps). "
        f"The values of an example add up to its score minus the score with every group off. {size} examples."
    )
    labels = [GROUP_LABELS[g] for g in FEATURE_GROUPS]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3), sharey=True)
    axes[0].barh(labels, [np.abs(values[g]).mean() for g in FEATURE_GROUPS], color="#4c72b0")
    axes[0].set_xlabel("mean |φ| (probability)")
    means = [values[g].mean() for g in FEATURE_GROUPS]
    axes[1].barh(labels, means, color=["#55a868" if m >= 0 else "#c44e52" for m in means])
    axes[1].axvline(0, color="black", linewidth=0.8)
    axes[1].set_xlabel("mean φ (probability)")
    axes[0].invert_yaxis()
    fig.tight_layout()
    report.figure(fig, caption="feature-group Shapley values: mean |φ| and mean φ over the explained examples")
    shown = min(max_examples, size)
    titles = _title_of(predictor.vocab, batch["target_item"][:shown].numpy())
    table = {
        "user_id": rows["user_id"].head(shown).to_list(),
        "target": titles,
        "score": result.full[:shown].double().tolist(),
        "all groups off": result.base[:shown].double().tolist(),
        **{f"φ {GROUP_LABELS[g]}": values[g][:shown].tolist() for g in FEATURE_GROUPS},
    }
    if "label" in rows.columns:
        table["label"] = rows["label"].head(shown).to_list()
    report.table(table, caption="per-example feature-group Shapley values")


def _field_masks(predictor: "RecPredictor") -> list[tuple[str, str, int | None]]:
    """(label, batch key, profile column) of every field the shap section switches on and off."""
    fields: list[tuple[str, str, int | None]] = [
        ("target item id", "target_item", None),
        ("target category", "target_cate", None),
        ("history item ids", "hist_item", None),
        ("history categories", "hist_cate", None),
        ("history time gaps", "hist_time", None),
    ]
    fields += [(f"profile: {name}", "profile", i) for i, name in enumerate(predictor.vocab.profile_fields)]
    if predictor.module.config.user_dim > 0:
        fields.append(("user id", "user", None))
    return fields


def _field_shap_section(report: "HtmlReport", predictor: "RecPredictor", batch: dict[str, torch.Tensor],
                        rows: pl.DataFrame, max_examples: int) -> None:
    import matplotlib.pyplot as plt
    import shap

    fields = _field_masks(predictor)
    count = len(fields)
    explained = min(batch["target_item"].shape[0], max(max_examples, 8))

    def score_with_fields(example: int, keep: np.ndarray) -> np.ndarray:
        """Scores of ``example`` with the fields where ``keep (n, F)`` is 0 set to the unknown id 0."""
        n = keep.shape[0]
        copies = {k: v[example : example + 1].expand(n, *v.shape[1:]).clone() for k, v in batch.items()}
        off = torch.as_tensor(keep == 0)
        for j, (_, key, column) in enumerate(fields):
            if column is None:
                target = copies[key]
                shape = (n,) + (1,) * (target.dim() - 1)
                copies[key] = torch.where(off[:, j].reshape(shape), torch.zeros_like(target), target)
            else:
                copies[key][:, column] = torch.where(off[:, j], 0, copies[key][:, column])
        return predictor.probability(copies).double().numpy()

    phi = np.zeros((explained, count))
    base = np.zeros(explained)
    for example in range(explained):
        explainer = shap.KernelExplainer(lambda z, e=example: score_with_fields(e, z), np.zeros((1, count)))
        phi[example] = np.asarray(explainer.shap_values(np.ones((1, count)), nsamples=2**count, silent=True)).reshape(-1)
        base[example] = float(np.asarray(explainer.expected_value).reshape(-1)[0])

    report.heading("Field attributions (SHAP)")
    report.text(
        f"`shap.KernelExplainer` over {count} interpretable on/off features per example, one per input field; "
        "switching a field off sets its ids to 0, the unknown id the model was trained with (for the history "
        "fields: every behaviour's item, category or time gap becomes unknown, the behaviours stay). The "
        f"background is every field unknown, and with {2**count} samples the kernel estimate enumerates all "
        f"coalitions, so these are the Shapley values of that set function. {explained} examples."
    )
    labels = [label for label, _, _ in fields]
    fig, ax = plt.subplots(figsize=(7, 0.35 * count + 1.2))
    ax.barh(labels, np.abs(phi).mean(axis=0), color="#8172b2")
    ax.invert_yaxis()
    ax.set_xlabel("mean |SHAP value| (probability)")
    fig.tight_layout()
    report.figure(fig, caption="mean absolute SHAP value of each field over the explained examples")
    shown = min(max_examples, explained)
    table: dict[str, list[Any]] = {"user_id": rows["user_id"].head(shown).to_list(), "unknown-fields score": base[:shown].tolist()}
    for j, label in enumerate(labels):
        table[label] = phi[:shown, j].tolist()
    report.table(table, caption="per-example SHAP values of the fields (probability units)")


def _retrieval_section(report: "HtmlReport", predictor: "RecPredictor", batch: dict[str, torch.Tensor],
                       rows: pl.DataFrame, max_examples: int) -> None:
    import matplotlib.pyplot as plt

    config = predictor.module.config
    shown = min(max_examples, batch["target_item"].shape[0])
    head = {k: v[:shown] for k, v in batch.items()}
    out = predictor.forward(head)
    length = head["hist_item"].shape[1]
    relevant = head.get("relevant")
    report.heading("Retrieved behaviours")
    what = ("the stage-1 search kept the top-k behaviours of the whole history by attention-embedding dot product; "
            "stage 2 weighted them by softmax") if config.model != "din" else \
        "DIN attends to the most recent window of behaviours"
    report.text(
        f"For the first {shown} examples: {what}. The plot shows where in the history the attended behaviours sit "
        "(behaviours before the target, 0 = the most recent) and their attention weight"
        + ("; red crosses mark the planted relevant behaviours of the synthetic data." if relevant is not None and relevant.any() else ".")
    )
    fig, axes = plt.subplots(shown, 1, figsize=(8, 1.9 * shown), squeeze=False)
    for i in range(shown):
        ax = axes[i, 0]
        filled = out.retrieved[i] >= 0
        ago = (length - 1 - out.retrieved[i][filled]).numpy()
        weights = out.weights[i][filled].numpy()
        real = int(head["hist_mask"][i].sum())
        ax.stem(ago, weights, basefmt=" ")
        if relevant is not None and relevant[i].any():
            planted = (length - 1 - torch.nonzero(relevant[i]).squeeze(-1)).numpy()
            ax.plot(planted, np.zeros_like(planted, dtype=float), "x", color="#c44e52", markersize=8)
        ax.set_xlim(-0.5, max(real, 1) - 0.5)
        ax.invert_xaxis()
        ax.set_ylabel("weight")
        ax.set_title(f"user {rows['user_id'][i]} · target {_title_of(predictor.vocab, head['target_item'][i:i + 1].numpy())[0]}",
                     fontsize=9)
    axes[-1, 0].set_xlabel("behaviours before the target (0 = most recent)")
    fig.tight_layout()
    report.figure(fig, caption="attended behaviours: position in the history against attention weight")
    for i in range(shown):
        filled = out.retrieved[i] >= 0
        positions = out.retrieved[i][filled]
        order = torch.argsort(out.weights[i][filled], descending=True)
        positions, weights = positions[order], out.weights[i][filled][order]
        items = head["hist_item"][i, positions].numpy()
        table = {
            "rank": list(range(1, len(positions) + 1)),
            "behaviours ago": (length - 1 - positions).tolist(),
            "item": _title_of(predictor.vocab, items),
            "time bucket": head["hist_time"][i, positions].tolist(),
            "weight": weights.tolist(),
        }
        if relevant is not None:
            table["planted relevant"] = relevant[i, positions].tolist()
        report.table(table, caption=f"example {i + 1}: user {rows['user_id'][i]}, target "
                     f"{_title_of(predictor.vocab, head['target_item'][i:i + 1].numpy())[0]}", max_rows=50)

