"""The recipe end to end on a tiny cohort: train (label smoothing + OT), score good and bad recordings with no lost
rows, explain; the shipped configs fit the module and data signatures."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import soundfile as sf
import yaml

from tests.recipes.dementia_speech.dementia_helpers import tone
from tests.recipes.dementia_speech.tiny import tiny_dementia_run

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs Debian espeak-ng (make system-deps)"),
]

CONFIGS = Path(__file__).resolve().parents[3] / "recipes" / "dementia_speech" / "configs"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    # two epochs, 8-px patches and the OT term on, so training exercises label smoothing + OT
    extra = ("--trainer.max_epochs=2", "--model.config.patch_size=8", "--model.config.ot_weight=0.5")
    with tiny_dementia_run(tmp_path_factory, extra) as run:
        yield run


@pytest.mark.parametrize("name", ["quick", "full", "lora", "large"])
def test_shipped_configs_build_the_module_and_the_data_module(name):
    from fusion_core.encoders.text_minilm import MINILM_DIM
    from recipes.dementia_speech.data import DementiaDataModule
    from recipes.dementia_speech.module import DementiaModule
    from recipes.runtime.registry import get_recipe
    from recipes.runtime.train import parse_config

    config = parse_config("dementia", [name])
    data = DementiaDataModule(**config["data"])
    linked = {"text_dim": data.text_dim, "image_size": data.image_size, "text_encoder": data.text_encoder,
              "text_vocab_size": data.text_vocab_size, "acoustic": data.acoustic,
              "acoustic_features": data.acoustic_features}
    module = DementiaModule({**config["model"]["config"], **linked})
    assert data.text_dim == MINILM_DIM and module.config.fusion in ("gated_self_attention", "cross_attention")
    for path in get_recipe("dementia").config_chain(name):
        written = (yaml.safe_load(path.read_text()).get("model") or {}).get("config") or {}
        assert not set(linked) & set(written), path  # linked from the data section, so the two cannot disagree


def test_the_large_config_is_the_benchmark_cohort_with_the_acoustic_markers():
    from dataclasses import asdict

    from recipes.dementia_speech.cohort import LARGE_COHORT
    from recipes.dementia_speech.data import DementiaDataModule
    from recipes.runtime.train import parse_config

    data = DementiaDataModule(**parse_config("dementia", ["large"])["data"])
    assert asdict(data.spec) == asdict(LARGE_COHORT) and data.acoustic == "features" and data.acoustic_features == 100
    assert sum(asdict(LARGE_COHORT)[k] for k in ("source_train", "source_test", "target_train", "target_test")) >= 400


def test_the_lora_config_holds_only_what_differs_from_quick():
    from recipes.runtime.registry import get_recipe
    from recipes.runtime.train import parse_config

    assert [p.name for p in get_recipe("dementia").config_chain("lora")] == ["quick.yaml", "lora.yaml"]
    quick, lora = parse_config("dementia", ["quick"]), parse_config("dementia", ["lora"])
    assert lora["data"].pop("text_encoder") == "minilm_lora" and quick["data"].pop("text_encoder") == "minilm"
    sections = ("seed_everything", "trainer", "model", "data")
    assert {k: lora[k] for k in sections} == {k: quick[k] for k in sections}


def test_training_writes_metrics_for_both_domains_and_each_branch_left_out(tiny_run):
    metrics = tiny_run.metrics
    for key in ("acc", "precision", "recall", "f1", "auroc", "ece", "adaptive_ece", "brier", "nll"):
        assert f"test/{key}" in metrics and f"test/target_{key}" in metrics
        assert f"test/{key}@without_audio" in metrics and f"test/target_{key}@without_text" in metrics
    assert 0 <= metrics["test/acc"] <= 1 and 0 <= metrics["test/ece"] <= 1
    assert tiny_run.hparams["config"]["ot_weight"] == 0.5  # the OT term was on (see test_module for its value)
    assert (tiny_run.path / "features.json").is_file()
    predictions = pl.read_parquet(tiny_run.path / "test_predictions.parquet")
    assert predictions.height == 8 and predictions["probability"].is_between(0, 1).all()
    assert sorted(predictions["domain"].unique().to_list()) == [0, 1]


def _bad_and_good_inputs(folder: Path, good: pl.DataFrame) -> pl.DataFrame:
    folder.mkdir()
    sf.write(folder / "empty.wav", np.zeros(0, np.float32), 16_000)
    sf.write(folder / "clipped.wav", np.clip(tone(2.0, amplitude=4.0), -1, 1), 16_000)
    sf.write(folder / "rate44k.wav", sf.read(good["wav_path"][0])[0], 44_100)  # played back at the wrong rate
    sf.write(folder / "stereo.wav", np.stack([sf.read(good["wav_path"][0])[0]] * 2, axis=1), 16_000)
    (folder / "notes.wav").write_text("not audio at all")
    paths = [str(folder / n) for n in ("empty.wav", "clipped.wav", "rate44k.wav", "stereo.wav", "notes.wav")]
    bad = pl.DataFrame({"speaker_id": [f"B{i}" for i in range(5)], "wav_path": paths,
                        "cha_path": [None, None, good["cha_path"][0], good["cha_path"][0], None],
                        "transcript": [None, None, None, None, "the boy (..) &uh fell"]})
    return pl.concat([good.select("speaker_id", "wav_path", "cha_path").with_columns(pl.lit(None, pl.Utf8).alias("transcript")),
                      bad], how="vertical")


def test_scoring_keeps_every_row_and_explains_bad_recordings(tiny_run, tmp_path):
    from recipes.runtime.registry import get_recipe
    from recipes.runtime.score import score_file

    recipe = get_recipe("dementia")
    held_out = pl.read_parquet(recipe.demo_input(tiny_run, tmp_path / "demo.parquet"))
    assert held_out.height == 8 and {"speaker_id", "wav_path", "cha_path", "label", "domain"} <= set(held_out.columns)
    assert held_out["wav_path"].str.starts_with("demo_files/").all()  # copied beside it: scores under its data root
    held_out = held_out.with_columns(pl.col("wav_path", "cha_path").map_elements(lambda p: str(tmp_path / p),
                                                                                 return_dtype=pl.Utf8))
    frame = _bad_and_good_inputs(tmp_path / "wavs", held_out.head(3))
    frame.write_parquet(tmp_path / "in.parquet")
    scored = pl.read_parquet(score_file(recipe, tiny_run, tmp_path / "in.parquet", tmp_path / "out.parquet", chunk_size=4))
    assert scored.height == frame.height and scored["row"].to_list() == list(range(frame.height))
    by_speaker = {r["speaker_id"]: r for r in scored.iter_rows(named=True)}
    for speaker in held_out.head(3)["speaker_id"]:
        assert by_speaker[speaker]["error"] is None and 0 <= by_speaker[speaker]["score"] <= 1
    assert "empty.wav: the recording is empty" in by_speaker["B0"]["error"] and by_speaker["B0"]["score"] is None
    assert "clipped.wav" in by_speaker["B1"]["error"] and "lower input gain" in by_speaker["B1"]["error"]
    assert by_speaker["B2"]["error"] is None  # another rate: resampled
    assert by_speaker["B3"]["error"] is None  # stereo: averaged to mono
    assert by_speaker["B2"]["transcript_source"] == "manual"  # read from its .cha file, kept in the scored file
    stereo_equals_mono = abs(by_speaker["B3"]["score"] - by_speaker[held_out["speaker_id"][0]]["score"]) < 1e-5
    assert stereo_equals_mono
    # an unreadable recording with a transcript: scored from the text alone, the warning names the file and the fix
    assert by_speaker["B4"]["error"] is None and by_speaker["B4"]["score"] is not None
    assert by_speaker["B4"]["warnings"].startswith("scored without wav_path")
    assert "notes.wav: not a readable audio file" in by_speaker["B4"]["warnings"] and "sox" in by_speaker["B4"]["warnings"]


def test_explain_writes_a_report_with_every_section(tiny_run, tmp_path):
    from recipes.runtime.explain import explain

    out = explain("dementia", tiny_run, None, tmp_path / "report.html", max_examples=2)
    html = out.read_text()
    for section in ("Modality Shapley values", "Spectrogram saliency", "Word attributions", "Calibration",
                    "reliability diagram, source (clean)", "reliability diagram, target (telephone)",
                    "reliability diagram before temperature scaling, source (clean)"):
        assert section in html
    assert "Acoustic markers" not in html  # a spectrogram-only run has no markers to attribute
    assert html.count("data:image/png;base64,") >= 6  # Shapley, saliency, two reliability diagrams before and after
    assert "<strong>(" in html or "<strong>&amp;" in html  # pauses or fillers are marked in a transcript


def test_predictor_marks_asr_when_there_is_no_transcript(tiny_run, monkeypatch):
    import recipes.dementia_speech.predictor as predictor_module
    from recipes.runtime.registry import get_recipe

    monkeypatch.setattr(predictor_module, "transcribe", lambda waveform, sample_rate=16_000: "the boy fell")
    predictor = get_recipe("dementia").load_predictor(tiny_run)
    from recipes.dementia_speech.recipe import held_out_rows

    row = held_out_rows(tiny_run).head(1)
    encoded = predictor.encode(row.select("speaker_id", "wav_path"))
    assert encoded.transcripts == ["the boy fell"] and encoded.transcript_sources == ["asr"]
    encoded = predictor.encode(row)
    assert encoded.transcript_sources == ["manual"] and encoded.transcripts[0]


def test_target_batches_carry_no_labels(tiny_run):
    import json

    from recipes.dementia_speech.data import DementiaDataModule

    root = json.loads((tiny_run.path / "features.json").read_text())["root"]
    dm = DementiaDataModule(root=root, text_encoder="scratch", image_size=16, n_mels=32, max_text_tokens=32,
                            batch_size=4, num_folds=2, max_seconds=20)
    dm.setup()
    batch, _, _ = next(iter(dm.train_dataloader()))
    assert "label" not in batch["target"] and bool((batch["target"]["domain"] == 1).all())
    assert bool((batch["source"]["domain"] == 0).all()) and set(batch["source"]["label"].tolist()) <= {0.0, 1.0}
