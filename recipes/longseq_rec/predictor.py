"""What the recommendation recipe scores and explains with: a run's trained module and its vocabulary.

Its own module so that ``recipe.py`` (scoring) and ``explain.py`` (the report) can both use it without
importing each other.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import polars as pl
import torch

from recipes.runtime.calibration import calibrated_probability

if TYPE_CHECKING:
    from recipes.longseq_rec.encoding import EncodedRows, RecVocab
    from recipes.longseq_rec.model import RecOutput
    from recipes.longseq_rec.module import RecModule

__all__ = ["RecPredictor", "BEHAVIOURS_PER_STEP", "ROWS_PER_PASS"]

# Behaviours held in memory at once while scoring or explaining (rows × max_history): bounds the
# (rows, L, D) embedding tensors of the search stage to a few hundred MB whatever the history length.
BEHAVIOURS_PER_STEP = 2**20
# Rows of one scoring pass (fewer when the histories are long enough to hit BEHAVIOURS_PER_STEP): per-row work is
# small at L = 10,000 (the table path), so a pass of one row was mostly call overhead (1,000 vs 4,800 rows/s of
# forward with 8 rows on one core).
ROWS_PER_PASS = 8


class RecPredictor(NamedTuple):
    """What ``LongSeqRecipe.score_frame`` scores with: the trained module, the run's vocabulary and its temperature
    (``calibration.json``, :mod:`recipes.runtime.calibration`; 1.0 when not fitted), which divides every logit."""

    module: "RecModule"
    vocab: "RecVocab"
    temperature: float = 1.0

    @property
    def max_history(self) -> int:
        return int(self.vocab.settings.get("max_history", 200))

    @property
    def num_time_buckets(self) -> int:
        return int(self.module.config.num_time_buckets)

    @property
    def rows_per_step(self) -> int:
        return max(1, min(512, BEHAVIOURS_PER_STEP // self.max_history))

    def encode(self, frame: pl.DataFrame) -> "EncodedRows":
        from recipes.longseq_rec.encoding import encode_scoring_frame

        return encode_scoring_frame(self.vocab, frame, self.max_history, self.num_time_buckets)

    @torch.no_grad()
    def forward(self, batch: dict[str, torch.Tensor], present: dict[str, torch.Tensor] | None = None) -> "RecOutput":
        """The module's :class:`RecOutput` on ``batch``, computed ``rows_per_step`` rows at a time."""
        from recipes.longseq_rec.model import RecOutput

        size = batch["target_item"].shape[0]
        outs = []
        for start in range(0, size, self.rows_per_step):
            rows = slice(start, start + self.rows_per_step)
            part = {k: v[rows] for k, v in batch.items()}
            outs.append(self.module(part, None if present is None else {g: m[rows] for g, m in present.items()}))
        return RecOutput(*(torch.cat(parts) for parts in zip(*outs)))

    def probability(self, batch: dict[str, torch.Tensor], present: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        return calibrated_probability(self.forward(batch, present).logit, self.temperature)

    @property
    def rows_per_pass(self) -> int:
        return min(ROWS_PER_PASS, self.rows_per_step)

    @torch.no_grad()
    def row_probabilities(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """``(B,)`` click probabilities, ``rows_per_pass`` rows per forward pass with the last pass padded to that
        many rows (copies of its first row), so a row's score has the same bits whatever rows share its chunk: every
        pass has the same shapes, and a matrix product's rounding depends on its shapes, not on the other rows'
        values or the row's place (a pass of another size can round differently; tests/recipes/test_recipe_contract.py
        scores a file in chunks of 1, 7 and all rows, forwards and reversed). Scoring uses this."""
        size, step = batch["target_item"].shape[0], self.rows_per_pass
        logits = []
        for start in range(0, size, step):
            rows = torch.arange(start, min(start + step, size))
            padded = torch.cat([rows, rows[:1].expand(step - rows.numel())])  # (step,)
            logits.append(self.module({k: v[padded] for k, v in batch.items()}).logit[: rows.numel()])
        return calibrated_probability(torch.cat(logits), self.temperature) if logits else torch.zeros(0)
