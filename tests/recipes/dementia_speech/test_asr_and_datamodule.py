"""Offline ASR with pocketsphinx, and the DataModule on an ADReSS-layout fixture: transcripts keep their source,
features are cached, the target domain's labels never reach a training batch."""
from __future__ import annotations

import io
import shutil
import subprocess

import numpy as np
import pytest
import torch

from recipes.dementia_speech.audio import SAMPLE_RATE, transcribe
from recipes.dementia_speech.data import DementiaDataModule


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs Debian espeak-ng (make system-deps)")
def test_pocketsphinx_transcribes_speech_offline():
    import soundfile as sf
    from scipy.signal import resample_poly

    wav = subprocess.run(["espeak-ng", "-v", "en-us", "-s", "140", "--stdout", "the boy is standing on a stool"],
                         capture_output=True, check=True).stdout
    audio, rate = sf.read(io.BytesIO(wav), dtype="float32")
    words = transcribe(resample_poly(audio, SAMPLE_RATE, rate).astype(np.float32)).split()
    assert len(words) >= 2 and all(w == w.lower() for w in words)
    assert isinstance(transcribe(np.zeros(SAMPLE_RATE, np.float32)), str)
    with pytest.raises(ValueError, match="16000 Hz"):
        transcribe(np.zeros(8000, np.float32), 8000)


def test_datamodule_on_adress_fixture(adress_root, monkeypatch):
    monkeypatch.setattr("recipes.dementia_speech.data.transcribe", lambda waveform, sample_rate=SAMPLE_RATE: "the boy")
    dm = DementiaDataModule(root=str(adress_root), text_encoder="scratch", image_size=16, n_mels=32,
                            max_text_tokens=16, batch_size=2, num_folds=2)
    dm.setup()
    sources = dict(zip(dm.frame["speaker_id"], dm.frame["transcript_source"]))
    assert sources["S161"] == "asr" and sources["S160"] == "manual" and sources["S001"] == "manual"
    assert dm.frame.filter(dm.frame["speaker_id"] == "S161")["transcript"][0] == "the boy"
    assert len(dm.split_rows["train"]) == 2 and len(dm.split_rows["val"]) == 2 and len(dm.split_rows["test"]) == 2
    assert len(dm.split_rows["target"]) == 0  # an ADReSS copy has no target domain
    assert dm.tensors["image"].shape == (6, 3, 16, 16) and dm.tensors["text_ids"].shape == (6, 16)
    assert list((adress_root / "cache").glob("features-*.pt"))

    cached = DementiaDataModule(root=str(adress_root), text_encoder="scratch", image_size=16, n_mels=32,
                                max_text_tokens=16, batch_size=2, num_folds=2)
    monkeypatch.setattr("recipes.dementia_speech.data.transcribe", lambda *a, **k: pytest.fail("cache not used"))
    cached.setup()
    assert torch.equal(cached.tensors["image"], dm.tensors["image"])
    assert dict(zip(cached.frame["speaker_id"], cached.frame["transcript_source"]))["S161"] == "asr"
    batch, _, _ = next(iter(cached.train_dataloader()))  # CombinedLoader yields (batch, index, loader index)
    assert set(batch) == {"source"} and batch["source"]["label"].shape == (2,)


@pytest.mark.parametrize("kwargs,match", [
    ({"text_encoder": "bert"}, "text_encoder"), ({"fold": 5}, "fold"), ({"batch_size": 1}, "batch_size"),
    ({"cohort": {"speakers": 20}}, r"no field\(s\) \['speakers'\]"), ({"cohort": {"source_train": 3}}, "even int"),
    ({"root": "ADReSS", "cohort": {"source_train": 4}}, "not both"),
])
def test_bad_datamodule_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DementiaDataModule(**kwargs)


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs Debian espeak-ng (make system-deps)")
def test_a_transcript_does_not_depend_on_what_was_decoded_before():
    """A reused pocketsphinx decoder carries its cepstral-mean estimate over: this telephone clip was transcribed
    'why is that too' fresh, then 'that was at up to' and 'go ahead and the two' after the noisy clip."""
    from scipy.signal import resample_poly

    from recipes.dementia_speech.cohort import telephone_channel
    from tests.recipes.dementia_speech.dementia_helpers import speech

    rng = np.random.default_rng(0)
    phone = resample_poly(telephone_channel(speech("the boy is standing on the stool", 2.5), 16_000, rng), 16_000, 8_000)
    phone = phone.astype(np.float32)
    noisy = speech("the mother is drying a plate at the sink and the water is overflowing", 5.0) * 0.2
    noisy = noisy + (rng.standard_normal(noisy.size) * 0.2).astype(np.float32)
    fresh = transcribe(phone)
    transcribe(noisy)
    transcribe(noisy)
    assert [transcribe(phone), transcribe(phone)] == [fresh, fresh]
