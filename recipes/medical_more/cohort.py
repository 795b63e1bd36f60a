"""The synthetic half of the MoRE cohort: a chest radiograph and a 12-lead ECG per real report, following its labels.

Each patient gets a deterministic generator seeded from the patient id, so the cohort is the same on every
machine. What a finding looks like:

- **X-ray** (``synthesize_xray``): a PA view in radiograph polarity (dense tissue bright, air dark): thorax, two
  lungs with rib shadows, spine, a heart whose cardiothoracic ratio is about 0.43 (normal) or 0.56-0.63
  (cardiomegaly, by severity), blunted costophrenic angles with a meniscus of fluid (effusion) and patchy blobs
  (opacity) on the side the report names, and the report's other details (:data:`labels.ATTRIBUTES`): a
  calcified granuloma or a soft nodule, a scoliotic or degenerative (osteophytes) spine, a central line, a
  pacemaker with its lead, sternal wires, surgical clips, hyperinflated (tall, lucent) or low-volume lungs,
  plate-like atelectasis, perihilar edema, apical scarring, a calcified aortic knob, a hiatal hernia's gas
  bubble, a borderline heart (ratio about 0.5), a healed rib fracture. Patients differ in size, position,
  rotation, exposure and noise.
- **ECG** (``synthesize_ecg``): 10 s, 12 leads in standard order, a sum of Gaussian P/Q/R/S/T waves per beat
  (McSharry et al., 2003, "A dynamical model for generating synthetic electrocardiogram signals", in closed
  form) with lead-specific amplitudes. Cardiomegaly → left-ventricular hypertrophy voltage (tall R in V5/V6,
  deep S in V1/V2, Sokolow–Lyon > 3.5 mV) and often lateral T inversion (strain); effusion → low voltage;
  opacity (pneumonia) → sinus tachycardia; edema → a faster rate; hyperinflation (COPD) → P pulmonale, right
  axis and low limb-lead voltage; sternotomy → often an old anterior infarct (Q waves in V1-V3); pacemaker →
  a paced rhythm (fixed rate, spikes, wide QRS with discordant T, no P). Heart rate, axis, baseline wander and
  noise vary.

``label_noise`` is the report's error rate on each disease finding, both ways and in equal numbers: a finding the
report states is left undrawn with probability ``label_noise``, and as many findings the report does not state are
drawn (each unstated finding with probability ``label_noise · p / (1 − p)``, ``p`` the finding's prevalence in the
cohort's reports), so the labels read from a report are not perfectly recoverable from the images and signals (as
with real, imperfect report labels) while the synthesised prevalence is the reported one. (Up to version 3 every
label flipped with probability ``label_noise``: with effusion in 5 % of the reports, two thirds of the drawn
effusions were ones the report did not mention, far from how a radiologist's report relates to the film.)
:func:`cohort_arrays` draws every patient of a cohort once per setting and caches the arrays.

``template_reports`` writes reports from a few templates instead of reading the IU collection: a cohort that needs no
download, for tests and offline trials (``MoreDataModule(template_reports=N)``).
"""
from __future__ import annotations

import zlib
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import polars as pl

from recipes.medical_more.labels import ATTRIBUTES
from recipes.runtime.files import atomic_save
from recipes.runtime.datasets import progress

__all__ = ["LEADS", "ECG_DETAILS", "patient_rng", "synthesize_xray", "synthesize_ecg", "appearance_labels", "ECG_SECONDS",
           "cohort_arrays", "template_reports", "SYNTHESIS_VERSION"]

LEADS: tuple[str, ...] = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
ECG_SECONDS = 10.0
# the report details (besides the three disease findings) that change the synthesised ECG; the radiograph shows all
ECG_DETAILS: tuple[str, ...] = ("severity", "pacemaker", "hyperinflation", "sternotomy", "edema")

