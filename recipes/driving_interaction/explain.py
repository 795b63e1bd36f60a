"""The driving recipe's report: for each frame, the scene with its detections (bird's-eye view and camera), the
camera vs LiDAR Shapley values of every detection, the decoder's reliance on each stream and where its top query
looked. ``fusion explain`` writes it (through :meth:`DrivingRecipe.explain`); the dashboard page uses the same plots.

Nothing here imports :mod:`recipes.driving_interaction.recipe`: :func:`write_report` takes the predictor.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl
import torch

from recipes.driving_interaction.config import CLASSES, MODALITIES
from recipes.driving_interaction.data import collate_examples, frame_to_example, frames_from_table, sensors_recorded
from recipes.driving_interaction.head import Detections
from recipes.driving_interaction.readers import Frame

if TYPE_CHECKING:
    from recipes.driving_interaction.module import DrivingModule
    from recipes.runtime.runs import Run

__all__ = ["SHAPLEY_RADIUS", "detections_table", "detection_shapley", "plot_bev", "plot_camera", "write_report"]

SHAPLEY_RADIUS = 2.0


def detections_table(frame_ids: list[str], detections: list["Detections"]) -> pl.DataFrame:
    """One row per detection: frame, class, score and the velodyne box."""
    rows: dict[str, list] = {k: [] for k in ("frame_id", "class", "score", "x", "y", "z", "length", "width", "height", "yaw")}
    for frame_id, det in zip(frame_ids, detections):
        for box, label, score in zip(det.boxes, det.labels, det.scores):
            rows["frame_id"].append(frame_id)
            rows["class"].append(CLASSES[int(label)])
            rows["score"].append(float(score))
            for key, value in zip(("x", "y", "z", "length", "width", "height", "yaw"), box):
                rows[key].append(float(value))
    return pl.DataFrame(rows, schema={"frame_id": pl.Utf8, "class": pl.Utf8, **{k: pl.Float64 for k in list(rows)[2:]}})


def detection_shapley(module: "DrivingModule", frame: "Frame", detections: "Detections") -> dict[str, np.ndarray]:
    """Exact camera/LiDAR Shapley values of each detection's confidence.

    The value of a sensor coalition for a detection is the highest score of a same-class detection within
    :data:`SHAPLEY_RADIUS` m of it when the model runs with only those sensors present (0 when there is none);
    :func:`fusion_core.explain.modality_shapley` enumerates the four coalitions. A coalition left with no recorded
    sensor (the empty one, or the failed sensor's alone; a blank image is no camera) is worth 0: a frame with no sensor is not scored at all (its
    row is an error), so whatever the detector would make of two blank inputs (its camera fallback does see
    something in a black image) is no part of any detection; the two values add up to the detection's score, and a
    failed sensor's value is 0. Returns ``{camera, lidar, base, full}`` arrays of shape ``(D,)``.
    """
    from fusion_core.explain import modality_shapley

    if len(detections.scores) == 0:
        return {k: np.zeros(0) for k in ("camera", "lidar", "base", "full")}

    recorded = sensors_recorded(frame)

    def value(present: dict[str, torch.Tensor]) -> torch.Tensor:
        values = torch.zeros(1, len(detections.scores), dtype=torch.float64)
        if not any(recorded[m] and bool(mask.any()) for m, mask in present.items()):
            return values  # no sensor left: worth 0 (see above)
        result = module.detect_frames([frame], present=present)[0]
        for i, (box, label) in enumerate(zip(detections.boxes, detections.labels)):
            same = result.labels == label
            if same.any():
                near = np.hypot(*(result.boxes[same, :2] - box[:2]).T) <= SHAPLEY_RADIUS
                if near.any():
                    values[0, i] = float(result.scores[same][near].max())
        return values

    result = modality_shapley(value, list(MODALITIES), batch_size=1)
    return {"camera": result.values["camera"][0].numpy(), "lidar": result.values["lidar"][0].numpy(),
            "base": result.base[0].numpy(), "full": result.full[0].numpy()}


# --- plots ------------------------------------------------------------------------------------------------

_COLOURS = {"Car": "#1f77b4", "Truck": "#ff7f0e", "Pedestrian": "#d62728", "Cyclist": "#2ca02c"}


def plot_bev(frame: "Frame", detections: "Detections | None", x_range=(0.0, 48.0), y_range=(-24.0, 24.0), ax=None,
             title: str | None = None):
    """Bird's-eye view: LiDAR points (grey), ground truth (dashed) and detections (solid, with scores).
    Forward (x) points up, left (y) points left, as seen from above."""
    import matplotlib.pyplot as plt

    from recipes.driving_interaction.boxes import box_corners_bev

    if ax is None:
        _, ax = plt.subplots(figsize=(5, 5))
    if frame.points is not None and len(frame.points):
        p = frame.points
        inside = (p[:, 0] >= x_range[0]) & (p[:, 0] < x_range[1]) & (p[:, 1] >= y_range[0]) & (p[:, 1] < y_range[1])
        ax.scatter(-p[inside, 1], p[inside, 0], s=0.3, c="#999999", linewidths=0)
    for box, label in zip(frame.gt_boxes, frame.gt_labels):
        corners = box_corners_bev(box[None])[0]
        ax.fill(-corners[:, 1], corners[:, 0], fill=False, ls="--", lw=1.0, ec=_COLOURS[CLASSES[int(label)]])
    if detections is not None:
        for box, label, score in zip(detections.boxes, detections.labels, detections.scores):
            corners = box_corners_bev(box[None])[0]
            colour = _COLOURS[CLASSES[int(label)]]
            ax.fill(-corners[:, 1], corners[:, 0], fill=False, lw=1.6, ec=colour)
            ax.text(-box[1], box[0] + 1.2, f"{CLASSES[int(label)][:3]} {score:.2f}", fontsize=6, color=colour, ha="center")
    ax.set_xlim(-y_range[1], -y_range[0])
    ax.set_ylim(*x_range)
    ax.set_aspect("equal")
    ax.set_xlabel("← left   lateral (m)   right →")
    ax.set_ylabel("forward (m)")
    if title:
        ax.set_title(title, fontsize=9)
    return ax


def plot_camera(frame: "Frame", detections: "Detections | None", ax=None, title: str | None = None):
    """The camera image with ground truth (dashed) and detections (solid) projected through the calibration."""
    import matplotlib.pyplot as plt

    from recipes.driving_interaction.boxes import box_corners_3d

    if ax is None:
        _, ax = plt.subplots(figsize=(8, 2.6))
    if frame.image is not None:
        ax.imshow(frame.image)
        height, width = frame.image.shape[:2]
    else:
        width, height = int(frame.calib.P2[0, 2] * 2), int(frame.calib.P2[1, 2] / 0.3)
        ax.imshow(np.zeros((height, width, 3), dtype=np.uint8))
        ax.text(width / 2, height / 2, "camera absent", color="white", ha="center")
    edges = [(0, 1), (1, 2), (2, 3), (3, 0), (4, 5), (5, 6), (6, 7), (7, 4), (0, 4), (1, 5), (2, 6), (3, 7)]
    sets = [(frame.gt_boxes, frame.gt_labels, "--", 0.8)]
    if detections is not None:
        sets.append((detections.boxes, detections.labels, "-", 1.4))
    for boxes, labels, style, width_line in sets:
        for box, label in zip(boxes, labels):
            corners = box_corners_3d(np.asarray(box)[None])[0]
            pixels, depth = frame.calib.project_velo(corners)
            if (depth <= 0.1).any():
                continue
            for a, b in edges:
                ax.plot(pixels[[a, b], 0], pixels[[a, b], 1], style, lw=width_line, color=_COLOURS[CLASSES[int(label)]])
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    ax.axis("off")
    if title:
        ax.set_title(title, fontsize=9)
    return ax


def write_report(module: "DrivingModule", run: "Run", table: pl.DataFrame, source: str, out_path: Path, *,
                 title: str, max_examples: int = 4) -> Path:
    """The HTML report of ``module`` (the run's predictor) on the first ``max_examples`` rows of ``table`` (the
    scoring schema; ``source`` says where it came from); returns ``out_path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from recipes.runtime.report import HtmlReport

    cfg = module.config
    table = table.head(max_examples)
    loaded = frames_from_table(table)
    report = HtmlReport(f"{title} — {cfg.variant} detector explained", f"run `{run.run_id}`; input: {source}")
    report.heading("Model")
    report.text(
        f"Variant `{cfg.variant}`: BEV grid {cfg.grid_size[0]}×{cfg.grid_size[1]} over x {cfg.x_range} m, y {cfg.y_range} m; "
        f"image {cfg.image_size[0]}×{cfg.image_size[1]}; width {cfg.dim}; {cfg.encoder_layers} interaction encoder layer(s); "
        f"decoder layers attend to {', '.join(module.detector.decoder.sources)} in turn"
        + "".join(f"; a frame without {other} is detected by the {name} branch (the {name}-only model's head and "
                  f"decoder on the {name}'s own BEV map)"
                  for sensor, name, other in (("lidar", "LiDAR", "a camera"), ("camera", "camera", "LiDAR"))
                  if sensor in module.detector.branches) + "."
    )
    if run.metrics:
        report.metrics(run.metrics, caption="held-out metrics of the run")
    bad = [(row, f) for row, f in zip(table["frame_id"].to_list(), loaded) if isinstance(f, str)]
    if bad:
        report.text(f"{len(bad)} frame(s) could not be read and are left out; first: {bad[0][0]}: {bad[0][1]}")
    frames = [f for f in loaded if not isinstance(f, str)]
    if not frames:
        report.heading("Nothing to explain")
        report.text("None of the input frames could be read.")
        return report.save(out_path)
    detector = module.detector
    decoders = [detector.decoder] + [branch.decoder for branch in detector.branches.values()]
    for decoder in decoders:
        decoder.record_attention = True
    try:
        for frame in frames:
            detections = module.detect_frames([frame])[0]
            # the decoder whose queries the detections are: a single-sensor frame's branch where there is one
            sensors = sensors_recorded(frame)
            attention = list(detector.path_for(sensors["lidar"], sensors["camera"]).decoder.last_attention)
            _frame_section(report, module, frame, detections, attention, plt)
    finally:
        for decoder in decoders:
            decoder.record_attention = False
    return report.save(out_path)


