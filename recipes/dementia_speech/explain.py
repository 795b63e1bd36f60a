"""The dementia recipe's HTML report: modality Shapley values, spectrogram saliency over time and frequency (runs
with the spectrogram transformer), acoustic-marker attributions (runs with the markers), word attributions over the
transcript (pauses and fillers marked) and the reliability diagrams before and after temperature scaling.

Everything here takes the trained model as a :class:`recipes.dementia_speech.predictor.DementiaPredictor`; the
recipe (``recipe.py``) builds it and calls :func:`write_report`.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import polars as pl
import torch
from torch import Tensor

from fusion_core.encoders.text import HashTokenizer
from fusion_core.encoders.text_minilm import minilm_tokenize, minilm_tokenizer
from recipes.dementia_speech.metrics import SOURCE, TARGET
from recipes.dementia_speech.readers.chat import PAUSE_TOKENS, is_filler
from recipes.dementia_speech.text import text_for_encoder
from recipes.runtime.metrics import binary_classification_metrics

if TYPE_CHECKING:
    from recipes.dementia_speech.predictor import DementiaPredictor, EncodedRows
    from recipes.runtime.report import HtmlReport
    from recipes.runtime.runs import Run

__all__ = ["write_report", "spectrogram_saliency", "marker_attributions", "token_attributions", "marked_transcript",
           "reliability_curve", "reliability_figure", "Reliability", "text_tokens"]


def spectrogram_saliency(predictor: "DementiaPredictor", batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """``(B, H, W)`` |∂ logit / ∂ image| summed over the three channels (rows: mel bands low→high, columns: time)."""
    image = batch["image"].clone().requires_grad_(True)
    with torch.enable_grad():
        logit = predictor.module({**batch, "image": image}).logit
        (grad,) = torch.autograd.grad(logit.sum(), image)
    return grad.abs().sum(dim=1)


def marker_attributions(predictor: "DementiaPredictor", batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """``(B, F)`` gradient × input over the standardised acoustic markers: ∂ logit / ∂ z · z with z = (x − mean) / scale
    the marker the model reads (positive: the marker's deviation from the training mean raises the probability)."""
    encoder = predictor.module.model.marker_encoder
    markers = batch["acoustic"].clone().requires_grad_(True)
    with torch.enable_grad():
        logit = predictor.module({**batch, "acoustic": markers}).logit
        (grad,) = torch.autograd.grad(logit.sum(), markers)
    standard = (batch["acoustic"] - encoder.mean) / encoder.scale
    return grad * encoder.scale * standard


def token_attributions(predictor: "DementiaPredictor", batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """``(B, T)`` gradient × input of the logit for each text token (summed over the embedding), 0 on padding."""
    module = predictor.module
    with torch.enable_grad():
        if module.config.text_encoder != "scratch":
            # MiniLM token embeddings: cached (frozen) or from the LoRA-tuned MiniLM, attributed at its output
            text = module.model.text_input(batch).detach().clone().requires_grad_(True)
            logit = module({**batch, "text": text}).logit
            (grad,) = torch.autograd.grad(logit.sum(), text)
            scores = (grad * text).sum(-1)
        else:
            embedded = module.model.text_encoder(batch["text_ids"]).detach().requires_grad_(True)
            original = module.model.text_encoder
            module.model.text_encoder = _Constant(embedded)
            try:
                logit = module(batch).logit
                (grad,) = torch.autograd.grad(logit.sum(), embedded)
            finally:
                module.model.text_encoder = original
            scores = (grad * embedded).sum(-1)
    return torch.where(batch["text_mask"], scores.detach(), torch.zeros(()))


class _Constant(torch.nn.Module):
    def __init__(self, value: torch.Tensor):
        super().__init__()
        self.value = value

    def forward(self, _: torch.Tensor) -> torch.Tensor:
        return self.value


def text_tokens(predictor: "DementiaPredictor", transcript: str) -> list[str]:
    """The tokens the text branch saw for ``transcript``: MiniLM word pieces with [CLS]/[SEP], or [CLS] and the
    hashed words."""
    settings = predictor.settings
    readable = text_for_encoder(transcript)
    if settings["text_encoder"] == "scratch":
        return HashTokenizer(settings["text_vocab_size"], settings["max_text_tokens"]).tokens(readable)
    ids, mask = minilm_tokenize([readable], settings["max_text_tokens"])
    return minilm_tokenizer().convert_ids_to_tokens(ids[0][mask[0]].tolist())


def marked_transcript(transcript: str) -> str:
    """The transcript with pauses and fillers in **bold** (the report's markup)."""
    return " ".join(f"**{t}**" if t in PAUSE_TOKENS or is_filler(t) else t for t in transcript.split())


class Reliability(NamedTuple):
    """Per equal-width confidence bin: mean predicted probability, observed frequency of label 1, count."""

    mean_predicted: Tensor
    observed: Tensor
    count: Tensor


def reliability_curve(prob: Tensor, label: Tensor, n_bins: int = 10) -> Reliability:
    """Reliability diagram data over equal-width bins of the predicted probability of class 1 (empty bins NaN)."""
    prob, label = prob.double(), label.double()
    bins = torch.clamp((prob * n_bins).long(), max=n_bins - 1)
    count = torch.bincount(bins, minlength=n_bins).double()
    mean_predicted = torch.bincount(bins, weights=prob, minlength=n_bins) / count
    observed = torch.bincount(bins, weights=label, minlength=n_bins) / count
    return Reliability(mean_predicted, observed, count)


def reliability_figure(prob: np.ndarray, label: np.ndarray, title: str = "", n_bins: int = 10):
    """Reliability diagram: observed frequency of dementia per bin of predicted probability, with counts."""
    import matplotlib.pyplot as plt

    curve = reliability_curve(torch.tensor(prob), torch.tensor(label), n_bins)  # copies: polars hands read-only arrays
    filled = curve.count.numpy() > 0
    centres = (np.arange(n_bins) + 0.5) / n_bins
    fig, (ax, hist) = plt.subplots(2, 1, figsize=(4.8, 5.2), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    ax.plot([0, 1], [0, 1], "--", color="grey", linewidth=1, label="perfect calibration")
    ax.bar(centres[filled], curve.observed.numpy()[filled], width=1 / n_bins, edgecolor="black", alpha=0.7,
           color="#4c72b0", label="observed frequency")
    ax.plot(curve.mean_predicted.numpy()[filled], curve.observed.numpy()[filled], "o", color="#c44e52",
            label="bin mean prediction")
    ax.set_ylabel("fraction with dementia")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8, loc="upper left")
    if title:
        ax.set_title(title, fontsize=10)
    hist.bar(centres, curve.count.numpy(), width=1 / n_bins, color="#8c8c8c", edgecolor="black")
    hist.set_xlabel("predicted probability of dementia")
    hist.set_ylabel("count")
    hist.set_xlim(0, 1)
    fig.tight_layout()
    return fig


def _shapley_section(report: "HtmlReport", predictor: "DementiaPredictor", encoded: "EncodedRows",
                     names: list[str], shown: int) -> None:
    import matplotlib.pyplot as plt

    from fusion_core.explain import modality_shapley

    modalities = list(predictor.module.model.modalities)
    size = len(encoded.valid_rows)
    result = modality_shapley(lambda present: predictor.probability(encoded.batch, present), modalities, batch_size=size)
    report.heading("Modality Shapley values")
    report.text(
        "Exact Shapley values of the acoustic and the linguistic branch for the predicted probability of dementia: "
        "a branch that is off is marked absent in the fusion (the model's own missing-modality path). The values of "
        f"an example add up to its probability minus the probability with both branches off. {size} recordings."
    )
    values = {m: result.values[m].double().numpy() for m in modalities}
    fig, ax = plt.subplots(figsize=(6, 1.2 + 0.5 * len(modalities)))
    ax.barh(modalities, [np.abs(values[m]).mean() for m in modalities], color="#4c72b0")
    ax.set_xlabel("mean |φ| (probability)")
    fig.tight_layout()
    report.figure(fig, caption="mean absolute modality Shapley value")
    table = {"speaker": names[:shown], "probability": result.full[:shown].double().tolist(),
             "both off": result.base[:shown].double().tolist()}
    table.update({f"φ {m}": values[m][:shown].tolist() for m in modalities})
    report.table(table, caption="per-recording modality Shapley values")


def _saliency_section(report: "HtmlReport", predictor: "DementiaPredictor", encoded: "EncodedRows",
                      names: list[str], shown: int) -> None:
    import matplotlib.pyplot as plt

    head = {k: v[:shown] for k, v in encoded.batch.items()}
    saliency = spectrogram_saliency(predictor, head).numpy()
    report.heading("Spectrogram saliency")
    report.text(
        "Left: the log-Mel channel of the image the acoustic branch sees (time → right, mel bands low → high). "
        "Right: |∂ logit / ∂ pixel| summed over the log-Mel, Δ and ΔΔ channels — where in time and frequency a "
        "small change moves the prediction most. Below each pair, the saliency summed over frequency (per time) "
        "and over time (per band)."
    )
    fig, axes = plt.subplots(shown, 3, figsize=(11, 2.6 * shown), squeeze=False,
                             gridspec_kw={"width_ratios": [3, 3, 2]})
    for i in range(shown):
        axes[i, 0].imshow(head["image"][i, 0].numpy(), origin="lower", aspect="auto", cmap="magma")
        axes[i, 0].set_title(f"{names[i]}: log-Mel", fontsize=9)
        axes[i, 1].imshow(saliency[i], origin="lower", aspect="auto", cmap="viridis")
        axes[i, 1].set_title("saliency", fontsize=9)
        axes[i, 2].plot(saliency[i].sum(axis=0) / saliency[i].sum(), label="over time")
        axes[i, 2].plot(saliency[i].sum(axis=1) / saliency[i].sum(), label="over mel bands")
        axes[i, 2].legend(fontsize=7)
        for ax in axes[i, :2]:
            ax.set_xlabel("time")
            ax.set_ylabel("mel band")
    fig.tight_layout()
    report.figure(fig, caption="spectrogram saliency of the first recordings")


def _markers_section(report: "HtmlReport", predictor: "DementiaPredictor", encoded: "EncodedRows") -> None:
    import matplotlib.pyplot as plt

    from recipes.dementia_speech.acoustic import feature_names

    attributions = marker_attributions(predictor, encoded.batch).abs().mean(dim=0).numpy()
    names = feature_names()
    top = np.argsort(attributions)[::-1][:12]
    report.heading("Acoustic markers")
    report.text(
        "Mean |gradient × standardised marker| of the eGeMAPS functionals and the VAD's pause statistics over the "
        f"{len(encoded.valid_rows)} recordings: the markers whose deviation from the training speakers moves the "
        "prediction most."
    )
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(top) + 1))
    ax.barh([names[i] for i in top][::-1], attributions[top][::-1], color="#4c72b0")
    ax.set_xlabel("mean |attribution| (logit)")
    fig.tight_layout()
    report.figure(fig, caption="the acoustic markers the model reads most")


