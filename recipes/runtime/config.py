"""What every recipe's one config has: the base dataclass a vertical's config extends.

Kept apart from :mod:`recipes.runtime.module` so that reading or checking a config needs neither Lightning nor torch.
"""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["RecipeConfig"]


@dataclass(kw_only=True)
class RecipeConfig:
    """What every recipe's config has. A vertical's config extends it with its own fields.

    ``lr``, ``weight_decay``   AdamW over the trainable parameters
    ``modality_dropout``       label-independent drop probability in [0, 1) of a present modality in training, one
                               for all modalities or ``{modality: probability}``
    ``balance_missingness``    equalise each modality's missing rate across label strata in training
                               (:class:`fusion_core.MissingnessBalancer`; the recipe says what a stratum is)
    ``step_loss_weight``       weight of MultiModN's per-step loss when the fusion yields ``steps`` (``sequential``)
    ``subset_table``           evaluate every non-empty subset of the modalities in the test loop
    """

    lr: float = 1e-3
    weight_decay: float = 0.0
    modality_dropout: float | dict[str, float] = 0.0
    balance_missingness: bool = False
    step_loss_weight: float = 0.0
    subset_table: bool = True

    def __post_init__(self) -> None:
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0; got {self.lr}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0; got {self.weight_decay}")
        if self.step_loss_weight < 0:
            raise ValueError(f"step_loss_weight must be >= 0 (0 switches the per-step loss off); got {self.step_loss_weight}")
        rates = self.modality_dropout.values() if isinstance(self.modality_dropout, dict) else [self.modality_dropout]
        if any(not 0.0 <= float(rate) < 1.0 for rate in rates):
            raise ValueError(f"modality_dropout must be a probability in [0, 1) or {{modality: probability}}; "
                             f"got {self.modality_dropout!r}")
