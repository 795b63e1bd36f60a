"""Clinician dashboard for the MoRE recipe: a patient's X-ray (with saliency), 12-lead ECG and report, the finding
probabilities, what changes when a modality is removed, and the most similar cases of the cohort.

Reads ``medical_more`` runs (``fusion train medical ...``) and the cohort they were trained on; never trains.
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

from apps.common import load_predictor_cached, run_picker, runs_root, upload_scorer  # noqa: E402
from recipes.medical_more.cohort import LEADS  # noqa: E402
from recipes.medical_more.explain import occlusion_saliency  # noqa: E402
from recipes.medical_more.predictor import MAIN_FINDING  # noqa: E402
from recipes.runtime.registry import get_recipe  # noqa: E402
from recipes.runtime.runs import Run, list_runs  # noqa: E402

RECIPE = "medical_more"
MODALITIES = {"xray": "X-ray", "ecg": "ECG", "report": "Report"}
COHORT_ROWS = 200
SIMILAR = 5


# --- data -------------------------------------------------------------------------------------------------------


@st.cache_resource(show_spinner="Loading the cohort…", max_entries=4)
def cohort_of(run_path: str, model_stamp: float) -> dict[str, Any]:
    """The run's data module split into ``test`` (patients to pick) and ``train`` (the retrieval gallery) with the
    gallery's embeddings: ``{"test": (frame, tensors), "train": (frame, tensors), "gallery": (N, P)}``."""
    predictor = load_predictor_cached(RECIPE, run_path)
    datamodule = predictor.datamodule()
    cohort = datamodule.cohort
    by_index = {int(i): r for r, i in enumerate(cohort["index"].to_list())}
    out: dict[str, Any] = {}
    for split in ("test", "train"):
        tensors = datamodule.dataset(split).tensors
        rows = [by_index[int(i)] for i in tensors["index"].tolist()]
        out[split] = (cohort[rows], tensors)
    frame, tensors = out["train"]
    batch = {k: v for k, v in tensors.items() if k in ("xray", "ecg", "report_embedding", "report_ids", "report_mask")}
    embeddings = predictor.embeddings(batch)
    out["gallery"] = torch.nn.functional.normalize(sum(embeddings.values()), dim=-1)  # (N, P)
    return out


def cohort_sample(cohort: dict[str, Any], patient: str, predictor: Any) -> tuple[dict, dict, dict[str, Any]]:
    frame, tensors = cohort["test"]
    row = frame["patient_id"].to_list().index(patient)
    batch = {k: v[row:row + 1] for k, v in tensors.items() if k in ("xray", "ecg")}
    text = frame["text"][row]
    batch.update(predictor.encode_texts([text]))
    present = {m: torch.ones(1, dtype=torch.bool) for m in MODALITIES}
    return batch, present, {"patient_id": patient, "text": text, **{f: int(frame[f][row]) for f in predictor.findings}}


XRAY_TYPES = (".dcm", ".dicom", ".png", ".jpg", ".jpeg")
ECG_TYPES = (".dcm", ".dicom", ".hea", ".dat")


def _suffix(upload: Any, allowed: tuple[str, ...], what: str) -> str:
    """The upload's lower-cased extension when it is one of ``allowed``; else ValueError with what to upload."""
    suffix = Path(str(upload.name)).suffix.lower()
    if suffix not in allowed:
        raise ValueError(f"{what}: files of type {suffix or '(none)'!r} cannot be read; upload "
                         + ", ".join(allowed) + " files")
    return suffix


def _wfdb_header_for(header: bytes, signal_file: str) -> str:
    """A WFDB header rewritten to name record ``ecg`` and ``signal_file`` for every signal (the upload's own names
    never reach the disk); ValueError when it is not a WFDB header."""
    try:
        lines = header.decode("ascii").splitlines()
    except UnicodeDecodeError:
        raise ValueError("ECG: the .hea file is not a text WFDB header; upload the record's .hea and .dat files") from None
    body = [i for i, line in enumerate(lines) if line.strip() and not line.lstrip().startswith("#")]
    fields = lines[body[0]].split() if body else []
    if len(fields) < 2 or not fields[1].isdigit():
        raise ValueError("ECG: the .hea file is not a WFDB header; upload the record's .hea and .dat files")
    lines[body[0]] = " ".join(["ecg", *fields[1:]])
    for i in body[1:1 + int(fields[1])]:
        lines[i] = " ".join([signal_file, *lines[i].split()[1:]])
    return "\n".join(lines) + "\n"


