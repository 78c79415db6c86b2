"""``RunConfig``: every setting of one precompute run, its command-line form, and its validation.

Each field carries its help text and, where the value is not a plain int/str, its parser in ``metadata``; the
``run`` subcommand's options are generated from these fields (``cli.add_dataclass_options``), so a setting is
declared once. Every field is recorded in the manifest.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field

from .. import paper, schema
from ..errors import InvalidInputError
from ..schema import EFFECTS, LN_MODES, parse_heads
from ..science import readout as readouts
from ..science.cspa import INTERVENTIONS, CSPAConfig
from ..science.joint import group_key, parse_groups
from ..store.records import DEFAULT_K_ATTN
from ..validate import whole_number

PAPER_N_MEAN = paper.RUN["n_mean"]
# upper bounds that keep a run inside a machine (each also checked against the model where that matters)
LIMITS = {
    "n_seqs": 10_000_000,
    "batch_size": 4096,
    "shard_size": 1_000_000,
    "n_mean": 10_000_000,
    "k": 1000,
    "k_attn": 1024,
    "cspa_k_s": 32,
    "seed": 2**32 - 1,
}


def parse_k_u(text: str) -> float | int:
    """A fraction ('0.05') or a count ('5') of distinct tokens kept per destination."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise InvalidInputError(f"--cspa-k-u must be a number, got {text!r}") from None
    if not math.isfinite(value):
        raise InvalidInputError(f"--cspa-k-u must be a finite number, got {text!r}")
    if "." not in text and "e" not in text.lower() and value >= 1:
        return int(value)
    return value


def parse_names(allowed: tuple[str, ...]):
    def parse(text: str) -> tuple[str, ...]:
        return tuple(x.strip() for x in str(text).split(",") if x.strip())

    parse.__doc__ = f"comma list of {', '.join(allowed)}"
    return parse


def option(default, help: str, **meta):
    """A dataclass field with its command-line help and metadata (see ``cli.add_dataclass_options``)."""
    return field(default=default, metadata={"help": help, **meta})


# the options a run and a survey share, written once (each config declares the field, its meaning is here)
MODEL_HELP = (
    "model: gpt2-small, gpt2-small-random, toy, smollm2-135m, a .gguf file, a Hugging Face id or a local folder"
)
DATASET_HELP = "Hub dataset, a local .txt/.jsonl file or folder, 'python-docs' (real English, offline) or 'synthetic'"


def model_option():
    return option("gpt2-small", MODEL_HELP)


def dataset_option():
    return option(paper.DATASET, DATASET_HELP)


def split_option():
    return option("train", "dataset split")


def batch_size_option():
    return option(8, "sequences per forward pass")


def device_option():
    return option("auto", "auto, cpu or cuda", record=False)


def out_option(default: str):
    return option(default, "output folder", record=False)


def overwrite_option(what: str):
    return option(False, f"replace a {what} already in --out (its files are removed first)", record=False)


