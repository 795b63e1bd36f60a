"""``fusion``: one console script for every recipe — train, score, explain, data, app.

Importing this module and ``fusion --help`` stay light (no torch, Lightning or polars); each subcommand imports
what it needs. A user mistake (unknown recipe, missing file, bad shard) prints one ``fusion: error: …`` line to
stderr and exits 2.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Iterator

__all__ = ["main"]

_EPILOG = """\
examples:
  fusion data fetch movielens-100k
  fusion train longseq_rec --config quick --trainer.max_epochs 2
  fusion score longseq_rec --run latest --input held_out.parquet --output scores.parquet --shard 0/2
  fusion score longseq_rec --run latest --input held_out.parquet --output scores.parquet --engine ray
  fusion explain longseq_rec --run latest --out report.html
  fusion app --port 8501

runs live in --runs-dir (default: $FUSION_RUNS_DIR, else ./runs); data in $FUSION_DATA_DIR."""


class _UsageError(Exception):
    """A mistake in what the user asked for: one line on stderr, exit status 2."""


@contextlib.contextmanager
def _user_errors() -> Iterator[None]:
    """Turn the runtime's user-facing errors into :class:`_UsageError`; anything else keeps its traceback."""
    from recipes.runtime.runs import RunNotFoundError
    from recipes.runtime.score import ScoreInputError
    from recipes.runtime.score_ray import RayUnavailableError

    try:
        yield
    except (RunNotFoundError, ScoreInputError, RayUnavailableError) as error:
        raise _UsageError(str(error)) from None


def _recipe(name: str):
    from recipes.runtime.registry import get_recipe

    try:
        return get_recipe(name)
    except ValueError as error:
        raise _UsageError(str(error)) from None


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


# --- train ------------------------------------------------------------------------------------------------
def _recipe_lines() -> str:
    from recipes.runtime.registry import get_recipe, list_recipes

    lines = []
    for name in list_recipes():
        recipe = get_recipe(name)
        configs = sorted(p.stem for p in recipe.configs_dir.glob("*.yaml"))
        description = recipe.description.strip().splitlines()[0] if recipe.description.strip() else ""
        lines.append(f"  {name:<16} configs: {', '.join(configs) or '-':<14} {description}")
    return "\n".join(lines) or "  (none installed)"


