"""Run folders: where a training run leaves its artefacts, and how the scorer, the reports and the apps find them.

A run lives in ``<root>/<recipe>/<run-id>/`` where ``<root>`` is ``--runs-dir``, else ``$FUSION_RUNS_DIR``, else
``./runs``. Run ids sort by creation time: ``20261124-231500-ab12`` (local time, then a random suffix).

Files of a run:

``config.yaml``        the resolved LightningCLI config (what ``--resume`` re-parses)
``hparams.yaml``       the module's ``save_hyperparameters()`` after linking: ``module_class(**hparams)`` rebuilds it
``model.safetensors``  the module's ``state_dict`` after training
``metrics.json``       flat ``{name: float}`` as logged in ``trainer.test`` (``test/auc``…) plus ``train_seconds``
``checkpoints/last.ckpt``  the Lightning checkpoint ``--resume`` continues from
``MODEL_CARD.md``      a short human-readable card (:mod:`recipes.runtime.card`)
``run.json``           bookkeeping: recipe, run id, creation time, status, the training command and progress
"""
from __future__ import annotations

import contextlib
import importlib
import json
import os
import re
import secrets
import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from recipes.runtime.files import atomic_write_text

if TYPE_CHECKING:
    import lightning.pytorch as pl_

__all__ = [
    "Run",
    "RunNotFoundError",
    "runs_root",
    "new_run_id",
    "list_runs",
    "resolve_run",
    "to_plain",
    "RUN_ID_ENV",
    "RUNS_DIR_ENV",
]

RUNS_DIR_ENV = "FUSION_RUNS_DIR"
RUN_ID_ENV = "FUSION_RUN_ID"

CONFIG_FILE = "config.yaml"
HPARAMS_FILE = "hparams.yaml"
MODEL_FILE = "model.safetensors"
METRICS_FILE = "metrics.json"
CARD_FILE = "MODEL_CARD.md"
INFO_FILE = "run.json"
LAST_CHECKPOINT = Path("checkpoints") / "last.ckpt"

_RUN_ID = re.compile(r"^(\d{8}-\d{6})-[0-9a-z]+$")


class RunNotFoundError(LookupError):
    """No run matches what the user asked for; the message lists the runs there are."""


class RunIncompatibleError(RuntimeError):
    """A run's saved weights do not fit its module as the current code builds it (saved by an older version)."""


def runs_root(root: str | Path | None = None) -> Path:
    """``root`` if given, else ``$FUSION_RUNS_DIR``, else ``./runs``."""
    return Path(root if root is not None else os.environ.get(RUNS_DIR_ENV) or "runs")