@dataclass
class RunConfig:
    """Settings of one precompute run (every field is recorded in the manifest)."""

    model: str = model_option()
    heads: tuple[tuple[int, int], ...] | None = option(
        None,
        "heads, e.g. 10.7,11.10 (default: the model's head)",
        parse=parse_heads,
        show=lambda v: ",".join(schema.head_key(h) for h in v),
    )
    dataset: str = dataset_option()
    split: str = split_option()
    seed: int = option(6, "document shuffle seed (paper: 6)")
    n_seqs: int = option(500, "sequences to analyse")
    seq_len: int = option(1000, "tokens per sequence, BOS included")
    batch_size: int = batch_size_option()
    shard_size: int = option(64, "sequences per shard file")
    n_mean: int = option(
        None,
        "the first n_mean analysed sequences give the per-position mean μ (default: the paper's 100, or every "
        "sequence when --n-seqs is below 100)",
        parse=int,
    )
    k: int = option(10, "top-k kept for every vocabulary-sized quantity")
    k_attn: int = option(DEFAULT_K_ATTN, "attention sources stored per query")
    cspa_k_u: float | int = option(0.05, "CSPA K_u: fraction (0.05) or count (5)", parse=parse_k_u)
    cspa_k_s: int = option(1, "CSPA K_s: semantic neighbours per source, the token itself included")
    cspa_negative_only: bool = option(True, "keep positive components too", flag="--cspa-both-signs")
    cspa_exclusions: str = option(
        "paper",
        "source tokens CSPA never keeps: the paper's list or the project's extended one",
        choices=("paper", "extended"),
    )
    cspa_interventions: tuple[str, ...] = option(
        INTERVENTIONS,
        "CSPA interventions: qk,ov (the paper's CSPA), qk (QK only) or ov (OV only: no QK filter)",
        parse=parse_names(INTERVENTIONS),
        show=",".join,
    )
    readout: str = option(
        readouts.AUTO,
        "what 'predicted' means for CSPA and the prediction fields: auto (GPT-2 small: the paper's logit lens; "
        "other models: whichever of the logit and tuned lens agrees best with the model on held-out text), "
        "logit_lens, tuned_lens, or final_minus_head (a diagnostic that reads later layers)",
        choices=(readouts.AUTO, *readouts.READOUTS),
    )
    groups: tuple[tuple[tuple[int, int], ...], ...] = option(
        (),
        "sets of heads measured together, e.g. 24.4+23.3 (their direct effects mean-ablated together and CSPA of "
        "all of them; heads outside --heads get their mean on the run's text)",
        parse=parse_groups,
        show=lambda v: ",".join(group_key(g) for g in v) or "none",
    )
    indirect_excluding: tuple[tuple[int, int], ...] = option(
        (),
        "later heads whose paths the indirect effect leaves out, e.g. 11.10 (the paper: 10.7 without 11.10)",
        parse=parse_heads,
        show=lambda v: ",".join(schema.head_key(h) for h in v) or "none",
    )
    effects: tuple[str, ...] = option(
        EFFECTS,
        "ablation effects: direct,both,indirect (direct is the paper's)",
        parse=parse_names(EFFECTS),
        show=",".join,
    )
    ln_modes: tuple[str, ...] = option(
        LN_MODES, "final LayerNorm modes: frozen,unfrozen", parse=parse_names(LN_MODES), show=",".join
    )
    device: str = device_option()
    dtype: str = option("float32", "forward precision", choices=("float32", "bfloat16", "float16"))
    out: str = out_option("artifacts/run")
    resume: bool = option(False, "keep shards already complete and valid, redo the rest", record=False)
    overwrite: bool = overwrite_option("run")

    def __post_init__(self) -> None:
        chosen = tuple(
            self.cspa_interventions
        )  # recorded in the paper's order (qk,ov), unknown names kept for validate
        self.cspa_interventions = tuple(x for x in INTERVENTIONS if x in chosen) + tuple(
            x for x in chosen if x not in INTERVENTIONS
        )
        if self.n_mean is None:  # the paper's 100, or all the sequences there are (recorded as the value used)
            self.n_mean = min(PAPER_N_MEAN, self.n_seqs) if isinstance(self.n_seqs, int) else PAPER_N_MEAN

    def cspa(self) -> CSPAConfig:
        return CSPAConfig(
            k_u=self.cspa_k_u,
            k_s=self.cspa_k_s,
            negative_only=self.cspa_negative_only,
            exclusions=self.cspa_exclusions,
            interventions=self.cspa_interventions,
        )

    def validate(self) -> None:
        for name in ("n_seqs", "batch_size", "shard_size", "n_mean", "k", "k_attn", "cspa_k_s"):
            whole_number(f"--{name.replace('_', '-')}", getattr(self, name), LIMITS[name])
        if not isinstance(self.seed, int) or not 0 <= self.seed <= LIMITS["seed"]:
            raise InvalidInputError(f"--seed must be an integer in [0, {LIMITS['seed']}], got {self.seed!r}")
        if self.n_mean > self.n_seqs:
            raise InvalidInputError(
                f"--n-mean {self.n_mean} is above --n-seqs {self.n_seqs}: the mean is taken over "
                "the first n_mean analysed sequences"
            )
        if not isinstance(self.seq_len, int) or self.seq_len < 2:
            raise InvalidInputError(f"--seq-len must be at least 2 (BOS plus one token), got {self.seq_len}")
        if self.heads is not None:
            if not self.heads:
                raise InvalidInputError("give at least one head, e.g. --heads 10.7")
            if len(set(self.heads)) != len(self.heads):
                raise InvalidInputError("--heads names a head twice")
        if not self.effects or any(e not in EFFECTS for e in self.effects) or "direct" not in self.effects:
            raise InvalidInputError(
                f"--effects must be a comma list of {', '.join(EFFECTS)} including 'direct'; "
                f"got {','.join(self.effects) or 'nothing'}"
            )
        if not self.ln_modes or any(x not in LN_MODES for x in self.ln_modes) or "frozen" not in self.ln_modes:
            raise InvalidInputError(
                f"--ln-modes must be a comma list of {', '.join(LN_MODES)} including 'frozen'; "
                f"got {','.join(self.ln_modes) or 'nothing'}"
            )
        if self.readout not in (readouts.AUTO, *readouts.READOUTS):
            raise InvalidInputError(
                f"--readout must be one of {', '.join((readouts.AUTO, *readouts.READOUTS))}, got {self.readout!r:.40}"
            )
        if self.dtype not in ("float32", "bfloat16", "float16"):
            raise InvalidInputError(f"--dtype must be float32, bfloat16 or float16, got {self.dtype!r}")
        if self.dtype != "float32" and set(self.effects) != {"direct"}:
            raise InvalidInputError(
                f"--dtype {self.dtype} computes the direct effect only: the 'both'/'indirect' "
                "effects would subtract a float32 re-run from low-precision clean logits, so "
                "rounding would not cancel. Add --effects direct, or use --dtype float32"
            )
        if not isinstance(self.out, str) or not self.out.strip():
            raise InvalidInputError("--out must name an output folder (it is empty)")
        if self.resume and self.overwrite:
            raise InvalidInputError("--resume and --overwrite exclude each other")
        k_u = self.cspa_k_u
        if isinstance(k_u, float) and not math.isfinite(k_u):
            raise InvalidInputError(f"--cspa-k-u must be a finite number, got {k_u}")
        if isinstance(k_u, int) and not isinstance(k_u, bool) and k_u > self.seq_len:
            raise InvalidInputError(f"--cspa-k-u {k_u} keeps more tokens than a sequence has ({self.seq_len})")
        self.cspa()

    def recorded(self) -> dict:
        """The fields written into the manifest's hyperparameters (heads, device, out and the flags are not)."""
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.metadata.get("record", True) and f.name != "heads"
        }

    def hash(self) -> str:
        keys = {k: v for k, v in dataclasses.asdict(self).items() if k not in ("device", "out", "resume", "overwrite")}
        keys["schema_version"] = schema.SCHEMA_VERSION
        return hashlib.sha256(json.dumps(keys, sort_keys=True, default=str).encode()).hexdigest()[:16]
