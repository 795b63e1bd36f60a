"""DIN, TWIN and DARE: click-through models over a user's behaviour history, assembled from fusion_core parts.

Following "Long-Sequence Recommendation Models Need Decoupled Embeddings" (DARE, Feng et al., ICLR 2025):

- ``din``  target attention over the most recent ``din_window`` behaviours, scored by DIN's local activation
  unit (an MLP on ``[target, behaviour, target − behaviour, target ⊙ behaviour]``, Zhou et al. 2018) and
  softmax-normalised over the window, as in the DARE authors' DIN baseline.
- ``twin`` one embedding table. Stage 1 scores the whole history by ``target · behaviour`` and keeps the
  top-k; stage 2 softmaxes the same score over those k and sums the *same* embeddings. As in the authors' code the
  score is ``(item, category)·/√d_sem + time·/√d_time`` (``per_part_scaling``; else ``target · behaviour`` in
  stage 1 and ``/ temperature`` in stage 2).
- ``dare`` two tables: the ``attention_table`` (shared by target and history, its own, possibly smaller,
  width) drives both stages; the ``representation_table`` supplies what is summed and what the prediction
  MLP sees. Only the k kept behaviours are looked up in the representation table.

Every model predicts with an MLP on ``[target_repr, interest, target_repr ⊙ interest, profile]`` (BatchNorm + PReLU
after each hidden layer with ``head_norm``, as the reference; embeddings start N(0, ``embedding_std``²)).

Stage 1 never builds the ``(B, L, D)`` history embeddings: it sums per-field dot products
(:meth:`FieldEmbedding.dot`), either by looking each behaviour up (O(L·D)) or, when the item catalogue is smaller
than the history, by scoring the target against the whole table once and gathering the scores by id
(O(catalogue·D + L)); both keep the same top-k.

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
import torch.nn.functional as F
from torch import Tensor, nn

from fusion_core.encoders import FieldEmbedding
from fusion_core.layers.mlp import MLP
from fusion_core.layers.retrieval import (
    ActivationUnit,
    SearchResult,
    gather_history,
    masked_softmax_pool,
    target_attention,
    top_k_of_scores,
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
    "init_embeddings",
    "part_scales",
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


class OneRowSafeBatchNorm(nn.BatchNorm1d):
    """BatchNorm1d that normalises a one-row training batch with its running statistics (a single row has no
    batch variance; the last partial batch of an epoch can be one row)."""

    def forward(self, x: Tensor) -> Tensor:
        if self.training and x.shape[0] == 1:
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)
        return super().forward(x)


def prediction_head(
    representation_dim: int, profile_dim: int, hidden: tuple[int, ...], dropout: float, norm: bool = False
) -> nn.Module:
    """MLP on ``[target_repr, interest, target_repr ⊙ interest, profile]`` → one logit; with ``norm`` each hidden
    layer is ``Linear → BatchNorm → PReLU`` (the DARE reference's head), else ``Linear → GELU``."""
    in_dim = 3 * representation_dim + profile_dim
    if not norm:
        return MLP(in_dim, list(hidden), 1, dropout=dropout)
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(in_dim, width), OneRowSafeBatchNorm(width), nn.PReLU()]
        if dropout:
            layers.append(nn.Dropout(dropout))
        in_dim = width
    return nn.Sequential(*layers, nn.Linear(in_dim, 1))


