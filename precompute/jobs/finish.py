"""The end of a run (rank 0): circuits, semantic neighbours, the tokenizer, the search index, the summary, and the
manifest with every file's checksum, written last."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import torch

from .. import schema
from ..data.selection import RULE as SELECTION_RULE
from ..data.sources import provenance as dataset_provenance
from ..models import architecture
from ..science import predicted
from ..science.causal_qk import causal_qk
from ..science.circuits import (
    DEFAULT_EMBEDDING,
    QK_DISTANCES,
    attended_distances,
    circuit_factors,
    qk_at_distance,
    rank_summary,
    ranked_rows,
    ranks_of,
)
from ..science.cspa import default_excluded, summary_metrics
from ..science.cspa_interventions import compare_readouts
from ..science.indirect import indirect_excluding
from ..science.joint import group_key, joint_effect, mean_results_for
from ..science.ov_dynamic import ov_dynamic
from ..science.progress import duration, throttled
from ..science.readout import READOUTS
from ..science.semantic import rules as semantic_rules
from ..science.semantic import semantic_neighbours
from ..store.files import copy_terms, save_tensors, write_json
from ..store.manifest import file_entry
from ..store.reader import read_field
from ..summaries import CSPASummary
from .config import RunConfig
from .faults import fault_point

INDEX_SIZE = 2000


def write_circuits(lm, head, out: Path, n_shards: int) -> dict:
    """OV/QK factors and diagonal ranks of ``head``; returns their rank summaries. On a rotary model the QK side is
    stored rotated to the distance the head attends over on the run's text (its median), the QK ranks are those
    at that distance, and ``qk_by_distance`` holds the ranks at ``QK_DISTANCES``; GPT-2 keeps the paper's QK."""
    f = circuit_factors(lm, head, DEFAULT_EMBEDDING)
    extra: dict = {}
    meta = {"embedding": DEFAULT_EMBEDDING, "qk": "paper: no positions (learned absolute positions left out)"}
    V = lm.model.cfg.d_vocab
    ids = ranked_rows(lm.tokenizer, V)  # every token, or a sample of a large vocabulary (−1 elsewhere)
    meta["ranked"] = "every token" if ids is None else f"a seeded sample of {len(ids)} text tokens; -1 elsewhere"

    def summary(r: torch.Tensor) -> dict:
        return (rank_summary(r) if ids is None else rank_summary(r[ids], ids=ids)).as_dict()

    if architecture.of(lm.model).rotary:

        def read(name: str) -> torch.Tensor:
            return torch.from_numpy(read_field(out, n_shards, schema.tensor_name(head, name)).astype("float32"))

        attended = attended_distances(read(schema.ATTN_TOPK_POS).long(), read(schema.ATTN_TOPK_WEIGHT))
        distance = attended["median"] if attended else QK_DISTANCES[0]
        for d in QK_DISTANCES:  # sections of numbers, as the manifest's summary holds
            rotated = qk_at_distance(lm, f["qk_dst"], d, head[0])
            extra[f"qk_at_{d}"] = summary(ranks_of(rotated, f["qk_src"], "qk", ids, V))
        f["qk_dst"] = qk_at_distance(lm, f["qk_dst"], distance, head[0])
        extra["qk_distance"] = {"used": distance, **({} if attended is None else attended["quantiles"])}
        meta["qk"] = f"rotary: qk_dst rotated to distance {distance} (the head's attended median on the run's text)"
    ranks = {
        "ov": ranks_of(f["ov_src"], f["ov_dst"], "ov", ids, V),
        "qk": ranks_of(f["qk_dst"], f["qk_src"], "qk", ids, V),
    }
    save_tensors(
        out / schema.head_file("circuits", head),
        {
            **{k: v.to(torch.float16).cpu() for k, v in f.items()},
            **{schema.CIRCUIT_RANKS[c]: r.to(torch.int32) for c, r in ranks.items()},
        },
        meta,
    )
    sampled = {} if ids is None else {"ranked": {"tokens": len(ids), "of": V}}
    return {**{c: summary(r) for c, r in ranks.items()}, **extra, **sampled}


