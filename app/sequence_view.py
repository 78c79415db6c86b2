"""One sequence's analysis on screen: the coloured strip, the selected token's details, attention, downloads.

Used by Browse Examples (stored sequences) and Test Your Own Examples (live analysis): both pass a record with
the same fields (``precompute.store.records.compact``), so the two pages cannot drift apart.
"""

from __future__ import annotations

import io
import json
import math

import pandas as pd
import streamlit as st

from app.render.colors import diverging, sequential
from app.render.tokens import display_token, token_strip
from app.render.text import literal
import numpy as np

from precompute import schema as F
from precompute.store.record_arrays import dense_attention, floats, to_jsonable

NEG, POS = F.DLA_GROUPS
EFFECT_HELP = ("**direct**: only the head's direct path to the logits is mean-ablated (the paper's main measure). "
               "**both**: the head's output is mean-ablated everywhere (later layers re-run). **indirect**: "
               "everything except the direct path.")
LN_HELP = ("**frozen**: the final LayerNorm scale stays at its clean value (linear, the paper's choice). "
           "**unfrozen**: it is recomputed from the ablated residual stream.")
METRICS = {
    "Δloss from ablating the head": "delta_loss",
    "KL(clean ‖ ablated)": "kl",
    "Most negative DLA at the token": "dla",
    "Log-prob of the next token": "logprob",
    "Logit-lens prob. of the next token": "lens",
    "Δloss under CSPA": "cspa",
}


def controls(key: str, hyperparameters: dict) -> dict:
    """Sidebar selectors shared by the sequence pages (only the variants the artifacts hold)."""
    sb = st.sidebar
    effects = list(hyperparameters.get("effects", ["direct", "both", "indirect"]))
    ln_modes = list(hyperparameters.get("ln_modes", ["frozen", "unfrozen"]))
    effect = sb.radio("Intervention effect", effects, key=f"{key}_effect", help=EFFECT_HELP)
    ln = sb.radio("Final LayerNorm", ln_modes, key=f"{key}_ln", help=LN_HELP)
    metric = sb.selectbox("Colour tokens by", list(METRICS), key=f"{key}_metric")
    extreme = sb.toggle("Scale colours to this sequence's extreme", key=f"{key}_extreme",
                        help="Off: a fixed scale (±2.5 nats for Δloss, ±1 for KL and DLA).")
    newlines = sb.toggle("Show line breaks as \\n", value=True, key=f"{key}_nl")
    return {"variant": f"{effect}_{ln}", "metric": METRICS[metric], "metric_label": metric, "extreme": extreme,
            "newlines": newlines}


def _values(rec: dict, variant: str, metric: str) -> list[float]:
    """One value per token position (the value about predicting the next token; NaN at the last)."""
    s = rec[F.TOKENS].shape[0]
    nan = [float("nan")]
    if metric == "delta_loss":
        return floats(rec[F.delta_loss(variant)]) + nan
    if metric == "kl":
        return floats(rec[F.kl(variant)]) + nan
    if metric == "cspa":
        return floats(rec[F.delta_loss(F.CSPA)]) + nan
    if metric == "logprob":
        return floats(np.exp(floats(rec[F.correct_logprob(F.CLEAN)]))) + nan
    if metric == "lens":
        return floats(np.exp(floats(rec[F.correct_logprob(F.LENS)]))) + nan
    return floats(rec[F.dla_values(NEG)][:, 0])[:s]


def strip_html(rec: dict, strings: list[str], opts: dict, selected: int | None, link_params: dict | None) -> str:
    metric = opts["metric"]
    vals = _values(rec, opts["variant"], metric)
    finite = [abs(v) for v in vals if not math.isnan(v)]
    if metric in ("logprob", "lens"):
        colours = [sequential(v) for v in vals]
    else:
        fixed = {"delta_loss": 2.5, "cspa": 2.5, "kl": 1.0, "dla": 1.0}[metric]
        scale = (max(finite) if finite else 1.0) if opts["extreme"] else fixed
        colours = [diverging(-v if metric == "dla" else v, scale) for v in vals]
    n = len(strings)
    tips = []
    for i, tok in enumerate(strings):
        nxt = repr(strings[i + 1]) if i + 1 < n else "(next token unknown)"
        value = "" if math.isnan(vals[i]) else f"\n{opts['metric_label']}: {vals[i]:+.4f}"
        tips.append(f"({i}) {tok!r} → {nxt}{value}")
    return token_strip(strings, colours, tips, selected=selected, link_params=link_params,
                       show_newlines=opts["newlines"])


