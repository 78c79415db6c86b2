"""The precompute job: documents -> sequences -> ``analyze`` in batches -> sharded safetensors + manifest.

Resumable (shards are written atomically and carry a hash of the run configuration; ``resume`` skips shards that
are complete and match), verifiable (``store.verify``), and distributed with ``torchrun`` (ranks take shards
``i % world_size == rank``; rank 0 writes the shared files and the manifest, last: ``finish``).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from pathlib import Path

import torch

from .. import schema
from ..data.selection import load_sequences
from ..errors import InvalidInputError
from ..models.heads import check_head
from ..models.loading import load_model
from ..science import readout as readouts
from ..science.analysis import analyze, mean_result
from ..science.progress import duration, throttled
from ..science.semantic import neighbour_table, semantic_neighbours
from ..science.tuned_lens import fit_tuned_lens
from ..store.files import read_metadata, save_tensors
from ..store.records import compact
from .config import RunConfig
from .faults import fault_point
from .finish import finish

PROGRESS_EVERY_S = 5.0  # the run's progress lines: at most this far apart while it analyses

LENS_QUALITY_TOKENS = 512  # held-out positions per layer scored for the tuned lens's quality
# what a run folder holds; only these are removed by --overwrite or as stale files
LAYOUT = (
    schema.MANIFEST,
    "shards",
    "mean",
    "circuits",
    "index",
    schema.SEMANTIC_FILE,
    schema.TOKENIZER_DIR,
    schema.TUNED_LENS_FILE,
)


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


def prepare_out(cfg: RunConfig) -> Path:
    """The output folder, made safe to write: a run already there is refused unless --resume / --overwrite."""
    out = Path(cfg.out).expanduser()
    if out.exists() and not out.is_dir():
        raise InvalidInputError(f"--out {out} exists and is not a folder")
    existing = sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) if out.exists() else []
    if existing and not (cfg.resume or cfg.overwrite):
        raise InvalidInputError(
            f"--out {out} is not empty ({', '.join(existing[:3])}…); pass --resume to continue "
            "the run there, --overwrite to replace it, or choose a new folder"
        )
    if cfg.overwrite:
        for name in LAYOUT:
            path = out / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.exists() or path.is_symlink():
                path.unlink()
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        raise InvalidInputError(f"cannot write to the output folder {out}: {err.strerror or err}") from None
    return out


def run(cfg: RunConfig, loaded=None, log=print, stats: dict | None = None) -> Path:
    """Run the job; returns the output folder. ``loaded``: an already loaded model (tests reuse one).
    ``stats``, if given, receives timings: seconds spent analysing shards, tokens analysed, total seconds."""
    t_start = time.perf_counter()
    cfg.validate()
    rank, world = _dist()
    out = prepare_out(cfg) if rank == 0 else Path(cfg.out).expanduser()
    _barrier(world)
    lm = loaded if loaded is not None else load_model(cfg.model, device=cfg.device)
    cfg, heads = _settle(cfg, lm)
    if rank == 0:
        (out / schema.MANIFEST).unlink(missing_ok=True)  # no manifest may point at shards being rewritten
    seqs = load_sequences(cfg.dataset, cfg.split, cfg.seed, lm.tokenizer, cfg.n_seqs, cfg.seq_len)
    cfg_hash = cfg.hash()
    means = _mean_results(cfg, lm, heads, seqs, out if rank == 0 else None, cfg_hash)
    fault_point("after_mean")
    lens, chosen = _readouts(cfg, lm, heads, seqs, log)
    _check_cspa_memory(cfg)
    n_shards = (len(seqs) + cfg.shard_size - 1) // cfg.shard_size
    if rank == 0:
        _remove_stale_shards(out, n_shards)
    t_shards = time.perf_counter()
    done_tokens = _analyse_shards(
        cfg,
        lm,
        heads,
        means,
        seqs,
        out,
        [i for i in range(n_shards) if i % world == rank],
        rank,
        cfg_hash,
        lens,
        chosen,
        log,
    )
    shard_seconds = time.perf_counter() - t_shards
    _barrier(world)
    if rank == 0:
        finish(cfg, lm, heads, out, n_shards, len(seqs), cfg_hash, log, lens, chosen)
    _barrier(world)
    if done_tokens:
        log(
            f"process {rank}: analysed {done_tokens} tokens in {shard_seconds:.1f} s "
            f"({done_tokens / max(shard_seconds, 1e-9):.0f} tokens/s)"
        )
    if stats is not None:
        stats.update(shard_seconds=shard_seconds, tokens=done_tokens, total_seconds=time.perf_counter() - t_start)
    return out


def _settle(cfg: RunConfig, lm) -> tuple[RunConfig, list[tuple[int, int]]]:
    """The config with its default head filled in, checked against the loaded model (which is cast to the
    config's dtype), and its heads."""
    m = lm.model
    if cfg.heads is None:
        cfg = dataclasses.replace(cfg, heads=(lm.default_head,))
    if cfg.seq_len > m.cfg.n_ctx:
        raise InvalidInputError(f"--seq-len {cfg.seq_len} is above the model's context n_ctx = {m.cfg.n_ctx}")
    if cfg.k > m.cfg.d_vocab:
        raise InvalidInputError(f"--k {cfg.k} is above the vocabulary size {m.cfg.d_vocab}")
    heads = [check_head(m, h) for h in cfg.heads or ()]
    if cfg.dtype != "float32":
        m.to(getattr(torch, cfg.dtype))
    return cfg, heads


def _readouts(cfg: RunConfig, lm, heads, seqs, log) -> tuple:
    """The tuned lens fitted on the run's own sequences (every layer; the last quarter held out for its quality),
    and each head's read-out: {head: (read-out, why)} (``science.readout.resolve``)."""
    t0 = time.perf_counter()
    lens = fit_tuned_lens(
        lm,
        torch.tensor(seqs),
        batch_size=cfg.batch_size,
        quality_tokens=LENS_QUALITY_TOKENS,
        progress=throttled(log, PROGRESS_EVERY_S),
    )
    log(
        f"tuned lens fitted on {lens.meta['n_fit_tokens']} positions, scored on "
        f"{lens.meta['n_heldout_tokens_scored']} held-out ones, in {time.perf_counter() - t0:.1f} s"
    )
    chosen = {h: readouts.resolve(cfg.readout, lens, h[0], lm.paper_model) for h in heads}
    return lens, chosen


def _mean_results(cfg: RunConfig, lm, heads, seqs, out: Path | None, cfg_hash: str) -> dict:
    """The paper's μ of each head: per position, the mean over the first n_mean analysed sequences (full
    length); written to ``out`` (rank 0) with the config hash that ``--resume`` checks."""
    means = {}
    mean_tokens = torch.tensor(seqs[: cfg.n_mean])
    for head in heads:
        mu = mean_result(lm, mean_tokens, head, batch_size=cfg.batch_size)
        count = torch.full((mu.shape[0],), len(mean_tokens), dtype=torch.int32)
        means[head] = mu
        if out is not None:
            save_tensors(
                out / schema.head_file("mean", head),
                {schema.MEAN_RESULT: mu.contiguous(), schema.MEAN_COUNT: count.to(torch.int32)},
                {"config_hash": cfg_hash},
            )
    return means


def _analyse_shards(
    cfg: RunConfig,
    lm,
    heads,
    means: dict,
    seqs,
    out: Path,
    mine: list[int],
    rank: int,
    cfg_hash: str,
    lens,
    chosen: dict,
    log=print,
) -> int:
    """Analyse and write shards ``mine`` (those of a finished earlier run with this config hash are kept under
    ``--resume``); returns the tokens analysed."""
    cspa = cfg.cspa()
    neighbours = neighbour_table(semantic_neighbours(lm.tokenizer), cspa.k_s) if cspa.k_s > 1 else None
    n_tokens = sum(min(cfg.shard_size, len(seqs) - i * cfg.shard_size) for i in mine) * cfg.seq_len
    done_tokens, seen = 0, 0
    t0 = last = time.perf_counter()

    def progress(n: int) -> None:  # a line every PROGRESS_EVERY_S seconds and at the end, never a bar
        nonlocal seen, last
        seen += n
        now = time.perf_counter()
        if now - last >= PROGRESS_EVERY_S or seen == n_tokens:
            rate = seen / max(now - t0, 1e-9)
            left = f", about {duration((n_tokens - seen) / rate)} left" if seen < n_tokens else ""
            log(f"process {rank}: analysed {seen:,}/{n_tokens:,} tokens, {rate:,.0f} tokens/s{left}")
            last = now

    for i in mine:
        path = out / schema.shard_path(i)
        block = seqs[i * cfg.shard_size : (i + 1) * cfg.shard_size]
        if cfg.resume and _shard_ok(path, cfg_hash):
            progress(len(block) * cfg.seq_len)
            continue
        parts: dict[str, list[torch.Tensor]] = {}
        for start in range(0, len(block), cfg.batch_size):
            toks = torch.tensor(block[start : start + cfg.batch_size])
            for head in heads:
                res = analyze(
                    lm,
                    toks,
                    head,
                    means[head],
                    k=cfg.k,
                    cspa=cspa,
                    neighbours=neighbours,
                    effects=tuple(cfg.effects),
                    ln_modes=tuple(cfg.ln_modes),
                    topk_groups=schema.STORED_TOPK_VARIANTS,
                    readout=chosen[head][0],
                    lens=lens,
                )
                for name, t in compact(res, cfg.k_attn).items():
                    parts.setdefault(schema.tensor_name(head, name), []).append(t)
            parts.setdefault(schema.TOKENS, []).append(toks.to(torch.int32))
            progress(toks.numel())
        save_tensors(path, {k: torch.cat(v, 0) for k, v in parts.items()}, {"config_hash": cfg_hash, "shard": str(i)})
        fault_point(f"after_shard:{i}")
        done_tokens += len(block) * cfg.seq_len
    return done_tokens


def _check_cspa_memory(cfg: RunConfig) -> None:
    """CSPA with k_s > 1 holds a few [batch, seq, seq, k_s, k_s] tensors: refuse settings that cannot fit."""
    need = 4 * 4 * cfg.batch_size * cfg.seq_len**2 * cfg.cspa_k_s**2
    try:
        have = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return
    if cfg.cspa_k_s > 1 and need > have:
        raise InvalidInputError(
            f"--cspa-k-s {cfg.cspa_k_s} with --batch-size {cfg.batch_size} and --seq-len "
            f"{cfg.seq_len} needs about {need / 2**30:.1f} GiB for CSPA; {have / 2**30:.1f} GiB "
            "are free. Lower --batch-size or --cspa-k-s"
        )


def _remove_stale_shards(out: Path, n_shards: int) -> None:
    """Shards beyond this run's count (left by an earlier, longer run) are deleted so none is ever listed."""
    folder = out / "shards"
    if not folder.is_dir():
        return
    keep = {Path(schema.shard_path(i)).name for i in range(n_shards)}
    for path in folder.iterdir():
        if path.name not in keep and path.suffix == ".safetensors":
            path.unlink()


def _shard_ok(path: Path, cfg_hash: str) -> bool:
    from safetensors import safe_open

    if not path.is_file():
        return False
    try:
        with safe_open(str(path), framework="pt") as f:
            return read_metadata(f).get("config_hash") == cfg_hash
    except Exception:  # noqa: BLE001 - unreadable = redo
        return False
