"""Test Your Own Examples: analyse typed text live on CPU, with the same code and views as Browse."""

import hashlib

import streamlit as st

from app import answer_view, exports, live_model, state
from app import sequence as sequence_view
from app.render.text import literal
from precompute import schema
from precompute.errors import ExplorerError

SESSION = state.page_state("live")  # this page's own session values (``app.state.session``)

EXAMPLES = {
    "GPT-2 style": [
        "When Mary and John went to the store, John gave a drink to",
        "All's fair in love and war.",
        "I picked up the first box. I picked up the second box. I picked up the third and final box.",
        "The Eiffel Tower is in Paris. Every year, millions of tourists visit Paris to see the tower in",
    ],
    "toy": [
        "The kanosa of the teri is kanosa. A kanosa was in the teri with a ruko.",
        "On the zuda, the teri and the kanosa met ruko. The teri of the risupo is",
    ],
}

PROMPT_LINK_CHARS = 2000  # the longest prompt a link carries (longer ones are analysed but not put in the URL)


def main() -> None:
    arts = state.page_artifacts()
    st.title("Test Your Own Examples")
    head = state.head_picker(arts, key="live_head", every_head=True)
    opts = sequence_view.controls("live", arts.manifest["hyperparameters"])
    model_name = arts.model_name
    examples = EXAMPLES["toy" if model_name == "toy" else "GPT-2 style"]
    st.caption(
        f"Runs {literal(model_name)} live on the CPU with the same analysis code and mean ablation (μ from the "
        "artifacts) as the precomputed examples."
        + (" The toy model only knows its synthetic language." if model_name == "toy" else "")
    )
    choice = st.selectbox("Example prompts", ["(type your own)"] + examples, key="live_example")
    # a link's ?prompt= is analysed at once and fills the box
    state.url.restore("prompt", "live_prompt", state.url.text(PROMPT_LINK_CHARS))
    default = SESSION.get("live_prompt") or "" if choice == "(type your own)" else choice
    with st.form("live_form"):
        text = st.text_area("Prompt", value=default, height=120, key=f"live_text_{choice}")
        submitted = st.form_submit_button("Analyse", type="primary")
    if submitted:
        SESSION["live_prompt"] = text
    prompt = SESSION.get("live_prompt")
    if not prompt:
        st.info("Type a prompt (or choose an example) and press **Analyse**.")
        st.stop()
    analyzer, error = live_model.get_analyzer(arts)
    if error:
        st.error(f"Live analysis is unavailable: {literal(error)}")
        st.stop()
    # what counts as "predicted" (CSPA's filter and the "before the head" panel): the set's choice unless changed here
    offered = list(analyzer.readouts_for(head))
    set_readout = analyzer.readout_of(head)
    state.url.restore("readout", "live_readout", state.url.choice(offered))
    SESSION.setdefault("live_readout", set_readout)
    if SESSION["live_readout"] not in offered:
        SESSION["live_readout"] = set_readout
    readout = st.selectbox(
        "What counts as 'predicted'",
        offered,
        format_func=lambda r: schema.READOUT_LABELS[r] + (" — this set's choice" if r == set_readout else ""),
        key="live_readout",
        help="CSPA keeps suppression of the sources this read-out predicts, and the token details show its prediction "
        "before the head. The set's choice is the read-out that agrees best with the model on held-out text.",
    )
    state.url.publish({"readout": ("live_readout", readout)}, {"readout": set_readout})
    if not analyzer.stored(head):
        n_mean = int(arts.manifest["hyperparameters"].get("n_mean", arts.n_sequences))
        with st.spinner(
            f"Head {schema.head_key(head)} is not stored in this set: computing its mean output over the set's first "
            f"{min(n_mean, arts.n_sequences)} sequences (once per head)…"
        ):
            try:
                analyzer.mean_of(head, on_wait=live_model.queue_notice())
            except ExplorerError as err:
                st.error(literal(err))
                st.stop()
    try:
        with st.spinner("Analysing…"):
            result = analyzer.analyze(
                prompt, head, variants=(opts["variant"],), on_wait=live_model.queue_notice(), readout=readout
            )
    except ExplorerError as err:
        st.error(literal(err))
        st.stop()
    if len(prompt) <= PROMPT_LINK_CHARS:
        state.url.publish({"prompt": ("live_prompt", prompt)})
    else:
        state.url.remove("prompt")
    if result.cut_to is not None:
        n_ctx = arts.record.model.n_ctx
        why = (
            f"the model's context is {n_ctx} tokens"
            if n_ctx and result.cut_to >= n_ctx
            else f"the mean ablation covers the set's {result.cut_to}-token sequences"
        )
        st.warning(f"The prompt has {result.n_tokens_in} tokens; only the first {result.cut_to} were analysed ({why}).")
    n = int(result.record[schema.TOKENS].shape[0])
    # a new prompt starts at its last token (what the model predicts next); the position box is keyed by the prompt
    pos_key = f"live_pos_{hashlib.sha256(prompt.encode('utf-8', 'surrogatepass')).hexdigest()[:12]}"
    pos = st.number_input("Token position", 0, n - 1, value=n - 1, key=pos_key)
    head_name = schema.head_key(head)
    answer_view.show(analyzer, prompt, head, int(pos), opts["variant"], result.record)
    others = [h for h in state.url.every_head_stored_first(arts.manifest) if h != head_name]
    compare = st.sidebar.selectbox(
        "Compare with head",
        ["(none)"] + others,
        key="live_compare",
        help="Show a second head's strip beside this one (any head of the model; the set's own first)",
        disabled=not others,
    )
    if compare != "(none)":
        try:
            with st.spinner(f"Analysing head {compare} too…"):
                other = analyzer.analyze(
                    prompt, schema.parse_head(compare), variants=(opts["variant"],), on_wait=live_model.queue_notice()
                )  # the other head with its own read-out (its mean output computed once if the set did not store it)
        except ExplorerError as err:
            st.error(f"Head {literal(compare)} cannot be shown: {literal(err)}")
        else:
            sequence_view.compare_strip(other.record, analyzer.tokenizer, opts, int(pos), compare, None)
            st.markdown(f"**Head {literal(head_name)}** (details below)")
    sequence_view.show(
        result.record,
        analyzer.tokenizer,
        opts,
        int(pos),
        key="live",
        name="prompt",
        head_name=head_name,
        readout=readout,
        meta=exports.metadata(
            arts,
            head_name,
            prompt=prompt,
            analysed="live, with this set's mean ablation",
            variant=opts["variant"],
            readout=readout,
        ),
    )


main()
