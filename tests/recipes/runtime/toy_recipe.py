"""A toy recipe for the runtime tests: learn y = [x · w > 0] from 4 features split into two modalities.

It is built on the shared recipe base (``RecipeDataModule``, ``RecipeModule`` with its one config) and exercises
everything the runtime promises a real recipe: a ``links`` entry (the data's ``num_features`` reaches the model's
config and its saved hyperparameters), the modality-subset table, the missingness machinery, tied weights (``model.safetensors`` must cope with shared
tensors), test metrics, a ``score_frame`` that gives bad rows an error, and an ``explain`` report with a figure.
"""
from __future__ import annotations

import os
import signal

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import polars as pl
import torch
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import BinaryAccuracy, BinaryAUROC

from fusion_core import create_fusion

from recipes.runtime import registry as recipe_registry
from recipes.runtime.datamodule import SPLITS, RecipeDataModule, TensorRows
from recipes.runtime.metrics import BinaryNLL
from recipes.runtime.config import RecipeConfig
from recipes.runtime.module import RecipeModule
from recipes.runtime.recipe import Recipe
from recipes.runtime.registry import register_recipe
from recipes.runtime.report import HtmlReport
from recipes.runtime.runs import Run

TRUE_WEIGHTS = torch.tensor([1.5, -2.0, 0.5, 1.0])
FEATURES = ("f0", "f1", "f2", "f3")
SENTINEL = -999.0  # a value the toy scorer refuses for a whole chunk, to test the row-by-row fallback


class ToyData(RecipeDataModule):
    """Gaussian features; the label is the sign of a fixed linear function of the first four.
    ``num_features`` (4 + ``noise_features``) is linked into the model's config. Modality ``a`` is features 0-1,
    ``b`` the rest; ``missing_b`` makes ``b`` absent for that share of the rows (more often for label 1 when
    ``missing_not_at_random``)."""

    def __init__(self, num_train: int = 64, num_val: int = 16, num_test: int = 32, batch_size: int = 8,
                 noise_features: int = 0, missing_b: float = 0.0, missing_not_at_random: bool = False, seed: int = 0):
        super().__init__(batch_size=batch_size, seed=seed)
        self.save_hyperparameters()
        self.num_features = 4 + noise_features

    def build_splits(self) -> dict[str, TensorRows]:
        hp = self.hparams
        generator = torch.Generator().manual_seed(hp.seed)
        total = hp.num_train + hp.num_val + hp.num_test
        x = torch.randn(total, self.num_features, generator=generator)
        y = (x[:, :4] @ TRUE_WEIGHTS > 0).float()
        rate = torch.full((total,), hp.missing_b)
        if hp.missing_not_at_random:
            rate = torch.where(y > 0, 2 * rate, 0.5 * rate).clamp(max=0.95)
        present_b = torch.rand(total, generator=generator) >= rate
        tensors = {"x": x, "label": y, "present_a": torch.ones(total, dtype=torch.bool), "present_b": present_b}
        bounds = [0, hp.num_train, hp.num_train + hp.num_val, total]
        return {name: TensorRows(tensors, torch.arange(lo, hi)) for name, lo, hi in zip(SPLITS, bounds, bounds[1:])}


@dataclass(kw_only=True)
class ToyConfig(RecipeConfig):
    """The toy model's one config: ``num_features`` comes from the data (linked), ``fusion`` is any fusion_core
    operator over the two modalities."""

    num_features: int = 4
    hidden: int = 8
    fusion: str = "concat"
    lr: float = 0.05
    interrupt_at_step: int | None = None
    kill_at_step: int | None = None  # SIGKILL the training process when this many steps are done (the resume test)


