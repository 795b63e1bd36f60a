"""The data sets (fetching from a local copy), the synthetic cohort, and the data module's batches."""
from __future__ import annotations

import io
import tarfile

import numpy as np
import polars as pl
import pytest
import torch

from recipes.medical_more.cohort import (
    SYNTHESIS_VERSION,
    appearance_labels,
    cohort_arrays,
    patient_rng,
    synthesize_ecg,
    synthesize_xray,
    template_reports,
)
from recipes.medical_more.data import PROMPTS, PROMPTS_PER_SIDE, MoreDataModule, prompt_texts, report_groups
from recipes.medical_more.labels import FINDINGS, extract_labels
from recipes.medical_more.readers import normalise_intensity
from recipes.medical_more.datasets import fetch_iu_reports, fetch_more_cohort

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
    assert (cohort_dir / f"xray-v{SYNTHESIS_VERSION}-64px-100hz-noise0.1-seed0.npy").is_file()


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


def test_label_noise_drops_stated_findings_and_adds_as_many_unstated_ones():
    rng = np.random.default_rng(0)
    prevalence = {"cardiomegaly": 0.1, "effusion": 0.05, "opacity": 0.5}
    stated = [appearance_labels({"cardiomegaly": 1, "effusion": 1, "opacity": 1}, rng, 0.2, prevalence) for _ in range(4000)]
    unstated = [appearance_labels({}, rng, 0.2, prevalence) for _ in range(20000)]
    for name, p in prevalence.items():
        dropped = np.mean([s[name] == 0 for s in stated])
        added = np.mean([u[name] == 1 for u in unstated])
        assert abs(dropped - 0.2) < 0.02
        # expected drops among the p stated equal expected additions among the 1 - p unstated: the drawn prevalence is p
        assert abs(added - 0.2 * p / (1 - p)) < 0.2 * p / (1 - p) * 0.2 + 0.002
    with pytest.raises(ValueError, match="label_noise"):
        appearance_labels({}, rng, 0.5, prevalence)
    with pytest.raises(ValueError, match="prevalence of effusion"):
        appearance_labels({}, rng, 0.1, {**prevalence, "effusion": 1.5})


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
    # semantic-positive keys: equal exactly when the report describes the same radiograph / ECG
    cohort = datamodule.cohort
    for modality in ("xray", "ecg"):
        keys = report_groups(cohort, modality)
        ids = torch.cat([s.tensors[f"group_{modality}"] for s in datamodule.splits.values()])
        rows = torch.cat([s.tensors["index"] for s in datamodule.splits.values()])
        position = {int(r): i for i, r in enumerate(cohort["index"].to_list())}
        for a in range(0, len(rows), 5):
            for b in range(len(rows)):
                same = keys[position[int(rows[a])]] == keys[position[int(rows[b])]]
                assert same == bool(ids[a] == ids[b])
    assert batch["group_xray"].shape == (4,) and batch["group_ecg"].dtype == torch.int64
    with pytest.raises(ValueError, match="modality must be"):
        report_groups(cohort, "report")
    prompts = datamodule.prompt_inputs()
    assert prompts["report_ids"].shape == (len(FINDINGS) * 2 * PROMPTS_PER_SIDE, 16)
    cached = cohort_arrays(toy_cohort, 16, 50, 0.1, 0)
    # the training radiographs get the readers' percentile scaling, as every scored file does
    raw = np.asarray(cached["xray"][datamodule.splits["train"].tensors["index"][0]], dtype=np.float32)
    np.testing.assert_array_equal(normalise_intensity(raw), datamodule.splits["train"].tensors["xray"][0, 0].numpy())
    # the finding-level keys: equal exactly when the three disease labels are
    train = datamodule.splits["train"].tensors
    disease = train["labels"][:, :3]
    same_key = train["group_finding"][:, None] == train["group_finding"][None, :]
    assert torch.equal(same_key, (disease[:, None, :] == disease[None, :, :]).all(-1))


def test_prompts_are_an_ensemble_per_finding_and_side():
    texts = prompt_texts()
    assert len(texts) == len(FINDINGS) * 2 * PROMPTS_PER_SIDE and len(set(texts)) >= len(texts) - 4
    for f, finding in enumerate(FINDINGS):
        block = texts[f * 2 * PROMPTS_PER_SIDE:(f + 1) * 2 * PROMPTS_PER_SIDE]
        assert block[:PROMPTS_PER_SIDE] == list(PROMPTS[finding]["present"])
        assert block[PROMPTS_PER_SIDE:] == list(PROMPTS[finding]["absent"])
    for finding in FINDINGS[:3]:  # every present prompt names the finding; no absent prompt affirms it
        assert all(extract_labels(t)[finding] for t in PROMPTS[finding]["present"]), finding
        assert not any(extract_labels(t)[finding] for t in PROMPTS[finding]["absent"]), finding


