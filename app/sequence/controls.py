"""Sidebar controls shared by the sequence pages, kept in the URL (``state.url``) so that a reload (a click on a
token) keeps them."""

from __future__ import annotations

import streamlit as st

from app.state import url

EFFECT_HELP = (
    "**direct**: only the head's direct path to the logits is mean-ablated (the paper's main measure). "
    "**both**: the head's output is mean-ablated everywhere (later layers re-run). **indirect**: "
    "everything except the direct path."
)
LN_HELP = (
    "**frozen**: the final LayerNorm scale stays at its clean value (linear, the paper's choice). "
    "**unfrozen**: it is recomputed from the ablated residual stream."
)
METRICS = {
    "Δloss from ablating the head": "delta_loss",
    "KL(clean ‖ ablated)": "kl",
    "Most negative DLA at the token": "dla",
    "Log-prob of the next token": "logprob",
    "Prob. of the next token before the head (the set's read-out)": "lens",
    "Δloss under CSPA": "cspa",
}
BOUND = ("effect", "ln", "metric", "extreme", "nl")


def controls(key: str, hyperparameters: dict) -> dict:
    """Sidebar selectors (only the variants the artifacts hold); their values live in the URL as ``{key}_…``."""
    sb = st.sidebar
    effects = list(hyperparameters.get("effects", ["direct", "both", "indirect"]))
    ln_modes = list(hyperparameters.get("ln_modes", ["frozen", "unfrozen"]))
    parsers = {
        "effect": url.choice(effects),
        "ln": url.choice(ln_modes),
        "metric": url.choice(METRICS),
        "extreme": url.flag,
        "nl": url.flag,
    }
    for name in BOUND:  # each control's URL parameter is its key, e.g. browse_effect
        url.restore(f"{key}_{name}", f"{key}_{name}", parsers[name])
    st.session_state.setdefault(f"{key}_nl", True)
    effect = sb.radio("Intervention effect", effects, key=f"{key}_effect", help=EFFECT_HELP)
    ln = sb.radio("Final LayerNorm", ln_modes, key=f"{key}_ln", help=LN_HELP)
    metric = sb.selectbox("Colour tokens by", list(METRICS), key=f"{key}_metric")
    extreme = sb.toggle(
        "Scale colours to this sequence's extreme",
        key=f"{key}_extreme",
        help="Off: a fixed scale (±2.5 nats for Δloss, ±1 for KL and DLA).",
    )
    newlines = sb.toggle("Show line breaks as \\n", key=f"{key}_nl")
    bound = {f"{key}_{name}": st.session_state.get(f"{key}_{name}") for name in BOUND}
    defaults = {
        f"{key}_effect": effects[0],
        f"{key}_ln": ln_modes[0],
        f"{key}_metric": next(iter(METRICS)),
        f"{key}_extreme": False,
        f"{key}_nl": True,
    }
    url.publish({name: (name, value) for name, value in bound.items() if value is not None}, defaults)
    return {
        "variant": f"{effect}_{ln}",
        "metric": METRICS[metric],
        "metric_label": metric,
        "extreme": extreme,
        "newlines": newlines,
        "bound": bound,
    }


def link_state(opts: dict) -> dict:
    """The bound control values a token link must carry so the page reloads with the same sidebar."""
    out = {}
    for name, value in opts.get("bound", {}).items():
        if value is None:
            continue
        out[name] = str(value).lower() if isinstance(value, bool) else value
    return out
