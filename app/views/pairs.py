"""Prompt pairs: the exploratory analysis that found the negative heads — logit difference, logit lens, layer and
head attribution, activation and attribution patching, self-repair — live on the artifacts' model (through its
``LiveModel``: this page names no hook and holds no lock). The figures and the analysis constants import torch,
so they are imported where they are drawn, after the page has said it is loading (a first visit waits for torch
and the model)."""

import time

import numpy as np
import pandas as pd
import streamlit as st

from app import live_model, state
from app.render.text import literal
from app.survey_data import run_command
from precompute import paper
from precompute.data.pair_sets import BUILT, GENERATED, OWN, OWN_HELP, SET_NAMES, SETS, SHORT_SET, build_pairs
from precompute.errors import ExplorerError
from precompute.schema import every_head, head_key, parse_head, parse_heads
from precompute.science.pairs_settings import DEFAULT_TOP_CELLS
from precompute.science.progress import Stages

SESSION = state.page_state("pairs")  # this page's own session values (``app.state.session``)

NEGATIVE = [head_key(h) for h in paper.NEGATIVE_HEADS]


def unavailable_sets(model) -> dict[str, str]:
    """The prompt sets this model's tokenizer cannot build, with the reason (built once per model: a few
    tokenisations)."""
    cache = SESSION.setdefault("_pairs_unavailable", {})
    if model.name not in cache:
        reasons = {}
        for which in BUILT:
            try:
                build_pairs(which, model.tokenizer, 8, "")
            except ExplorerError as err:
                reasons[which] = f"unavailable: {err}"
        cache[model.name] = reasons
    return cache[model.name]


def analysis_form(model) -> None:
    """The prompt set and options; Analyse runs the comparison (a failure clears the previous result). Sets the
    tokenizer cannot build carry the reason under their name and cannot be analysed."""
    c1, _ = st.columns([2, 1])
    unavailable = unavailable_sets(model)
    state.url.restore("prompts", "pairs_set", state.url.mapped(SET_NAMES))
    SESSION.setdefault("pairs_set", next(s for s in SETS if s not in unavailable))
    which = c1.radio(
        "Prompt set",
        SETS,
        horizontal=True,
        key="pairs_set",
        captions=[unavailable.get(s, "") for s in SETS],
    )
    state.url.publish({"prompts": ("pairs_set", SHORT_SET[which])})
    if which in unavailable:
        st.warning(f"{literal(which)} cannot be analysed here: {literal(unavailable[which])}.")
    n, own = 8, ""
    with st.form("pairs_form"):
        if which in GENERATED:
            n = st.slider(
                "Pairs",
                2,
                16,
                8,
                key="pairs_n",
                help="IOI: ABBA and BABA orders, the corrupted prompt "
                "swaps the second subject so the right answer flips. Repeated tokens: the next token "
                "already appeared (what copy suppression acts on); the corrupted prompt replaces that "
                "occurrence",
            )
        elif which == OWN:
            own = st.text_area(
                "Pairs",
                key="pairs_text",
                height=140,
                help=OWN_HELP,
                placeholder="When Mary and John went to the store, John gave a drink to | When Mary "
                "and John went to the store, Mary gave a drink to | Mary | John",
            )
        o1, o2, o3 = st.columns(3)
        do_patch = o1.checkbox(
            "Activation patching",
            value=True,
            key="pairs_patch",
            help="of the cells attribution patching ranks first (AtP), or of every cell; batched, many patches "
            "per forward pass",
        )
        top_n = o2.number_input(
            "Cells to activation-patch",
            min_value=0,
            max_value=100_000,
            value=DEFAULT_TOP_CELLS,
            step=16,
            key="pairs_top",
            help="the cells attribution patching ranks first by the size of its estimate (Kramár et al. 2024, "
            "AtP); 0 patches every cell, which takes minutes on a real model",
        )
        do_attr = o3.checkbox(
            "Attribution patching",
            value=True,
            key="pairs_attr",
            help="the gradient approximation: one forward and one backward pass",
        )
        go_button = st.form_submit_button("Analyse", type="primary", disabled=which in unavailable)
    if not go_button:
        return
    for key in ("pairs_result", "pairs_repair", "pairs_partial"):
        SESSION.pop(key, None)
    try:
        clean, corrupted, answers = build_pairs(which, model.tokenizer, n, own)
        bar = st.progress(0.0, text="Running the prompts…")
        stages = Stages(lambda text, frac: bar.progress(min(1.0, frac), text=text), {"pairs": 1})
        stop = st.empty()  # gone with the progress bar once the analysis is done
        stop.button("Stop", key="pairs_stop", help="stops the analysis; the patched cells so far stay on the page")
        live = st.empty()
        shown = [0.0]

        def partial(grids) -> None:  # the cells patched so far, at most every 2 s
            SESSION["pairs_partial"] = grids
            if time.monotonic() - shown[0] >= 2.0:
                live.dataframe(partial_table(grids), hide_index=True)
                shown[0] = time.monotonic()

        res = model.compare_prompts(
            clean,
            corrupted,
            answers,
            patching=do_patch,
            attribution=do_attr,
            progress=stages.report("pairs"),
            on_wait=live_model.queue_notice(),
            top_n=int(top_n) or None,
            partial=partial,
        )
        bar.empty()
        stop.empty()
        live.empty()
        SESSION.pop("pairs_partial", None)
        SESSION["pairs_result"] = res
    except ExplorerError as err:
        st.error(f"Cannot analyse these pairs: {literal(err)}")


