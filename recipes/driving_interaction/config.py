"""The driving recipe's one config and the names every file of the vertical shares.

Imports nothing else of the vertical, so the readers, the generator, the model, the module and the report can all
import it without a circle.
"""
from __future__ import annotations

from dataclasses import dataclass

from recipes.runtime.config import RecipeConfig

__all__ = ["CLASSES", "MODALITIES", "VARIANTS", "DATA_GEOMETRY", "DrivingConfig"]

#: the labelled classes, in the order of the detector's class logits (background is one more, last)
CLASSES = ("Car", "Truck", "Pedestrian", "Cyclist")
#: the sensors; a batch says which a frame has in ``<modality>_present``
MODALITIES = ("camera", "lidar")
VARIANTS = ("interaction", "lidar", "camera", "concat")
#: settings of the data module that the model's config takes over (``Recipe.links``): the camera input size and the
#: BEV extent, so the examples and the model's geometry cannot disagree
DATA_GEOMETRY = ("image_size", "x_range", "y_range")


@dataclass(kw_only=True)
class DrivingConfig(RecipeConfig):
    """Every hyperparameter of the detector and its training, declared once (YAML ``model: {config: {...}}``).

    ``variant``          ``interaction`` (DeepInteraction++-style) or a baseline ``lidar`` | ``camera`` | ``concat``
    ``dim``, ``num_heads``  token width and attention heads of the interaction encoder and the decoder
    ``encoder_layers``   interaction encoder layers (``interaction`` only; 0 switches the encoder off)
    ``decoder_layers``   decoder layers, alternating BEV and image attention where the variant has an image stream
    ``num_queries``      object queries, started at the heatmap's peaks
    ``grid_size``        BEV cells along x and y
    ``image_size``, ``x_range``, ``y_range``  the camera input (H, W) and the BEV extent in metres; linked from the
                         data section (``data.image_size`` ...), so the model and its data always agree
    ``pillar_heights``   velodyne z of the samples up each BEV pillar (where a cell reads the image)
    ``ray_depths``       camera depths of the samples along each image ray (where an image cell reads the BEV)
    ``min_score``        detections below this confidence are dropped after the class softmax
    ``camera_heatmap_weight``  ``interaction`` only: weight of an auxiliary objectness loss on the camera's own BEV
                         map in every frame with a camera. That map is what a frame without LiDAR detects on, but
                         the detection loss reaches it only in the frames whose LiDAR training drops; this trains it
                         on all of them (0 switches it off)
    ``lidar_branch_weight``  ``interaction`` only: > 0 adds the LiDAR branch (the LiDAR-only model's head on the
                         LiDAR's own BEV map, :class:`recipes.driving_interaction.model.SensorBranch`), which detects
                         every frame without a camera, trained with its whole detection loss in every frame with
                         LiDAR times this weight (0: no branch; a frame without camera then uses the interaction path)
    ``camera_branch_weight``  the same for the camera: the camera-only model's head and decoder on the camera's own BEV
                         map and image features, detecting every frame without LiDAR (0: no branch; such a frame then
                         uses the interaction path on the camera's own BEV map). Off in the quick config: with it (1.0),
                         the bench's interaction model (seed 0) fell to clean mAP 0.475 from 0.515 and did no better
                         without LiDAR (0.228 vs 0.241)
    ``class_weights``    weights of the query classification loss, one per class then background (None: all 1);
                         the quick config up-weights the rarer trucks and cyclists by the square root of their
                         frequency ratio, since mAP weighs every class alike
    """

    variant: str = "interaction"
    dim: int = 32
    num_heads: int = 4
    encoder_layers: int = 1
    decoder_layers: int = 4
    num_queries: int = 24
    grid_size: tuple[int, int] = (32, 32)
    image_size: tuple[int, int] = (96, 320)
    x_range: tuple[float, float] = (0.0, 48.0)
    y_range: tuple[float, float] = (-24.0, 24.0)
    pillar_heights: tuple[float, ...] = (-1.5, -0.9, -0.3, 0.3)
    ray_depths: tuple[float, ...] = (4.0, 8.0, 12.0, 16.0, 22.0, 28.0, 36.0, 46.0)
    dropout: float = 0.0
    min_score: float = 0.05
    class_weights: tuple[float, ...] | None = None
    camera_heatmap_weight: float = 0.0
    lidar_branch_weight: float = 0.0
    camera_branch_weight: float = 0.0
    lr: float = 2e-3
    weight_decay: float = 1e-4

    def __post_init__(self) -> None:
        super().__post_init__()
        # a config rebuilt from hparams.yaml holds lists
        self.grid_size = tuple(int(v) for v in self.grid_size)
        self.image_size = tuple(int(v) for v in self.image_size)
        self.x_range = tuple(float(v) for v in self.x_range)
        self.y_range = tuple(float(v) for v in self.y_range)
        self.pillar_heights = tuple(float(v) for v in self.pillar_heights)
        self.ray_depths = tuple(float(v) for v in self.ray_depths)
        if self.class_weights is not None:
            self.class_weights = tuple(float(v) for v in self.class_weights)
            if len(self.class_weights) != len(CLASSES) + 1 or min(self.class_weights) <= 0:
                raise ValueError(f"class_weights needs {len(CLASSES) + 1} positive numbers ({', '.join(CLASSES)}, "
                                 f"background); got {list(self.class_weights)}")
        if self.variant not in VARIANTS:
            raise ValueError(f"variant = {self.variant!r}; choose one of {list(VARIANTS)}")
        if self.dim % self.num_heads:
            raise ValueError(f"dim={self.dim} must be divisible by num_heads={self.num_heads}")
        if self.num_queries < 1 or self.decoder_layers < 1 or self.encoder_layers < 0:
            raise ValueError("need num_queries >= 1, decoder_layers >= 1 and encoder_layers >= 0; got "
                             f"{self.num_queries}, {self.decoder_layers}, {self.encoder_layers}")
        if len(self.grid_size) != 2 or len(self.image_size) != 2 or len(self.x_range) != 2 or len(self.y_range) != 2:
            raise ValueError("grid_size, image_size, x_range and y_range take two numbers each")
        if self.image_size[0] % 8 or self.image_size[1] % 8:
            raise ValueError(f"image_size {self.image_size} must be divisible by 8 (the image CNN's stride)")
        if not (self.x_range[0] < self.x_range[1] and self.y_range[0] < self.y_range[1]):
            raise ValueError(f"x_range and y_range must be (low, high); got {self.x_range}, {self.y_range}")
        if self.camera_heatmap_weight < 0:
            raise ValueError(f"camera_heatmap_weight must be >= 0 (0 switches the loss off); got {self.camera_heatmap_weight}")
        for sensor in ("lidar", "camera"):
            if getattr(self, f"{sensor}_branch_weight") < 0:
                raise ValueError(f"{sensor}_branch_weight must be >= 0 (0: no {sensor} branch); got "
                                 f"{getattr(self, f'{sensor}_branch_weight')}")
        if not 0 <= self.min_score < 1:
            raise ValueError(f"min_score must be in [0, 1); got {self.min_score}")

    @property
    def num_classes(self) -> int:
        return len(CLASSES)

    @property
    def uses_lidar(self) -> bool:
        return self.variant != "camera"

    @property
    def uses_camera(self) -> bool:
        return self.variant != "lidar"

    @property
    def cell(self) -> tuple[float, float]:
        """The BEV cell's size in metres along x and y."""
        return ((self.x_range[1] - self.x_range[0]) / self.grid_size[0],
                (self.y_range[1] - self.y_range[0]) / self.grid_size[1])
