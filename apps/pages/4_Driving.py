"""Driving dashboard: a scene's LiDAR points and camera image with ground-truth and detected boxes, per-object camera
vs LiDAR attribution, and sensor faults toggled on to see how the detections change.

Reads ``driving_interaction`` runs (``fusion train driving ...``) and their generated scenes; never trains.
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

from apps.common import load_predictor_cached, run_picker, runs_root  # noqa: E402
from recipes.driving_interaction.config import CLASSES  # noqa: E402
from recipes.driving_interaction.data import (ScoringRow, datamodule_of, frames_from_table,  # noqa: E402
                                              read_scoring_row, scoring_frame, sensors_recorded)
from recipes.driving_interaction.explain import detection_shapley, detections_table, plot_bev, plot_camera  # noqa: E402
from recipes.driving_interaction.scenes import apply_fault  # noqa: E402
from recipes.runtime.inputs import data_root  # noqa: E402
from recipes.runtime.runs import Run, list_runs  # noqa: E402

RECIPE = "driving_interaction"
FAULT_TOGGLES = {  # label -> apply_fault name
    "Camera blackout": "camera_blackout",
    "Night": "night",
    "Rain": "rain",
    "LiDAR 50 % beam loss": "lidar_beam_loss",
    "Camera failed": "camera_failure",
    "LiDAR failed": "lidar_failure",
}


@st.cache_data(show_spinner="Finding the run's scenes…", max_entries=8)
def scene_table(run_path: str) -> pl.DataFrame:
    """The run's held-out scenes in the scoring schema (generated on first use when the cache lacks them)."""
    return scoring_frame(datamodule_of(Run(run_path)).root(), "test")


def uploaded_frame(velodyne: Any, image: Any, calib: Any, image_size: tuple[int, int]) -> ScoringRow:
    """A frame from uploaded KITTI files, read as scoring reads a row: saved under generated names in a temporary
    folder (removed afterwards; the client's file names are never used as paths) and confined to it as the data
    root. Returns the row with its error or warnings."""
    with tempfile.TemporaryDirectory() as folder, data_root(folder):
        row: dict[str, str] = {"frame_id": "upload"}
        for column, upload, suffix in (("velodyne_path", velodyne, ".bin"), ("calib_path", calib, ".txt"),
                                       ("image_path", image, _image_suffix(image))):
            if upload is not None:
                (Path(folder) / f"{column}{suffix}").write_bytes(upload.getvalue())
                row[column] = f"{column}{suffix}"
        loaded = read_scoring_row(row, image_size)
    folder_text = str(Path(folder).resolve())
    return loaded._replace(error=_without(loaded.error, folder_text),
                           warnings=tuple(_without(w, folder_text) for w in loaded.warnings))


def _image_suffix(upload: Any) -> str:
    name = "" if upload is None else str(getattr(upload, "name", "")).lower()
    return ".jpg" if name.endswith((".jpg", ".jpeg")) else ".png"


def _without(text: str | None, folder: str) -> str | None:
    """``text`` with the temporary folder's path cut out (the user knows the files by their upload fields)."""
    return None if text is None else text.replace(folder + "/", "").replace(folder, "upload")


def with_faults(frame, faults: list[str]):
    points, image = frame.points, frame.image
    for fault in faults:
        points, image = apply_fault(points, image, fault, seed=0)
    return frame._replace(points=points, image=image)


def scene_figure(frame, detections, config, title: str):
    fig = plt.figure(figsize=(12, 4.2))
    plot_bev(frame, detections, config.x_range, config.y_range, ax=fig.add_axes([0.01, 0.08, 0.3, 0.84]), title=f"{title}: bird's-eye view")
    plot_camera(frame, detections, ax=fig.add_axes([0.34, 0.25, 0.65, 0.65]), title=f"{title}: camera")
    return fig


st.set_page_config(page_title="Driving · fusion-suite", page_icon="🚗", layout="wide")
st.title("Camera-LiDAR 3D detection")
st.markdown(
    "A DeepInteraction++-style detector keeps a LiDAR bird's-eye-view stream and a camera stream, lets them exchange "
    "information by cross-attention, and refines object queries by alternating between the two. Pick a scene, see "
    "what it detects, how much each detection owes to each sensor, and what happens when a sensor fails."
)

runs = [run for run in list_runs(runs_root(), recipe=RECIPE) if run.has_model]
if not runs:
    st.info(f"**No driving run yet** under `{runs_root()}`. Train one with `fusion train driving --config quick` "
            "(or `make demo`), then reload this page.", icon="📭")
    st.stop()

left, right = st.columns([2, 3])
run = run_picker("Run", runs, key="driving-run", metric="test/map", container=left)
module = load_predictor_cached(RECIPE, run.path)
config = module.config
metrics = run.metrics
right.caption(
    f"variant **{config.variant}** · test mAP {metrics.get('test/map', float('nan')):.3f} · "
    f"NDS-like {metrics.get('test/nds', float('nan')):.3f} · BEV {config.grid_size[0]}×{config.grid_size[1]} cells · "
    f"image {config.image_size[0]}×{config.image_size[1]}"
)

