"""Masked SDPA attention (``fusion_core.layers.attention.masked_attention``) against a plain
``softmax(q kᵀ/√d) v`` that materialises the ``(B, H, N, N)`` score matrix.

For N in 256, 1024, 4096 (batch 8, width 256, 4 heads, float32, CPU) with a padding key mask (each sample
keeps a random 50–100 % of its keys) it reports:

- ``time_ratio_ref_over_sdpa``: median reference time / median SDPA time over a few repeats in this run;
- ``*_peak_mb``: measured peak of memory allocated by torch inside one call, above what existed before it
  (``torch.profiler`` with ``profile_memory=True``: the running sum of its ``[memory]`` alloc/free events);
- ``score_matrix_mb``: the analytic size of one ``(B, H, N, N)`` float32 score tensor, for comparison;
- ``max_abs_diff`` between the two outputs.

Prints progress lines, then one JSON line. Run: ``.venv/bin/python bench/attention.py``.
"""
from __future__ import annotations

import json
import statistics
import time

import torch
from torch.profiler import ProfilerActivity, profile

from fusion_core.layers.attention import masked_attention

BATCH, DIM, HEADS = 8, 256, 4
SIZES = {256: 7, 1024: 5, 4096: 2}  # N → timed repeats (after one warm-up call)


def reference_attention(q, k, v, key_mask):
    """The textbook form: one full score matrix, masked, softmaxed, applied to v."""
    scores = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)  # (B, H, N, N)
    scores.masked_fill_(~key_mask[:, None, None, :], float("-inf"))
    return torch.softmax(scores, dim=-1) @ v


def sdpa_attention(q, k, v, key_mask):
    return masked_attention(q, k, v, key_mask)[0]


def median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up: first-call allocations and kernel selection
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def peak_allocated_mb(fn) -> tuple[float, list[str]]:
    """Peak of the running sum of torch's CPU alloc/free events during one call, and the aten ops it ran."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted(prof.profiler.kineto_results.events(), key=lambda e: e.start_ns())
    live = peak = 0
    ops = []
    for e in events:
        if e.name() == "[memory]":
            live += e.nbytes()
            peak = max(peak, live)
        elif e.name().startswith("aten::"):
            ops.append(e.name())
    return peak / 2**20, ops


def main() -> None:
    torch.manual_seed(0)
    head_dim = DIM // HEADS
    results = {}
    threads = torch.get_num_threads()
    print(f"torch {torch.__version__}, {threads} threads, batch {BATCH}, dim {DIM}, heads {HEADS}", flush=True)
    for n, repeats in SIZES.items():
        q, k, v = (torch.randn(BATCH, HEADS, n, head_dim) for _ in range(3))  # (B, H, N, d)
        lengths = torch.randint(n // 2, n + 1, (BATCH,))
        key_mask = torch.arange(n)[None, :] < lengths[:, None]  # (B, N), True = real token

        with torch.no_grad():
            diff = (sdpa_attention(q, k, v, key_mask) - reference_attention(q, k, v, key_mask)).abs().max().item()
            sdpa_peak, sdpa_ops = peak_allocated_mb(lambda: sdpa_attention(q, k, v, key_mask))
            ref_peak, _ = peak_allocated_mb(lambda: reference_attention(q, k, v, key_mask))
            sdpa_s = median_seconds(lambda: sdpa_attention(q, k, v, key_mask), repeats)
            ref_s = median_seconds(lambda: reference_attention(q, k, v, key_mask), repeats)
        # The backend SDPA dispatched to, e.g. aten::_scaled_dot_product_flash_attention_for_cpu.
        kernel = next((op for op in sdpa_ops if op.startswith("aten::_scaled_dot_product")), "?")
        score_mb = BATCH * HEADS * n * n * 4 / 2**20
        print(
            f"N={n}: sdpa {sdpa_s * 1e3:.1f} ms ({kernel}), reference {ref_s * 1e3:.1f} ms, "
            f"ratio {ref_s / sdpa_s:.2f}; peak MB sdpa {sdpa_peak:.1f} / reference {ref_peak:.1f} "
            f"(one score matrix: {score_mb:.1f}); max |diff| {diff:.2e}",
            flush=True,
        )
        results[str(n)] = {
            "time_ratio_ref_over_sdpa": round(ref_s / sdpa_s, 3),
            "sdpa_ms": round(sdpa_s * 1e3, 2),
            "ref_ms": round(ref_s * 1e3, 2),
            "sdpa_peak_mb": round(sdpa_peak, 2),
            "ref_peak_mb": round(ref_peak, 2),
            "score_matrix_mb": round(score_mb, 2),
            "max_abs_diff": float(f"{diff:.3e}"),
            "sdpa_kernel": kernel,
            "repeats": repeats,
        }
        del q, k, v
    print(
        json.dumps(
            {
                "batch": BATCH,
                "dim": DIM,
                "heads": HEADS,
                "dtype": "float32",
                "device": "cpu",
                "threads": threads,
                "memory_method": "torch.profiler profile_memory: peak of running alloc/free sum within one call",
                "results": results,
            }
        )
    )


if __name__ == "__main__":
    main()
