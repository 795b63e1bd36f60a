"""Pieces of the dementia report that need no trained run: the reliability curve and the marked transcript."""
from __future__ import annotations

import pytest
import torch

from recipes.dementia_speech.explain import marked_transcript, reliability_curve


def test_reliability_curve_bins():
    curve = reliability_curve(torch.tensor([0.05, 0.15, 0.95, 0.97]), torch.tensor([0, 1, 1, 1]), n_bins=10)
    assert curve.count.tolist() == [1, 1, 0, 0, 0, 0, 0, 0, 0, 2]
    assert curve.observed[9] == 1 and curve.mean_predicted[9] == pytest.approx(0.96)
    assert torch.isnan(curve.observed[3])


def test_pauses_and_fillers_are_marked():
    assert marked_transcript("the boy (..) &uh fell") == "the boy **(..)** **&uh** fell"
