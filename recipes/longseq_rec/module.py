"""The LightningModule that trains DIN / TWIN / DARE on click logs with binary cross-entropy."""
from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.classification import BinaryAUROC

from recipes.longseq_rec.config import RecConfig
from recipes.longseq_rec.metrics import SearchRecall
from recipes.longseq_rec.model import RecOutput, build_model
from recipes.runtime.metrics import GroupAUROC
from recipes.runtime.module import RecipeModule

__all__ = ["MODALITIES", "RecModule"]

#: what a click prediction fuses about the user: the behaviour history and the profile. The target item is what is
#: scored, not a modality; the time gaps belong to the history (the explainer's four feature groups split them).
MODALITIES: tuple[str, ...] = ("history", "profile")


class RecModule(RecipeModule):
    """Click-through prediction over long behaviour histories; the model is built from :class:`RecConfig`.

    Logs ``train/loss``, ``{val,test}/{auc,gauc,logloss}`` and, when batches carry planted ``relevant`` behaviours
    (lifelong synthetic data), ``{val,test}/search_recall``: the share of the relevant behaviours of a positive that
    the model attended to (the stage-1 top-k for TWIN and DARE, the recent window for DIN), averaged over positives.
    The test loop adds the same metrics with the history or the profile switched off (``@without_history``,
    ``@without_profile``). Label strata for ``balance_missingness`` are the clicks.
    """

    config_class = RecConfig
    progress_metrics = ("auc",)

    def __init__(self, config: RecConfig = RecConfig()) -> None:
        super().__init__(config, modalities=MODALITIES)
        self.recommender = build_model(self.config)

    def forward(self, batch: Mapping[str, Tensor], present: Mapping[str, Tensor] | None = None) -> RecOutput:
        return self.recommender(batch, present)

    def present_of(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """The history is present when the row has a behaviour; the profile when the user is known (an unknown
        user's profile ids are all 0, the padding id)."""
        return {"history": batch["hist_mask"].any(dim=1), "profile": batch["user"] > 0}

    def strata_of(self, batch: Mapping[str, Tensor]) -> Tensor:
        return batch["label"].long()

    def build_metrics(self) -> MetricCollection:
        # each metric takes its own arguments, so no compute groups (they assume one shared update call)
        return MetricCollection({"auc": BinaryAUROC(), "gauc": GroupAUROC(), "logloss": MeanMetric(),
                                 "search_recall": SearchRecall()}, compute_groups=False)

    def update_metrics(self, metrics: MetricCollection, batch: Mapping[str, Tensor], present: dict[str, Tensor]) -> None:
        out = self(batch, present)
        label = batch["label"].float()
        prob = torch.sigmoid(out.logit)
        metrics["auc"].update(prob, label.long())
        metrics["gauc"].update(prob, label.long(), batch["user"])
        metrics["logloss"].update(F.binary_cross_entropy_with_logits(out.logit, label, reduction="none"))
        metrics["search_recall"].update(out.retrieved, batch["relevant"], label)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """``adam``: Adam with ``weight_decay`` as an L2 penalty in the gradient (the DARE reference, 1e-6);
        ``adamw``: the runtime's decoupled decay."""
        if self.config.optimizer == "adamw":
            return super().configure_optimizers()
        trainable = [p for p in self.parameters() if p.requires_grad]
        return torch.optim.Adam(trainable, lr=self.config.lr, weight_decay=self.config.weight_decay)

    def training_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> Tensor:
        present = self.training_present(batch)
        out = self(batch, present)
        loss = F.binary_cross_entropy_with_logits(out.logit, batch["label"].float())
        if getattr(self.recommender, "aux_head", None) is not None:  # the reference's auxiliary whole-history loss
            aux = self.recommender.auxiliary_logit(batch, present)
            loss = loss + F.binary_cross_entropy_with_logits(aux, batch["label"].float())
        self.log("train/loss", loss, prog_bar=True, batch_size=out.logit.shape[0])
        return loss
