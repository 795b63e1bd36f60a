"""``fusion train <recipe>``: configure a recipe's module and datamodule with LightningCLI, train into a run folder.

The run folder (see :mod:`recipes.runtime.runs`) is chosen before anything is launched; its id travels to DDP
worker processes in ``$FUSION_RUN_ID`` (Lightning's launcher re-runs the same command line in each worker), and
only global rank 0 writes files. Metrics are whatever the module logs in ``test_step`` (``self.log("test/auc", …)``),
stored in ``metrics.json`` under the logged names, ``/`` included; ``train_seconds`` is the wall time spent in
``trainer.fit``, summed over resumes.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import sys
import threading
import time
import warnings
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from recipes.runtime.card import write_model_card
from recipes.runtime.files import atomic_write_text
from recipes.runtime.runs import (
    HPARAMS_FILE,
    METRICS_FILE,
    MODEL_FILE,
    RUN_ID_ENV,
    Run,
    new_run_id,
    resolve_run,
    runs_root,
    to_plain,
)

if TYPE_CHECKING:
    import lightning.pytorch as pl_

    from recipes.runtime.recipe import Recipe

__all__ = ["train", "parse_config", "TrainConfigError", "TrainingInterrupted", "TRAIN_USAGE", "DEFAULT_SEED"]

DEFAULT_SEED = 42

TRAIN_USAGE = """\
usage: fusion train RECIPE [--config quick|full|PATH] [--resume RUN] [--runs-dir DIR] [--checkpoint-every N] [OVERRIDES ...]

Train RECIPE with Lightning into RUNS_DIR/RECIPE/RUN_ID/ (config.yaml, hparams.yaml, model.safetensors,
metrics.json, checkpoints/last.ckpt, MODEL_CARD.md).

  --config quick|full|PATH  a config shipped with the recipe, or a YAML file (repeatable; later ones win)
  --resume RUN              continue a run (its id, folder or 'latest') from checkpoints/last.ckpt with its
                            config.yaml; overrides apply on top, e.g. a larger --trainer.max_epochs
  --runs-dir DIR            runs root (default: $FUSION_RUNS_DIR, else ./runs)
  --checkpoint-every N      save a checkpoint every N optimizer steps (default 50; the last two are kept and
                            last.ckpt is the newest); a run killed at any moment resumes to the same weights
  OVERRIDES                 LightningCLI options: --trainer.max_epochs 2 --model.lr 0.001 --data.batch_size 64 ...
                            (`fusion train RECIPE --help` lists every option of the recipe)

Several processes: --trainer.strategy ddp --trainer.devices 2 [--trainer.accelerator cpu] (gloo on CPU).
Under torchrun or SLURM, export FUSION_RUN_ID=<one id> in every process so they share one run folder."""


class TrainConfigError(ValueError):
    """The command line or config cannot be turned into a model and data (a user mistake)."""


class TrainingInterrupted(RuntimeError):
    """Training stopped before the end (Ctrl-C, SIGTERM); ``run`` can be continued with ``--resume``."""

    def __init__(self, message: str, run: Run):
        super().__init__(message)
        self.run = run


@dataclass
class _TrainArgs:
    configs: list[str] = field(default_factory=list)
    resume: str | None = None
    runs_dir: str | None = None
    checkpoint_every: str | None = None
    overrides: list[str] = field(default_factory=list)
    help: bool = False


_OWN_OPTIONS = {"--config": "configs", "-c": "configs", "--resume": "resume", "--runs-dir": "runs_dir",
                "--checkpoint-every": "checkpoint_every"}


def _split_args(argv: list[str]) -> _TrainArgs:
    """Take our own options out of ``argv``; everything else goes to LightningCLI in its original order."""
    parsed = _TrainArgs()
    items = list(argv)
    i = 0
    while i < len(items):
        arg = items[i]
        name, has_value, value = arg.partition("=")
        if name in _OWN_OPTIONS:
            if not has_value:
                if i + 1 >= len(items) or items[i + 1].startswith("--"):
                    raise TrainConfigError(f"{name} needs a value (see `fusion train --help`)")
                value = items[i + 1]
                i += 1
            key = _OWN_OPTIONS[name]
            if key == "configs":
                parsed.configs.append(value)
            else:
                setattr(parsed, key, value)
        else:
            if arg in ("-h", "--help"):
                parsed.help = True
            parsed.overrides.append(arg)
        i += 1
    return parsed


def _launch_rank() -> int:
    """This process's global rank as far as the environment tells before Lightning sets anything up: 0 in the
    process the user started, >0 in the workers Lightning's launcher, torchrun or SLURM start."""
    for key in ("RANK", "SLURM_PROCID", "LOCAL_RANK", "NODE_RANK"):
        value = os.environ.get(key)
        if value and value.isdigit() and int(value) > 0:
            return int(value)
    return 0


