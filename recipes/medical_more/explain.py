"""``fusion explain medical``: which modalities the scores used, modality Shapley values per finding, X-ray occlusion
saliency, ECG gradient×input saliency over leads and time, report word attributions, and zero-shot diagnosis from the
X-ray with its prompts, in one self-contained HTML report.

:func:`write_report` takes the predictor and the frame to explain; the recipe chooses them (the run's held-out
patients by default), so this module never imports the recipe.
"""
from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import polars as pl
import torch

from recipes.medical_more.cohort import LEADS
from recipes.medical_more.predictor import MAIN_FINDING, MorePredictor

if TYPE_CHECKING:
    from recipes.runtime.report import HtmlReport

__all__ = ["write_report", "occlusion_saliency", "ecg_saliency", "word_attributions", "SHAPLEY_ROWS"]

SHAPLEY_ROWS = 64
MODALITY_LABELS = {"xray": "X-ray", "ecg": "ECG", "report": "report"}


class _XrayToProbabilities(torch.nn.Module):
    """One sample's finding probabilities as a function of its radiograph alone (the other modalities fixed), the
    image → classes network MONAI's occlusion sensitivity expects."""

    def __init__(self, predictor: MorePredictor, batch: dict[str, torch.Tensor], present: dict[str, torch.Tensor]):
        super().__init__()
        self.predictor, self.batch, self.present = predictor, batch, present

    def forward(self, xray: torch.Tensor) -> torch.Tensor:  # (N, 1, S, S) -> (N, findings)
        n = xray.shape[0]
        batch = {k: v.expand(n, *v.shape[1:]) for k, v in self.batch.items()}
        batch["xray"] = xray
        return self.predictor.probabilities(batch, {k: v.expand(n) for k, v in self.present.items()})


@torch.no_grad()
def occlusion_saliency(predictor: MorePredictor, batch: dict[str, torch.Tensor], present: dict[str, torch.Tensor],
                       finding: int, patch: int = 8) -> np.ndarray:
    """``(S, S)`` drop in the finding's probability when each ``patch``×``patch`` square of the first sample's
    radiograph is replaced by the image mean (MONAI's ``OcclusionSensitivity``; Zeiler & Fergus, 2014).
    Positive = the region supports the finding."""
    from monai.visualize import OcclusionSensitivity

    one = {k: v[:1] for k, v in batch.items()}
    mask = {k: v[:1] for k, v in present.items()}
    network = _XrayToProbabilities(predictor, one, mask)
    base = float(network(one["xray"])[0, finding])
    occlusion = OcclusionSensitivity(network, mask_size=patch, n_batch=64, verbose=False, mode="mean_img",
                                     overlap=0.0, activate=False)
    with warnings.catch_warnings():  # MONAI indexes with a list of slices, which torch warns about
        warnings.simplefilter("ignore", UserWarning)
        occluded, _ = occlusion(one["xray"])  # (1, findings, S, S): probabilities with each square occluded
    return (base - occluded[0, finding]).numpy().astype(np.float32)


def ecg_saliency(predictor: MorePredictor, batch: dict[str, torch.Tensor], present: dict[str, torch.Tensor],
                 finding: int) -> np.ndarray:
    """``(12, T)`` gradient × input of the finding's logit with respect to the first sample's ECG."""
    one = {k: v[:1].clone() for k, v in batch.items()}
    mask = {k: v[:1] for k, v in present.items()}
    one["ecg"].requires_grad_(True)
    model = predictor.module.model
    with torch.enable_grad():
        logits = model.diagnose(model.encode(one).embeddings, mask).logits
        logits[0, finding].backward()
    return (one["ecg"].grad * one["ecg"]).detach()[0].numpy()


def word_attributions(predictor: MorePredictor, batch: dict[str, torch.Tensor], present: dict[str, torch.Tensor],
                      text: str, finding: int, max_words: int = 60) -> list[tuple[str, float]]:
    """``[(word, Δ)]``: the finding's probability minus its probability with that word left out of the report."""
    words = text.split()[:max_words]
    if not words:
        return []
    variants = [" ".join(words)] + [" ".join(words[:i] + words[i + 1:]) for i in range(len(words))]
    reports = predictor.encode_texts(variants)
    n = len(variants)
    copies = {k: v[:1].expand(n, *v.shape[1:]) for k, v in batch.items() if not k.startswith("report")}
    copies.update(reports)
    probs = predictor.probabilities(copies, {k: v[:1].expand(n) for k, v in present.items()})[:, finding]
    return [(word, float(probs[0] - probs[i + 1])) for i, word in enumerate(words)]