def partial_table(grids: dict) -> pd.DataFrame:
    """The activation-patched cells so far, largest effect first (at most 20)."""
    from app import pairs_view as V

    rows = []
    for grid, values in grids.items():
        for (layer, j), v in np.ndenumerate(values):
            if np.isfinite(v):
                what = f"position {j}" if grid in ("resid_pre", "attn_out", "mlp_out") else f"head {layer}.{j}"
                rows.append((V.GRID_TITLES[grid], layer, what, float(v)))
    table = pd.DataFrame(rows, columns=["grid", "layer", "cell", "recovered"])
    return table.reindex(table["recovered"].abs().sort_values(ascending=False).index).head(20)


def prompts_table(res, tok) -> pd.DataFrame:
    inp = res.inputs
    table = pd.DataFrame(
        {
            "clean": [tok.decode(r[1:]) for r in inp.clean.tolist()],
            "corrupted": [tok.decode(r[1:]) for r in inp.corrupted.tolist()],
            "right": [tok.decode([a]) for a in inp.answers[:, 0].tolist()],
            "wrong": [tok.decode([a]) for a in inp.answers[:, 1].tolist()],
            "LD clean": res.logit_diff_clean,
            "LD corrupted": res.logit_diff_corrupted,
        }
    )
    st.subheader("Prompts")
    # widths that fit six columns in the wide layout at 1,400 px; a long prompt wraps to "…" (its full text on hover)
    st.dataframe(
        table,
        hide_index=True,
        width="stretch",
        column_config={
            "clean": st.column_config.TextColumn(width="medium"),
            "corrupted": st.column_config.TextColumn(width="medium"),
            "right": st.column_config.TextColumn(width="small"),
            "wrong": st.column_config.TextColumn(width="small"),
            "LD clean": st.column_config.NumberColumn(width="small", format="%+.3f"),
            "LD corrupted": st.column_config.NumberColumn(width="small", format="%+.3f"),
        },
    )
    st.caption(f"Mean logit difference: clean {res.ld_clean:+.3f}, corrupted {res.ld_corrupted:+.3f}.")
    from app import pairs_view as V

    t1, t2 = st.columns(2)
    t1.markdown("**Logit lens of the logit difference**")
    t1.plotly_chart(V.lens_figure(res), key="pairs_lens")
    t2.markdown("**Direct contribution of each layer**")
    t2.plotly_chart(V.layer_figure(res), key="pairs_layers")
    return table


def clicked_head(event, heads: list[str]) -> str | None:
    """The head of the heatmap cell the user clicked (the figure's clickable markers), if any."""
    points = (event or {}).get("selection", {}).get("points", [])  # the event is a dict (attribute access too)
    for point in points:
        key = f"{int(point['y'])}.{int(point['x'])}"
        if key in heads:
            return key
    return None


