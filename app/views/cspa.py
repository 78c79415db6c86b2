"""CSPA: how much of the head's effect copy-suppression-preserving ablation keeps."""

import html
import json

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from app import exports, live_model, state, verdict_view
from app.render.text import literal
from precompute import paper
from precompute import schema as F
from precompute.data.tokenization import token_strings
from precompute.errors import ExplorerError
from precompute.summaries import CSPASummary

SESSION = state.page_state("cspa")  # this page's own session values (``app.state.session``)


def schema_label(readout: str) -> str:
    return F.READOUT_LABELS.get(readout, readout)


def _nan(x: float | None) -> float:
    """A stored number, NaN where the set has none (printed as nan%)."""
    return float("nan") if x is None else float(x)


MAX_POINTS = 20_000


@st.cache_data(max_entries=4, show_spinner="Reading the per-token values…")
def points(source: str, head_name: str) -> pd.DataFrame:
    a = state.open_source(source)
    x = a.field(F.delta_loss(F.PAPER_VARIANT), head_name).astype("float32")
    y = a.field(F.delta_loss(F.CSPA), head_name).astype("float32")
    n, p = x.shape
    flat = pd.DataFrame(
        {
            "seq": [i for i in range(n) for _ in range(p)],
            "pos": list(range(p)) * n,
            "ablation": x.reshape(-1).tolist(),
            "cspa": y.reshape(-1).tolist(),
        }
    )
    if len(flat) > MAX_POINTS:  # keep every extreme point, sample the bulk
        extreme = flat.reindex(flat["ablation"].abs().sort_values(ascending=False).index[: MAX_POINTS // 4])
        rest = flat.drop(extreme.index).sample(MAX_POINTS - len(extreme), random_state=0)
        flat = pd.concat([extreme, rest])
    tok = a.tokenizer
    all_tokens = a.field(F.TOKENS)  # [n, S] int32, read once
    labels = []
    for s, q in zip(flat["seq"].tolist(), flat["pos"].tolist()):
        strings = token_strings(tok, all_tokens[int(s), max(0, q - 6) : q + 2].tolist())
        labels.append(html.escape("".join(strings[:-1]) + " → " + strings[-1]))
    flat["text"] = labels
    return flat.reset_index(drop=True)


N_CHOICES = (2, 4, 8, 16)


def interval_text(interval) -> str:
    if not interval or any(v != v for v in interval):  # NaN: no interval
        return "n/a"
    return f"{100 * interval[0]:.1f}% to {100 * interval[1]:.1f}%"


def compute_live(arts, store: dict, key, what: str, failed: str, call) -> None:
    """``call(model, progress)`` on the set's model with a progress bar, its result kept in ``store[key]`` for the
    session; a model that cannot load or a refused computation is a message."""
    model, error = live_model.get_model(arts)
    if model is None:
        st.error(f"The model cannot be loaded here: {literal(error)}")
        return
    bar = st.progress(0.0, text=what)
    try:
        store[key] = call(model, lambda text, frac: bar.progress(min(1.0, frac), text=literal(text)))
    except ExplorerError as err:
        st.error(f"{failed}: {literal(err)}")
    bar.empty()


def main() -> None:
    arts = state.page_artifacts()
    seq_choices = [n for n in N_CHOICES if n <= arts.n_sequences] or [arts.n_sequences]
    st.title("Copy-suppression-preserving ablation (CSPA)")
    head = state.head_picker(arts, key="cspa_head")
    head_name = head.name
    summary = arts.head_summary(head_name).cspa
    hp = arts.manifest["hyperparameters"]
    used, _ = arts.readout(head_name)
    st.markdown(
        "CSPA keeps, at each destination, only the head's suppression of tokens the model predicts there (the top "
        f"K_u of source tokens by the **{schema_label(used)}**, projected on their unembeddings) and mean-ablates the "
        "rest. Its share of the head's effect is how much of the head is copy suppression."
    )
    found = verdict_view.survey_for(arts)
    verdict_view.readout_note(arts, head_name)
    verdict_view.show(arts, head_name, found)
    c = st.columns(5)
    top = arts.paper_figures(head_name)["explained_top_bucket"]
    kl_fig, top_fig = paper.FIGURE["explained_kl"], paper.FIGURE["explained_top_bucket"]
    c[0].metric("Effect explained (KL)", kl_fig.format(summary.explained_kl), help=f"paper: {kl_fig.text}")
    c[1].metric(
        "Explained (net loss)",
        f"{100 * _nan(summary.explained_loss_net):.1f}%",
        help="1 − mean Δloss under CSPA ÷ mean Δloss under mean ablation. When the head's net effect on the loss is "
        f"small (here {_nan(summary.mean_delta_loss_ablation):+.4f} nats/token) this ratio swings far, "
        "below 0 where CSPA raises the loss more than ablating the head does; KL is the paper's headline measure.",
    )
    c[2].metric("Explained (|Δloss|)", f"{100 * _nan(summary.explained_loss_abs):.1f}%")
    c[3].metric(
        "Explained, top 1% bucket",
        top_fig.format(top),
        help=f"loss, in the percentile curve's top bucket (largest Δloss under mean ablation); paper: {top_fig.text}",
    )
    c[4].metric("Tokens", f"{summary.n_tokens:,}")
    st.caption(
        f"Paper (GPT-2 small 10.7, OpenWebText): {kl_fig.text} of the KL and {top_fig.text} in the top bucket "
        "explained. 100% = CSPA keeps all of the head's effect (it is all copy suppression); 0% = none of it."
    )
    st.caption(
        f"Hyperparameters: K_u = {literal(hp['cspa_k_u'])}, K_s = {literal(hp['cspa_k_s'])}, "
        f"{'negative components only' if hp['cspa_negative_only'] else 'both signs'}, mean ablation of the "
        "direct effect with frozen LayerNorm."
    )
    try:
        df = points(arts.source, head_name)
    except ExplorerError as err:
        st.error(f"The per-token values cannot be read: {literal(err)}")
        st.stop()
    fig = go.Figure(
        go.Scattergl(
            x=df["ablation"],
            y=df["cspa"],
            mode="markers",
            marker=dict(size=4, opacity=0.5),
            customdata=df[["seq", "pos"]].values,
            hovertext=df["text"],
            hovertemplate="seq %{customdata[0]}, pos %{customdata[1]}<br>%{hovertext}<br>"
            "Δloss ablation %{x:.3f}, CSPA %{y:.3f}<extra></extra>",
        )
    )
    lim = float(max(df["ablation"].abs().max(), df["cspa"].abs().max(), 0.1))
    fig.add_shape(type="line", x0=-lim, y0=-lim, x1=lim, y1=lim, line=dict(dash="dash", color="grey"))
    fig.add_shape(type="line", x0=-lim, y0=0, x1=lim, y1=0, line=dict(color="#1b7837", width=1))
    fig.update_layout(
        xaxis_title="Δloss when the head's direct effect is mean-ablated (nats per token)",
        yaxis_title="Δloss under CSPA (nats per token)",
        height=560,
        margin=dict(l=10, r=10, t=30, b=10),
    )
    st.subheader("Per token: the head's effect and what CSPA leaves of it")
    st.markdown(
        "Each point is one predicted token. x: how much the loss rises when the head's direct effect is mean-ablated "
        "(the head's whole effect there); y: how much it rises under CSPA (the part of that effect CSPA does *not* "
        "keep). **On the green line y = 0** CSPA kept all of the head's effect: there it is copy suppression. **On the "
        "grey dashed diagonal y = x** CSPA kept none of it: the effect is something else, as it is everywhere for a "
        "head that does not copy-suppress (the baseline)."
    )
    event = st.plotly_chart(fig, key="cspa_scatter", on_select="rerun", selection_mode="points")
    near0 = float((df["cspa"].abs() < 0.5 * df["ablation"].abs()).mean()) if len(df) else float("nan")
    big = df[df["ablation"].abs() >= df["ablation"].abs().quantile(0.9)] if len(df) else df
    kept_big = float((big["cspa"].abs() < 0.5 * big["ablation"].abs()).mean()) if len(big) else float("nan")
    st.caption(
        f"Reading: among the 10% of plotted tokens where the head matters most, {kept_big:.0%} lie nearer y = 0 than "
        f"the diagonal (CSPA keeps more than half the effect); over all plotted tokens, {near0:.0%}. Overall, CSPA "
        f"keeps {kl_fig.format(summary.explained_kl)} of the head's KL with the {schema_label(used)}."
    )
    exports.buttons(
        pd.DataFrame(
            {
                "seq": df["seq"],
                "pos": df["pos"],
                F.delta_loss(F.PAPER_VARIANT): df["ablation"],  # named as the stored fields they come from
                F.delta_loss(F.CSPA): df["cspa"],
                "context": [html.unescape(t) for t in df["text"]],
            }
        ),
        exports.metadata(
            arts,
            head_name,
            readout=used,
            points=f"{len(df):,} plotted tokens"
            + (" (every extreme one and a sample of the rest)" if len(df) >= MAX_POINTS else ""),
            units="nats per token",
        ),
        "cspa-points",
        "cspa_export",
        data={
            "summary": summary.as_dict(),
            "points": json.loads(df[["seq", "pos", "ablation", "cspa"]].to_json(orient="records")),
        },
    )
    sel = event.selection.points if event is not None else []
    if sel:
        # the point's row in the plotted frame (point_index), not customdata: Scattergl selections do not return it
        row = df.iloc[int(sel[0].get("point_index", sel[0].get("point_number", 0)))]
        s, q = int(row["seq"]), int(row["pos"])
        state.pages.link(
            "browse",
            f"Open sequence {s}, position {q} in Browse Examples",
            {"seq": s, "pos": q, "head": head_name},
            icon=":material/open_in_new:",
        )
        st.caption(
            f"Δloss {row['ablation']:+.3f} under mean ablation, {row['cspa']:+.3f} under CSPA: {literal(row['text'])}"
        )
    else:
        st.caption("Click a point to get a link to it in Browse Examples.")
    st.subheader("Percentile curve")
    curve = pd.DataFrame(
        {"mean Δloss, ablation": list(summary.curve_ablation), "mean Δloss, CSPA": list(summary.curve_cspa)}
    )
    if not curve.empty:
        fig2 = go.Figure()
        fig2.add_trace(
            go.Scatter(
                x=curve["mean Δloss, ablation"], y=curve["mean Δloss, CSPA"], mode="lines+markers", name="buckets"
            )
        )
        lo, hi = float(curve.min().min()), float(curve.max().max())
        fig2.add_trace(go.Scatter(x=[lo, hi], y=[lo, hi], mode="lines", line=dict(dash="dash"), name="y = x"))
        fig2.update_layout(
            xaxis_title="mean Δloss under mean ablation, per bucket (nats per token)",
            yaxis_title="mean Δloss under CSPA, per bucket (nats per token)",
            height=420,
        )
        st.plotly_chart(fig2, key="cspa_curve")
        st.caption(
            "Tokens sorted by Δloss under mean ablation into 100 equal-count buckets. A curve along y = x: CSPA keeps "
            "none of the effect (no copy suppression); a flat curve near y = 0: it keeps all of it. The paper's 10.7 "
            f"keeps {top_fig.text} in the top bucket."
        )
    by = {r: CSPASummary.of(v) for r, v in (arts.summary(head_name).get("cspa_by_readout") or {}).items()}
    if by:
        st.subheader("CSPA by what counts as 'predicted'")
        st.dataframe(
            pd.DataFrame(
                [
                    {
                        "read-out": schema_label(r) + (" (this set's)" if r == used else ""),
                        "effect explained (KL)": f"{100 * _nan(by[r].explained_kl):.1f}%",
                        "effect explained (net loss)": f"{100 * _nan(by[r].explained_loss_net):.1f}%",
                        "tokens": by[r].n_tokens,
                    }
                    for r in F.READOUTS
                    if r in by
                ]
            ),
            hide_index=True,
        )
        st.caption(
            "The same CSPA on the same tokens with each read-out deciding which sources are predicted. The "
            "paper's GPT-2 10.7 with the logit lens: 76.9%. The final-minus-head read-out reads layers after the head, "
            "so it is a diagnostic, not a prediction made before the head."
        )
    st.subheader("CSPA's three interventions")
    st.caption(
        "The paper's CSPA restricts both which sources count (QK: the top K_u of predicted tokens) and what of them is "
        "kept (OV: the projection on their unembeddings). QK only keeps a source's whole output where the QK filter "
        "keeps it; OV only projects every earlier source. Computed live on the first sequences of these artifacts."
    )
    i1, i2 = st.columns([1, 3])
    n_seqs = i1.selectbox("Sequences", seq_choices, key="cspa_n")
    cache_key = (arts.source, head_name, int(n_seqs))
    results = SESSION.setdefault("_cspa_interventions", {})
    if i2.button("Compute the three side by side", key="cspa_three"):
        compute_live(
            arts,
            results,
            cache_key,
            "CSPA three ways…",
            "Cannot compute them",
            lambda model, progress: model.cspa_interventions(
                arts, head, int(n_seqs), on_wait=live_model.queue_notice(), progress=progress
            ),
        )
    got = results.get(cache_key)
    if got is not None:
        st.dataframe(
            pd.DataFrame(
                [
                    {
                        "intervention": label,
                        "effect explained (KL)": f"{100 * _nan(got[key].explained_kl):.1f}%",
                        "90% interval over sequences": interval_text(got[key].explained_kl_interval),
                        "paper (GPT-2 10.7)": f"{100 * paper.CSPA_INTERVENTIONS[key]:.1f}%",
                        "tokens": got[key].n_tokens,
                    }
                    for key, label in paper.CSPA_INTERVENTION_LABELS.items()
                ]
            ),
            hide_index=True,
        )
        st.caption(
            f"Shares of the head's KL (direct effect, frozen norm) on the first {int(n_seqs)} sequences. The interval: "
            "sequences resampled with replacement 400 times, the central 90% of the shares. Intervals that overlap do "
            "not tell the interventions apart on this much text."
        )
    st.subheader("Several heads at once")
    st.caption(
        "Copy suppression can be shared between heads (GPT-2's 10.7 with 11.10). Here the chosen heads' direct effects "
        "are mean-ablated together, and CSPA keeps each one's copy suppression (each with its own read-out): the share "
        "of the set's KL that CSPA keeps, beside the Δloss of the set and of each head alone (nats per token)."
    )
    stored = arts.groups()
    if stored:
        st.dataframe(
            pd.DataFrame(
                [
                    {
                        "heads": name,
                        "CSPA explains (KL)": f"{100 * _nan(CSPASummary.of(g).explained_kl):.1f}%",
                        "Δloss together": f"{_nan(CSPASummary.of(g).mean_delta_loss_ablation):+.4f}",
                        "Δloss alone": ", ".join(
                            f"{h} {v:+.4f}" for h, v in g.get("mean_delta_loss_alone", {}).items()
                        ),
                        "tokens": CSPASummary.of(g).n_tokens,
                    }
                    for name, g in stored.items()
                ]
            ),
            hide_index=True,
        )
        st.caption("Stored with these artifacts (every sequence of the set).")
    n_layers, n_heads = arts.record.model.n_layers, arts.record.model.n_heads
    every = [h for h in F.every_head(n_layers, n_heads) if h != head_name]
    partner = verdict_view.partner_of(found, head_name)
    g1, g2, g3 = st.columns([2, 1, 1])
    state.url.restore("with", "cspa_with", state.url.text(200))
    if SESSION.get("cspa_with") is not None and not isinstance(SESSION["cspa_with"], list):
        SESSION["cspa_with"] = [h for h in str(SESSION["cspa_with"]).split("+") if h in every][:3]
    SESSION.setdefault("cspa_with", [partner] if partner in every else [])
    together = g1.multiselect(
        f"Measure {head_name} together with",
        every,
        key="cspa_with",
        max_selections=3,
        help=(
            f"Suggested: {partner}, the next-best OV self-suppressor of the adjacent layers (survey)."
            if partner
            else None
        ),
    )
    state.url.publish({"with": ("cspa_with", "+".join(together))}, {"with": "+".join([partner] if partner else [])})
    n_joint = g2.selectbox("Sequences", seq_choices, key="cspa_joint_n")
    joint_key = (arts.source, head_name, tuple(together), int(n_joint))
    joint = SESSION.setdefault("_cspa_joint", {})
    if g3.button("Compute together", key="cspa_joint_go", disabled=not together):
        compute_live(
            arts,
            joint,
            joint_key,
            "Heads together…",
            "Cannot compute them together",
            lambda model, progress: model.joint_effect(
                arts,
                [head] + [F.parse_head(h) for h in together],
                int(n_joint),
                on_wait=live_model.queue_notice(),
                progress=progress,
            ),
        )
    got_joint = joint.get(joint_key)
    if got_joint is not None:
        alone = got_joint.get("mean_delta_loss_alone", {})
        st.dataframe(
            pd.DataFrame(
                [
                    {
                        "measure": "CSPA explains (KL) of the set",
                        "value": f"{100 * _nan(CSPASummary.of(got_joint).explained_kl):.1f}%",
                    },
                    {
                        "measure": "Δloss, mean-ablated together",
                        "value": f"{_nan(CSPASummary.of(got_joint).mean_delta_loss_ablation):+.4f}",
                    },
                    {"measure": "sum of Δloss alone", "value": f"{sum(alone.values()):+.4f}"},
                ]
                + [{"measure": f"Δloss, {h} alone", "value": f"{v:+.4f}"} for h, v in alone.items()]
            ),
            hide_index=True,
        )
        st.caption(f"Computed live on the first {int(n_joint)} sequences ({got_joint['n_tokens']:,} tokens).")


main()