def _frame_section(report, module: "DrivingModule", frame: Frame, detections: Detections,
                   attention: list[tuple[str, torch.Tensor]], plt: Any) -> None:
    cfg = module.config
    report.heading(f"Frame {frame.frame_id}")
    fig = plt.figure(figsize=(11, 4))
    bev_ax = fig.add_axes([0.02, 0.08, 0.3, 0.85])
    cam_ax = fig.add_axes([0.35, 0.3, 0.63, 0.6])
    plot_bev(frame, detections, cfg.x_range, cfg.y_range, ax=bev_ax, title="BEV: points, ground truth (dashed), detections")
    plot_camera(frame, detections, ax=cam_ax, title="camera with projected boxes")
    report.figure(fig, caption=f"frame {frame.frame_id}: {len(detections.scores)} detections, {len(frame.gt_labels)} labelled objects")
    plt.close(fig)
    if not len(detections.scores):
        report.text("No detection above the score threshold in this frame.")
        return
    shapley = detection_shapley(module, frame, detections)
    with torch.no_grad():
        out = module.detector(_example_batch(module, frame))
    updates = out.stream_updates[0, torch.as_tensor(detections.query)].numpy()  # (D, 2)
    share = updates[:, 1] / np.maximum(updates.sum(1), 1e-9)
    names = [f"{i + 1}. {CLASSES[int(l)]} @ {b[0]:.0f} m" for i, (b, l) in enumerate(zip(detections.boxes, detections.labels))]
    fig, axes = plt.subplots(1, 2, figsize=(10, 0.35 * len(names) + 1.4), sharey=True)
    y = np.arange(len(names))
    axes[0].barh(y - 0.2, shapley["lidar"], 0.4, label="LiDAR", color="#4c72b0")
    axes[0].barh(y + 0.2, shapley["camera"], 0.4, label="camera", color="#dd8452")
    axes[0].axvline(0, color="black", lw=0.8)
    axes[0].set_yticks(y, names, fontsize=7)
    axes[0].invert_yaxis()
    axes[0].legend(fontsize=7)
    axes[0].set_xlabel("Shapley value (confidence)")
    axes[1].barh(y, share, color="#dd8452")
    axes[1].set_xlim(0, 1)
    axes[1].set_xlabel("camera share of the decoder's cross-attention update")
    fig.tight_layout()
    report.figure(fig, caption="per detection: camera vs LiDAR Shapley values and the decoder's reliance on each stream")
    plt.close(fig)
    report.table({"detection": names, "score": detections.scores.tolist(), "φ LiDAR": shapley["lidar"].tolist(),
                  "φ camera": shapley["camera"].tolist(), "no-sensor value": shapley["base"].tolist(),
                  "camera share of decoder update": share.tolist()},
                 caption="Shapley values add up to the score with both sensors minus the value with none")
    if attention:
        _attention_figure(report, module, attention, int(detections.query[0]), names[0], plt)