def _externally_launched() -> bool:
    """torchrun or SLURM started several copies of this command (each would otherwise pick its own run id)."""
    world = os.environ.get("WORLD_SIZE", "1")
    tasks = os.environ.get("SLURM_NTASKS", "1")
    return (world.isdigit() and int(world) > 1) or ("SLURM_PROCID" in os.environ and tasks.isdigit() and int(tasks) > 1)


def _make_cli_class(instantiate: bool = True):
    from lightning.pytorch.cli import LightningCLI

    class RecipeCLI(LightningCLI):
        """LightningCLI that links data-derived sizes into the model (``Recipe.links``) and records which phase
        failed, so config mistakes can be told apart from bugs."""

        def __init__(self, *args: Any, links: tuple[tuple[str, str], ...] = (), **kwargs: Any) -> None:
            self.recipe_links = links
            self.phase = "parse"
            super().__init__(*args, **kwargs)

        def add_arguments_to_parser(self, parser) -> None:
            for source, target in self.recipe_links:
                parser.link_arguments(source, target, apply_on="instantiate")

        def before_instantiate_classes(self) -> None:
            self.phase = "instantiate"

        def instantiate_classes(self) -> None:
            if instantiate:
                super().instantiate_classes()

    return RecipeCLI


def parse_config(recipe_name: str, configs: list[str | Path], overrides: list[str] | None = None) -> dict[str, Any]:
    """Parse and type-check ``configs`` (+ overrides) against the recipe's module, data module and Trainer the way
    ``fusion train`` does, without building anything (no data is read); returns the resolved config as a dict."""
    from jsonargparse import ArgumentError

    from recipes.runtime.registry import get_recipe

    recipe = get_recipe(recipe_name)
    args = [arg for config in configs for path in recipe.config_chain(config) for arg in ("--config", str(path))]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*LightningCLI's args parameter is intended.*")
        try:
            cli = _make_cli_class(instantiate=False)(
                recipe.module_class,
                recipe.datamodule_class,
                links=tuple(recipe.links),
                run=False,
                args=[*args, *(overrides or [])],
                save_config_callback=None,
                parser_kwargs={"prog": f"fusion train {recipe.name}", "exit_on_error": False},
            )
        except ArgumentError as error:
            raise TrainConfigError(f"fusion train {recipe.name}: {error}") from None
    return to_plain(cli.config.as_dict())


def _make_interrupt_checkpoint(path: Path):
    from lightning.pytorch.callbacks import Callback
    from lightning.pytorch.trainer.states import TrainerFn
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    class SaveOnInterrupt(Callback):
        """On Ctrl-C or SIGTERM during fit, save ``last.ckpt`` so ``--resume`` loses at most the current step.
        Single-process only: in DDP the other ranks may already be gone, so the epoch-end checkpoint stands."""

        def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
            if (
                isinstance(exception, (KeyboardInterrupt, SIGTERMException))
                and trainer.world_size == 1
                and trainer.state.fn == TrainerFn.FITTING
            ):
                trainer.save_checkpoint(path, weights_only=False)

    return SaveOnInterrupt()


def _dump_config(cli: Any) -> str:
    """The resolved config as YAML, ``null`` values included so the file shows every setting."""
    try:
        return cli.parser.dump(cli.config, format="yaml", skip_unset=False)
    except (TypeError, ValueError):  # jsonargparse < 4.49 names the option skip_none
        return cli.parser.dump(cli.config, format="yaml", skip_none=False)


def _hparams(module: "pl_.LightningModule") -> dict[str, Any]:
    """``save_hyperparameters()`` without LightningCLI's private keys (``_instantiator``, ``_class_path``)."""
    return to_plain({k: v for k, v in dict(module.hparams).items() if not str(k).startswith("_")})


def _evaluate(trainer: "pl_.Trainer", model: "pl_.LightningModule", datamodule: Any) -> dict[str, float]:
    """Test metrics when the module has ``test_step`` and the data a test split; else validation metrics."""
    from lightning.pytorch.utilities.model_helpers import is_overridden

    def has(step: str, loader: str) -> bool:
        return is_overridden(step, model) and (
            (datamodule is not None and is_overridden(loader, datamodule)) or is_overridden(loader, model)
        )

    if has("test_step", "test_dataloader"):
        results = trainer.test(model, datamodule=datamodule, verbose=False)
    elif has("validation_step", "val_dataloader"):
        results = trainer.validate(model, datamodule=datamodule, verbose=False)
    else:
        results = []
    return {str(k): float(v) for result in results for k, v in result.items()}


