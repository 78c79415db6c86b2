"""Live analysis vs one plain forward pass (and vs the naive way), GPT-2-small-shaped random model.

python -m benchmarks.bench_live [--lengths 128,1024] [--reps 5]
"""

from __future__ import annotations

import argparse

import torch

from benchmarks.common import emit, interleaved
from benchmarks.naive import cspa_inputs_from_cache, naive_analysis
from precompute import analyze, load_model, mean_result
from precompute.data.function_words import function_word_ids
from precompute.schema import STORED_TOPK_VARIANTS


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--lengths", default="128,1024")
    p.add_argument("--reps", type=int, default=5)
    args = p.parse_args(argv)
    lm = load_model("gpt2-small-random")
    m = lm.model
    head = (10, 7)
    g = torch.Generator().manual_seed(0)
    lengths = [int(x) for x in args.lengths.split(",")]
    mu = mean_result(lm, torch.randint(0, 50256, (2, max(lengths)), generator=g), head)
    excluded = function_word_ids(lm.tokenizer)
    from precompute.data.synthetic import corpus
    from precompute.data.tokenization import encode

    text_ids = [
        i
        for doc in corpus(n_docs=40, seed=3, min_sentences=60, max_sentences=80)
        for i in encode(lm.tokenizer, doc)[1:]
    ]
    results = {}
    for source, s in [(src, s) for s in lengths for src in ("synthetic_text", "random_tokens")]:
        if source == "random_tokens":  # worst case for CSPA's sparse DLA: almost no repeated tokens
            tokens = torch.randint(0, 50256, (1, s), generator=g)
        else:  # text with repeats, like real documents
            tokens = torch.tensor([text_ids[:s]])
        tokens[0, 0] = 50256

        def plain(tokens=tokens):
            with torch.inference_mode():
                m(tokens)

        def paper(tokens=tokens):  # clean + direct ablation (frozen LN) + CSPA + DLA + logit lens
            analyze(lm, tokens, head, mu, effects=("direct",), ln_modes=("frozen",))

        def everything(tokens=tokens):  # + both / indirect effects and unfrozen LN, top-k lists as stored
            analyze(lm, tokens, head, mu, topk_groups=STORED_TOPK_VARIANTS)

        def naive(tokens=tokens):
            naive_analysis(m, tokens, head, mu, cspa_inputs_from_cache(m, tokens, head, excluded))

        reps = args.reps if s <= 256 else max(3, args.reps // 2)
        fns = {"plain_forward": plain, "analysis": paper, "analysis_all_variants": everything, "naive": naive}
        if source == "random_tokens":
            fns.pop("naive")
        t = interleaved(fns, reps=reps)
        base = t["plain_forward"]["median_s"]
        results[f"{source}_{s}"] = {
            **t,
            "ratio_analysis": t["analysis"]["median_s"] / base,
            "ratio_analysis_all_variants": t["analysis_all_variants"]["median_s"] / base,
            **({"ratio_naive": t["naive"]["median_s"] / base} if "naive" in t else {}),
        }
    emit("live", {"model": "gpt2-small-random", "head": "10.7", "results": results})


if __name__ == "__main__":
    main()