# normal amplitudes (mV) per lead in LEADS order, for the P, Q, R, S and T waves
_P = np.array([0.08, 0.12, 0.05, -0.1, 0.03, 0.08, 0.06, 0.08, 0.08, 0.08, 0.08, 0.08])
_Q = np.array([-0.05, -0.08, -0.04, 0.0, -0.05, -0.05, 0.0, 0.0, -0.02, -0.05, -0.08, -0.08])
_R = np.array([0.6, 1.0, 0.45, 0.1, 0.35, 0.6, 0.3, 0.6, 0.9, 1.3, 1.2, 0.9])
_S = np.array([-0.15, -0.2, -0.15, -0.8, -0.15, -0.15, -0.9, -1.2, -0.7, -0.4, -0.2, -0.1])
_T = np.array([0.2, 0.3, 0.1, -0.25, 0.1, 0.2, 0.05, 0.35, 0.35, 0.3, 0.25, 0.2])
# wave timing relative to the R peak (s) and widths (s)
_OFFSETS = {"P": -0.17, "Q": -0.03, "R": 0.0, "S": 0.03, "T": 0.27}
_WIDTHS = {"P": 0.025, "Q": 0.01, "R": 0.012, "S": 0.012, "T": 0.05}
_V1, _V2, _V5, _V6 = 6, 7, 10, 11
_LATERAL = [0, 4, 10, 11]  # I, aVL, V5, V6
_SIDE_TO_X = {1: [1.0], 2: [-1.0], 3: [-1.0, 1.0]}  # report side → image half(s)
SYNTHESIS_VERSION = 4  # part of the cached arrays' names: bump when the synthesiser changes
# the sentences of template_reports: (finding present, finding absent)
_TEMPLATES = {
    "cardiomegaly": ("The heart is enlarged.", "Heart size is normal."),
    "effusion": ("Small left pleural effusion.", "No pleural effusion."),
    "opacity": ("Patchy right basilar opacity.", "No focal consolidation."),
}


def patient_rng(patient_id: str, seed: int = 0) -> np.random.Generator:
    """The patient's own generator: the same draws for the same id and seed on every machine."""
    return np.random.default_rng([zlib.crc32(patient_id.encode()), seed])


def appearance_labels(labels: Mapping[str, int], rng: np.random.Generator, label_noise: float,
                      prevalence: Mapping[str, float]) -> dict[str, int]:
    """The disease labels the synthesised data follow: a stated finding is dropped with probability ``label_noise``;
    an unstated one is drawn with probability ``label_noise · p / (1 − p)`` (``p = prevalence[finding]``, the share
    of reports stating it; at most ``label_noise``), so as many findings are added as dropped on average."""
    if not 0.0 <= label_noise < 0.5:
        raise ValueError(f"label_noise must be in [0, 0.5); got {label_noise}")
    out = {}
    for name in ("cardiomegaly", "effusion", "opacity"):
        value = int(labels.get(name, 0))
        p = float(prevalence[name])
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"prevalence of {name} must be in [0, 1]; got {p}")
        added = label_noise * min(1.0, p / (1.0 - p)) if p < 1.0 else label_noise
        out[name] = 1 - value if rng.random() < (label_noise if value else added) else value
    return out


def _blob(x: np.ndarray, y: np.ndarray, cx: float, cy: float, radius: float) -> np.ndarray:
    return np.exp(-(((x - cx) ** 2 + (y - cy) ** 2) / (2 * radius**2)))


def _sides(code: int, rng: np.random.Generator) -> list[float]:
    """Image halves for a report side code (1 left, 2 right, 3 both; 0 unknown → one or both at random)."""
    return _SIDE_TO_X.get(int(code or 0)) or [[-1.0], [1.0], [-1.0, 1.0]][rng.integers(3)]


