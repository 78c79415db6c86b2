"""Browse Examples: search the tokens where the head matters most, pick a sequence, inspect every token."""

import pandas as pd
import streamlit as st

from app import exports, state
from app import sequence as sequence_view
from app.render.text import literal
from precompute import schema as F
from precompute.data.tokenization import token_strings
from precompute.errors import ExplorerError

SESSION = state.page_state("browse")  # this page's own session values (``app.state.session``)


@st.cache_data(max_entries=16, show_spinner=False)
def top_tokens(source: str, head_name: str, metric: str, n: int) -> pd.DataFrame:
    a = state.open_source(source)
    idx = a.index(head_name)
    seqs, poss, vals = (idx[F.index_key(metric, part)][:n] for part in F.INDEX_PARTS)
    seqs, poss = seqs.tolist(), poss.tolist()
    tok = a.tokenizer
    rows = []
    for s, p, v in zip(seqs, poss, vals.tolist()):
        ids = a.tokens(s).tolist()
        strings = token_strings(tok, ids)
        ctx = "".join(strings[max(1, p - 8) : p + 1])
        rows.append({"seq": s, "pos": p, "token": strings[p], "next": strings[p + 1], "context": ctx, "value": v})
    return pd.DataFrame(rows, columns=["seq", "pos", "token", "next", "context", "value"])


# the search's rankings: label -> (index metric, the name of its value column)
RANKINGS = {
    "Δloss (head helps most)": ("delta_loss", "Δloss"),
    "Δloss (head hurts most)": ("neg_delta_loss", "Δloss"),
    "KL from ablation": ("kl", "KL"),
    # ranked by the size of the loss change CSPA does not preserve; the column keeps its sign
    "Where CSPA misses the effect (largest |Δloss under CSPA|)": ("cspa_failure", "Δloss under CSPA (signed)"),
}


def main() -> None:
    arts = state.page_artifacts()
    st.title("Browse Examples")
    tokenizer = state.page_tokenizer(arts)
    head = state.head_picker(arts, key="browse_head")
    head_name = head.name
    deep_link = state.url.given("seq")
    state.url.restore("seq", "browse_seq", state.url.whole(0, arts.n_sequences - 1))
    state.url.restore("pos", "browse_pos", state.url.whole(0, arts.seq_len - 1))
    opts = sequence_view.controls("browse", arts.manifest["hyperparameters"])
    # the panel's state is fixed for the session, so it never collapses under the user's first interaction
    search_open = SESSION.setdefault("_browse_search_open", not deep_link)
    with st.expander("Search: where does the head matter most?", expanded=search_open):
        c1, c2 = st.columns([1, 2])
        metric_label = c1.selectbox("Rank tokens by", list(RANKINGS), key="browse_rank")
        metric, value_name = RANKINGS[metric_label]
        text_filter = c2.text_input("Filter by token text (current or next token)", key="browse_filter")
        try:
            table = top_tokens(arts.source, head_name, metric, 500)
        except ExplorerError as err:
            st.error(f"The search index cannot be read: {literal(err)}")
            table = pd.DataFrame(columns=["seq", "pos", "token", "next", "context", "value"])
        table = table.rename(columns={"value": value_name})
        if text_filter:
            mask = table["token"].str.contains(text_filter, regex=False) | table["next"].str.contains(
                text_filter, regex=False
            )
            table = table[mask]
        st.caption("Select a row to open that token. Values use the direct effect with frozen LayerNorm.")
        if table.empty:
            st.info("No token matches this filter.")
        else:
            event = st.dataframe(
                table.head(200), hide_index=True, on_select="rerun", selection_mode="single-row", key="browse_table"
            )
            picked = event.selection.rows if event is not None else []
            if picked:
                row = table.head(200).iloc[picked[0]]
                if SESSION.get("_browse_picked") != (int(row["seq"]), int(row["pos"])):
                    SESSION["_browse_picked"] = (int(row["seq"]), int(row["pos"]))
                    SESSION["browse_seq"] = int(row["seq"])
                    SESSION["browse_pos"] = int(row["pos"])
    if "browse_seq" not in SESSION and not table.empty:
        # a first visit without a deep link opens on the highest-ranked example of the search table
        SESSION["browse_seq"], SESSION["browse_pos"] = (
            int(table.iloc[0]["seq"]),
            int(table.iloc[0]["pos"]),
        )
    others = [h for h in arts.manifest["heads"] if h != head_name]
    compare = st.sidebar.selectbox(
        "Compare with head",
        ["(none)"] + others,
        key="browse_compare",
        help="Show a second head's strip beside this one",
        disabled=not others,
    )
    c1, c2 = st.columns(2)
    seq = c1.number_input("Sequence", 0, arts.n_sequences - 1, key="browse_seq", step=1)
    pos = c2.number_input("Token position", 0, arts.seq_len - 1, key="browse_pos", step=1)
    state.url.publish({"seq": ("browse_seq", int(seq)), "pos": ("browse_pos", int(pos))})
    try:
        rec = arts.sequence(int(seq), head_name)
    except ExplorerError as err:
        st.error(f"Sequence {seq} cannot be shown: {literal(err)}")
        st.stop()
    links = {"seq": int(seq), "head": head_name}
    if compare != "(none)":
        try:
            other = arts.sequence(int(seq), compare)
        except ExplorerError as err:
            st.error(f"Head {literal(compare)} cannot be shown: {literal(err)}")
        else:
            sequence_view.compare_strip(other, tokenizer, opts, int(pos), compare, links, pos_key="browse_pos")
            st.markdown(f"**Head {literal(head_name)}** (details below)")
    sequence_view.show(
        rec,
        tokenizer,
        opts,
        int(pos),
        key="browse",
        link_params=links,
        name=f"seq{seq}",
        head_name=head_name,
        readout=arts.readout(head_name)[0],
        pos_key="browse_pos",
        meta=exports.metadata(
            arts, head_name, sequence=int(seq), variant=opts["variant"], readout=arts.readout(head_name)[0]
        ),
    )


main()
