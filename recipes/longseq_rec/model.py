"""DIN, TWIN and DARE: click-through models over a user's behaviour history, assembled from fusion_core parts.

Following "Long-Sequence Recommendation Models Need Decoupled Embeddings" (DARE, Feng et al., ICLR 2025):

- ``din``  target attention over the most recent ``din_window`` behaviours, scored by DIN's local activation
  unit (an MLP on ``[target, behaviour, target − behaviour, target ⊙ behaviour]``, Zhou et al. 2018) and
  softmax-normalised over the window, as in the DARE authors' DIN baseline.
- ``twin`` one embedding table. Stage 1 scores the whole history by ``target · behaviour`` and keeps the
  top-k; stage 2 softmaxes ``target · behaviour / √D`` over those k and sums the *same* embeddings.
- ``dare`` two tables: the ``attention_table`` (shared by target and history, its own, possibly smaller,
  width) drives both stages; the ``representation_table`` supplies what is summed and what the prediction
  MLP sees. Only the k kept behaviours are looked up in the representation table.

Every model predicts with an MLP on ``[target_repr, interest, target_repr ⊙ interest, profile]``.

Each behaviour table has an item, a category and a time-gap part (:class:`~fusion_core.encoders.FieldEmbedding`,
id 0 = padding). The time part has one extra id, ``num_time_buckets``, the target's own "gap 0" bucket: the
target is the behaviour happening now, so its time part is a learned "now" vector and ``target · behaviour``
gains a learned per-gap recency term (the DARE reference code also embeds a time id for the target).

Feature groups (``present``, for the modality-Shapley explainer): ``target`` (target item and category, and the
target's time part), ``history`` (all behaviours), ``profile`` (user profile fields and user id), ``time`` (the
time parts of target and behaviours). An absent group never reaches the output through its values: its ids are
replaced by padding before any lookup and its embeddings are zero, so with ``history`` absent the interest is
zero, with ``time`` absent every time part is zero, with ``profile`` absent the profile vector is zero and with
``target`` absent the target embedding is zero.

Shapes: B batch, L history length, k behaviours attended to, P profile fields.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import NamedTuple

import torch
from torch import Tensor, nn

from fusion_core.encoders import FieldEmbedding
from fusion_core.layers.mlp import MLP
from fusion_core.layers.retrieval import (
    ActivationUnit,
    SearchResult,
    gather_history,
    masked_softmax_pool,
    target_attention,
    top_k_search,
)

from recipes.longseq_rec.config import MODEL_NAMES, RecConfig

__all__ = [
    "FEATURE_GROUPS",
    "MODEL_NAMES",
    "RecOutput",
    "DIN",
    "TwoStageModel",
    "behaviour_table",
    "profile_table",
    "prediction_head",
    "build_din",
    "build_twin",
    "build_dare",
    "build_model",
]

FEATURE_GROUPS: tuple[str, ...] = ("target", "history", "profile", "time")
Batch = Mapping[str, Tensor]


class RecOutput(NamedTuple):
    logit: Tensor  # (B,) click logit
    retrieved: Tensor  # (B, k) long, history positions attended to (best first for twin/dare); -1 = empty slot
    weights: Tensor  # (B, k) stage-2 attention weight of each retrieved behaviour; 0 on empty slots


# --- parts ----------------------------------------------------------------------------------------------------


def split_dim(dim: int) -> tuple[int, int, int]:
    """Widths of the item, category and time parts of a ``dim``-wide behaviour table (½, ¼, the rest)."""
    item, cate = dim // 2, dim // 4
    return item, cate, dim - item - cate


def behaviour_table(num_items: int, num_cates: int, num_time_buckets: int, dim: int) -> FieldEmbedding:
    """Item / category / time-gap table of total width ``dim``; the time part has the extra "now" id."""
    item, cate, time = split_dim(dim)
    return FieldEmbedding({"item": (num_items, item), "cate": (num_cates, cate), "time": (num_time_buckets + 1, time)})


def profile_table(
    profile_cardinalities: tuple[int, ...], profile_dim: int, num_users: int = 0, user_dim: int = 0
) -> FieldEmbedding | None:
    """One part per profile field (``field_0`` …) and, when ``user_dim > 0``, a ``user`` part; None if empty."""
    fields = {f"field_{i}": (cardinality, profile_dim) for i, cardinality in enumerate(profile_cardinalities)}
    if user_dim > 0:
        fields["user"] = (num_users, user_dim)
    return FieldEmbedding(fields) if fields else None


def prediction_head(representation_dim: int, profile_dim: int, hidden: tuple[int, ...], dropout: float) -> MLP:
    """MLP on ``[target_repr, interest, target_repr ⊙ interest, profile]`` → one logit."""
    return MLP(3 * representation_dim + profile_dim, list(hidden), 1, dropout=dropout)


# --- models ---------------------------------------------------------------------------------------------------


def resolve_groups(batch: Batch, present: Mapping[str, Tensor] | None) -> dict[str, Tensor]:
    """``{group: Bool (B,)}`` for every feature group; a group missing from ``present`` is present."""
    unknown = sorted(set(present or {}) - set(FEATURE_GROUPS))
    if unknown:
        raise ValueError(f"present has unknown feature groups {unknown}; the groups are {list(FEATURE_GROUPS)}")
    target = batch["target_item"]
    groups = {}
    for group in FEATURE_GROUPS:
        mask = (present or {}).get(group)
        if mask is None:
            mask = torch.ones(target.shape[0], dtype=torch.bool, device=target.device)
        elif mask.shape != target.shape:
            raise ValueError(f"present[{group!r}] has shape {tuple(mask.shape)}; expected {tuple(target.shape)}")
        groups[group] = mask.to(device=target.device, dtype=torch.bool)
    return groups


class _RecModel(nn.Module):
    """What the three models share: target and behaviour embedding, the profile vector and the head."""

    def __init__(self, head: MLP, profile: FieldEmbedding | None) -> None:
        super().__init__()
        self.head = head
        self.profile_table = profile

    @staticmethod
    def embed_target(table: FieldEmbedding, batch: Batch, groups: dict[str, Tensor]) -> Tensor:
        """``(B, D)``: target item and category, with the "now" time bucket."""
        target_item = batch["target_item"]
        now = torch.full_like(target_item, table.cardinality("time") - 1)
        ids = {"item": target_item, "cate": batch["target_cate"], "time": now}
        on = groups["target"]
        return table(ids, {"item": on, "cate": on, "time": on & groups["time"]})

    @staticmethod
    def embed_behaviours(
        table: FieldEmbedding, ids: Mapping[str, Tensor], mask: Tensor, groups: dict[str, Tensor]
    ) -> Tensor:
        """``(B, n, D)`` for behaviour ids ``{"item", "cate", "time"}: (B, n)``; zeros where ``mask`` is False."""
        time_on = mask & groups["time"][:, None]
        return table(ids, {"item": mask, "cate": mask, "time": time_on})

    def embed_profile(self, batch: Batch, groups: dict[str, Tensor]) -> Tensor | None:
        if self.profile_table is None:
            return None
        on = groups["profile"]
        ids: dict[str, Tensor] = {}
        if "user" in self.profile_table.fields:
            ids["user"] = batch["user"]
        num_fields = sum(1 for f in self.profile_table.fields if f.startswith("field_"))
        if num_fields:
            profile = batch["profile"]
            if profile.shape[-1] != num_fields:
                raise ValueError(f"batch['profile'] has {profile.shape[-1]} fields; this model was built for {num_fields}")
            ids.update({f"field_{i}": profile[:, i] for i in range(num_fields)})
        return self.profile_table(ids, {name: on for name in ids})  # (B, P·profile_dim [+ user_dim])

    def predict(self, target_repr: Tensor, interest: Tensor, profile: Tensor | None) -> Tensor:
        features = [target_repr, interest, target_repr * interest]
        if profile is not None:
            features.append(profile)
        return self.head(torch.cat(features, dim=-1)).squeeze(-1)  # (B,)

    @staticmethod
    def history_mask(batch: Batch, groups: dict[str, Tensor]) -> Tensor:
        return batch["hist_mask"].bool() & groups["history"][:, None]  # (B, L)


class DIN(_RecModel):
    """Target attention over the most recent ``window`` behaviours with DIN's activation unit."""

    def __init__(
        self,
        embedding_table: FieldEmbedding,
        activation_unit: ActivationUnit,
        head: MLP,
        profile: FieldEmbedding | None = None,
        window: int = 50,
    ) -> None:
        super().__init__(head, profile)
        if window <= 0:
            raise ValueError(f"window must be positive; got {window}")
        self.embedding_table = embedding_table
        self.activation_unit = activation_unit
        self.window = window

    def forward(self, batch: Batch, present: Mapping[str, Tensor] | None = None) -> RecOutput:
        groups = resolve_groups(batch, present)
        length = batch["hist_item"].shape[1]
        window = min(self.window, length)
        mask = self.history_mask(batch, groups)[:, length - window :]  # (B, w): history is left-padded
        recent = {f: batch[f"hist_{f}"][:, length - window :] for f in ("item", "cate", "time")}
        target = self.embed_target(self.embedding_table, batch, groups)  # (B, D)
        behaviours = self.embed_behaviours(self.embedding_table, recent, mask, groups)  # (B, w, D)
        logits = self.activation_unit(target, behaviours)  # (B, w)
        pool = masked_softmax_pool(logits, behaviours, mask)
        positions = torch.arange(length - window, length, device=mask.device).expand_as(mask)
        retrieved = torch.where(mask, positions, torch.full_like(positions, -1))
        logit = self.predict(target, pool.interest, self.embed_profile(batch, groups))
        return RecOutput(logit, retrieved, pool.weights)