def _save_model(model: "pl_.LightningModule", run: Run, recipe: "Recipe") -> None:
    from safetensors.torch import save_model

    tmp = run.path / f".{MODEL_FILE}.tmp"
    # save_model drops tensors that share storage (tied embeddings) and makes every tensor contiguous
    save_model(model, str(tmp), metadata={"recipe": recipe.name, "run_id": run.run_id})
    os.replace(tmp, run.model_path)


def _print_summary(run: Run, metrics: dict[str, float]) -> None:
    print(f"\nrun folder: {run.path}")
    width = max((len(k) for k in metrics), default=0)
    for key, value in metrics.items():
        print(f"  {key:<{width}}  {value:.4f}")
    print(f"score with:   fusion score {run.recipe} --run {run.run_id} --input IN.parquet --output OUT.parquet")
    sys.stdout.flush()


def _process_identity() -> dict[str, Any]:
    """Who is training the run, so that a reader can tell a live run from one whose process died (``kill -9``)."""
    from recipes.runtime.runs import process_start_ticks

    return {"host": socket.gethostname(), "pid": os.getpid(), "start": process_start_ticks(os.getpid())}


def train(recipe_name: str, argv: list[str]) -> Run:
    """Train ``recipe_name`` as ``fusion train`` would with ``argv``; returns the run (see :data:`TRAIN_USAGE`)."""
    from recipes.runtime.registry import get_recipe

    recipe = get_recipe(recipe_name)
    args = _split_args(argv)
    if args.help:
        print(TRAIN_USAGE.replace("RECIPE", recipe.name) + "\n\nLightningCLI options:\n")
    try:
        configs = [str(path) for c in args.configs for path in recipe.config_chain(c)]
    except FileNotFoundError as error:
        raise TrainConfigError(str(error)) from None
    root = runs_root(args.runs_dir).resolve()
    is_zero = _launch_rank() == 0

    resumed = args.resume is not None
    ckpt_path: Path | None = None
    if resumed:
        run = resolve_run(recipe.name, args.resume, root, require_model=False)
        run_dir = run.path.resolve()
        if not run.config_path.is_file():
            raise TrainConfigError(f"cannot resume {run_dir}: it has no config.yaml")
        if run.checkpoint_path.is_file():
            ckpt_path = run.checkpoint_path
        elif is_zero:
            print(f"note: {run.checkpoint_path} does not exist yet; training {run.run_id} from the start", file=sys.stderr)
        # the saved config first, then the folder it is in now (it may have moved), then what the user adds
        cli_args = ["--config", str(run.config_path), f"--trainer.default_root_dir={run_dir}", *configs, *args.overrides]
        run_id = run.run_id
    else:
        run_id = os.environ.get(RUN_ID_ENV, "")
        if not run_id:
            if _externally_launched() or _launch_rank() > 0:
                # a second node (NODE_RANK > 1) or a torchrun/SLURM copy would pick its own id and leave a stray folder
                raise TrainConfigError(
                    f"several processes were launched (WORLD_SIZE/SLURM_NTASKS > 1 or NODE_RANK > 0): export "
                    f"{RUN_ID_ENV}=<one id> in every process so they share one run folder"
                )
            run_id = new_run_id()
        run_dir = root / recipe.name / run_id
        if is_zero and (run_dir / "config.yaml").exists():
            raise TrainConfigError(f"run folder {run_dir} already exists; continue it with --resume {run_id}")
        cli_args = [*[f"--config={c}" for c in configs], *args.overrides]

    from jsonargparse import ArgumentError
    from lightning.fabric.utilities.exceptions import MisconfigurationException
    from recipes.runtime.resume import DEFAULT_CHECKPOINT_EVERY, checkpoint_callbacks

    every = args.checkpoint_every or DEFAULT_CHECKPOINT_EVERY
    if not str(every).isdigit() or int(every) < 1:
        raise TrainConfigError(f"--checkpoint-every needs a whole number of steps >= 1; got {every!r}")
    checkpoint_dir = run_dir / "checkpoints"
    trainer_defaults = {
        "default_root_dir": str(run_dir),
        "enable_progress_bar": True,
        "callbacks": [
            # step checkpoints, the data position and random state in each, last.ckpt the newest (no -v1 after a resume)
            *checkpoint_callbacks(checkpoint_dir, int(every)),
            _make_interrupt_checkpoint(checkpoint_dir / "last.ckpt"),
        ],
    }
    cli_class = _make_cli_class()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*LightningCLI's args parameter is intended.*")
        try:
            cli = cli_class(
                recipe.module_class,
                recipe.datamodule_class,
                links=tuple(recipe.links),
                run=False,
                args=cli_args,
                save_config_callback=None,
                trainer_defaults=trainer_defaults,
                seed_everything_default=DEFAULT_SEED,
                parser_kwargs={"prog": f"fusion train {recipe.name}", "exit_on_error": False},
            )
        except ArgumentError as error:
            raise TrainConfigError(f"fusion train {recipe.name}: {error}") from None
        except (ValueError, FileNotFoundError, MisconfigurationException) as error:
            # raised while building the model, data or trainer from a parsed config: a value they reject
            raise TrainConfigError(f"fusion train {recipe.name}: {error}") from error
    model, datamodule, trainer = cli.model, cli.datamodule, cli.trainer

    run_dir.mkdir(parents=True, exist_ok=True)
    run = Run(run_dir)
    previous_seconds = float(run.info.get("training", {}).get("train_seconds", 0.0)) if resumed else 0.0
    command = ["fusion", "train", recipe.name, *argv]
    if is_zero:
        atomic_write_text(run.config_path, _dump_config(cli))
        atomic_write_text(run.path / HPARAMS_FILE, yaml.safe_dump(_hparams(model), sort_keys=False))
        alive = _process_identity()
        if resumed:
            run.write_info(status="running", process=alive, resumed=[*run.info.get("resumed", []), {"at": datetime.now().isoformat(timespec="seconds"), "command": command}])
        else:
            run.write_info(recipe=recipe.name, run_id=run_id, created=datetime.now().isoformat(timespec="microseconds"),
                           status="running", process=alive, command=command, module_class=f"{type(model).__module__}.{type(model).__qualname__}")
        if not _hparams(model):
            print(f"warning: {type(model).__name__} saved no hyperparameters; call self.save_hyperparameters() in its __init__ "
                  "so load_module() can rebuild it", file=sys.stderr)

    previous_env = os.environ.get(RUN_ID_ENV)
    os.environ[RUN_ID_ENV] = run_id  # DDP workers re-run this command line and must land in the same folder
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous_sigint = signal.getsignal(signal.SIGINT) if in_main_thread else None
    started = time.perf_counter()
    try:
        try:
            trainer.fit(model, datamodule=datamodule, ckpt_path=str(ckpt_path) if ckpt_path else None, weights_only=True)
        except BaseException as error:
            if trainer.is_global_zero:
                elapsed = previous_seconds + time.perf_counter() - started
                run.write_info(status="interrupted", training={"train_seconds": round(elapsed, 3), "global_step": trainer.global_step})
                print(f"\ntraining stopped at step {trainer.global_step}; continue with:\n"
                      f"  fusion train {recipe.name} --resume {run_id} --runs-dir {root}", file=sys.stderr)
            if isinstance(error, SystemExit) and trainer.interrupted:
                raise TrainingInterrupted(f"training of {recipe.name} run {run_id} was interrupted; continue it with "
                                          f"`fusion train {recipe.name} --resume {run_id}`", run) from None
            raise
        train_seconds = previous_seconds + time.perf_counter() - started
        metrics = _evaluate(trainer, model, datamodule)
        metrics["train_seconds"] = round(train_seconds, 3)
    finally:
        if previous_env is None:
            os.environ.pop(RUN_ID_ENV, None)
        else:
            os.environ[RUN_ID_ENV] = previous_env
        if in_main_thread and previous_sigint is not None:
            signal.signal(signal.SIGINT, previous_sigint)

    if trainer.is_global_zero:
        atomic_write_text(run.path / HPARAMS_FILE, yaml.safe_dump(_hparams(model), sort_keys=False))
        _save_model(model, run, recipe)
        atomic_write_text(run.path / METRICS_FILE, json.dumps(metrics, indent=2) + "\n")
        run.write_info(
            status="finished",
            training={
                "epochs": trainer.current_epoch,
                "global_step": trainer.global_step,
                "world_size": trainer.world_size,
                "train_seconds": metrics["train_seconds"],
            },
        )
        recipe.on_train_end(run, datamodule)
        write_model_card(run, recipe)
        _print_summary(run, metrics)
    return run