def uploaded_sample(predictor: Any, xray: Any, ecg_files: list, text: str) -> tuple[dict, dict, str | None, str | None]:
    """``(batch, present, error, warnings)``: the uploads saved under generated names (``xray.<ext>``, ``ecg.dcm`` or
    ``ecg.hea``/``ecg.dat``) in a temporary folder that is removed afterwards, read with the recipe's readers inside
    that data root, as ``fusion score`` reads files."""
    from recipes.runtime.inputs import data_root

    with tempfile.TemporaryDirectory(prefix="fusion-medical-") as scratch:
        folder = Path(scratch)
        row: dict[str, str | None] = {"xray_path": None, "ecg_path": None, "report_text": text.strip() or None}
        try:
            if xray is not None:
                path = folder / f"xray{_suffix(xray, XRAY_TYPES, 'X-ray')}"
                path.write_bytes(xray.getvalue())
                row["xray_path"] = path.name
            if ecg_files:
                kinds = {_suffix(upload, ECG_TYPES, "ECG"): upload for upload in ecg_files}
                dicom = kinds.get(".dcm") or kinds.get(".dicom")
                if dicom is not None:
                    (folder / "ecg.dcm").write_bytes(dicom.getvalue())
                    row["ecg_path"] = "ecg.dcm"
                elif ".hea" in kinds and ".dat" in kinds:
                    (folder / "ecg.dat").write_bytes(kinds[".dat"].getvalue())
                    (folder / "ecg.hea").write_text(_wfdb_header_for(kinds[".hea"].getvalue(), "ecg.dat"))
                    row["ecg_path"] = "ecg"
                else:
                    raise ValueError("ECG: upload a DICOM waveform (.dcm), or a WFDB record's .hea and .dat together")
        except ValueError as error:
            return {}, {}, str(error), None
        with data_root(folder):
            encoded = predictor.encode_frame(pl.DataFrame([row], schema={k: pl.Utf8 for k in row}))
    return encoded.batch, encoded.present, encoded.errors[0], encoded.warnings[0]


# --- views ------------------------------------------------------------------------------------------------------


def with_present(present: dict[str, torch.Tensor], use: dict[str, bool]) -> dict[str, torch.Tensor]:
    return {m: present[m] & torch.tensor([use[m]]) for m in present}


def probability_table(predictor: Any, batch: dict, present: dict) -> pl.DataFrame:
    """Per finding: the probability with the chosen modalities and with each of them removed."""
    columns = {"finding": predictor.findings, "probability": predictor.probabilities(batch, present)[0].tolist()}
    for name, label in MODALITIES.items():
        if bool(present[name][0]):
            without = {**present, name: torch.zeros_like(present[name])}
            if any(bool(v[0]) for v in without.values()):
                columns[f"without {label}"] = predictor.probabilities(batch, without)[0].tolist()
    return pl.DataFrame(columns)


def xray_figure(image: np.ndarray, saliency: np.ndarray | None):
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.imshow(image, cmap="gray", vmin=0, vmax=1)
    if saliency is not None:
        limit = max(float(np.abs(saliency).max()), 1e-6)
        ax.imshow(saliency, cmap="bwr", vmin=-limit, vmax=limit, alpha=0.45)
    ax.axis("off")
    fig.tight_layout()
    return fig


