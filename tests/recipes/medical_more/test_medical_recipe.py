"""The recipe end to end at toy size: `fusion train` → scoring with missing modalities and bad files → explain;
and every shipped config parses against the module and data module."""
from __future__ import annotations

import json
import os

import numpy as np
import polars as pl
import pytest

from recipes.medical_more.labels import FINDINGS
from recipes.runtime.registry import get_recipe

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("config", ["quick", "full", "lora"])
def test_shipped_configs_parse_and_instantiate(config, tmp_path, toy_cohort):
    from lightning.pytorch.cli import LightningCLI

    from recipes.runtime.train import _make_cli_class

    recipe = get_recipe("medical")
    chain = [arg for path in recipe.config_chain(config) for arg in ("--config", str(path))]
    cli = _make_cli_class()(
        recipe.module_class, recipe.datamodule_class, links=recipe.links, run=False, save_config_callback=None,
        args=[*chain, "--data.data_dir", str(toy_cohort), "--trainer.logger", "false"],
    )
    assert isinstance(cli, LightningCLI)
    config = cli.model.config
    assert config.image_size == cli.datamodule.image_size
    assert config.ecg_samples == cli.datamodule.ecg_samples == 10 * cli.datamodule.sampling_rate
    assert config.report_encoder == cli.datamodule.report_encoder
    assert list(config.findings) == list(FINDINGS)
    assert config.modality_dropout == {"ecg": 0.3, "report": 0.5}  # MoRE's ECG rate, the report's, in every config


def test_lora_config_holds_only_what_differs_from_quick():
    import yaml

    recipe = get_recipe("medical")
    assert [p.stem for p in recipe.config_chain("lora")] == ["quick", "lora"]
    lora = yaml.safe_load(recipe.config_path("lora").read_text())
    quick = yaml.safe_load(recipe.config_path("quick").read_text())
    assert set(lora) == {"model", "data"}
    assert lora["data"]["report_encoder"] == "minilm_lora" != quick["data"]["report_encoder"]
    for section in ("model", "data"):
        flat = lora[section].get("config", lora[section])
        base = quick[section].get("config", quick[section])
        assert all(base.get(key) != value for key, value in flat.items()), section


def test_training_writes_metrics(tiny_medical_run):
    metrics = tiny_medical_run.metrics
    for name in ("test/auroc", "test/auroc@without_ecg", "test/auroc@without_report", "test/auroc@without_ecg+report",
                 "test/recall@1_report_to_xray", "test/recall@10_report_to_ecg", "test/recall_ceiling@1_report_to_xray",
                 "test/zero_shot_auroc", "test/contrastive_loss", "train_seconds"):
        assert name in metrics and np.isfinite(metrics[name]), name
    assert tiny_medical_run.recipe == "medical_more"


@pytest.fixture(scope="module")
def demo_frame(tiny_medical_run, tmp_path_factory):
    recipe = get_recipe("medical_more")
    path = recipe.demo_input(tiny_medical_run, tmp_path_factory.mktemp("demo") / "demo.parquet")
    return pl.read_parquet(path)


def test_demo_input_is_real_files_with_gaps(demo_frame):
    from pathlib import Path

    assert {"patient_id", "xray_path", "ecg_path", "report_text", *FINDINGS} <= set(demo_frame.columns)
    assert all(Path(p).is_file() for p in demo_frame["xray_path"])
    first_ecg = demo_frame["ecg_path"].drop_nulls()[0]
    assert Path(first_ecg + ".hea").is_file()
    if demo_frame.height >= 5:
        assert demo_frame["ecg_path"][4] is None