class TwoStageModel(_RecModel):
    """Stage-1 top-k search over the whole history, stage-2 target attention over the k kept behaviours.

    ``representation_table=None`` is TWIN: the ``attention_table`` is the only table, searched, attended
    and summed. With a ``representation_table`` it is DARE: attention embeddings decide which behaviours
    are kept and how much each weighs, representation embeddings are what gets summed and predicted from.
    """

    def __init__(
        self,
        attention_table: FieldEmbedding,
        head: MLP,
        representation_table: FieldEmbedding | None = None,
        profile: FieldEmbedding | None = None,
        top_k: int = 32,
        temperature: float | None = None,
    ) -> None:
        super().__init__(head, profile)
        if top_k <= 0:
            raise ValueError(f"top_k must be positive; got {top_k}")
        self.attention_table = attention_table
        self.representation_table = representation_table
        self.top_k = top_k
        self.temperature = temperature if temperature is not None else math.sqrt(attention_table.dim)

    @property
    def decoupled(self) -> bool:
        return self.representation_table is not None

    def search(self, batch: Batch, present: Mapping[str, Tensor] | None = None) -> SearchResult:
        """Stage 1 alone: the top-k behaviours of the whole history by attention-embedding dot product."""
        return self._search(batch, resolve_groups(batch, present))

    def _search(self, batch: Batch, groups: dict[str, Tensor]) -> SearchResult:
        # The top-k selection is not differentiable, so the whole-history pass runs without autograd: the
        # (B, L, Da) embeddings are neither kept nor back-propagated through. Stage 2 re-embeds the k kept
        # behaviours with gradients, which gives the attention table exactly the gradient a differentiable
        # pass would (only kept keys receive any) at O(k) instead of O(L) cost.
        mask = self.history_mask(batch, groups)
        history = {f: batch[f"hist_{f}"] for f in ("item", "cate", "time")}
        with torch.no_grad():
            target_attention_emb = self.embed_target(self.attention_table, batch, groups)  # (B, Da)
            history_attention_emb = self.embed_behaviours(self.attention_table, history, mask, groups)  # (B, L, Da)
            return top_k_search(target_attention_emb, history_attention_emb, mask, self.top_k)

    def forward(self, batch: Batch, present: Mapping[str, Tensor] | None = None) -> RecOutput:
        groups = resolve_groups(batch, present)
        found = self._search(batch, groups)
        top_k_history = {f: gather_history(batch[f"hist_{f}"], found.indices) for f in ("item", "cate", "time")}
        target_attention_emb = self.embed_target(self.attention_table, batch, groups)  # (B, Da)
        keys = self.embed_behaviours(self.attention_table, top_k_history, found.valid, groups)  # (B, k, Da)
        if self.representation_table is None:
            target_repr, values = target_attention_emb, keys
        else:
            target_repr = self.embed_target(self.representation_table, batch, groups)  # (B, Dr)
            values = self.embed_behaviours(self.representation_table, top_k_history, found.valid, groups)  # (B, k, Dr)
        pool = target_attention(target_attention_emb, keys, values, found.valid, self.temperature)
        retrieved = torch.where(found.valid, found.indices, torch.full_like(found.indices, -1))
        logit = self.predict(target_repr, pool.interest, self.embed_profile(batch, groups))
        return RecOutput(logit, retrieved, pool.weights)