def _words_section(report: "HtmlReport", predictor: "DementiaPredictor", encoded: "EncodedRows",
                   names: list[str], shown: int) -> None:
    if "text" not in predictor.module.model.modalities:
        return
    head = {k: v[:shown] for k, v in encoded.batch.items()}
    scores = token_attributions(predictor, head).numpy()
    report.heading("Word attributions")
    report.text(
        "Gradient × input of the logit for every token the text branch saw (positive: towards dementia). The "
        "transcripts show pauses `(.)` `(..)` `(...)` and fillers `&uh` in bold; the text encoder reads them as "
        "`[pause]`-style words and bare fillers."
    )
    for i in range(shown):
        transcript = encoded.transcripts[encoded.valid_rows[i]] or ""
        source = encoded.transcript_sources[encoded.valid_rows[i]]
        report.text(f"**{names[i]}** ({source} transcript): " + marked_transcript(transcript))
        tokens = text_tokens(predictor, transcript)
        values = scores[i][: len(tokens)]
        order = np.argsort(-np.abs(values))[:12]
        report.table({"token": [tokens[j] for j in order], "attribution": values[order].tolist()},
                     caption=f"{names[i]}: the 12 tokens with the largest |attribution|")


def write_report(run: "Run", predictor: "DementiaPredictor", frame: pl.DataFrame, source: str, out_path: Path,
                 max_examples: int) -> Path:
    from recipes.runtime.report import HtmlReport

    cfg = predictor.module.config
    report = HtmlReport(f"dementia_speech — {cfg.fusion} fusion explained", f"run `{run.run_id}`; input: {source}")
    report.heading("Model")
    transport = (f"on (weight {cfg.ot_weight}, {'joint DeepJDOT cost' if cfg.ot_joint else 'feature cost'})"
                 if cfg.ot_weight > 0 else "off")
    report.text(f"Branches: {', '.join(predictor.module.model.modalities)}; fusion `{cfg.fusion}`; label smoothing "
                f"{cfg.label_smoothing}; optimal transport {transport}.")
    if run.metrics:
        report.metrics(run.metrics, caption="held-out metrics of the run (test/ = source domain, test/target_ = telephone domain)")
    frame = frame.head(256)
    encoded = predictor.encode(frame)
    bad = [e for e in encoded.errors if e]
    if bad:
        report.text(f"{len(bad)} of {frame.height} recordings could not be read and are left out (first: {bad[0]}).")
    if not encoded.valid_rows:
        report.heading("Nothing to explain")
        return report.save(out_path)
    names = [str(v) for v in (frame["speaker_id"] if "speaker_id" in frame.columns else pl.Series(range(frame.height)))
             .gather(encoded.valid_rows).to_list()]
    shown = min(max_examples, len(encoded.valid_rows))
    _shapley_section(report, predictor, encoded, names, shown)
    if "audio" in predictor.module.model.modalities and predictor.acoustic in ("vit", "both"):
        _saliency_section(report, predictor, encoded, names, shown)
    if "audio" in predictor.module.model.modalities and predictor.acoustic in ("features", "both"):
        _markers_section(report, predictor, encoded)
    if "text" in predictor.module.model.modalities:
        _words_section(report, predictor, encoded, names, shown)

    if "label" in frame.columns:
        labels = frame["label"].gather(encoded.valid_rows)
        known = labels.is_not_null().to_numpy()
        if known.any():
            logits = predictor.logit(encoded.batch).double()
            prob = torch.sigmoid(logits / predictor.temperature).numpy()[known]
            raw = torch.sigmoid(logits).numpy()[known]
            label = labels.to_numpy()[known].astype(np.int64)
            report.heading("Calibration")
            scaled = (f"Probabilities are temperature-scaled: T = {predictor.temperature:.3f}, fit on the validation "
                      "speakers by minimising the negative log-likelihood (calibration.json of the run)."
                      if predictor.temperature != 1.0 else
                      "Probabilities are not temperature-scaled (T = 1): the run's validation split has fewer than 100 "
                      "speakers, too few to fit a temperature on (or the run has no calibration.json).")
            report.text(f"{scaled} The diagrams show the probabilities after scaling, then before.")
            domains = frame["domain"].gather(encoded.valid_rows).to_numpy()[known] if "domain" in frame.columns else np.zeros(len(label))
            rows = {}
            for value, name in ((SOURCE, "source (clean)"), (TARGET, "target (telephone)")):
                chosen = domains == value
                if chosen.any():
                    fig = reliability_figure(prob[chosen], label[chosen], f"{name}: {int(chosen.sum())} recordings")
                    report.figure(fig, caption=f"reliability diagram, {name}")
                    fig = reliability_figure(raw[chosen], label[chosen], f"{name}, before scaling (T = 1)")
                    report.figure(fig, caption=f"reliability diagram before temperature scaling, {name}")
                    rows[name] = _metrics_of(prob[chosen], label[chosen])
            report.table({"domain": list(rows), **{k: [r[k] for r in rows.values()] for k in next(iter(rows.values()))}},
                         caption="metrics on the explained recordings")
    return report.save(out_path)


def _metrics_of(prob: np.ndarray, label: np.ndarray) -> dict[str, float]:
    """The runtime's binary classification metrics of some recordings; AUROC is NaN with one class only."""
    metrics = binary_classification_metrics()
    metrics.update(torch.as_tensor(prob, dtype=torch.float32), torch.as_tensor(label, dtype=torch.long))
    values = {name: float(value) for name, value in metrics.compute().items()}
    if label.min() == label.max():
        values["auroc"] = float("nan")
    return values
