"""The head survey's cost at the offline demo's settings (``precompute.jobs.demo.SMOLLM2_SURVEY``: 8 x 128 tokens of
``python-docs``, 512 circuit rows, a tuned lens on 48 sequences): the whole survey as plain forward passes of the
same tokens per head (issue 38's target: <= 0.3), each stage's seconds, and the peak memory. The forward pass is
timed in the same process, just before the survey.

    python -m benchmarks.bench_survey [--model smollm2-135m | gemma3-270m | gpt2-small-random | toy]
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from benchmarks.common import emit, interleaved, peak_rss_mb, reset_peak, rss_mb


def main(argv=None):
    from precompute.data.selection import load_sequences
    from precompute.jobs.demo import SMOLLM2_SURVEY
    from precompute.jobs.survey import SurveyConfig
    from precompute.models.loading import load_model
    from precompute.science.survey import survey_heads

    p = argparse.ArgumentParser()
    p.add_argument("--model", default="smollm2-135m")
    args = p.parse_args(argv)
    cfg = SurveyConfig(**{**SMOLLM2_SURVEY, "model": args.model})
    t = time.perf_counter()
    lm = load_model(cfg.model, device="cpu")
    load_s = time.perf_counter() - t
    m = lm.model
    every = torch.tensor(
        load_sequences(cfg.dataset, cfg.split, cfg.seed, lm.tokenizer, max(cfg.n_seqs, cfg.lens_seqs), cfg.seq_len)
    )
    tokens = every[: cfg.n_seqs]

    def plain():
        with torch.inference_mode():
            m(tokens)

    forward = interleaved({"plain_forward": plain}, reps=3)["plain_forward"]["median_s"]
    n_heads = m.cfg.n_layers * m.cfg.n_heads
    stages: dict[str, float] = {}
    last = [time.perf_counter()]
    lines: list[str] = []

    def progress(text: str, frac: float) -> None:
        now = time.perf_counter()
        stage = text.split(":")[0].split(" · ")[0]  # the time since the last line: work this line reports
        stages[stage] = stages.get(stage, 0.0) + now - last[0]
        last[0] = now
        lines.append(f"{now:.1f} {text}")
        print(text, file=sys.stderr, flush=True)

    base_rss = rss_mb()
    reset_peak()
    t = time.perf_counter()
    survey_heads(lm, tokens, cfg.settings(), progress=progress, lens_tokens=every)
    total = time.perf_counter() - t
    gaps = [float(b.split()[0]) - float(a.split()[0]) for a, b in zip(lines, lines[1:])]
    emit(
        f"survey_{args.model}",
        {
            "model": args.model,
            "heads": n_heads,
            "tokens": list(tokens.shape),
            "settings": {k: v for k, v in SMOLLM2_SURVEY.items() if k != "model"},
            "load_s": load_s,
            "plain_forward_s": forward,
            "survey_s": total,
            "forwards_per_head": total / (n_heads * forward),
            "target_forwards_per_head": 0.3,
            "seconds_by_stage": stages,
            "longest_gap_between_progress_lines_s": max(gaps, default=0.0),
            "rss_before_mb": base_rss,
            "peak_rss_mb": peak_rss_mb(),
        },
    )


if __name__ == "__main__":
    main()