# --- builders -------------------------------------------------------------------------------------------------


def _profile_width(config: RecConfig) -> int:
    return len(config.profile_cardinalities) * config.profile_dim + config.user_dim


def _profile(config: RecConfig) -> FieldEmbedding | None:
    return profile_table(config.profile_cardinalities, config.profile_dim, config.num_users, config.user_dim)


def build_din(config: RecConfig) -> DIN:
    table = behaviour_table(config.num_items, config.num_cates, config.num_time_buckets, config.representation_dim)
    head = prediction_head(table.dim, _profile_width(config), config.mlp_hidden, config.dropout)
    return DIN(table, ActivationUnit(table.dim), head, _profile(config), window=config.din_window)


def build_twin(config: RecConfig) -> TwoStageModel:
    """One ``representation_dim``-wide table for search, attention and representation."""
    table = behaviour_table(config.num_items, config.num_cates, config.num_time_buckets, config.representation_dim)
    head = prediction_head(table.dim, _profile_width(config), config.mlp_hidden, config.dropout)
    return TwoStageModel(table, head, None, _profile(config), top_k=config.top_k, temperature=config.temperature)


def build_dare(config: RecConfig) -> TwoStageModel:
    """An ``attention_dim``-wide attention table and a ``representation_dim``-wide representation table."""
    attention = behaviour_table(config.num_items, config.num_cates, config.num_time_buckets, config.attention_dim)
    representation = behaviour_table(config.num_items, config.num_cates, config.num_time_buckets, config.representation_dim)
    head = prediction_head(representation.dim, _profile_width(config), config.mlp_hidden, config.dropout)
    return TwoStageModel(attention, head, representation, _profile(config), top_k=config.top_k, temperature=config.temperature)


_BUILDERS: dict[str, Callable[[RecConfig], nn.Module]] = {"din": build_din, "twin": build_twin, "dare": build_dare}


def build_model(config: RecConfig) -> DIN | TwoStageModel:
    """``config.model`` (``din`` | ``twin`` | ``dare``) built at the sizes in ``config``."""
    if config.model not in _BUILDERS:
        raise ValueError(f"unknown model {config.model!r}; choose one of {list(MODEL_NAMES)}")
    return _BUILDERS[config.model](config)