class ToyClassifier(RecipeModule):
    """Two modalities (features 0-1 and the rest), each a token, fused by ``config.fusion``; logits ``(B,)``.
    ``mirror`` shares ``proj_a``'s weight (tied tensors)."""

    config_class = ToyConfig
    progress_metrics = ("acc",)

    def __init__(self, config: ToyConfig = ToyConfig()):
        super().__init__(config, modalities=("a", "b"))
        cfg = self.config
        self.proj_a = nn.Linear(2, cfg.hidden)
        self.mirror = nn.Linear(2, cfg.hidden, bias=False)
        self.mirror.weight = self.proj_a.weight
        self.proj_b = nn.Linear(cfg.num_features - 2, cfg.hidden)
        options = {"num_outputs": 1} if cfg.fusion == "sequential" else {}
        self.fusion = create_fusion(cfg.fusion, modality_dims={"a": cfg.hidden, "b": cfg.hidden}, dim=cfg.hidden, **options)
        self.head = nn.Linear(cfg.hidden, 1)

    def fused(self, x: torch.Tensor, present: dict[str, torch.Tensor] | None = None):
        tokens = {"a": torch.tanh(self.proj_a(x[:, :2]))[:, None], "b": torch.tanh(self.proj_b(x[:, 2:]))[:, None]}
        return self.fusion(tokens, present=present)

    def forward(self, x: torch.Tensor, present: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        return self.head(self.fused(x, present).pooled).squeeze(-1)

    def present_of(self, batch):
        return {m: batch[f"present_{m}"].bool() for m in self.modalities}

    def strata_of(self, batch):
        return batch["label"].long()

    def build_metrics(self) -> MetricCollection:
        return MetricCollection({"acc": BinaryAccuracy(), "auroc": BinaryAUROC(), "loss": BinaryNLL()})

    def update_metrics(self, metrics, batch, present) -> None:
        metrics.update(torch.sigmoid(self(batch["x"], present)), batch["label"].long())

    def training_step(self, batch, batch_idx):
        if self.config.interrupt_at_step is not None and self.global_step >= self.config.interrupt_at_step:
            raise KeyboardInterrupt
        if self.config.kill_at_step is not None and self.global_step == self.config.kill_at_step:
            os.kill(os.getpid(), signal.SIGKILL)
        out = self.fused(batch["x"], self.training_present(batch))
        label = batch["label"]
        loss = nn.functional.binary_cross_entropy_with_logits(self.head(out.pooled).squeeze(-1), label)
        steps = self.step_loss(out.steps, lambda step: nn.functional.binary_cross_entropy_with_logits(step[:, 0], label))
        if steps is not None:
            loss = loss + steps
        self.log("train/loss", loss)
        return loss


def make_frame(rows: int, seed: int = 1) -> pl.DataFrame:
    """A scoring input: ``id`` plus the four features (Float64)."""
    x = torch.randn(rows, 4, generator=torch.Generator().manual_seed(seed))
    return pl.DataFrame({"id": [f"r{i}" for i in range(rows)], **{f: x[:, i].tolist() for i, f in enumerate(FEATURES)}})


@dataclass
class ToyRecipe(Recipe):
    @property
    def module_class(self) -> type[ToyClassifier]:
        return ToyClassifier

    @property
    def datamodule_class(self) -> type[ToyData]:
        return ToyData

    def on_train_end(self, run: Run, datamodule: ToyData) -> None:
        (run.path / "feature_names.txt").write_text("\n".join(FEATURES) + "\n")

    def score_frame(self, predictor: ToyClassifier, frame: pl.DataFrame) -> pl.DataFrame:
        values = frame.select(pl.col(c).cast(pl.Float64, strict=False).alias(c) for c in FEATURES)
        if (values["f0"] == SENTINEL).any():
            raise ValueError(f"f0 = {SENTINEL} is not allowed")
        errors = frame.select(
            pl.concat_str(
                [
                    pl.when(pl.col(c).is_null()).then(pl.lit(f"{c} is missing"))
                    .when(values[c].is_null()).then(pl.lit(f"{c} is not a number: ") + pl.col(c).cast(pl.Utf8))
                    for c in FEATURES
                ],
                separator="; ",
                ignore_nulls=True,
            ).alias("error")
        )["error"]
        errors = errors.replace("", None)  # concat_str gives "" when no column had a problem
        ok = errors.is_null()
        x = torch.tensor(values.filter(ok).to_numpy(), dtype=torch.float32).reshape(-1, 4)
        with torch.no_grad():
            scores = iter(torch.sigmoid(predictor(x)).double().tolist())
        score = pl.Series("score", [next(scores) if good else None for good in ok.to_list()], dtype=pl.Float64)
        # an extra output: the model's decision at 0.5, declared in TOY.extra_outputs
        return pl.DataFrame({"score": score, "error": errors}).with_columns(positive=pl.col("score") > 0.5)

    def demo_input(self, run: Run, path: Path) -> Path:
        make_frame(32).write_parquet(path)
        return path

    def explain(self, run: Run, input_path: Path | None, out_path: Path, *, max_examples: int = 4) -> Path:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        frame = pl.read_parquet(input_path) if input_path is not None else make_frame(64)
        scored = pl.concat([frame, self.score_frame(run.load_module(), frame)], how="horizontal")
        report = HtmlReport(f"toy — run {run.run_id}")
        report.heading("Score distribution")
        report.text("The toy model's probability that x · w > 0.\n\nRows with bad values get an `error` instead.")
        fig, ax = plt.subplots(figsize=(4, 3))
        ax.hist(scored["score"].drop_nulls().to_list(), bins=10)
        report.figure(fig, caption="scores")
        report.table(run.metrics, caption="test metrics")
        report.table(scored.head(max_examples), caption="examples")
        return report.save(out_path)


TOY = ToyRecipe(
    name="toy",
    configs_dir=Path(__file__).parent / "toy_configs",
    aliases=("toy-alias",),
    links=(("data.num_features", "model.config.num_features"),),
    score_columns=FEATURES,
    passthrough=("id",),
    extra_outputs=(("positive", "Boolean"),),
    description="A toy classifier used by the runtime tests.",
)


@contextlib.contextmanager
def registered(recipe: Recipe = TOY) -> Iterator[Recipe]:
    """Register ``recipe`` for the duration of a block, then take it out of the registry again."""
    register_recipe(recipe)
    try:
        yield recipe
    finally:
        recipe_registry._RECIPES.pop(recipe.name, None)
        for alias in recipe.aliases:
            recipe_registry._ALIASES.pop(alias, None)
