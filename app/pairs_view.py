"""Figures of the Prompt pairs page (plotly; no Streamlit state). Every label that comes from text — tokens,
prompts — has ``& < >`` escaped, since plotly renders a subset of HTML in labels and hover text (and shows any
other entity, such as ``&quot;``, literally)."""

from __future__ import annotations

import html
from typing import TYPE_CHECKING

import numpy as np
import plotly.graph_objects as go

if TYPE_CHECKING:  # the type only: the analysis (and torch) is imported where it runs
    from precompute.science.pairs import PairAnalysis

GRID_TITLES = {
    "resid_pre": "residual stream (before each layer)",
    "attn_out": "attention output",
    "mlp_out": "MLP output",
    "head_z": "head output (z)",
    "head_pattern": "head attention pattern",
    "head_v": "head values (v)",
}


def position_labels(res: PairAnalysis) -> list[str]:
    """Unique tick labels "i: token" (escaped)."""
    return [f"{i}: {html.escape(t, quote=False)}" for i, t in enumerate(res.labels)]


def lens_figure(res: PairAnalysis) -> go.Figure:
    fig = go.Figure(
        go.Scatter(
            x=res.lens_labels,
            y=res.lens_logit_diff.tolist(),
            mode="lines+markers",
            hovertemplate="%{x}: %{y:.3f}<extra></extra>",
        )
    )
    fig.add_hline(y=0, line=dict(color="grey", width=1))
    fig.update_layout(
        xaxis_title="residual stream before each attention / MLP, and the final one",
        yaxis_title="logit difference (logits)",
        height=360,
        margin=dict(l=10, r=10, t=30, b=10),
    )
    return fig


def layer_figure(res: PairAnalysis) -> go.Figure:
    values = res.layer_dla.tolist()
    fig = go.Figure(
        go.Bar(
            x=res.layer_labels,
            y=values,
            marker_color=["#2166ac" if v >= 0 else "#b2182b" for v in values],
            hovertemplate="%{x}: %{y:.3f}<extra></extra>",
        )
    )
    fig.update_layout(
        yaxis_title="direct contribution to the logit difference (logits)",
        height=360,
        margin=dict(l=10, r=10, t=30, b=10),
    )
    return fig


LD_UNITS = "logit difference (logits)"
RECOVERED = "share of the clean logit difference recovered (0 = corrupted, 1 = clean)"


def _heatmap(
    z: np.ndarray, x: list, y: list, title: str, hover: str, zmax: float | None = None, units: str = LD_UNITS
) -> go.Figure:
    values = np.asarray(z, dtype=np.float64)
    bound = zmax if zmax is not None else float(np.abs(np.nan_to_num(values)).max(initial=0.0)) or 1.0
    fig = go.Figure(
        go.Heatmap(
            z=values.tolist(),
            x=x,
            y=y,
            colorscale="RdBu",
            zmid=0,
            zmin=-bound,
            zmax=bound,
            colorbar=dict(title=dict(text=units.replace(" (", "<br>(", 1), side="right")),
            hovertemplate=hover + "<extra></extra>",
        )
    )
    fig.update_layout(
        title=title,
        height=max(320, 22 * len(y) + 120),
        margin=dict(l=10, r=10, t=40, b=10),
        yaxis=dict(autorange="reversed", title="layer", dtick=1),
    )
    return fig