def write_report(predictor: MorePredictor, frame: pl.DataFrame, out_path: Path, *, title: str, subtitle: str | None = None,
                 metrics: Mapping[str, float] | None = None, max_examples: int = 4) -> Path:
    """The HTML report of ``predictor`` on the first :data:`SHAPLEY_ROWS` rows of ``frame`` (the scoring input's
    columns; its files must exist while this runs), with the run's ``metrics`` as a table; returns ``out_path``."""
    import matplotlib

    matplotlib.use("Agg")
    from recipes.runtime.report import HtmlReport

    config = predictor.module.config
    frame = frame.head(SHAPLEY_ROWS)
    encoded = predictor.encode_frame(frame)
    report = HtmlReport(title, subtitle)
    report.heading("Model")
    report.text(
        f"X-ray ViT ({config.image_size}×{config.image_size}, patches {config.patch_size}), ECG transformer over Conv1d "
        f"patches of {config.ecg_patch} samples, report encoder `{config.report_encoder}`; {config.projection_dim}-d "
        "projections aligned with InfoNCE(report, X-ray) + InfoNCE(report, ECG); diagnosis head over "
        f"`{config.fusion}` fusion. Findings: " + ", ".join(predictor.findings) + "."
    )
    if metrics:
        report.metrics(dict(sorted(metrics.items())), caption="held-out metrics of the run")
    rows = encoded.valid_rows
    bad = [e for e in encoded.errors if e is not None]
    if bad:
        report.text(f"{len(bad)} of {frame.height} rows could not be read and are left out (first error: {bad[0]}).")
    partial = [w for i, w in enumerate(encoded.warnings) if w is not None and i in set(rows)]
    if partial:
        report.text(f"{len(partial)} of {len(rows)} scored rows are scored without a modality file that could not be "
                    f"read (first: {partial[0]}).")
    if not rows:
        report.heading("Nothing to explain")
        report.text("None of the rows could be scored.")
        return report.save(out_path)
    used = [encoded.modalities_used(i) for i in rows]
    batch, present = encoded.rows(rows)
    frame = frame[rows].with_columns(pl.Series("modalities", used, dtype=pl.Utf8))
    counts = pl.DataFrame({"modalities": used}).group_by("modalities").len().sort("len", descending=True)
    report.table({"scored from": counts["modalities"].to_list(), "rows": counts["len"].to_list()},
                 caption="which modalities the scores used")
    _shapley_section(report, predictor, batch, present, frame, max_examples)
    _saliency_sections(report, predictor, batch, present, frame, max_examples)
    _zero_shot_section(report, predictor, batch, present, frame, max_examples)
    return report.save(out_path)


def _zero_shot_section(report: "HtmlReport", predictor: MorePredictor, batch, present, frame: pl.DataFrame,
                       max_examples: int) -> None:
    """The prompts of zero-shot diagnosis and, for the first patients with a radiograph, its zero-shot probabilities."""
    from recipes.medical_more.data import PROMPT_SIDES, PROMPTS, prompt_texts
    from recipes.medical_more.module import prompt_ensemble

    findings = [f for f in predictor.findings if f in PROMPTS]
    report.heading("Zero-shot diagnosis from the X-ray alone")
    report.text(
        "Each finding is scored from the radiograph's embedding alone, without training a classifier: the normalised "
        "projections of the prompts below are averaged per side (a prompt ensemble), and the similarity to the "
        "'present' average is softmaxed against the 'absent' one (CheXzero) at the learned temperature."
    )
    report.table({"finding": [f for f in findings for _ in PROMPT_SIDES],
                  "side": [side for _ in findings for side in PROMPT_SIDES],
                  "prompts": [" | ".join(PROMPTS[f][side]) for f in findings for side in PROMPT_SIDES]},
                 caption="zero-shot prompts")
    keep = present["xray"].nonzero().flatten()[:max_examples]
    if len(keep) == 0 or len(findings) != len(predictor.findings):
        return
    with torch.no_grad():
        model = predictor.module.model
        prompts = prompt_ensemble(model.encode_report(predictor.encode_texts(prompt_texts(tuple(findings)))), len(findings))
        xray = model.encode({k: v[keep] for k, v in batch.items()}).embeddings["xray"]
        probabilities = model.zero_shot(xray, prompts)  # (K, F)
    ids = frame["patient_id"] if "patient_id" in frame.columns else pl.Series([f"row {i}" for i in range(len(frame))])
    report.table({"patient": [str(ids[int(i)]) for i in keep],
                  **{f: probabilities[:, k].tolist() for k, f in enumerate(findings)}},
                 caption="zero-shot probabilities from the X-ray alone")


