"""DeepInteraction++-style camera-LiDAR detector and its baselines, assembled from fusion_core parts.

Two streams are kept from input to output (Yang et al., "DeepInteraction++", 2024):

* LiDAR stream: :class:`fusion_core.encoders.points.PillarEncoder` → a small BEV CNN → BEV tokens ``(B, X·Y, D)``.
* camera stream: a small CNN (stride 8) → image tokens ``(B, h·w, D)``, and the camera's own BEV map: the image
  features lifted onto the BEV grid (the masked mean of the samples up each pillar, as the camera variant does). A
  frame whose LiDAR is dead starts its BEV stream from this map instead of the LiDAR's, so the head always reads a
  full BEV built from the sensor that works (DeepInteraction++ keeps both representations for exactly this).
* representational interaction encoder: the ``"interaction"`` fusion operator of fusion_core
  (:class:`fusion_core.fusion.interaction.InteractionFusion`, built with ``create_fusion``) with local
  neighbourhoods from :class:`~recipes.driving_interaction.geometry.BevGeometry`: each BEV cell attends to the image features sampled where points of
  its pillar project through the calibration, and each image feature attends to the BEV cells sampled along its
  camera ray; both streams are updated in parallel and kept.
* predictive interaction decoder (:class:`fusion_core.layers.interaction_decoder.InteractionDecoder`): object
  queries start at the peaks of a BEV objectness heatmap and are refined by layers that alternate attention to
  the BEV tokens and to the image tokens (a layer is skipped for a frame without a camera).
* detection head (:class:`recipes.driving_interaction.head.CenterHead`): the objectness heatmap, each query's class
  (with background), centre offset, height, size and yaw, and the head's targets, loss and NMS.
* single-sensor branches (``interaction`` with ``lidar_branch_weight`` / ``camera_branch_weight``,
  :class:`SensorBranch`): the LiDAR-only model's head and BEV decoder on the LiDAR's own BEV map *before* the
  interaction, trained with the full detection loss in every frame with LiDAR, so the shared LiDAR encoder learns as
  it does in the LiDAR-only model; likewise the camera-only model's head and decoder on the camera's own BEV map and
  image features. A frame without a camera is detected by the LiDAR branch, one without LiDAR by the camera branch
  (without that branch, by the interaction path from the camera's own BEV map, above), a frame with both sensors by
  the interaction path.

Baselines (``variant``): ``lidar`` (BEV stream only), ``camera`` (image features lifted onto the BEV grid by the
same projection sampling; decoder alternates lifted BEV and image), ``concat`` (BEVFusion-like: LiDAR BEV and
lifted camera BEV concatenated and merged early; decoder on the merged BEV only).

A batch is a dict (B frames, P points, M ground-truth slots)::

    points (B, P, 4) float        point_mask (B, P) bool       image (B, 3, H, W) float in [0, 1]
    lidar_present (B,) bool        camera_present (B,) bool     projection (B, 3, 4) velodyne → pixel
    gt_boxes (B, M, 7)             gt_labels (B, M) long        gt_mask (B, M) bool     (training and metrics)
    lidar_recorded (B,) bool       (training only, optional) the frames whose LiDAR was recorded before training's
                                   sensor dropout: the LiDAR branch reads and learns from them all

Letters: B batch, D width, X/Y BEV cells, N = X·Y, h/w image feature cells, K samples per token, Q queries.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from fusion_core.encoders.points import PillarEncoder
from fusion_core.fusion import create_fusion
from fusion_core.layers.grid_sampling import GridNeighbourhood, sample_feature_map
from fusion_core.layers.interaction_decoder import InteractionDecoder
from fusion_core.layers.mlp import MLP
from recipes.driving_interaction.config import DrivingConfig
from recipes.driving_interaction.geometry import BevGeometry
from recipes.driving_interaction.head import CenterHead, DetectorOutput

__all__ = [
    "DetectorOutput",
    "Streams",
    "ImageEncoder",
    "BevGeometry",
    "DrivingDetector",
    "SensorBranch",
    "select_frames",
    "build_detector",
]


class Streams(NamedTuple):
    bev: Tensor  # (B, D, X, Y) the BEV map the head reads
    image: Tensor | None  # (B, D, h, w) image features (None for the LiDAR-only variant)
    camera_bev: Tensor | None  # (B, D, X, Y) the camera's own lifted BEV map (None without a camera)
    lidar_bev: Tensor | None = None  # (B, D, X, Y) the LiDAR's own BEV map, before any fusion (None without LiDAR)
    camera_image: Tensor | None = None  # (B, D, h, w) the image features before the interaction (None without camera)


def _conv_block(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.GroupNorm(4, c_out), nn.ReLU())


class ImageEncoder(nn.Module):
    """Small CNN: ``(B, 3, H, W)`` → ``(B, D, H/8, W/8)``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(_conv_block(3, 16, 2), _conv_block(16, 24, 2), _conv_block(24, dim, 2), _conv_block(dim, dim))

    def forward(self, image: Tensor) -> Tensor:
        return self.net(image)


