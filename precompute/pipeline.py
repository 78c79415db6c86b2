"""The precompute job: documents -> sequences -> ``analyze`` in batches -> sharded safetensors + manifest.

Resumable (shards are written atomically and carry a hash of the run configuration; ``resume`` skips shards that
are complete and match), verifiable (``artifacts.verify``), and distributed with ``torchrun`` (ranks take shards
``i % world_size == rank``; rank 0 writes the shared files and the manifest, last).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .analysis import EFFECTS, LN_MODES, analyze, check_head, head_output
from .artifacts import (MANIFEST, SCHEMA_VERSION, file_entry, head_key, read_field, read_metadata, save_tensors,
                        write_json)
from .circuits import DEFAULT_EMBEDDING, circuit_factors, rank_summary, ranks_from_factors
from .cspa import CSPAConfig, summary_metrics
from .errors import InvalidInputError
from .models import load_model, unwrap
from .records import DEFAULT_K_ATTN, STORED_TOPK_VARIANTS, compact
from .semantic import neighbour_table, semantic_neighbours
from .text_sources import load_documents, shuffled
from .tokenization import encode

INDEX_SIZE = 2000
# index name -> (stored field, order): "largest" first, "smallest" first, or largest "abs" first
INDEX_METRICS = {
    "delta_loss": ("delta_loss_direct_frozen", "largest"),  # head helps most (ablation raises loss)
    "neg_delta_loss": ("delta_loss_direct_frozen", "smallest"),  # head hurts most
    "kl": ("kl_direct_frozen", "largest"),
    "cspa_failure": ("delta_loss_cspa", "abs"),  # loss change that CSPA does not preserve
}


@dataclass
class RunConfig:
    """Settings of one precompute run (every field is recorded in the manifest)."""

    model: str = field(default="gpt2-small", metadata={"help": "model name known to load_model"})
    heads: tuple[tuple[int, int], ...] = field(default=((10, 7),), metadata={"help": "heads, e.g. 10.7,11.10"})
    dataset: str = field(default="stas/openwebtext-10k", metadata={"help": "Hub dataset, local .txt/.jsonl "
                                                                           "file or folder, or 'synthetic'"})
    split: str = "train"
    seed: int = field(default=6, metadata={"help": "document shuffle seed (paper: 6)"})
    n_seqs: int = field(default=500, metadata={"help": "sequences to analyse"})
    seq_len: int = field(default=1000, metadata={"help": "tokens per sequence, BOS included"})
    batch_size: int = 8
    shard_size: int = 64
    n_mean: int = field(default=100, metadata={"help": "documents averaged for the per-position mean"})
    k: int = field(default=10, metadata={"help": "top-k kept for every vocabulary-sized quantity"})
    k_attn: int = DEFAULT_K_ATTN
    cspa_k_u: float | int = field(default=0.05, metadata={"help": "CSPA K_u: fraction (0.05) or count (5)"})
    cspa_k_s: int = 1
    cspa_negative_only: bool = True
    effects: tuple[str, ...] = field(default=("direct", "both", "indirect"),
                                     metadata={"help": "ablation effects to compute (direct is the paper's)"})
    ln_modes: tuple[str, ...] = field(default=("frozen", "unfrozen"), metadata={"help": "final-LN modes"})
    device: str = "auto"
    dtype: str = "float32"
    out: str = "artifacts/run"
    resume: bool = False

    def cspa(self) -> CSPAConfig:
        return CSPAConfig(k_u=self.cspa_k_u, k_s=self.cspa_k_s, negative_only=self.cspa_negative_only)

    def validate(self) -> None:
        for name in ("n_seqs", "batch_size", "shard_size", "n_mean", "k", "k_attn"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise InvalidInputError(f"--{name.replace('_', '-')} must be a positive integer, got {value!r}")
        if self.seq_len < 2:
            raise InvalidInputError(f"--seq-len must be at least 2 (BOS plus one token), got {self.seq_len}")
        if not self.heads:
            raise InvalidInputError("give at least one head, e.g. --heads 10.7")
        if not self.effects or any(e not in EFFECTS for e in self.effects) or "direct" not in self.effects:
            raise InvalidInputError(f"--effects must be a comma list of {', '.join(EFFECTS)} including 'direct'; "
                                    f"got {','.join(self.effects) or 'nothing'}")
        if not self.ln_modes or any(x not in LN_MODES for x in self.ln_modes) or "frozen" not in self.ln_modes:
            raise InvalidInputError(f"--ln-modes must be a comma list of {', '.join(LN_MODES)} including 'frozen'; "
                                    f"got {','.join(self.ln_modes) or 'nothing'}")
        if self.dtype not in ("float32", "bfloat16", "float16"):
            raise InvalidInputError(f"--dtype must be float32, bfloat16 or float16, got {self.dtype!r}")
        self.cspa()

    def hash(self) -> str:
        keys = {k: v for k, v in dataclasses.asdict(self).items() if k not in ("device", "out", "resume")}
        keys["schema_version"] = SCHEMA_VERSION
        return hashlib.sha256(json.dumps(keys, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _dist():
    """(rank, world_size), initialising torch.distributed when launched by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        return dist.get_rank(), world
    return 0, 1


