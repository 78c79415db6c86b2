"""Prompt pairs on SmolLM2-135M, IOI, 8 pairs (the page's default): attribution patching, then activation patching
of the top N cells it ranks (AtP, the page's default N) against activation patching of every cell, side by side in
one process; how many of the cells with the largest true effect the top N holds; and that the patched cells equal
full patching's (issue 38's target: the default <= 60 s on two cores).

    python -m benchmarks.bench_atp [--model smollm2-135m] [--pairs 8] [--top-n 512]
"""

from __future__ import annotations

import argparse
import time

import torch

from benchmarks.common import emit


def main(argv=None):
    from precompute.data.pair_sets import SETS, build_pairs
    from precompute.models.loading import load_model
    from precompute.science.pairs import DEFAULT_TOP_CELLS, GRIDS, compare_prompts

    p = argparse.ArgumentParser()
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--pairs", type=int, default=8)
    p.add_argument("--top-n", type=int, default=DEFAULT_TOP_CELLS)
    args = p.parse_args(argv)
    lm = load_model(args.model, device="cpu")
    clean, corrupted, answers = build_pairs(SETS[0], lm.tokenizer, args.pairs, "")
    compare_prompts(lm, clean, corrupted, answers, patching=False)  # warm-up

    def timed(**kw):
        t = time.perf_counter()
        res = compare_prompts(lm, clean, corrupted, answers, **kw)
        return res, time.perf_counter() - t

    attr_only, t_attr = timed(patching=False)
    top, t_top = timed(top_n=args.top_n)
    full, t_full = timed(top_n=None)

    def flat(grids):
        return torch.cat([grids[g].reshape(-1) for g in GRIDS])

    truth, got = flat(full.patch), flat(top.patch)
    patched = ~got.isnan()
    recall = {}
    for k in (10, 50, 100):
        best = truth.abs().argsort(descending=True)[:k]
        recall[f"top_{k}_true_cells_in_the_patched_set"] = float(patched[best].double().mean())
    emit(
        f"atp_{args.model}",
        {
            "model": args.model,
            "pairs": args.pairs,
            "prompt_tokens": int(clean.shape[1]) if hasattr(clean, "shape") else None,
            "cells": full.total_cells,
            "top_n": args.top_n,
            "seconds": {
                "lens_dla_and_attribution_only": t_attr,
                f"page_default_attribution_then_top_{args.top_n}": t_top,
                "activation_patching_every_cell": t_full,
            },
            "speedup_of_the_default": t_full / t_top,
            "target_s": 60,
            "max_abs_difference_patched_cells_vs_full": float((got[patched] - truth[patched]).abs().max()),
            **recall,
            "share_of_total_abs_effect_in_the_patched_cells": float(truth[patched].abs().sum() / truth.abs().sum()),
        },
    )


if __name__ == "__main__":
    main()
