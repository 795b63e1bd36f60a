"""The detector on the recipe base: one config, sensors as modalities, strata, the subset table and fault redraws."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from recipes.driving_interaction.config import CLASSES
from recipes.driving_interaction.data import DrivingDataset, collate_examples
from recipes.driving_interaction.metrics import DetectionMetrics
from recipes.driving_interaction.module import DrivingModule
from recipes.driving_interaction.readers import Frame
from recipes.driving_interaction.scenes import SceneConfig, render_frame
from tests.recipes.driving_interaction.test_model import make_batch, tiny_module

SMALL = SceneConfig(num_beams=16, azimuth_step_deg=0.8, image_height=48, image_width=160)


def test_config_is_saved_once_and_rebuilds_the_module():
    module = tiny_module(variant="concat", min_score=0.2)
    saved = module.hparams["config"]
    assert set(saved) >= {"variant", "dim", "grid_size", "image_size", "lr", "modality_dropout", "balance_missingness"}
    assert saved["grid_size"] == [8, 8] and saved["variant"] == "concat"
    again = DrivingModule(config=saved)  # what Run.load_module does with hparams.yaml
    assert again.config == module.config and again.config.grid_size == (8, 8)
    again.load_state_dict(module.state_dict())
    batch = make_batch(1)
    torch.testing.assert_close(again.eval()(batch).class_logits, module.eval()(batch).class_logits)
    with pytest.raises(ValueError, match="no field"):
        DrivingModule(config={**saved, "num_classes": 5})


def test_sensors_are_the_modalities_and_strata_count_objects():
    module = tiny_module()
    assert module.modalities == ("camera", "lidar")
    batch = make_batch(3)
    batch["camera_present"] = torch.tensor([True, False, True])
    present = module.present_of(batch)
    assert present["camera"].tolist() == [True, False, True] and present["lidar"].tolist() == [True] * 3
    batch["gt_mask"] = torch.zeros(3, 12, dtype=torch.bool)
    for row, count in enumerate((6, 7, 9)):
        batch["gt_mask"][row, :count] = True
    assert module.strata_of(batch).tolist() == [0, 1, 2] and module.strata_of(batch).dtype == torch.long


def test_subset_evaluation_switches_the_sensor_off():
    torch.manual_seed(0)
    module = tiny_module(min_score=0.0).eval()
    batch = make_batch(2)
    module.evaluate(batch, "test")
    assert module.subsets() == [("camera",), ("lidar",)]
    without_camera = module.metrics_of("test", ("camera",)).compute()
    reference = DetectionMetrics(CLASSES)
    off = dict(batch, camera_present=torch.zeros(2, dtype=torch.bool))
    detections = module.detect(off)
    reference.update([d._asdict() for d in detections],
                     [{"boxes": b[m], "labels": l[m]} for b, l, m in zip(off["gt_boxes"], off["gt_labels"], off["gt_mask"])])
    assert {k: float(v) for k, v in without_camera.items()} == {k: float(v) for k, v in reference.compute().items()}
    with_camera = [d.scores for d in module.detect(batch)]
    assert any(not np.array_equal(a, b.scores) for a, b in zip(with_camera, detections))  # the camera mattered


@pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")
def test_modality_dropout_and_balancing_act_in_training_only():
    module = tiny_module(modality_dropout=0.5, balance_missingness=True)
    batch = make_batch(64)
    batch["gt_mask"] = torch.rand(64, 2, generator=torch.Generator().manual_seed(0)) > 0.5
    torch.manual_seed(0)
    present = module.train().training_present(batch)
    kept = torch.stack([present["camera"], present["lidar"]]).float()
    assert kept.any(0).all()  # a frame whose draw dropped both sensors keeps them
    # each sensor is dropped with probability 0.5 and given back when the other went too: kept 0.75 of the time
    assert ((kept.mean(1) > 0.55) & (kept.mean(1) < 0.95)).all()
    assert module.eval().training_present(batch)["camera"].all()
    assert torch.isfinite(module.train().training_step(batch, 0))


def small_frames(count: int) -> list[Frame]:
    frames = []
    for index in range(count):
        rendered = render_frame(5, index, SMALL)
        frames.append(Frame(f"{index:06d}", rendered.points, rendered.image, rendered.calib, np.zeros((0, 7)),
                            np.zeros(0, dtype=np.int64)))
    return frames


def sensors(batch) -> list[tuple[bool, bool, int]]:
    return list(zip(batch["camera_present"].tolist(), batch["lidar_present"].tolist(), batch["point_mask"].sum(1).tolist()))


def test_training_faults_are_redrawn_each_epoch_in_persistent_workers():
    dataset = DrivingDataset(small_frames(6), (16, 48), (0.0, 48.0), (-24.0, 24.0), fault_prob=0.9, seed=3)
    expected = []
    for epoch in (0, 1):
        dataset.epoch = epoch
        expected.append([dataset.fault_of(i) for i in range(6)])
    assert expected[0] != expected[1]
    dataset.epoch = 0
    loader = DataLoader(dataset, batch_size=6, collate_fn=collate_examples, num_workers=1, persistent_workers=True)
    module = tiny_module()
    module._trainer = SimpleNamespace(train_dataloader=loader, current_epoch=0)
    seen = []
    for epoch in (0, 1):
        module._trainer.current_epoch = epoch
        module.on_train_epoch_start()
        assert dataset.epoch == epoch
        (batch,) = list(loader)
        seen.append(sensors(batch))
    for epoch in (0, 1):  # the worker, started in epoch 0, drew epoch 1's faults
        dataset.epoch = epoch
        assert seen[epoch] == sensors(collate_examples([dataset[i] for i in range(6)]))
    assert seen[0] != seen[1]
