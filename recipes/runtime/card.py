"""``MODEL_CARD.md``: what a run trained on what, the settings that matter, its held-out metrics, the modality-subset
table the base module's test loop logs, and the recipe's own notes."""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recipes.runtime.subsets import SUBSET_MARK, subset_table
from recipes.runtime.files import atomic_write_text
from recipes.runtime.runs import CARD_FILE, Run

if TYPE_CHECKING:
    from recipes.runtime.recipe import Recipe

__all__ = ["write_model_card"]


def _format_value(value: Any, limit: int = 80) -> str:
    if isinstance(value, float):
        text = f"{value:.4g}"
    elif isinstance(value, (dict, list)):
        text = json.dumps(value, default=str)
    else:
        text = str(value)
    text = text.replace("|", "\\|").replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _section_rows(section: Any) -> list[tuple[str, Any]]:
    """Key/value rows of a config section: a plain dict, or a ``class_path``/``init_args`` dict."""
    if not isinstance(section, dict):
        return [] if section is None else [("value", section)]
    rows: list[tuple[str, Any]] = []
    if "class_path" in section:
        rows.append(("class", section["class_path"]))
        section = section.get("init_args") or {}
    rows.extend((str(k), v) for k, v in section.items() if v is not None)
    return rows


def _flat(mapping: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """``{"config": {"dim": 64}}`` → ``[("config.dim", 64)]`` (nested mappings become dotted names)."""
    rows: list[tuple[str, Any]] = []
    for key, value in mapping.items():
        if isinstance(value, dict) and value and "class_path" not in value:
            rows.extend(_flat(value, f"{prefix}{key}."))
        else:
            rows.append((f"{prefix}{key}", value))
    return rows


def _subset_markdown(table: tuple[list[str], list[str], dict[tuple[str, str], float]]) -> str:
    rows, columns, cells = table
    lines = ["| metric | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for row in rows:
        values = [_format_value(cells[(row, c)]) if (row, c) in cells else "" for c in columns]
        lines.append(f"| {row} | " + " | ".join(values) + " |")
    return "\n".join(lines)


def _table(rows: list[tuple[str, Any]], header: tuple[str, str]) -> str:
    lines = [f"| {header[0]} | {header[1]} |", "|---|---|"]
    lines += [f"| {_format_value(k)} | {_format_value(v)} |" for k, v in rows]
    return "\n".join(lines)


def _parameter_count(model_path: Path) -> int | None:
    if not model_path.is_file():
        return None
    from safetensors import safe_open

    total = 0
    with safe_open(str(model_path), framework="pt") as tensors:
        for key in tensors.keys():
            count = 1
            for dim in tensors.get_slice(key).get_shape():
                count *= dim
            total += count
    return total


_TRAINER_HIGHLIGHTS = ("max_epochs", "max_steps", "accelerator", "devices", "num_nodes", "strategy", "precision", "accumulate_grad_batches", "gradient_clip_val")


def write_model_card(run: Run, recipe: "Recipe | None" = None) -> Path:
    """Write ``MODEL_CARD.md``: what was trained on what, the settings that matter, the held-out metrics, and the
    recipe's intended-use and limitation notes (:meth:`Recipe.card_notes`)."""
    if recipe is None:
        from recipes.runtime.registry import get_recipe

        recipe = get_recipe(run.recipe)
    info, config, hparams, metrics = run.info, run.config, run.hparams, run.metrics
    training = info.get("training", {})
    overview: list[tuple[str, Any]] = [
        ("recipe", recipe.name),
        ("run", run.run_id),
        ("created", run.created.isoformat(sep=" ")),
        ("status", run.status),
        ("model class", f"{recipe.module_class.__module__}.{recipe.module_class.__qualname__}"),
    ]
    params = _parameter_count(run.model_path)
    if params is not None:
        overview.append(("parameters", f"{params:,}"))
    for key in ("epochs", "global_step", "world_size"):
        if key in training:
            overview.append((key.replace("_", " "), training[key]))
    if "train_seconds" in metrics:
        overview.append(("training time", f"{metrics['train_seconds']:.1f} s"))
    if info.get("command"):
        overview.append(("command", " ".join(info["command"])))

    trainer = config.get("trainer") or {}
    settings = [(f"trainer.{k}", trainer[k]) for k in _TRAINER_HIGHLIGHTS if trainer.get(k) is not None]
    if config.get("seed_everything") is not None:
        settings.append(("seed_everything", config["seed_everything"]))

    parts = [f"# Model card — {recipe.name} / {run.run_id}", ""]
    if recipe.description:
        parts += [recipe.description, ""]
    parts += [_table(overview, ("item", "value")), ""]
    parts += ["## Data", "", _table(_section_rows(config.get("data")), ("setting", "value")) if config.get("data") else "No data section in the config.", ""]
    parts += ["## Model hyperparameters", "", _table(sorted(_flat(hparams)), ("hyperparameter", "value")) if hparams else "No hyperparameters saved.", ""]
    if settings:
        parts += ["## Training settings", "", _table(settings, ("setting", "value")), ""]
    evaluation = [(k, v) for k, v in sorted(metrics.items()) if k != "train_seconds" and SUBSET_MARK not in k]
    parts += ["## Metrics (held-out split)", ""]
    parts += [_table(evaluation, ("metric", "value")) if evaluation else "No evaluation metrics were logged.", ""]
    subsets = subset_table(metrics)
    if subsets is not None:
        parts += ["## Robustness to missing modalities", "",
                  "The same held-out rows with some modalities switched off (`present` = False) at test time.", "",
                  _subset_markdown(subsets), ""]
    for title, body in recipe.card_notes(run).items():
        parts += [f"## {title}", "", body.strip(), ""]
    files = sorted(p.relative_to(run.path).as_posix() for p in run.path.rglob("*") if p.is_file() and not p.name.startswith("."))
    files = sorted(set(files) | {CARD_FILE})
    parts += ["## Files", "", *[f"- `{name}`" for name in files if not name.startswith(("lightning_logs/",))], ""]
    atomic_write_text(run.card_path, "\n".join(parts))
    return run.card_path
