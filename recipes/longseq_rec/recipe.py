"""The ``longseq_rec`` recipe: DIN / TWIN / DARE click models trained, scored and explained by the runtime.

Scoring input (raw ids): ``target_item``; ``user_id`` and ``history_items`` (oldest first), each of which a row may
lack (it is then scored without it, with a ``warnings`` entry); optional ``history_timestamps``,
``target_timestamp`` (Unix seconds); ``label`` is passed through when present. No column names a file, so no path is
read from the input.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl

from recipes.longseq_rec.predictor import RecPredictor
from recipes.runtime.recipe import Recipe

if TYPE_CHECKING:
    from recipes.longseq_rec.data import RecDataModule
    from recipes.runtime.runs import Run

__all__ = ["LongSeqRecipe", "RECIPE", "VOCAB_DIR"]

VOCAB_DIR = "vocab"


@dataclass
class LongSeqRecipe(Recipe):
    """Long-sequence click-through prediction: ``din``, ``twin`` and ``dare`` (``--model.config.model``)."""

    # --- training -----------------------------------------------------------------------------------------
    def on_train_end(self, run: "Run", datamodule: "RecDataModule") -> None:
        datamodule.vocab.save(run.path / VOCAB_DIR)
        self._calibrate(run, datamodule)

    def _calibrate(self, run: "Run", datamodule: "RecDataModule") -> None:
        """Fit the click logits' temperature on the validation impressions and save it (``calibration.json``); fewer
        than 100 impressions keep T = 1."""
        from recipes.runtime.calibration import calibrate, collect_logits

        logits, labels = collect_logits(run.load_module(), datamodule.val_dataloader(),
                                        lambda module, batch: (module(batch).logit, batch["label"]))
        calibrate(run.path, logits, labels)

    def card_notes(self, run: "Run") -> dict[str, str]:
        notes = super().card_notes(run)
        notes["Intended use"] = (
            "Research and demonstration of long-sequence click-through models (DIN, TWIN, DARE) on public or "
            "synthetic logs. Scores rank candidate items for a user given their history. They are temperature-scaled on "
            "the run's validation impressions (calibration.json), whose negatives are sampled, so they are not "
            "purchase or watch probabilities for any real population."
        )
        notes["Limitations"] = (
            "Negatives are sampled uniformly from items the user never touched, so popularity alone separates many "
            "pairs and AUC is optimistic compared with logged impressions. Target items unseen in training cannot be "
            "scored (such rows get an error); unknown users and history items are scored without (a warning says so). " + notes["Limitations"]
        )
        return notes

    # --- scoring ------------------------------------------------------------------------------------------
    def load_predictor(self, run: "Run") -> RecPredictor:
        from recipes.longseq_rec.encoding import RecVocab

        folder = run.path / VOCAB_DIR
        if not (folder / "vocab.json").is_file():
            raise FileNotFoundError(
                f"run {run.path} has no {VOCAB_DIR}/vocab.json (the id vocabulary written at the end of training); "
                f"finish the run with `fusion train {self.name} --resume {run.run_id}` or train a new one"
            )
        from recipes.runtime.calibration import load_temperature

        return RecPredictor(run.load_module(), RecVocab.load(folder), load_temperature(run.path))

    def score_frame(self, predictor: RecPredictor, frame: pl.DataFrame) -> pl.DataFrame:
        scores: list[float | None] = [None] * frame.height
        errors: list[str | None] = [None] * frame.height
        warnings: list[str | None] = [None] * frame.height
        step = predictor.rows_per_step
        for start in range(0, frame.height, step):
            encoded = predictor.encode(frame.slice(start, step))
            errors[start : start + len(encoded.errors)] = encoded.errors
            warnings[start : start + len(encoded.warnings)] = encoded.warnings
            if not encoded.valid_rows:
                continue
            probability = predictor.row_probabilities(encoded.batch).double().tolist()
            for offset, value in zip(encoded.valid_rows, probability):
                scores[start + offset] = value
        return pl.DataFrame({"score": pl.Series("score", scores, dtype=pl.Float64),
                             "warnings": pl.Series("warnings", warnings, dtype=pl.Utf8),
                             "error": pl.Series("error", errors, dtype=pl.Utf8)})

    def demo_input(self, run: "Run", path: Path) -> Path:
        from recipes.longseq_rec.data import RecDataModule

        path.parent.mkdir(parents=True, exist_ok=True)
        RecDataModule.from_vocab(self.load_predictor(run).vocab).scoring_frame("test").write_parquet(path)
        return path

    # --- explaining ---------------------------------------------------------------------------------------
    def explain(self, run: "Run", input_path: Path | None, out_path: Path, *, max_examples: int = 4) -> Path:
        from recipes.longseq_rec.explain import write_report

        return write_report(run, self.load_predictor(run), input_path, out_path, max_examples=max_examples)


RECIPE = LongSeqRecipe(
    name="longseq_rec",
    configs_dir=Path(__file__).parent / "configs",
    module="recipes.longseq_rec.module:RecModule",
    datamodule="recipes.longseq_rec.data:RecDataModule",
    variant_field="model",
    aliases=("rec", "recommendation"),
    links=(
        ("data.num_users", "model.config.num_users"),
        ("data.num_items", "model.config.num_items"),
        ("data.num_cates", "model.config.num_cates"),
        ("data.num_time_buckets", "model.config.num_time_buckets"),
        ("data.profile_cardinalities", "model.config.profile_cardinalities"),
    ),
    modality_columns={"history": ("history_items", "history_timestamps"), "profile": ("user_id",)},
    score_columns=("target_item",),
    passthrough=("user_id", "target_item", "label"),
    datasets=("movielens-100k",),
    description=(
        "Long-sequence click-through prediction with decoupled attention and representation embeddings "
        "(DARE) and its baselines DIN and TWIN."
    ),
)
