"""Prompt pairs: the exploratory analysis that found the negative heads — logit difference, logit lens, layer and
head attribution, activation and attribution patching, self-repair — live on the artifacts' model."""

import pandas as pd
import streamlit as st

from app import live_model, pairs_view as V, state
from app.render.text import literal
from precompute.data.prompts import MIN_NAMES, PRESETS, ioi_pairs, preset_pairs, repeat_pairs, single_token_names
from precompute.errors import ExplorerError
from precompute.science.pairs import GRIDS, compare_prompts
from precompute.science.self_repair import METHODS, default_heads, self_repair

SETS = (["IOI (generated)", "repeated tokens (synthetic text)"] + [f"preset: {name}" for name in PRESETS]
        + ["your own pairs"])
OWN_HELP = ("One pair per line: clean prompt | corrupted prompt | right answer | wrong answer. Answers get a "
            "leading space (start one with _ for none). Every prompt must have the same number of tokens.")

arts = state.page_artifacts()
st.title("Prompt pairs")
model_name = arts.manifest["model"]["model_name"]
st.caption(f"Runs {literal(model_name)} live on the CPU. Logit difference = logit(right) − logit(wrong) at the final "
           "position; patching is denoising: the corrupted run with one clean activation, as a fraction of the way "
           "from the corrupted to the clean logit difference.")
analyzer, error = live_model.get_analyzer(arts)
if analyzer is None:
    st.error(f"The model cannot be loaded here: {literal(error)}")
    st.stop()
lm = analyzer.loaded


def _answer(text: str) -> str:
    text = text.strip()
    return text[1:] if text.startswith("_") else " " + text


def _own_pairs(text: str):
    rows = [line for line in text.splitlines() if line.strip()]
    if not rows:
        raise ExplorerError("type at least one pair")
    parts = [[p for p in line.split("|")] for line in rows]
    bad = [i + 1 for i, p in enumerate(parts) if len(p) != 4]
    if bad:
        raise ExplorerError(f"line {bad[0]} does not have four fields separated by |")
    return ([p[0].strip() for p in parts], [p[1].strip() for p in parts],
            [(_answer(p[2]), _answer(p[3])) for p in parts])


c1, c2 = st.columns([2, 1])
ioi_ok = len(single_token_names(lm.tokenizer)) >= MIN_NAMES  # otherwise open on a set this tokenizer can do
which = c1.radio("Prompt set", SETS, index=0 if ioi_ok else 1, horizontal=True, key="pairs_set")
with st.form("pairs_form"):
    if which in SETS[:2]:
        n = st.slider("Pairs", 2, 16, 8, key="pairs_n", help="IOI: ABBA and BABA orders, the corrupted prompt swaps "
                      "the second subject so the right answer flips. Repeated tokens: the next token already "
                      "appeared (what copy suppression acts on); the corrupted prompt replaces that occurrence")
    elif which == SETS[-1]:
        own = st.text_area("Pairs", key="pairs_text", height=140, help=OWN_HELP,
                           placeholder="When Mary and John went to the store, John gave a drink to | When Mary and "
                                       "John went to the store, Mary gave a drink to | Mary | John")
    o1, o2 = st.columns(2)
    do_patch = o1.checkbox("Activation patching", value=True, key="pairs_patch",
                           help="every cell of every grid; batched, many patches per forward pass")
    do_attr = o2.checkbox("Attribution patching", value=True, key="pairs_attr",
                          help="the gradient approximation: one forward and one backward pass")
    go_button = st.form_submit_button("Analyse", type="primary")

if go_button:
    try:
        if which == SETS[0]:
            clean, corrupted, answers, _ = ioi_pairs(lm.tokenizer, n)
        elif which == SETS[1]:
            clean, corrupted, answers = repeat_pairs(lm.tokenizer, n)
        elif which == SETS[-1]:
            clean, corrupted, answers = _own_pairs(own)
        else:
            clean, corrupted, answers = preset_pairs(which.split(": ", 1)[1], lm.tokenizer)
        bar = st.progress(0.0, text="Running the prompts…")
        with analyzer.model_lock:
            res = compare_prompts(lm, clean, corrupted, answers, patching=do_patch, attribution=do_attr,
                                  progress=lambda text, frac: bar.progress(min(1.0, frac), text=text))
        bar.empty()
        st.session_state["pairs_result"] = res
        st.session_state.pop("pairs_repair", None)
    except ExplorerError as err:
        st.error(f"Cannot analyse these pairs: {literal(err)}")
res = st.session_state.get("pairs_result")
if res is None:
    st.info("Choose a prompt set and press Analyse.")
    st.stop()

tok = lm.tokenizer
inp = res.inputs
table = pd.DataFrame({
    "clean": [tok.decode(r[1:]) for r in inp.clean.tolist()],
    "corrupted": [tok.decode(r[1:]) for r in inp.corrupted.tolist()],
    "right": [tok.decode([a]) for a in inp.answers[:, 0].tolist()],
    "wrong": [tok.decode([a]) for a in inp.answers[:, 1].tolist()],
    "LD clean": res.logit_diff_clean.numpy(), "LD corrupted": res.logit_diff_corrupted.numpy(),
})
st.subheader("Prompts")
st.dataframe(table, hide_index=True, width="stretch")
st.caption(f"Mean logit difference: clean {res.ld_clean:+.3f}, corrupted {res.ld_corrupted:+.3f}.")

