"""Is this head copy suppression? The paper's three steps, each with its measured figure, its chance level, the
head's percentile among all heads of the model and the same figure for a few baseline heads of nearby layers, then
one word and one plain sentence. Pure Python (no torch): the report, Home, the CSPA page and the survey page call it
on a run's summary and, where one of the same model is open, its survey.

The steps and the words (the thresholds are written on the pages):

1. **Attends to predicted tokens**: among pairs with attention > 0.1 to a content source, how much more often the
   source is in the read-out's top 10 at the destination than a uniform content source of the same prefix
   (``predicted``). Passes at an enrichment of ``ENRICHMENT_PASS`` or more (chance: 1).
2. **Suppresses what it attends to**: OV on the run's text (``ov_dynamic``), the share of attended pairs whose
   source token is among the 10 the moved vector suppresses most. Passes at ``OV_TEXT_PASS`` (chance: 10 ÷ the
   vocabulary).
3. **CSPA explains its effect**: CSPA's share of the head's KL under the head's read-out. ``CSPA_PASS`` or more
   passes; ``CSPA_STRONG`` or more is strong. Baseline heads (other heads of the same and adjacent layers that matter
   most, from the survey) show what a head that does something else gets.

The word: **copy suppression** where all three pass, **partly copy suppression** where step 3 passes with one of
the others, **not copy suppression on this text** otherwise; **undetermined** where a figure is missing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from .. import schema
from ..summaries import CSPASummary, OVDynamicSummary
from .ranking import SURVEY_COLUMN

ENRICHMENT_PASS = 2.0
OV_TEXT_PASS = 0.2
CSPA_PASS = 0.25
CSPA_STRONG = 0.5
N_BASELINES = 3
CSPA_CHANCE = "a head that does something else: ≈ 0 % (see the baseline heads)"
SURVEY_Z_PASS = 2.0  # the survey's OV on text: the attended source at least 2 standard deviations more suppressed
# the causal QK test supports step 1 where the boosted token's attention at least doubles (rise >= clean) and rises
# at least CAUSAL_RATIO times as much as under a random other token's boost
CAUSAL_RATIO = 3.0
# the logit lens counts as a poor read-out of the model's prediction beyond these (the pages warn)
POOR_KL_NATS = 2.0
POOR_TOP1 = 0.5
THRESHOLDS = (
    f"Thresholds: (1) attended sources at least {ENRICHMENT_PASS:g}× as often predicted as a random content source "
    f"of the same prefix; (2) the source among the 10 most suppressed tokens for at least {OV_TEXT_PASS:.0%} of "
    f"attended pairs; (3) CSPA explains at least {CSPA_PASS:.0%} of the head's KL ({CSPA_STRONG:.0%} or more: "
    "strong). Copy suppression = all three; partly = (3) and one other. The causal QK test (extra) supports (1) "
    f"where the boosted token's attention at least doubles and rises {CAUSAL_RATIO:g}× as much as under a random "
    "token's boost."
)


@dataclass(frozen=True)
class Step:
    key: str
    title: str
    figure: float | None  # this set's measure
    figure_text: str  # the measure in words, with units
    chance_text: str
    passed: bool | None
    survey_column: str | None = None
    percentile: float | None = None  # among every head of the survey's model, 1 = the highest
    baselines: dict[str, float] = field(default_factory=dict)  # head -> the survey column's value
    head_in_survey: float | None = None  # the head's own value in the survey (different data)


@dataclass(frozen=True)
class Verdict:
    head: str
    readout: str
    word: str
    sentence: str
    steps: tuple[Step, ...]
    survey_note: str
    thresholds: str = THRESHOLDS
    extras: tuple[Step, ...] = ()  # measures that inform but do not decide the word (the causal QK test)


def logit_lens_is_poor(quality_row: dict) -> bool:
    """True where the logit lens reads the model's prediction badly at a layer (``TunedLens.quality`` row: KL above
    POOR_KL_NATS or top-1 agreement under POOR_TOP1)."""
    q = quality_row.get("logit", {})
    return bool(q) and (q["kl"] > POOR_KL_NATS or q["top1"] < POOR_TOP1)


def _causal_supports(rise: float, control: float, clean: float) -> bool:
    """The causal QK test supports step 1: the boosted token's attention at least doubles and rises CAUSAL_RATIO
    times as much as under a random other token's boost."""
    return rise > 0 and rise >= clean and rise >= CAUSAL_RATIO * max(control, 0.0)


def _num(x) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) else None


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.1%}"


def cspa_by_readout(summary: dict, readout: str) -> dict[str, float]:
    """CSPA's share of the KL under each read-out the run measured ({read-out: share}); the head's own read-out
    from the stored summary (sets made before read-outs were recorded: the logit lens only)."""
    out = {}
    for r, s in (summary.get("cspa_by_readout") or {}).items():
        v = _num(CSPASummary.of(s).explained_kl)
        if r in schema.READOUTS and v is not None:
            out[r] = v
    own = _num(CSPASummary.of(summary.get("cspa")).explained_kl)
    if own is not None:
        out[readout] = own
    return out


