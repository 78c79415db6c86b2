"""The demo recipes: what the app's demo sets are and how each is made, as a precompute job
(``python -m precompute demo``), which the app's launcher calls for its first start.

* ``gpt2``: GPT-2 small's two copy-suppression heads on 200 × 128 tokens of OpenWebText (needs the Hub).
* ``toy``: the SYNTHETIC toy model on its own synthetic text (seconds, offline), and its head survey.
* ``smollm2`` / ``gemma3``: a real model's survey of every head on real English (CPython's documentation), then a
  set for the head the survey ranks as the strongest copy suppressor, with its suggested partner measured together
  (Gemma 3 is opt-in: its Terms of Use travel with the survey and the set).

Every function takes ``log`` (a line at a time) and ``status`` (the build's state as keyword fields: ``what`` it is
making, ``ready`` once a first set exists, ``step`` the latest line), so a caller can show the progress where it
likes; the CLI prints the lines.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .. import paper
from ..errors import ExplorerError

Log = Callable[[str], None]
Status = Callable[..., None]

GPT2_DEMO: dict[str, Any] = dict(
    model="gpt2-small",
    heads=paper.NEGATIVE_HEADS,
    dataset=paper.DATASET,
    n_seqs=200,
    seq_len=128,
    n_mean=50,
    batch_size=8,
    shard_size=50,
    seed=6,
)
TOY_DEMO: dict[str, Any] = dict(
    model="toy",
    heads=((1, 2),),
    dataset="synthetic",
    n_seqs=300,
    seq_len=128,
    n_mean=100,
    batch_size=16,
    shard_size=100,
    seed=6,
)
TOY_SURVEY: dict[str, Any] = dict(
    model="toy", dataset="synthetic", n_seqs=32, seq_len=64, n_mean=16, n_repeat=50, n_ioi=20, circuit_rows=None
)
SMOLLM2_SURVEY: dict[str, Any] = dict(
    model="smollm2-135m",
    dataset="python-docs",
    n_seqs=8,
    seq_len=128,
    n_mean=8,
    n_repeat=50,
    n_ioi=50,
    circuit_rows=512,
    lens_seqs=48,  # the survey's tuned lens: fitted on 36 sequences, scored on 12
    seed=6,
)
SMOLLM2_DEMO: dict[str, Any] = dict(
    model="smollm2-135m", dataset="python-docs", n_seqs=96, seq_len=128, n_mean=48, batch_size=8, shard_size=48, seed=6
)
REAL_MODELS: dict[str, dict[str, Any]] = {
    "smollm2": {
        "label": "SmolLM2-135M",
        "key": "smollm2",
        "model": "smollm2-135m",
        "first_load": "about half a minute",
    },
    "gemma3": {
        "label": "Gemma 3 270M",
        "key": "gemma3",
        "model": "gemma3-270m",
        "first_load": "about one minute",
    },
}
NAMES = ("gpt2", "toy", *REAL_MODELS)


def real_model_recipe(key: str) -> dict:
    """The real model ``key``'s recipe: label, its survey's and its set's settings (read at call time, so a test may
    shrink the module's settings)."""
    if key not in REAL_MODELS:
        raise ExplorerError(f"no real-model demo {key!r}; choose one of {', '.join(REAL_MODELS)}")
    model = REAL_MODELS[key]["model"]
    return {
        **REAL_MODELS[key],
        "survey": {**SMOLLM2_SURVEY, "model": model},
        "demo": {**SMOLLM2_DEMO, "model": model},
    }


def _quiet(**_) -> None:
    pass


def gpt2_set(out_dir: Path, log: Log = print, status: Status = _quiet) -> Path:
    """GPT-2 small's demo set into ``<out_dir>/gpt2-demo`` (needs the Hugging Face Hub)."""
    from .config import RunConfig
    from .pipeline import run

    status(what="GPT-2 small on 200 OpenWebText sequences x 128 tokens")
    return run(RunConfig(out=str(Path(out_dir) / "gpt2-demo"), device="auto", **GPT2_DEMO), log=log)