def _table(ids, values, strings_of, value_name: str, transform=None) -> pd.DataFrame:
    vals = floats(values)
    if transform:
        vals = [transform(v) for v in vals]
    return pd.DataFrame({"token": [repr(s) for s in strings_of(ids.tolist())], value_name: vals})


def details(rec: dict, strings: list[str], pos: int, opts: dict, tokenizer) -> None:
    """Everything about one position: loss, Δloss, top-k before/after, DLA, logit lens, CSPA kept pairs."""
    from precompute.data.tokenization import token_strings

    def names(ids):
        return token_strings(tokenizer, ids)

    s = len(strings)
    variant = opts["variant"]
    st.markdown(f"#### Position {pos}: {literal(repr(strings[pos]))}" +
                (f" → next {literal(repr(strings[pos + 1]))}" if pos + 1 < s else " (last token)"))
    if pos + 1 < s:
        c = st.columns(5)
        c[0].metric("Clean loss", f"{float(rec[F.LOSS][pos]):.3f}")
        c[1].metric(f"Δloss ({variant})", f"{float(rec[F.delta_loss(variant)][pos]):+.4f}")
        c[2].metric(f"KL ({variant})", f"{float(rec[F.kl(variant)][pos]):.4f}")
        c[3].metric("Δloss (CSPA)", f"{float(rec[F.delta_loss(F.CSPA)][pos]):+.4f}")
        c[4].metric("Rank of next token", f"{int(rec[F.correct_rank(F.CLEAN)][pos])} → "
                                          f"{int(rec[F.correct_rank(variant)][pos])}")
    cols = st.columns(3)
    groups = [("Clean", F.CLEAN), ("After ablation (direct, frozen)", F.PAPER_VARIANT), ("Under CSPA", F.CSPA)]
    for col, (title, g) in zip(cols, groups):
        col.markdown(f"**{title}: top predictions**")
        df = _table(rec[F.topk_ids(g)][pos], rec[F.topk_logprobs(g)][pos], names, "prob", math.exp)
        if pos + 1 < s and F.correct_logprob(g) in rec:
            df.loc[len(df)] = [f"next {strings[pos + 1]!r} (rank {int(rec[F.correct_rank(g)][pos])})",
                               math.exp(float(rec[F.correct_logprob(g)][pos]))]
        col.dataframe(df, hide_index=True, width="stretch")
    cols = st.columns(3)
    cols[0].markdown("**Head DLA: most negative**")
    cols[0].dataframe(_table(rec[F.dla_ids(NEG)][pos], rec[F.dla_values(NEG)][pos], names, "logit change"),
                      hide_index=True, width="stretch")
    cols[1].markdown("**Head DLA: most positive**")
    cols[1].dataframe(_table(rec[F.dla_ids(POS)][pos], rec[F.dla_values(POS)][pos], names, "logit change"),
                      hide_index=True, width="stretch")
    cols[2].markdown("**Logit lens before the head**")
    cols[2].dataframe(_table(rec[F.topk_ids(F.LENS)][pos], rec[F.topk_logprobs(F.LENS)][pos], names, "prob", math.exp),
                      hide_index=True, width="stretch")
    kept = [(int(p), int(t), float(v)) for p, t, v in zip(rec[F.CSPA_KEPT_POS][pos].tolist(),
                                                          rec[F.CSPA_KEPT_TOKEN][pos].tolist(),
                                                          floats(rec[F.CSPA_KEPT_SCORE][pos])) if p >= 0]
    st.markdown(f"**CSPA: information kept at this position** ({int(rec[F.CSPA_N_KEPT][pos])} source entries)")
    if kept:
        st.dataframe(pd.DataFrame({"source position": [p for p, _, _ in kept],
                                   "source token": [repr(strings[p]) for p, _, _ in kept],
                                   "suppressed token": [repr(n) for n in names([t for _, t, _ in kept])],
                                   "logit-lens score": [v for _, _, v in kept]}), hide_index=True)
    else:
        st.caption("Nothing kept: CSPA mean-ablates every source here.")


