"""Cost of the analysis against sequence length and batch size (GPT-2-small-shaped random model), with one
plain forward of the same tokens measured alongside each cell.

    python -m benchmarks.bench_scaling [--lengths 128,256,512,1024] [--batches 1,2,4,8] [--reps 3]
"""

from __future__ import annotations

import argparse

import torch

from benchmarks.common import emit, interleaved
from precompute import analyze, load_model, mean_result
from precompute.data.synthetic import corpus
from precompute.data.tokenization import encode


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--lengths", default="128,256,512,1024")
    p.add_argument("--batches", default="1,2,4,8")
    p.add_argument("--batch-length", type=int, default=128)
    p.add_argument("--reps", type=int, default=3)
    args = p.parse_args(argv)
    lm = load_model("gpt2-small-random")
    head = (10, 7)
    ids = [
        i
        for doc in corpus(n_docs=80, seed=5, min_sentences=60, max_sentences=80)
        for i in encode(lm.tokenizer, doc)[1:]
    ]
    lengths = [int(x) for x in args.lengths.split(",")]
    batches = [int(x) for x in args.batches.split(",")]
    mu = mean_result(lm, torch.tensor([[50256] + ids[: max(lengths) - 1]]), head)

    def tokens(b: int, s: int) -> torch.Tensor:
        t = torch.tensor([ids[i * s : (i + 1) * s] for i in range(b)])
        t[:, 0] = 50256
        return t

    def cell(b: int, s: int) -> dict:
        toks = tokens(b, s)

        def plain():
            with torch.inference_mode():
                lm.model(toks)

        t = interleaved(
            {
                "plain_forward": plain,
                "analysis_paper": lambda: analyze(lm, toks, head, mu, effects=("direct",), ln_modes=("frozen",)),
                "analysis_all_variants": lambda: analyze(lm, toks, head, mu),
            },
            reps=args.reps,
        )
        base = t["plain_forward"]["median_s"]
        return {
            "plain_forward_s": base,
            "analysis_paper_s": t["analysis_paper"]["median_s"],
            "analysis_all_variants_s": t["analysis_all_variants"]["median_s"],
            "ratio_paper": t["analysis_paper"]["median_s"] / base,
            "ratio_all_variants": t["analysis_all_variants"]["median_s"] / base,
            "ms_per_token_paper": 1000 * t["analysis_paper"]["median_s"] / (b * s),
        }

    by_length = {str(s): cell(1, s) for s in lengths}
    by_batch = {str(b): cell(b, args.batch_length) for b in batches}
    emit(
        "scaling",
        {"model": "gpt2-small-random", "by_length_batch1": by_length, f"by_batch_len{args.batch_length}": by_batch},
    )


if __name__ == "__main__":
    main()