def head_section(res, model, arts, table: pd.DataFrame) -> list[str]:
    """The heads' direct contributions, one head's attention (click a cell, or pick); returns the heads sorted by
    contribution, most negative first."""
    from app import pairs_view as V

    st.subheader("Heads")
    event = st.plotly_chart(
        V.head_figure(res.head_dla, "direct contribution of each head to the logit difference", clickable=True),
        key="pairs_heads",
        on_select="rerun",
        selection_mode="points",
    )
    L, H = res.head_dla.shape
    heads = every_head(L, H)

    def dla(k: str) -> float:
        return float(res.head_dla[parse_head(k)])

    order = sorted(heads, key=dla)
    state.url.restore("head", "pairs_head", state.url.choice(heads))
    clicked = clicked_head(event, heads)
    if clicked is not None and clicked != SESSION.get("_pairs_clicked"):
        # a new click picks the head; the same selection on later reruns leaves the box to the user
        SESSION["_pairs_clicked"] = SESSION["pairs_head"] = clicked
    # the set's own head first (the one the other pages show), else the most negative head
    default = next((h for h in arts.manifest["heads"] if h in heads), order[0])
    if SESSION.get("pairs_head") not in heads:
        SESSION["pairs_head"] = default
    head = st.selectbox(
        "Head to inspect (click one in the heatmap, or pick)",
        heads,
        key="pairs_head",
        format_func=lambda k: f"{k} ({dla(k):+.3f})",
    )
    state.url.publish({"head": ("pairs_head", head)}, {"head": default})
    tok = model.tokenizer
    p = st.selectbox("Prompt", list(range(len(table))), format_func=lambda i: table["clean"][i], key="pairs_prompt")
    ids = res.inputs.clean[p]
    try:
        pattern = model.attention(ids, parse_head(head), on_wait=live_model.queue_notice())
    except ExplorerError as err:  # the model is busy
        st.warning(f"Head {head}'s attention cannot be shown now: {literal(err)}")
    else:
        labels = res.labels if p == 0 else [tok.decode([t]) for t in ids.tolist()]
        st.plotly_chart(V.pattern_figure(pattern, labels, f"head {head}: attention"), key="pairs_pattern")
    if head in arts.manifest["heads"]:
        state.pages.link(
            "browse", f"Open head {head} in Browse Examples", {"head": head}, icon=":material/open_in_new:"
        )
    else:
        st.caption(f"Head {head} has no artifacts in this set; this command makes them (on this set's text):")
        st.code(run_command(arts.manifest, head), language="bash")
    return order


def patching_section(res) -> None:
    from app import pairs_view as V
    from precompute.science.pairs import GRIDS

    if not (res.patch or res.attr):
        return
    st.subheader("Patching")
    kinds = [k for k, v in (("activation patching", res.patch), ("attribution patching", res.attr)) if v]
    tabs = st.tabs(kinds + (["agreement"] if res.patch and res.attr else []))
    if res.patch and res.patched_cells < res.total_cells:
        st.caption(
            f"Activation patching measured the {res.patched_cells} of {res.total_cells} cells that attribution "
            "patching ranks first by the size of its estimate (AtP, Kramár et al. 2024); blank cells were not "
            "patched. Set 'Cells to activation-patch' to 0 to patch every cell."
        )
    for tab, kind in zip(tabs, kinds):
        grids = res.patch if kind == "activation patching" else res.attr
        with tab:
            for grid in GRIDS:
                if grid in grids:
                    st.plotly_chart(V.grid_figure(res, grids[grid], grid, kind), key=f"pairs_{kind}_{grid}")
    if res.patch and res.attr:
        with tabs[-1]:
            fig, corr = V.agreement_figure(res)
            st.plotly_chart(fig, key="pairs_agreement")
            st.caption(
                "Correlation of attribution with activation patching over the patched cells: "
                + ", ".join(f"{V.GRID_TITLES[g]} {c:.2f}" for g, c in corr.items())
            )


