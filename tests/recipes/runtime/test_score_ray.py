"""`fusion score --engine ray`: the same bytes as the local engine, a killed worker retried, a killed job resumed.

One local Ray instance (2 CPUs, a 100 MiB object store, no dashboard) serves the whole module.
"""
from __future__ import annotations

import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pytest

from tests.recipes.runtime import toy_recipe
from tests.recipes.runtime.test_score import CHUNK, ROWS, KilledOnce
from recipes.cli import main
from recipes.runtime.registry import get_recipe
from recipes.runtime.score import score_file
from recipes.runtime.score_ray import RayEngine, RayScoringError, RayUnavailableError, connected

ray = pytest.importorskip("ray")

TOY_FIELDS = ("name", "configs_dir", "links", "score_columns", "passthrough", "extra_outputs")


@pytest.fixture(scope="module")
def ray_instance():
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RAY_USAGE_STATS_ENABLED", "0")  # no phoning home from the tests
        ray.init(num_cpus=2, object_store_memory=100 * 2**20, include_dashboard=False, log_to_driver=False)
        yield ray
        ray.shutdown()


@pytest.fixture(scope="module")
def toy_input(tmp_path_factory):
    """45 rows; row 3 has a non-number, row 7 a missing value, row 12 the value that fails its whole chunk."""
    frame = toy_recipe.make_frame(ROWS).with_columns(pl.col("f2").cast(pl.Utf8))
    frame = frame.with_columns(
        pl.when(pl.col("id") == "r3").then(pl.lit("abc")).when(pl.col("id") == "r7").then(None).otherwise(pl.col("f2")).alias("f2"),
        pl.when(pl.col("id") == "r12").then(toy_recipe.SENTINEL).otherwise(pl.col("f0")).alias("f0"),
    )
    path = tmp_path_factory.mktemp("toy-input") / "input.parquet"
    frame.write_parquet(path)
    return path


@pytest.fixture(scope="module")
def toy_local(toy, trained_run, toy_input, tmp_path_factory):
    out = tmp_path_factory.mktemp("toy-local") / "scores.parquet"
    return score_file(toy, trained_run, toy_input, out, chunk_size=CHUNK, progress=False)


def test_toy_scores_have_the_local_engines_bytes(ray_instance, toy, trained_run, toy_input, toy_local, tmp_path):
    engine = RayEngine(num_workers=2)
    out = score_file(toy, trained_run, toy_input, tmp_path / "scores.parquet", chunk_size=CHUNK, progress=False,
                     engine=engine)
    assert out.read_bytes() == toy_local.read_bytes()
    scored = pl.read_parquet(out)
    assert scored["row"].to_list() == list(range(ROWS))
    assert scored.filter(pl.col("row") == 12)["error"].item() == "ValueError: f0 = -999.0 is not allowed"  # failed in a worker
    assert sum(engine.chunks_per_worker.values()) == 6  # ceil(45 / 8) chunks, each scored once
    assert all(0 < mb < 4096 for mb in engine.worker_peak_rss_mb.values())
    assert not (tmp_path / "scores.parquet.parts").exists()


def test_rec_scores_have_the_local_engines_bytes(ray_instance, tiny_rec_run, tmp_path):
    recipe = get_recipe("longseq_rec")
    exported = pl.read_parquet(recipe.demo_input(tiny_rec_run, tmp_path / "held_out.parquet"))
    bad = pl.DataFrame({"user_id": [1, 2], "target_item": [999_999, 5], "history_items": [[1, 2], []]})
    bad = bad.with_columns(pl.col("history_items").cast(exported.schema["history_items"]))
    good = exported.select("user_id", "target_item", "history_items")
    pl.concat([good.head(3), bad, good.slice(3)]).write_parquet(tmp_path / "mixed.parquet")
    local = score_file(recipe, tiny_rec_run, tmp_path / "mixed.parquet", tmp_path / "local.parquet", chunk_size=3,
                       progress=False)
    on_ray = score_file(recipe, tiny_rec_run, tmp_path / "mixed.parquet", tmp_path / "ray.parquet", chunk_size=3,
                        progress=False, engine="ray")
    assert on_ray.read_bytes() == local.read_bytes()
    scored = pl.read_parquet(on_ray)
    assert "999999" in scored["error"][3] and scored["error"][:3].to_list() == [None] * 3  # an error row from a worker
    assert scored["score"].is_null().to_list() == scored["error"].is_not_null().to_list()


