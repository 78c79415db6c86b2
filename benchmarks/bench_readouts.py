"""What the verdict costs on a real model: SmolLM2-135M (or any spec), head 24.4, real text (``python-docs``), each
step as a multiple of one plain forward pass over the same tokens, measured side by side in one run:

* fitting the tuned lens on every layer (closed-form ridge; its held-out quality on 512 positions per layer);
* the head's analysis (``analyze``, the paper set: direct effect, frozen LN, CSPA, DLA, the prediction) with each
  read-out (logit lens, tuned lens, final minus the head);
* the causal QK test (16 sequences, 4 destinations each);
* the head and its partner together (``science.joint``).

    python -m benchmarks.bench_readouts [--model smollm2-135m] [--head 24.4] [--partner 23.3] [--seqs 32] [--reps 3]
"""

from __future__ import annotations

import argparse
import time

import torch

from benchmarks.common import emit, interleaved


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--head", default="24.4")
    p.add_argument("--partner", default="23.3")
    p.add_argument("--seqs", type=int, default=32)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--reps", type=int, default=3)
    args = p.parse_args(argv)

    from precompute import load_model, schema
    from precompute.data.selection import load_sequences
    from precompute.science.analysis import analyze, mean_result
    from precompute.science.causal_qk import causal_qk
    from precompute.science.cspa import CSPAConfig, default_excluded
    from precompute.science.joint import joint_effect
    from precompute.science.tuned_lens import fit_tuned_lens

    lm = load_model(args.model)
    m = lm.model
    head, partner = schema.parse_head(args.head), schema.parse_head(args.partner)
    tokens = torch.tensor(load_sequences("python-docs", "train", 6, lm.tokenizer, args.seqs, args.seq_len))
    means = {h: mean_result(lm, tokens, h) for h in (head, partner)}
    t = time.perf_counter()
    lens = fit_tuned_lens(lm, tokens, quality_tokens=512)
    first_fit = time.perf_counter() - t
    excluded = torch.zeros(m.cfg.d_vocab, dtype=torch.bool)
    excluded[list(default_excluded(lm.tokenizer))] = True

    def forward():
        with torch.inference_mode():
            for i in range(0, len(tokens), 8):
                m(tokens[i : i + 8])

    def analysis(readout):
        def run():
            for i in range(0, len(tokens), 8):
                analyze(
                    lm,
                    tokens[i : i + 8],
                    head,
                    means[head],
                    effects=("direct",),
                    ln_modes=("frozen",),
                    readout=readout,
                    lens=lens,
                )

        return run

    fns = {
        "plain forward": forward,
        "tuned lens fit (every layer, quality on 512 positions)": lambda: fit_tuned_lens(
            lm, tokens, quality_tokens=512
        ),
        "analysis, logit lens": analysis("logit_lens"),
        "analysis, tuned lens": analysis("tuned_lens"),
        "analysis, final minus the head": analysis("final_minus_head"),
        "causal QK test (16 x 4 trials)": lambda: causal_qk(lm, tokens, head, excluded),
        f"{args.head}+{args.partner} together": lambda: joint_effect(
            lm, tokens, (head, partner), means, CSPAConfig(), batch_size=8
        ),
    }
    got = interleaved(fns, reps=args.reps, warmup=0)
    base = got["plain forward"]["median_s"]
    q = lens.quality[head[0]]
    emit(
        "readouts",
        {
            "model": args.model,
            "head": args.head,
            "tokens": int(tokens.numel()),
            "first_fit_s": first_fit,
            "times": got,
            "ratio_to_forward": {k: v["median_s"] / base for k, v in got.items()},
            "lens_quality_at_head_layer": q,
        },
    )


if __name__ == "__main__":
    main()