TITLES = {
    "attends": "1. It attends to predicted tokens",
    "suppresses": "2. It suppresses what it attends to",
    "cspa": "3. CSPA explains its effect",
}
LENS_NAMES = {"logit_lens": "the paper's logit lens", "tuned_lens": "the tuned lens"}


def sentence(head: str, readout: str, by_readout: dict[str, float]) -> str:
    """ "Copy suppression explains 43 % of 24.4's effect on this text with the tuned lens (9 % with the paper's
    logit lens)." from the CSPA shares."""
    own = by_readout.get(readout)
    if own is None:
        return f"CSPA was not measured for {head} in this set."
    label = LENS_NAMES.get(readout, "the final prediction minus the head (a diagnostic)")
    text = f"Copy suppression explains {own:.0%} of {head}'s effect (KL) on this text with {label}"
    other = "logit_lens" if readout != "logit_lens" else "tuned_lens"
    if other in by_readout:
        text += f" ({by_readout[other]:.0%} with {LENS_NAMES[other]})"
    return text + "."


def _nearby(survey, head: tuple[int, int]):
    """The survey's other heads of ``head``'s layer and the layers beside it."""
    near = survey[(survey.layer - head[0]).abs() <= 1]
    return near[~((near.layer == head[0]) & (near["head"] == head[1]))]


def baseline_heads(survey, head: tuple[int, int], n: int = N_BASELINES) -> list[tuple[int, int]]:
    """Other heads of the head's layer and the layers beside it whose direct effect matters most (largest mean KL
    of the mean ablation in the survey): what heads that do something else score."""
    top = (
        _nearby(survey, head)
        .sort_values(["kl_direct", "layer", "head"], ascending=[False, True, True], kind="stable")
        .head(n)
    )
    return [(int(a), int(b)) for a, b in zip(top["layer"], top["head"], strict=True)]


def suggested_partner(survey, head: tuple[int, int]) -> tuple[int, int] | None:
    """The head to measure ``head`` together with: the next-best OV self-suppressor (``ov_top10``) of the same and
    adjacent layers in the survey (copy suppression is often shared: GPT-2's 10.7 and 11.10)."""
    if survey is None or "ov_top10" not in survey:
        return None
    near = _nearby(survey, head).dropna(subset=["ov_top10"])
    if near.empty:
        return None
    best = near.sort_values(["ov_top10", "layer", "head"], ascending=[False, True, True], kind="stable").iloc[0]
    return int(best["layer"]), int(best["head"])


def _survey_facts(survey, head, column: str | None, baselines) -> tuple[float | None, dict[str, float], float | None]:
    if survey is None or column is None or column not in survey:
        return None, {}, None
    col = survey[column]
    row = survey[(survey.layer == head[0]) & (survey["head"] == head[1])]
    own = _num(float(row[column].iloc[0])) if len(row) else None
    pct = None
    if own is not None and col.notna().sum() > 0:
        pct = float((col.dropna() <= own).mean())
    base = {}
    for b in baselines:
        r = survey[(survey.layer == b[0]) & (survey["head"] == b[1])]
        v = _num(float(r[column].iloc[0])) if len(r) else None
        if v is not None:
            base[schema.head_key(b)] = v
    return pct, base, own


def _step(
    key: str, figure: float | None, text, chance: str, threshold: float, column, survey, head, baselines, missing: str
) -> Step:
    """One of the three steps: passes where ``figure`` reaches ``threshold``; ``text()`` says the figure in words
    (``missing`` where there is none); the survey's percentile and baselines for ``column``."""
    pct, base, own = _survey_facts(survey, head, column, baselines)
    return Step(
        key,
        TITLES[key],
        figure,
        missing if figure is None else text(),
        chance,
        None if figure is None else figure >= threshold,
        column,
        pct,
        base,
        own,
    )


