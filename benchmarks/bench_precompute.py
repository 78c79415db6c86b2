"""Precompute throughput: tokens/s of the pipeline's shard loop over tokens/s of plain forward passes on the same
batches (median of three passes), for the toy model and the GPT-2-small-shaped random model, at 128 tokens and
(GPT-2 shape, paper set) at 768, near the job's default 1000.

    python -m benchmarks.bench_precompute [--gpt2-seqs 64] [--toy-seqs 256]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

from benchmarks.common import emit
from precompute import load_model
from precompute.data.selection import load_sequences
from precompute.jobs.config import RunConfig
from precompute.jobs.pipeline import run


def measure(
    model_name: str,
    head,
    n_seqs: int,
    seq_len: int,
    batch_size: int,
    n_mean: int,
    effects=("direct", "both", "indirect"),
    ln_modes=("frozen", "unfrozen"),
    dataset: str = "synthetic",
    seed: int = 1,
    loaded=None,
) -> dict:
    """The pipeline's shard loop against plain forward passes on the same batches (``loaded``: a model already
    loaded for ``model_name``)."""
    lm = loaded if loaded is not None else load_model(model_name)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = RunConfig(
            model=model_name,
            heads=(head,),
            dataset=dataset,
            n_seqs=n_seqs,
            seq_len=seq_len,
            batch_size=batch_size,
            shard_size=max(batch_size, n_seqs // 4),
            n_mean=n_mean,
            seed=seed,
            out=tmp,
            device="cpu",
            effects=effects,
            ln_modes=ln_modes,
        )
        stats = {}
        run(cfg, loaded=lm, log=lambda *_: None, stats=stats)
    seqs = load_sequences(dataset, "train", seed, lm.tokenizer, n_seqs, seq_len)

    def plain_pass() -> float:
        t = time.perf_counter()
        with torch.inference_mode():
            for start in range(0, n_seqs, batch_size):
                lm.model(torch.tensor(seqs[start : start + batch_size]))
        return time.perf_counter() - t

    plain_s = statistics.median(plain_pass() for _ in range(3))
    tokens = n_seqs * seq_len
    return {
        "n_seqs": n_seqs,
        "seq_len": seq_len,
        "batch_size": batch_size,
        "pipeline_tokens_per_s": tokens / stats["shard_seconds"],
        "plain_forward_tokens_per_s": tokens / plain_s,
        "ratio": (tokens / stats["shard_seconds"]) / (tokens / plain_s),
        "pipeline_total_s_incl_mean_circuits_index": stats["total_seconds"],
    }


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument(
        "--gpt2-seqs", type=int, default=64
    )  # 8 batches: one-time costs (first allocations, W_O W_U) amortised
    p.add_argument("--toy-seqs", type=int, default=256)
    args = p.parse_args(argv)
    paper = dict(effects=("direct",), ln_modes=("frozen",))
    results = {
        "toy_all_variants": measure("toy", (1, 2), args.toy_seqs, 128, 16, 32),
        "toy_paper_variant": measure("toy", (1, 2), args.toy_seqs, 128, 16, 32, **paper),
        "gpt2-small-random_all_variants": measure("gpt2-small-random", (10, 7), args.gpt2_seqs, 128, 8, 4),
        "gpt2-small-random_paper_variant": measure("gpt2-small-random", (10, 7), args.gpt2_seqs, 128, 8, 4, **paper),
        # near the job's default sequence length (1000; the synthetic documents reach about 880 tokens), where
        # attention weighs more and the vocabulary less
        "gpt2-small-random_paper_variant_seq768": measure("gpt2-small-random", (10, 7), 4, 768, 2, 2, **paper),
    }
    emit(
        "precompute",
        {
            "results": results,
            "note": "pipeline = analysis of every variant + CSPA + compaction + "
            "atomic shard writes, i.e. the shard loop of `precompute run`",
        },
    )


if __name__ == "__main__":
    main()
