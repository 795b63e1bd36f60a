"""Benchmark of the camera-LiDAR detectors (issue 6): LiDAR-only, camera-only, early BEV concatenation
(BEVFusion-like) and the interaction model (DeepInteraction++-style), on clean generated scenes and under faults.

All four variants are the recipe's ``DrivingModule`` with the ``quick`` config's model sizes, trained by the same
plain PyTorch loop (AdamW, one-cycle schedule, the module's own loss) for 12 epochs on all 450 training frames of
``driving-scenes`` (the quick config trains 3 epochs on 240), in the same order; training frames get a random sensor
fault with the config's ``fault_prob``. Each model is then evaluated on
the held-out test frames clean and under each fault: ``camera_blackout`` (all-black image), ``lidar_beam_loss`` (a
random half of the beams lost per frame) and ``night`` (image at 12 % brightness with noise), with the recipe's
nuScenes-style mAP (centre-distance matching at 0.5/1/2/4 m) and NDS-like score.

Progress goes to stdout; the last line is one JSON object::

    {"clean": {"lidar": {"map": m, "nds": n}, "camera": {...}, "concat": {...}, "interaction": {...}},
     "faults": {"camera_blackout": {<variant>: {"map", "nds"}}, "lidar_beam_loss": {...}, "night": {...}},
     "train_seconds": t}

``train_seconds`` sums the four models' training wall time. Run ``.venv/bin/python bench/driving.py`` — about
3 minutes on one GPU with ``--workers 12``, most of an hour on 2 CPU cores (``--epochs`` and ``--limit-frames`` shrink
it; ``--smoke`` checks the plumbing in a minute).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import yaml  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from recipes.driving_interaction.config import DATA_GEOMETRY, DrivingConfig  # noqa: E402
from recipes.driving_interaction.data import DrivingDataModule, collate_examples  # noqa: E402
from recipes.driving_interaction.module import DrivingModule  # noqa: E402

VARIANTS = ("lidar", "camera", "concat", "interaction")
FAULTS = ("camera_blackout", "lidar_beam_loss", "night")
QUICK = Path(__file__).resolve().parents[1] / "recipes" / "driving_interaction" / "configs" / "quick.yaml"
STARTED = time.perf_counter()


def say(message: str) -> None:
    print(f"[bench {time.perf_counter() - STARTED:6.0f} s] {message}", flush=True)


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def train_variant(variant: str, model_options: dict, datamodule: DrivingDataModule, epochs: int, device: torch.device,
                  workers: int, seed: int) -> tuple[DrivingModule, float]:
    torch.manual_seed(seed)
    # the quick config's model, with the data's camera input size and BEV extent (linked in `fusion train`)
    geometry = {name: getattr(datamodule, name) for name in DATA_GEOMETRY}
    module = DrivingModule(DrivingConfig(**{**model_options, **geometry, "variant": variant})).to(device)
    dataset = datamodule.dataset("train")
    loader = DataLoader(dataset, batch_size=datamodule.batch_size, shuffle=True, collate_fn=collate_examples,
                        num_workers=workers, generator=torch.Generator().manual_seed(seed), persistent_workers=False)
    optimizer = torch.optim.AdamW(module.parameters(), lr=module.config.lr, weight_decay=module.config.weight_decay)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=module.config.lr, total_steps=epochs * len(loader),
                                                    pct_start=0.15)
    started = time.perf_counter()
    module.train()
    for epoch in range(epochs):
        dataset.epoch = epoch
        total = 0.0
        for batch in loader:
            loss = module.losses(to_device(batch, device)).total
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(module.parameters(), 5.0)
            optimizer.step()
            scheduler.step()
            total += float(loss.detach())
        say(f"{variant} epoch {epoch + 1}/{epochs} loss {total / len(loader):.3f}")
    module.eval()
    return module, time.perf_counter() - started


@torch.no_grad()
def evaluate(module: DrivingModule, datamodule: DrivingDataModule, fault: str, device: torch.device) -> dict[str, float]:
    metrics = module.build_metrics().to(device)
    dataset = datamodule.dataset("test", fault)
    for start in range(0, len(dataset), 16):
        batch = to_device(collate_examples([dataset[i] for i in range(start, min(start + 16, len(dataset)))]), device)
        module.update_metrics(metrics, batch, module.present_of(batch))
    computed = {name: float(value) for name, value in metrics["detection"].compute().items()}
    return {"map": round(computed["map"], 4), "nds": round(computed["nds"], 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=12, help="training epochs (default 12)")
    parser.add_argument("--limit-frames", type=int, default=None, help="cap on the frames of each split (default: all)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--workers", type=int, default=0, help="data-loading worker processes")
    parser.add_argument("--smoke", action="store_true", help="one epoch on 16 frames per split")
    args = parser.parse_args()
    quick = yaml.safe_load(QUICK.read_text())
    epochs = 1 if args.smoke else args.epochs
    data_options = dict(quick["data"])
    data_options["limit_frames"] = 16 if args.smoke else args.limit_frames
    device = torch.device(args.device)
    say(f"variants {VARIANTS}; faults {FAULTS}; {epochs} epochs; data {data_options}; device {device}")
    datamodule = DrivingDataModule(**data_options)
    datamodule.prepare_data()
    datamodule.setup()
    say(f"frames: {', '.join(f'{k} {len(v)}' for k, v in datamodule.splits.items())}")
    clean, faults = {}, {fault: {} for fault in FAULTS}
    train_seconds = 0.0
    for variant in VARIANTS:
        module, seconds = train_variant(variant, quick["model"]["config"], datamodule, epochs, device, args.workers,
                                        int(quick.get("seed_everything", 0)))
        train_seconds += seconds
        clean[variant] = evaluate(module, datamodule, "clean", device)
        say(f"{variant} trained in {seconds:.0f} s; clean {clean[variant]}")
        for fault in FAULTS:
            faults[fault][variant] = evaluate(module, datamodule, fault, device)
            say(f"{variant} {fault} {faults[fault][variant]}")
    print(json.dumps({"clean": clean, "faults": faults, "train_seconds": round(train_seconds, 1)}), flush=True)


if __name__ == "__main__":
    main()