def _shapley_section(report: "HtmlReport", predictor: MorePredictor, batch, present, frame: pl.DataFrame,
                     max_examples: int) -> None:
    import matplotlib.pyplot as plt

    from fusion_core.explain import modality_shapley

    modalities = ["xray", "ecg", "report"]
    result = modality_shapley(lambda masks: predictor.probabilities(batch, masks), modalities, present=present)
    values = {m: result.values[m].double().numpy() for m in modalities}  # (B, F)
    report.heading("Modality Shapley values per finding")
    report.text(
        "Exact Shapley values of the three modalities for each finding's probability, over all 8 on/off coalitions: "
        "a modality that is off is marked absent, exactly as a missing one is at scoring time. A modality a patient "
        f"lacks gets 0. The values of a patient add up to the probability minus the all-absent probability. "
        f"{len(frame)} patients."
    )
    findings = predictor.findings
    fig, ax = plt.subplots(figsize=(8, 3.2))
    width = 0.25
    x = np.arange(len(findings))
    for k, m in enumerate(modalities):
        ax.bar(x + (k - 1) * width, np.abs(values[m]).mean(0), width, label=MODALITY_LABELS[m])
    ax.set_xticks(x, findings)
    ax.set_ylabel("mean |φ| (probability)")
    ax.legend()
    fig.tight_layout()
    report.figure(fig, caption="mean absolute modality Shapley value per finding")
    shown = min(max_examples, len(frame))
    for k in range(shown):
        table = {"finding": findings, "probability": result.full[k].double().tolist(),
                 "all absent": result.base[k].double().tolist(),
                 **{f"φ {MODALITY_LABELS[m]}": values[m][k].tolist() for m in modalities}}
        pid = frame["patient_id"][k] if "patient_id" in frame.columns else f"row {k}"
        report.table(table, caption=f"patient {pid}: modality Shapley values")


def _saliency_sections(report: "HtmlReport", predictor: MorePredictor, batch, present, frame: pl.DataFrame,
                       max_examples: int) -> None:
    import matplotlib.pyplot as plt

    finding = predictor.findings.index(MAIN_FINDING)
    shown = min(max_examples, len(frame))
    report.heading(f"Where the evidence for {MAIN_FINDING} is")
    report.text(
        "X-ray: occlusion sensitivity — each 8×8 square is replaced by the image mean (MONAI OcclusionSensitivity); red squares lower the "
        f"{MAIN_FINDING} probability when hidden (they support it), blue ones raise it. ECG: gradient × input of the "
        "finding's logit per lead and sample (red supports, blue opposes). Report: how much the probability drops "
        "when each word is left out."
    )
    for k in range(shown):
        row = {key: value[k:k + 1] for key, value in batch.items()}
        mask = {key: value[k:k + 1] for key, value in present.items()}
        pid = frame["patient_id"][k] if "patient_id" in frame.columns else f"row {k}"
        probability = float(predictor.probabilities(row, mask)[0, finding])
        fig = plt.figure(figsize=(11, 4.2))
        grid = fig.add_gridspec(1, 2, width_ratios=[1, 2.2])
        ax = fig.add_subplot(grid[0])
        if bool(mask["xray"][0]):
            saliency = occlusion_saliency(predictor, row, mask, finding)
            limit = max(float(np.abs(saliency).max()), 1e-6)
            ax.imshow(row["xray"][0, 0].numpy(), cmap="gray", vmin=0, vmax=1)
            ax.imshow(saliency, cmap="bwr", vmin=-limit, vmax=limit, alpha=0.45)
            ax.set_title("X-ray with occlusion saliency", fontsize=9)
        else:
            ax.text(0.5, 0.5, "no X-ray", ha="center", va="center")
        ax.axis("off")
        ax = fig.add_subplot(grid[1])
        if bool(mask["ecg"][0]):
            signal = row["ecg"][0].numpy()
            saliency = ecg_saliency(predictor, row, mask, finding)
            limit = max(float(np.abs(saliency).max()), 1e-9)
            offsets = np.arange(len(LEADS))[::-1] * 3.0
            ax.imshow(saliency, aspect="auto", cmap="bwr", vmin=-limit, vmax=limit, alpha=0.5,
                      extent=(0, signal.shape[1], -1.5, offsets[0] + 1.5))
            for lead, offset in enumerate(offsets):
                ax.plot(signal[lead] + offset, color="black", linewidth=0.6)
            ax.set_yticks(offsets, LEADS)
            ax.set_xlabel("sample")
            ax.set_title("12-lead ECG with gradient × input saliency", fontsize=9)
        else:
            ax.text(0.5, 0.5, "no ECG", ha="center", va="center")
            ax.axis("off")
        used = frame["modalities"][k] if "modalities" in frame.columns else ""
        fig.suptitle(f"patient {pid}: P({MAIN_FINDING}) = {probability:.3f}, scored from {used.replace('+', ' + ')}",
                     fontsize=10)
        fig.tight_layout()
        report.figure(fig, caption=f"patient {pid}: saliency for {MAIN_FINDING}")
        text = frame["report_text"][k] if "report_text" in frame.columns else None
        if bool(mask["report"][0]) and text:
            attributions = word_attributions(predictor, row, mask, str(text), finding)
            top = sorted(attributions, key=lambda item: -abs(item[1]))[:12]
            report.table({"word": [w for w, _ in top], "Δ probability when left out": [v for _, v in top]},
                         caption=f"patient {pid}: the report words that matter most for {MAIN_FINDING}")
