"""Temperature scaling: the fit finds the NLL optimum of hand-made cases with a closed form, keeps rankings, lowers
the ECE of over-confident logits, and round-trips through the run folder."""
from __future__ import annotations

import json
import math

import pytest
import torch

from recipes.runtime.calibration import (
    CALIBRATION_FILE, MIN_CALIBRATION_ROWS, calibrate, calibrated_probability, expected_calibration_error,
    fit_temperature, load_temperature, save_calibration, scaled_nll,
)


def _binary_case(a: float, q: float, n: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    """Logit +a for n rows of which a fraction q is positive, logit −a for n rows of which q is negative: the NLL is
    minimised where sigmoid(a / T) = q, i.e. T* = a / logit(q)."""
    positives = int(q * n)
    logits = torch.cat([torch.full((n,), a), torch.full((n,), -a)])
    labels = torch.cat([torch.ones(positives), torch.zeros(n - positives), torch.zeros(positives), torch.ones(n - positives)])
    return logits, labels


@pytest.mark.parametrize("a,q", [(4.0, 0.75), (1.0, 0.9), (6.0, 0.6)])
def test_binary_temperature_is_the_closed_form_optimum(a, q):
    logits, labels = _binary_case(a, q)
    expected = a / math.log(q / (1 - q))
    temperature = fit_temperature(logits, labels)
    assert temperature == pytest.approx(expected, rel=1e-4)
    # and it is a minimum: the NLL is higher on either side
    best = scaled_nll(logits, labels, temperature)
    assert best < scaled_nll(logits, labels, temperature * 1.05) and best < scaled_nll(logits, labels, temperature / 1.05)
    assert calibrated_probability(logits, temperature)[0].item() == pytest.approx(q, abs=1e-4)


def test_multiclass_temperature_is_the_closed_form_optimum():
    # logits (a, 0, 0), class 0 with frequency q: softmax gives q when a / T = log(2q / (1 − q))
    a, q, n = 3.0, 0.6, 50
    logits = torch.tensor([[a, 0.0, 0.0]]).repeat(n, 1)
    labels = torch.tensor([0] * int(q * n) + [1] * ((n - int(q * n)) // 2) + [2] * ((n - int(q * n)) // 2))
    assert fit_temperature(logits, labels) == pytest.approx(a / math.log(2 * q / (1 - q)), rel=1e-4)


def test_overconfident_logits_get_their_temperature_back_and_keep_their_ranking():
    generator = torch.Generator().manual_seed(0)
    true_logits = torch.randn(4000, generator=generator) * 2
    labels = torch.bernoulli(torch.sigmoid(true_logits), generator=generator)
    logits = 3.0 * true_logits  # three times too confident
    temperature = fit_temperature(logits, labels)
    assert temperature == pytest.approx(3.0, rel=0.1)
    before = expected_calibration_error(calibrated_probability(logits, 1.0), labels)
    after = expected_calibration_error(calibrated_probability(logits, temperature), labels)
    assert after < 0.03 < before
    order = torch.argsort(logits)
    assert torch.equal(torch.argsort(calibrated_probability(logits, temperature)), order)


def test_ece_is_torchmetrics_with_15_equal_width_bins():
    generator = torch.Generator().manual_seed(1)
    probability = torch.rand(500, generator=generator)
    labels = torch.bernoulli(probability.clamp(0.1, 0.9) ** 2, generator=generator).long()
    # by hand: 15 bins [k/15, (k+1)/15), sum over bins of |mean probability − fraction of positives| · bin share
    bins = torch.clamp((probability * 15).long(), max=14)
    by_hand = sum(abs(float(probability[bins == k].mean() - labels[bins == k].double().mean())) * int((bins == k).sum())
                  for k in range(15) if (bins == k).any()) / 500
    assert expected_calibration_error(probability, labels) == pytest.approx(by_hand, abs=1e-6)
    assert expected_calibration_error(probability, labels, n_bins=10) != pytest.approx(by_hand, abs=1e-4)
    # multi-class: confidence against accuracy, what torchmetrics computes
    from torchmetrics.functional.classification import multiclass_calibration_error

    scores = torch.softmax(torch.randn(300, 3, generator=generator) * 2, dim=-1)
    classes = torch.randint(0, 3, (300,), generator=generator)
    assert expected_calibration_error(scores, classes) == pytest.approx(
        float(multiclass_calibration_error(scores, classes, num_classes=3, n_bins=15)), abs=1e-6)


def test_calibrate_fits_on_enough_rows_and_keeps_t_1_on_few(tmp_path):
    assert MIN_CALIBRATION_ROWS == 100
    fitted = calibrate(tmp_path, *_binary_case(4.0, 0.75, n=60))  # 120 rows
    assert fitted.fitted and fitted.temperature == pytest.approx(4.0 / math.log(3.0), rel=1e-4)
    few = calibrate(tmp_path, *_binary_case(4.0, 0.75, n=48))  # 96 rows
    assert not few.fitted and few.temperature == 1.0 and few.ece_after == few.ece_before
    assert json.loads((tmp_path / CALIBRATION_FILE).read_text())["fitted"] is False
    logits, _ = _binary_case(4.0, 0.75, n=60)
    one_class = calibrate(tmp_path, logits, torch.ones(logits.shape[0]))  # 120 rows, all positive: nothing to fit
    assert not one_class.fitted and one_class.temperature == 1.0
    assert load_temperature(tmp_path) == 1.0


def test_perfectly_separated_validation_split_stays_within_bounds():
    logits = torch.tensor([5.0, 6.0, -5.0, -7.0])
    temperature = fit_temperature(logits, torch.tensor([1.0, 1.0, 0.0, 0.0]))
    assert 0.01 <= temperature <= 100.0 and math.isfinite(temperature)


def test_save_and_load_round_trip(tmp_path):
    logits, labels = _binary_case(4.0, 0.75)
    assert load_temperature(tmp_path) == 1.0  # a run without the file is not scaled
    temperature = fit_temperature(logits, labels)
    saved = save_calibration(tmp_path, temperature, logits, labels)
    written = json.loads((tmp_path / CALIBRATION_FILE).read_text())
    assert written["temperature"] == pytest.approx(temperature) and written["rows"] == 80
    assert saved.ece_after < saved.ece_before
    assert load_temperature(tmp_path) == pytest.approx(temperature)


@pytest.mark.parametrize("logits,labels,match", [
    (torch.tensor([]), torch.tensor([]), "no validation rows"),
    (torch.tensor([1.0, float("nan")]), torch.tensor([1.0, 0.0]), "NaN or inf"),
    (torch.zeros(3, 2, 2), torch.zeros(3), "must be"),
    (torch.zeros(3), torch.zeros(4), "must be"),
])
def test_bad_inputs_raise(logits, labels, match):
    with pytest.raises(ValueError, match=match):
        fit_temperature(logits, labels)


def test_a_corrupt_temperature_file_raises(tmp_path):
    (tmp_path / CALIBRATION_FILE).write_text(json.dumps({"temperature": -1.0}))
    with pytest.raises(ValueError, match="not a positive number"):
        load_temperature(tmp_path)