def self_repair_section(res, model, order: list[str], arts_heads: list[str]) -> None:
    from app import pairs_view as V
    from precompute.science.self_repair import METHODS

    st.subheader("Self-repair")
    defaults = model.default_ablation_heads() or tuple(parse_head(k) for k in reversed(order[-3:]))
    with st.form("repair_form"):
        r1, r2 = st.columns([2, 1])
        text = r1.text_input(
            "Heads to ablate",
            value=", ".join(head_key(h) for h in defaults),
            key="repair_heads",
            help="GPT-2's default: the name movers "
            + ", ".join(head_key(h) for h in paper.NAME_MOVERS)
            + "; elsewhere the three heads with the largest direct contribution",
        )
        method = r2.radio("Ablation", METHODS, horizontal=True, key="repair_method")
        run_repair = st.form_submit_button("Measure self-repair")
    if run_repair:
        SESSION.pop("pairs_repair", None)
        try:
            with st.spinner("Measuring self-repair: one ablated run and every downstream component…", show_time=True):
                SESSION["pairs_repair"] = model.self_repair(
                    res.inputs.clean, res.inputs.answers, parse_heads(text), method, on_wait=live_model.queue_notice()
                )
        except ExplorerError as err:
            st.error(f"Cannot measure self-repair: {literal(err)}")
    rep = SESSION.get("pairs_repair")
    if rep is None:
        return
    st.caption(
        f"Ablating {', '.join(head_key(h) for h in rep.heads)} ({rep.method}): their direct effect was "
        f"{rep.direct_effect:+.3f}; the logit difference went from {rep.ld_clean:+.3f} to "
        f"{rep.ld_ablated:+.3f}; downstream components changed their direct contributions by "
        f"{rep.total:+.3f} in all."
    )
    st.plotly_chart(
        V.head_figure(rep.head_change, "change of each downstream head's direct contribution"), key="pairs_repair_heads"
    )
    L, H = rep.head_share.shape
    shares = [
        (f"{a}.{b}", float(rep.head_share[a, b]))
        for a in range(L)
        for b in range(H)
        if not np.isnan(rep.head_share[a, b])
    ]
    shares += [(f"MLP {a}", float(rep.mlp_share[a])) for a in range(L) if not np.isnan(rep.mlp_share[a])]
    top = pd.DataFrame(sorted(shares, key=lambda kv: -abs(kv[1]))[:15], columns=["component", "share"])
    st.dataframe(top, hide_index=True)
    share = dict(shares)
    gpt2 = model.name == "gpt2-small"
    # GPT-2 small: the paper's negative heads, compared with its figure; another model: the set's own heads
    neg = [k for k in (NEGATIVE if gpt2 else arts_heads) if k in share]
    if neg:
        st.caption(
            f"Share of {' and '.join(neg)} together: {sum(share[k] for k in neg):.1%}"
            + (
                f" (the paper: {paper.SELF_REPAIR_NEGATIVE_SHARE:.0%} for GPT-2 small's 10.7 and 11.10 under "
                "name-mover ablation)."
                if gpt2
                else f" (this set's head{'s' if len(neg) > 1 else ''}; the paper's "
                f"{paper.SELF_REPAIR_NEGATIVE_SHARE:.0%} is for GPT-2 small's 10.7 and 11.10 under name-mover "
                "ablation, not comparable head for head)."
            )
        )


def main() -> None:
    arts = state.page_artifacts()
    st.title("Prompt pairs")
    model_name = arts.model_name
    st.caption(
        f"Runs {literal(model_name)} live on the CPU. Logit difference = logit(right) − logit(wrong) at the "
        "final position; patching is denoising: the corrupted run with one clean activation, as a fraction "
        "of the way from the corrupted to the clean logit difference."
    )
    # a first visit waits for torch, the model and its prompt sets (seconds): say so at once
    with st.spinner(f"Loading {literal(model_name)} and its prompt sets…", show_time=True):
        model, error = live_model.get_model(arts)
        if model is not None:
            unavailable_sets(model)
    if model is None:
        st.error(f"The model cannot be loaded here: {literal(error)}")
        st.stop()
    analysis_form(model)
    res = SESSION.get("pairs_result")
    if res is None:
        stopped = SESSION.get("pairs_partial")
        if stopped:
            done = sum(int(np.isfinite(v).sum()) for v in stopped.values())
            st.warning(f"Stopped after {done} activation-patched cells; the largest so far:")
            st.dataframe(partial_table(stopped), hide_index=True)
        st.info("Choose a prompt set and press Analyse.")
        st.stop()
    table = prompts_table(res, model.tokenizer)
    order = head_section(res, model, arts, table)
    patching_section(res)
    self_repair_section(res, model, order, list(arts.manifest["heads"]))


main()
