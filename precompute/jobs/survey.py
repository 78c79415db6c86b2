"""``SurveyConfig`` and the survey job: ``python -m precompute survey --model M --dataset D --n-seqs N --seq-len S
--out DIR`` writes a survey folder (``store.survey``) with full provenance. The options are generated from the
fields below, like ``run``'s."""

from __future__ import annotations

import dataclasses
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import InvalidInputError
from ..validate import whole_number
from .config import (
    batch_size_option,
    dataset_option,
    device_option,
    model_option,
    option,
    out_option,
    overwrite_option,
    split_option,
)

LIMITS = {
    "n_seqs": 1_000_000,
    "lens_seqs": 1_000_000,
    "seq_len": 1 << 16,
    "batch_size": 4096,
    "n_mean": 1_000_000,
    "n_repeat": 100_000,
    "n_ioi": 100_000,
    "repeat_len": 4096,
    "circuit_rows": 1 << 24,
    "qk_distance": 1 << 20,
}


def _rows(text: str) -> int | None:
    if str(text).strip().lower() in ("all", "none", "0"):
        return None
    try:
        return int(text)
    except ValueError:
        raise InvalidInputError(f"--circuit-rows must be a whole number or 'all', got {text!r}") from None


@dataclass
class SurveyConfig:
    """Settings of one survey (every field but out/device/overwrite is recorded with it)."""

    model: str = model_option()
    dataset: str = dataset_option()
    split: str = split_option()
    seed: int = option(6, "document shuffle seed; also seeds the random tokens and the IOI names")
    n_seqs: int = option(64, "sequences for the ablation and CSPA columns")
    seq_len: int = option(256, "tokens per sequence, BOS included")
    batch_size: int = batch_size_option()
    n_mean: int = option(32, "the first n_mean sequences give each head's mean output μ")
    lens_seqs: int = option(
        48, "sequences the survey's tuned lens is fitted on, the last quarter held out (at least --n-seqs are used)"
    )
    circuit_rows: int | None = option(2048, "tokens sampled for ov/qk_top10, or 'all'", parse=_rows)
    qk_distance: int = option(16, "rotary models: qk_top10 for keys this many positions back (learned positions: none)")
    n_repeat: int = option(100, "repeated random sequences for induction and anti-induction (original: 100)")
    repeat_len: int = option(30, "length of each random half (original: 30)")
    n_ioi: int = option(100, "IOI prompts (original: 100)")
    device: str = device_option()
    out: str = out_option("artifacts/survey")
    overwrite: bool = overwrite_option("survey")

    def settings(self):
        """The ``SurveySettings`` of this run: every field the two share, copied by name."""
        from ..science.survey import SurveySettings

        shared = {f.name for f in dataclasses.fields(SurveySettings)} & {f.name for f in dataclasses.fields(self)}
        return SurveySettings(**{name: getattr(self, name) for name in shared})

    def validate(self) -> None:
        for name, limit in LIMITS.items():
            value = getattr(self, name)
            if name == "circuit_rows" and value is None:
                continue
            whole_number(f"--{name.replace('_', '-')}", value, limit)
        if self.seq_len < 2:
            raise InvalidInputError("--seq-len must be at least 2")
        if self.n_mean > self.n_seqs:
            raise InvalidInputError(f"--n-mean {self.n_mean} is above --n-seqs {self.n_seqs}")
        if not str(self.out).strip():
            raise InvalidInputError("--out must name an output folder")


def run_survey(cfg: SurveyConfig, loaded=None, log=print) -> Path:
    """Run the survey and write its folder; ``loaded``: an already loaded model (tests reuse one)."""
    import torch

    from .. import schema
    from ..data.selection import load_sequences
    from ..data.sources import provenance
    from ..models.loading import load_model
    from ..science.survey import survey_heads
    from ..store.files import copy_terms
    from ..store.survey import write_survey

    cfg.validate()
    out = Path(cfg.out).expanduser()
    if out.exists() and not out.is_dir():
        raise InvalidInputError(f"--out {out} exists and is not a folder")
    if (out / schema.SURVEY_MANIFEST).exists() and not cfg.overwrite:
        raise InvalidInputError(f"--out {out} already holds a survey; pass --overwrite or choose a new folder")
    t0 = time.perf_counter()
    lm = loaded if loaded is not None else load_model(cfg.model, device=cfg.device)
    n_lens = max(cfg.n_seqs, cfg.lens_seqs)
    every = torch.tensor(
        load_sequences(cfg.dataset, cfg.split, cfg.seed, lm.tokenizer, n_lens, cfg.seq_len, n_ctx=lm.model.cfg.n_ctx)
    )
    tokens = every[: cfg.n_seqs]
    df = survey_heads(lm, tokens, cfg.settings(), progress=lambda text, frac: log(f"survey: {text}"), lens_tokens=every)
    if (out / schema.SURVEY_MANIFEST).exists():
        (out / schema.SURVEY_MANIFEST).unlink()
    dataset = {
        "name": cfg.dataset,
        "split": cfg.split,
        "seed": cfg.seed,
        "n_sequences": len(tokens),
        "seq_len": cfg.seq_len,
        "provenance": provenance(cfg.dataset),
    }
    write_survey(df, out, dataset)
    copy_terms(lm.provenance, out)  # a licence's terms and notice travel with weight-derived tables
    log(f"survey of {len(df)} heads written to {out} in {time.perf_counter() - t0:.1f} s")
    return out


def config_from_args(args) -> SurveyConfig:
    return SurveyConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(SurveyConfig)})


def main_survey(args) -> None:
    run_survey(config_from_args(args), log=lambda msg: print(msg, file=sys.stderr))
