"""The detector: shapes per variant, gradients, a missing sensor, the interaction encoder and the decoder."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from fusion_core.fusion.interaction import InteractionFusion
from fusion_core.layers.interaction_decoder import InteractionDecoder
from recipes.driving_interaction import model as driving_model
from recipes.driving_interaction.config import VARIANTS, DrivingConfig
from recipes.driving_interaction.head import assign_queries, heatmap_targets
from recipes.driving_interaction.model import build_detector
from recipes.driving_interaction.module import DrivingModule
from recipes.driving_interaction.scenes import SceneConfig, default_calibration

TINY = dict(dim=8, num_heads=2, grid_size=(8, 8), image_size=(16, 48), num_queries=4, decoder_layers=2,
            x_range=(0.0, 16.0), y_range=(-8.0, 8.0))


def tiny_module(**overrides) -> DrivingModule:
    return DrivingModule(DrivingConfig(**{**TINY, **overrides}))


def make_batch(batch: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    calib = default_calibration(SceneConfig(image_height=16, image_width=48))
    points = torch.rand(batch, 50, 4, generator=g) * torch.tensor([16.0, 16.0, 2.0, 1.0]) - torch.tensor([0.0, 8.0, 1.7, 0.0])
    gt_boxes = torch.tensor([[6.5, 1.0, -0.9, 4.0, 1.8, 1.5, 0.1], [10.0, -3.0, -0.8, 0.7, 0.6, 1.8, 1.0]]).expand(batch, 2, 7)
    return {
        "points": points, "point_mask": torch.ones(batch, 50, dtype=torch.bool),
        "image": torch.rand(batch, 3, 16, 48, generator=g),
        "projection": torch.tensor(calib.to_matrix(), dtype=torch.float32).expand(batch, 3, 4).clone(),
        "lidar_present": torch.ones(batch, dtype=torch.bool), "camera_present": torch.ones(batch, dtype=torch.bool),
        "gt_boxes": gt_boxes.clone(), "gt_labels": torch.tensor([[0, 2]]).expand(batch, 2).clone(),
        "gt_mask": torch.ones(batch, 2, dtype=torch.bool),
    }


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("batch", [1, 2])
def test_shapes(variant, batch):
    torch.manual_seed(0)
    module = tiny_module(variant=variant).eval()
    out = module(make_batch(batch))
    assert out.heatmap.shape == (batch, 8, 8)
    assert out.class_logits.shape == (batch, 4, 5) and out.boxes.shape == (batch, 4, 7)
    assert out.stream_updates.shape == (batch, 4, 2)
    assert (out.boxes[..., 3:6] > 0).all() and torch.isfinite(out.boxes).all()
    uses_image = variant in ("interaction", "camera")
    assert bool((out.stream_updates[..., 1] > 0).all()) == uses_image
    detections = module.detect(make_batch(batch))
    assert len(detections) == batch and all(d.boxes.shape[1] == 7 for d in detections)


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_parameter_gets_a_gradient(variant):
    torch.manual_seed(0)
    module = tiny_module(variant=variant)
    batch = make_batch()
    batch["lidar_present"] = torch.tensor([True, False])  # the interaction model reads its camera BEV only then
    losses = module.losses(batch)
    assert torch.isfinite(losses.total)
    losses.total.backward()
    missing = [n for n, p in module.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()
               or p.grad.abs().sum() == 0]
    assert not missing, missing


@pytest.mark.parametrize("sensor", ["camera", "lidar"])
def test_a_missing_sensor_is_ignored_whatever_its_data(sensor):
    torch.manual_seed(0)
    module = tiny_module(variant="interaction").eval()
    batch = make_batch()
    batch[f"{sensor}_present"] = torch.tensor([True, False])
    reference = module(batch)
    poisoned = dict(batch)
    if sensor == "camera":
        poisoned["image"] = batch["image"].clone()
        poisoned["image"][1] = float("nan")
    else:
        poisoned["points"] = batch["points"].clone()
        poisoned["points"][1] = 1e9
    out = module(poisoned)
    for name in ("heatmap", "class_logits", "boxes"):
        assert torch.isfinite(getattr(out, name)).all()
        torch.testing.assert_close(getattr(out, name), getattr(reference, name))
    if sensor == "camera":  # the absent camera contributes nothing to the decoder
        assert (out.stream_updates[1, :, 1] == 0).all() and (out.stream_updates[0, :, 1] > 0).all()


def test_interaction_encoder_updates_both_streams_from_each_other():
    torch.manual_seed(0)
    detector = build_detector(DrivingConfig(variant="interaction", **TINY)).eval()
    batch = make_batch(1)
    bev, image = detector.streams(batch)[:2]
    changed = dict(batch, image=torch.rand(1, 3, 16, 48))
    bev_changed = detector.streams(changed).bev
    assert not torch.allclose(bev, bev_changed)  # the BEV stream reads the camera through the encoder
    changed = dict(batch, points=batch["points"] + torch.tensor([0.0, 0.0, 0.5, 0.0]))
    image_changed = detector.streams(changed).image
    assert not torch.allclose(image, image_changed)  # and the image stream reads the LiDAR
    lidar_only = build_detector(DrivingConfig(variant="lidar", **TINY)).eval()
    assert lidar_only.streams(batch).image is None


def test_without_lidar_the_interaction_model_detects_on_the_cameras_own_bev():
    """A frame whose LiDAR is dead gets the camera's lifted BEV map (the camera variant's path), not an empty LiDAR
    map that only the interaction encoder could fill: without the encoder its heatmap still follows the image,
    while a frame with LiDAR keeps the LiDAR's map."""
    torch.manual_seed(0)
    detector = build_detector(DrivingConfig(variant="interaction", **{**TINY, "encoder_layers": 0})).eval()
    batch = make_batch(2)
    batch["lidar_present"] = torch.tensor([True, False])
    heatmap = detector(batch).heatmap
    other_image = detector(dict(batch, image=torch.rand(2, 3, 16, 48, generator=torch.Generator().manual_seed(1)))).heatmap
    torch.testing.assert_close(other_image[0], heatmap[0], rtol=0, atol=0)
    assert (other_image[1] - heatmap[1]).abs().max() > 1e-3


