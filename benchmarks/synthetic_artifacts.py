"""SYNTHETIC artifact sets at scale: every field of the real schema, filled with random values.

For measuring the reader and the app on big artifact sets (e.g. 10,000 x 1024 tokens) without spending days of
CPU on real analyses. The manifest says ``"synthetic_artifacts": true`` and the model name is
``gpt2-small-random``; nothing here is a measurement of any model.

    python -m benchmarks.synthetic_artifacts OUT [--n-seqs 10000] [--seq-len 1024] [--shard-size 64]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from precompute.jobs.finish import INDEX_SIZE
from precompute.schema import INDEX_METRICS, MANIFEST, SCHEMA_VERSION
from precompute.store.files import save_tensors, write_json
from precompute.store.manifest import file_entry

D_VOCAB, D_MODEL, D_HEAD = 50257, 768, 64


def field_template(k: int = 10, k_attn: int = 8) -> dict[str, tuple[torch.dtype, str, tuple[int, ...]]]:
    """name -> (dtype, "S" or "P" for the position axis, trailing shape), from a real (tiny) toy analysis."""
    from precompute import analyze, load_model, mean_result
    from precompute.schema import STORED_TOPK_VARIANTS
    from precompute.store.records import compact

    lm = load_model("toy")
    tokens = torch.randint(2, 400, (1, 12))
    tokens[0, 0] = lm.tokenizer.bos_token_id
    rec = compact(
        analyze(lm, tokens, (1, 2), mean_result(lm, tokens, (1, 2)), k=k, topk_groups=STORED_TOPK_VARIANTS), k_attn
    )
    out = {}
    for name, t in rec.items():
        axis = "S" if t.shape[1] == 12 else "P"
        out[name] = (t.dtype, axis, tuple(t.shape[2:]))
    return out


def random_field(name: str, dtype, shape, g: torch.Generator) -> torch.Tensor:
    if dtype == torch.int32:
        if name.endswith("_pos"):
            return torch.randint(0, shape[1], shape, generator=g, dtype=torch.int32)
        if name.endswith("_rank") or name.endswith("n_kept"):
            return torch.randint(0, 1000, shape, generator=g, dtype=torch.int32)
        return torch.randint(0, D_VOCAB - 1, shape, generator=g, dtype=torch.int32)
    return (torch.randn(shape, generator=g) * 0.3).to(dtype)


def generate(out: Path, n_seqs: int, seq_len: int, shard_size: int, head: str = "10.7", log=print) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST).unlink(missing_ok=True)
    template = field_template()
    g = torch.Generator().manual_seed(0)
    n_shards = (n_seqs + shard_size - 1) // shard_size
    start = time.time()
    for i in range(n_shards):
        n = min(shard_size, n_seqs - i * shard_size)
        tensors = {"tokens": torch.randint(0, D_VOCAB - 1, (n, seq_len), generator=g, dtype=torch.int32)}
        tensors["tokens"][:, 0] = D_VOCAB - 1
        for name, (dtype, axis, trail) in template.items():
            length = seq_len if axis == "S" else seq_len - 1
            tensors[f"{head}/{name}"] = random_field(name, dtype, (n, length, *trail), g)
        save_tensors(out / "shards" / f"shard_{i:05d}.safetensors", tensors, {"synthetic": "true", "shard": str(i)})
        if i % 20 == 0:
            log(f"shard {i + 1}/{n_shards} ({time.time() - start:.0f} s)")
    index = {}
    for metric in INDEX_METRICS:
        index[f"{metric}_seq"] = torch.randint(0, n_seqs, (INDEX_SIZE,), generator=g, dtype=torch.int32)
        index[f"{metric}_pos"] = torch.randint(0, seq_len - 1, (INDEX_SIZE,), generator=g, dtype=torch.int32)
        index[f"{metric}_value"] = torch.sort(torch.rand(INDEX_SIZE, generator=g), descending=True).values
    save_tensors(out / "index" / f"{head}.safetensors", index)
    save_tensors(
        out / "mean" / f"{head}.safetensors",
        {"mean_result": torch.randn(1024, D_MODEL, generator=g), "count": torch.full((1024,), 100, dtype=torch.int32)},
    )
    circuits = {
        n: (torch.randn(D_VOCAB, D_HEAD, generator=g) * 0.1).half() for n in ("ov_src", "ov_dst", "qk_dst", "qk_src")
    }
    circuits.update(
        ov_rank=torch.randint(0, 100, (D_VOCAB,), dtype=torch.int32, generator=g),
        qk_rank=torch.randint(0, 100, (D_VOCAB,), dtype=torch.int32, generator=g),
    )
    save_tensors(out / "circuits" / f"{head}.safetensors", circuits)
    save_tensors(
        out / "semantic.safetensors",
        {n: torch.full((D_VOCAB, 1), -1, dtype=torch.int32) for n in ("equivalents", "superstrings", "substrings")},
    )
    from precompute.models.tokenizers import load_local_tokenizer

    load_local_tokenizer("gpt2").save_pretrained(str(out / "tokenizer"))
    files = sorted(
        str(p.relative_to(out))
        for p in out.rglob("*")
        if p.is_file() and not p.name.startswith(".") and p.name != MANIFEST
    )
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "synthetic_artifacts": True,
        "model": {"model_name": "gpt2-small-random", "synthetic": True, "weight_processing": {}},
        "heads": [head],
        "dataset": {"name": "SYNTHETIC random values (benchmarks/synthetic_artifacts.py)", "split": "-", "seed": 0},
        "counts": {"n_sequences": n_seqs, "seq_len": seq_len, "shard_size": shard_size, "n_shards": n_shards},
        "hyperparameters": {
            "k": 10,
            "k_attn": 8,
            "cspa_k_u": 0.05,
            "cspa_k_s": 1,
            "cspa_negative_only": True,
            "effects": ["direct", "both", "indirect"],
            "ln_modes": ["frozen", "unfrozen"],
        },
        "summary": {head: {}},
        "files": {rel: file_entry(out, rel) for rel in files},
    }
    write_json(out / MANIFEST, manifest)
    log(f"wrote {n_shards} shards to {out} in {time.time() - start:.0f} s")
    return out


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--n-seqs", type=int, default=10_000)
    p.add_argument("--seq-len", type=int, default=1024)
    p.add_argument("--shard-size", type=int, default=64)
    args = p.parse_args(argv)
    generate(Path(args.out), args.n_seqs, args.seq_len, args.shard_size)
    print(json.dumps({"out": args.out}))


if __name__ == "__main__":
    main()