def toy_set(out_dir: Path, log: Log = print, status: Status = _quiet) -> Path:
    """The toy model's demo set into ``<out_dir>/toy-demo`` (seconds, offline)."""
    from .config import RunConfig
    from .pipeline import run

    what = (
        f"the SYNTHETIC toy model on its own synthetic text, {TOY_DEMO['n_seqs']} sequences x {TOY_DEMO['seq_len']} "
        "tokens"
    )
    status(what=what)
    log(f"Building {what}…")
    return run(RunConfig(out=str(Path(out_dir) / "toy-demo"), device="cpu", overwrite=True, **TOY_DEMO), log=log)


def toy_survey(out_dir: Path, log: Log = print, status: Status = _quiet) -> Path | None:
    """The toy model's head survey into ``<out_dir>/survey-toy`` (a few seconds). A failure is logged, not raised:
    the demo set is what the other pages need."""
    from .survey import SurveyConfig, run_survey

    status(what="the toy model's head survey")
    try:
        return run_survey(
            SurveyConfig(out=str(Path(out_dir) / "survey-toy"), overwrite=True, device="cpu", **TOY_SURVEY), log=log
        )
    except ExplorerError as err:
        log(f"The toy survey could not be built: {err}")
        return None


def real_model_set(out_dir: Path, key: str, log: Log = print, status: Status = _quiet) -> Path | None:
    """A real model's survey of every head into ``survey-<key>``, then a set for the head the survey ranks as the
    strongest copy suppressor (``science.ranking.strongest_copy_suppressor``) with its suggested partner measured
    together, into ``<key>-demo``. Logged, never raised: a demo that cannot be made leaves the others."""
    from ..models.loading import load_model
    from ..science.survey import strongest_copy_suppressor
    from ..science.verdict import suggested_partner
    from ..store.survey import read_survey
    from .config import RunConfig
    from .pipeline import run
    from .survey import SurveyConfig, run_survey

    spec = real_model_recipe(key)
    label = spec["label"]
    out_dir = Path(out_dir)
    try:
        status(what=f"{label} (a real trained model): loading it", ready=True)
        start = time.time()
        log(f"Loading {label} (the first time: its GGUF file dequantised and processed, {spec['first_load']})…")
        lm = load_model(spec["survey"]["model"], device="cpu")
        log(f"{label} loaded in {time.time() - start:.0f} s.")
        status(what=f"{label}'s head survey on CPython's documentation (a few minutes)", ready=True)
        survey = run_survey(
            SurveyConfig(out=str(out_dir / f"survey-{key}"), overwrite=True, device="cpu", **spec["survey"]),
            loaded=lm,
            log=log,
        )
        df = read_survey(survey)[0]
        head = strongest_copy_suppressor(df)
        partner = suggested_partner(df, head)  # measured together with the head (copy suppression can be shared)
        status(
            what=f"{label} head {head[0]}.{head[1]} (the survey's strongest copy suppressor) on "
            f"{spec['demo']['n_seqs']} sequences of CPython's documentation",
            ready=True,
        )
        path = run(
            RunConfig(
                out=str(out_dir / f"{key}-demo"),
                device="cpu",
                overwrite=True,
                heads=(head,),
                groups=((head, partner),) if partner else (),
                **spec["demo"],
            ),
            loaded=lm,
            log=log,
        )
        log(f"Built {path} (head {head[0]}.{head[1]}) and its survey in {time.time() - start:.0f} s.")
        return path
    except ExplorerError as err:
        log(f"The {label} demo could not be built: {err}")
        return None


def main_demo(args) -> int:
    """``python -m precompute demo NAME… --out DIR``: each named demo in turn, its progress on stdout."""
    out = Path(args.out)
    failed = []
    for name in args.names:
        if name == "gpt2":
            print(f"Built {gpt2_set(out, log=_print)}", flush=True)
        elif name == "toy":
            print(f"Built {toy_set(out, log=_print)}", flush=True)
            toy_survey(out, log=_print)
        elif real_model_set(out, name, log=_print) is None:
            failed.append(name)
    return 1 if failed else 0


def _print(msg: str) -> None:
    print(msg, flush=True)