def ecg_figure(signal: np.ndarray, sampling_rate: int):
    fig, axes = plt.subplots(6, 2, figsize=(9, 5.5), sharex=True)
    seconds = np.arange(signal.shape[1]) / sampling_rate
    for lead, ax in enumerate(axes.T.reshape(-1)):
        ax.plot(seconds, signal[lead], color="black", linewidth=0.6)
        ax.set_ylabel(LEADS[lead], rotation=0, labelpad=14, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(color="#f4b6b6", linewidth=0.4)
    for ax in axes[-1]:
        ax.set_xlabel("s", fontsize=8)
    fig.tight_layout()
    return fig


def similar_cases(cohort: dict, predictor: Any, batch: dict, present: dict, count: int = SIMILAR) -> pl.DataFrame:
    """The training patients closest to this one: cosine similarity of the mean of the present modalities'
    normalised embeddings to each patient's mean over all three."""
    embeddings = predictor.embeddings(batch)
    query = sum(embeddings[m] for m in MODALITIES if bool(present[m][0]))
    query = torch.nn.functional.normalize(query, dim=-1)
    sims = (cohort["gallery"] @ query[0]).numpy()
    order = np.argsort(-sims)[:count]
    frame, _ = cohort["train"]
    picked = frame[order.tolist()]
    return pl.DataFrame({
        "patient_id": picked["patient_id"],
        "similarity": sims[order],
        "findings": [", ".join(f for f in predictor.findings if row[f]) for row in picked.iter_rows(named=True)],
        "report": [t if len(t) <= 160 else t[:157] + "…" for t in picked["text"].to_list()],
    })


# --- page -------------------------------------------------------------------------------------------------------

st.set_page_config(page_title="Medical — fusion-suite", page_icon="🩺", layout="wide")
st.title("Chest X-ray, ECG and report")
st.caption(
    "MoRE-style model: X-ray, 12-lead ECG and report encoders aligned by contrastive pre-training, and a fused "
    "diagnosis head that scores with any modality missing. Research demonstration on a cohort of real report texts "
    "with **synthesised** radiographs and ECGs — not for clinical use."
)

runs = [run for run in list_runs(runs_root(), RECIPE) if run.has_model]
if not runs:
    st.info(f"No finished `{RECIPE}` run under `{runs_root()}`. Train one with "
            "`fusion train medical --config quick` (or `make demo`), then reload this page.", icon="📭")
    st.stop()

run: Run = run_picker("Run", runs, key="medical-run", metric="test/auroc")
predictor = load_predictor_cached(RECIPE, run.path)
stamp = run.model_path.stat().st_mtime
cohort = cohort_of(str(run.path.resolve()), stamp)

source = st.radio("Patient", ["From the cohort", "Upload files"], horizontal=True, key="medical-source")
info: dict[str, Any] = {}
if source == "From the cohort":
    patients = cohort["test"][0]["patient_id"].head(COHORT_ROWS).to_list()
    patient = st.selectbox("Held-out patient", patients, key="medical-patient")
    batch, present, info = cohort_sample(cohort, patient, predictor)
else:
    left, middle = st.columns(2)
    # no type= filter: Streamlit raises a page exception for a file it filters out; _suffix answers with a message
    xray_upload = left.file_uploader("X-ray (DICOM, PNG or JPG)", key="medical-xray")
    ecg_upload = middle.file_uploader("ECG (DICOM waveform, or WFDB .hea + .dat)", accept_multiple_files=True,
                                      key="medical-ecg")
    text = st.text_area("Report text (FINDINGS / IMPRESSION)", key="medical-report")
    batch, present, problem, notes = uploaded_sample(predictor, xray_upload, ecg_upload or [], text or "")
    if problem:
        st.error(problem)
        st.stop()
    if notes:
        st.warning(notes)
    info = {"text": text}

st.subheader("Modalities used")
toggles = st.columns(3)
use = {m: toggles[i].checkbox(label, value=bool(present[m][0]), disabled=not bool(present[m][0]), key=f"medical-use-{m}")
       for i, (m, label) in enumerate(MODALITIES.items())}
chosen = with_present(present, use)
if not any(bool(v[0]) for v in chosen.values()):
    st.warning("Every modality is switched off; switch one on to score the patient.")
    st.stop()
st.caption("Scored from: " + " + ".join(label for m, label in MODALITIES.items() if bool(chosen[m][0])))

table = probability_table(predictor, batch, chosen)
st.subheader("Finding probabilities")
cards = st.columns(len(predictor.findings))
for card, row in zip(cards, table.iter_rows(named=True)):
    label = row["finding"] + (f" (report: {'yes' if info[row['finding']] else 'no'})" if row["finding"] in info else "")
    card.metric(label, f"{row['probability']:.3f}")
st.markdown("**What changes when a modality is removed**")
st.dataframe(table, hide_index=True, width="stretch",
             column_config={c: st.column_config.NumberColumn(c, format="%.3f") for c in table.columns if c != "finding"})

image_col, ecg_col = st.columns([1, 2])
with image_col:
    st.markdown(f"**X-ray** — occlusion saliency for {MAIN_FINDING}")
    if bool(chosen["xray"][0]):
        saliency = occlusion_saliency(predictor, batch, chosen, predictor.findings.index(MAIN_FINDING))
        st.pyplot(xray_figure(batch["xray"][0, 0].numpy(), saliency), clear_figure=True)
    else:
        st.info("No X-ray used.")
with ecg_col:
    st.markdown("**12-lead ECG**")
    if bool(chosen["ecg"][0]):
        st.pyplot(ecg_figure(batch["ecg"][0].numpy(), predictor.sampling_rate), clear_figure=True)
    else:
        st.info("No ECG used.")
st.markdown("**Report**")
if bool(chosen["report"][0]):
    st.text(info.get("text") or "(no report)")
else:
    st.info("No report used.")

st.subheader("Most similar cases in the cohort")
st.dataframe(similar_cases(cohort, predictor, batch, chosen), hide_index=True, width="stretch",
             column_config={"similarity": st.column_config.NumberColumn("similarity", format="%.3f")})

with st.expander("Score a Parquet file"):
    st.caption("Columns (each optional per row): `patient_id`, `xray_path`, `ecg_path`, `report_text`; the score is "
               f"the probability of {MAIN_FINDING}.")
    upload_scorer(get_recipe(RECIPE), predictor, key="medical-upload", run_id=run.run_id)