def synthesize_xray(labels: Mapping[str, int], rng: np.random.Generator, size: int = 64) -> np.ndarray:
    """A ``(size, size)`` float32 radiograph in ``[0, 1]`` (bright = dense) showing ``labels`` (findings and the
    details of :data:`recipes.medical_more.labels.ATTRIBUTES`)."""
    lin = np.linspace(-1.0, 1.0, size, dtype=np.float32)
    yy, xx = np.meshgrid(lin, lin, indexing="ij")  # y grows downwards; image right is the patient's left (PA view)
    angle = rng.normal(0.0, 0.05)
    shift_x, shift_y = rng.normal(0.0, 0.04, size=2)
    x = np.cos(angle) * (xx - shift_x) - np.sin(angle) * (yy - shift_y)
    y = np.sin(angle) * (xx - shift_x) + np.cos(angle) * (yy - shift_y)
    scale = rng.uniform(0.88, 1.05)
    x, y = x / scale, y / scale
    severe = bool(labels.get("severity"))

    image = 0.08 + np.zeros_like(x)
    thorax = ((x / 0.9) ** 2 + ((y - 0.05) / 1.0) ** 2) < 1.0
    image = np.where(thorax, 0.55, image)
    lung_w, lung_h = rng.uniform(0.3, 0.36), rng.uniform(0.6, 0.72)
    lung_cy, lung_value = 0.0, 0.18
    if labels.get("hyperinflation"):  # tall, lucent lungs over flattened, low diaphragms
        lung_h, lung_cy, lung_value = lung_h * 1.18, 0.08, 0.1
    elif labels.get("low_volumes"):  # short lungs, high diaphragms
        lung_h, lung_cy = lung_h * 0.78, -0.1
    ribs = 0.06 * (np.sin(y * rng.uniform(18, 22) + rng.uniform(0, np.pi)) > 0.6)
    lungs = np.zeros_like(x, dtype=bool)
    for side in (-1.0, 1.0):
        cx = side * 0.4
        lungs |= (((x - cx) / lung_w) ** 2 + ((y - lung_cy) / lung_h) ** 2) < 1.0
    image = np.where(lungs, lung_value + ribs, image)
    curve = rng.uniform(0.08, 0.14) * np.sin(np.pi * (y + 1.0) / 2.0) if labels.get("scoliosis") else 0.0
    spine = (np.abs(x - curve) < 0.06) & thorax
    image = np.where(spine, 0.75, image)  # spine and mediastinum
    if labels.get("degenerative"):  # osteophytes: bright spurs at the vertebral margins, every vertebra
        spurs = (np.abs(np.abs(x - curve) - 0.075) < 0.025) & (np.sin(y * 21.0) > 0.75) & thorax
        image = np.where(spurs, 0.92, np.where(spine, 0.85, image))

    thorax_width = 1.8
    ctr = rng.normal(0.43, 0.03)
    if labels.get("cardiomegaly"):
        ctr = rng.normal(0.63, 0.03) if severe else rng.normal(0.56, 0.03)
    elif labels.get("borderline_heart"):
        ctr = rng.normal(0.5, 0.015)
    if labels.get("hyperinflation"):
        ctr *= 0.9  # a narrow, vertical heart
    heart_w = ctr * thorax_width / 2.0
    heart_cx, heart_cy = 0.1 * heart_w / 0.4, 0.38 + (0.08 if labels.get("hyperinflation") else 0.0)
    heart_h = rng.uniform(0.26, 0.32)
    heart = (((x - heart_cx) / heart_w) ** 2 + ((y - heart_cy) / heart_h) ** 2) < 1.0
    image = np.where(heart, 0.72, image)
    if labels.get("aorta"):  # a prominent, calcified aortic knob to the patient's left of the upper mediastinum
        knob = ((x - 0.16) ** 2 + (y + 0.42) ** 2) < 0.1**2
        rim = np.abs(np.sqrt((x - 0.16) ** 2 + (y + 0.42) ** 2) - 0.1) < 0.02
        image = np.where(rim & (y < -0.42), 0.97, np.where(knob, 0.8, image))
    if labels.get("hernia"):  # a hiatal hernia: a retrocardiac gas bubble with an air-fluid level
        bubble = ((x - 0.05) ** 2 + (y - heart_cy - 0.05) ** 2) < 0.1**2
        image = np.where(bubble, np.where(y < heart_cy + 0.05, 0.3, 0.6), image)

    if labels.get("effusion"):
        level = lung_cy + lung_h - (rng.uniform(0.35, 0.5) if severe else rng.uniform(0.15, 0.3))
        for side in _sides(labels.get("effusion_side", 0), rng):
            cx = side * 0.4
            # a meniscus: the fluid line rises towards the lateral chest wall
            fluid_line = level - 0.25 * np.clip(side * (x - cx), 0, None) / lung_w
            fluid = lungs & (np.sign(x) == side) & (y > fluid_line)
            image = np.where(fluid, 0.62, image)
    if labels.get("atelectasis"):  # plate-like (discoid) atelectasis: a thin horizontal band above the base
        for side in _sides(labels.get("atelectasis_side", 0), rng):
            band_y = lung_cy + lung_h * rng.uniform(0.45, 0.65)
            band = lungs & (np.sign(x) == side) & (np.abs(y - band_y - 0.15 * (x - side * 0.4)) < 0.03)
            image = np.where(band, image + 0.3, image)
    if labels.get("edema"):  # perihilar haze, both sides
        haze = _blob(x, y, -0.28, lung_cy, 0.22) + _blob(x, y, 0.28, lung_cy, 0.22)
        image = image + (0.3 if severe else 0.2) * haze * lungs
    if labels.get("scarring"):  # apical scarring: thin oblique streaks in the upper lungs
        side = rng.choice([-1.0, 1.0])
        for _ in range(3):
            y0 = lung_cy - lung_h * rng.uniform(0.45, 0.75)
            streak = lungs & (np.abs(y - y0 - rng.uniform(-0.4, 0.4) * (x - side * 0.4)) < 0.015) & (np.sign(x) == side)
            image = np.where(streak, image + 0.25, image)
    if labels.get("opacity"):
        sides = _SIDE_TO_X.get(int(labels.get("opacity_side", 0) or 0))
        for _ in range(int(rng.integers(2, 5) if severe else rng.integers(1, 3))):
            side = rng.choice(sides) if sides else rng.choice([-1.0, 1.0])
            cx, cy = side * 0.4 + rng.normal(0, 0.08), rng.uniform(-0.4, 0.45)
            radius = rng.uniform(0.15, 0.25) if severe else rng.uniform(0.08, 0.16)
            image = image + 0.35 * _blob(x, y, cx, cy, radius) * lungs
    if labels.get("nodule"):  # a soft-tissue nodule: a small, round, moderately dense spot inside a lung field
        # (added density, so it shows over a rib or the heart too; it used to be max(image, 0.55), invisible there)
        side = rng.choice([-1.0, 1.0])
        cx, cy = side * 0.4 + rng.uniform(-0.5, 0.5) * lung_w, lung_cy + rng.uniform(-0.6, 0.4) * lung_h
        image = np.where(((x - cx) ** 2 + (y - cy) ** 2) < 0.075**2, image + 0.3, image)
    if labels.get("granuloma"):  # a small calcified nodule: a bright dot in one lung
        cx, cy = rng.choice([-1.0, 1.0]) * rng.uniform(0.25, 0.55), rng.uniform(-0.5, 0.2)
        image = np.where(((x - cx) ** 2 + (y - cy) ** 2) < 0.045**2, 0.9, image)
    if labels.get("fracture"):  # a healed rib fracture: a bright callus on a lateral rib
        cx, cy = rng.choice([-1.0, 1.0]) * 0.72, rng.uniform(-0.4, 0.4)
        image = np.where((((x - cx) / 0.06) ** 2 + ((y - cy) / 0.035) ** 2) < 1.0, 0.88, image)

    if labels.get("device"):  # a central line from the right shoulder towards the heart
        t = np.clip((y + 0.75) / 0.9, 0.0, 1.0)
        path_x = -0.55 + 0.55 * t
        image = np.where((np.abs(x - path_x) < 0.018) & (y > -0.75) & (y < 0.15), 0.95, image)
    if labels.get("pacemaker"):  # a generator in the left upper chest with a lead curving into the heart
        box = (np.abs(x - 0.58) < 0.11) & (np.abs(y + 0.68) < 0.07)
        t = np.clip((x - 0.05) / 0.5, 0.0, 1.0)
        lead = (np.abs(y - (0.35 - 1.0 * t**1.5)) < 0.02) & (x > 0.05) & (x < 0.55)
        image = np.where(box | lead, 0.98, image)
    if labels.get("sternotomy"):  # sternal wires: a column of bright loops down the midline
        for wire_y in np.linspace(-0.55, 0.15, 5):
            loop = np.abs(np.sqrt((x / 0.05) ** 2 + ((y - wire_y) / 0.03) ** 2) - 1.0) < 0.35
            image = np.where(loop, 1.0, image)
    if labels.get("clips"):  # surgical clips: short bright dashes in the right upper abdomen
        for _ in range(3):  # at least a pixel thick at 64 px (a 0.024-thick dash vanished in one image in eight)
            cx, cy = -0.35 + rng.normal(0, 0.06), 0.82 + rng.normal(0, 0.04)
            image = np.where((np.abs(x - cx) < 0.05) & (np.abs(y - cy) < 0.02), 1.0, image)

    contrast, brightness = rng.uniform(0.85, 1.15), rng.normal(0.0, 0.04)
    image = (image - 0.4) * contrast + 0.4 + brightness
    image = image + rng.normal(0.0, rng.uniform(0.01, 0.04), size=image.shape)
    return np.clip(image, 0.0, 1.0).astype(np.float32)