def _example_batch(module: "DrivingModule", frame: "Frame") -> dict[str, torch.Tensor]:
    cfg = module.config
    return collate_examples([frame_to_example(frame, cfg.image_size, cfg.x_range, cfg.y_range)])


def _attention_figure(report, module: "DrivingModule", attention: list[tuple[str, torch.Tensor]], query: int, name: str,
                      plt: Any) -> None:
    """Where the top detection's query looked in the last BEV layer and the last image layer."""
    cfg = module.config
    last = {source: weights for source, weights in attention}
    fig, axes = plt.subplots(1, len(last), figsize=(5 * len(last), 3.2), squeeze=False)
    for ax, (source, weights) in zip(axes[0], last.items()):
        mean = weights[0, :, query].mean(0)  # (T,) averaged over heads
        if source == "bev":
            grid = mean.reshape(cfg.grid_size[0], cfg.grid_size[1]).numpy()
            ax.imshow(grid, origin="lower", extent=(cfg.y_range[0], cfg.y_range[1], cfg.x_range[0], cfg.x_range[1]), cmap="magma")
            ax.invert_xaxis()  # left (+y) on the left, as in the BEV plots
            ax.set_xlabel("lateral (m, left positive)")
            ax.set_ylabel("forward (m)")
        else:
            h, w = cfg.image_size[0] // 8, cfg.image_size[1] // 8
            ax.imshow(mean.reshape(h, w).numpy(), cmap="magma", aspect="auto")
            ax.set_xlabel("image feature column")
        ax.set_title(f"last {source} layer", fontsize=9)
    fig.tight_layout()
    report.figure(fig, caption=f"decoder attention of the query behind detection {name} (mean over heads)")
    plt.close(fig)
