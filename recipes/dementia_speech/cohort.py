"""The embedded speech cohort: picture descriptions spoken by espeak-ng, in the ADReSS layout, in two domains.

Real dementia speech (DementiaBank, ADReSS) is licence-restricted, so the recipe ships a generator. Every
speaker describes one kitchen scene of the "Cookie Theft" kind. Dementia speakers get a severity in (0, 1];
the markers reported for Alzheimer's speech (Fraser et al., 2016; Boschi et al., 2017) grow with it: fewer
information units and shorter descriptions, more and longer pauses, fillers, repetitions and revisions,
pronouns and empty words instead of nouns and verbs, utterances trailing off, slower speech. Controls get a
small severity too, so the classes overlap. Age is matched across classes; MMSE falls with severity.

Transcripts are written as CHAT (``*PAR:`` tiers with ``[/]``, ``[//]``, ``&uh``, ``(..)``), spoken by
``espeak-ng`` with SSML breaks for the pauses. So that the acoustic markers — pauses, speech rate — and not the
voice carry the label, every speaker draws, independently of the label, one of 8 accents × 12–15 voice variants
(espeak-ng's formant and Klatt variants), a pitch, a vocal-tract length (the waveform resampled by 0.9–1.1, which
moves pitch and formants together) and a recording channel (gain, background noise at 20–45 dB SNR, a small room's
reverberation for half of them, a spectral tilt). The **source** domain is that 16 kHz audio; the **target** domain
is the same kind of speaker recorded over a telephone: 300–3400 Hz band, 8 kHz sampling, reverberation and
background noise. See ``data_cards/dementia-cohort.md``.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

__all__ = ["CohortSpec", "Speaker", "generate_cohort", "describe_scene", "render_ssml", "telephone_channel",
           "COHORT_VERSION", "ESPEAK", "LARGE_COHORT"]

COHORT_VERSION = 2
ESPEAK = "espeak-ng"
SOURCE_RATE = 16_000
TARGET_RATE = 8_000

# (sentence, information units it conveys). Nouns that a speaker may replace by a pronoun are marked as
# "the boy" etc. in PRONOUNS; verbs that may become empty words are in EMPTY_VERBS.
SCENE = (
    ("the boy is standing on a stool", ("boy", "stool")),
    ("he is taking cookies out of the cookie jar", ("cookie", "jar", "taking")),
    ("the stool is tipping over and he is going to fall", ("stool", "falling")),
    ("the girl is reaching up for a cookie", ("girl", "cookie", "reaching")),
    ("she has her finger to her lips", ("girl", "lips")),
    ("the mother is drying a plate at the sink", ("mother", "plate", "drying", "sink")),
    ("the water is overflowing from the sink onto the floor", ("water", "overflowing", "floor")),
    ("the mother is not paying attention to the water", ("mother", "water", "inattention")),
    ("the window is open and you can see the garden outside", ("window", "garden")),
    ("there are curtains on the window", ("curtains", "window")),
    ("there are two cups and a plate on the counter", ("cups", "plate", "counter")),
    ("the cupboard door is open above the children", ("cupboard", "children")),
)
PRONOUNS = {"the boy": "he", "the girl": "she", "the mother": "she", "the stool": "it", "the cookie jar": "that thing",
            "the water": "it", "the sink": "that", "the window": "that", "a cookie": "something", "cookies": "things",
            "a plate": "something", "the children": "them", "the cupboard door": "the thing"}
EMPTY_VERBS = {"taking": "doing", "reaching up": "doing something", "drying": "doing", "overflowing": "going",
               "standing": "being", "tipping over": "going"}
WRONG_NOUN = {"boy": "girl", "girl": "boy", "mother": "woman", "stool": "chair", "plate": "dish", "sink": "tub",
              "cookies": "candy", "window": "door", "curtains": "drapes", "cups": "bowls"}
# espeak-ng's English accents (``en`` is British; ``en-gb`` silently ignores a variant) and its voice variants
ACCENTS = ("en-us", "en", "en-029", "en-us-nyc", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd")
VOICE_VARIANTS = {
    "male": ("", "+m1", "+m3", "+m4", "+m6", "+Andy", "+benjamin", "+david", "+edward", "+john", "+paul", "+rob",
             "+robert", "+grandpa", "+klatt"),
    "female": ("+f1", "+f2", "+f3", "+f4", "+f5", "+Annie", "+Alicia", "+Andrea", "+linda", "+steph", "+belinda",
               "+aunty"),
}
PAUSE_MS = {"(.)": (150, 450), "(..)": (500, 1500), "(...)": (1600, 3200)}


@dataclass(frozen=True)
class CohortSpec:
    """How many speakers per domain and split, and the seed. ``source_train`` speakers are labelled for
    training, ``source_test`` are the held-out source test set, ``target_train`` are unlabelled adaptation
    data, ``target_test`` the labelled target evaluation set (labels only in its label file)."""

    source_train: int = 72
    source_test: int = 24
    target_train: int = 24
    target_test: int = 24
    seed: int = 0

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if name != "seed" and (not isinstance(value, int) or value < 2 or value % 2):
                raise ValueError(f"{name} must be an even int >= 2 (half controls, half dementia); got {value!r}")


#: the benchmark's cohort: 1,760 speakers — 960 labelled source speakers for 5 speaker folds, 480 source test speakers,
#: 80 unlabelled and 240 labelled telephone speakers (``--data.cohort`` of ``configs/large.yaml``), sized by the goals
#: measured on them. Test: a 15-bin ECE of a perfectly calibrated model is about 0.05 on 160 speakers and 0.035 on 480
#: (``bench/dementia.py``'s ``ece.floor``). Training: the temperature is fit on the folds' pooled validation speakers,
#: every training speaker once; 320 of them put it at 1.20 where the test speakers' own fit was 0.95, 960 at 0.88
#: against 0.91. Telephone test: OT's +3 points of accuracy, in steps of 1.25 points on 80 speakers
LARGE_COHORT = CohortSpec(source_train=960, source_test=480, target_train=80, target_test=240)


@dataclass
class Speaker:
    """One speaker's hidden generation parameters (``speakers.json``). ``rate`` (words per minute) falls with
    severity; ``voice``, ``pitch``, ``tract`` (vocal-tract length factor), ``gain``, ``snr_db``, ``rt60`` (0: no
    room) and ``tilt`` (first-order spectral tilt) are drawn independently of the label."""

    speaker_id: str
    domain: str
    split: str
    label: int
    severity: float
    age: int
    gender: str
    mmse: int
    voice: str
    rate: int
    pitch: int
    tract: float = 1.0
    gain: float = 0.7
    snr_db: float = 60.0
    rt60: float = 0.0
    tilt: float = 0.0


def _severity(rng: np.random.Generator, label: int) -> float:
    return float(0.25 + 0.75 * rng.beta(2.0, 2.0)) if label else float(rng.beta(1.2, 9.0))


def _apply_pronouns(sentence: str, rng: np.random.Generator, p: float) -> str:
    for noun, pronoun in PRONOUNS.items():
        if noun in sentence and rng.random() < p:
            sentence = sentence.replace(noun, pronoun, 1)
    for verb, empty in EMPTY_VERBS.items():
        if verb in sentence and rng.random() < 0.6 * p:
            sentence = sentence.replace(verb, empty, 1)
    return sentence


def describe_scene(severity: float, rng: np.random.Generator) -> list[str]:
    """CHAT ``*PAR:`` utterances (without the tier name) of one picture description at ``severity``."""
    s = float(np.clip(severity, 0.0, 1.0))
    kept = max(3, int(round(len(SCENE) * (1.0 - 0.6 * s) + rng.normal(0, 1.0))))
    order = rng.permutation(len(SCENE))[: min(kept, len(SCENE))]
    if rng.random() > s:  # healthier speakers tend to describe the scene in a coherent order
        order = np.sort(order)
    utterances = []
    for index in order:
        words = _apply_pronouns(SCENE[index][0], rng, 0.7 * s).split()
        if rng.random() < 0.35 * s and len(words) > 4:  # utterance trails off
            words = words[: int(rng.integers(2, len(words) - 1))] + ["+..."]
        out: list[str] = []
        if rng.random() < 0.3 * s:  # revision: a wrong noun, retraced
            for i, w in enumerate(words):
                if w in WRONG_NOUN:
                    words = words[:i] + [WRONG_NOUN[w], "[//]"] + words[i:]
                    break
        if rng.random() < 0.35 * s and len(words) > 2:  # repetition of the opening words
            size = int(rng.integers(1, 3))
            words = ["<" + " ".join(words[:size]) + ">" if size > 1 else words[0], "[/]"] + words
        for i, w in enumerate(words):
            if i > 0 and w not in ("[/]", "[//]", "+..."):
                if rng.random() < 0.03 + 0.12 * s:
                    out.append(str(rng.choice(["&uh", "&um", "&er"])))
                if rng.random() < 0.02 + 0.12 * s:
                    out.append(str(rng.choice(["(.)", "(..)", "(...)"], p=_pause_mix(s))))
            out.append(w)
        if rng.random() < 0.1 + 0.5 * s:
            out.append(str(rng.choice(["(.)", "(..)", "(...)"], p=_pause_mix(s))))
        utterances.append(" ".join(out) + ("" if out[-1] == "+..." else " ."))
    return utterances


def _pause_mix(s: float) -> list[float]:
    long = 0.05 + 0.45 * s
    medium = 0.25 + 0.15 * s
    return [1.0 - long - medium, medium, long]


def render_ssml(text: str, rng: np.random.Generator) -> str:
    """SSML for espeak-ng from cleaned transcript text: pauses become breaks, fillers are spoken."""
    parts = []
    for token in text.split():
        if token in PAUSE_MS:
            low, high = PAUSE_MS[token]
            parts.append(f'<break time="{int(rng.integers(low, high))}ms"/>')
        elif token.startswith("&"):
            parts.append(token[1:] + ",")
        else:
            parts.append(token)
    return "<speak>" + " ".join(parts) + "</speak>"


def _speak(ssml: str, speaker: Speaker) -> tuple[np.ndarray, int]:
    import soundfile as sf

    command = [ESPEAK, "-m", "-v", speaker.voice, "-s", str(speaker.rate), "-p", str(speaker.pitch), "--stdout", ssml]
    result = subprocess.run(command, capture_output=True, check=False)
    if result.returncode != 0 or not result.stdout:
        raise RuntimeError(f"espeak-ng failed for {speaker.speaker_id} (voice {speaker.voice}): "
                           f"{result.stderr.decode(errors='replace').strip()}")
    audio, rate = sf.read(io.BytesIO(result.stdout), dtype="float32")
    return audio, rate


def room_channel(audio: np.ndarray, rate: int, speaker: Speaker, rng: np.random.Generator) -> np.ndarray:
    """The speaker's recording channel: vocal-tract length (resampling by ``tract``), spectral tilt, a small room
    (``rt60`` > 0), background noise at ``snr_db`` and peak level ``gain``."""
    from scipy.signal import fftconvolve, lfilter, resample_poly

    # played back faster or slower at the same rate: pitch and formants × tract, as a shorter or longer vocal tract
    audio = resample_poly(audio, 1000, int(round(1000 * speaker.tract))).astype(np.float64)
    audio = lfilter([1.0, -speaker.tilt], [1.0], audio)  # tilt > 0 brightens, < 0 darkens
    if speaker.rt60 > 0:
        t = np.arange(int(0.3 * rate)) / rate
        response = rng.standard_normal(t.size) * np.exp(-6.9 * t / speaker.rt60) * 0.15
        response[0] = 1.0
        audio = fftconvolve(audio, response)[: audio.size]
    power = float(np.mean(audio**2)) + 1e-12
    audio = audio + rng.standard_normal(audio.size) * np.sqrt(power / 10 ** (speaker.snr_db / 10))
    return (speaker.gain * audio / (np.abs(audio).max() + 1e-9)).astype(np.float32)


def telephone_channel(audio: np.ndarray, rate: int, rng: np.random.Generator) -> np.ndarray:
    """``audio`` at ``rate`` → the target domain at 8 kHz: reverberation, 300–3400 Hz band, noise at 8–20 dB SNR."""
    from scipy.signal import butter, fftconvolve, resample_poly, sosfilt

    rt60 = rng.uniform(0.3, 0.7)
    length = int(0.4 * rate)
    t = np.arange(length) / rate
    response = rng.standard_normal(length) * np.exp(-6.9 * t / rt60)
    response[0] = 1.0 / 0.3
    response *= 0.3
    wet = fftconvolve(audio, response)[: len(audio)]
    narrow = resample_poly(wet, TARGET_RATE, rate) if rate != TARGET_RATE else wet
    band = sosfilt(butter(4, [300, 3400], btype="bandpass", fs=TARGET_RATE, output="sos"), narrow)
    snr_db = rng.uniform(8.0, 20.0)
    signal_power = float(np.mean(band**2)) + 1e-12
    noise = rng.standard_normal(len(band)) * np.sqrt(signal_power / 10 ** (snr_db / 10))
    out = band + noise
    return (0.8 * out / (np.abs(out).max() + 1e-9)).astype(np.float32)


def _cha_text(speaker: Speaker, utterances: list[str]) -> str:
    role = "ProbableAD" if speaker.label else "Control"
    lines = [
        "@UTF8", "@Begin", "@Languages:\teng", "@Participants:\tPAR Participant, INV Investigator",
        f"@ID:\teng|Cohort|PAR|{speaker.age};|{speaker.gender}|{role}||Participant|{speaker.mmse}||",
        "@ID:\teng|Cohort|INV|||||Investigator|||", f"@Media:\t{speaker.speaker_id}, audio",
        "*INV:\ttell me everything you see going on in this picture .",
    ]
    lines += [f"*PAR:\t{u}" for u in utterances]
    lines.append("@End")
    return "\n".join(lines) + "\n"


def _plan(spec: CohortSpec) -> list[Speaker]:
    rng = np.random.default_rng(spec.seed)
    speakers = []
    number = 1
    for domain, split, count in (("source", "train", spec.source_train), ("source", "test", spec.source_test),
                                 ("target", "train", spec.target_train), ("target", "test", spec.target_test)):
        labels = np.array([0, 1] * (count // 2))
        rng.shuffle(labels)
        for label in labels.tolist():
            severity = _severity(rng, label)
            gender = "female" if rng.random() < 0.55 else "male"
            voice = str(rng.choice(ACCENTS)) + str(rng.choice(VOICE_VARIANTS[gender]))
            rate = int(np.clip(rng.normal(168 - 45 * severity, 15), 90, 230))
            pitch = int(np.clip(rng.normal(58 if gender == "female" else 40, 12), 5, 95))
            age = int(np.clip(rng.normal(68, 7), 50, 90))
            mmse = int(np.clip(round(29.5 - 22 * severity + rng.normal(0, 1.5)), 0, 30))
            channel = {"tract": round(float(rng.uniform(0.9, 1.1)), 3), "gain": round(float(rng.uniform(0.3, 0.9)), 3),
                       "snr_db": round(float(rng.uniform(20.0, 45.0)), 1),
                       "rt60": round(float(rng.uniform(0.15, 0.5)), 3) if rng.random() < 0.5 else 0.0,
                       "tilt": round(float(rng.uniform(-0.6, 0.6)), 3)}
            speakers.append(Speaker(f"S{number:03d}", domain, split, label, round(severity, 4), age, gender, mmse,
                                    voice, rate, pitch, **channel))
            number += 1
    return speakers


def _speaker_files(root: Path, speaker: Speaker) -> tuple[Path, Path]:
    base = root / speaker.domain / speaker.split
    group = ("cd" if speaker.label else "cc") if speaker.split == "train" else ""
    return (base / "Full_wave_enhanced_audio" / group / f"{speaker.speaker_id}.wav",
            base / "transcription" / group / f"{speaker.speaker_id}.cha")


def _write_speaker(root: Path, speaker: Speaker, seed: int) -> None:
    """Write one speaker's WAV and CHAT files, each atomically; a speaker whose two files exist is skipped, so an
    interrupted generation continues where it stopped."""
    import soundfile as sf
    from scipy.signal import resample_poly

    from recipes.dementia_speech.readers.chat import parse_chat

    wav, cha_path = _speaker_files(root, speaker)
    if wav.is_file() and cha_path.is_file():
        return
    rng = np.random.default_rng([seed, int(speaker.speaker_id[1:])])
    utterances = describe_scene(speaker.severity, rng)
    cha = _cha_text(speaker, utterances)
    text = parse_chat(cha).text
    audio, rate = _speak(render_ssml(text, rng), speaker)
    audio = resample_poly(audio, SOURCE_RATE, rate).astype(np.float32)
    audio = np.concatenate([np.zeros(int(0.3 * SOURCE_RATE), np.float32), audio, np.zeros(int(0.3 * SOURCE_RATE), np.float32)])
    audio = room_channel(audio, SOURCE_RATE, speaker, rng)
    rate = SOURCE_RATE
    if speaker.domain == "target":
        audio, rate = telephone_channel(audio, SOURCE_RATE, rng), TARGET_RATE
    wav.parent.mkdir(parents=True, exist_ok=True)
    cha_path.parent.mkdir(parents=True, exist_ok=True)
    partial = wav.with_name(f".{wav.name}.{os.getpid()}.tmp")
    sf.write(partial, audio, rate, subtype="PCM_16", format="WAV")
    os.replace(partial, wav)
    partial = cha_path.with_name(f".{cha_path.name}.{os.getpid()}.tmp")
    partial.write_text(cha, encoding="utf-8")
    os.replace(partial, cha_path)


def _write_meta(root: Path, speakers: list[Speaker]) -> None:
    for domain in ("source", "target"):
        for split in ("train", "test"):
            group = [s for s in speakers if s.domain == domain and s.split == split]
            base = root / domain / split
            if split == "train":
                for name, label in (("cc", 0), ("cd", 1)):
                    rows = [f"{s.speaker_id} ; {s.age} ; {s.gender} ; {s.mmse}" for s in group if s.label == label]
                    (base / f"{name}_meta_data.txt").write_text("ID ; age ; gender ; mmse\n" + "\n".join(rows) + "\n")
            else:
                rows = [f"{s.speaker_id} ; {s.age} ; {s.gender}" for s in group]
                (base / "meta_data.txt").write_text("ID ; age ; gender\n" + "\n".join(rows) + "\n")
                rows = [f"{s.speaker_id} ; {s.label} ; {s.mmse}" for s in group]
                (base / "test_results.txt").write_text("ID ; Label ; mmse\n" + "\n".join(rows) + "\n")


def generate_cohort(dest: Path, spec: CohortSpec = CohortSpec(), workers: int | None = None) -> Path:
    """Write the cohort into ``dest`` (``source/`` and ``target/``, each in the ADReSS layout, plus
    ``speakers.json`` with every speaker's hidden generation parameters and ``cohort.json``). Deterministic
    for a given ``spec`` whatever ``workers`` (default: one espeak-ng process per CPU core) — every speaker draws
    from its own seeded generator and espeak-ng's output is deterministic. Speakers already written in ``dest`` are
    kept, so an interrupted generation continues. Prints progress."""
    if shutil.which(ESPEAK) is None:
        raise FileNotFoundError(
            f"{ESPEAK} is not installed; install the Debian package (`sudo apt-get install espeak-ng`, or "
            "`make system-deps`) and fetch again"
        )
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    speakers = _plan(spec)
    started = time.perf_counter()
    done = 0
    with ThreadPoolExecutor(max_workers=max(1, workers or os.cpu_count() or 1)) as pool:
        for _ in pool.map(lambda s: _write_speaker(dest, s, spec.seed), speakers):
            done += 1
            if done % 24 == 0 or done == len(speakers):
                print(f"[fusion data] dementia-cohort: {done}/{len(speakers)} speakers "
                      f"({time.perf_counter() - started:.1f} s)", flush=True)
    _write_meta(dest, speakers)
    (dest / "speakers.json").write_text(json.dumps([asdict(s) for s in speakers], indent=1))
    (dest / "cohort.json").write_text(json.dumps({"version": COHORT_VERSION, **asdict(spec)}, indent=2))
    return dest
