"""Speed of the dementia recipe's acoustic markers (eGeMAPS functionals and pause statistics,
:func:`recipes.dementia_speech.acoustic.acoustic_features`) on one thread against ``--workers`` threads, on the first
``--recordings`` recordings of the demo cohort's source training speakers (generated if missing).

The two settings alternate ``--repeats`` times, and the median of the per-pair ratios is reported, so a load change on
a shared machine hits both sides alike; ``equal`` says whether both gave the same rows. The last line printed is one
JSON object: ``seconds_per_recording`` (per setting, median), ``speedup`` and ``equal``.

What it measured (2026-12-02, 2 CPU cores, 32 recordings of about 29 s, 3 repeats): 0.480 s a recording on one
thread, 0.278 on two, a speedup of 1.73 with equal rows. On the large cohort's 1,760 recordings the markers took
549 s (bench/dementia.py's first run, two threads) where 1,600 had taken about 920 s on one.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recordings", type=int, default=32)
    parser.add_argument("--workers", type=int, default=None, help="threads of the parallel side (default: torch's)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    import numpy as np
    import torch

    from recipes.dementia_speech.acoustic import acoustic_features
    from recipes.dementia_speech.audio import load_waveform
    from recipes.dementia_speech.data import DementiaDataModule
    from recipes.dementia_speech.readers.adress import load_cohort_frame

    workers = args.workers or torch.get_num_threads()
    frame = load_cohort_frame(DementiaDataModule(cohort=None).root)  # the demo cohort, generated when missing
    paths = frame.filter(frame["domain"] == 0)["wav_path"].to_list()[: args.recordings]
    waves = [load_waveform(p) for p in paths]
    acoustic_features(waves[:2], workers=1)  # load openSMILE and the VAD outside the timing
    seconds: dict[int, list[float]] = {1: [], workers: []}
    rows: dict[int, np.ndarray] = {}
    for repeat in range(args.repeats):
        for threads in (1, workers) if repeat % 2 == 0 else (workers, 1):
            started = time.perf_counter()
            rows[threads] = acoustic_features(waves, workers=threads)
            seconds[threads].append((time.perf_counter() - started) / len(waves))
            print(f"repeat {repeat} threads {threads}: {seconds[threads][-1]:.3f} s a recording", flush=True)
    summary = {
        "recordings": len(waves), "workers": workers,
        "seconds_per_recording": {str(k): round(statistics.median(v), 4) for k, v in seconds.items()},
        "speedup": round(statistics.median(a / b for a, b in zip(seconds[1], seconds[workers])), 3),
        "equal": bool(np.array_equal(rows[1], rows[workers])),
    }
    print(json.dumps(summary), flush=True)
    return summary


if __name__ == "__main__":
    main()