def test_the_camera_heatmap_loss_trains_the_cameras_bev_where_the_lidar_works():
    """Every frame has its LiDAR, so the detection loss never reaches the camera's own BEV map; with
    camera_heatmap_weight its objectness is scored in every frame with a camera and trains it."""
    batch = make_batch()
    for weight in (0.0, 0.5):
        torch.manual_seed(0)
        module = tiny_module(camera_heatmap_weight=weight).train()
        losses = module.losses(batch)
        torch.testing.assert_close(losses.total, losses.heatmap + losses.classification + 2 * losses.box
                                   + weight * losses.camera_heatmap)
        losses.total.backward()
        assert (module.detector.camera_bev[0][0].weight.grad.abs().sum() > 0) == (weight > 0)
        assert (losses.camera_heatmap > 0) == (weight > 0)
    no_camera = dict(batch, camera_present=torch.tensor([False, False]))
    assert tiny_module(camera_heatmap_weight=0.5).train().losses(no_camera).camera_heatmap == 0


def test_projection_geometry_agrees_with_the_calibration():
    detector = build_detector(DrivingConfig(variant="interaction", **TINY))
    batch = make_batch(1)
    grid, valid = detector.geometry.cell_to_image(batch["projection"])
    assert grid.shape == (1, 64, 4, 2) and valid.any()
    assert (grid[valid].abs() <= 1).all()
    rays, ray_valid = detector.geometry.ray_to_bev(batch["projection"])
    assert rays.shape == (1, 2 * 6, 8, 2) and ray_valid.any()
    # a ray sample at depth d lies d metres ahead of the camera: its x grid coordinate grows with depth
    column = rays[0, 3, :, 1][ray_valid[0, 3]]
    assert (column[1:] > column[:-1]).all()


@pytest.mark.parametrize("variant", VARIANTS)
def test_attention_comes_from_fusion_core(variant):
    detector = build_detector(DrivingConfig(variant=variant, **{**TINY, "decoder_layers": 3}))
    assert isinstance(detector.decoder, InteractionDecoder)
    uses_image = variant in ("interaction", "camera")
    assert detector.decoder.sources == (("bev", "image", "bev") if uses_image else ("bev", "bev", "bev"))
    if variant == "interaction":  # built through the registry as create_fusion("interaction", ...)
        assert isinstance(detector.interaction, InteractionFusion)
        assert detector.interaction.samples_per_token == {"bev": 4, "image": 8}
        assert len(detector.interaction.layers) == 1
    else:
        assert detector.interaction is None
    assert build_detector(DrivingConfig(variant="interaction", **{**TINY, "encoder_layers": 0})).interaction is None


