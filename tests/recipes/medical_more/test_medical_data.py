"""The data sets (fetching from a local copy), the synthetic cohort, and the data module's batches."""
from __future__ import annotations

import io
import tarfile

import numpy as np
import polars as pl
import pytest
import torch

from recipes.medical_more.cohort import appearance_labels, patient_rng, synthesize_ecg, synthesize_xray
from recipes.medical_more.data import MoreDataModule, cohort_arrays, fetch_iu_reports, fetch_more_cohort

XML = """<?xml version="1.0" encoding="utf-8"?><eCitation><uId id="CXR{n}"/><MedlineCitation><Article><Abstract>
<AbstractText Label="FINDINGS">{findings}</AbstractText><AbstractText Label="IMPRESSION">{impression}</AbstractText>
</Abstract></Article></MedlineCitation><MeSH><major>{mesh}</major></MeSH></eCitation>"""


def test_fetch_from_a_local_archive_then_build_the_cohort(tmp_path):
    archive = tmp_path / "NLMCXR_reports.tgz"
    reports = [("The heart is enlarged.", "Cardiomegaly.", "Cardiomegaly"),
               ("No pleural effusion.", "Normal chest.", "normal"),
               ("", "", "normal")]  # no text: not a patient
    with tarfile.open(archive, "w:gz") as tar:
        for n, (findings, impression, mesh) in enumerate(reports):
            data = XML.format(n=n, findings=findings, impression=impression, mesh=mesh).encode()
            info = tarfile.TarInfo(f"ecgen-radiology/{n}.xml")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    iu = fetch_iu_reports(archive, tmp_path / "cache" / "iu-reports")
    frame = pl.read_parquet(iu / "reports.parquet")
    assert frame["uid"].to_list() == ["CXR0", "CXR1", "CXR2"]
    assert len(list((iu / "ecgen-radiology").glob("*.xml"))) == 3
    cohort_dir = fetch_more_cohort(iu, tmp_path / "cache" / "more-cohort")
    cohort = pl.read_parquet(cohort_dir / "cohort.parquet")
    assert cohort["patient_id"].to_list() == ["CXR0", "CXR1"]
    assert cohort["cardiomegaly"].to_list() == [1, 0] and cohort["normal"].to_list() == [0, 1]
    assert set(cohort["split"]) <= {"train", "val", "test"}
    assert (cohort_dir / "xray-v2-64px-100hz-noise0.1-seed0.npy").is_file()


def test_synthesis_is_deterministic_and_follows_the_labels():
    a = synthesize_xray({"cardiomegaly": 1}, patient_rng("p1"), 32)
    b = synthesize_xray({"cardiomegaly": 1}, patient_rng("p1"), 32)
    np.testing.assert_array_equal(a, b)
    heart_band = (slice(20, 28), slice(4, 28))  # the lower middle of the chest, where the heart widens
    sokolow, brightness = {0: [], 1: []}, {0: [], 1: []}
    for i in range(24):
        for label in (0, 1):
            rng = patient_rng(f"patient-{i}")
            brightness[label].append(synthesize_xray({"cardiomegaly": label}, rng, 32)[heart_band].mean())
            ecg = synthesize_ecg({"cardiomegaly": label}, rng, 100)
            sokolow[label].append(np.abs(ecg[6]).max() + ecg[10].max())  # S in V1 + R in V5
    assert np.mean(brightness[1]) > np.mean(brightness[0]) + 0.02
    assert np.mean(sokolow[1]) > 3.0 > np.mean(sokolow[0])  # LVH voltage criterion (3.5 mV, noisy)


def test_label_noise_flips_at_its_rate():
    rng = np.random.default_rng(0)
    flips = np.mean([appearance_labels({"cardiomegaly": 1}, rng, 0.2)["cardiomegaly"] == 0 for _ in range(2000)])
    assert 0.17 < flips < 0.23
    with pytest.raises(ValueError, match="label_noise"):
        appearance_labels({}, rng, 0.5)


def test_datamodule_batches(toy_cohort):
    datamodule = MoreDataModule(image_size=16, sampling_rate=50, report_encoder="scratch", vocab_size=64, text_max_len=16,
                                batch_size=4, data_dir=str(toy_cohort), missing={"ecg": 0.5})
    datamodule.setup()
    sizes = {name: len(split) for name, split in datamodule.splits.items()}
    assert sum(sizes.values()) == 48 and all(sizes.values())
    batch = next(iter(datamodule.train_dataloader()))
    assert batch["xray"].shape == (4, 1, 16, 16) and batch["ecg"].shape == (4, 12, 500)
    assert batch["report_ids"].shape == (4, 16) and batch["labels"].shape == (4, 4)
    indices = [set(split.tensors["index"].tolist()) for split in datamodule.splits.values()]
    assert not (indices[0] & indices[1]) and not (indices[0] & indices[2])
    all_present = torch.cat([s.tensors["present_ecg"] for s in datamodule.splits.values()])
    assert 0.2 < all_present.float().mean() < 0.8
    assert datamodule.ecg_samples == 500
    prompts = datamodule.prompt_inputs()
    assert prompts["report_ids"].shape == (8, 16)
    cached = cohort_arrays(toy_cohort, 16, 50, 0.1, 0)
    np.testing.assert_array_equal(np.asarray(cached["xray"][datamodule.splits["train"].tensors["index"][0]], dtype=np.float32),
                                  datamodule.splits["train"].tensors["xray"][0, 0].numpy())


@pytest.mark.parametrize("kwargs, text", [
    (dict(report_encoder="bert"), "report_encoder"),
    (dict(missing={"audio": 0.1}), "missing"),
    (dict(max_patients=3), "max_patients"),
])
def test_datamodule_ill_args(kwargs, text):
    with pytest.raises(ValueError, match=text):
        MoreDataModule(**kwargs)


def test_synthesis_draws_the_side_the_report_names():
    left = np.mean([synthesize_xray({"effusion": 1, "effusion_side": 1}, patient_rng(f"s{i}"), 32) for i in range(8)], 0)
    right = np.mean([synthesize_xray({"effusion": 1, "effusion_side": 2}, patient_rng(f"s{i}"), 32) for i in range(8)], 0)
    def asymmetry(image):  # lower chest, image right minus image left
        return image[18:28, 16:].mean() - image[18:28, :16].mean()

    # the patient's left is the image's right half on a PA view
    assert asymmetry(left) > asymmetry(right) + 0.03
