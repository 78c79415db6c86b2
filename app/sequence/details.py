"""Everything about one position: loss and its changes, top-k before and after, DLA, logit lens, CSPA's kept pairs,
and the position seen as a *source*: which later tokens attend to it and what it suppresses there."""

from __future__ import annotations

import math

import pandas as pd
import streamlit as st

from app.render.text import literal
from precompute import schema as F
from precompute.data.tokenization import token_strings
from precompute.store.record_arrays import floats

NEG, POS = F.DLA_GROUPS
ROW_PX = 35


def _table(ids, values, names, value_name: str, transform=None) -> pd.DataFrame:
    vals = floats(values)
    if transform:
        vals = [transform(v) for v in vals]
    return pd.DataFrame({"token": [repr(s) for s in names(ids.tolist())], value_name: vals})


def _show(col, df: pd.DataFrame) -> None:
    """A table tall enough for every row (the true next token's row must never hide below a scroll)."""
    col.dataframe(df, hide_index=True, width="stretch", height=ROW_PX * (len(df) + 1) + 3)


PANEL = {
    "logit_lens": "Logit lens before the head",
    "tuned_lens": "Tuned lens before the head",
    "final_minus_head": "Final prediction minus the head",
}


def details(rec: dict, strings: list[str], pos: int, opts: dict, tokenizer, readout: str = "logit_lens") -> None:
    def names(ids):
        return token_strings(tokenizer, ids)

    s = len(strings)
    variant = opts["variant"]
    st.markdown(
        f"#### Position {pos}: {literal(repr(strings[pos]))}"
        + (f" → next {literal(repr(strings[pos + 1]))}" if pos + 1 < s else " (last token)")
    )
    if pos + 1 < s:
        c = st.columns(5)
        c[0].metric("Clean loss", f"{float(rec[F.LOSS][pos]):.3f}")
        c[1].metric(f"Δloss ({variant})", f"{float(rec[F.delta_loss(variant)][pos]):+.4f}")
        c[2].metric(f"KL ({variant})", f"{float(rec[F.kl(variant)][pos]):.4f}")
        c[3].metric("Δloss (CSPA)", f"{float(rec[F.delta_loss(F.CSPA)][pos]):+.4f}")
        c[4].metric(
            "Rank of next token", f"{int(rec[F.correct_rank(F.CLEAN)][pos])} → {int(rec[F.correct_rank(variant)][pos])}"
        )
    shown = variant if F.topk_ids(variant) in rec else F.PAPER_VARIANT
    effect, ln = shown.split("_")
    cols = st.columns(3)
    groups = [("Clean", F.CLEAN), (f"After ablation ({effect}, {ln} LN)", shown), ("Under CSPA", F.CSPA)]
    for col, (title, g) in zip(cols, groups):
        col.markdown(f"**{title}: top predictions**")
        df = _table(rec[F.topk_ids(g)][pos], rec[F.topk_logprobs(g)][pos], names, "prob", math.exp)
        if pos + 1 < s and F.correct_logprob(g) in rec:
            df = pd.concat(
                [
                    pd.DataFrame(
                        {
                            "token": [f"next {strings[pos + 1]!r} (rank {int(rec[F.correct_rank(g)][pos])})"],
                            "prob": [math.exp(float(rec[F.correct_logprob(g)][pos]))],
                        }
                    ),
                    df,
                ],
                ignore_index=True,
            )
        _show(col, df)
    if shown != variant:
        cols[1].caption(
            f"Top-k lists are stored for the paper's variant only; the cards above show {variant.replace('_', ', ')}."
        )
    cols = st.columns(3)
    for col, title, g in ((cols[0], "Head DLA: most negative", NEG), (cols[1], "Head DLA: most positive", POS)):
        col.markdown(f"**{title}**")
        _show(col, _table(rec[F.dla_ids(g)][pos], rec[F.dla_values(g)][pos], names, "logit change"))
    cols[2].markdown(f"**{PANEL.get(readout, PANEL['logit_lens'])}**")
    _show(cols[2], _table(rec[F.topk_ids(F.LENS)][pos], rec[F.topk_logprobs(F.LENS)][pos], names, "prob", math.exp))
    kept = [
        (int(p), int(t), float(v))
        for p, t, v in zip(
            rec[F.CSPA_KEPT_POS][pos].tolist(),
            rec[F.CSPA_KEPT_TOKEN][pos].tolist(),
            floats(rec[F.CSPA_KEPT_SCORE][pos]),
        )
        if p >= 0
    ]
    st.markdown(f"**CSPA: information kept at this position** ({int(rec[F.CSPA_N_KEPT][pos])} source entries)")
    if kept:
        st.dataframe(
            pd.DataFrame(
                {
                    "source position": [p for p, _, _ in kept],
                    "source token": [repr(strings[p]) for p, _, _ in kept],
                    "suppressed token": [repr(n) for n in names([t for _, t, _ in kept])],
                    f"{F.READOUT_LABELS.get(readout, 'logit lens').split(' (')[0]} score": [v for _, _, v in kept],
                }
            ),
            hide_index=True,
        )
    else:
        st.caption("Nothing kept: CSPA mean-ablates every source here.")


def as_source(rec: dict, strings: list[str], pos: int, tokenizer) -> pd.DataFrame:
    """The later positions that attend to ``pos`` (among their stored top sources, or BOS), with the weight, and
    what the head suppresses there through this source: CSPA's kept tokens from it and the source token's DLA."""
    tok_id = int(rec[F.TOKENS][pos])
    rows = []
    for q in range(pos, len(strings)):
        if pos == 0:
            weight = float(rec[F.ATTN_BOS][q])
        else:
            hits = [
                float(w)
                for p, w in zip(rec[F.ATTN_TOPK_POS][q].tolist(), floats(rec[F.ATTN_TOPK_WEIGHT][q]))
                if p == pos
            ]
            if not hits:
                continue
            weight = hits[0]
        kept = [
            int(t) for p, t in zip(rec[F.CSPA_KEPT_POS][q].tolist(), rec[F.CSPA_KEPT_TOKEN][q].tolist()) if p == pos
        ]
        dla = [
            float(v) for i, v in zip(rec[F.dla_ids(NEG)][q].tolist(), floats(rec[F.dla_values(NEG)][q])) if i == tok_id
        ]
        rows.append(
            {
                "destination": q,
                "token there": repr(strings[q]),
                "attention": weight,
                "CSPA keeps (suppressed)": ", ".join(repr(n) for n in token_strings(tokenizer, kept)) or "",
                f"DLA on {strings[pos]!r}": f"{dla[0]:+.3f}" if dla else "",  # blank, not "None", when absent
            }
        )
    return pd.DataFrame(
        rows, columns=["destination", "token there", "attention", "CSPA keeps (suppressed)", f"DLA on {strings[pos]!r}"]
    )


def source_view(rec: dict, strings: list[str], pos: int, tokenizer) -> None:
    st.markdown(
        f"**Position {pos} ({literal(repr(strings[pos]))}) as a source: who attends to it, and what is "
        "suppressed there**"
    )
    df = as_source(rec, strings, pos, tokenizer)
    if df.empty:
        st.caption("No later position has this token among its most-attended sources.")
    else:
        st.dataframe(df.sort_values("attention", ascending=False), hide_index=True)
        st.caption(
            "DLA on the source token: its logit change at that destination when it is among the head's "
            "most negative DLA there (blank otherwise)."
        )