source = st.radio("Scene", ["Generated scene", "Upload a KITTI frame"], horizontal=True, key="driving-source")
frame = None
if source == "Generated scene":
    try:
        scenes = scene_table(str(run.path))
    except (OSError, ValueError) as error:
        st.error(f"The run's scenes cannot be read: {error}")
        st.stop()
    frame_id = st.selectbox("Frame", scenes["frame_id"].to_list(), key="driving-frame")
    loaded = frames_from_table(scenes.filter(pl.col("frame_id") == frame_id))[0]
    if isinstance(loaded, str):
        st.error(loaded)
        st.stop()
    frame = loaded
else:
    columns = st.columns(3)
    velodyne = columns[0].file_uploader("velodyne .bin", type=["bin"], key="driving-bin")
    image = columns[1].file_uploader("camera image (PNG or JPEG)", type=["png", "jpg", "jpeg"], key="driving-image")
    calib = columns[2].file_uploader("calib .txt (required)", type=["txt"], key="driving-calib")
    if calib is None or (velodyne is None and image is None):
        st.info("Upload the calibration file and at least one of the LiDAR scan and the camera image.")
        st.stop()
    uploaded = uploaded_frame(velodyne, image, calib, config.image_size)
    if uploaded.frame is None:
        st.error(uploaded.error)
        st.stop()
    for warning in uploaded.warnings:
        st.warning(warning)
    frame = uploaded.frame

st.subheader("Sensor faults")
toggle_columns = st.columns(len(FAULT_TOGGLES))
faults = [name for column, (label, name) in zip(toggle_columns, FAULT_TOGGLES.items())
          if column.toggle(label, key=f"driving-fault-{name}")]
faulted = with_faults(frame, faults)
if not any(sensors_recorded(faulted).values()):
    st.warning("Both sensors are off (a black image shows nothing): there is nothing to detect from.")
    st.stop()

clean_detections = module.detect_frames([frame])[0]
detections = module.detect_frames([faulted])[0] if faults else clean_detections
counts = st.columns(4)
counts[0].metric("Labelled objects", len(frame.gt_labels))
counts[1].metric("Detections (clean)", len(clean_detections.scores))
counts[2].metric("Detections (with faults)" if faults else "Detections", len(detections.scores),
                 delta=len(detections.scores) - len(clean_detections.scores) if faults else None)
counts[3].metric("Top confidence", f"{detections.scores.max():.2f}" if len(detections.scores) else "—")

st.subheader("Scene")
fig = scene_figure(faulted, detections, config, "with " + ", ".join(faults) if faults else "clean")
st.pyplot(fig)
plt.close(fig)
if faults:
    with st.expander("The same scene without faults", expanded=False):
        fig = scene_figure(frame, clean_detections, config, "clean")
        st.pyplot(fig)
        plt.close(fig)
st.caption("Dashed: ground truth. Solid: detections (colour = class: car blue, truck orange, pedestrian red, cyclist green).")

st.subheader("Per-object attribution")
if not len(detections.scores):
    st.info("No detection above the score threshold in this frame.")
else:
    values = detection_shapley(module, faulted, detections)
    table = detections_table([frame.frame_id], [detections]).select("class", "score", "x", "y", "length", "width", "yaw")
    table = table.with_columns(pl.Series("φ LiDAR", values["lidar"]), pl.Series("φ camera", values["camera"]))
    fig, ax = plt.subplots(figsize=(8, 0.3 * len(detections.scores) + 1.2))
    names = [f"{i + 1}. {CLASSES[int(l)]} @ {b[0]:.0f} m" for i, (b, l) in enumerate(zip(detections.boxes, detections.labels))]
    y = np.arange(len(names))
    ax.barh(y - 0.2, values["lidar"], 0.4, label="LiDAR", color="#4c72b0")
    ax.barh(y + 0.2, values["camera"], 0.4, label="camera", color="#dd8452")
    ax.axvline(0, color="black", lw=0.8)
    ax.set_yticks(y, names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("Shapley value of the sensor for the detection's confidence")
    ax.legend(fontsize=8)
    fig.tight_layout()
    st.pyplot(fig)
    plt.close(fig)
    st.dataframe(table, hide_index=True, width="stretch",
                 column_config={c: st.column_config.NumberColumn(c, format="%.3f") for c in table.columns if c != "class"})
    st.caption("Exact Shapley values over the four sensor coalitions: each detection's confidence is re-measured with "
               "only the camera, only the LiDAR and neither (a same-class detection within 2 m); the two values add "
               "up to the confidence with both sensors minus the confidence with none.")
    st.download_button("Download detections (CSV)", table.write_csv(), file_name=f"detections-{frame.frame_id}.csv",
                       mime="text/csv", key="driving-download")
