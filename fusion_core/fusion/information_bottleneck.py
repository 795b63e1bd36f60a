"""Information-bottleneck fusion: ITHP.

Xiao et al., "Neuro-Inspired Information-Theoretic Hierarchical Perception for Multimodal Learning" (ICLR 2024),
reference code ``joshuaxiao98/ITHP`` (``ITHP.py``). The modalities form a chain, prime first. The prime modality
is compressed into a variational latent ``B0 ~ N(μ0, σ0²)`` that must predict the next modality; ``B1`` is drawn
from ``B0`` and must predict the one after, and so on. Only the prime modality is an *input*: the others shape
the latents through the prediction terms of the loss, so at inference the output depends on the prime alone.

Letters: B batch, L latent width, D_m width of modality m, D fused width.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from fusion_core.batch import FusionOutput, PreparedInputs, masked_mean
from fusion_core.fusion.base import FusionOperator
from fusion_core.fusion.registry import register_fusion
from fusion_core.layers.mlp import MLP
from fusion_core.losses.bottleneck import gaussian_kl

__all__ = ["InformationBottleneckFusion"]

_LOGVAR_RANGE = (-30.0, 30.0)  # keeps exp(logvar) finite in float32 whatever the inputs


def _masked_average(values: Tensor, keep: Tensor) -> Tensor:
    """Mean of ``values (B,)`` over samples where ``keep (B,)`` is True; 0 when none is."""
    total = torch.where(keep, values, torch.zeros((), dtype=values.dtype, device=values.device)).sum()
    return total / keep.sum().clamp_min(1).to(values.dtype)


@register_fusion("information_bottleneck")
class InformationBottleneckFusion(FusionOperator):
    """ITHP hierarchical information-bottleneck fusion.

    With the chain ``order = [m0, m1, ..., m_{M-1}]`` (prime ``m0``) and pooled features ``x_i = masked_mean(m_i)``:

    - ``B0 ~ N(μ0, σ0²)`` with ``(μ0, log σ0²) = enc0(x0)``; ``B_k ~ N(μ_k, σ_k²)`` from ``enc_k(B_{k-1})``.
      Samples are reparameterised (``μ + ε·σ``) in train mode; eval mode uses ``μ``.
    - ``B_k`` predicts ``x_{k+1}`` through ``dec_k``; ``pred_k`` is the squared error averaged over features and
      over the samples where ``m_{k+1}`` is present (a sample lacking it adds nothing to the mean).
    - ``KL_k`` is KL(N(μ_k, σ_k²) ‖ N(0, I)) averaged over latent dims and samples, as the reference code does.
    - ``aux_loss = 2/(β+γ) · Σ_k λ^k (KL_k + w_k · pred_k)`` with ``w_0 = β`` and ``w_k = γ`` for ``k ≥ 1``.
      For three modalities this is the paper's ``2/(β+γ)·(KL0 + β·pred0 + λ·(KL1 + γ·pred1))``; past three,
      each further level keeps weight γ on its prediction and is discounted by one more factor λ, which is how
      the paper's recursion ``IB_total = IB0 + λ·IB1`` nests when applied level by level. There are
      ``max(M - 1, 1)`` latents: with a single modality ``B0`` still exists and the loss is ``2/(β+γ)·KL0``.
    - ``pooled = Linear([B_last ; Linear(x0)])``: the last latent fused with the projected prime modality.

    Where the prime modality is absent for a sample, nothing is known to compress: every latent of that sample is
    the prior mean 0 (in train and eval mode alike, so it is never sampled), its KL and prediction terms are left
    out of the means, and its ``pooled`` is the model's learned constant "no prime" answer (finite).

    Prediction targets are detached by default (``detach_targets``) so an upstream trainable encoder cannot make
    its features trivially predictable by shrinking them; ITHP's targets are fixed input features.

    Shapes: ``tokens {m: (B, N_m, D_m)}`` → ``pooled (B, dim)``, ``aux_loss ()``, ``tokens None``, ``steps None``.
    """

    def __init__(
        self,
        modality_dims: dict[str, int],
        dim: int,
        order: list[str] | None = None,
        beta: float = 8.0,
        gamma: float = 32.0,
        lam: float = 0.3,
        latent_dim: int | None = None,
        hidden_dim: int | None = None,
        dropout: float = 0.0,
        detach_targets: bool = True,
    ) -> None:
        super().__init__(modality_dims, dim)
        order = self.resolve_order(order, " (prime first)")
        for name, value in (("beta", beta), ("gamma", gamma), ("lam", lam)):
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{name} must be a non-negative number (ITHP default beta=8, gamma=32, lam=0.3); got {value!r}")
        if beta + gamma <= 0:
            raise ValueError("beta + gamma must be positive: the loss is scaled by 2/(beta+gamma)")
        latent_dim = dim if latent_dim is None else latent_dim
        hidden_dim = dim if hidden_dim is None else hidden_dim
        for name, value in (("latent_dim", latent_dim), ("hidden_dim", hidden_dim)):
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name} must be a positive int (or None for dim={dim}); got {value!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1); got {dropout!r}")

        self.order = list(order)
        self.beta, self.gamma, self.lam = float(beta), float(gamma), float(lam)
        self.latent_dim = latent_dim
        self.detach_targets = detach_targets
        prime_dim = self.modality_dims[self.order[0]]
        num_latents = max(len(self.order) - 1, 1)
        # enc_0 reads the prime features; enc_k (k ≥ 1) reads B_{k-1}. Each outputs [μ ; log σ²].
        self.latent_encoders = nn.ModuleList(
            MLP(prime_dim if k == 0 else latent_dim, [hidden_dim], 2 * latent_dim, dropout=dropout)
            for k in range(num_latents)
        )
        # dec_k: B_k → pooled features of order[k + 1].
        self.predictors = nn.ModuleList(
            MLP(latent_dim, [hidden_dim], self.modality_dims[target], dropout=dropout) for target in self.order[1:]
        )
        self.prime_proj = nn.Linear(prime_dim, dim)
        self.out = nn.Linear(latent_dim + dim, dim)

    def prediction_weight(self, level: int) -> float:
        """Weight of ``pred_level`` inside its level: β for the first prediction, γ after."""
        return self.beta if level == 0 else self.gamma

    def fuse(self, inputs: PreparedInputs) -> FusionOutput:
        pooled = {m: masked_mean(inputs.tokens[m], inputs.mask[m]) for m in self.order}  # {m: (B, D_m)}
        prime = pooled[self.order[0]]  # (B, D_prime), zeros where the prime is absent
        has_prime = inputs.present[self.order[0]]  # (B,)
        zero = torch.zeros((), dtype=prime.dtype, device=prime.device)

        aux = self.zero_loss(prime)
        latent = prime
        for level, encoder in enumerate(self.latent_encoders):
            mu, logvar = encoder(latent).chunk(2, dim=-1)  # (B, L) each
            logvar = logvar.clamp(*_LOGVAR_RANGE)
            if self.training:
                sample = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
            else:
                sample = mu
            latent = torch.where(has_prime[:, None], sample, zero)  # (B, L); prior mean without a prime
            kl = gaussian_kl(mu, logvar) / self.latent_dim  # (B,), mean over latent dims as ITHP's kl_loss
            term = _masked_average(kl, has_prime)
            if level < len(self.predictors):
                target_name = self.order[level + 1]
                target = pooled[target_name]  # (B, D_target)
                if self.detach_targets:
                    target = target.detach()
                error = (self.predictors[level](latent) - target).pow(2).mean(dim=-1)  # (B,)
                keep = has_prime & inputs.present[target_name]
                term = term + self.prediction_weight(level) * _masked_average(error, keep)
            aux = aux + self.lam**level * term
        aux = aux * (2.0 / (self.beta + self.gamma))

        fused = self.out(torch.cat([latent, self.prime_proj(prime)], dim=-1))  # (B, D)
        return FusionOutput(pooled=fused, tokens=None, aux_loss=aux, steps=None)
