"""SmolLM2-135M, the real trained model (Llama architecture, 30 layers, vocabulary 49,152), on real text
(``python-docs``), everything side by side in one run:

* loading: the first load into an empty cache (GGUF dequantised to float32, weights processed, cached) and cached
  loads (memory-mapped), each in a fresh process: seconds and peak RSS;
* live analysis / one plain forward pass at 128 and 512 tokens: the paper set (direct effect, frozen LN, CSPA, DLA,
  logit lens), all six variants (as the precompute job stores them), and the naive way (full run_with_cache plus
  two hooked forward passes, CSPA materialised);
* precompute throughput: the pipeline's shard loop (all six variants) over plain forward passes on the same batches;
* the offline demo's survey of all 270 heads (``precompute.jobs.demo.SMOLLM2_SURVEY``), with ``--survey``.

    python -m benchmarks.bench_smollm2 [--reps 5] [--seqs 32] [--survey]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch

from benchmarks.common import emit, interleaved
from benchmarks.naive import cspa_inputs_from_cache, naive_analysis

LOAD = (
    "import json, resource, time; t = time.perf_counter(); from precompute import load_model; "
    "lm = load_model('smollm2-135m'); print(json.dumps({'seconds': time.perf_counter() - t, "
    "'from_cache': lm.weights_from_cache, 'peak_rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss "
    "/ 1024}))"
)


def loads(cached_reps: int = 3) -> dict:
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "CSE_CACHE_DIR": cache}

        def one() -> dict:
            t = time.perf_counter()
            out = subprocess.run([sys.executable, "-c", LOAD], env=env, capture_output=True, text=True, check=True)
            rec = json.loads(out.stdout.strip().splitlines()[-1])
            rec["process_seconds"] = time.perf_counter() - t
            return rec

        first = one()
        cached = [one() for _ in range(cached_reps)]
    return {
        "first_load": first,
        "cached_load_median_s": statistics.median(c["seconds"] for c in cached),
        "cached_load_peak_rss_mb": max(c["peak_rss_mb"] for c in cached),
        "cached_loads": cached,
    }


def live(lm, head, lengths, reps: int) -> dict:
    from precompute import analyze, mean_result
    from precompute.data.function_words import function_word_ids
    from precompute.data.sources import load_documents
    from precompute.data.tokenization import encode
    from precompute.schema import STORED_TOPK_VARIANTS

    m = lm.model
    ids = [i for doc in load_documents("python-docs") for i in encode(lm.tokenizer, doc)[1:]]
    start = lm.tokenizer.bos_token_id
    mu = mean_result(lm, torch.tensor([[start] + ids[k * 600 : k * 600 + max(lengths) - 1] for k in range(4)]), head)
    excluded = function_word_ids(lm.tokenizer)
    out = {}
    for s in lengths:
        tokens = torch.tensor([[start] + ids[5000 : 5000 + s - 1]])

        def plain(tokens=tokens):
            with torch.inference_mode():
                m(tokens)

        def paper(tokens=tokens):
            analyze(lm, tokens, head, mu, effects=("direct",), ln_modes=("frozen",))

        def everything(tokens=tokens):
            analyze(lm, tokens, head, mu, topk_groups=STORED_TOPK_VARIANTS)

        def naive(tokens=tokens):
            naive_analysis(m, tokens, head, mu, cspa_inputs_from_cache(m, tokens, head, excluded))

        t = interleaved(
            {"plain_forward": plain, "analysis": paper, "analysis_all_variants": everything, "naive": naive},
            reps=reps if s <= 128 else max(3, reps // 2),
        )
        base = t["plain_forward"]["median_s"]
        out[f"real_text_{s}"] = {
            **t,
            **{f"ratio_{k}": t[k]["median_s"] / base for k in ("analysis", "analysis_all_variants", "naive")},
        }
    return out


def throughput(lm, head, n_seqs: int) -> dict:
    from benchmarks.bench_precompute import measure

    return {
        **measure("smollm2-135m", head, n_seqs, 128, 8, 8, dataset="python-docs", seed=6, loaded=lm),
        "variants": "all six",
    }


def survey(lm) -> dict:
    from precompute.jobs.demo import SMOLLM2_SURVEY
    from precompute.jobs.survey import SurveyConfig, run_survey

    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        run_survey(
            SurveyConfig(out=tmp, overwrite=True, device="cpu", **SMOLLM2_SURVEY), loaded=lm, log=lambda *_: None
        )
        return {"settings": SMOLLM2_SURVEY, "seconds": time.perf_counter() - t}


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--lengths", default="128,512")
    p.add_argument("--seqs", type=int, default=32)
    p.add_argument("--head", default="24.4")
    p.add_argument("--survey", action="store_true")
    args = p.parse_args(argv)
    from precompute import load_model
    from precompute.schema import parse_head

    head = parse_head(args.head)
    results = {"loading": loads()}
    lm = load_model("smollm2-135m")
    results["live"] = live(lm, head, [int(x) for x in args.lengths.split(",")], args.reps)
    results["precompute"] = throughput(lm, head, args.seqs)
    if args.survey:
        results["survey"] = survey(lm)
    emit("smollm2", {"model": "smollm2-135m", "head": args.head, "results": results})


if __name__ == "__main__":
    main()
