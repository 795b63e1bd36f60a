"""Contrastive alignment of paired embeddings: symmetric InfoNCE with missing modalities.

- :func:`info_nce` — CLIP's symmetric InfoNCE (Radford et al., 2021, "Learning Transferable Visual Models
  From Natural Language Supervision", Fig. 3 pseudo-code; the InfoNCE bound is van den Oord et al., 2018).
- :class:`MultiAnchorInfoNCE` — a sum of pairwise InfoNCE terms sharing one learnable temperature. With
  ``pairs=[("report", "xray"), ("report", "ecg")]`` it is MoRE's objective, where the report is the anchor.
- ``groups``: optional semantic positives. Rows with the same group key (say, reports that state the same findings)
  are all matches of each other, and the target of a row is uniform over its group, as in the multi-positive
  contrastive losses of SupCon (Khosla et al., 2020) and MedCLIP's semantic matching (Wang et al., 2022), which
  remove the false negatives that identical "normal" reports of different patients otherwise create.
- ``gather_distributed`` (default on): under ``torch.distributed`` with more than one process, the loss is computed
  over the global batch, as open_clip's ``gather_features`` (``local_loss=False``, ``gather_with_grad=True``) and
  TorchMultimodal's ``contrastive_loss_with_temperature`` do: every rank all-gathers the embeddings, ``present`` masks
  and group keys, so each rank's rows meet every other rank's rows as negatives, and every rank gets the same loss.
  The embeddings' all-gather has a backward that sums the gradient every rank's copy of the loss sends to a row and
  returns it to the rank that owns the row; after DDP averages parameter gradients over the ``W`` ranks, they equal
  one process's gradient of the loss on the whole batch. Every rank must call the loss (and ``backward``) at the same
  points, with ``mask``/``present``/``groups`` given in the same form; inputs that are already global (outputs
  gathered at epoch end) need ``gather_distributed=False``, or their rows are counted ``W`` times.
- :func:`retrieval_recall_at_k` — cross-modal retrieval recall@k for benchmarks.
- :func:`retrieval_recall_ceiling` — the best recall@k any model can reach when groups of pairs are
  indistinguishable (identical reports of different patients), to read recall@k against.

Letters: ``B`` batch (this rank's rows; ``sum_r B_r`` after the gather), ``D`` embedding width, ``n`` rows present on
both sides, ``M`` modalities, ``K`` pairs with group keys, ``W`` processes.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["ContrastiveOutput", "info_nce", "MultiAnchorInfoNCE", "retrieval_recall_at_k", "retrieval_recall_ceiling"]


class ContrastiveOutput(NamedTuple):
    """What :class:`MultiAnchorInfoNCE` returns.

    loss:        scalar, the sum of the pairwise symmetric InfoNCE terms.
    per_pair:    ``{"anchor-other": scalar}``, the terms of ``loss`` (same graph), for logging.
    logit_scale: scalar ``1 / T`` actually used (after clamping).
    """

    loss: Tensor
    per_pair: dict[str, Tensor]
    logit_scale: Tensor


def _check_pair(a: Tensor, b: Tensor, mask: Tensor | None) -> None:
    if a.dim() != 2 or b.dim() != 2 or a.shape != b.shape:
        raise ValueError(
            f"info_nce needs two (B, D) tensors of the same shape; got {tuple(a.shape)} and {tuple(b.shape)} "
            "(project both modalities to the same width first)"
        )
    if mask is not None and mask.shape != (a.shape[0],):
        raise ValueError(f"mask has shape {tuple(mask.shape)}; expected ({a.shape[0]},), one flag per row")


def _check_groups(groups: Tensor | None, size: int) -> None:
    if groups is not None and (groups.dim() != 1 or groups.shape[0] != size or groups.is_floating_point()):
        raise ValueError(f"groups must be a ({size},) integer tensor of group keys, one per row; got "
                         f"{groups.dtype} of shape {tuple(groups.shape)}")


def _world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


class _AllGatherWithGrad(torch.autograd.Function):
    """``(B, ...)`` from each rank → ``(W, B, ...)``, rank ``r``'s tensor at index ``r``.

    Every rank computes the same loss from the gathered rows, so the gradient of a row is the sum of what each rank's
    copy of the loss sends it: backward all-reduces (sums) the ``(W, B, ...)`` gradient and keeps this rank's slice,
    as the ``GatherLayer`` of SimCLR-style code and ``torch.distributed.nn.functional.all_gather`` (deprecated in
    torch 2.13 for a private module) do. Backward is a collective too: every rank must call ``backward``.
    """

    @staticmethod
    def forward(ctx, tensor: Tensor) -> Tensor:  # type: ignore[override]
        parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, tensor.contiguous())
        ctx.rank = dist.get_rank()
        return torch.stack(parts)  # (W, B, ...)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        summed = grad.clone(memory_format=torch.contiguous_format)  # the incoming buffer is not ours to overwrite
        dist.all_reduce(summed)
        return summed[ctx.rank]


def _gather_rows(*tensors: Tensor) -> list[Tensor]:
    """Each ``(B_r, ...)`` tensor concatenated over the ranks in rank order: ``(sum_r B_r, ...)``.

    All tensors share this rank's ``B_r``; ranks may hold different ``B_r`` (a short last batch), so rows are padded
    to the largest before the all-gather and the padding is cut off after. A tensor that requires grad keeps it for
    this rank's rows (see :class:`_AllGatherWithGrad`). Every rank must call this with the same number of tensors, in
    the same order, of the same dtypes.
    """
    world = dist.get_world_size()
    rows = tensors[0].shape[0]
    count = torch.tensor([rows], dtype=torch.int64, device=tensors[0].device)
    counts = [torch.empty_like(count) for _ in range(world)]
    dist.all_gather(counts, count)
    sizes = [int(c) for c in counts]
    longest = max(sizes)
    gathered = []
    for tensor in tensors:
        is_bool = tensor.dtype == torch.bool
        local = tensor.to(torch.uint8) if is_bool else tensor  # not every backend all-gathers bool
        if longest > rows:
            local = torch.cat([local, local.new_zeros((longest - rows, *local.shape[1:]))])
        if local.requires_grad and torch.is_grad_enabled():
            stacked = _AllGatherWithGrad.apply(local)  # (W, longest, ...)
        else:
            parts = [torch.empty_like(local) for _ in range(world)]
            dist.all_gather(parts, local.contiguous())
            stacked = torch.stack(parts)
        out = torch.cat([stacked[r, :size] for r, size in enumerate(sizes)])
        gathered.append(out.bool() if is_bool else out)
    return gathered


def _info_nce_scaled(a: Tensor, b: Tensor, logit_scale: Tensor | float, mask: Tensor | None,
                     groups: Tensor | None = None) -> Tensor:
    """Symmetric InfoNCE on ``logit_scale · cos(a_i, b_j)``; ``mask (B,)`` keeps rows present on both sides;
    ``groups (B,)`` makes rows with equal keys positives of each other."""
    if mask is not None:
        keep = mask.bool()
        # Boolean indexing drops absent rows from both the logit rows and columns, so their values
        # (padding, NaN) never enter the loss or its gradient.
        a, b = a[keep], b[keep]  # (n, D)
        groups = groups[keep] if groups is not None else None
    n = a.shape[0]
    if n < 2:
        # One pair has no negatives: the loss is undefined, so return a zero that keeps the graph connected
        # (callers may sum it with other terms and call backward).
        zero = (a.sum() + b.sum()) * 0.0
        if isinstance(logit_scale, Tensor):
            zero = zero + logit_scale * 0.0
        return zero
    logits = logit_scale * (F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T)  # (n, n)
    if groups is None:
        labels = torch.arange(n, device=a.device)
        return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))
    positives = (groups[:, None] == groups[None, :]).to(logits.dtype)  # (n, n), symmetric, diagonal 1
    targets = positives / positives.sum(dim=1, keepdim=True)  # each row uniform over its group
    return 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets))


def info_nce(a: Tensor, b: Tensor, temperature: float | Tensor = 0.07, mask: Tensor | None = None,
             groups: Tensor | None = None, gather_distributed: bool = True) -> Tensor:
    """Symmetric InfoNCE (CLIP): mean of the a→b and b→a cross-entropies over cosine-similarity logits.

    Args:
        a: ``(B, D)`` embeddings of one modality; row ``i`` is paired with row ``i`` of ``b``.
        b: ``(B, D)`` embeddings of the other modality.
        temperature: ``T > 0``; logits are ``normalize(a) @ normalize(b).T / T``. A tensor keeps its gradient.
        mask: optional ``(B,)`` bool, True where the pair is present on both sides. Other rows are removed
            from the logit rows and columns (they are neither positives nor negatives).
        groups: optional ``(B,)`` integer keys; rows with equal keys are positives of each other (the target of a
            row is uniform over its group). Distinct keys for every row give the plain loss. Keys are compared across
            ranks when gathering, so they must mean the same on every rank (dataset-level ids, not batch positions).
        gather_distributed: when ``torch.distributed`` is initialised with more than one process, all-gather ``a``,
            ``b``, ``mask`` and ``groups`` from every rank (gradients flow back to each rank's own rows) and return the
            loss over the global batch, the same on every rank. False: the loss over this rank's rows only. Without
            ``torch.distributed`` (or with one process) both give the same result.

    Returns:
        Scalar loss. With fewer than two valid rows there are no negatives and the loss is a zero that
        still has a gradient path (to ``a``, ``b`` and a tensor ``temperature``).
    """
    _check_pair(a, b, mask)
    _check_groups(groups, a.shape[0])
    if isinstance(temperature, Tensor):
        if temperature.numel() != 1:
            raise ValueError(f"temperature must be a scalar; got shape {tuple(temperature.shape)}")
        scale: Tensor | float = 1.0 / temperature.reshape(())
    else:
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0; got {temperature}")
        scale = 1.0 / temperature
    if gather_distributed and _world_size() > 1:
        gathered = iter(_gather_rows(*(t for t in (a, b, mask, groups) if t is not None)))
        a, b = next(gathered), next(gathered)
        mask = next(gathered) if mask is not None else None
        groups = next(gathered) if groups is not None else None
    return _info_nce_scaled(a, b, scale, mask, groups)


class MultiAnchorInfoNCE(nn.Module):
    """Sum of symmetric InfoNCE terms over modality pairs with one shared temperature.

    MoRE aligns X-ray and ECG to the report: ``pairs=[("report", "xray"), ("report", "ecg")]`` gives
    ``L = InfoNCE(report, xray) + InfoNCE(report, ecg)``. A pair's term uses only samples where both
    modalities are present. The temperature is stored as CLIP's ``logit_scale = log(1/T)`` and its
    exponential is clamped at ``max_logit_scale`` (100 in CLIP) so it cannot collapse to a near-zero ``T``.

    Args:
        pairs: ``[(anchor, other), ...]`` modality names; each pair once, two different names.
        temperature: initial ``T`` (CLIP: 0.07).
        learnable: train ``logit_scale`` (a parameter) or keep it fixed (a buffer).
        max_logit_scale: upper clamp on ``1 / T``.
        gather_distributed: when ``torch.distributed`` is initialised with more than one process (DDP), all-gather
            the embeddings, ``present`` masks and group keys from every rank and compute each term over the global
            batch; gradients flow back to each rank's own rows, so after DDP's gradient averaging training matches
            one process on the global batch. Every rank must call the loss. False: each rank's loss covers only its
            own rows (fewer negatives, a loss that differs between ranks).
    """

    def __init__(
        self,
        pairs: Sequence[tuple[str, str]],
        temperature: float = 0.07,
        learnable: bool = True,
        max_logit_scale: float = 100.0,
        gather_distributed: bool = True,
    ) -> None:
        super().__init__()
        pairs = [tuple(p) for p in pairs]
        if not pairs:
            raise ValueError("pairs is empty: pass at least one (anchor, other) pair, e.g. [('report', 'xray')]")
        for pair in pairs:
            if len(pair) != 2 or not all(isinstance(name, str) for name in pair) or pair[0] == pair[1]:
                raise ValueError(f"each pair must be two different modality names; got {pair!r}")
        keys = [f"{x}-{y}" for x, y in pairs]
        if len(set(keys)) != len(keys):
            raise ValueError(f"pairs {pairs} repeat a pair; list each (anchor, other) once")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0; got {temperature}")
        if not max_logit_scale > 0:
            raise ValueError(f"max_logit_scale must be > 0; got {max_logit_scale}")
        self.pairs: list[tuple[str, str]] = pairs  # type: ignore[assignment]
        self.max_logit_scale = float(max_logit_scale)
        self.gather_distributed = bool(gather_distributed)
        init = torch.tensor(math.log(1.0 / temperature))
        if learnable:
            self.logit_scale = nn.Parameter(init)
        else:
            self.register_buffer("logit_scale", init)

    @property
    def modalities(self) -> list[str]:
        """Sorted names of every modality some pair uses."""
        return sorted({name for pair in self.pairs for name in pair})

    def forward(
        self, embeddings: dict[str, Tensor], present: dict[str, Tensor] | None = None,
        groups: Tensor | Mapping[str, Tensor] | None = None,
    ) -> ContrastiveOutput:
        """Args:
            embeddings: ``{modality: (B, D)}`` for every modality in ``pairs`` (all the same ``D``).
            present: optional ``{modality: (B,)}`` bool; a modality not listed is present for every sample.
            groups: optional ``(B,)`` integer keys of semantic positives (see :func:`info_nce`) for every pair, or
                ``{"anchor-other": (B,)}`` per pair (a pair not listed uses the plain loss): what makes two samples
                interchangeable can differ per modality (two reports can describe the same ECG but different images).

        With ``gather_distributed`` under more than one process, ``B`` is this rank's rows and the loss covers the
        rows of every rank (see the class docstring).
        """
        present = present or {}
        self._check_inputs(embeddings, present, groups)
        if self.gather_distributed and _world_size() > 1:
            embeddings, present, groups = self._gather(embeddings, present, groups)
        scale = self.logit_scale.exp().clamp(max=self.max_logit_scale)
        per_pair: dict[str, Tensor] = {}
        for x, y in self.pairs:
            a, b = embeddings[x], embeddings[y]
            both = None
            if x in present or y in present:
                ones = torch.ones(a.shape[0], dtype=torch.bool, device=a.device)
                both = present.get(x, ones).bool() & present.get(y, ones).bool()
            pair_groups = groups.get(f"{x}-{y}") if isinstance(groups, Mapping) else groups
            per_pair[f"{x}-{y}"] = _info_nce_scaled(a, b, scale, both, pair_groups)
        loss = torch.stack(list(per_pair.values())).sum()
        return ContrastiveOutput(loss, per_pair, scale)

    def _check_inputs(self, embeddings: Mapping[str, Tensor], present: Mapping[str, Tensor],
                      groups: Tensor | Mapping[str, Tensor] | None) -> None:
        """Raise ``ValueError`` on this rank's inputs before any collective, so a bad call fails instead of hanging."""
        missing = [m for m in self.modalities if m not in embeddings]
        if missing:
            raise ValueError(
                f"embeddings lacks {missing}; pass a (B, D) tensor for each (any values) and mark absent "
                "samples False in present"
            )
        if isinstance(groups, Mapping):
            unknown = set(groups) - {f"{x}-{y}" for x, y in self.pairs}
            if unknown:
                raise ValueError(f"groups names pairs {sorted(unknown)} that are not among {self.pairs}; "
                                 "key them 'anchor-other'")
        sizes = {m: embeddings[m].shape[0] for m in self.modalities}
        if len(set(sizes.values())) > 1:
            raise ValueError(f"embeddings have different batch sizes {sizes}; pass the same B rows for every modality")
        for x, y in self.pairs:
            _check_pair(embeddings[x], embeddings[y], None)
        rows = sizes[self.modalities[0]]
        for name, mask in present.items():
            if name in sizes and mask.shape != (rows,):
                raise ValueError(f"present[{name!r}] has shape {tuple(mask.shape)}; expected ({rows},), one flag per row")
        if isinstance(groups, Mapping):
            for keys in groups.values():
                _check_groups(keys, rows)
        else:
            _check_groups(groups, rows)

    def _gather(
        self, embeddings: Mapping[str, Tensor], present: Mapping[str, Tensor], groups: Tensor | Mapping[str, Tensor] | None,
    ) -> tuple[dict[str, Tensor], dict[str, Tensor], Tensor | dict[str, Tensor] | None]:
        """The global batch: every input concatenated over the ranks in rank order, in one all-gather per tensor.

        The masks of all modalities travel as one ``(B, M)`` tensor (a modality not in ``present`` is all True), and
        the group keys of all keyed pairs as one ``(B, K)`` tensor, so the number of collectives does not depend on
        which modalities a rank lists in ``present``.
        """
        modalities = self.modalities
        first = embeddings[modalities[0]]
        ones = torch.ones(first.shape[0], dtype=torch.bool, device=first.device)
        flags = torch.stack([present.get(m, ones).bool() for m in modalities], dim=1)  # (B, M)
        if isinstance(groups, Mapping):
            keyed = sorted(k for k, pair_keys in groups.items() if pair_keys is not None)
            keys = torch.stack([groups[k].long() for k in keyed], dim=1) if keyed else None  # (B, K)
        else:
            keyed, keys = [], groups
        gathered = _gather_rows(*(embeddings[m] for m in modalities), flags, *([keys] if keys is not None else []))
        all_embeddings = dict(zip(modalities, gathered))
        all_flags = gathered[len(modalities)]  # (sum_r B_r, M)
        all_present = {m: all_flags[:, i] for i, m in enumerate(modalities)}
        if keys is None:
            return all_embeddings, all_present, None
        if isinstance(groups, Mapping):
            return all_embeddings, all_present, {k: gathered[-1][:, i] for i, k in enumerate(keyed)}
        return all_embeddings, all_present, gathered[-1]

    def extra_repr(self) -> str:
        return (f"pairs={self.pairs}, max_logit_scale={self.max_logit_scale}, "
                f"gather_distributed={self.gather_distributed}")


@torch.no_grad()
def retrieval_recall_at_k(query: Tensor, gallery: Tensor, ks: Sequence[int] = (1, 5, 10)) -> dict[int, float]:
    """Fraction of queries whose true match ranks in the top ``k`` of the gallery by cosine similarity.

    Args:
        query: ``(N, D)``; query ``i``'s true match is ``gallery[i]``.
        gallery: ``(N, D)``.
        ks: cut-offs, each ``>= 1``; a ``k >= N`` gives 1.0.

    Returns:
        ``{k: recall}``. A query's rank is ``1 +`` the number of gallery items strictly more similar than its
        match, so ties are resolved in the match's favour.
    """
    if query.dim() != 2 or gallery.dim() != 2 or query.shape != gallery.shape:
        raise ValueError(
            f"query and gallery must be (N, D) tensors of the same shape; got {tuple(query.shape)} and "
            f"{tuple(gallery.shape)}"
        )
    if query.shape[0] == 0:
        raise ValueError("query is empty: recall needs at least one query")
    ks = list(ks)
    if not ks or any(int(k) != k or k < 1 for k in ks):
        raise ValueError(f"ks must be positive integers; got {ks}")
    sim = F.normalize(query.float(), dim=-1) @ F.normalize(gallery.float(), dim=-1).T  # (N, N)
    true_sim = sim.diagonal()[:, None]  # (N, 1)
    rank = 1 + (sim > true_sim).sum(dim=1)  # (N,)
    return {int(k): (rank <= k).float().mean().item() for k in ks}


def retrieval_recall_ceiling(groups: Sequence[object], ks: Sequence[int] = (1, 5, 10)) -> dict[int, float]:
    """The best expected recall@k when queries in the same group cannot be told apart.

    If every query of a group of size ``s`` carries the same information (two patients whose reports say the same
    thing and whose images were drawn from the same description), an ideal model ranks the group's ``s`` gallery
    items first but in an order no better than random, so a query's match lands in the top ``k`` with probability
    ``min(1, k / s)``. The ceiling is the mean of that over queries: read :func:`retrieval_recall_at_k` against it.

    Args:
        groups: ``N`` hashable group keys, one per query/gallery pair.
        ks: cut-offs, each ``>= 1``.
    """
    keys = list(groups)
    if not keys:
        raise ValueError("groups is empty: the ceiling needs at least one query")
    ks = list(ks)
    if not ks or any(int(k) != k or k < 1 for k in ks):
        raise ValueError(f"ks must be positive integers; got {ks}")
    sizes: dict[object, int] = {}
    for key in keys:
        sizes[key] = sizes.get(key, 0) + 1
    return {int(k): sum(min(1.0, k / sizes[key]) for key in keys) / len(keys) for k in ks}