def test_the_recipe_folder_holds_no_attention_code():
    folder = Path(driving_model.__file__).parent
    pattern = re.compile(r"MaskedAttention\(|MultiheadAttention\(|scaled_dot_product_attention\(")
    offenders = [p.name for p in folder.glob("*.py") if pattern.search(p.read_text())]
    assert not offenders, f"attention belongs in fusion_core, not in {offenders}"


def test_an_absent_camera_skips_the_decoders_image_layers():
    torch.manual_seed(0)
    detector = build_detector(DrivingConfig(variant="interaction", **{**TINY, "decoder_layers": 3})).eval()
    detector.decoder.record_attention = True
    batch = make_batch()
    batch["camera_present"] = torch.tensor([True, False])
    out = detector(batch)
    assert [s for s, _ in detector.decoder.last_attention] == ["bev", "image", "bev"]
    image_weights = detector.decoder.last_attention[1][1]
    assert image_weights.shape == (2, 2, 4, 2 * 6)
    assert image_weights[1].abs().max() == 0 and (out.stream_updates[1, :, 1] == 0).all()
    torch.testing.assert_close(image_weights[0].sum(-1), torch.ones(2, 4))


def test_targets_and_assignment():
    cell = (2.0, 2.0)
    detector = build_detector(DrivingConfig(variant="lidar", **TINY))
    batch = make_batch(1)
    heat = heatmap_targets(batch["gt_boxes"], batch["gt_mask"], detector.geometry.cell_xy, (8, 8), cell)
    assert heat.shape == (1, 8, 8) and heat.max() == 1 and (heat == 1).sum() == 2
    assert heat[0, 3, 4] == 1  # the car at (6.5, 1): x cell 3 (6-8 m), y cell 4 (0-2 m)
    anchors = torch.tensor([[[7.0, 1.0], [11.0, -3.0], [2.0, 7.0]]])
    target, index = assign_queries(anchors, batch["gt_boxes"], batch["gt_labels"], batch["gt_mask"], background=4)
    assert target.tolist() == [[0, 2, 4]] and index[0, :2].tolist() == [0, 1]


def test_box_encoding_round_trips():
    boxes = torch.tensor([[6.0, 1.0, -0.9, 4.0, 1.8, 1.5, 0.3]])
    anchor = torch.tensor([[5.0, 1.5]])
    head = build_detector(DrivingConfig(variant="lidar", **TINY)).head
    decoded = head.decode_boxes(head.encode_boxes(boxes, anchor), anchor)
    torch.testing.assert_close(decoded, boxes)


@pytest.mark.parametrize("kw, message", [(dict(variant="radar"), "variant"), (dict(lr=0.0), "lr must be > 0"),
                                         (dict(dim=10, num_heads=4), "divisible"), (dict(image_size=(20, 48)), "by 8"),
                                         (dict(min_score=1.0), "min_score"), (dict(x_range=(5.0, 1.0)), "low, high"),
                                         (dict(class_weights=(1.0, 2.0)), "class_weights needs 5 positive"),
                                         (dict(class_weights=(1.0, 2.0, 1.0, 0.0, 1.0)), "class_weights needs 5"),
                                         (dict(camera_heatmap_weight=-1.0), "camera_heatmap_weight must be >= 0"),
                                         (dict(lidar_branch_weight=-1.0), "lidar_branch_weight must be >= 0"),
                                         (dict(camera_branch_weight=-1.0), "camera_branch_weight must be >= 0")])
def test_bad_arguments(kw, message):
    with pytest.raises(ValueError, match=message):
        tiny_module(**kw)


def test_seeded_regression():
    torch.manual_seed(0)
    first = tiny_module(variant="interaction").eval()(make_batch(1)).class_logits
    torch.manual_seed(0)
    second = tiny_module(variant="interaction").eval()(make_batch(1)).class_logits
    torch.testing.assert_close(first, second)
    assert torch.isfinite(first).all()


