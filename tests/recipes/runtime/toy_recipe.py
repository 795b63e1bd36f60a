"""A toy recipe for the runtime tests: learn y = [x · w > 0] from 4 features with a tiny MLP.

It exercises everything the runtime promises a real recipe: a ``links`` entry (the data's ``num_features``
reaches the model and its saved hyperparameters), tied weights (``model.safetensors`` must cope with shared
tensors), test metrics, a ``score_frame`` that gives bad rows an error, and an ``explain`` report with a figure.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import lightning.pytorch as L
import polars as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from recipes.runtime import registry as recipe_registry
from recipes.runtime.recipe import Recipe
from recipes.runtime.registry import register_recipe
from recipes.runtime.report import HtmlReport
from recipes.runtime.runs import Run

TRUE_WEIGHTS = torch.tensor([1.5, -2.0, 0.5, 1.0])
FEATURES = ("f0", "f1", "f2", "f3")
SENTINEL = -999.0  # a value the toy scorer refuses for a whole chunk, to test the row-by-row fallback


class ToyData(L.LightningDataModule):
    """Gaussian features; the label is the sign of a fixed linear function of the first four.
    ``num_features`` (4 + ``noise_features``) is linked into the model's hyperparameters."""

    def __init__(self, num_train: int = 64, num_val: int = 16, num_test: int = 32, batch_size: int = 8,
                 noise_features: int = 0, seed: int = 0):
        super().__init__()
        self.save_hyperparameters()
        self.num_features = 4 + noise_features
        generator = torch.Generator().manual_seed(seed)
        total = num_train + num_val + num_test
        x = torch.randn(total, self.num_features, generator=generator)
        y = (x[:, :4] @ TRUE_WEIGHTS > 0).float()
        bounds = [0, num_train, num_train + num_val, total]
        self.splits = {
            name: TensorDataset(x[lo:hi], y[lo:hi]) for name, lo, hi in zip(("train", "val", "test"), bounds, bounds[1:])
        }
        self.batch_size = batch_size

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.splits["train"], batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.splits["val"], batch_size=self.batch_size)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self.splits["test"], batch_size=self.batch_size)


class ToyClassifier(L.LightningModule):
    """A one-hidden-layer MLP returning logits ``(B,)``. ``mirror`` shares ``proj``'s weight (tied tensors)."""

    def __init__(self, num_features: int = 4, hidden: int = 8, lr: float = 0.05, interrupt_at_step: int | None = None):
        super().__init__()
        self.save_hyperparameters()
        self.proj = nn.Linear(num_features, hidden)
        self.mirror = nn.Linear(num_features, hidden, bias=False)
        self.mirror.weight = self.proj.weight
        self.head = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.proj(x))).squeeze(-1)

    def _loss(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = batch
        logits = self(x)
        return nn.functional.binary_cross_entropy_with_logits(logits, y), ((logits > 0).float() == y).float().mean()

    def training_step(self, batch, batch_idx):
        if self.hparams.interrupt_at_step is not None and self.global_step >= self.hparams.interrupt_at_step:
            raise KeyboardInterrupt
        loss, _ = self._loss(batch)
        self.log("train/loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        loss, acc = self._loss(batch)
        self.log_dict({"val/loss": loss, "val/acc": acc}, sync_dist=True)

    def test_step(self, batch, batch_idx):
        loss, acc = self._loss(batch)
        self.log_dict({"test/loss": loss, "test/acc": acc}, sync_dist=True)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)


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
    links=(("data.num_features", "model.num_features"),),
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
