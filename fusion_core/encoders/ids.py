"""Embeddings of categorical ids: one table per field, concatenated.

An id-based modality (an item with its category and time gap, a user profile) is a handful of categorical
fields. :class:`FieldEmbedding` holds one ``nn.Embedding(cardinality, part_dim, padding_idx=0)`` per field
and concatenates the parts, so id 0 of every field is padding/unknown and embeds to zeros.
"""
from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

__all__ = ["FieldEmbedding"]


class FieldEmbedding(nn.Module):
    """An embedding table made of named parts, one per categorical field.

    ``fields`` maps a field name to ``(cardinality, part_dim)``; parts are concatenated in the given order,
    so the output width is ``dim = sum(part_dim)`` and field ``f`` occupies ``slices[f]`` of it.

    ``forward(ids, present=None)``:
      ids:     ``{field: Long (...)}``, every tensor the same shape ``S`` (``(B,)`` for a target, ``(B, L)`` for
               a history). A field missing from ``ids`` contributes a zero part.
      present: ``{field: Bool}`` broadcastable to ``S``; where False the field's id never reaches its table
               (it is replaced by the padding id before the lookup, so out-of-range garbage is harmless) and
               the part is zero.
      returns  ``(*S, dim)``.
    """

    def __init__(self, fields: Mapping[str, tuple[int, int]]) -> None:
        super().__init__()
        if not fields:
            raise ValueError("FieldEmbedding needs at least one field, e.g. {'item': (num_items, 32)}")
        for name, spec in fields.items():
            if len(spec) != 2:
                raise ValueError(f"field {name!r}: expected (cardinality, part_dim); got {spec!r}")
            cardinality, part_dim = spec
            if cardinality < 2:
                raise ValueError(
                    f"field {name!r} has cardinality {cardinality}; it needs at least 2 (id 0 is padding/unknown)"
                )
            if part_dim <= 0:
                raise ValueError(f"field {name!r} has part_dim {part_dim}; it must be positive")
        self.tables = nn.ModuleDict(
            {name: nn.Embedding(cardinality, part_dim, padding_idx=0) for name, (cardinality, part_dim) in fields.items()}
        )
        self.slices: dict[str, slice] = {}
        start = 0
        for name, (_, part_dim) in fields.items():
            self.slices[name] = slice(start, start + part_dim)
            start += part_dim
        self.dim = start

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(self.tables)

    def cardinality(self, field: str) -> int:
        return self.tables[field].num_embeddings

    def part_dim(self, field: str) -> int:
        return self.tables[field].embedding_dim

    def forward(self, ids: Mapping[str, Tensor], present: Mapping[str, Tensor] | None = None) -> Tensor:
        unknown = sorted(set(ids) - set(self.tables))
        if unknown:
            raise ValueError(f"ids has fields {unknown} this table was not built for; its fields are {list(self.tables)}")
        if not ids:
            raise ValueError("ids is empty: pass at least one field to infer the shape")
        present = present or {}
        shape = next(iter(ids.values())).shape
        device = next(iter(ids.values())).device
        parts = []
        for name, table in self.tables.items():
            field_ids = ids.get(name)
            if field_ids is None:
                parts.append(table.weight.new_zeros(*shape, table.embedding_dim))
                continue
            if field_ids.shape != shape:
                raise ValueError(f"ids[{name!r}] has shape {tuple(field_ids.shape)}; every field must have shape {tuple(shape)}")
            keep = present.get(name)
            if keep is None:
                parts.append(table(field_ids))
                continue
            keep = keep.to(device=device, dtype=torch.bool).expand(shape)
            safe_ids = torch.where(keep, field_ids, torch.zeros((), dtype=field_ids.dtype, device=device))
            part = table(safe_ids)  # (*S, part_dim), zeros where safe_ids is the padding id
            parts.append(torch.where(keep[..., None], part, part.new_zeros(())))
        return torch.cat(parts, dim=-1)  # (*S, dim)

    def dot(self, query: Tensor, ids: Mapping[str, Tensor], via: str = "lookup") -> Tensor:
        """``(B, L)`` scores ``query · embedding(ids)``, summed field by field, without building the ``(B, L, dim)``
        embeddings.

        query ``(B, dim)`` (field ``f`` in ``slices[f]``), ids ``{field: Long (B, L)}`` for every field, already
        padded (id 0, a zero row) wherever a behaviour or a field must not count. ``via="lookup"`` embeds each field
        of each behaviour and takes the dot product: O(B·L·dim). ``via="table"`` scores the query against each
        field's whole table once and picks the scores by id: O(B·(cardinality·part_dim + L)), far cheaper when the
        tables are smaller than the history. Both give the same scores up to float rounding.
        """
        if via not in ("lookup", "table"):
            raise ValueError(f"via must be 'lookup' or 'table'; got {via!r}")
        missing = sorted(set(self.tables) - set(ids))
        if missing:
            raise ValueError(f"ids lacks fields {missing}; dot needs every field of the table ({list(self.tables)})")
        if query.dim() != 2 or query.shape[-1] != self.dim:
            raise ValueError(f"query has shape {tuple(query.shape)}; expected (B, {self.dim})")
        scores = None
        for name, table in self.tables.items():
            field_query = query[:, self.slices[name]]  # (B, d_f)
            field_ids = ids[name]  # (B, L)
            if via == "table":
                part = (field_query @ table.weight.T).gather(1, field_ids)  # (B, N_f) → (B, L)
            else:
                part = torch.bmm(table(field_ids), field_query.unsqueeze(-1)).squeeze(-1)  # (B, L, d_f) → (B, L)
            scores = part if scores is None else scores + part
        return scores

    def extra_repr(self) -> str:
        parts = ", ".join(f"{n}={t.num_embeddings}x{t.embedding_dim}" for n, t in self.tables.items())
        return f"dim={self.dim}, {parts}"
