"""Temperature scaling (Guo et al., "On Calibration of Modern Neural Networks", ICML 2017) for any classification recipe.

One scalar ``T > 0`` divides the logits; it is fit on the validation split by minimising the negative log-likelihood
with L-BFGS (over ``log T``, so ``T`` stays positive), which leaves every prediction's ranking — and so accuracy and
AUROC — unchanged and only moves the probabilities. A binary recipe gives logits ``(N,)`` and 0/1 labels; a
multi-class one logits ``(N, C)`` and class indices.

A recipe opts in with two calls (the dementia recipe is the worked example):

1. at the end of training, in ``Recipe.on_train_end(run, datamodule)``::

       logits, labels = collect_logits(run.load_module(), datamodule.val_dataloader(), logits_of)
       calibrate(run.path, logits, labels)  # fit_temperature + save_calibration, T = 1 below 100 rows

   where ``logits_of(module, batch) -> (logits, labels)`` runs the model on one validation batch;
2. at scoring, in ``load_predictor``: ``temperature = load_temperature(run.path)`` (1.0 for a run without the file)
   and ``probability = calibrated_probability(logits, temperature)``.

``calibration.json`` in the run folder holds the temperature and the validation ECE before and after scaling.
"""
from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from recipes.runtime.files import atomic_write_text

__all__ = ["CALIBRATION_FILE", "Calibration", "MIN_CALIBRATION_ROWS", "calibrate", "calibrated_probability",
           "collect_logits", "expected_calibration_error", "fit_temperature", "load_temperature", "save_calibration",
           "scaled_nll"]

CALIBRATION_FILE = "calibration.json"
#: the temperature is kept in [1/100, 100]: a validation split the model separates perfectly drives the NLL
#: optimum towards T → 0, which would turn every probability into 0 or 1
MIN_TEMPERATURE, MAX_TEMPERATURE = 0.01, 100.0
#: :func:`calibrate` fits a temperature on at least this many validation rows, else keeps T = 1
MIN_CALIBRATION_ROWS = 100


class Calibration(NamedTuple):
    """What ``calibration.json`` holds: the temperature and the validation split's ECE before and after scaling."""

    temperature: float
    ece_before: float
    ece_after: float
    rows: int
    fitted: bool = True  # False: fewer than the minimum validation rows, so T stays 1 (see :func:`calibrate`)


