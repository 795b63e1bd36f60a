"""The base LightningModule every vertical's module subclasses: one config, metrics that are right across processes,
and the missing-modality machinery of fusion_core for any recipe, switched on from its YAML.

One config. A vertical declares its hyperparameters once, as a dataclass that extends :class:`RecipeConfig`; the
module takes it whole (``def __init__(self, config: MyConfig = MyConfig())``) and hands it (or a part of it) to the
model builder, without re-packing. LightningCLI reads it from YAML as ``model: {config: {dim: 64, ...}}``, links
data-derived sizes into it (``("data.num_items", "model.config.num_items")``), and the run's ``hparams.yaml`` stores
it as a plain mapping, which :meth:`RecipeModule.__init__` accepts too (that is how a run is rebuilt for scoring).

Metrics. A vertical returns a :class:`torchmetrics.MetricCollection` from :meth:`RecipeModule.build_metrics` and
updates it in :meth:`RecipeModule.update_metrics`; the base class keeps one collection per stage, computes it at the
end of the epoch and logs ``<stage>/<name>``. torchmetrics reduces each metric's state across processes before
``compute``, so a DDP run reports the metrics of the whole split, never one process's share.

Modality subsets. With ``subset_table`` (the default) the test loop evaluates the batch again for every non-empty
proper subset of :attr:`RecipeModule.modalities`, by switching ``present`` off for the others, and logs
``test/<name>@without_<m>[+<m>...]``: the robustness table ``fusion explain`` and the model card show.

Missing modalities in training (fusion_core): ``modality_dropout`` drops each present modality with a
label-independent probability, ``balance_missingness`` equalises every modality's missing rate across the label
strata (:class:`fusion_core.MissingnessBalancer`, for data missing not at random); both act through
:meth:`RecipeModule.training_present`. ``step_loss_weight`` adds MultiModN's per-step loss (the task loss of every
state of ``sequential`` fusion, averaged) through :meth:`RecipeModule.step_loss`.
"""
from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar

import lightning.pytorch as pl
import torch
from torch import Tensor, nn
from torchmetrics import Metric, MetricCollection

from fusion_core import MissingnessBalancer
from recipes.runtime.config import RecipeConfig
from recipes.runtime.runs import to_plain
from recipes.runtime.subsets import SUBSET_MARK, subset_suffix

__all__ = ["RecipeConfig", "RecipeModule", "SUBSET_MARK", "subset_suffix"]