def test_scoring_with_missing_modalities_and_bad_files(tiny_medical_run, demo_frame, tmp_path):
    from recipes.runtime.score import score_file

    first = demo_frame.row(0, named=True)
    (tmp_path / "broken.png").write_bytes(b"not a png")
    rows = [
        {"patient_id": "all", "xray_path": first["xray_path"], "ecg_path": first["ecg_path"], "report_text": first["report_text"]},
        {"patient_id": "xray only", "xray_path": first["xray_path"], "ecg_path": None, "report_text": None},
        {"patient_id": "ecg only", "xray_path": None, "ecg_path": first["ecg_path"], "report_text": None},
        {"patient_id": "report only", "xray_path": None, "ecg_path": None, "report_text": "The heart is enlarged."},
        {"patient_id": "nothing", "xray_path": None, "ecg_path": None, "report_text": None},
        {"patient_id": "broken", "xray_path": str(tmp_path / "broken.png"), "ecg_path": None, "report_text": "x"},
        {"patient_id": "no record", "xray_path": None, "ecg_path": str(tmp_path / "absent"), "report_text": None},
    ]
    source = tmp_path / "in.parquet"
    pl.DataFrame(rows).write_parquet(source)
    # the demo's files and this test's lie in two temporary folders: the data root is the folder holding both
    root = os.path.commonpath([first["xray_path"], str(tmp_path)])
    out = pl.read_parquet(score_file("medical", tiny_medical_run, source, tmp_path / "out.parquet", chunk_size=3,
                                     progress=False, data_root=root))
    assert out["row"].to_list() == list(range(len(rows)))
    assert out["patient_id"].to_list() == [r["patient_id"] for r in rows]
    scored = out.filter(pl.col("score").is_not_null())
    assert scored["patient_id"].to_list() == ["all", "xray only", "ecg only", "report only", "broken"]
    assert scored["score"].is_between(0, 1).all() and scored["error"].is_null().all()
    # which modalities each score used; the broken radiograph is left out and the warning says so
    assert scored["modalities"].to_list() == ["xray+ecg+report", "xray", "ecg", "report", "report"]
    warnings = dict(zip(out["patient_id"], out["warnings"]))
    assert warnings["all"] is None and warnings["report only"] is None
    assert warnings["broken"].startswith("scored without xray_path: ") and "broken.png" in warnings["broken"]
    assert "PNG" in warnings["broken"] and "; " not in warnings["broken"]  # one warning: "; " separates warnings
    # one probability per finding next to the main score, which is the cardiomegaly one
    assert scored["score"].to_list() == scored["p_cardiomegaly"].to_list()
    findings = [c for c in out.columns if c.startswith("p_")]
    assert len(findings) >= 2 and all(scored[c].is_between(0, 1).all() for c in findings)
    unscored = out.filter(pl.col("score").is_null())
    assert all(unscored[c].null_count() == unscored.height == 2 for c in [*findings, "modalities", "warnings"])
    errors = dict(zip(out["patient_id"], out["error"]))
    assert "no modality" in errors["nothing"]
    assert "ecg_path" in errors["no record"] and "WFDB" in errors["no record"]


def test_removing_a_modality_changes_the_score(tiny_medical_run, demo_frame):
    recipe = get_recipe("medical_more")
    predictor = recipe.load_predictor(tiny_medical_run)
    row = demo_frame.head(1).with_columns(pl.lit("FINDINGS: The heart is enlarged. IMPRESSION: Cardiomegaly.").alias("report_text"))
    with_report = recipe.score_frame(predictor, row)["score"][0]
    without = recipe.score_frame(predictor, row.with_columns(pl.lit(None, dtype=pl.Utf8).alias("report_text")))["score"][0]
    assert with_report is not None and without is not None and with_report != without


def test_explain_writes_a_report(tiny_medical_run, tmp_path):
    from recipes.runtime.explain import explain

    out = explain("medical", tiny_medical_run, None, tmp_path / "report.html", max_examples=2)
    html = out.read_text()
    assert "Modality Shapley values per finding" in html and "occlusion sensitivity" in html and "gradient" in html
    assert html.count("<img") >= 3  # the Shapley bars and two saliency figures
    assert "report words" in html
    card = (tiny_medical_run.path / "MODEL_CARD.md").read_text()
    assert "synthesised" in card
    json.dumps(tiny_medical_run.metrics)
