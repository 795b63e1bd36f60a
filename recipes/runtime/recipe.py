"""What a recipe is: the interface the CLI, the scorer, the reports and the apps talk to a vertical through.

A vertical's ``recipe`` module defines a :class:`Recipe` subclass and an instance of it, ``RECIPE``, which its
``pyproject.toml`` names under the ``fusion_suite.recipes`` entry point group (see :mod:`recipes.runtime.registry`).
Everything else in ``recipes.runtime`` and ``apps`` is generic and only talks to recipes through this interface.
"""
from __future__ import annotations

import abc
import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # heavy imports stay out of `fusion --help`
    import lightning.pytorch as pl_
    import polars as pl

    from recipes.runtime.runs import Run

__all__ = ["Recipe"]

@dataclass
class Recipe(abc.ABC):
    """One vertical: its Lightning classes, shipped configs, and how to score and explain its data.

    ``name``          registry name, also the folder under ``runs/``
    ``aliases``       other names the CLI accepts (``fusion train rec``)
    ``configs_dir``   folder of shipped YAML configs (``quick.yaml`` for the demo, ``full.yaml``)
    ``module``        ``"package.module:Class"`` of the LightningModule (imported on first use, so ``fusion --help``
                      and the registry stay light)
    ``datamodule``    ``"package.module:Class"`` of the LightningDataModule
    ``links``         ``(source, target)`` pairs linked at instantiation by LightningCLI, e.g.
                      ``("data.num_items", "model.config.num_items")`` so data-derived sizes reach the model's
                      config and land in its saved hyperparameters
    ``variant_field`` the config field that names which model of the recipe a run trained (``model`` for DIN/TWIN/DARE),
                      shown next to the run in the dashboards; empty when the recipe has one model
    ``score_columns`` input columns a scoring file must have (checked before any row is scored)
    ``passthrough``   input columns copied into the scored output next to ``score`` and ``error``
    ``extra_outputs`` ``(column, polars dtype name)`` pairs that ``score_frame`` adds next to ``score``, e.g.
                      ``(("p_cardiomegaly", "Float64"),)``; they reach the scored file (null where a row failed)
    ``datasets``      names of the datasets (``recipes.runtime.datasets``) ``make demo`` fetches first
    ``modality_columns`` modality → the input columns that carry it (``{"ecg": ("ecg_path",)}``); a row whose columns
                      of a modality are null is scored without that modality. The contract test scores every subset.
    """

    name: str
    configs_dir: Path
    module: str = ""
    datamodule: str = ""
    aliases: tuple[str, ...] = ()
    links: tuple[tuple[str, str], ...] = ()
    score_columns: tuple[str, ...] = ()
    passthrough: tuple[str, ...] = ()
    extra_outputs: tuple[tuple[str, str], ...] = ()
    datasets: tuple[str, ...] = ()
    description: str = ""
    variant_field: str = ""
    modality_columns: dict[str, tuple[str, ...]] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    # --- training -------------------------------------------------------------------------------------
    @property
    def module_class(self) -> type["pl_.LightningModule"]:
        """The LightningModule (:attr:`module`); its ``__init__`` args are the ``model:`` section of a config."""
        return _import_object(self.module, f"recipe {self.name}: module")

    @property
    def datamodule_class(self) -> type["pl_.LightningDataModule"]:
        """The LightningDataModule (:attr:`datamodule`); its ``__init__`` args are the ``data:`` section of a config."""
        return _import_object(self.datamodule, f"recipe {self.name}: datamodule")

    def variant_of(self, run: "Run") -> str | None:
        """Which of the recipe's models ``run`` trained (its config's :attr:`variant_field`), or None."""
        config = run.hparams.get("config") or {}
        value = config.get(self.variant_field) if self.variant_field else None
        return value if isinstance(value, str) else None

    def config_path(self, name_or_path: str | Path) -> Path:
        """``quick`` → the shipped ``configs/quick.yaml``; anything else is a path to a YAML file."""
        candidate = self.configs_dir / f"{name_or_path}.yaml"
        if candidate.is_file():
            return candidate
        path = Path(name_or_path)
        if path.is_file():
            return path
        shipped = sorted(p.stem for p in self.configs_dir.glob("*.yaml"))
        raise FileNotFoundError(f"no config {str(name_or_path)!r} for recipe {self.name}; shipped configs: {shipped}, or pass a YAML path")

    def config_chain(self, name_or_path: str | Path) -> list[Path]:
        """The YAML files a config stands for, base first: a config whose header says ``# extends: quick`` holds
        only what differs from ``quick`` (itself possibly extending another), and is applied on top of it."""
        chain = [self.config_path(name_or_path)]
        while (base := _extends(chain[0])) is not None:
            path = self.config_path(base)
            if path in chain:
                raise ValueError(f"config {chain[0]} extends {base!r}, which extends it back: {[str(p) for p in chain]}")
            chain.insert(0, path)
        return chain

    def on_train_end(self, run: "Run", datamodule: "pl_.LightningDataModule") -> None:
        """Write recipe artefacts the scorer needs (vocabularies, normalisers) into ``run.path``.
        Called on rank 0 after training. Default: nothing."""

    # --- scoring --------------------------------------------------------------------------------------
    def load_predictor(self, run: "Run") -> Any:
        """What :meth:`score_frame` scores with. Default: the run's module in eval mode
        (``run.load_module()``); recipes that need artefacts (vocabularies) return an object holding both."""
        return run.load_module()

    @abc.abstractmethod
    def score_frame(self, predictor: Any, frame: "pl.DataFrame") -> "pl.DataFrame":
        """Score one chunk. Returns exactly ``len(frame)`` rows, in order, with columns ``score`` (Float64,
        null where the row could not be scored), any ``extra_outputs``, and ``error`` (Utf8, null where it was). Never raises for a
        bad row: the row gets an error text that names what is wrong and how to fix it."""

    @abc.abstractmethod
    def demo_input(self, run: "Run", path: Path) -> Path:
        """Write a scoring Parquet of the run's held-out data (raw input schema, with labels when known) to
        ``path`` for ``make demo``; return the path."""

    # --- documenting ----------------------------------------------------------------------------------
    def card_notes(self, run: "Run") -> dict[str, str]:
        """Sections of the run's ``MODEL_CARD.md`` that only the recipe can write, title → Markdown.
        Override to describe the intended use, the data's known biases and the model's limitations."""
        return {
            "Intended use": self.description
            or f"Research and demonstration runs of the `{self.name}` recipe; not validated for decisions about people.",
            "Limitations": "The metrics come from this run's own held-out split and say nothing about other "
            "populations, time periods or data sources. Read the data card of the training data (biases, licence) "
            "before reusing the model.",
        }

    # --- explaining -----------------------------------------------------------------------------------
    @abc.abstractmethod
    def explain(self, run: "Run", input_path: Path | None, out_path: Path, *, max_examples: int = 4) -> Path:
        """Write a self-contained HTML report with plots for ``run`` on ``input_path`` (or the run's own
        held-out data when None) to ``out_path``; return the path."""


_EXTENDS = "# extends:"


def _extends(path: Path) -> str | None:
    """The config a YAML file layers on, from a ``# extends: NAME`` line in its leading comment block."""
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        if line.startswith(_EXTENDS):
            return line[len(_EXTENDS):].strip() or None
    return None


def _import_object(dotted: str, what: str) -> Any:
    """``"package.module:Name"`` → the object."""
    module, _, name = dotted.partition(":")
    if not module or not name:
        raise ValueError(f"{what} must be 'package.module:Class'; got {dotted!r}")
    return getattr(importlib.import_module(module), name)