t1, t2 = st.columns(2)
t1.markdown("**Logit lens of the logit difference**")
t1.plotly_chart(V.lens_figure(res), key="pairs_lens")
t2.markdown("**Direct contribution of each layer**")
t2.plotly_chart(V.layer_figure(res), key="pairs_layers")

st.subheader("Heads")
event = st.plotly_chart(V.head_figure(res.head_dla, "direct contribution of each head to the logit difference"),
                        key="pairs_heads", on_select="rerun", selection_mode="points")
points = event.selection.points if event is not None else []
L, H = res.head_dla.shape
heads = [f"{layer}.{h}" for layer in range(L) for h in range(H)]
order = sorted(heads, key=lambda k: float(res.head_dla[tuple(map(int, k.split(".")))]))
current = st.session_state.get("pairs_current_head")
if points:
    current = f"{int(points[0]['y'])}.{int(points[0]['x'])}"
if current not in heads:
    current = order[0]  # the most negative head
head = st.selectbox("Head to inspect (click one in the heatmap, or pick)", heads, index=heads.index(current),
                    key=f"pairs_head_{current}",
                    format_func=lambda k: f"{k} ({float(res.head_dla[tuple(map(int, k.split('.')))]):+.3f})")
st.session_state["pairs_current_head"] = head
layer, h = map(int, head.split("."))
p = st.selectbox("Prompt", list(range(len(table))), format_func=lambda i: table["clean"][i], key="pairs_prompt")
with analyzer.model_lock:
    _, cache = lm.model.run_with_cache(inp.clean[p:p + 1], names_filter=[f"blocks.{layer}.attn.hook_pattern"])
pattern = cache[f"blocks.{layer}.attn.hook_pattern"][0, h].float()
st.plotly_chart(V.pattern_figure(pattern, res.labels if p == 0 else
                                 [tok.decode([t]) for t in inp.clean[p].tolist()], f"head {head}: attention"),
                key="pairs_pattern")
if head in arts.manifest["heads"]:
    st.page_link("views/browse.py", label=f"Open head {head} in Browse Examples", query_params={"head": head},
                 icon=":material/open_in_new:")
else:
    st.caption(f"Head {head} has no artifacts here; `python -m precompute run --model {literal(model_name)} "
               f"--heads {head}` makes them.")

if res.patch or res.attr:
    st.subheader("Patching")
    kinds = [k for k, v in (("activation patching", res.patch), ("attribution patching", res.attr)) if v]
    tabs = st.tabs(kinds + (["agreement"] if res.patch and res.attr else []))
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
            st.caption("Correlation of attribution with activation patching: " + ", ".join(
                f"{V.GRID_TITLES[g]} {c:.2f}" for g, c in corr.items()))

st.subheader("Self-repair")
defaults = default_heads(lm) or tuple(tuple(map(int, k.split("."))) for k in reversed(order[-3:]))
with st.form("repair_form"):
    r1, r2 = st.columns([2, 1])
    text = r1.text_input("Heads to ablate", value=", ".join(f"{a}.{b}" for a, b in defaults), key="repair_heads",
                         help="GPT-2's default: the name movers 9.9, 9.6, 10.0; elsewhere the three heads with the "
                              "largest direct contribution")
    method = r2.radio("Ablation", METHODS, horizontal=True, key="repair_method")
    run_repair = st.form_submit_button("Measure self-repair")
if run_repair:
    try:
        from precompute.jobs.config import parse_heads

        with analyzer.model_lock:
            st.session_state["pairs_repair"] = self_repair(lm, inp.clean, inp.answers, parse_heads(text), method)
    except ExplorerError as err:
        st.error(f"Cannot measure self-repair: {literal(err)}")
rep = st.session_state.get("pairs_repair")
if rep is not None:
    st.caption(f"Ablating {', '.join(f'{a}.{b}' for a, b in rep.heads)} ({rep.method}): their direct effect was "
               f"{rep.direct_effect:+.3f}; the logit difference went from {rep.ld_clean:+.3f} to "
               f"{rep.ld_ablated:+.3f}; downstream components changed their direct contributions by "
               f"{rep.total:+.3f} in all.")
    st.plotly_chart(V.head_figure(rep.head_change, "change of each downstream head's direct contribution"),
                    key="pairs_repair_heads")
    shares = [(f"{a}.{b}", float(rep.head_share[a, b])) for a in range(L) for b in range(H)
              if not bool(rep.head_share[a, b].isnan())]
    shares += [(f"MLP {a}", float(rep.mlp_share[a])) for a in range(L) if not bool(rep.mlp_share[a].isnan())]
    top = pd.DataFrame(sorted(shares, key=lambda kv: -abs(kv[1]))[:15], columns=["component", "share"])
    st.dataframe(top, hide_index=True)
    neg = [k for k in ("10.7", "11.10") if k in dict(shares)]
    if neg:
        st.caption("Share of 10.7 and 11.10 together: "
                   f"{sum(dict(shares)[k] for k in neg):.1%} (the paper: 39% under name-mover ablation).")
