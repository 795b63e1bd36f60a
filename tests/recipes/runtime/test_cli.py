"""The `fusion` console script: light --help, subcommands wired to the runtime, one-line user errors."""
from __future__ import annotations

import subprocess
import sys

import polars as pl
import pytest

from tests.recipes.runtime import toy_recipe
from recipes import cli
from recipes.cli import main


def test_help_lists_subcommands_without_importing_torch():
    code = (
        "import sys\n"
        "from recipes.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit as e:\n    assert e.code == 0\n"
        "print('HEAVY', sorted(m for m in ('torch', 'lightning', 'polars', 'pyarrow', 'yaml', 'streamlit') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    for command in ("train", "score", "explain", "data", "app"):
        assert f"    {command} " in result.stdout
    assert "HEAVY []" in result.stdout
    module = subprocess.run([sys.executable, "-m", "recipes.cli", "--help"], capture_output=True, text=True)
    assert module.returncode == 0 and "usage: fusion" in module.stdout


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("fusion: error: ")
    return err


@pytest.mark.parametrize("argv", [
    ["train", "no-such-recipe"],
    ["score", "no-such-recipe", "--input", "x.parquet", "--output", "y.parquet"],
    ["explain", "no-such-recipe"],
])
def test_unknown_recipe_exits_2_with_one_line(argv, capsys):
    assert main(argv) == 2
    assert "unknown recipe 'no-such-recipe'" in one_line_error(capsys)


def test_train_help_lists_recipes(toy, capsys):
    assert main(["train", "--help"]) == 0
    out = capsys.readouterr().out
    assert "usage: fusion train RECIPE" in out and "toy" in out and "quick" in out
    assert main(["train"]) == 2


def test_train_config_mistake_exits_2(toy, tmp_path, capsys):
    assert main(["train", "toy", "--config", "nope", "--runs-dir", str(tmp_path)]) == 2
    assert "no config 'nope'" in one_line_error(capsys)
    assert main(["train", "toy-alias", "--resume", "nope", "--runs-dir", str(tmp_path)]) == 2
    assert "run 'nope' of recipe toy not found" in one_line_error(capsys)


def test_score_and_explain_through_the_cli(trained_run, tmp_path, capsys):
    runs = str(trained_run.path.parents[1])
    source = tmp_path / "in.parquet"
    toy_recipe.make_frame(20).write_parquet(source)
    out = tmp_path / "out.parquet"
    common = ["--run", "latest", "--runs-dir", runs, "--input", str(source), "--no-progress"]
    assert main(["score", "toy", *common, "--output", str(out), "--chunk-size", "6", "--shard", "1/2"]) == 0
    assert not out.exists()
    assert main(["score", "toy", *common, "--output", str(out), "--chunk-size", "6", "--shard", "0/2"]) == 0
    scored = pl.read_parquet(out)
    assert scored.height == 20 and scored["error"].null_count() == 20
    capsys.readouterr()

    assert main(["score", "toy", *common, "--output", str(out), "--shard", "2/2"]) == 2
    assert "bad shard 2/2" in one_line_error(capsys)
    assert main(["score", "toy", "--run", "latest", "--runs-dir", runs, "--input", str(tmp_path / "none.parquet"), "--output", str(out)]) == 2
    assert "none.parquet: no such file" in one_line_error(capsys)
    assert main(["score", "toy", "--run", "nope", "--runs-dir", runs, "--input", str(source), "--output", str(out)]) == 2
    assert "run 'nope' of recipe toy not found" in one_line_error(capsys)

    report = tmp_path / "report.html"
    assert main(["explain", "toy", "--run", trained_run.run_id, "--runs-dir", runs, "--input", str(source), "--out", str(report)]) == 0
    assert "data:image/png;base64," in report.read_text()


def test_data_subcommands_delegate_to_the_dataset_registry(tmp_path, monkeypatch, capsys):
    from recipes.runtime import datasets

    monkeypatch.setattr(datasets, "_load", lambda name=None: None)  # no installed data sets: only the one below
    monkeypatch.setattr(datasets, "_DATASETS", {})
    monkeypatch.setenv("FUSION_DATA_DIR", str(tmp_path / "cache"))

    def fetch(path, dest):
        dest.mkdir(parents=True, exist_ok=True)
        (dest / "rows.csv").write_text("a\n1\n")
        return dest

    datasets.register_dataset(datasets.DatasetSpec(name="tiny", description="a tiny test set", fetch=fetch, card=""))
    assert main(["data", "list"]) == 0
    assert "tiny" in capsys.readouterr().out
    assert main(["data", "fetch", "tiny"]) == 0
    assert capsys.readouterr().out.strip().endswith(str(tmp_path / "cache" / "tiny"))
    assert main(["data", "fetch", "nope"]) == 2
    assert "unknown data set 'nope'" in one_line_error(capsys)
    assert main(["data", "fetch", "tiny", "--path", str(tmp_path / "absent")]) == 2
    assert "absent: no such file or folder" in one_line_error(capsys)


def test_app_runs_streamlit_on_home_with_the_runs_dir(tmp_path, monkeypatch, capsys):
    import apps

    fake = tmp_path / "apps"
    fake.mkdir()
    (fake / "Home.py").write_text("")
    monkeypatch.setattr(apps, "__file__", str(fake / "__init__.py"))
    calls = []
    monkeypatch.setattr(cli.subprocess, "call", lambda command, env: calls.append((command, env)) or 0)
    assert main(["app", "--port", "8600", "--runs-dir", str(tmp_path / "runs"), "--headless"]) == 0
    (command, env), = calls
    assert command[:5] == [sys.executable, "-m", "streamlit", "run", str(fake / "Home.py")]
    assert command[command.index("--server.port") + 1] == "8600"
    assert command[command.index("--server.headless") + 1] == "true"
    assert env["FUSION_RUNS_DIR"] == str((tmp_path / "runs").resolve())

    (fake / "Home.py").unlink()
    assert main(["app"]) == 2
    assert "Home.py is missing" in one_line_error(capsys)
