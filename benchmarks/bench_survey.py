"""The head survey's cost on the GPT-2-small shape (random weights): the whole survey and each part as a ratio to
one plain forward pass of the same batch, per head, and its peak memory above the loaded model.

    python -m benchmarks.bench_survey [--n-seqs 2] [--seq-len 64] [--circuit-rows 256]
"""

from __future__ import annotations

import argparse
import time

import torch

from benchmarks.common import emit, interleaved, peak_rss_mb, reset_peak, rss_mb
from precompute import load_model
from precompute.science import survey as S


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--n-seqs", type=int, default=2)
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--circuit-rows", type=int, default=256)
    args = p.parse_args(argv)
    lm = load_model("gpt2-small-random")
    m = lm.model
    from precompute.data.synthetic import corpus
    from precompute.data.tokenization import encode

    ids = [
        i
        for doc in corpus(n_docs=40, seed=3, min_sentences=60, max_sentences=80)
        for i in encode(lm.tokenizer, doc)[1:]
    ]
    tokens = torch.tensor(ids[: args.n_seqs * args.seq_len]).reshape(args.n_seqs, args.seq_len)
    tokens[:, 0] = lm.tokenizer.bos_token_id
    st = S.SurveySettings(
        n_mean=args.n_seqs, batch_size=args.n_seqs, circuit_rows=args.circuit_rows, n_repeat=20, n_ioi=20
    )
    n_heads = m.cfg.n_layers * m.cfg.n_heads

    def plain():
        with torch.inference_mode():
            m(tokens)

    forward = interleaved({"plain_forward": plain}, reps=5)["plain_forward"]["median_s"]
    parts = {}
    base_rss = rss_mb()
    reset_peak()
    with torch.inference_mode():
        t = time.perf_counter()
        mu = S._mean_results(m, tokens, st.batch_size)
        parts["mean_outputs"] = time.perf_counter() - t
        t = time.perf_counter()
        S._ablation_sums(m, tokens, mu, st, None)
        parts["ablation_and_cspa"] = time.perf_counter() - t
        t = time.perf_counter()
        S._induction(m, st)
        S._ioi(m, st)
        parts["induction_and_ioi_probes"] = time.perf_counter() - t
        t = time.perf_counter()
        S._circuits(m, st, None)
        parts["ov_qk_circuits"] = time.perf_counter() - t
    peak = peak_rss_mb()
    total = sum(parts.values())
    emit(
        "survey",
        {
            "model": "gpt2-small-random (GPT-2 small shape, 144 heads)",
            "tokens": list(tokens.shape),
            "circuit_rows": args.circuit_rows,
            "n_repeat": 20,
            "n_ioi": 20,
            "plain_forward_s": forward,
            "seconds": parts,
            "total_s": total,
            "ratio_to_forward": {k: v / forward for k, v in parts.items()},
            "total_ratio_to_forward": total / forward,
            "per_head_ratio_to_forward": total / forward / n_heads,
            "ablation_and_cspa_per_head_ratio": parts["ablation_and_cspa"] / forward / n_heads,
            "rss_before_mb": base_rss,
            "peak_rss_mb": peak,
            "peak_above_model_mb": peak - base_rss,
        },
    )


if __name__ == "__main__":
    main()