def write_index(out: Path, head, n_shards: int) -> CSPASummary:
    """The search index (top tokens by each metric) and the CSPA summary of ``head``."""

    def read(quantity: str, group: str | None = None) -> torch.Tensor:
        return torch.from_numpy(read_field(out, n_shards, schema.tensor_name(head, schema.key(quantity, group))))

    tensors = {}
    for metric, (quantity, group, how) in schema.INDEX_METRICS.items():
        vals = read(quantity, group).float()
        score = vals.abs() if how == "abs" else (-vals if how == "smallest" else vals)
        top = score.reshape(-1).topk(min(INDEX_SIZE, score.numel())).indices
        per = vals.shape[1]
        tensors[schema.index_key(metric, "seq")] = (top // per).to(torch.int32)
        tensors[schema.index_key(metric, "pos")] = (top % per).to(torch.int32)
        tensors[schema.index_key(metric, "value")] = vals.reshape(-1)[top].to(torch.float32)
    save_tensors(out / schema.head_file("index", head), tensors)
    v, c = schema.PAPER_VARIANT, schema.CSPA
    s = summary_metrics(
        read("kl", v).float(), read("kl", c).float(), read("delta_loss", v).float(), read("delta_loss", c).float()
    )
    return dataclasses.replace(s, mean_clean_loss=float(read(schema.LOSS).double().mean()))


def _stored_means(out: Path, heads) -> dict:
    """Each head's μ as the run stored it (``mean/L.H.safetensors``), read once for every step of the finish."""
    from safetensors.torch import load_file

    return {h: load_file(str(out / schema.head_file("mean", h)))[schema.MEAN_RESULT].float() for h in heads}


def _indirect_excluding(lm, tokens: torch.Tensor, head, later, mu: torch.Tensor, cfg: RunConfig) -> dict:
    """Mean Δloss of ``head``'s indirect effect without the paths through ``later`` heads, over the run's tokens."""
    parts: dict[str, list[torch.Tensor]] = {"frozen": [], "unfrozen": []}
    for start in range(0, tokens.shape[0], cfg.batch_size):
        got = indirect_excluding(lm, tokens[start : start + cfg.batch_size], head, mu, later)
        for k, v in got.items():
            parts[k].append(v.flatten())
    frozen, unfrozen = torch.cat(parts["frozen"]).double(), torch.cat(parts["unfrozen"]).double()
    return {
        "delta_loss_frozen": float(frozen.mean()),
        "delta_loss_unfrozen": float(unfrozen.mean()),
        "n_tokens": int(frozen.numel()),
    }  # which heads: hyperparameters.indirect_excluding


def _exclusions(cfg: RunConfig, tokenizer) -> dict:
    """The exclusion list as used: its name, the resolved token ids, and the strings that are not one token."""
    from ..data.function_words import exclusion_ids

    ids, missing = exclusion_ids(tokenizer, cfg.cspa_exclusions)
    return {"exclusions": cfg.cspa_exclusions, "excluded_ids": ids, "exclusions_not_single_tokens": missing}


def _attends_predicted(out: Path, head, n_shards: int, tokens: torch.Tensor, excluded: torch.Tensor) -> dict:
    """Step one of the verdict from the stored fields: attention to predicted sources vs chance (``predicted``)."""

    def read(name: str) -> torch.Tensor:
        return torch.from_numpy(read_field(out, n_shards, schema.tensor_name(head, name)).astype("float32"))

    top_ids = read(schema.topk_ids(schema.LENS)).long()
    return predicted.from_stored(
        tokens,
        read(schema.ATTN_TOPK_POS).long(),
        read(schema.ATTN_TOPK_WEIGHT),
        top_ids,
        excluded,
        top=min(predicted.TOP, top_ids.shape[-1]),
    )


def _by_readout(lm, tokens, head, mu: torch.Tensor, cfg: RunConfig, lens, used: str, table, log=print) -> dict:
    """CSPA under every read-out other than ``used`` (whose figures are the stored summary's) over the run's text."""
    others = tuple(r for r in READOUTS if r != used)
    got = compare_readouts(
        lm, tokens, head, mu, cfg.cspa(), others, lens, table, batch_size=cfg.batch_size, progress=throttled(log)
    )
    return {r: s.brief().as_dict() for r, s in got.items()}


def _groups(lm, tokens, have: dict, cfg: RunConfig, lens, chosen: dict, log, table, step=None) -> dict:
    """Each ``--groups`` set measured together over the run's text (``science.joint``): {"24.4+23.3": summary}.
    ``have``: the run's stored means; heads outside the run get theirs on its first ``n_mean`` sequences."""
    if not cfg.groups:
        return {}
    from ..models.heads import check_head
    from ..science import readout as readouts

    need = {check_head(lm.model, h) for g in cfg.groups for h in g}
    means = mean_results_for(lm, tokens[: cfg.n_mean], sorted(need), have, cfg.batch_size)
    readout_of = {
        h: chosen[h][0] if h in chosen else readouts.resolve(cfg.readout, lens, h[0], lm.paper_model)[0] for h in need
    }
    out_groups = {}
    for g in cfg.groups:
        (step or log)(f"heads {group_key(g)} together ({len(tokens)} sequences)")
        told = throttled(log)
        got = joint_effect(lm, tokens, g, means, cfg.cspa(), readout_of, lens, table, cfg.batch_size, progress=told)
        got["readouts"] = {schema.head_key(h): readout_of[h] for h in g}
        out_groups[group_key(g)] = got
    return out_groups


class Steps:
    """The finishing steps as log lines: each says what starts and how long the one before took."""

    def __init__(self, log):
        self.log, self.t = log, None

    def __call__(self, text: str) -> None:
        now = time.perf_counter()
        before = f" (previous step {duration(now - self.t)})" if self.t is not None else ""
        self.log(f"finishing: {text}…{before}")
        self.t = now

    def done(self) -> None:
        if self.t is not None:
            self.log(f"finishing: done (last step {duration(time.perf_counter() - self.t)})")


def finish(
    cfg: RunConfig, lm, heads, out: Path, n_shards: int, n_seqs: int, cfg_hash: str, log, lens=None, chosen=None
) -> None:
    m = lm.model
    step = Steps(log)
    chosen = chosen or {h: ("logit_lens", "chosen") for h in heads}
    summary = {}
    for h in heads:
        step(f"head {schema.head_key(h)}: OV and QK circuits over the vocabulary")
        summary[schema.head_key(h)] = write_circuits(lm, h, out, n_shards)
    step("semantic neighbours of every token")
    neighbours = semantic_neighbours(m.tokenizer)
    save_tensors(out / schema.SEMANTIC_FILE, neighbours)
    tokens = torch.from_numpy(read_field(out, n_shards, schema.TOKENS).astype("int64"))
    means = _stored_means(out, heads)
    table = None  # the neighbour table CSPA reads with K_s > 1
    if cfg.cspa_k_s > 1:
        from ..science.semantic import neighbour_table

        table = neighbour_table(neighbours, cfg.cspa_k_s)
    for head in heads:  # the OV circuit on the run's own text (up to ov_dynamic.MAX_PAIRS pairs)
        step(f"head {schema.head_key(head)}: the OV circuit on the run's text")
        summary[schema.head_key(head)]["ov_dynamic"] = ov_dynamic(
            lm, tokens, head, neighbours, batch_size=cfg.batch_size
        ).as_dict()
        later = tuple(y for y in cfg.indirect_excluding if y[0] > head[0])
        if later:  # the indirect effect without the paths through these later heads
            step(f"head {schema.head_key(head)}: the indirect effect without {len(later)} later heads")
            summary[schema.head_key(head)]["indirect_excluding"] = _indirect_excluding(
                lm, tokens, head, later, means[head], cfg
            )
    m.tokenizer.save_pretrained(str(out / schema.TOKENIZER_DIR))
    excluded = torch.zeros(m.cfg.d_vocab, dtype=torch.bool)
    excluded[list(default_excluded(m.tokenizer, cfg.cspa_exclusions))] = True
    for head in heads:
        s = summary[schema.head_key(head)]
        step(f"head {schema.head_key(head)}: CSPA index, attention to predicted tokens, the causal QK test")
        cspa = write_index(out, head, n_shards)
        s["cspa"] = cspa.as_dict()
        used = chosen[head][0]
        s["attends_predicted"] = _attends_predicted(out, head, n_shards, tokens, excluded)
        s["causal_qk"] = causal_qk(lm, tokens, head, excluded)
        if lens is not None and lens.has(head[0]):
            s["lens_quality"] = lens.quality.get(head[0], {})
            step(f"head {schema.head_key(head)}: CSPA under the other read-outs ({len(tokens)} sequences)")
            s["cspa_by_readout"] = {
                used: cspa.brief().as_dict(),
                **_by_readout(lm, tokens, head, means[head], cfg, lens, used, table, log),
            }
    groups = _groups(lm, tokens, means, cfg, lens, chosen, log, table, step)
    step("manifest")
    if lens is not None:
        save_tensors(out / schema.TUNED_LENS_FILE, lens.to_tensors(), {"method": lens.meta.get("method", "")})
    manifest = {
        "schema_version": schema.SCHEMA_VERSION,
        "model": {"model_name": lm.name, **lm.provenance},
        "heads": [schema.head_key(h) for h in heads],
        "dataset": {
            "name": cfg.dataset,
            "split": cfg.split,
            "seed": cfg.seed,
            "selection": SELECTION_RULE,
            "provenance": dataset_provenance(cfg.dataset),
        },
        "counts": {"n_sequences": n_seqs, "seq_len": cfg.seq_len, "shard_size": cfg.shard_size, "n_shards": n_shards},
        "hyperparameters": {
            **cfg.recorded(),
            "cspa": {**cfg.cspa().as_metadata(), **_exclusions(cfg, m.tokenizer)},
            "mean": f"per-position mean of the head output over the first {cfg.n_mean} analysed sequences "
            f"(all {cfg.seq_len} tokens long), as the paper",
            "ablation": "mean ablation; effects direct/both/indirect x final LN frozen/unfrozen",
            "circuit_embedding": DEFAULT_EMBEDDING,
            "semantic": semantic_rules(),
            "stored_dtypes": "floats float16, ids int32",
            "readouts": {schema.head_key(h): {"used": r, "why": why} for h, (r, why) in chosen.items()},
            **(
                {}
                if lens is None
                else {"tuned_lens": {**lens.meta, "quality": {str(k): v for k, v in lens.quality.items()}}}
            ),
        },
        "config_hash": cfg_hash,
        "summary": summary,
        **({"groups": groups} if groups else {}),
    }
    files = [schema.shard_path(i) for i in range(n_shards)]
    files += [schema.head_file(kind, h) for h in heads for kind in ("mean", "circuits", "index")]
    files += [schema.SEMANTIC_FILE] + ([schema.TUNED_LENS_FILE] if lens is not None else [])
    files += sorted(f"{schema.TOKENIZER_DIR}/{p.name}" for p in (out / schema.TOKENIZER_DIR).iterdir() if p.is_file())
    files += copy_terms(lm.provenance, out)  # a licence's terms and notice travel with weight-derived files
    manifest["files"] = {rel: file_entry(out, rel) for rel in files}
    fault_point("before_manifest")
    write_json(out / schema.MANIFEST, manifest)
    step.done()
    log(f"wrote {n_seqs} sequences x {cfg.seq_len} tokens in {n_shards} shards to {out}")