def decoder_sources(config: DrivingConfig, uses_image: bool) -> tuple[str, ...]:
    """The source of each decoder layer: BEV and image in turn with an image stream, else BEV only."""
    sources = ("bev", "image") if uses_image else ("bev",)
    return tuple(sources[i % len(sources)] for i in range(config.decoder_layers))


def add_detection_path(module: nn.Module, config: DrivingConfig, geometry: BevGeometry,
                       sources: tuple[str, ...]) -> None:
    """Give ``module`` a detection path, the attributes :meth:`DrivingDetector.decode_queries` reads: ``bev_head``,
    a ``decoder`` over ``sources``, the decoder's ``image_position`` (only where a layer attends to the image),
    ``bev_position``, ``query_position`` and a :class:`CenterHead` ``head``, built in that order."""
    D = config.dim
    module.bev_head = _conv_block(D + 2, D)
    module.decoder = InteractionDecoder(D, config.num_heads, sources, ffn_mult=2, dropout=config.dropout)
    h, w = config.image_size[0] // 8, config.image_size[1] // 8
    module.image_position = nn.Parameter(torch.randn(h * w, D) * 0.02) if "image" in sources else None
    module.bev_position = MLP(2, [D], D)
    module.query_position = MLP(2, [D], D)
    module.head = CenterHead(config, geometry)


class SensorBranch(nn.Module):
    """A single-sensor model's detection path (:func:`add_detection_path`, decoder over ``sources``) on that sensor's
    own BEV map ``(B, D, X, Y)`` (and, with ``"image"`` among the sources, its image features)."""

    def __init__(self, config: DrivingConfig, geometry: BevGeometry, sources: tuple[str, ...]) -> None:
        super().__init__()
        add_detection_path(self, config, geometry, sources)