@dataclass
class KillsItsWorker(toy_recipe.ToyRecipe):
    """SIGKILLs the Ray worker process scoring the chunk that holds row ``victim``, once (``marker`` records the
    pid): a worker lost mid-job. Never kills the process that built it (the driver)."""

    marker: str = ""
    victim: str = "r20"
    driver_pid: int = 0

    def score_frame(self, predictor, frame):
        if (os.getpid() != self.driver_pid and frame.height > 1 and self.victim in frame["id"]
                and not Path(self.marker).exists()):
            Path(self.marker).write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)
        return super().score_frame(predictor, frame)


def test_a_killed_worker_is_retried_and_the_bytes_stay_the_same(ray_instance, trained_run, toy_input, toy_local,
                                                                 tmp_path):
    marker = tmp_path / "killed.pid"
    killer = KillsItsWorker(**{f: getattr(toy_recipe.TOY, f) for f in TOY_FIELDS}, marker=str(marker),
                            driver_pid=os.getpid())
    engine = RayEngine(num_workers=2, max_retries=2)
    out = score_file(killer, trained_run, toy_input, tmp_path / "scores.parquet", chunk_size=CHUNK, progress=False,
                     engine=engine)
    killed = int(marker.read_text())
    assert killed != os.getpid()
    with pytest.raises(ProcessLookupError):
        os.kill(killed, 0)
    assert sum(engine.chunks_per_worker.values()) == 6
    assert out.read_bytes() == toy_local.read_bytes()


def test_no_retries_left_fails_the_job_and_keeps_the_finished_chunks(ray_instance, trained_run, toy_input, tmp_path):
    marker = tmp_path / "killed.pid"
    killer = KillsItsWorker(**{f: getattr(toy_recipe.TOY, f) for f in TOY_FIELDS}, marker=str(marker),
                            driver_pid=os.getpid())
    out = tmp_path / "scores.parquet"
    with pytest.raises(RayScoringError, match="chunk 2 failed on Ray after up to 0 retries.*rerunning the same command resumes"):
        score_file(killer, trained_run, toy_input, out, chunk_size=CHUNK, progress=False,
                   engine=RayEngine(num_workers=1, max_retries=0))
    assert (tmp_path / "scores.parquet.parts" / "part-000001.parquet").is_file() and not out.exists()


def test_a_job_killed_under_one_engine_resumes_under_ray(ray_instance, trained_run, toy_input, toy_local, tmp_path):
    out = tmp_path / "scores.parquet"
    killer = KilledOnce(**{f: getattr(toy_recipe.TOY, f) for f in TOY_FIELDS})
    with pytest.raises(KeyboardInterrupt):
        score_file(killer, trained_run, toy_input, out, chunk_size=CHUNK, progress=False)
    finished = sorted(p.name for p in (tmp_path / "scores.parquet.parts").glob("part-*"))
    assert finished == ["part-000000.parquet", "part-000001.parquet"]
    engine = RayEngine()
    score_file(toy_recipe.TOY, trained_run, toy_input, out, chunk_size=CHUNK, progress=False, engine=engine)
    assert sum(engine.chunks_per_worker.values()) == 4  # only the chunks with no part file
    assert out.read_bytes() == toy_local.read_bytes()


def test_cli_engine_ray_takes_file_urls(ray_instance, toy, trained_run, toy_input, toy_local, tmp_path, capsys):
    out = tmp_path / "scores.parquet"
    status = main(["score", "toy", "--engine", "ray", "--run", str(trained_run.path), "--input", toy_input.as_uri(),
                   "--output", out.as_uri(), "--chunk-size", str(CHUNK), "--no-progress"])
    assert status == 0, capsys.readouterr().err
    assert out.read_bytes() == toy_local.read_bytes()


def test_cli_refuses_an_address_without_the_ray_engine_and_other_url_schemes(toy, trained_run, toy_input, tmp_path,
                                                                               capsys):
    base = ["score", "toy", "--run", str(trained_run.path), "--output", str(tmp_path / "o.parquet")]
    assert main([*base, "--input", str(toy_input), "--address", "10.0.0.1:6379"]) == 2
    assert "--address needs --engine ray" in capsys.readouterr().err
    assert main([*base, "--input", "s3://bucket/in.parquet", "--engine", "ray"]) == 2
    assert "s3://bucket/in.parquet: only local paths and file:// URLs" in capsys.readouterr().err


def test_without_ray_installed_the_engine_says_which_extra_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    with pytest.raises(RayUnavailableError, match=r"pip install 'fusion-suite\[distributed\]'"):
        with connected():
            pass