@pytest.mark.parametrize("variant", VARIANTS)
def test_a_batch_with_one_dead_sensor_per_frame_equals_each_frame_alone(variant):
    """Frame 0 has lost its camera, frame 1 its LiDAR, frame 2 has both: every output of the batch is what the frame
    gives on its own, so a dead stream is skipped per frame and never leaks into its neighbours."""
    torch.manual_seed(0)
    module = tiny_module(variant=variant).eval()
    batch = make_batch(3, seed=4)
    batch["camera_present"] = torch.tensor([False, True, True])
    batch["lidar_present"] = torch.tensor([True, False, True])
    together = module(batch)
    for i in range(3):
        alone = module({k: v[i : i + 1] for k, v in batch.items()})
        for name in ("heatmap", "query_cells", "class_logits", "boxes", "stream_updates"):
            torch.testing.assert_close(getattr(together, name)[i : i + 1], getattr(alone, name), atol=1e-5, rtol=1e-5,
                                       msg=f"{variant} frame {i}: {name}")
    if variant in ("interaction", "camera"):  # the frame without a camera drew nothing from the image layers
        assert (together.stream_updates[0, :, 1] == 0).all() and (together.stream_updates[1:, :, 1] > 0).all()


def test_training_keeps_a_sensor_in_every_frame_and_drops_each_per_frame():
    module = tiny_module(modality_dropout={"camera": 0.6, "lidar": 0.6}).train()
    batch = make_batch(256)
    batch["camera_present"][:64] = False  # frames that never had a camera keep their LiDAR whatever the draw
    torch.manual_seed(1)
    present = module.training_present(batch)
    assert (present["lidar"][:64]).all() and not present["camera"][:64].any()
    both = torch.stack([present["camera"][64:], present["lidar"][64:]])
    assert both.any(0).all()
    patterns = {tuple(column.tolist()) for column in both.T}
    assert patterns == {(True, True), (True, False), (False, True)}  # per frame, not per batch
    for variant, sensor in (("lidar", "lidar"), ("camera", "camera")):  # a single-sensor baseline keeps its sensor
        torch.manual_seed(1)
        kept = tiny_module(variant=variant, modality_dropout={"camera": 0.6, "lidar": 0.6}).train().training_present(batch)
        assert kept[sensor][64:].all()


def test_class_weights_weigh_the_query_classification_loss():
    torch.manual_seed(0)
    plain = tiny_module()
    batch = make_batch()
    torch.manual_seed(0)
    weighted = tiny_module(class_weights=(1.0, 1.0, 3.0, 1.0, 1.0))  # the same weights, pedestrians × 3
    a, b = plain.losses(batch), weighted.losses(batch)
    torch.testing.assert_close(a.heatmap, b.heatmap)
    assert not torch.allclose(a.classification, b.classification)
    torch.manual_seed(0)
    ones = tiny_module(class_weights=(1.0,) * 5).losses(batch)
    torch.testing.assert_close(ones.classification, a.classification)


#: per sensor: the encoder weights its single-sensor model shares with the interaction model
SENSOR_ENCODERS = {"lidar": ("pillars.", "lidar_bev."), "camera": ("image_encoder.", "lift_embedding", "camera_bev.")}


def _single_sensor_copy(module: DrivingModule, sensor: str) -> DrivingModule:
    """The ``sensor``-only model holding the interaction model's encoder of that sensor and its branch."""
    alone = tiny_module(variant=sensor).eval()
    state = module.detector.state_dict()
    weights = {k: v for k, v in state.items() if k.startswith(SENSOR_ENCODERS[sensor])}
    weights.update({k.removeprefix(f"{sensor}_branch."): v for k, v in state.items() if k.startswith(f"{sensor}_branch.")})
    alone.detector.load_state_dict(weights)
    return alone