class DrivingDetector(nn.Module):
    """The whole detector; built by :func:`build_detector`. ``forward(batch, query_cells=None, *,
    teacher_cells=None)`` → :class:`DetectorOutput`. ``query_cells (B, Q)`` replaces the heatmap-peak queries;
    ``teacher_cells (B, G)`` are decoded before the peaks (training feeds every object's centre cell)."""

    def __init__(self, config: DrivingConfig, pillars: PillarEncoder | None, image_encoder: ImageEncoder | None) -> None:
        super().__init__()
        self.config = config
        D = config.dim
        self.pillars = pillars
        self.image_encoder = image_encoder
        self.geometry = BevGeometry(config)
        if pillars is not None:
            self.lidar_bev = nn.Sequential(_conv_block(D + 2, D), _conv_block(D, D))
        if config.uses_camera:  # the camera's own BEV map: the whole BEV of the camera variant, and of an
            # interaction frame without LiDAR; concat merges it with the LiDAR's
            self.lift_embedding = nn.Parameter(torch.randn(len(config.pillar_heights), D) * 0.02)
            self.camera_bev = nn.Sequential(_conv_block(D + 2, D), _conv_block(D, D))
        if config.variant == "concat":
            self.merge = _conv_block(2 * D, D)
        # each BEV cell reads the image at its pillar's heights, each image cell the BEV along its ray's depths
        self.interaction = (
            create_fusion("interaction", modality_dims={"bev": D, "image": D}, dim=D, num_layers=config.encoder_layers,
                          num_heads=config.num_heads, ffn_mult=2, dropout=config.dropout, project_inputs=False,
                          samples_per_token={"bev": len(config.pillar_heights), "image": len(config.ray_depths)})
            if config.variant == "interaction" and config.encoder_layers else None
        )
        uses_image = config.variant in ("interaction", "camera")
        add_detection_path(self, config, self.geometry, decoder_sources(config, uses_image))
        interaction = config.variant == "interaction"
        self.lidar_branch = (SensorBranch(config, self.geometry, decoder_sources(config, False))
                             if interaction and config.lidar_branch_weight else None)
        self.camera_branch = (SensorBranch(config, self.geometry, decoder_sources(config, True))
                              if interaction and config.camera_branch_weight else None)

    # --- streams ----------------------------------------------------------------------------------------
    def _coords(self, B: int, device) -> Tensor:
        X, Y = self.config.grid_size
        cell = self.geometry.cell_xy
        norm = torch.stack([(cell[:, 0] - self.config.x_range[0]) / (self.config.x_range[1] - self.config.x_range[0]),
                            (cell[:, 1] - self.config.y_range[0]) / (self.config.y_range[1] - self.config.y_range[0])], -1)
        return (norm * 2 - 1).T.reshape(1, 2, X, Y).expand(B, 2, X, Y).to(device)

    def _lift(self, image_features: Tensor, cell_grid: Tensor, cell_valid: Tensor, camera_present: Tensor) -> Tensor:
        """Camera features onto the BEV grid: the masked mean of the samples up each pillar (an orthographic
        feature transform), each sample tagged with its height."""
        B, D = image_features.shape[:2]
        X, Y = self.config.grid_size
        samples = sample_feature_map(image_features, cell_grid) + self.lift_embedding  # (B, N, K, D)
        weight = (cell_valid & camera_present[:, None, None]).to(samples.dtype)[..., None]
        lifted = (samples * weight).sum(2) / weight.sum(2).clamp(min=1)
        return lifted.transpose(1, 2).reshape(B, D, X, Y)

    def streams(self, batch: dict[str, Tensor]) -> Streams:
        """The BEV and image maps after the streams and, for ``interaction``, the interaction encoder, and the
        camera's own BEV map (:class:`Streams`)."""
        cfg = self.config
        B = batch["projection"].shape[0]
        device = batch["projection"].device
        coords = self._coords(B, device)
        lidar_present = batch["lidar_present"].bool()
        camera_present = batch["camera_present"].bool()
        image_features = camera_image = None
        if self.image_encoder is not None:
            image = torch.where(camera_present[:, None, None, None], batch["image"], torch.zeros((), device=device))
            image_features = camera_image = self.image_encoder(image) * camera_present[:, None, None, None]
        cell_grid, cell_valid = self.geometry.cell_to_image(batch["projection"])
        bev = lifted = lidar_bev = None
        if self.pillars is not None:
            # the LiDAR branch reads every recorded scan; the interaction path reads a frame's LiDAR map only where
            # lidar_present (elsewhere it starts from the camera's map, below), so it never sees a dropped scan
            lidar_read = batch.get("lidar_recorded", lidar_present).bool() if self.lidar_branch is not None else lidar_present
            point_mask = batch["point_mask"].bool() & lidar_read[:, None]
            pillar_bev = self.pillars(batch["points"], point_mask).bev
            bev = lidar_bev = self.lidar_bev(torch.cat([pillar_bev, coords], 1))
        if self.image_encoder is not None:
            lifted = self.camera_bev(torch.cat([self._lift(image_features, cell_grid, cell_valid, camera_present), coords], 1))
            if cfg.variant == "camera":
                bev = lifted
            elif cfg.variant == "concat":
                bev = self.merge(torch.cat([bev, lifted], 1))
            else:  # interaction: per frame, the LiDAR's BEV, or the camera's where the LiDAR is dead
                bev = torch.where(lidar_present[:, None, None, None], bev, lifted)
        if self.interaction is not None:
            bev, image_features = self._interact(bev, image_features, cell_grid, cell_valid, lidar_present,
                                                 camera_present, batch["projection"])
        bev = self.bev_head(torch.cat([bev, coords], 1))
        return Streams(bev, image_features, lifted, lidar_bev, camera_image)

    def _interact(self, bev: Tensor, image_features: Tensor, cell_grid: Tensor, cell_valid: Tensor,
                  lidar_present: Tensor, camera_present: Tensor, projection: Tensor) -> tuple[Tensor, Tensor]:
        """Both maps after the interaction encoder. The BEV stream always exists (a frame without LiDAR brings the
        camera's lifted map); the image stream is absent without a camera, and image cells read the BEV only where
        the LiDAR saw the frame (the camera's own lifted map would tell them nothing new)."""
        B, D, X, Y = bev.shape
        h, w = image_features.shape[-2:]
        ray_grid, ray_valid = self.geometry.ray_to_bev(projection)
        out = self.interaction(
            # (B, N, D) BEV tokens and (B, h·w, D) image tokens, both maps row-major
            {"bev": bev.flatten(2).transpose(1, 2), "image": image_features.flatten(2).transpose(1, 2)},
            present={"image": camera_present},
            neighbourhoods={"bev": GridNeighbourhood(cell_grid, cell_valid, (h, w)),
                            "image": GridNeighbourhood(ray_grid, ray_valid & lidar_present[:, None, None], (X, Y))},
        )
        return (out.tokens["bev"].transpose(1, 2).reshape(B, D, X, Y),
                out.tokens["image"].transpose(1, 2).reshape(B, D, h, w))

    # --- queries and heads --------------------------------------------------------------------------------
    def forward(self, batch: dict[str, Tensor], query_cells: Tensor | None = None, *,
                teacher_cells: Tensor | None = None) -> DetectorOutput:
        streams = self.streams(batch)
        out = self.detect_on(self, batch, streams.bev, streams.image, query_cells, teacher_cells)
        if self.training and self.config.camera_heatmap_weight and self.config.variant == "interaction":
            # the objectness a frame would get from its camera alone, in every frame (the detection loss reaches the
            # camera's map only where the LiDAR was dropped)
            coords = self._coords(streams.bev.shape[0], streams.bev.device)
            out = out._replace(camera_heatmap=self.head.heatmap(self.bev_head(torch.cat([streams.camera_bev, coords], 1))))
        # a frame with one sensor is detected by that sensor's branch; training keeps every path's output of every
        # frame instead, each for its own loss (CenterHead.loss)
        lidar_present, camera_present = batch["lidar_present"].bool(), batch["camera_present"].bool()
        for name, branch, alone, bev, image in (
            ("lidar_branch", self.lidar_branch, lidar_present & ~camera_present, streams.lidar_bev, None),
            ("camera_branch", self.camera_branch, camera_present & ~lidar_present, streams.camera_bev, streams.camera_image),
        ):
            if branch is None or not (self.training or alone.any()):
                continue
            coords = self._coords(bev.shape[0], bev.device)
            own = self.detect_on(branch, batch, branch.bev_head(torch.cat([bev, coords], 1)), image, query_cells,
                                 teacher_cells)
            out = out._replace(**{name: own}) if self.training else select_frames(alone, own, out)
        return out

    @property
    def branches(self) -> dict[str, SensorBranch]:
        """``{"lidar", "camera"}``: the single-sensor branches this detector has (``*_branch_weight`` > 0)."""
        return {sensor: branch for sensor, branch in (("lidar", self.lidar_branch), ("camera", self.camera_branch))
                if branch is not None}

    def path_for(self, lidar: bool, camera: bool) -> nn.Module:
        """The path that detects a frame with these sensors (as :meth:`forward` chooses per frame): the LiDAR branch
        for LiDAR alone, the camera branch for a camera alone, where the detector has them; else the detector."""
        branch = {(True, False): self.lidar_branch, (False, True): self.camera_branch}.get((lidar, camera))
        return self if branch is None else branch

    def detect_on(self, path: nn.Module, batch: dict[str, Tensor], bev: Tensor, image_features: Tensor | None,
                  query_cells: Tensor | None, teacher_cells: Tensor | None) -> DetectorOutput:
        """The detections of ``path`` (this detector, or one of its :class:`SensorBranch` es) on its BEV map: the objectness
        heatmap, queries at its peaks (after ``teacher_cells``) unless ``query_cells`` are given, the decoder."""
        heatmap = path.head.heatmap(bev)  # (B, X, Y)
        if query_cells is None:
            query_cells = path.head.peak_cells(heatmap.detach(), min(self.config.num_queries, heatmap[0].numel()))
            if teacher_cells is not None:  # (B, G) then (B, Q) queries
                query_cells = torch.cat([teacher_cells, query_cells], 1)
        return self.decode_queries(batch, bev, image_features, heatmap, query_cells, path)

    def decode_queries(self, batch: dict[str, Tensor], bev: Tensor, image_features: Tensor | None, heatmap: Tensor,
                       query_cells: Tensor, path: nn.Module | None = None) -> DetectorOutput:
        """Queries at ``query_cells (B, Q)`` refined by the decoder of ``path`` (default: this detector; or its
        :class:`SensorBranch`) over the streams, then its heads."""
        path = self if path is None else path
        B, D, X, Y = bev.shape
        cell_norm = self._coords(1, bev.device).reshape(2, -1).T  # (N, 2) in [-1, 1]
        bev_tokens = bev.flatten(2).transpose(1, 2)  # (B, N, D)
        queries = bev_tokens.gather(1, query_cells[..., None].expand(-1, -1, D)) + path.query_position(cell_norm[query_cells])
        memories = {"bev": bev_tokens + path.bev_position(cell_norm)[None]}
        masks = {"bev": torch.ones(B, X * Y, dtype=torch.bool, device=bev.device)}
        if path.image_position is not None:
            memories["image"] = image_features.flatten(2).transpose(1, 2) + path.image_position
            masks["image"] = batch["camera_present"].bool()[:, None].expand(B, memories["image"].shape[1])
        decoded = path.decoder(queries, memories, masks)
        queries = decoded.queries
        no_update = torch.zeros_like(queries[..., 0])
        updates = torch.stack([decoded.updates.get(source, no_update) for source in ("bev", "image")], -1)  # (B, Q, 2)
        predicted = path.head(queries, query_cells)
        return DetectorOutput(heatmap, query_cells, predicted.class_logits, predicted.boxes, predicted.box_params,
                              updates)


def select_frames(chosen: Tensor, where_chosen: DetectorOutput, elsewhere: DetectorOutput) -> DetectorOutput:
    """Per frame, ``where_chosen``'s outputs where ``chosen (B,)`` is set, else ``elsewhere``'s (both with the same
    queries per frame; the auxiliary outputs are ``elsewhere``'s)."""
    fields = {}
    for name in ("heatmap", "query_cells", "class_logits", "boxes", "box_params", "stream_updates"):
        a, b = getattr(where_chosen, name), getattr(elsewhere, name)
        fields[name] = torch.where(chosen.reshape(-1, *([1] * (a.dim() - 1))), a, b)
    return elsewhere._replace(**fields)


def build_detector(config: DrivingConfig) -> DrivingDetector:
    """The detector of ``config.variant`` with its sensor encoders."""
    pillars = (PillarEncoder(x_range=config.x_range, y_range=config.y_range, grid_size=config.grid_size,
                             in_features=4, out_channels=config.dim) if config.uses_lidar else None)
    image_encoder = ImageEncoder(config.dim) if config.uses_camera else None
    return DrivingDetector(config, pillars, image_encoder)