def new_run_id(now: float | None = None) -> str:
    """``YYYYmmdd-HHMMSS-xxxx``: sorts by creation time; the random suffix keeps simultaneous runs apart."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(time.time() if now is None else now))
    return f"{stamp}-{secrets.token_hex(2)}"


def to_plain(value: Any) -> Any:
    """Turn hyperparameters into YAML/JSON-safe values (tuples → lists, paths → strings, namespaces → dicts)."""
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, Path):
        return str(value)
    if type(value).__name__ == "Namespace":  # jsonargparse (as_dict) or argparse
        return to_plain(value.as_dict() if hasattr(value, "as_dict") else vars(value))
    if isinstance(value, dict) or hasattr(value, "items"):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_plain(v) for v in value]
    if hasattr(value, "tolist"):  # tensors, numpy arrays and scalars
        return to_plain(value.tolist())
    return str(value)


class Run:
    """One run folder. Reading an attribute reads its file, so a ``Run`` always shows the folder as it is now."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_dir():
            raise RunNotFoundError(f"run folder {self.path} does not exist")

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Run) and self.path.resolve() == other.path.resolve()

    def __hash__(self) -> int:
        return hash(self.path.resolve())

    # --- identity ---------------------------------------------------------------------------------------
    @property
    def run_id(self) -> str:
        return self.path.name

    @property
    def info(self) -> dict[str, Any]:
        """``run.json``: recipe, run_id, created, status (``running``/``interrupted``/``finished``), command,
        training progress (epochs, global_step, world_size). Empty when the file is missing."""
        file = self.path / INFO_FILE
        return json.loads(file.read_text()) if file.is_file() else {}

    @property
    def recipe(self) -> str:
        """The recipe name, from ``run.json`` (the folder may have been moved), else the parent folder's name."""
        return self.info.get("recipe") or self.path.parent.name

    @property
    def created(self) -> datetime:
        # run.json's time first: it has microseconds, the run id only seconds (two runs can share a second)
        created = self.info.get("created")
        if created:
            return datetime.fromisoformat(created)
        match = _RUN_ID.match(self.run_id)
        if match:
            return datetime.strptime(match.group(1), "%Y%m%d-%H%M%S")
        return datetime.fromtimestamp(self.path.stat().st_mtime)

    @property
    def status(self) -> str:
        """What ``run.json`` says: ``running``, ``interrupted`` or ``finished`` (a resumed run keeps its earlier
        model while it trains on); without ``run.json``: ``finished`` when a model is saved, else ``unknown``.
        A run that says ``running`` but whose training process on this machine is gone (``kill -9``, a crash, a
        lost node) is ``interrupted``: continue it with ``--resume``."""
        info = self.info
        status = info.get("status") or ("finished" if self.has_model else "unknown")
        if status == "running" and _process_gone(info.get("process")):
            return "interrupted"
        return status

    @property
    def has_model(self) -> bool:
        return (self.path / MODEL_FILE).is_file()

    # --- files ------------------------------------------------------------------------------------------
    @property
    def config_path(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def model_path(self) -> Path:
        return self.path / MODEL_FILE

    @property
    def checkpoint_path(self) -> Path:
        return self.path / LAST_CHECKPOINT

    @property
    def card_path(self) -> Path:
        return self.path / CARD_FILE

    @property
    def config(self) -> dict[str, Any]:
        return _read_yaml(self.path / CONFIG_FILE)

    @property
    def hparams(self) -> dict[str, Any]:
        return _read_yaml(self.path / HPARAMS_FILE)

    @property
    def metrics(self) -> dict[str, float]:
        file = self.path / METRICS_FILE
        return json.loads(file.read_text()) if file.is_file() else {}

    def write_info(self, **updates: Any) -> dict[str, Any]:
        """Merge ``updates`` into ``run.json`` (atomically) and return the result."""
        info = {**self.info, **to_plain(updates)}
        atomic_write_text(self.path / INFO_FILE, json.dumps(info, indent=2) + "\n")
        return info

    # --- model ------------------------------------------------------------------------------------------
    @property
    def module_class(self) -> type:
        """The LightningModule class that trained this run, as ``run.json`` records it (``module.Class``)."""
        dotted = self.info.get("module_class")
        if not dotted:
            raise RunNotFoundError(f"run {self.path} does not record its module class (run.json: module_class); "
                                   f"it was written by an older version: train it again")
        module_name, _, qualname = str(dotted).rpartition(".")
        return getattr(importlib.import_module(module_name), qualname)

    def load_module(self, map_location: str = "cpu") -> "pl_.LightningModule":
        """Rebuild the recipe's module from ``hparams.yaml`` and load ``model.safetensors``; eval mode."""
        from safetensors.torch import load_model

        if not self.has_model:
            raise RunNotFoundError(
                f"run {self.path} has no {MODEL_FILE} (status: {self.status}); "
                f"finish it with `fusion train {self.recipe} --resume {self.run_id}`"
            )
        module = _instantiate(self.module_class, self.hparams)
        try:  # strict=False: the differences come back as lists (tied weights accounted for), sent on below
            missing, unexpected = load_model(module, str(self.model_path), strict=False, device=map_location)
            reshaped: list[str] = []
        except RuntimeError:  # a weight of another shape
            missing, unexpected, reshaped = [], [], _reshaped_weights(module, self.model_path)
            if not reshaped:
                raise
        if missing or unexpected or reshaped:
            raise RunIncompatibleError(
                f"run {self.path} was saved by another version of {self.module_class.__name__}: its weights do not fit "
                f"the module the current code builds ({_differences(missing, unexpected, reshaped)}). Train it again "
                f"with this version (`fusion train {self.recipe}`; the run's settings are in {self.path / CONFIG_FILE})"
            )
        return module.to(map_location).eval()


def _differences(missing: list[str], unexpected: list[str], reshaped: list[str], shown: int = 3) -> str:
    """``missing: a, b; not in this version: c; reshaped: d and 4 more``."""
    def few(keys: list[str]) -> str:
        keys = sorted(keys)
        return ", ".join(keys[:shown]) + (f" and {len(keys) - shown} more" if len(keys) > shown else "")

    found = {"missing": missing, "not in this version": unexpected, "reshaped": reshaped}
    return "; ".join(f"{label}: {few(keys)}" for label, keys in found.items() if keys)


def _reshaped_weights(module: Any, model_path: Path) -> list[str]:
    """The weights the file and the module both hold, with different shapes."""
    from safetensors import safe_open

    wanted = module.state_dict()
    with safe_open(str(model_path), framework="pt") as saved:
        return [key for key in saved.keys()
                if key in wanted and tuple(saved.get_slice(key).get_shape()) != tuple(wanted[key].shape)]


def _instantiate(module_class: type, hparams: dict[str, Any]) -> Any:
    """``module_class(**hparams)``; nested ``class_path`` configs go through LightningCLI's instantiator."""
    if _has_class_path(hparams):
        from lightning.pytorch.cli import instantiate_module

        return instantiate_module(module_class, hparams)
    return module_class(**hparams)


def _has_class_path(value: Any) -> bool:
    if isinstance(value, dict):
        return "class_path" in value or any(_has_class_path(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_class_path(v) for v in value)
    return False


def process_start_ticks(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks since boot, from ``/proc``), to tell it from a later process that
    reuses its pid; None where ``/proc`` is not available."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rpartition(")")[2].split()[19])  # field 22, counted after the command name


def _process_gone(process: Any) -> bool:
    """Whether the training process ``run.json`` records (host, pid, start) has certainly ended. A process on
    another host cannot be checked from here and counts as alive."""
    import socket

    if not isinstance(process, dict) or process.get("host") != socket.gethostname():
        return False
    pid = process.get("pid")
    if not isinstance(pid, int):
        return False
    try:
        with contextlib.suppress(PermissionError):  # PermissionError: alive, owned by another user
            os.kill(pid, 0)
    except ProcessLookupError:
        return True
    start = process.get("start")
    return start is not None and process_start_ticks(pid) != start


def _read_yaml(file: Path) -> dict[str, Any]:
    if not file.is_file():
        return {}
    return yaml.safe_load(file.read_text()) or {}


def _sort_key(run: Run) -> tuple[datetime, str]:
    return run.created, run.run_id


def list_runs(root: str | Path | None = None, recipe: str | None = None) -> list[Run]:
    """Every run under ``root`` (see :func:`runs_root`), newest first; only ``recipe``'s when given.
    A run folder is one that holds a ``config.yaml`` (interrupted runs included; see :attr:`Run.status`)."""
    base = runs_root(root)
    if not base.is_dir():
        return []
    recipe_dirs = [base / recipe] if recipe else sorted(p for p in base.iterdir() if p.is_dir())
    runs = [
        Run(folder)
        for recipe_dir in recipe_dirs
        if recipe_dir.is_dir()
        for folder in recipe_dir.iterdir()
        if folder.is_dir() and (folder / CONFIG_FILE).is_file()
    ]
    return sorted(runs, key=_sort_key, reverse=True)


def resolve_run(recipe: str, spec: str | Path | Run | None, root: str | Path | None = None, *, require_model: bool = True) -> Run:
    """Find a run of ``recipe`` from ``spec``: a run folder path, a run id (or a unique prefix of one), or
    ``latest`` / None (the newest run — with a saved model when ``require_model``)."""
    if isinstance(spec, Run):
        run = spec
    else:
        spec = "latest" if spec is None or str(spec) == "" else str(spec)
        base = runs_root(root)
        runs = list_runs(base, recipe)
        path = Path(spec)
        if spec == "latest":
            candidates = [r for r in runs if r.has_model] if require_model else runs
            if not candidates:
                what = "finished runs" if require_model and runs else "runs"
                raise RunNotFoundError(
                    f"no {what} of recipe {recipe} under {base}/; train one with `fusion train {recipe} --config quick`"
                    + (f" (unfinished: {', '.join(r.run_id for r in runs)})" if runs else "")
                )
            run = candidates[0]
        elif path.is_dir() and ((path / CONFIG_FILE).is_file() or (path / MODEL_FILE).is_file()):
            run = Run(path)
        else:
            matches = [r for r in runs if r.run_id == spec] or [r for r in runs if r.run_id.startswith(spec)]
            if len(matches) != 1:
                available = ", ".join(r.run_id for r in runs[:10]) or "none"
                problem = "is ambiguous" if matches else "not found"
                raise RunNotFoundError(
                    f"run {spec!r} of recipe {recipe} {problem} under {base}/; available (newest first): "
                    f"{available}; pass a run id, a run folder or 'latest'"
                )
            run = matches[0]
    if require_model and not run.has_model:
        raise RunNotFoundError(
            f"run {run.path} has no {MODEL_FILE} (status: {run.status}); "
            f"finish it with `fusion train {run.recipe} --resume {run.run_id}` or pick another run"
        )
    return run


# --- model card -----------------------------------------------------------------------------------------
