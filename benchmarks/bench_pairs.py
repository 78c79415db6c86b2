"""The Prompt pairs analysis on the GPT-2-small shape (random weights), 8 IOI pairs × 15 tokens: the whole
analysis and each part as a ratio to one plain forward pass of the same batch; batched activation patching vs one
forward pass per cell (timed on a sample of cells, scaled to all); attribution patching's cost and its
correlation with activation patching.

    python -m benchmarks.bench_pairs [--pairs 8] [--sample-cells 40]
"""

from __future__ import annotations

import argparse
import random
import time

import torch

from benchmarks.common import emit, interleaved
from precompute import load_model
from precompute.data.prompts import ioi_pairs
from precompute.science import patching as P
from precompute.science.pairs import GRIDS, clean_hooks, compare_prompts, prepare_pairs
from precompute.science.self_repair import self_repair


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--pairs", type=int, default=8)
    p.add_argument("--sample-cells", type=int, default=40)
    args = p.parse_args(argv)
    lm = load_model("gpt2-small-random")
    m = lm.model
    clean, corrupted, answers, _ = ioi_pairs(lm.tokenizer, args.pairs)

    def plain():
        with torch.inference_mode():
            m(clean)

    forward = interleaved({"plain_forward": plain}, reps=5)["plain_forward"]["median_s"]
    t = time.perf_counter()
    base = compare_prompts(lm, clean, corrupted, answers, patching=False, attribution=False)
    t_base = time.perf_counter() - t
    t = time.perf_counter()
    res = compare_prompts(lm, clean, corrupted, answers, patching=False, attribution=True)
    t_attr = time.perf_counter() - t - t_base
    t = time.perf_counter()
    res_act = compare_prompts(lm, clean, corrupted, answers, patching=True, attribution=False)
    t_act = time.perf_counter() - t - t_base
    t = time.perf_counter()
    self_repair(lm, clean, answers)
    t_repair = time.perf_counter() - t
    inp0 = prepare_pairs(m, clean, corrupted, answers)
    with torch.inference_mode():
        _, cache0 = m.run_with_cache(clean, names_filter=clean_hooks(m.cfg.n_layers))
    t = time.perf_counter()
    P.activation_patching(m, inp0, cache0, base.ld_clean, base.ld_corrupted)
    t_hooked = time.perf_counter() - t
    # one forward pass per cell, on a sample of the cells
    inp = prepare_pairs(m, clean, corrupted, answers)
    with torch.inference_mode():
        _, cache = m.run_with_cache(clean, names_filter=clean_hooks(m.cfg.n_layers))
    all_cells = [c for g in GRIDS for c in P.cells(m, g, clean.shape[1])]
    sample = random.Random(0).sample(all_cells, min(args.sample_cells, len(all_cells)))
    t = time.perf_counter()
    for hook, index in sample:
        P.one_cell(m, inp, cache, hook, index)
    per_cell = (time.perf_counter() - t) / len(sample)
    corr = {}
    for g in GRIDS:
        a, b = res_act.patch[g].flatten(), res.attr[g].flatten()
        corr[g] = float(torch.corrcoef(torch.stack([a, b]))[0, 1])
    emit(
        "pairs",
        {
            "model": "gpt2-small-random (GPT-2 small shape)",
            "pairs": args.pairs,
            "tokens": list(clean.shape),
            "cells": len(all_cells),
            "plain_forward_s": forward,
            "seconds": {
                "lens_and_attribution": t_base,
                "attribution_patching": t_attr,
                "activation_patching_batched": t_act,
                "activation_patching_hooked_batched": t_hooked,
                "self_repair": t_repair,
                "activation_patching_one_forward_per_cell_estimated": per_cell * len(all_cells),
            },
            "ratio_to_forward": {
                "lens_and_attribution": t_base / forward,
                "attribution_patching": t_attr / forward,
                "activation_patching_batched": t_act / forward,
                "activation_patching_hooked_batched": t_hooked / forward,
                "self_repair": t_repair / forward,
                "whole_analysis": (t_base + t_attr + t_act) / forward,
            },
            "batched_vs_one_per_cell_speedup": per_cell * len(all_cells) / t_act,
            "hooked_batched_vs_one_per_cell_speedup": per_cell * len(all_cells) / t_hooked,
            "attribution_vs_activation_correlation": corr,
            "ld_clean": base.ld_clean,
            "ld_corrupted": base.ld_corrupted,
        },
    )


if __name__ == "__main__":
    main()