def attention_view(rec: dict, strings: list[str], pos: int, key: str) -> None:
    """The head's attention (circuitsvis, bundled script, works offline) in a window around ``pos``."""
    s = len(strings)
    c1, c2 = st.columns(2)
    info = c1.toggle("Info-weighted attention", value=True, key=f"{key}_info",
                     help="A[q,k]·‖v_k W_O‖ / max_s ‖v_s W_O‖: attention scaled by how much the source writes.")
    window = c2.slider("Window (tokens)", 8, min(160, max(8, s)), min(48, max(8, s)), key=f"{key}_win")
    start = max(0, min(pos - window // 2, s - window))
    end = min(s, start + window)
    att = dense_attention(rec, info_weighted=info)[start:end, start:end]
    top = [(int(p), float(w)) for p, w in zip(rec[F.ATTN_TOPK_POS][pos].tolist(),
                                              floats(rec[F.ATTN_TOPK_WEIGHT][pos])) if p <= pos]
    st.caption(f"Position {pos} attends to BOS with {float(rec[F.ATTN_BOS][pos]):.2f}; top sources: " +
               ", ".join(f"{p} {literal(repr(strings[p]))} ({w:.2f})" for p, w in sorted(top, key=lambda x: -x[1])[:5]))
    if not st.toggle("Show the interactive attention pattern (circuitsvis)", key=f"{key}_cv",
                     help="Off by default: each view embeds circuitsvis's 1.3 MB script (it works offline)."):
        return
    try:
        import circuitsvis as cv

        html = cv.attention.attention_patterns(tokens=[display_token(t) for t in strings[start:end]],
                                               attention=att[None]).local_src
        st.iframe(html, height=520)
    except Exception as err:  # noqa: BLE001 - the rest of the page must survive a rendering problem
        st.warning(f"The attention view could not be drawn ({type(err).__name__}).")


def downloads(rec: dict, strings: list[str], name: str, key: str) -> None:
    s = len(strings)
    table = {"position": list(range(s)), "token": strings, "next_token": strings[1:] + [""]}
    for field, t in rec.items():
        if t.ndim == 1 and t.shape[0] in (s - 1, s) and field != F.TOKENS:
            vals = floats(t) if np.issubdtype(t.dtype, np.floating) else t.tolist()
            table[field] = vals + [None] * (s - len(vals))
    buf = io.StringIO()
    pd.DataFrame(table).to_csv(buf, index=False)
    c1, c2 = st.columns(2)
    c1.download_button("Download CSV", buf.getvalue(), file_name=f"{name}.csv", mime="text/csv", key=f"{key}_csv")
    payload = {"token_strings": strings, **to_jsonable(rec)}
    c2.download_button("Download JSON", json.dumps(payload), file_name=f"{name}.json", mime="application/json",
                       key=f"{key}_json")


def show(rec: dict, tokenizer, opts: dict, pos: int, key: str, link_params: dict | None = None,
         name: str = "sequence") -> None:
    """The whole sequence view for one record."""
    from precompute.data.tokenization import token_strings

    strings = token_strings(tokenizer, rec[F.TOKENS].tolist())
    st.markdown(strip_html(rec, strings, opts, pos, link_params), unsafe_allow_html=True)
    st.caption("Hover a token for its value; click it to select it. Blue = the head helps (loss rises when it is "
               "ablated), red = it hurts.")
    tabs = st.tabs(["Token details", "Attention", "Download"])
    with tabs[0]:
        details(rec, strings, pos, opts, tokenizer)
    with tabs[1]:
        attention_view(rec, strings, pos, key)
    with tabs[2]:
        downloads(rec, strings, name, key)

