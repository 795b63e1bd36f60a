"""The embedded cohort: markers grow with severity, generation is deterministic and lands in the ADReSS layout."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from recipes.dementia_speech.readers.chat import parse_chat
from recipes.dementia_speech.cohort import CohortSpec, describe_scene, generate_cohort, render_ssml

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs Debian espeak-ng (make system-deps)")


def _markers(severity: float, draws: int = 40) -> dict[str, float]:
    rng = np.random.default_rng(0)
    totals = {"pauses": 0, "fillers": 0, "words": 0, "utterances": 0, "repetitions": 0, "pronouns": 0}
    for _ in range(draws):
        cha = "*PAR:\t" + "\n*PAR:\t".join(describe_scene(severity, rng))
        transcript = parse_chat(cha)
        words = transcript.tokens
        totals["pauses"] += transcript.pause_count
        totals["fillers"] += transcript.filler_count
        totals["words"] += len(words)
        totals["utterances"] += len(transcript.utterances)
        totals["repetitions"] += cha.count("[/]") + cha.count("[//]")
        totals["pronouns"] += sum(w in ("he", "she", "it", "that", "something", "things", "thing") for w in words)
    return {k: v / draws for k, v in totals.items()}


def test_dementia_markers_grow_with_severity():
    healthy, severe = _markers(0.05), _markers(0.9)
    assert severe["pauses"] / severe["words"] > 3 * healthy["pauses"] / healthy["words"]
    assert severe["fillers"] / severe["words"] > 2 * healthy["fillers"] / healthy["words"]
    assert severe["repetitions"] > healthy["repetitions"] + 0.5
    assert severe["utterances"] < healthy["utterances"] - 2  # fewer information units
    assert severe["pronouns"] / severe["words"] > healthy["pronouns"] / healthy["words"]


def test_ssml_turns_pauses_into_breaks_and_speaks_fillers():
    ssml = render_ssml("the boy (...) &uh fell", np.random.default_rng(0))
    assert ssml.startswith("<speak>") and "uh," in ssml and "&" not in ssml
    milliseconds = int(ssml.split('time="')[1].split("ms")[0])
    assert 1600 <= milliseconds <= 3200


def test_small_cohort_is_deterministic_and_in_adress_layout(tmp_path):
    import soundfile as sf

    from recipes.dementia_speech.readers.adress import load_cohort_frame

    spec = CohortSpec(source_train=4, source_test=2, target_train=2, target_test=2, seed=3)
    first = generate_cohort(tmp_path / "a", spec)
    second = generate_cohort(tmp_path / "b", spec)
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(second) for p in second.rglob("*") if p.is_file())
    assert all((first / f).read_bytes() == (second / f).read_bytes() for f in files)

    frame = load_cohort_frame(first)
    assert frame.height == 10
    assert frame.filter(frame["domain"] == 0)["split"].value_counts().sort("split")["count"].to_list() == [2, 4]
    assert frame["label"].null_count() == 0 and frame["transcript_source"].unique().to_list() == ["manual"]
    source = frame.filter(frame["domain"] == 0)["wav_path"][0]
    target = frame.filter(frame["domain"] == 1)["wav_path"][0]
    assert sf.info(source).samplerate == 16_000 and sf.info(target).samplerate == 8_000
    assert (first / "source/train/Full_wave_enhanced_audio/cd").is_dir()
    assert (first / "target/test/test_results.txt").is_file()


@pytest.mark.parametrize("field", ["source_train", "target_test"])
def test_odd_or_tiny_split_sizes_raise(field):
    with pytest.raises(ValueError, match="even int"):
        CohortSpec(**{field: 3})


def test_large_cohort_plan_is_deterministic_balanced_and_its_voices_do_not_carry_the_label():
    from dataclasses import asdict

    from recipes.dementia_speech.cohort import LARGE_COHORT, _plan

    speakers = _plan(LARGE_COHORT)
    assert [asdict(s) for s in speakers] == [asdict(s) for s in _plan(LARGE_COHORT)]
    assert len(speakers) >= 400 and len({s.speaker_id for s in speakers}) == len(speakers)
    assert sum(s.label for s in speakers) * 2 == len(speakers)
    assert len({s.voice for s in speakers}) > 150
    dementia = [s for s in speakers if s.label]
    control = [s for s in speakers if not s.label]
    for field in ("pitch", "tract", "gain", "snr_db", "tilt"):  # drawn independently of the label
        a, b = np.array([getattr(s, field) for s in dementia]), np.array([getattr(s, field) for s in control])
        assert abs(a.mean() - b.mean()) < 0.2 * np.concatenate([a, b]).std(), field
    rates = np.array([s.rate for s in dementia]), np.array([s.rate for s in control])
    assert rates[1].mean() - rates[0].mean() > 15  # the planted marker: dementia speakers speak slower


def test_the_telephone_test_split_is_drawn_last_so_its_size_leaves_every_other_split_as_it_was():
    from dataclasses import asdict

    from recipes.dementia_speech.cohort import _plan

    small = _plan(CohortSpec(source_train=8, source_test=4, target_train=4, target_test=4))
    large = _plan(CohortSpec(source_train=8, source_test=4, target_train=4, target_test=10))
    assert [asdict(s) for s in large[: len(small) - 4]] == [asdict(s) for s in small[:-4]]
    assert [(s.domain, s.split) for s in large[len(small) - 4:]] == [("target", "test")] * 10


def test_generation_is_the_same_whatever_the_workers_and_continues_after_an_interruption(tmp_path):
    spec = CohortSpec(source_train=2, source_test=2, target_train=2, target_test=2, seed=5)
    serial = generate_cohort(tmp_path / "serial", spec, workers=1)
    parallel = generate_cohort(tmp_path / "parallel", spec, workers=4)
    files = sorted(p.relative_to(serial) for p in serial.rglob("*") if p.is_file())
    assert files and all((serial / f).read_bytes() == (parallel / f).read_bytes() for f in files)
    wav = next(p for p in files if p.suffix == ".wav")
    (parallel / wav).unlink()  # as if killed before this speaker was written
    before = {f: (parallel / f).stat().st_mtime_ns for f in files if f != wav}
    generate_cohort(tmp_path / "parallel", spec, workers=2)
    assert (parallel / wav).read_bytes() == (serial / wav).read_bytes()
    kept = [f for f in before if f.suffix in (".wav", ".cha") and f.stem != wav.stem]
    assert kept and all((parallel / f).stat().st_mtime_ns == before[f] for f in kept)  # not written again