class RecipeModule(pl.LightningModule):
    """Base module: see the module docstring. Subclasses set :attr:`config_class`, call
    ``super().__init__(config, modalities=(...))`` and implement:

    - :meth:`build_metrics` → a fresh :class:`torchmetrics.MetricCollection` (called once per stage and subset);
    - :meth:`present_of` → ``{modality: Bool (B,)}`` of a batch;
    - :meth:`update_metrics` → run the model on a batch with a given ``present`` and update a collection (every
      metric of it, on every batch: under DDP all processes must agree on which metrics have data to reduce);
    - ``training_step`` (the loss), using :meth:`training_present` and :meth:`step_loss` where they apply;
    - optionally :meth:`strata_of` (label strata for ``balance_missingness``) and :meth:`build_subset_metrics`.
    """

    config_class: ClassVar[type[RecipeConfig]] = RecipeConfig
    #: metric names shown in the progress bar during validation
    progress_metrics: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: RecipeConfig | Mapping[str, Any], *, modalities: Iterable[str]) -> None:
        super().__init__()
        self.config = self.coerce_config(config)
        self.modalities = tuple(str(m) for m in modalities)
        if not self.modalities or len(set(self.modalities)) != len(self.modalities):
            raise ValueError(f"modalities must be distinct names, at least one; got {self.modalities}")
        dropout = self.config.modality_dropout
        unknown = sorted(set(dropout) - set(self.modalities)) if isinstance(dropout, dict) else []
        if unknown:
            raise ValueError(f"modality_dropout names {unknown}, which this model does not have; its modalities are "
                             f"{list(self.modalities)}")
        self.save_hyperparameters({"config": to_plain(dataclasses.asdict(self.config))})
        balancer = None
        if self.config.balance_missingness or _any_rate(dropout):
            balancer = MissingnessBalancer(dropout=dict(dropout) if isinstance(dropout, dict) else float(dropout),
                                           balance=self.config.balance_missingness)
        # outside the module tree: it holds no learned weight and safetensors cannot save its dict state
        object.__setattr__(self, "balancer", balancer)
        self.stage_metrics = nn.ModuleDict()

    # --- config ------------------------------------------------------------------------------------------
    @classmethod
    def coerce_config(cls, config: RecipeConfig | Mapping[str, Any]) -> RecipeConfig:
        """``config`` as a :attr:`config_class` instance (a mapping from ``hparams.yaml`` is converted)."""
        if isinstance(config, cls.config_class):
            return config
        if isinstance(config, RecipeConfig):
            raise TypeError(f"{cls.__name__} takes a {cls.config_class.__name__}; got a {type(config).__name__}")
        if not isinstance(config, Mapping):
            raise TypeError(f"config must be a {cls.config_class.__name__} or a mapping of its fields; got {type(config).__name__}")
        names = {f.name for f in dataclasses.fields(cls.config_class)}
        unknown = sorted(set(config) - names)
        if unknown:
            raise ValueError(f"{cls.config_class.__name__} has no field(s) {unknown}; its fields are {sorted(names)}")
        return cls.config_class(**dict(config))

    # --- what a vertical fills in ------------------------------------------------------------------------
    def build_metrics(self) -> MetricCollection:
        raise TypeError(f"{type(self).__name__} must implement build_metrics() -> MetricCollection")

    def build_subset_metrics(self) -> MetricCollection:
        """The collection of each modality-subset evaluation (default: the same as :meth:`build_metrics`)."""
        return self.build_metrics()

    def present_of(self, batch: Mapping[str, Any]) -> dict[str, Tensor]:
        raise TypeError(f"{type(self).__name__} must implement present_of(batch) -> {{modality: Bool (B,)}}")

    def update_metrics(self, metrics: MetricCollection, batch: Mapping[str, Any], present: dict[str, Tensor]) -> None:
        raise TypeError(f"{type(self).__name__} must implement update_metrics(metrics, batch, present)")

    def strata_of(self, batch: Mapping[str, Any]) -> Tensor | None:
        """Label strata ``Long (B,)`` for ``balance_missingness`` (None: this recipe has none)."""
        return None

    # --- missing modalities in training -------------------------------------------------------------------
    def training_present(self, batch: Mapping[str, Any], present: dict[str, Tensor] | None = None) -> dict[str, Tensor]:
        """``present`` (default: :meth:`present_of`) after the config's modality dropout and missingness balancing;
        unchanged outside training or when both are off."""
        present = self.present_of(batch) if present is None else present
        if self.balancer is None or not self.training:
            return present
        strata = self.strata_of(batch)
        if self.config.balance_missingness and strata is None:
            raise ValueError(f"balance_missingness needs label strata, and {type(self).__name__}.strata_of gives none; "
                             "use modality_dropout instead")
        return self.balancer(present, strata)

    def step_loss(self, steps: list[Tensor] | None, loss: Callable[[Tensor], Tensor]) -> Tensor | None:
        """``step_loss_weight`` × the mean of ``loss(step)`` over the fusion's per-step predictions (MultiModN), or
        None when the weight is 0 or the fusion gives no steps."""
        if not steps or self.config.step_loss_weight == 0:
            return None
        return self.config.step_loss_weight * torch.stack([loss(step) for step in steps]).mean()

    # --- evaluation, the same for every vertical ------------------------------------------------------------
    def subsets(self) -> list[tuple[str, ...]]:
        """The modalities dropped by each entry of the robustness table: every non-empty proper subset is kept."""
        if not self.config.subset_table or len(self.modalities) < 2:
            return []
        return [dropped for size in range(1, len(self.modalities))
                for dropped in itertools.combinations(self.modalities, size)]

    def metrics_of(self, stage: str, dropped: tuple[str, ...] = ()) -> MetricCollection:
        """The collection of ``stage`` (and of a modality subset), built on first use on this module's device."""
        key = f"{stage}{subset_suffix(dropped)}".replace(".", "_")
        if key not in self.stage_metrics:
            collection = self.build_subset_metrics() if dropped else self.build_metrics()
            self.stage_metrics[key] = collection.to(self.device)
        return self.stage_metrics[key]  # type: ignore[return-value]

    def evaluate(self, batch: Mapping[str, Any], stage: str) -> None:
        present = self.present_of(batch)
        self.update_metrics(self.metrics_of(stage), batch, present)
        if stage != "test":
            return
        for dropped in self.subsets():
            kept = {m: torch.zeros_like(p) if m in dropped else p for m, p in present.items()}
            self.update_metrics(self.metrics_of(stage, dropped), batch, kept)

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        self.evaluate(batch, "val")

    def test_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        self.evaluate(batch, "test")

    def on_validation_epoch_end(self) -> None:
        self.log_stage("val")

    def on_test_epoch_end(self) -> None:
        self.log_stage("test")

    def log_stage(self, stage: str) -> dict[str, float]:
        """Compute (across processes), log and reset the stage's collections; returns what was logged. A metric
        that is undefined on this split (NaN: one class only) is not logged."""
        logged: dict[str, float] = {}
        variants = [()] + (self.subsets() if stage == "test" else [])
        for dropped in variants:
            key = f"{stage}{subset_suffix(dropped)}".replace(".", "_")
            if key not in self.stage_metrics:
                continue
            collection = self.stage_metrics[key]
            for name, value in _computed(collection).items():
                if not math.isfinite(value):
                    continue
                full = f"{stage}/{name}{subset_suffix(dropped)}"
                # already reduced across processes by torchmetrics: every rank logs the same number
                self.log(full, value, prog_bar=stage == "val" and not dropped and name in self.progress_metrics)
                logged[full] = value
            collection.reset()
        return logged

    def configure_optimizers(self) -> torch.optim.Optimizer:
        # frozen weights (a pretrained base under LoRA adapters) stay out of the optimizer and its weight decay
        trainable = [p for p in self.parameters() if p.requires_grad]
        return torch.optim.AdamW(trainable, lr=self.config.lr, weight_decay=self.config.weight_decay)


def _computed(collection: MetricCollection) -> dict[str, float]:
    """``{name: float}`` of every metric of ``collection``; a metric that returns a dict contributes its keys."""
    values: dict[str, float] = {}
    for name, metric in collection.items(keep_base=True, copy_state=False):
        assert isinstance(metric, Metric)
        if not metric.update_called:
            continue
        result = metric.compute()
        if isinstance(result, Mapping):
            values.update({str(k): float(v) for k, v in result.items()})
        else:
            values[name] = float(result)
    return values


def _any_rate(dropout: float | dict[str, float]) -> bool:
    return any(float(v) > 0 for v in dropout.values()) if isinstance(dropout, dict) else float(dropout) > 0
