"""The answer-token box of Test Your Own Examples: named tokens' logit, probability, rank and the head's DLA at the
selected position, clean and with the head ablated (``LiveAnalyzer.answers``), kept in the URL as ``?answer=``."""

from __future__ import annotations

import math

import pandas as pd
import streamlit as st

from app import live_model, state
from app.circuit_views import strip_quotes
from app.render.text import literal
from precompute import schema
from precompute.data.tokenization import token_strings
from precompute.errors import ExplorerError
from precompute.schema import MAX_ANSWERS

KEY = "live_answers"
ANSWER_CHARS = 400
SEPARATOR = "|"


def parse(tokenizer, raw: str) -> tuple[list[int], list[str]]:
    """(token ids, notes): one id per ``|``-separated entry (its first token where it is several), at most
    ``MAX_ANSWERS``; the notes say what was changed, as literal text."""
    ids, notes = [], []
    for entry in raw.split(SEPARATOR):
        text = strip_quotes(entry)
        if not text.strip(" "):
            continue
        got = tokenizer(text, add_special_tokens=False)["input_ids"]
        if not got:
            notes.append(f"{literal(repr(text))} has no tokens; left out.")
            continue
        if len(got) > 1:
            pieces = " | ".join(repr(p) for p in token_strings(tokenizer, got))
            notes.append(f"{literal(repr(text))} is {len(got)} tokens ({literal(pieces)}): its first is used.")
        if got[0] not in ids:
            ids.append(int(got[0]))
    if len(ids) > MAX_ANSWERS:
        notes.append(f"Only the first {MAX_ANSWERS} answer tokens are shown.")
        ids = ids[:MAX_ANSWERS]
    return ids, notes


def table(got, strings: list[str]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "token": [repr(s) for s in strings],
            "id": got.ids,
            "logit clean": got.logit_clean,
            "logit ablated": got.logit_ablated,
            "head's effect": got.logit_clean - got.logit_ablated,
            "prob clean": got.prob_clean,
            "prob ablated": got.prob_ablated,
            "rank clean": got.rank_clean,
            "rank ablated": got.rank_ablated,
            "DLA clean": got.dla_clean,
            "DLA ablated": got.dla_ablated,
        }
    )


def reading(got, strings: list[str], head_name: str) -> str:
    """One plain sentence about the first answer, read off the numbers it shows."""
    d = float(got.logit_clean[0] - got.logit_ablated[0])
    if math.isclose(d, 0.0, abs_tol=5e-4):
        verb = f"leaves {strings[0]!r}'s logit unchanged (within 0.0005)"
    else:
        verb = f"{'raises' if d > 0 else 'lowers'} {strings[0]!r}'s logit by {abs(d):.3f}"
    return (
        f"Head {head_name} {verb}: its probability is {got.prob_clean[0]:.4f} with the head and "
        f"{got.prob_ablated[0]:.4f} with it ablated (rank {int(got.rank_clean[0])} → {int(got.rank_ablated[0])})."
    )


def show(analyzer, prompt: str, head: tuple[int, int], pos: int, variant: str, record: dict) -> None:
    """The box and, for the tokens it names, the table at ``pos`` under the page's ablation ``variant``."""
    tokenizer = analyzer.tokenizer
    state.url.restore("answer", KEY, state.url.text(ANSWER_CHARS))
    raw = st.text_input(
        "Answer tokens (separate several with |; include the leading space, e.g. ` Mary| John`)",
        key=KEY,
        help="Each token's logit, probability, rank and the head's direct logit attribution at the selected "
        "position, clean and with the head ablated.",
    )
    state.url.publish({"answer": (KEY, raw)}, {"answer": ""})
    if not raw.strip():
        st.caption("Name an answer token to see its logit and the head's effect on it at this position.")
        return
    ids, notes = parse(tokenizer, raw)
    for note in notes:
        st.caption(note)
    if not ids:
        return
    try:
        got = analyzer.answers(prompt, head, pos, ids, variant, on_wait=live_model.queue_notice())
    except ExplorerError as err:
        st.error(literal(err))
        return
    strings = token_strings(tokenizer, ids)
    here = token_strings(tokenizer, [int(record[schema.TOKENS][pos])])[0]
    effect, ln_mode = variant.split("_")
    st.dataframe(
        table(got, strings),
        hide_index=True,
        column_config={
            c: st.column_config.NumberColumn(format="%.4f")
            for c in ("logit clean", "logit ablated", "head's effect", "prob clean", "prob ablated")
        }
        | {c: st.column_config.NumberColumn(format="%.3f") for c in ("DLA clean", "DLA ablated")},
    )
    head_name = schema.head_key(head)
    st.caption(
        literal(
            f"At position {pos} (token {here!r}), predicting the next token. Logits and DLA in logits (nats of "
            f"unnormalised log-probability); rank 0 = the model's top prediction. Ablated: head {head_name} "
            f"mean-ablated ({effect} effect, final norm {ln_mode}). Head's effect = logit clean − logit ablated. "
            "DLA: what the head's output (clean) or its mean output (ablated) adds to the token's logit through "
            "the final norm's clean scale; with the direct effect and a frozen norm, the head's effect equals "
            "DLA clean − DLA ablated. " + reading(got, strings, head_name)
        )
    )
