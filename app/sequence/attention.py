"""The head's attention around a position: a heatmap that always includes BOS, drawn with plotly (fast, offline)."""

from __future__ import annotations

import html

import plotly.graph_objects as go
import streamlit as st

from app.render.text import literal
from app.render.tokens import display_token
from precompute import schema as F
from precompute.store.record_arrays import dense_attention, floats


def window_bounds(s: int, pos: int, window: int) -> tuple[int, int]:
    """[start, end) of a window of ``window`` positions around ``pos`` inside [1, s) (BOS is always shown)."""
    window = max(1, min(window, s - 1))
    start = max(1, min(pos - window // 2, s - window))
    return start, min(s, start + window)


KINDS = {"raw": "Raw attention weights", "info": "Info-weighted attention"}


def tick(i: int, token: str) -> str:
    """An axis label: position and token, with only ``& < >`` escaped (plotly decodes those three and would read
    a tag as markup; it shows every other entity literally)."""
    return html.escape(f"{i} {display_token(token)!r}", quote=False)


def attention_view(rec: dict, strings: list[str], pos: int, key: str, head_name: str) -> None:
    s = len(strings)
    c1, c2 = st.columns(2)
    kind = c1.radio(
        "Show",
        list(KINDS),
        format_func=KINDS.get,
        horizontal=True,
        key=f"{key}_attn_kind",
        help="Raw: the attention pattern A[q,k]. Info-weighted: A[q,k]·‖v_k W_O‖ / max_s ‖v_s W_O‖, attention "
        "scaled by how much each source writes.",
    )
    info = kind == "info"
    window = 48
    if s > 9:  # a slider needs a range: short sequences are shown whole
        window = c2.slider("Window (tokens)", 8, min(160, s - 1), min(48, s - 1), key=f"{key}_win")
    cols = [0] + list(range(*window_bounds(s, pos, window)))
    rows = [q for q in cols if q > 0] or [0]
    att = dense_attention(rec, info_weighted=info)
    z = att[rows][:, cols]
    what = "info-weighted attention" if info else "attention weight"
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=[tick(i, strings[i]) for i in cols],
            y=[("▶ " if i == pos else "") + tick(i, strings[i]) for i in rows],
            colorscale="Blues",
            zmin=0,
            zmax=max(float(z.max()), 1e-6),
            colorbar=dict(title=dict(text=what + ("<br>(0–1, share of max)" if info else "<br>(0–1)"))),
            hovertemplate="destination %{y}<br>source %{x}<br>" + what + " %{z:.3f}<extra></extra>",
        )
    )
    if pos in rows:
        r = rows.index(pos)
        fig.add_shape(
            type="rect", xref="paper", x0=0, x1=1, y0=r - 0.5, y1=r + 0.5, line=dict(color="#d62728", width=2)
        )
    fig.update_layout(
        title=f"Head {head_name}: {what} of each destination (row) to each source (column)",
        height=max(320, 18 * len(rows) + 190),
        yaxis=dict(autorange="reversed", title=dict(text="destination (query) position and token")),
        xaxis=dict(tickangle=-60, title=dict(text="source (key) position and token; BOS first")),
        margin=dict(l=10, r=10, t=50, b=10),
    )
    st.plotly_chart(fig, key=f"{key}_attn_fig")
    top = [
        (int(p), float(w))
        for p, w in zip(rec[F.ATTN_TOPK_POS][pos].tolist(), floats(rec[F.ATTN_TOPK_WEIGHT][pos]))
        if p <= pos
    ]
    top = sorted(top, key=lambda x: -x[1])[:5]
    shown = (lambda p, w: f"{w:.2f}; info-weighted {float(att[pos, p]):.2f}") if info else (lambda p, w: f"{w:.2f}")
    st.caption(
        f"Row {pos} (framed in red) is the selected destination. Raw attention weights: it attends to BOS with "
        f"{float(rec[F.ATTN_BOS][pos]):.2f}; top sources: "
        + ", ".join(f"{p} {literal(repr(strings[p]))} ({shown(p, w)})" for p, w in top)
        + ". The map shows "
        + (
            "info-weighted attention (each weight times its source's output norm over the largest), so a source "
            "that writes little fades."
            if info
            else "the raw weights."
        )
        + " Only BOS and the stored top sources of each destination are kept: other cells show 0 though they may "
        "hold a little attention."
    )