def synthesize_ecg(labels: Mapping[str, int], rng: np.random.Generator, sampling_rate: int = 100) -> np.ndarray:
    """A ``(12, 10·sampling_rate)`` float32 ECG in mV, leads in :data:`LEADS` order, showing ``labels``."""
    if sampling_rate < 50:
        raise ValueError(f"sampling_rate must be >= 50 Hz to draw QRS complexes; got {sampling_rate}")
    samples = int(round(ECG_SECONDS * sampling_rate))
    t = np.arange(samples, dtype=np.float64) / sampling_rate
    paced = bool(labels.get("pacemaker"))
    heart_rate = rng.uniform(55, 90) + (rng.uniform(25, 40) if labels.get("opacity") else 0.0)
    if labels.get("edema"):
        heart_rate += rng.uniform(10, 20)
    if paced:
        heart_rate = rng.choice([60.0, 70.0])  # a fixed pacing rate
    rr = 60.0 / heart_rate
    gain = rng.lognormal(0.0, 0.12, size=12) * rng.uniform(0.85, 1.15)
    amplitudes = {"P": _P.copy(), "Q": _Q.copy(), "R": _R.copy(), "S": _S.copy(), "T": _T.copy()}
    widths = dict(_WIDTHS)
    if labels.get("cardiomegaly"):
        boost = rng.uniform(1.8, 2.4) * (1.2 if labels.get("severity") else 1.0)
        amplitudes["R"][[_V5, _V6]] *= boost
        amplitudes["S"][[_V1, _V2]] *= boost
        amplitudes["R"][[0, 4]] *= 1.4
        if rng.random() < 0.7:  # strain pattern
            amplitudes["T"][_LATERAL] = -np.abs(amplitudes["T"][_LATERAL]) * rng.uniform(0.8, 1.5)
    if labels.get("hyperinflation"):
        # COPD: P pulmonale (tall P in II, III, aVF), right axis (small R, deep S in I), low limb-lead voltage
        amplitudes["P"][[1, 2, 5]] = rng.uniform(0.25, 0.32)
        amplitudes["R"][0] *= 0.3
        amplitudes["S"][0] = -rng.uniform(0.3, 0.5)
        for wave in ("Q", "R", "S", "T"):
            amplitudes[wave][:6] *= 0.6
    if labels.get("sternotomy") and rng.random() < 0.7:
        # after bypass surgery: an old anterior infarct, pathological Q waves and poor R waves in V1-V3
        amplitudes["Q"][[6, 7, 8]] = -rng.uniform(0.3, 0.5)
        amplitudes["R"][[6, 7, 8]] *= 0.25
    if labels.get("effusion"):
        for wave in amplitudes:
            amplitudes[wave] *= rng.uniform(0.45, 0.65)
    if paced:  # ventricular pacing: no P wave, a wide QRS with discordant T (left-bundle-branch-like)
        amplitudes["P"][:] = 0.0
        widths.update(R=0.035, S=0.035)
        amplitudes["T"] = -np.sign(amplitudes["R"] + amplitudes["S"]) * np.abs(amplitudes["T"]) * 1.5
    beats = np.arange(rng.uniform(0.0, rr), ECG_SECONDS + 0.5, rr) + rng.normal(0.0, 0.015, size=1)
    if not paced:
        beats = beats + np.cumsum(rng.normal(0.0, 0.01, size=beats.shape))  # heart-rate variability
    signal = np.zeros((12, samples))
    t_scale = np.sqrt(rr / 0.85)  # QT and T widen at slower rates (Bazett)
    for wave, amp in amplitudes.items():
        offset = _OFFSETS[wave] * (t_scale if wave == "T" else 1.0)
        width = widths[wave] * (t_scale if wave == "T" else 1.0)
        centres = beats + offset  # (beats,)
        shape = np.exp(-((t[None, :] - centres[:, None]) ** 2) / (2 * width**2)).sum(0)  # (T,)
        signal += (amp * gain)[:, None] * shape[None, :]
    if paced:  # the pacing spike: one sample-wide deflection just before each QRS, in every lead
        spikes = np.round((beats - 0.05) * sampling_rate).astype(int)
        spikes = spikes[(spikes >= 0) & (spikes < samples)]
        signal[:, spikes] += rng.uniform(1.0, 1.5) * np.sign(rng.normal(size=(12, 1)))
    wander = rng.uniform(0.02, 0.1) * np.sin(2 * np.pi * rng.uniform(0.1, 0.4) * t + rng.uniform(0, 2 * np.pi))
    signal += wander[None, :] + rng.normal(0.0, rng.uniform(0.01, 0.03), size=signal.shape)
    return signal.astype(np.float32)


