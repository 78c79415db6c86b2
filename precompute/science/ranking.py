"""Which head of a survey is the strongest copy suppressor: the mean of its percentiles among all heads of the
model on the columns that mark copy suppression, under the model's read-out. Pure Python (pandas), for the survey
job, the launcher's demo and the pages alike."""

from __future__ import annotations

from .. import paper
from ..errors import InvalidInputError

# the survey column that ranks heads on each step (under the survey's tuned lens where a read-out matters)
SURVEY_COLUMN = {
    "attends": "predicted_enrichment",
    "suppresses": "ov_text_suppression",
    "cspa_logit_lens": "cspa_kl_explained",
    "cspa_tuned_lens": "cspa_kl_explained_tuned",
}

# the columns every ranking uses (paper §3: a head whose OV circuit suppresses the token it attends to, which
# suppresses the IO name in IOI and the repeated token in random sequences), plus attention to predicted tokens
# and CSPA's share under the model's read-out (``ranking_columns``)
COPY_SUPPRESSION_COLUMNS = ("ov_top10", "ioi_copy_suppression", "anti_induction")


def survey_readout(manifest: dict) -> str:
    """The read-out a survey's model is judged by: the paper's logit lens for GPT-2 small, else whichever of the
    logit and tuned lens agrees better with the model's top-1 on held-out text, averaged over its layers
    (``settings.tuned_lens.quality`` of the survey's manifest or ``df.attrs``)."""
    if (manifest.get("model") or {}).get("model_name") in paper.PAPER_MODEL_NAMES:
        return "logit_lens"
    quality = ((manifest.get("settings") or {}).get("tuned_lens") or {}).get("quality") or {}
    rows = [q for q in quality.values() if isinstance(q, dict) and "tuned" in q and "logit" in q]
    if not rows:
        return "logit_lens"
    tuned = sum(q["tuned"]["top1"] for q in rows) / len(rows)
    logit = sum(q["logit"]["top1"] for q in rows) / len(rows)
    return "tuned_lens" if tuned > logit else "logit_lens"


def ranking_columns(readout: str) -> tuple[str, ...]:
    return COPY_SUPPRESSION_COLUMNS + (SURVEY_COLUMN["attends"], SURVEY_COLUMN[f"cspa_{readout}"])


def ranking_rule(readout: str) -> str:
    """The rule in words, for the pages that show the ranking."""
    names = {
        "ov_top10": "OV self-suppression (own token in the bottom 10)",
        "ioi_copy_suppression": "IOI copy suppression",
        "anti_induction": "anti-induction",
        "predicted_enrichment": "attention to predicted tokens (tuned lens)",
        "cspa_kl_explained": "CSPA's share of the KL (logit lens)",
        "cspa_kl_explained_tuned": "CSPA's share of the KL (tuned lens)",
    }
    cols = ", ".join(names[c] for c in ranking_columns(readout))
    return (
        f"Heads are ranked by the mean of their percentiles among all heads of the model on: {cols}. A column with "
        "no value for any head is left out; a missing value counts as the lowest."
    )


def copy_suppression_ranking(df, readout: str | None = None):
    """The heads of a survey ordered from the strongest copy suppressor down: by the mean, over
    ``ranking_columns(readout)`` (those the survey has), of each head's percentile among all heads (1 = the highest
    value; a column that is NaN for every head is left out, a NaN entry counts 0). Ties go to the earlier head.
    ``readout``: default ``survey_readout(df.attrs)``. Returns a DataFrame with ``layer``, ``head`` and
    ``copy_suppression_score``, best first."""
    readout = readout or survey_readout(getattr(df, "attrs", {}) or {})
    cols = [c for c in ranking_columns(readout) if c in df and df[c].notna().any()]
    if not cols:
        raise InvalidInputError(
            f"the survey has none of the copy-suppression columns ({', '.join(ranking_columns(readout))})"
        )
    pct = df[cols].rank(pct=True, method="average", na_option="keep").fillna(0.0)
    out = df[["layer", "head"]].copy()
    out["copy_suppression_score"] = pct.mean(axis=1)
    return out.sort_values(
        ["copy_suppression_score", "layer", "head"], ascending=[False, True, True], kind="stable"
    ).reset_index(drop=True)


def strongest_copy_suppressor(df, readout: str | None = None) -> tuple[int, int]:
    """(layer, head) ranked first by ``copy_suppression_ranking``."""
    top = copy_suppression_ranking(df, readout).iloc[0]
    return int(top["layer"]), int(top["head"])