def test_template_reports_build_a_cohort_without_a_download(tmp_path, monkeypatch):
    monkeypatch.setenv("FUSION_DATA_DIR", str(tmp_path))
    reports = template_reports(30, seed=1)
    assert reports.height == 30 and reports["uid"].n_unique() == 30
    assert reports.equals(template_reports(30, seed=1))
    datamodule = MoreDataModule(image_size=16, sampling_rate=50, report_encoder="scratch", template_reports=30, batch_size=4)
    datamodule.prepare_data()
    datamodule.setup()
    assert datamodule.folder == tmp_path / "more-cohort-templates-30"
    assert sum(len(datamodule.dataset(s)) for s in ("train", "val", "test")) == 30
    cohort = datamodule.cohort
    # the labels read back from the written text are the ones the templates drew
    enlarged = cohort["text"].str.contains("heart is enlarged")
    assert (cohort["cardiomegaly"] == enlarged.cast(pl.Int8)).all()
    assert (cohort["normal"] == 1).sum() == (~cohort["text"].str.contains("enlarged|Small left|Patchy")).sum()


@pytest.mark.parametrize("kwargs, text", [
    (dict(report_encoder="bert"), "report_encoder"),
    (dict(missing={"audio": 0.1}), "missing"),
    (dict(max_patients=3), "max_patients"),
    (dict(template_reports=2), "template_reports"),
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


def _mean_xray(labels: dict, size: int = 64, n: int = 8) -> np.ndarray:
    return np.mean([synthesize_xray(labels, patient_rng(f"d{i}"), size) for i in range(n)], 0)


def test_synthesis_draws_the_report_details():
    plain = _mean_xray({})
    # a pacemaker generator sits in the left upper chest: the image's upper right
    upper_right = (slice(8, 12), slice(47, 53))
    assert _mean_xray({"pacemaker": 1})[upper_right].mean() > plain[upper_right].mean() + 0.3
    # hyperinflated lungs are taller and darker: the lower lung fields get darker, low volumes brighter
    lower_lungs = (slice(40, 48), slice(10, 24))
    assert _mean_xray({"hyperinflation": 1})[lower_lungs].mean() < plain[lower_lungs].mean() - 0.05
    assert _mean_xray({"low_volumes": 1})[lower_lungs].mean() > plain[lower_lungs].mean() + 0.1
    # sternal wires brighten the midline above the heart
    midline = (slice(16, 34), slice(30, 34))
    assert _mean_xray({"sternotomy": 1})[midline].max() > plain[midline].max() + 0.1
    # every detail changes the image of the same patient
    from recipes.medical_more.labels import ATTRIBUTES

    for name in ATTRIBUTES:
        if name.endswith("_side") or name == "severity":
            continue
        drawn = synthesize_xray({name: 1}, patient_rng("p0"), 64)
        changed = np.abs(drawn - synthesize_xray({}, patient_rng("p0"), 64)).max()
        assert changed > 0.1, name


def test_ecg_shows_pacing_and_copd():
    rate = 250
    for i in range(6):
        paced = synthesize_ecg({"pacemaker": 1}, patient_rng(f"e{i}"), rate)
        sinus = synthesize_ecg({}, patient_rng(f"e{i}"), rate)
        # pacing spikes: sample-to-sample jumps far steeper than any sinus wave, in every lead
        assert np.abs(np.diff(paced, axis=1)).max(axis=1).min() > 0.8 > np.abs(np.diff(sinus, axis=1)).max()
    # P pulmonale: the P wave in lead II of a COPD patient is about 0.25 mV or more (normal about 0.12)
    copd, normal = synthesize_ecg({"hyperinflation": 1}, patient_rng("c"), rate), synthesize_ecg({}, patient_rng("c"), rate)

    def p_amplitude(ecg: np.ndarray) -> float:  # lead II, the peak 0.12-0.22 s before each R peak
        lead = ecg[1]
        peaks = [i for i in range(rate, len(lead) - rate) if lead[i] == lead[i - 30:i + 30].max() and lead[i] > 0.4]
        return float(np.median([lead[p - int(0.22 * rate):p - int(0.12 * rate)].max() - np.median(lead) for p in peaks]))

    assert p_amplitude(copd) > 0.2 > p_amplitude(normal)