def head_figure(values: np.ndarray, title: str, clickable: bool = False, units: str = LD_UNITS) -> go.Figure:
    """Layer × head heatmap. ``clickable``: an invisible marker on every cell, since plotly (and so Streamlit's
    ``on_select``) reports no selection on heatmap traces; a click selects the cell's marker, named by its x, y."""
    L, H = values.shape
    fig = _heatmap(values, list(range(H)), list(range(L)), title, "head %{y}.%{x}: %{z:.3f}", units=units)
    # the axes span the cells exactly (the clickable markers would otherwise widen them past the grid)
    fig.update_xaxes(title="head", dtick=1, range=[-0.5, H - 0.5], autorange=False)
    fig.update_yaxes(range=[L - 0.5, -0.5], autorange=False)
    if clickable:
        xs, ys = [h for _ in range(L) for h in range(H)], [layer for layer in range(L) for _ in range(H)]
        fig.add_trace(
            go.Scatter(
                x=xs,
                y=ys,
                customdata=np.asarray(values, dtype=np.float64).flatten().tolist(),
                mode="markers",
                marker=dict(symbol="square", size=max(8, min(28, 600 // max(H, L))), opacity=0, color="black"),
                selected=dict(marker=dict(opacity=0)),
                unselected=dict(marker=dict(opacity=0)),
                hovertemplate="head %{y}.%{x}: %{customdata:.3f}<extra></extra>",
                showlegend=False,
            )
        )
        fig.update_layout(clickmode="event+select", dragmode=False)
    return fig


def grid_figure(res: PairAnalysis, values: np.ndarray, grid: str, kind: str) -> go.Figure:
    if values.shape[1] == len(res.labels):
        fig = _heatmap(
            values,
            position_labels(res),
            list(range(values.shape[0])),
            f"{kind}: {GRID_TITLES[grid]}",
            "layer %{y}, position %{x}: %{z:.3f}",
            units=RECOVERED,
        )
        fig.update_xaxes(title="position", tickangle=-45)
        return fig
    return head_figure(values, f"{kind}: {GRID_TITLES[grid]}", units=RECOVERED)


def agreement_figure(res: PairAnalysis) -> tuple[go.Figure, dict[str, float]]:
    """Attribution vs activation patching, every cell of every grid, and their correlation per grid."""
    fig, corr = go.Figure(), {}
    for grid, act in res.patch.items():
        if grid not in res.attr:
            continue
        a, b = np.asarray(act, dtype=np.float64).flatten(), np.asarray(res.attr[grid], dtype=np.float64).flatten()
        keep = ~np.isnan(a)  # the cells activation patching measured (all, or the top N attribution ranked)
        a, b = a[keep], b[keep]
        corr[grid] = float(np.corrcoef(np.stack([a, b]))[0, 1]) if len(a) > 1 else float("nan")
        fig.add_trace(
            go.Scatter(
                x=a.tolist(),
                y=b.tolist(),
                mode="markers",
                name=GRID_TITLES[grid],
                hovertemplate="activation %{x:.3f}, attribution %{y:.3f}<extra></extra>",
            )
        )
    lo = min([float(np.nan_to_num(t, nan=0.0).min()) for t in res.patch.values()] + [0.0])
    hi = max([float(np.nan_to_num(t, nan=1.0).max()) for t in res.patch.values()] + [1.0])
    fig.add_trace(go.Scatter(x=[lo, hi], y=[lo, hi], mode="lines", line=dict(dash="dash", color="grey"), name="y = x"))
    fig.update_layout(
        xaxis_title="activation patching (share of the logit difference recovered)",
        yaxis_title="attribution patching (its linear estimate)",
        height=420,
        margin=dict(l=10, r=10, t=30, b=10),
    )
    return fig, corr


def pattern_figure(pattern: np.ndarray, labels: list[str], title: str) -> go.Figure:
    ticks = [f"{i}: {html.escape(t, quote=False)}" for i, t in enumerate(labels)]
    fig = go.Figure(
        go.Heatmap(
            z=pattern.tolist(),
            x=ticks,
            y=ticks,
            colorscale="Blues",
            zmin=0,
            zmax=1,
            colorbar=dict(title=dict(text="attention<br>weight (0–1)")),
            hovertemplate="query %{y}<br>key %{x}<br>attention %{z:.3f}<extra></extra>",
        )
    )
    fig.update_layout(
        title=title,
        height=460,
        margin=dict(l=10, r=10, t=40, b=10),
        yaxis=dict(autorange="reversed", title="query (destination)"),
        xaxis=dict(title="key (source)", tickangle=-45),
    )
    return fig