def cohort_arrays(folder: Path, image_size: int = 64, sampling_rate: int = 100, label_noise: float = 0.1,
                  seed: int = 0) -> dict[str, np.ndarray]:
    """The synthetic modalities of the cohort in ``folder/cohort.parquet``, generated once per setting and cached in
    ``folder``: ``xray (P, S, S)`` float16 in [0, 1], ``ecg (P, 12, 10·rate)`` float16 mV, ``shown (P, 3)`` int8: the
    labels the synthesis followed (cardiomegaly, effusion, opacity; a stated finding is dropped at rate
    ``label_noise`` and as many unstated ones are added: :func:`appearance_labels`, with the prevalence of the whole
    cohort, whatever subset a data module later takes)."""
    folder = Path(folder)
    key = f"v{SYNTHESIS_VERSION}-{image_size}px-{sampling_rate}hz-noise{label_noise:g}-seed{seed}"
    files = {name: folder / f"{name}-{key}.npy" for name in ("xray", "ecg", "shown")}
    if all(f.is_file() for f in files.values()):
        return {name: np.load(f, mmap_mode="r") for name, f in files.items()}
    cohort = pl.read_parquet(folder / "cohort.parquet")
    size = cohort.height
    samples = int(round(ECG_SECONDS * sampling_rate))
    xray = np.zeros((size, image_size, image_size), dtype=np.float16)
    ecg = np.zeros((size, 12, samples), dtype=np.float16)
    shown = np.zeros((size, 3), dtype=np.int8)
    prevalence = {name: float(cohort[name].fill_null(0).mean()) for name in ("cardiomegaly", "effusion", "opacity")}
    progress(f"more-cohort: synthesising {size:,} radiographs ({image_size}px) and ECGs ({sampling_rate} Hz)")
    for row, record in enumerate(cohort.iter_rows(named=True)):
        rng = patient_rng(record["patient_id"], seed)
        labels = {**{a: record.get(a) or 0 for a in ATTRIBUTES}, **appearance_labels(record, rng, label_noise, prevalence)}
        shown[row] = [labels["cardiomegaly"], labels["effusion"], labels["opacity"]]
        xray[row] = synthesize_xray(labels, rng, image_size)
        ecg[row] = synthesize_ecg(labels, rng, sampling_rate)
    for name, array in (("xray", xray), ("ecg", ecg), ("shown", shown)):
        atomic_save(array, files[name])
    return {"xray": xray, "ecg": ecg, "shown": shown}


def template_reports(count: int, seed: int = 0) -> pl.DataFrame:
    """``count`` reports written from templates, each disease finding present with probability 0.4, in the schema of
    the ``iu-reports`` data set (``uid`` ``TPL0000``…): a cohort source that needs no download."""
    if count < 1:
        raise ValueError(f"count must be >= 1; got {count}")
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(count):
        findings = {name: bool(rng.random() < 0.4) for name in _TEMPLATES}
        sentences = " ".join(_TEMPLATES[name][0 if on else 1] for name, on in findings.items())
        impression = "Abnormal chest." if any(findings.values()) else "No acute disease."
        rows.append({"uid": f"TPL{i:04d}", "comparison": "", "indication": "cough", "findings": sentences,
                     "impression": impression, "mesh": [] if any(findings.values()) else ["normal"],
                     "text": f"FINDINGS: {sentences} IMPRESSION: {impression}"})
    return pl.DataFrame(rows, schema={"uid": pl.Utf8, "comparison": pl.Utf8, "indication": pl.Utf8, "findings": pl.Utf8,
                                      "impression": pl.Utf8, "mesh": pl.List(pl.Utf8), "text": pl.Utf8})