def verdict(head: tuple[int, int], summary: dict, readout: str, survey=None, d_vocab: int | None = None) -> Verdict:
    """The verdict on ``head`` from its run summary (``Artifacts.summary``), the read-out its CSPA used and, where
    given, a survey DataFrame of the same model (percentiles and baselines)."""
    key = schema.head_key(head)
    baselines = baseline_heads(survey, head) if survey is not None else []
    att = summary.get("attends_predicted") or {}
    ov = OVDynamicSummary.of(summary.get("ov_dynamic"))
    by = cspa_by_readout(summary, readout)
    label = schema.READOUT_LABELS.get(readout, readout)

    enr, frac, chance = _num(att.get("enrichment")), _num(att.get("frac_predicted")), _num(att.get("frac_chance"))
    top10, v_chance = _num(ov.frac_top10), _num(ov.chance_top10)
    if v_chance is None and d_vocab:
        v_chance = 10 / d_vocab
    share = by.get(readout)
    missing = "not measured in this set"
    step1 = _step(
        "attends",
        enr,
        lambda: f"{_pct(frac)} of {int(att.get('n_pairs', 0)):,} attended pairs have the source in the {label}'s "
        f"top {int(att.get('top', 10))} at the destination: {enr:.1f}× chance",
        "a random content source of the same prefix: " + _pct(chance),
        ENRICHMENT_PASS,
        SURVEY_COLUMN["attends"],
        survey,
        head,
        baselines,
        missing,
    )
    step2 = _step(
        "suppresses",
        top10,
        lambda: f"the source is among the 10 tokens the head suppresses most for {_pct(top10)} of "
        f"{int(ov.n_pairs):,} attended pairs (OV on this text)"
        + ("" if (median := _num(ov.median_rank)) is None else f"; its median rank {median:,.0f}"),
        "a random token: " + ("n/a" if v_chance is None else f"{v_chance:.3%}"),
        OV_TEXT_PASS,
        SURVEY_COLUMN["suppresses"],
        survey,
        head,
        baselines,
        missing,
    )
    step3 = _step(
        "cspa",
        share,
        lambda: f"{_pct(share)} of the head's KL with the {label}"
        + (
            ""
            if "logit_lens" not in by or readout == "logit_lens"
            else f" ({_pct(by['logit_lens'])} with the logit lens)"
        ),
        CSPA_CHANCE,
        CSPA_PASS,
        SURVEY_COLUMN.get(f"cspa_{readout}"),
        survey,
        head,
        baselines,
        missing,
    )
    steps = (step1, step2, step3)
    cq = summary.get("causal_qk") or {}
    rise, control = _num(cq.get("rise")), _num(cq.get("control_rise"))
    extras = (
        Step(
            "causal_qk",
            "Extra: causal QK test",
            rise,
            "not measured in this set"
            if rise is None
            else f"making the destination predict an earlier token (boost {cq.get('scale', 0):g}× the residual norm "
            f"along its unembedding) raises the head's attention to that token by {rise:.3f} "
            f"({int(cq.get('n_trials', 0))} trials; clean attention {cq.get('clean', 0):.3f})",
            "n/a" if control is None else f"a random other token's boost: {control:+.3f}",
            None if rise is None or control is None else _causal_supports(rise, control, _num(cq.get("clean")) or 0.0),
        ),
    )
    note = (
        "Percentiles and baselines come from the survey of every head of this model (its own text and token count, "
        "under its tuned lens where a read-out matters), so they can differ from this set's figures."
        if survey is not None
        else "No survey of this model is open: no percentiles or baseline heads."
    )
    return Verdict(key, readout, _word(steps, share), sentence(key, readout, by), steps, note, extras=extras)


def _word(steps, share: float | None) -> str:
    if any(s.passed is None for s in steps):
        return "undetermined"
    if all(s.passed for s in steps):
        return "copy suppression" + (" (strong)" if share is not None and share >= CSPA_STRONG else "")
    if steps[2].passed and (steps[0].passed or steps[1].passed):
        return "partly copy suppression"
    return "not copy suppression on this text"


def survey_verdict(survey, head: tuple[int, int], readout: str, n_text: str = "") -> Verdict:
    """The verdict from a survey's columns alone (a head with no artifact set here): the same three steps on the
    survey's text, step 2 as the attended source's z-score (``ov_text_suppression``, passes at ``SURVEY_Z_PASS``)."""
    key = schema.head_key(head)
    baselines = baseline_heads(survey, head)
    cols = (SURVEY_COLUMN["attends"], SURVEY_COLUMN["suppresses"], SURVEY_COLUMN.get(f"cspa_{readout}"))
    enr, z, share = (_survey_facts(survey, head, c, [])[2] for c in cols)
    label = schema.READOUT_LABELS.get(readout, readout)
    steps = (
        _step(
            "attends",
            enr,
            lambda: f"{enr:.1f}× chance (the survey's tuned lens, top 10)",
            "1× (a random content source of the prefix)",
            ENRICHMENT_PASS,
            cols[0],
            survey,
            head,
            baselines,
            "n/a",
        ),
        _step(
            "suppresses",
            z,
            lambda: f"the attended source is {z:.1f} standard deviations more suppressed than the average token "
            "(OV on the survey's text)",
            "0 (a random token)",
            SURVEY_Z_PASS,
            cols[1],
            survey,
            head,
            baselines,
            "n/a",
        ),
        _step(
            "cspa",
            share,
            lambda: f"{share:.1%} of the head's KL with the {label}",
            CSPA_CHANCE,
            CSPA_PASS,
            cols[2],
            survey,
            head,
            baselines,
            "n/a",
        ),
    )
    by = {}
    for r in ("logit_lens", "tuned_lens"):
        f = _survey_facts(survey, head, SURVEY_COLUMN[f"cspa_{r}"], [])[2]
        if f is not None:
            by[r] = f
    note = "From the survey alone" + (f" ({n_text})" if n_text else "") + ": open a set of this head for its own text."
    thresholds = THRESHOLDS.replace(
        f"(2) the source among the 10 most suppressed tokens for at least {OV_TEXT_PASS:.0%} of attended pairs",
        f"(2) on the survey, the attended source at least {SURVEY_Z_PASS:g} standard deviations more suppressed than "
        "the average token",
    )
    return Verdict(
        key,
        readout,
        _word(steps, share),
        sentence(key, readout, by).replace("this text", "the survey's text"),
        steps,
        note,
        thresholds,
    )
