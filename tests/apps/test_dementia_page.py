"""The dementia page against a tiny trained run: empty state, a cohort speaker, an uploaded WAV with a transcript,
a bad upload, and a headless-chromium screenshot (test-artifacts/screenshots/dementia.png)."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from tests.apps.apptest import open_page as open_app_page
from tests.apps.browser import assert_no_exception, screenshot, serve_app, wait_for_text
from tests.recipes.dementia_speech.tiny import tiny_dementia_run

PAGE = "pages/3_Dementia.py"
TIMEOUT_S = 180
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs Debian espeak-ng (make system-deps)"),
]


@pytest.fixture(scope="module")
def dementia_runs(tmp_path_factory) -> Path:
    """A runs root holding one tiny dementia run (trained on a 20-speaker cohort)."""
    with tiny_dementia_run(tmp_path_factory) as run:
        return run.path.parents[1]


def open_page(monkeypatch: pytest.MonkeyPatch, root: Path) -> AppTest:
    return open_app_page(monkeypatch, root, PAGE, TIMEOUT_S)


def test_page_without_runs_says_how_to_train_one(runs_root: Path, monkeypatch: pytest.MonkeyPatch):
    at = open_page(monkeypatch, runs_root)
    assert at.title[0].value == "Dementia from spontaneous speech"
    assert "fusion train dementia --config quick" in at.info[0].value


def test_cohort_speaker_shows_probability_contributions_transcript_and_calibration(dementia_runs, monkeypatch):
    at = open_page(monkeypatch, dementia_runs)
    assert not at.error
    probability = float(next(m.value for m in at.metric if m.label == "Probability of dementia"))
    assert 0.0 <= probability <= 1.0
    assert any(m.label == "source accuracy" for m in at.metric)
    table = next(d.value for d in at.dataframe if "Shapley value" in d.value.columns)
    assert list(table["branch"]) == ["acoustic (spectrogram)", "linguistic (transcript)"]
    assert any(s.value.startswith("Transcript (manual)") for s in at.subheader)
    assert sorted(h.value for h in at.header) == ["Cohort calibration", "Recording", "Runs"]

    assert any(":orange-background[" in m.value or ":violet-background[" in m.value for m in at.markdown)

    speakers = at.selectbox(key="dementia-speaker").options
    assert len(speakers) == 8 and sum("telephone" in s for s in speakers) == 4
    at.selectbox(key="dementia-speaker").select_index(7).run()
    assert not at.exception and not at.error
    assert any(m.label == "Probability of dementia" for m in at.metric)


def test_upload_with_a_transcript_and_a_bad_upload(dementia_runs, monkeypatch, tmp_path):
    import io

    import soundfile as sf

    at = open_page(monkeypatch, dementia_runs)
    at.radio(key="dementia-mode").set_value("Upload a recording").run()
    assert "Upload a WAV file" in at.info[0].value

    from tests.recipes.dementia_speech.dementia_helpers import speech

    audio = speech("the boy is on the stool and he is falling", 3.0, rate=22_050)  # the VAD must hear speech
    buffer = io.BytesIO()
    sf.write(buffer, np.stack([audio, audio], axis=1), 22_050, format="WAV")  # stereo at another rate
    at.text_area(key="dementia-transcript").input("the boy (..) &uh is on the stool")
    at.file_uploader(key="dementia-wav").upload("speaker.wav", buffer.getvalue(), "audio/wav").run()
    assert not at.exception and not at.error
    assert 0.0 <= float(next(m.value for m in at.metric if m.label == "Probability of dementia")) <= 1.0
    assert any(s.value == "Transcript (manual)" for s in at.subheader)
    assert any(":orange-background[(..)]" in m.value for m in at.markdown)

    assert any(m.label == "Speech rate" for m in at.metric)  # the acoustic markers beside the transcript
    assert any(s.value == "Acoustic markers" for s in at.subheader)

    # an unreadable recording next to a transcript: scored from the transcript, with a warning that names the upload
    at.file_uploader(key="dementia-wav").upload("broken.wav", b"not audio at all", "audio/wav").run()
    assert not at.exception and not at.error
    shown = " ".join(w.value for w in at.warning)
    assert "broken.wav: not a readable audio file" in shown and "sox" in shown, shown
    assert "fusion-dementia-" not in shown  # the message names the upload, not the server's temp folder


def test_uploads_leave_no_folder_a_wrong_type_is_a_message_and_a_transcript_alone_scores(dementia_runs, monkeypatch,
                                                                                          tmp_path):
    import tempfile

    monkeypatch.setenv("TMPDIR", str(tmp_path))
    tempfile.tempdir = None  # re-read TMPDIR
    try:
        at = open_page(monkeypatch, dementia_runs)
        at.radio(key="dementia-mode").set_value("Upload a recording").run()
        at.file_uploader(key="dementia-wav").upload("../../evil.mp4", b"\x00" * 64, "video/mp4").run()
        assert not at.exception
        assert "a .mp4 file cannot be read here; upload .wav or .flac or .ogg" in at.error[0].value
    finally:
        tempfile.tempdir = None
    assert not list(tmp_path.glob("fusion-dementia-*"))  # every upload folder was removed

    at = open_page(monkeypatch, dementia_runs)
    at.radio(key="dementia-mode").set_value("Upload a recording").run()
    at.text_area(key="dementia-transcript").input("the boy (..) &uh is on the stool").run()
    assert not at.exception and not at.error
    assert "scored without wav_path" in at.warning[0].value
    assert 0.0 <= float(next(m.value for m in at.metric if m.label == "Probability of dementia")) <= 1.0
    assert any("scored from its transcript alone" in i.value for i in at.info)


@pytest.mark.browser
def test_dementia_page_in_headless_chromium(dementia_runs, browser, tmp_path):
    with serve_app(dementia_runs, tmp_path / "fusion-app.log") as url:
        browser.get(f"{url}/Dementia")
        body = wait_for_text(browser, ["Dementia from spontaneous speech", "Probability of dementia", "Cohort calibration"])
        assert "Traceback" not in body
        assert_no_exception(browser)
        screenshot(browser, "dementia.png", 3000)