def _check(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    logits, labels = torch.as_tensor(logits).detach().double(), torch.as_tensor(labels).detach()
    if logits.dim() not in (1, 2) or logits.shape[0] != labels.shape[0] or labels.dim() != 1:
        raise ValueError(f"logits must be (N,) or (N, C) and labels (N,); got {tuple(logits.shape)} and "
                         f"{tuple(labels.shape)}")
    if logits.shape[0] == 0:
        raise ValueError("no validation rows to fit a temperature on; give the run a validation split")
    if not torch.isfinite(logits).all():
        raise ValueError("the validation logits hold NaN or inf; the model is broken, so no temperature is fitted")
    return logits, labels


def scaled_nll(logits: Tensor, labels: Tensor, temperature: float | Tensor) -> Tensor:
    """Mean negative log-likelihood of ``labels`` under ``logits / temperature`` (binary or multi-class)."""
    logits, labels = _check(logits, labels)
    scaled = logits / torch.as_tensor(temperature, dtype=logits.dtype)
    if logits.dim() == 1:
        return F.binary_cross_entropy_with_logits(scaled, labels.double())
    return F.cross_entropy(scaled, labels.long())


def fit_temperature(logits: Tensor, labels: Tensor, max_iter: int = 100) -> float:
    """The temperature minimising :func:`scaled_nll` on ``(logits, labels)``, by L-BFGS over ``log T`` from ``T = 1``,
    clamped to [0.01, 100]."""
    logits, labels = _check(logits, labels)
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.5, max_iter=max_iter, tolerance_grad=1e-10,
                                  tolerance_change=1e-12, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        optimizer.zero_grad()
        loss = scaled_nll(logits, labels, log_t.exp())
        loss.backward()
        return loss

    optimizer.step(closure)
    temperature = float(log_t.detach().exp())
    if not math.isfinite(temperature):
        return 1.0
    return min(max(temperature, MIN_TEMPERATURE), MAX_TEMPERATURE)


def calibrated_probability(logits: Tensor, temperature: float) -> Tensor:
    """``sigmoid(logits / T)`` for ``(N,)`` logits, ``softmax(logits / T)`` over the last axis for ``(N, C)``."""
    scaled = logits / temperature
    return torch.sigmoid(scaled) if scaled.dim() == 1 else torch.softmax(scaled, dim=-1)


def expected_calibration_error(probability: Tensor, labels: Tensor, n_bins: int = 15) -> float:
    """ECE over ``n_bins`` equal-width bins, L1 — torchmetrics' ``binary_calibration_error`` (for probabilities
    ``(N,)`` of class 1: the gap between the mean probability and the fraction of positives per bin) or
    ``multiclass_calibration_error`` (for class probabilities ``(N, C)``: between confidence and accuracy), with
    torchmetrics' default of 15 bins."""
    from torchmetrics.functional.classification import binary_calibration_error, multiclass_calibration_error

    probability = torch.as_tensor(probability).detach().double()
    labels = torch.as_tensor(labels).detach().long()
    if probability.dim() == 1:
        return float(binary_calibration_error(probability, labels, n_bins=n_bins, norm="l1"))
    return float(multiclass_calibration_error(probability, labels, num_classes=probability.shape[-1], n_bins=n_bins,
                                              norm="l1"))


@torch.no_grad()
def collect_logits(module: torch.nn.Module, batches: Iterable[Any],
                   logits_of: Callable[[Any, Any], tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
    """Concatenated ``logits_of(module, batch)`` over ``batches`` (a validation loader), with the module in eval
    mode: ``(logits, labels)``."""
    was_training = module.training
    module.eval()
    try:
        pairs = [logits_of(module, batch) for batch in batches]
    finally:
        module.train(was_training)
    if not pairs:
        raise ValueError("the validation loader gave no batch; a temperature needs validation rows")
    return torch.cat([p[0].detach().cpu() for p in pairs]), torch.cat([p[1].detach().cpu() for p in pairs])


def calibrate(run_dir: str | Path, logits: Tensor, labels: Tensor, *,
              min_rows: int = MIN_CALIBRATION_ROWS) -> Calibration:
    """Fit the temperature on the validation ``(logits, labels)`` and save it (:func:`save_calibration`) — when there
    are at least ``min_rows`` rows. With fewer, T stays 1 (``"fitted": false``): a temperature fitted on a few dozen
    rows is mostly noise (for a calibrated model, the middle 90% of fits span 0.11–2.1 on 16 rows, 0.61–1.5 on 64,
    0.85–1.2 on 320), and it moves every probability of the run. Labels of one class only keep T = 1 too: the NLL
    then falls without bound as T shrinks (or grows), so the "fit" would be a bound, not a temperature."""
    logits, labels = _check(logits, labels)
    enough = labels.shape[0] >= min_rows and labels.unique().numel() > 1
    return save_calibration(run_dir, fit_temperature(logits, labels) if enough else 1.0, logits, labels, fitted=enough)


def save_calibration(run_dir: str | Path, temperature: float, logits: Tensor, labels: Tensor, *,
                     fitted: bool = True) -> Calibration:
    """Write ``calibration.json`` into ``run_dir``: the temperature and the ECE of ``(logits, labels)`` (the split it
    was fit on) before and after scaling (``fitted=False``: the temperature was not fitted). Returns what was
    written."""
    calibration = Calibration(
        temperature=float(temperature),
        ece_before=round(expected_calibration_error(calibrated_probability(logits.double(), 1.0), labels), 6),
        ece_after=round(expected_calibration_error(calibrated_probability(logits.double(), temperature), labels), 6),
        rows=int(labels.shape[0]),
        fitted=bool(fitted),
    )
    atomic_write_text(Path(run_dir) / CALIBRATION_FILE, json.dumps(calibration._asdict(), indent=2) + "\n")
    return calibration


def load_temperature(run_dir: str | Path) -> float:
    """The run's temperature, 1.0 (no scaling) when it has no ``calibration.json``."""
    path = Path(run_dir) / CALIBRATION_FILE
    if not path.is_file():
        return 1.0
    temperature = float(json.loads(path.read_text())["temperature"])
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"{path}: temperature {temperature} is not a positive number; delete the file or fit it again")
    return temperature
