"""The verdict on a head, drawn the same on Home and the CSPA page (``precompute.science.verdict`` decides it):
the word and the sentence, the three steps with figure, chance, pass or fail, percentile and baseline heads from
the survey of the same model, the thresholds, and a warning where the paper's logit lens reads this model poorly."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from app import state
from app.render.text import literal
from app.survey_data import survey_of
from precompute import schema
from precompute.science import verdict as verdicts


def readout_note(arts, head_name: str) -> None:
    """Which read-out decides "predicted" for this head and why; a warning where the logit lens is poor here."""
    used, why = arts.readout(head_name)
    st.caption(literal(f"'Predicted' is read by the {schema.READOUT_LABELS[used]}: {why}."))
    q = arts.lens_quality().get(schema.parse_head(head_name)[0])
    if q and verdicts.logit_lens_is_poor(q):
        st.warning(
            f"The paper's logit lens reads this model poorly at layer {schema.parse_head(head_name)[0]}: it agrees "
            f"with the model's own top-1 on {q['logit']['top1']:.0%} of held-out positions (KL {q['logit']['kl']:.1f} "
            f"nats); the tuned lens on {q['tuned']['top1']:.0%} (KL {q['tuned']['kl']:.2f} nats). Figures that "
            "use the logit lens as 'predicted' understate copy suppression here."
        )


def survey_for(arts) -> tuple:
    """(survey DataFrame, its folder name, its manifest) of the open set's model, or (None, None, None): read once
    per page run and handed to ``show``, ``partner_of`` and Home's ranking line."""
    return survey_of(arts.model_name, state.configured_source(), state.default_dir())


def show(arts, head_name: str, found: tuple) -> verdicts.Verdict:
    """The verdict on ``head_name`` of the open set, with percentiles from ``found`` (``survey_for``) where there is
    a survey of its model."""
    survey, survey_name, manifest = found
    head = schema.parse_head(head_name)
    v = verdicts.verdict(head, arts.summary(head_name), arts.readout(head_name)[0], survey)
    draw(v, f"Survey: {survey_name}, {survey_text(manifest)}." if survey_name else "")
    return v


def survey_text(manifest: dict | None) -> str:
    """ "8 sequences × 128 tokens of python-docs": which text a survey measured, and how much."""
    if not manifest:
        return ""
    d = manifest.get("dataset", {})
    return f"{d.get('n_sequences', '?')} sequences × {d.get('seq_len', '?')} tokens of {d.get('name', '?')}"


def draw(v: verdicts.Verdict, note: str = "") -> None:
    """The word and sentence, the steps as a table (each with its data), the thresholds and where the survey's
    numbers come from."""
    st.markdown(f"**Verdict on {v.head}: {v.word}.** " + literal(v.sentence))
    rows = []
    for step in v.steps + v.extras:
        rows.append(
            {
                "step": step.title,
                "result": {True: "passes", False: "fails", None: "not measured"}[step.passed],
                "measured": step.figure_text,
                "chance": step.chance_text,
                "percentile among all heads (survey)": "n/a" if step.percentile is None else f"{step.percentile:.0%}",
                "baseline heads (survey)": ", ".join(f"{h}: {x:.3g}" for h, x in step.baselines.items()) or "n/a",
            }
        )
    st.table(pd.DataFrame(rows).set_index("step"))  # a table wraps its long cells; a dataframe would cut them
    st.caption(literal(v.thresholds))
    st.caption(literal(v.survey_note + (" " + note if note else "")))


def partner_of(found: tuple, head_name: str) -> str | None:
    """The suggested partner of ``head_name`` from the survey of the same model (``survey_for``; "L.H"), or None."""
    survey = found[0]
    got = verdicts.suggested_partner(survey, schema.parse_head(head_name)) if survey is not None else None
    return None if got is None else schema.head_key(got)