def _barrier(world: int) -> None:
    if world > 1:
        import torch.distributed as dist

        dist.barrier()


def select_sequences(docs: list[str], tokenizer, n: int, length: int) -> list[list[int]]:
    """The first S tokens (BOS first) of the first ``n`` documents (in order) that have at least S tokens."""
    out = []
    for doc in docs:
        ids = encode(tokenizer, doc)
        if len(ids) >= length:
            out.append(ids[:length])
            if len(out) == n:
                return out
    raise InvalidInputError(f"only {len(out)} documents have at least {length} tokens; asked for {n}. Use a "
                            "shorter --seq-len, fewer --n-seqs, or a larger dataset")


def ragged_mean_result(model, docs: list[str], head, n_docs: int, n_ctx: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-position mean of the head's output over the first ``n_docs`` documents, each cut to ``n_ctx`` tokens.

    Position p averages over the documents that reach it; returns (mean [P, d_model], count [P]) where P is the
    longest document length (up to n_ctx), so live prompts can be as long as the model allows when documents are.
    """
    m = unwrap(model)
    layer, h = head
    total = torch.zeros(n_ctx, m.cfg.d_model, dtype=torch.float64)
    count = torch.zeros(n_ctx, dtype=torch.long)
    used = 0
    with torch.inference_mode():
        for doc in docs:
            ids = encode(m.tokenizer, doc)[:n_ctx]
            if len(ids) < 2:
                continue
            toks = torch.tensor([ids], device=m.W_U.device)
            _, cache = m.run_with_cache(toks, names_filter=[f"blocks.{layer}.attn.hook_z"], stop_at_layer=layer + 1)
            r = head_output(m, cache[f"blocks.{layer}.attn.hook_z"], layer, h)[0].double().cpu()
            total[: len(ids)] += r
            count[: len(ids)] += 1
            used += 1
            if used == n_docs:
                break
    covered = int((count > 0).sum())
    return (total[:covered] / count[:covered, None]).float(), count[:covered]


def run(cfg: RunConfig, loaded=None, log=print, stats: dict | None = None) -> Path:
    """Run the job; returns the output folder. ``loaded``: an already loaded model (tests reuse one).
    ``stats``, if given, receives timings: seconds spent analysing shards, tokens analysed, total seconds."""
    t_start = time.perf_counter()
    cfg.validate()
    out = Path(cfg.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        raise InvalidInputError(f"cannot write to the output folder {out}: {err.strerror or err}") from None
    rank, world = _dist()
    lm = loaded if loaded is not None else load_model(cfg.model, device=cfg.device)
    m = lm.model
    n_ctx = m.cfg.n_ctx
    if cfg.seq_len > n_ctx:
        raise InvalidInputError(f"--seq-len {cfg.seq_len} is above the model's context n_ctx = {n_ctx}")
    heads = [check_head(m, h) for h in cfg.heads]
    if cfg.dtype != "float32":
        m.to(getattr(torch, cfg.dtype))
    if rank == 0:
        (out / MANIFEST).unlink(missing_ok=True)  # no manifest may point at shards being rewritten
    docs = shuffled(load_documents(cfg.dataset, cfg.split), cfg.seed)
    seqs = select_sequences(docs, m.tokenizer, cfg.n_seqs, cfg.seq_len)
    cfg_hash = cfg.hash()
    means = {}
    for head in heads:
        mu, count = ragged_mean_result(lm, docs, head, cfg.n_mean, n_ctx)
        means[head] = mu
        if rank == 0:
            save_tensors(out / "mean" / f"{head_key(head)}.safetensors",
                         {"mean_result": mu.contiguous(), "count": count.to(torch.int32)},
                         {"config_hash": cfg_hash})
    cspa = cfg.cspa()
    neighbours = None
    if cspa.k_s > 1:
        neighbours = neighbour_table(semantic_neighbours(m.tokenizer), cspa.k_s)
    n_shards = (len(seqs) + cfg.shard_size - 1) // cfg.shard_size
    mine = [i for i in range(n_shards) if i % world == rank]
    n_tokens = sum(min(cfg.shard_size, len(seqs) - i * cfg.shard_size) for i in mine) * cfg.seq_len
    from tqdm import tqdm

    bar = tqdm(total=n_tokens, unit="tok", unit_scale=True, desc=f"rank {rank}", disable=None, file=sys.stderr)
    t_shards, done_tokens = time.perf_counter(), 0
    for i in mine:
        path = out / "shards" / f"shard_{i:05d}.safetensors"
        block = seqs[i * cfg.shard_size:(i + 1) * cfg.shard_size]
        if cfg.resume and _shard_ok(path, cfg_hash):
            bar.update(len(block) * cfg.seq_len)
            continue
        parts: dict[str, list[torch.Tensor]] = {}
        for start in range(0, len(block), cfg.batch_size):
            toks = torch.tensor(block[start:start + cfg.batch_size])
            for head in heads:
                res = analyze(lm, toks, head, means[head], k=cfg.k, cspa=cspa, neighbours=neighbours,
                              effects=tuple(cfg.effects), ln_modes=tuple(cfg.ln_modes),
                              topk_groups=STORED_TOPK_VARIANTS)
                for name, t in compact(res, cfg.k_attn).items():
                    parts.setdefault(f"{head_key(head)}/{name}", []).append(t)
            parts.setdefault("tokens", []).append(toks.to(torch.int32))
            bar.update(toks.numel())
        save_tensors(path, {k: torch.cat(v, 0) for k, v in parts.items()},
                     {"config_hash": cfg_hash, "shard": str(i)})
        done_tokens += len(block) * cfg.seq_len
    bar.close()
    shard_seconds = time.perf_counter() - t_shards
    _barrier(world)
    if rank == 0:
        _finish(cfg, lm, heads, out, n_shards, len(seqs), cfg_hash, log)
    _barrier(world)
    if done_tokens:
        log(f"rank {rank}: analysed {done_tokens} tokens in {shard_seconds:.1f} s "
            f"({done_tokens / max(shard_seconds, 1e-9):.0f} tokens/s)")
    if stats is not None:
        stats.update(shard_seconds=shard_seconds, tokens=done_tokens, total_seconds=time.perf_counter() - t_start)
    return out


def _shard_ok(path: Path, cfg_hash: str) -> bool:
    from safetensors import safe_open

    if not path.exists():
        return False
    try:
        with safe_open(str(path), framework="pt") as f:
            return read_metadata(f).get("config_hash") == cfg_hash
    except Exception:  # noqa: BLE001 - unreadable = redo
        return False


def _finish(cfg: RunConfig, lm, heads, out: Path, n_shards: int, n_seqs: int, cfg_hash: str, log) -> None:
    m = lm.model
    summary = {}
    for head in heads:
        f = circuit_factors(lm, head, DEFAULT_EMBEDDING)
        ov = ranks_from_factors(f["ov_src"], f["ov_dst"], "ov")
        qk = ranks_from_factors(f["qk_dst"], f["qk_src"], "qk")
        save_tensors(out / "circuits" / f"{head_key(head)}.safetensors",
                     {**{k: v.to(torch.float16).cpu() for k, v in f.items()},
                      "ov_rank": ov.to(torch.int32), "qk_rank": qk.to(torch.int32)},
                     {"embedding": DEFAULT_EMBEDDING})
        summary[head_key(head)] = {"ov": rank_summary(ov), "qk": rank_summary(qk)}
    save_tensors(out / "semantic.safetensors", semantic_neighbours(m.tokenizer))
    m.tokenizer.save_pretrained(str(out / "tokenizer"))
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "model": lm.provenance,
        "heads": [head_key(h) for h in heads],
        "dataset": {"name": cfg.dataset, "split": cfg.split, "seed": cfg.seed,
                    "selection": "documents shuffled with random.Random(seed); first n_seqs with >= seq_len tokens "
                                 "(BOS prepended); each cut to seq_len"},
        "counts": {"n_sequences": n_seqs, "seq_len": cfg.seq_len, "shard_size": cfg.shard_size,
                   "n_shards": n_shards},
        "hyperparameters": {
            **{k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("out", "resume", "device", "heads")},
            "cspa": cfg.cspa().as_metadata(),
            "mean": f"per-position mean of the head output over the first {cfg.n_mean} shuffled documents, "
                    f"each cut to n_ctx; position p averages the documents that reach it",
            "ablation": "mean ablation; effects direct/both/indirect x final LN frozen/unfrozen",
            "circuit_embedding": DEFAULT_EMBEDDING,
            "stored_dtypes": "floats float16, ids int32",
        },
        "config_hash": cfg_hash,
        "files": {},
    }
    # index + summary need the shards; write them, then checksum every file, manifest last
    for head in heads:
        key = head_key(head)
        tensors = {}
        fields = {name: torch.from_numpy(read_field(out, n_shards, f"{key}/{name}"))
                  for name in ("delta_loss_direct_frozen", "kl_direct_frozen", "delta_loss_cspa", "kl_cspa", "loss")}
        for metric, (name, how) in INDEX_METRICS.items():
            vals = fields[name].float()
            score = vals.abs() if how == "abs" else (-vals if how == "smallest" else vals)
            flat = score.reshape(-1)
            top = flat.topk(min(INDEX_SIZE, flat.numel())).indices
            per = vals.shape[1]
            tensors[f"{metric}_seq"] = (top // per).to(torch.int32)
            tensors[f"{metric}_pos"] = (top % per).to(torch.int32)
            tensors[f"{metric}_value"] = vals.reshape(-1)[top].to(torch.float32)
        save_tensors(out / "index" / f"{key}.safetensors", tensors)
        s = summary_metrics(fields["kl_direct_frozen"].float(), fields["kl_cspa"].float(),
                            fields["delta_loss_direct_frozen"].float(), fields["delta_loss_cspa"].float())
        s["mean_clean_loss"] = float(fields["loss"].double().mean())
        summary[key]["cspa"] = s
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and not p.name.startswith(".")
                   and p.name != MANIFEST and p.name != "README.md")
    manifest["files"] = {rel: file_entry(out, rel) for rel in files}
    manifest["summary"] = summary
    write_json(out / MANIFEST, manifest)
    log(f"wrote {n_seqs} sequences x {cfg.seq_len} tokens in {n_shards} shards to {out}")

