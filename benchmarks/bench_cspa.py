"""CSPA alone: factorised vs materialised, time and peak memory, at 128 / 256 / 512 tokens (GPT-2-small shape).

    python -m benchmarks.bench_cspa [--lengths 128,256,512] [--reps 5]

Each (implementation, length) runs in a fresh subprocess, so its peak resident memory (VmHWM minus the RSS just
before the call) is its own; time is the median of the repetitions. Both start from the same cached activations
and include the kept-pair selection.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

from benchmarks.common import emit


def _worker(impl: str, s: int, reps: int) -> dict:
    import statistics
    import time

    import torch

    from benchmarks.common import peak_rss_mb, reset_peak, rss_mb
    from benchmarks.naive import materialised_cspa
    from precompute.science.cspa import cspa_output, select_kept

    torch.manual_seed(0)
    d, v = 768, 50257
    attn = torch.softmax(torch.randn(1, s, s).masked_fill(~torch.ones(s, s, dtype=torch.bool).tril(), -1e9), -1)
    src_out = torch.randn(1, s, d)
    mu = torch.randn(s, d) * 0.1
    w_u = torch.randn(d, v) / d**0.5
    tokens = torch.randint(0, v, (1, s))
    lens_scaled = torch.randn(1, s, d)
    cand = tokens[:, :, None]
    valid = torch.rand(1, s, 1) > 0.3

    def once():
        directions = w_u.T[cand] * valid[..., None]
        scores = torch.einsum("bqd,bkjd->bqkj", lens_scaled, directions)
        keep = select_kept(scores, cand, valid, 0.05)
        fn = cspa_output if impl == "factorised" else materialised_cspa
        return fn(attn, src_out, mu, directions, keep, True)

    with torch.inference_mode():
        out = once()  # warm-up (and the result, to check agreement)
        times = []
        base = rss_mb()
        reset_peak()
        for _ in range(reps):
            t = time.perf_counter()
            once()
            times.append(time.perf_counter() - t)
        peak = peak_rss_mb() - base
    return {
        "median_s": statistics.median(times),
        "min_s": min(times),
        "max_s": max(times),
        "peak_extra_mb": peak,
        "checksum": float(out.double().abs().sum()),
    }


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--lengths", default="128,256,512")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(_worker(args.worker[0], int(args.worker[1]), args.reps)))
        return
    results = {}
    for s in [int(x) for x in args.lengths.split(",")]:
        row = {}
        for impl in ("factorised", "materialised"):
            out = subprocess.run(
                [sys.executable, "-m", "benchmarks.bench_cspa", "--worker", impl, str(s), "--reps", str(args.reps)],
                capture_output=True,
                text=True,
                check=True,
            )
            row[impl] = json.loads(out.stdout.strip().splitlines()[-1])
        f, m = row["factorised"], row["materialised"]
        row["speedup"] = m["median_s"] / f["median_s"]
        row["memory_ratio"] = m["peak_extra_mb"] / max(f["peak_extra_mb"], 0.1)
        row["outputs_agree"] = abs(f["checksum"] - m["checksum"]) <= 1e-3 * max(1.0, m["checksum"])
        results[str(s)] = row
    emit(
        "cspa",
        {
            "results": results,
            "note": "peak_extra_mb: VmHWM during the timed calls minus RSS before; floored at 0.1 MB for the ratio",
        },
    )


if __name__ == "__main__":
    main()
