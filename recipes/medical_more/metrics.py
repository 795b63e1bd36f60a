"""The MoRE recipe's metrics, as :class:`torchmetrics.Metric` subclasses whose states are concatenated across
processes, so a DDP run reports the metrics of the whole split.

- :class:`FindingAUROC`: AUROC of each finding of multi-label probabilities and their mean, over the findings that
  are defined on the split (both classes present). Names ``<name>_<finding>`` and ``<name>``.
- :class:`ReportAlignment`: what contrastive pre-training is judged by, over the whole split: the contrastive loss,
  retrieval recall@k from the report to each other modality and its ceiling (reports that describe the same
  radiograph or ECG cannot be told apart: ``fusion_core.losses.retrieval_recall_ceiling``). Retrieval and the loss
  need every row of the split at once (each row is the others' negative), hence one metric holding the embeddings.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.functional.classification import binary_auroc
from torchmetrics.utilities import dim_zero_cat

from fusion_core.losses.contrastive import info_nce, retrieval_recall_at_k, retrieval_recall_ceiling

__all__ = ["FindingAUROC", "ReportAlignment", "RECALL_KS"]

RECALL_KS: tuple[int, ...] = (1, 5, 10)
_NO_GROUP = -1


def _cat(state: list[Tensor] | Tensor) -> Tensor:
    return dim_zero_cat(state) if isinstance(state, Tensor) or state else torch.zeros(0)


class FindingAUROC(Metric):
    """``update(preds (N, F), target (N, F))`` with probabilities and 0/1 labels of ``findings``; ``compute()`` →
    ``{f"{name}_{finding}": AUROC, name: their mean}`` over the findings whose target holds both classes (a finding
    with one class only has no AUROC and is left out; with none defined, the dict is empty)."""

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, findings: Sequence[str], name: str = "auroc", **kwargs) -> None:
        super().__init__(**kwargs)
        self.findings, self.name = tuple(str(f) for f in findings), str(name)
        if not self.findings:
            raise ValueError("findings is empty: name the label columns of preds and target")
        self.add_state("preds", default=[], dist_reduce_fx="cat")
        self.add_state("target", default=[], dist_reduce_fx="cat")

    def update(self, preds: Tensor, target: Tensor) -> None:
        if preds.shape != target.shape or preds.dim() != 2 or preds.shape[1] != len(self.findings):
            raise ValueError(f"preds and target must both be (N, {len(self.findings)}), one column per finding; got "
                             f"{tuple(preds.shape)} and {tuple(target.shape)}")
        self.preds.append(preds.detach().float())
        self.target.append(target.detach().long())

    def compute(self) -> dict[str, Tensor]:
        preds, target = _cat(self.preds), _cat(self.target)
        values: dict[str, Tensor] = {}
        for column, finding in enumerate(self.findings):
            labels = target[:, column] if target.numel() else target
            if labels.numel() == 0 or labels.min() == labels.max():
                continue
            values[f"{self.name}_{finding}"] = binary_auroc(preds[:, column], labels)
        if values:
            values[self.name] = torch.stack(list(values.values())).mean()
        return values


class ReportAlignment(Metric):
    """The report-anchored alignment of a split: ``update(embeddings {m: (B, P)}, present {m: Bool (B,)}, groups
    {m: Long (B,)} | None)`` for the ``anchor`` and every modality of ``others``; ``compute()`` →

    - ``contrastive_loss``: the sum over ``others`` of InfoNCE(anchor, other) over all rows of the split with both
      present, at ``temperature()`` (the model's current one), with the group keys as semantic positives when
      ``semantic_positives``; computed on the rows every process holds, so never gathered again;
    - ``recall@{k}_{anchor}_to_{other}`` for ``k`` in ``ks`` (at least two rows with both present);
    - ``recall_ceiling@{k}_{anchor}_to_{other}`` when every such row has a group key.

    ``groups[m]`` are dataset-level keys of rows whose anchor describes the same ``m`` (:func:`group_ids`); a missing
    entry means no keys for that modality.
    """

    is_differentiable = False
    higher_is_better = None
    full_state_update = False

    def __init__(self, temperature: Callable[[], Tensor | float], anchor: str = "report",
                 others: Sequence[str] = ("xray", "ecg"), ks: Sequence[int] = RECALL_KS,
                 semantic_positives: bool = True, **kwargs) -> None:
        super().__init__(**kwargs)
        self.temperature, self.anchor, self.others = temperature, str(anchor), tuple(str(m) for m in others)
        if not self.others or self.anchor in self.others:
            raise ValueError(f"others must name at least one modality besides the anchor {anchor!r}; got {list(others)}")
        self.ks, self.semantic_positives = tuple(int(k) for k in ks), bool(semantic_positives)
        for modality in (self.anchor, *self.others):
            self.add_state(f"embedding_{modality}", default=[], dist_reduce_fx="cat")
        self.add_state("present", default=[], dist_reduce_fx="cat")  # (N, 1 + len(others)) uint8: gloo has no bool
        self.add_state("groups", default=[], dist_reduce_fx="cat")  # (N, len(others)) long, -1 without a key

    @property
    def modalities(self) -> tuple[str, ...]:
        return (self.anchor, *self.others)

    def update(self, embeddings: Mapping[str, Tensor], present: Mapping[str, Tensor],
               groups: Mapping[str, Tensor] | None = None) -> None:
        rows = embeddings[self.anchor].shape[0]
        for modality in self.modalities:
            getattr(self, f"embedding_{modality}").append(embeddings[modality].detach().float())
        self.present.append(torch.stack([present[m].bool() for m in self.modalities], dim=1).to(torch.uint8))
        no_key = torch.full((rows,), _NO_GROUP, dtype=torch.long, device=embeddings[self.anchor].device)
        keys = [groups[m].long() if groups is not None and m in groups else no_key for m in self.others]
        self.groups.append(torch.stack(keys, dim=1))

    @torch.no_grad()
    def compute(self) -> dict[str, Tensor]:
        embeddings = {m: _cat(getattr(self, f"embedding_{m}")) for m in self.modalities}
        flags, keys = _cat(self.present).bool(), _cat(self.groups)
        if flags.numel() == 0:
            return {}
        present = {m: flags[:, i] for i, m in enumerate(self.modalities)}
        anchor = embeddings[self.anchor]
        temperature = self.temperature()
        values: dict[str, Tensor] = {}
        losses = []
        for column, other in enumerate(self.others):
            both = present[self.anchor] & present[other]
            other_keys = keys[:, column]
            keyed = bool((other_keys[both] != _NO_GROUP).all())
            # the states were gathered from every process already: the loss must not gather them again
            losses.append(info_nce(anchor, embeddings[other], temperature, mask=both,
                                   groups=other_keys if self.semantic_positives and keyed else None,
                                   gather_distributed=False))
            if int(both.sum()) < 2:
                continue
            name = f"{self.anchor}_to_{other}"
            for k, value in retrieval_recall_at_k(anchor[both], embeddings[other][both], self.ks).items():
                values[f"recall@{k}_{name}"] = torch.tensor(value)
            if keyed:  # the best any model can do when identical reports tie
                for k, value in retrieval_recall_ceiling(other_keys[both].tolist(), self.ks).items():
                    values[f"recall_ceiling@{k}_{name}"] = torch.tensor(value)
        values["contrastive_loss"] = torch.stack(losses).sum()
        return values