def _train(argv: list[str]) -> int:
    from recipes.runtime.train import TRAIN_USAGE

    if not argv or argv[0] in ("-h", "--help"):
        text = f"{TRAIN_USAGE}\n\nrecipes:\n{_recipe_lines()}"
        print(text, file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    if argv[0].startswith("-"):
        raise _UsageError(f"fusion train: the recipe comes first, e.g. `fusion train RECIPE {argv[0]} ...`; see `fusion train --help`")
    recipe = _recipe(argv[0])

    from recipes.runtime.train import TrainConfigError, TrainingInterrupted, train

    try:
        with _user_errors():
            train(recipe.name, argv[1:])
    except TrainConfigError as error:
        raise _UsageError(str(error)) from None
    except TrainingInterrupted as error:
        print(f"fusion: {error}", file=sys.stderr)
        return 130
    return 0


# --- score / explain -----------------------------------------------------------------------------------------
def _score(args: argparse.Namespace) -> int:
    from recipes.runtime.score import DEFAULT_CHUNK_SIZE, parse_shard, score_file

    recipe = _recipe(args.recipe)
    try:
        shard = parse_shard(args.shard) if args.shard else None
    except ValueError as error:
        raise _UsageError(str(error)) from None
    engine = args.engine
    if args.address and engine != "ray":
        raise _UsageError("--address needs --engine ray (it names the Ray cluster to score on)")
    if engine == "ray":
        from recipes.runtime.score_ray import RayEngine

        engine = RayEngine(address=args.address)
    with _user_errors():
        score_file(recipe, args.run, args.input, args.output, chunk_size=args.chunk_size or DEFAULT_CHUNK_SIZE, shard=shard,
                   progress=not args.no_progress, runs_dir=args.runs_dir, data_root=args.data_root, engine=engine)
    return 0


def _explain(args: argparse.Namespace) -> int:
    from recipes.runtime.explain import explain

    recipe = _recipe(args.recipe)
    with _user_errors():
        explain(recipe.name, args.run, args.input, args.out, max_examples=args.max_examples, runs_dir=args.runs_dir)
    return 0


# --- data ----------------------------------------------------------------------------------------------------
def _data_fetch(args: argparse.Namespace) -> int:
    from recipes.runtime.datasets import DatasetFetchError, fetch_dataset, get_dataset

    try:
        get_dataset(args.name)
    except ValueError as error:
        raise _UsageError(str(error)) from None
    if args.path is not None and not Path(args.path).expanduser().exists():
        raise _UsageError(f"--path {args.path}: no such file or folder")
    try:
        folder = fetch_dataset(args.name, path=args.path, force=args.force)
    except DatasetFetchError as error:
        print(f"fusion: error: {error}", file=sys.stderr)
        return 1
    print(folder)
    return 0


def _data_list(args: argparse.Namespace) -> int:
    from recipes.runtime.datasets import data_home, get_dataset, list_datasets

    home = data_home()
    for name in list_datasets():
        spec = get_dataset(name)
        cached = "cached" if (home / name).exists() else "-"
        print(f"{name:<22} {cached:<7} {spec.description}")
    print(f"\ncache: {home}  (fetch with: fusion data fetch NAME)")
    return 0


# --- app -----------------------------------------------------------------------------------------------------
UPLOAD_LIMIT_MB = 64

def _app(args: argparse.Namespace) -> int:
    try:
        import apps
    except ImportError:
        raise _UsageError("the dashboards are not installed (no `apps` package); reinstall with pip install -e '.[apps]'") from None
    home = Path(apps.__file__).parent / "Home.py"
    if not home.is_file():
        raise _UsageError(f"the dashboards are not installed: {home} is missing")
    runs = Path(args.runs_dir or os.environ.get("FUSION_RUNS_DIR") or "runs").expanduser().resolve()
    command = [
        sys.executable, "-m", "streamlit", "run", str(home),
        "--server.port", str(args.port),
        "--server.headless", "true" if args.headless else "false",
        "--browser.gatherUsageStats", "false",
        "--server.maxUploadSize", str(UPLOAD_LIMIT_MB),  # as .streamlit/config.toml says, from any working folder
    ]
    print(f"fusion app: http://localhost:{args.port}  (runs: {runs}; Ctrl-C stops it)", flush=True)
    try:
        return subprocess.call(command, env={**os.environ, "FUSION_RUNS_DIR": str(runs)})
    except KeyboardInterrupt:
        return 0


def _recipes_epilog() -> str:
    from recipes.runtime.registry import recipe_names

    return f"recipes: {', '.join(recipe_names()) or '(none installed)'}\n\n"


# --- parser --------------------------------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fusion",
        description="Train, score and explain the fusion-suite recipes; fetch their data; open the dashboards.",
        epilog=_recipes_epilog() + _EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    commands.add_parser("train", add_help=False, help="train a recipe into a run folder (fusion train --help)")

    score = commands.add_parser("score", help="score a Parquet file with a trained run, in resumable chunks",
                                description="Score INPUT with a run of RECIPE: one output row per input row, in order, "
                                "with `row`, the recipe's passthrough columns, `score`, `warnings` and `error`.")
    score.add_argument("recipe", help="recipe name (fusion train --help lists them)")
    score.add_argument("--run", default="latest", help="run id, run folder or 'latest' (default)")
    score.add_argument("--input", required=True, help="Parquet file to score (a path or a file:// URL)")
    score.add_argument("--output", required=True, help="Parquet file to write (a path or a file:// URL)")
    score.add_argument("--chunk-size", type=_positive_int, default=None, help="rows per chunk (default 10000)")
    score.add_argument("--shard", help="i/n: score the i-th of n contiguous parts of the chunks (0-based)")
    score.add_argument("--runs-dir", help="runs root (default: $FUSION_RUNS_DIR, else ./runs)")
    score.add_argument("--data-root", type=Path, default=None,
                       help="folder every file the input names must lie in, symlinks resolved; relative paths are read "
                            "from it (default: the input file's folder)")
    score.add_argument("--no-progress", action="store_true", help="no progress bar")
    score.add_argument("--engine", choices=("local", "ray"), default="local",
                       help="local: chunks scored in this process (default); ray: chunks as Ray tasks, same output bytes")
    score.add_argument("--address", help="Ray cluster to score on with --engine ray (default: $RAY_ADDRESS, else a "
                       "local Ray instance with this machine's cores)")
    score.set_defaults(handler=_score)

    explain = commands.add_parser("explain", help="write a self-contained HTML report for a run",
                                  description="Write RECIPE's explanation report for a run as one HTML file.")
    explain.add_argument("recipe", help="recipe name")
    explain.add_argument("--run", default="latest", help="run id, run folder or 'latest' (default)")
    explain.add_argument("--input", type=Path, help="Parquet file in the scoring schema (default: the run's held-out data)")
    explain.add_argument("--out", type=Path, help="HTML file to write (default: <run>/report.html)")
    explain.add_argument("--max-examples", type=_positive_int, default=4, help="examples shown in detail (default 4)")
    explain.add_argument("--runs-dir", help="runs root (default: $FUSION_RUNS_DIR, else ./runs)")
    explain.set_defaults(handler=_explain)

    data = commands.add_parser("data", help="fetch or list the data sets",
                               description="Fetch a data set into the cache ($FUSION_DATA_DIR) or list them.")
    data_commands = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    fetch = data_commands.add_parser("fetch", help="make a data set available locally")
    fetch.add_argument("name", help="data set name (fusion data list)")
    fetch.add_argument("--path", help="use this local copy instead of downloading")
    fetch.add_argument("--force", action="store_true", help="fetch again even when cached")
    fetch.set_defaults(handler=_data_fetch)
    data_commands.add_parser("list", help="list the data sets").set_defaults(handler=_data_list)

    app = commands.add_parser("app", help="open the Streamlit dashboards on the runs folder",
                              description="Run the Streamlit dashboards (apps/Home.py) on the runs folder.")
    app.add_argument("--port", type=int, default=8501, help="port (default 8501)")
    app.add_argument("--runs-dir", help="runs root (default: $FUSION_RUNS_DIR, else ./runs)")
    app.add_argument("--headless", action="store_true", help="do not open a browser")
    app.set_defaults(handler=_app)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``fusion`` console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv[:1] == ["train"]:
            return _train(argv[1:])
        args = _parser().parse_args(argv)
        return args.handler(args)
    except _UsageError as error:
        print(f"fusion: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fusion: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