@pytest.mark.parametrize("sensor", ["lidar", "camera"])
def test_a_frame_with_one_sensor_is_detected_by_that_sensors_branch(sensor):
    """With <sensor>_branch_weight, a frame with only that sensor is scored exactly as the single-sensor model holding
    the interaction model's encoder and branch of that sensor scores it (whatever the dead sensor's data holds); a
    frame with both sensors stays with the interaction path; frames of a batch with mixed sensors are what each
    gives alone."""
    torch.manual_seed(0)
    module = tiny_module(**{f"{sensor}_branch_weight": 1.0}).eval()
    assert getattr(tiny_module().detector, f"{sensor}_branch") is None
    assert getattr(tiny_module(variant="concat", **{f"{sensor}_branch_weight": 1.0}).detector, f"{sensor}_branch") is None
    single = _single_sensor_copy(module, sensor)
    other = "camera" if sensor == "lidar" else "lidar"
    batch = make_batch(3, seed=4)
    batch[f"{other}_present"] = torch.tensor([False, True, True])
    batch[f"{sensor}_present"] = torch.tensor([True, False, True])
    if other == "camera":
        batch["image"][0] = float("nan")
    else:
        batch["points"][0] = 1e9
    together = module(batch)
    reference = single({k: v[:1] for k, v in batch.items()})
    for name in ("heatmap", "query_cells", "class_logits", "boxes", "stream_updates"):
        torch.testing.assert_close(getattr(together, name)[:1], getattr(reference, name), msg=name)
        for i in range(3):
            alone = module({k: v[i : i + 1] for k, v in batch.items()})
            torch.testing.assert_close(getattr(together, name)[i : i + 1], getattr(alone, name), atol=1e-5, rtol=1e-5,
                                       msg=f"frame {i}: {name}")
    branch = getattr(module.detector, f"{sensor}_branch")
    setattr(module.detector, f"{sensor}_branch", None)  # the interaction path alone
    try:
        torch.testing.assert_close(module({k: v[1:] for k, v in batch.items()}).class_logits, together.class_logits[1:])
    finally:
        setattr(module.detector, f"{sensor}_branch", branch)
    assert not torch.allclose(single({k: v[2:] for k, v in batch.items()}).class_logits, together.class_logits[2:])


@pytest.mark.parametrize("sensor", ["lidar", "camera"])
def test_a_branch_is_trained_with_its_own_detection_loss_in_every_frame_with_its_sensor(sensor):
    torch.manual_seed(0)
    module = tiny_module(**{f"{sensor}_branch_weight": 0.5}).train()
    other = "camera" if sensor == "lidar" else "lidar"
    batch = make_batch(3, seed=2)
    batch[f"{sensor}_present"] = torch.tensor([True, False, True])
    batch[f"{other}_present"] = torch.tensor([False, True, True])  # the interaction path still trains on frame 0
    losses = module.losses(batch)
    torch.testing.assert_close(losses.total, losses.heatmap + losses.classification + 2 * losses.box
                               + 0.5 * getattr(losses, f"{sensor}_branch"))
    assert getattr(losses, f"{other}_branch") == 0
    single = _single_sensor_copy(module, sensor).train()
    torch.testing.assert_close(getattr(losses, f"{sensor}_branch"),
                               single.losses({k: v[[0, 2]] for k, v in batch.items()}).total)
    losses.total.backward()
    missing = [n for n, p in module.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing, missing
    unseen = dict(batch, **{f"{sensor}_present": torch.tensor([False] * 3), f"{other}_present": torch.tensor([True] * 3)})
    assert getattr(module.losses(unseen), f"{sensor}_branch") == 0


def test_the_lidar_branch_learns_from_scans_that_training_dropout_hid_from_the_interaction_path():
    """Training's sensor dropout is the interaction path's: with ``lidar_recorded`` the LiDAR branch is scored on every
    recorded scan (as the LiDAR-only model, which never drops its sensor), while the interaction path's terms are
    exactly those it has without the dropped scan."""
    torch.manual_seed(0)
    module = tiny_module(lidar_branch_weight=1.0).train()
    batch = make_batch(3, seed=2)
    batch["lidar_present"] = torch.tensor([True, False, True])  # frame 1's scan dropped for the interaction path
    plain = module.losses(batch)
    recorded = module.losses({**batch, "lidar_recorded": torch.tensor([True, True, True])})
    for name in ("heatmap", "classification", "box"):
        torch.testing.assert_close(getattr(recorded, name), getattr(plain, name))
    single = _single_sensor_copy(module, "lidar").train()
    torch.testing.assert_close(recorded.lidar_branch, single.losses(dict(batch, lidar_present=torch.tensor([True] * 3))).total)
    assert not torch.allclose(recorded.lidar_branch, plain.lidar_branch)
