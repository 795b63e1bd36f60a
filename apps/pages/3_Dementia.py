"""Dementia dashboard: a recording's waveform with the pauses the VAD found, its spectrogram, its acoustic markers
(speech rate, pauses, phonation ratio) beside the transcript (pauses and fillers marked), the model's calibrated
probability of dementia, the acoustic and linguistic contributions, and the cohort's calibration.

Uploads are saved under generated names in a temporary folder that is removed once they are read, and read inside
that data root, as ``fusion score`` reads files; a transcript alone (no recording) is scored from the text.

Reads ``dementia_speech`` runs (``fusion train dementia ...``) and their held-out speakers; never trains.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import polars as pl  # noqa: E402
import streamlit as st  # noqa: E402
import torch  # noqa: E402

from apps.common import load_predictor_cached, run_picker, runs_root  # noqa: E402
from recipes.dementia_speech.acoustic import LONG_PAUSE_SECONDS  # noqa: E402
from fusion_core.explain import modality_shapley  # noqa: E402
from recipes.dementia_speech.readers.chat import PAUSE_TOKENS, is_filler  # noqa: E402
from recipes.dementia_speech.explain import reliability_figure  # noqa: E402
from recipes.runtime.runs import Run, list_runs  # noqa: E402

RECIPE = "dementia_speech"
DOMAIN_NAMES = {0: "source (clean, 16 kHz)", 1: "target (telephone, 8 kHz)"}
AUDIO_TYPES = (".wav", ".flac", ".ogg")
ACOUSTIC_NAMES = {"vit": "acoustic (spectrogram)", "features": "acoustic (markers)",
                  "both": "acoustic (spectrogram + markers)"}


@st.cache_data(show_spinner="Loading the held-out speakers…", max_entries=8)
def held_out_frame(run_path: str, model_stamp: float) -> pl.DataFrame:
    from recipes.dementia_speech.recipe import held_out_rows

    return held_out_rows(Run(run_path))


def marked_markdown(transcript: str) -> str:
    """Streamlit markdown of the transcript: pauses in orange, fillers in violet."""
    words = []
    for token in transcript.split():
        if token in PAUSE_TOKENS:
            words.append(f":orange-background[{token}]")
        elif is_filler(token):
            words.append(f":violet-background[{token.replace('&', '&amp;')}]")
        else:
            words.append(token)
    return " ".join(words)


def signal_figure(waveform: np.ndarray, predictor: Any, markers: Any = None):
    """Waveform (pauses the VAD found shaded: orange, red from 1 s) over the log-Mel spectrogram."""
    features = predictor.features
    log_mel = features.frontend()(torch.from_numpy(waveform)[None]).log_mel[0, 0].numpy()
    seconds = len(waveform) / features["sample_rate"]
    fig, (wave_ax, spec_ax) = plt.subplots(2, 1, figsize=(10, 4.2), sharex=True, gridspec_kw={"height_ratios": [1, 2]})
    wave_ax.plot(np.arange(len(waveform)) / features["sample_rate"], waveform, linewidth=0.4, color="#1f77b4")
    for start, end in (markers.pauses if markers is not None else []):
        wave_ax.axvspan(start, end, color="#d62728" if end - start >= LONG_PAUSE_SECONDS else "#ff7f0e", alpha=0.3,
                        linewidth=0)
    wave_ax.set_ylabel("amplitude")
    spec_ax.imshow(log_mel, origin="lower", aspect="auto", cmap="magma", extent=(0, seconds, 0, log_mel.shape[0]))
    spec_ax.set_ylabel("mel band")
    spec_ax.set_xlabel("time (s)")
    fig.tight_layout()
    return fig


def contributions(predictor: Any, batch: dict[str, torch.Tensor]) -> pl.DataFrame:
    """Modality Shapley values; a branch the row has no input for (a transcript without its recording) stays off."""
    modalities = list(predictor.module.model.modalities)
    has = predictor.module.present_of(batch)

    def probability(present: dict[str, torch.Tensor]) -> torch.Tensor:
        return predictor.probability(batch, {m: present[m] & has[m] for m in present})

    result = modality_shapley(probability, modalities, batch_size=1)
    names = {"audio": ACOUSTIC_NAMES.get(predictor.acoustic, "acoustic"), "text": "linguistic (transcript)"}
    return pl.DataFrame({"branch": [names[m] for m in modalities],
                         "Shapley value": [float(result.values[m][0]) for m in modalities]})


def uploaded_row(predictor: Any, wav: Any, chat: Any, transcript: str) -> tuple[Any, str | None]:
    """``(encoded row, error)``: the uploads saved as ``recording.<ext>`` and ``transcript.cha`` in a temporary folder
    that is removed once they are read (the waveform stays in memory), read inside that data root."""
    from recipes.runtime.inputs import data_root

    with tempfile.TemporaryDirectory(prefix="fusion-dementia-") as scratch:
        folder = Path(scratch)
        row: dict[str, str | None] = {"speaker_id": "upload", "wav_path": None, "cha_path": None,
                                      "transcript": transcript.strip() or None}
        for upload, column, allowed, stem in ((wav, "wav_path", AUDIO_TYPES, "recording"),
                                              (chat, "cha_path", (".cha",), "transcript")):
            if upload is None:
                continue
            suffix = Path(upload.name).suffix.lower()
            if suffix not in allowed:
                return None, (f"{upload.name}: a {suffix or 'file without extension'} file cannot be read here; upload "
                              f"{' or '.join(allowed)}")
            (folder / f"{stem}{suffix}").write_bytes(upload.getvalue())
            row[column] = f"{stem}{suffix}"
        with data_root(folder):
            encoded = predictor.encode(pl.DataFrame([row], schema={k: pl.Utf8 for k in row}))

        def named(text: str | None) -> str | None:
            """The message with the uploads' own names, not the server's temporary paths or generated names."""
            for upload, column in ((wav, "wav_path"), (chat, "cha_path")):
                if text and upload is not None and row[column]:
                    text = text.replace(str(folder.resolve() / row[column]), upload.name).replace(row[column], upload.name)
            return text

        encoded.warnings[0] = named(encoded.warnings[0])
        return encoded, named(encoded.errors[0])


# --- page -------------------------------------------------------------------------------------------------------

st.set_page_config(page_title="Dementia · fusion-suite", page_icon="🗣️", layout="wide")
st.title("Dementia from spontaneous speech")
st.caption(
    "A picture description's log-Mel spectrogram (with Δ and ΔΔ) goes through a small vision transformer and its "
    "transcript through MiniLM; context-based attention, gated self-attention or cross-modal fusion combine them. "
    "Research demonstration on synthetic speech — not a diagnostic tool."
)

root = runs_root()
runs = [run for run in list_runs(root, RECIPE) if run.has_model]
if not runs:
    st.info(
        f"**No finished `{RECIPE}` run** under `{root}`. Train one with `fusion train dementia --config quick` "
        "(generates the espeak-ng cohort on first use, a few minutes) or `make demo`.",
        icon="📭",
    )
    st.stop()

with st.sidebar:
    st.header("Runs")
    run = run_picker("Run", runs, key="dementia-run")

predictor = load_predictor_cached(RECIPE, run.path)
held_out = held_out_frame(str(run.path.resolve()), run.model_path.stat().st_mtime)
metrics = run.metrics
cols = st.columns(4)
for col, (label, key) in zip(cols, (("source accuracy", "test/acc"), ("source F1", "test/f1"),
                                    ("source ECE", "test/ece"), ("telephone accuracy", "test/target_acc"))):
    if key in metrics:
        col.metric(label, f"{metrics[key]:.3f}")
config = predictor.module.config
TEXT_ENCODER_NAMES = {"minilm": "frozen MiniLM", "minilm_lora": "MiniLM + LoRA adapters", "scratch": "from scratch"}
text_encoder = TEXT_ENCODER_NAMES.get(config.text_encoder, config.text_encoder)
st.caption(f"Run `{run.run_id}`: fusion `{config.fusion}`, branches {', '.join(predictor.module.model.modalities)}, "
           f"text encoder {text_encoder}, label smoothing {config.label_smoothing}, OT weight {config.ot_weight}.")

# --- one recording ------------------------------------------------------------------------------------------------
st.header("Recording")
mode = st.radio("Input", ["Cohort speaker", "Upload a recording"], horizontal=True, key="dementia-mode")
row: pl.DataFrame | None = None
if mode == "Cohort speaker":
    speakers = held_out["speaker_id"].to_list()
    speaker = st.selectbox("Held-out speaker", speakers, key="dementia-speaker",
                           format_func=lambda s: f"{s} · {DOMAIN_NAMES[int(held_out.filter(pl.col('speaker_id') == s)['domain'][0])]}")
    row = held_out.filter(pl.col("speaker_id") == speaker).head(1)
else:
    # no type= filter: Streamlit raises a page exception for a file it filters out; uploaded_row answers with a message
    wav = st.file_uploader("Recording (WAV, FLAC or OGG)", key="dementia-wav")
    transcript = st.text_area("Transcript (optional; CHAT pauses (.) (..) (...) and fillers &uh are understood)",
                              key="dementia-transcript")
    chat = st.file_uploader("or a CHAT transcript (.cha, optional)", key="dementia-cha")
    if wav is None and chat is None and not (transcript or "").strip():
        st.info("Upload a WAV file (without a transcript it is transcribed with pocketsphinx, offline), or give a "
                "transcript alone to score the text.")
        st.stop()

if row is not None:
    with st.spinner("Reading the recording…"):
        encoded = predictor.encode(row)
    problem = encoded.errors[0]
else:
    with st.spinner("Reading the recording…"):
        encoded, problem = uploaded_row(predictor, wav, chat, transcript or "")
if problem is not None:
    st.error(problem)
    st.stop()
if encoded.warnings[0]:
    st.warning(encoded.warnings[0])

probability = float(predictor.probability(encoded.batch)[0])
left, right = st.columns([1, 2])
left.metric("Probability of dementia", f"{probability:.2f}")
if row is not None and "label" in row.columns and row["label"][0] is not None:
    left.metric("Recorded diagnosis", "dementia" if int(row["label"][0]) == 1 else "control")
left.caption((f"Temperature-scaled (T = {predictor.temperature:.2f}, fit on the validation speakers). "
              if predictor.temperature != 1.0 else "Not temperature-scaled (fewer than 100 validation speakers). ") +
             f"Held-out ECE of this run: {metrics.get('test/ece', float('nan')):.3f} (source), "
             f"{metrics.get('test/target_ece', float('nan')):.3f} (telephone): how far such probabilities are from "
             "observed frequencies.")
with right:
    st.subheader("Modality contributions")
    table = contributions(predictor, encoded.batch)
    st.bar_chart(table.to_pandas(), x="branch", y="Shapley value", horizontal=True, height=180)
    st.dataframe(table, hide_index=True)

markers = encoded.markers[0]
if encoded.waveforms[0] is not None:
    st.subheader("Waveform and log-Mel spectrogram")
    figure = signal_figure(encoded.waveforms[0], predictor, markers)
    st.pyplot(figure)
    plt.close(figure)
    st.caption("Shaded: pauses between stretches of speech found by the voice-activity detector (orange from "
               f"0.25 s, red from {LONG_PAUSE_SECONDS:g} s).")

acoustic_col, text_col = st.columns([1, 2])
with acoustic_col:
    st.subheader("Acoustic markers")
    if markers is None:
        st.info("No recording: the row was scored from its transcript alone.")
    else:
        lengths = [end - start for start, end in markers.pauses]
        first, second = st.columns(2)
        first.metric("Speech rate", f"{markers.speech_rate:.2f} /s", help="voiced segments (≈ syllables) per second of speech")
        second.metric("Pauses", f"{len(lengths)}", help="silences of 0.25 s or more between stretches of speech")
        first.metric("Mean pause", f"{np.mean(lengths):.2f} s" if lengths else "–")
        second.metric("Phonation ratio", f"{markers.speech_seconds / max(markers.total_seconds, 1e-6):.2f}",
                      help="share of the recording that is speech")
        st.caption(f"{markers.speech_seconds:.1f} s of speech in {markers.total_seconds:.1f} s; longest pause "
                   f"{max(lengths, default=0.0):.2f} s.")
with text_col:
    st.subheader(f"Transcript ({encoded.transcript_sources[0]})")
    st.markdown(marked_markdown(encoded.transcripts[0] or "(nothing recognised)"))
    tokens = (encoded.transcripts[0] or "").split()
    st.caption(f"{sum(t in PAUSE_TOKENS for t in tokens)} pauses (orange) and {sum(is_filler(t) for t in tokens)} "
               f"fillers (violet) in {len(tokens)} tokens.")

# --- cohort -------------------------------------------------------------------------------------------------------
st.header("Cohort calibration")
predictions_file = run.path / "test_predictions.parquet"
if predictions_file.is_file():
    predictions = pl.read_parquet(predictions_file)
    columns = st.columns(2)
    for col, domain in zip(columns, (0, 1)):
        part = predictions.filter(pl.col("domain") == domain)
        if part.height:
            fig = reliability_figure(part["probability"].to_numpy(), part["label"].to_numpy(),
                                     f"{DOMAIN_NAMES[domain]}: {part.height} speakers")
            col.pyplot(fig)
            plt.close(fig)
    st.dataframe({k: [v] for k, v in sorted(metrics.items())}, hide_index=True)
else:
    st.info(f"Run {run.run_id} has no test_predictions.parquet; retrain it to see the cohort's reliability diagram.")
