"""Head survey: every head of every surveyed model as a point, two metrics chosen as axes (default: copy
suppression vs anti-induction, as the original app's page), coloured by model or depth, filtered by family and
size; a clicked head opens on the other pages when its artifacts are here, else its command is shown."""

import html

import plotly.graph_objects as go
import streamlit as st

from app import exports, state, verdict_view
from app.render.text import literal
from app.survey_data import (
    LABELS,
    PALETTE,
    default_axis,
    filtered,
    hover_text,
    load,
    ranked_heads,
    run_command,
    runs_with_head,
    survey_bases,
    survey_folders,
    value_text,
)
from precompute import schema
from precompute.science import ranking
from precompute.science import verdict as verdicts
from precompute.store.run_record import ModelRecord

SESSION = state.page_state("survey")  # this page's own session values (``app.state.session``)

COLOURS = ["model", "depth (layer / n_layers)"]


def _texts(part, named: set) -> list[str]:
    return [n if (s, n) in named else "" for s, n in zip(part["survey"], part["name"])]


def main() -> None:
    st.title("Head survey")
    st.caption(
        "Which heads copy-suppress, in which models? Each point is one head, scored by "
        "`python -m precompute survey`. Larger values mean more of the behaviour."
    )
    bases = survey_bases(state.configured_source(), state.default_dir())
    folders = survey_folders(bases)
    table, manifests, problems = load(folders)
    for problem in problems:
        st.warning(f"Skipped a survey that cannot be read: {literal(problem)}")
    if table.empty and state.building() is not None:
        state.wait_for(lambda: len(survey_folders(bases)), len(folders), "No survey yet.")
        st.stop()
    if table.empty:
        st.info(
            "No survey found. Score every head of a model (a few seconds for the toy model, minutes for GPT-2 on "
            "a GPU) into a folder next to the artifacts:"
        )
        st.code(
            "python -m precompute survey --model toy --dataset synthetic --n-seqs 32 --seq-len 64 "
            "--out artifacts/survey-toy",
            language="bash",
        )
        st.stop()
    metrics = list(LABELS)
    c1, c2, c3 = st.columns(3)
    # the default axes show every surveyed model (IOI copy suppression only where every survey has it)
    defaults = {
        "x": default_axis(table, ("ioi_copy_suppression", "ov_top10", "cspa_kl_explained")),
        "y": "anti_induction",
        "colour": COLOURS[0],
    }
    for name, options in (("x", metrics), ("y", metrics), ("colour", COLOURS)):
        state.url.restore(name, f"survey_{name}", state.url.choice(options))
        SESSION.setdefault(f"survey_{name}", defaults[name])
    x = c1.selectbox("x axis", metrics, format_func=LABELS.get, key="survey_x")
    y = c2.selectbox("y axis", metrics, format_func=LABELS.get, key="survey_y")
    colour = c3.radio("Colour by", COLOURS, horizontal=True, key="survey_colour")
    state.url.publish({"x": ("survey_x", x), "y": ("survey_y", y), "colour": ("survey_colour", colour)}, defaults)
    families = sorted(table["family"].unique())
    c4, c5, c6 = st.columns([2, 2, 1])
    chosen = c4.multiselect("Model family", families, default=families, key="survey_families")
    lo, hi = float(table["params_m"].min()), float(table["params_m"].max())
    size = (
        (lo, hi)
        if lo == hi
        else c5.slider(
            "Parameters (millions, from each config; a tied embedding counted once)",
            lo,
            hi,
            (lo, hi),
            key="survey_params",
        )
    )
    names = c6.checkbox("Head names", key="survey_names", help="Names the 8 highest-ranked heads of each survey.")
    view = filtered(table, chosen, size)
    if view.empty:
        st.info("No head passes these filters.")
        st.stop()
    # a survey whose heads have no value on both axes draws no point and gets no legend entry (said below instead)
    plotted = view[view[x].notna() & view[y].notna()]
    missing = [s for s in sorted(view["survey"].unique()) if s not in set(plotted["survey"])]
    surveys = sorted(plotted["survey"].unique())
    label_of = dict(zip(view["survey"], view["model_label"]))
    named: set = set()
    if names:
        for survey in surveys:
            ranked_names = ranked_heads(table, manifests, survey)[0]["name"].head(8)
            named |= {(survey, n) for n in ranked_names}
    fig = go.Figure()
    text_mode = "markers+text" if names else "markers"
    if colour == "model":
        for i, survey in enumerate(surveys):
            part = plotted[plotted["survey"] == survey]
            fig.add_trace(
                go.Scatter(
                    x=part[x].tolist(),
                    y=part[y].tolist(),
                    mode=text_mode,
                    text=_texts(part, named),
                    name=html.escape(label_of[survey], quote=False),
                    textposition="top center",
                    hovertext=part.apply(hover_text, axis=1),
                    hoverinfo="text",
                    customdata=part.index.tolist(),
                    marker=dict(size=9, color=PALETTE[i % len(PALETTE)], line=dict(width=0.5, color="white")),
                )
            )
    else:
        fig.add_trace(
            go.Scatter(
                x=plotted[x].tolist(),
                y=plotted[y].tolist(),
                mode=text_mode,
                text=_texts(plotted, named),
                textposition="top center",
                hovertext=plotted.apply(hover_text, axis=1),
                hoverinfo="text",
                customdata=plotted.index.tolist(),
                marker=dict(
                    size=9,
                    color=plotted["depth"].tolist(),
                    colorscale="Viridis",
                    cmin=0,
                    cmax=1,
                    colorbar=dict(title=dict(text="depth<br>(layer / n_layers)")),
                ),
            )
        )
    fig.add_hline(y=0, line=dict(color="grey", width=1))
    fig.add_vline(x=0, line=dict(color="grey", width=1))
    fig.update_layout(
        xaxis_title=LABELS[x],
        yaxis_title=LABELS[y],
        height=600,
        margin=dict(l=10, r=10, t=30, b=10),
        legend_title_text="model",
    )
    event = st.plotly_chart(fig, key="survey_scatter", on_select="rerun", selection_mode="points")
    st.caption(
        literal(
            f"Each point is one head of {', '.join(label_of[s] for s in surveys) or 'no model'}. Grey lines mark 0, "
            "the value of a head with none of the behaviour; larger values mean more of it. "
            + ("Head names: each survey's 8 highest-ranked heads (ranking below). " if names else "")
        )
    )
    for survey in missing:
        st.caption(
            literal(
                f"{label_of[survey]} has no value on these axes ({LABELS[x]} × {LABELS[y]}), so none of its heads is "
                "drawn: choose other axes to see them."
            )
        )
    for col in dict.fromkeys((x, y)):
        frac = float(view[col].isna().mean())
        if frac > 0:
            reasons = {m.get("reasons", {}).get(col) for m in manifests.values()} - {None}
            st.caption(
                literal(f"The axis “{LABELS[col]}”: {frac:.0%} of heads have no value. " + "; ".join(sorted(reasons)))
            )
    st.subheader("Ranking: the strongest copy suppressors")
    survey_names = sorted(view["survey"].unique())
    state.url.restore("rank", "survey_rank_of", state.url.choice(survey_names))
    rank_of = st.selectbox("Survey", survey_names, key="survey_rank_of")
    ranked, rule = ranked_heads(table, manifests, rank_of)
    shown = ["rank", "name", "copy_suppression_score"] + list(LABELS)
    st.dataframe(
        ranked[shown].rename(columns={**LABELS, "name": "head", "copy_suppression_score": "score (mean percentile)"}),
        hide_index=True,
        height=35 * 11 + 3,
    )
    st.caption(literal(rule + " Click a column's title to sort by it; empty cells have no value for that head."))
    export = ranked[shown + ["layer", "head"]].rename(columns={"name": "head_name"})
    exports.buttons(
        export,
        exports.survey_metadata(rank_of, manifests[rank_of], ranking=rule),
        "survey-ranking",
        "survey_export",
    )
    # the head shown below: the one clicked, else the link's ?survey=…&head=… (kept in the URL either way)
    state.url.restore("survey", "survey_pick_survey", state.url.text(200))
    state.url.restore("head", "survey_pick_head", state.url.text(20))
    points = event.selection.points if event is not None else []
    if points:
        point = points[0]
        if colour == "model":
            part = plotted[plotted["survey"] == surveys[int(point.get("curve_number", 0))]]
            row = part.iloc[int(point.get("point_index", point.get("point_number", 0)))]
        else:
            row = plotted.iloc[int(point.get("point_index", point.get("point_number", 0)))]
        SESSION["survey_pick_survey"], SESSION["survey_pick_head"] = (
            str(row["survey"]),
            str(row["name"]),
        )
    picked = view[
        (view["survey"] == SESSION.get("survey_pick_survey")) & (view["name"] == SESSION.get("survey_pick_head"))
    ]
    if picked.empty:
        if SESSION.get("survey_pick_head") is not None:
            st.warning(
                f"No head {literal(SESSION['survey_pick_head'])} in the survey "
                f"{literal(SESSION.get('survey_pick_survey', '?'))} with these filters."
            )
        st.caption("Click a head to open it, or to get the command that makes its artifacts.")
        st.stop()
    row = picked.iloc[0]
    state.url.publish({"survey": ("survey_pick_survey", row["survey"]), "head": ("survey_pick_head", row["name"])})
    head = str(row["name"])
    manifest = manifests[row["survey"]]
    model_name = ModelRecord.of(manifest["model"]).name
    st.subheader(f"{literal(model_name)} · head {head}")
    st.dataframe(row[list(LABELS)].map(value_text).rename(LABELS).to_frame("value"), width="stretch")
    rows_used = manifest.get("settings", {}).get("circuit_rows_used")
    st.caption(
        literal(
            f"These are the survey's figures: {verdict_view.survey_text(manifest)}"
            + (f"; OV and QK over a sample of {rows_used:,} tokens" if isinstance(rows_used, int) else "")
            + ". An artifact set of this head measures on its own text and every token, so its pages can differ."
        )
    )
    arts, _ = state.chosen()
    here = arts is not None and arts.model_name == model_name and head in arts.manifest["heads"]
    survey_rows = table[table["survey"] == row["survey"]].reset_index(drop=True)
    if here:  # the set's own verdict, with this survey's percentiles
        verdict_view.show(arts, head, (survey_rows, row["survey"], manifest))
    else:
        verdict_view.draw(
            verdicts.survey_verdict(
                survey_rows,
                schema.parse_head(head),
                ranking.survey_readout(manifest),
                verdict_view.survey_text(manifest),
            )
        )
    if here:
        state.pages.link(
            "browse", f"Open head {head} in Browse Examples", {"head": head}, icon=":material/open_in_new:"
        )
        state.pages.link("cspa", f"Open head {head} on the CSPA page", {"head": head}, icon=":material/open_in_new:")
    else:
        others = runs_with_head(model_name, head, state.sources())
        if others:
            there = {"head": head, "set": state.set_name(others[0])}
            st.caption(f"Its artifacts are in the set {literal(state.set_name(others[0]))}.")
            state.pages.link("browse", f"Open head {head} in Browse Examples", there, icon=":material/open_in_new:")
            state.pages.link("cspa", f"Open head {head} on the CSPA page", there, icon=":material/open_in_new:")
        else:
            st.markdown("No artifacts for this head here yet. This command makes them:")
        st.code(run_command(manifest, head), language="bash")


main()
