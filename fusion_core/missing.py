"""Training-time modality dropout that removes the label information carried by missingness.

Under missing-not-at-random data (a modality missing more often for one class) any fusion model can learn
"modality absent" as a label signal — MultiModN-style per-sample skipping included (Swamy et al., NeurIPS 2023,
skip the encoder of an absent modality) — and then fails when the missingness pattern shifts. The
:class:`MissingnessBalancer` drops present modalities during training so that, per modality, every label
stratum ends up with the same missing rate: absence then tells the model nothing about the label.
"""
from __future__ import annotations


import torch
from torch import Tensor, nn

__all__ = ["MissingnessBalancer"]


class MissingnessBalancer(nn.Module):
    """Label-aware modality dropout (training only) plus optional label-independent modality dropout.

    For each modality ``m`` and label stratum ``c`` (a class, or any discrete label bin) let ``r_c`` be the missing
    rate and ``r_max`` the largest rate over the strata. A present ``m`` in stratum ``c`` is dropped with
    probability ``q_c = (r_max − r_c) / (1 − r_c)``, so every stratum reaches the missing rate ``r_max``
    (a stratum where ``m`` is always missing makes ``m`` dropped everywhere: only then is absence label-free).
    The optional ``dropout`` then drops each remaining present modality with a label-independent probability
    ``d_m``, giving every stratum the rate ``1 − (1 − r_max)(1 − d_m)``.

    Rates come from :meth:`fit` over the training set. Unfitted, they are estimated on each batch: the expected
    missing rate of every stratum in that batch is then the batch's ``r_max``, so missingness is label-free in
    expectation too, but small batches drop more (a noisy ``r_max`` is biased upwards) and a stratum absent from
    the batch is simply not compared. The fitted rates are not part of ``state_dict``: the balancer acts only in
    training and holds no learned weight, so a model's saved weights (safetensors: tensors only) never depend on
    it; call :meth:`fit` again on the training set when training resumes.

    Call: ``balancer(present {m: Bool (B,)}, strata Long (B,), generator=None) -> {m: Bool (B,)}``. It returns new
    tensors, never modifies its inputs, only turns True into False, and is the identity in eval mode
    (``balancer.eval()``).

    Args:
        dropout: label-independent drop probability in ``[0, 1)``, one for all modalities or a dict per modality
            (modalities not in the dict get 0).
        balance: apply the label-aware balancing (set False for plain modality dropout; ``strata`` may then be None).
    """

    def __init__(self, dropout: float | dict[str, float] = 0.0, balance: bool = True) -> None:
        super().__init__()
        values = dropout.values() if isinstance(dropout, dict) else [dropout]
        for value in values:
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0.0 <= value < 1.0:
                raise ValueError(
                    f"dropout must be a probability in [0, 1) or a dict {{modality: probability}}; got {dropout!r}"
                )
        if isinstance(dropout, dict) and not all(isinstance(k, str) for k in dropout):
            raise ValueError(f"dropout dict keys must be modality names (str); got {list(dropout)!r}")
        self.dropout = dict(dropout) if isinstance(dropout, dict) else float(dropout)
        self.balance = bool(balance)
        self.missing_rates: dict[str, Tensor] | None = None  # {m: (C,) float64}, NaN for a stratum never seen

    # ---------------------------------------------------------------- fitting
    @staticmethod
    def _check(present: dict[str, Tensor], strata: Tensor | None, need_strata: bool) -> int:
        if not isinstance(present, dict) or not present:
            raise ValueError("present must be a non-empty dict {modality: Bool tensor (B,)}")
        batch = None
        for name, mask in present.items():
            if not isinstance(mask, Tensor) or mask.dtype != torch.bool or mask.dim() != 1:
                raise ValueError(
                    f"present[{name!r}] must be a 1-D bool tensor (B,); got "
                    f"{getattr(mask, 'dtype', type(mask))} {tuple(getattr(mask, 'shape', ()))} (use mask.bool())"
                )
            if batch is None:
                batch = mask.shape[0]
            elif mask.shape[0] != batch:
                raise ValueError(f"present[{name!r}] has {mask.shape[0]} samples, another modality has {batch}")
        if strata is None:
            if need_strata:
                raise ValueError("strata is required to balance missingness: pass the labels (Long (B,)), or balance=False")
            return int(batch)
        if not isinstance(strata, Tensor) or strata.dim() != 1 or strata.shape[0] != batch:
            raise ValueError(f"strata must be a 1-D tensor with one label stratum per sample ({batch}); got {strata!r}")
        if strata.dtype.is_floating_point or strata.dtype == torch.bool or strata.dtype.is_complex:
            raise ValueError(f"strata must hold integer stratum ids (use labels.long()); got dtype {strata.dtype}")
        if strata.numel() and int(strata.min()) < 0:
            raise ValueError("strata must be non-negative integer ids (0, 1, ...); remap the labels first")
        return int(batch)

    @staticmethod
    def _rates(present: Tensor, strata: Tensor, num_strata: int) -> Tensor:
        """Missing rate per stratum ``(C,)`` in float64; NaN for a stratum with no sample."""
        counts = torch.bincount(strata, minlength=num_strata).to(torch.float64)
        missing = torch.bincount(strata, weights=(~present).to(torch.float64), minlength=num_strata)
        return torch.where(counts > 0, missing / counts.clamp_min(1.0), torch.full_like(counts, float("nan")))

    @torch.no_grad()
    def fit(self, present: dict[str, Tensor], strata: Tensor) -> "MissingnessBalancer":
        """Measure each modality's missing rate per stratum over a (training) set; returns ``self``."""
        self._check(present, strata, need_strata=True)
        strata = strata.long().cpu()
        num_strata = int(strata.max()) + 1 if strata.numel() else 0
        if num_strata == 0:
            raise ValueError("fit needs at least one sample")
        self.missing_rates = {m: self._rates(p.cpu(), strata, num_strata) for m, p in present.items()}
        return self

    @property
    def fitted(self) -> bool:
        return self.missing_rates is not None

    # ---------------------------------------------------------------- dropping
    def drop_probability(self, name: str, present: Tensor, strata: Tensor) -> Tensor:
        """Per-sample balancing drop probability ``q_c`` for modality ``name``, ``(B,)`` float64."""
        strata_cpu = strata.long().cpu()
        if strata_cpu.numel() == 0:
            return torch.zeros(present.shape, dtype=torch.float64, device=present.device)
        if self.missing_rates is not None:
            if name not in self.missing_rates:
                raise ValueError(f"modality {name!r} was not in the present dict given to fit(); refit with it")
            rates = self.missing_rates[name]  # (C,)
            if int(strata_cpu.max()) >= rates.shape[0] or bool(torch.isnan(rates[strata_cpu]).any()):
                raise ValueError(
                    f"strata {sorted(set(strata_cpu.tolist()))} include ids that fit() never saw; "
                    "fit on a set covering every stratum"
                )
        else:
            rates = self._rates(present.cpu(), strata_cpu, int(strata_cpu.max()) + 1)  # (C,), from this batch
        r_max = rates[~torch.isnan(rates)].max()
        # A stratum already at rate 1 keeps q = 1: then r_max = 1 and the modality goes everywhere.
        q = torch.where(rates < 1.0, (r_max - rates) / (1.0 - rates), torch.ones_like(rates)).clamp(0.0, 1.0)
        return q[strata_cpu].to(present.device)

    def _dropout_for(self, name: str) -> float:
        return self.dropout.get(name, 0.0) if isinstance(self.dropout, dict) else self.dropout

    @torch.no_grad()
    def forward(
        self, present: dict[str, Tensor], strata: Tensor | None = None, generator: torch.Generator | None = None
    ) -> dict[str, Tensor]:
        self._check(present, strata, need_strata=self.balance and self.training)
        if isinstance(self.dropout, dict):
            unknown = sorted(set(self.dropout) - set(present))
            if unknown:
                raise ValueError(f"dropout names modalities {unknown} that are not in present {sorted(present)}")
        if not self.training:
            return dict(present)
        out: dict[str, Tensor] = {}
        for name, mask in present.items():
            keep = torch.ones(mask.shape, dtype=torch.float64, device=mask.device)
            if self.balance:
                keep = keep * (1.0 - self.drop_probability(name, mask, strata))
            keep = keep * (1.0 - self._dropout_for(name))
            device = generator.device if generator is not None else mask.device
            draw = torch.rand(mask.shape, dtype=torch.float64, generator=generator, device=device).to(mask.device)
            out[name] = mask & (draw < keep)
        return out

    def extra_repr(self) -> str:
        return f"dropout={self.dropout!r}, balance={self.balance}, fitted={self.fitted}"