def init_embeddings(model: nn.Module, std: float | None) -> None:
    """Every embedding table of ``model`` drawn from N(0, std²), padding rows kept at zero; None keeps PyTorch's
    N(0, 1). Small initial embeddings make the first attention scores nearly uniform and keep the head's input
    small, which is what most of the gap to the authors' code came from (bench/longseq.py's ablation)."""
    if std is None:
        return
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Embedding):
                module.weight.normal_(0.0, std)
                if module.padding_idx is not None:
                    module.weight[module.padding_idx].zero_()


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

    def __init__(self, head: nn.Module, profile: FieldEmbedding | None) -> None:
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
        head: nn.Module,
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

    ``part_scales`` ``{field: factor}`` multiplies each field's part of the target's attention embedding before
    both stages' dot products (the reference's ``/√d_sem`` and ``/√d_time``); None leaves them as they are.
    ``search``: ``lookup``, ``table`` or ``auto`` (``table`` when the item table is smaller than the history).
    """

    def __init__(
        self,
        attention_table: FieldEmbedding,
        head: nn.Module,
        representation_table: FieldEmbedding | None = None,
        profile: FieldEmbedding | None = None,
        top_k: int = 32,
        temperature: float | None = None,
        part_scales: Mapping[str, float] | None = None,
        search: str = "auto",
        aux_head: nn.Module | None = None,
    ) -> None:
        super().__init__(head, profile)
        if top_k <= 0:
            raise ValueError(f"top_k must be positive; got {top_k}")
        if search not in ("auto", "lookup", "table"):
            raise ValueError(f"search must be 'auto', 'lookup' or 'table'; got {search!r}")
        unknown = sorted(set(part_scales or {}) - set(attention_table.fields))
        if unknown:
            raise ValueError(f"part_scales has fields {unknown}; the attention table's are {list(attention_table.fields)}")
        self.attention_table = attention_table
        self.representation_table = representation_table
        self.top_k = top_k
        self.search_path = search
        self.aux_head = aux_head
        scale = torch.ones(attention_table.dim)
        for name, factor in (part_scales or {}).items():
            scale[attention_table.slices[name]] = factor
        # not saved: it follows from the config, and runs saved before it existed still load
        self.register_buffer("query_scale", scale, persistent=False)
        self.part_scaled = part_scales is not None
        default = 1.0 if self.part_scaled else math.sqrt(attention_table.dim)
        self.temperature = temperature if temperature is not None else default

    @property
    def decoupled(self) -> bool:
        return self.representation_table is not None

    def search_via(self, length: int) -> str:
        """The stage-1 path for histories of ``length``: ``lookup`` or ``table``."""
        if self.search_path != "auto":
            return self.search_path
        return "table" if self.attention_table.cardinality("item") < length else "lookup"

    def search(self, batch: Batch, present: Mapping[str, Tensor] | None = None, via: str | None = None) -> SearchResult:
        """Stage 1 alone: the top-k behaviours of the whole history by attention score (``via`` overrides the
        model's path)."""
        return self._search(batch, resolve_groups(batch, present), via)

    def attention_query(self, batch: Batch, groups: dict[str, Tensor]) -> Tensor:
        """``(B, Da)`` the target's attention embedding with its parts scaled."""
        return self.embed_target(self.attention_table, batch, groups) * self.query_scale

    def _search(self, batch: Batch, groups: dict[str, Tensor], via: str | None = None) -> SearchResult:
        # The top-k selection is not differentiable, so the whole-history pass runs without autograd; stage 2
        # re-embeds the k kept behaviours with gradients, which gives the attention table exactly the gradient a
        # differentiable pass would (only kept keys receive any) at O(k) instead of O(L) cost. Ids that must not
        # count become the padding id (a zero row) once, on the (B, L) ids, instead of masking (B, L, D) floats.
        mask = self.history_mask(batch, groups)
        ids = self._padded_history(batch, groups, mask)
        with torch.no_grad():
            query = self.attention_query(batch, groups)  # (B, Da)
            scores = self.attention_table.dot(query, ids, via=via or self.search_via(mask.shape[1]))  # (B, L)
            return top_k_of_scores(scores, mask, self.top_k)

    @staticmethod
    def _padded_history(batch: Batch, groups: dict[str, Tensor], mask: Tensor) -> dict[str, Tensor]:
        """``{field: (B, L)}`` history ids with the padding id wherever a behaviour or its time part must not count."""
        time_on = mask & groups["time"][:, None]
        zero = torch.zeros((), dtype=batch["hist_item"].dtype, device=mask.device)
        return {"item": torch.where(mask, batch["hist_item"], zero), "cate": torch.where(mask, batch["hist_cate"], zero),
                "time": torch.where(time_on, batch["hist_time"], zero)}

    def whole_history_interest(self, batch: Batch, present: Mapping[str, Tensor] | None = None,
                               via: str | None = None) -> Tensor:
        """``(B, Dr)`` target attention over *every* behaviour (softmax of the stage-2 score over the whole history,
        summing representation embeddings), differentiable everywhere: the DARE reference's auxiliary path, which
        gives every behaviour's attention embedding a gradient, not only the top-k kept ones.

        ``via="table"`` never builds ``(B, L, D)``: scores are gathered from the target's scores against each field's
        table, and the softmax weights are summed per id (``scatter_add``) before one ``(B, N) @ (N, d)`` product per
        field, O(B·(catalogue·D + L)); ``lookup`` embeds every behaviour, O(B·L·D). Both give the same result."""
        groups = resolve_groups(batch, present)
        via = via or self.search_via(batch["hist_item"].shape[1])
        mask = self.history_mask(batch, groups)
        ids = self._padded_history(batch, groups, mask)
        scores = self.attention_table.dot(self.attention_query(batch, groups), ids, via=via) / self.temperature  # (B, L)
        has_any = mask.any(dim=1, keepdim=True)
        weights = torch.softmax(scores.masked_fill(~mask, float("-inf")).masked_fill(~has_any, 0.0), dim=1)
        weights = weights * mask  # (B, L); a row without behaviours pools nothing
        values = self.representation_table if self.decoupled else self.attention_table
        if via == "lookup":
            return torch.bmm(weights.unsqueeze(1), values(ids)).squeeze(1)  # (B, 1, L) @ (B, L, Dr)
        parts = []
        for name, table in values.tables.items():
            per_id = weights.new_zeros(weights.shape[0], table.num_embeddings).scatter_add(1, ids[name], weights)
            parts.append(per_id @ table.weight)  # (B, N_f) @ (N_f, d_f); the padding row is zero
        return torch.cat(parts, dim=-1)

    def auxiliary_logit(self, batch: Batch, present: Mapping[str, Tensor] | None = None) -> Tensor:
        """``(B,)`` the auxiliary click logit of :meth:`whole_history_interest` (``aux_head`` on ``[target_repr,
        interest, target_repr ⊙ interest]``); trained next to the main logit, never used to predict."""
        if self.aux_head is None:
            raise ValueError("this model has no auxiliary head; build it with aux_loss: true")
        groups = resolve_groups(batch, present)
        target = self.embed_target(self.representation_table if self.decoupled else self.attention_table, batch, groups)
        interest = self.whole_history_interest(batch, present)
        return self.aux_head(torch.cat([target, interest, target * interest], dim=-1)).squeeze(-1)

    def forward(self, batch: Batch, present: Mapping[str, Tensor] | None = None) -> RecOutput:
        groups = resolve_groups(batch, present)
        found = self._search(batch, groups)
        top_k_history = {f: gather_history(batch[f"hist_{f}"], found.indices) for f in ("item", "cate", "time")}
        query = self.attention_query(batch, groups)  # (B, Da)
        keys = self.embed_behaviours(self.attention_table, top_k_history, found.valid, groups)  # (B, k, Da)
        if self.representation_table is None:
            target_repr, values = self.embed_target(self.attention_table, batch, groups), keys
        else:
            target_repr = self.embed_target(self.representation_table, batch, groups)  # (B, Dr)
            values = self.embed_behaviours(self.representation_table, top_k_history, found.valid, groups)  # (B, k, Dr)
        pool = target_attention(query, keys, values, found.valid, self.temperature)
        retrieved = torch.where(found.valid, found.indices, torch.full_like(found.indices, -1))
        logit = self.predict(target_repr, pool.interest, self.embed_profile(batch, groups))
        return RecOutput(logit, retrieved, pool.weights)


# --- builders -------------------------------------------------------------------------------------------------


def _profile_width(config: RecConfig) -> int:
    return len(config.profile_cardinalities) * config.profile_dim + config.user_dim


def _profile(config: RecConfig) -> FieldEmbedding | None:
    return profile_table(config.profile_cardinalities, config.profile_dim, config.num_users, config.user_dim)


def _head(config: RecConfig, representation_dim: int) -> nn.Module:
    return prediction_head(representation_dim, _profile_width(config), config.mlp_hidden, config.dropout, config.head_norm)


def part_scales(table: FieldEmbedding) -> dict[str, float]:
    """The reference's scaling: item and category parts by 1/√(their width), the time part by 1/√(its width)."""
    semantic = table.part_dim("item") + table.part_dim("cate")
    return {"item": semantic**-0.5, "cate": semantic**-0.5, "time": table.part_dim("time") ** -0.5}


def _two_stage(config: RecConfig, attention: FieldEmbedding, representation: FieldEmbedding | None) -> TwoStageModel:
    width = (representation or attention).dim
    aux = prediction_head(width, 0, config.mlp_hidden, config.dropout, config.head_norm) if config.aux_loss else None
    return TwoStageModel(
        attention, _head(config, width), representation, _profile(config), top_k=config.top_k,
        temperature=config.temperature, part_scales=part_scales(attention) if config.per_part_scaling else None,
        search=config.search, aux_head=aux,
    )


def build_din(config: RecConfig) -> DIN:
    table = behaviour_table(config.num_items, config.num_cates, config.num_time_buckets, config.representation_dim)
    return DIN(table, ActivationUnit(table.dim), _head(config, table.dim), _profile(config), window=config.din_window)


def build_twin(config: RecConfig) -> TwoStageModel:
    """One ``representation_dim``-wide table for search, attention and representation."""
    table = behaviour_table(config.num_items, config.num_cates, config.num_time_buckets, config.representation_dim)
    return _two_stage(config, table, None)


def build_dare(config: RecConfig) -> TwoStageModel:
    """An ``attention_dim``-wide attention table and a ``representation_dim``-wide representation table."""
    attention = behaviour_table(config.num_items, config.num_cates, config.num_time_buckets, config.attention_dim)
    representation = behaviour_table(config.num_items, config.num_cates, config.num_time_buckets, config.representation_dim)
    return _two_stage(config, attention, representation)


_BUILDERS: dict[str, Callable[[RecConfig], nn.Module]] = {"din": build_din, "twin": build_twin, "dare": build_dare}


def build_model(config: RecConfig) -> DIN | TwoStageModel:
    """``config.model`` (``din`` | ``twin`` | ``dare``) built at the sizes in ``config``."""
    if config.model not in _BUILDERS:
        raise ValueError(f"unknown model {config.model!r}; choose one of {list(MODEL_NAMES)}")
    model = _BUILDERS[config.model](config)
    init_embeddings(model, config.embedding_std)
    return model
