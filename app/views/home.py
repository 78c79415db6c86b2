"""Home: what copy suppression is, the paper's numbers next to the loaded artifacts', links to every page."""

import streamlit as st

from app import state, verdict_view
from app.render.text import literal
from precompute import paper, schema
from precompute.science import ranking
from precompute.science import verdict as verdicts

DIAGRAM = """
<svg viewBox="0 0 820 170" xmlns="http://www.w3.org/2000/svg" role="img" aria-label="Copy suppression diagram"
     style="max-width:820px;width:100%;font-family:sans-serif;font-size:14px">
  <defs><marker id="a" markerWidth="10" markerHeight="8" refX="9" refY="4" orient="auto">
    <path d="M0,0 L10,4 L0,8 z" fill="#555"/></marker></defs>
  <rect x="10" y="20" width="150" height="44" rx="8" fill="#e8f0fb" stroke="#2166ac"/>
  <text x="85" y="47" text-anchor="middle">" Paris" (earlier)</text>
  <rect x="300" y="20" width="170" height="44" rx="8" fill="#f3f3f3" stroke="#888"/>
  <text x="385" y="40" text-anchor="middle">layers {layers} predict</text>
  <text x="385" y="57" text-anchor="middle">" Paris" again</text>
  <rect x="300" y="104" width="170" height="44" rx="8" fill="#fde0dd" stroke="#b2182b"/>
  <text x="385" y="131" text-anchor="middle">head {head}</text>
  <rect x="650" y="104" width="160" height="44" rx="8" fill="#fff" stroke="#b2182b"/>
  <text x="730" y="124" text-anchor="middle">logit of " Paris"</text>
  <text x="730" y="141" text-anchor="middle" fill="#b2182b">pushed down</text>
  <path d="M385,64 L385,102" stroke="#555" stroke-width="2" marker-end="url(#a)"/>
  <text x="392" y="88">query: "predicted"</text>
  <path d="M160,50 C230,60 240,120 298,124" stroke="#2166ac" stroke-width="2" fill="none" marker-end="url(#a)"/>
  <text x="150" y="150" fill="#2166ac">attends back (QK)</text>
  <path d="M470,126 L648,126" stroke="#b2182b" stroke-width="2" marker-end="url(#a)"/>
  <text x="482" y="116" fill="#b2182b">writes −unembed (OV)</text>
</svg>
"""

GPT2_STORY = (
    "Attention head **10.7** of GPT-2 small does *copy suppression*: when earlier layers predict a token that "
    "already appeared in the context, the head attends back to that earlier occurrence and writes the negative "
    "of its unembedding, pushing the prediction down. It reduces over-confident copying and explains a large "
    "part of the head's effect on the loss (McDougall, Conmy, Rushing et al., *Copy Suppression: "
    "Comprehensively Understanding an Attention Head*, arXiv 2310.04625)."
)


def diagram(head: str, layer: int) -> str:
    """The diagram with this head and the layers before it (``head`` is L.H, digits only: the manifest checks)."""
    return DIAGRAM.replace("{layers}", f"0-{layer - 1}" if layer > 0 else "the embedding").replace("{head}", head)


def framing(arts, head_name: str) -> None:
    """The story of the loaded model: GPT-2's 10.7 for GPT-2 small; for any other model, what copy suppression is
    and which head of which model these artifacts show, and why this head."""
    model = arts.record.model
    if model.name in paper.PAPER_MODEL_NAMES:
        st.markdown(GPT2_STORY)
    else:
        st.markdown(
            "*Copy suppression* (McDougall, Conmy, Rushing et al., arXiv 2310.04625): a head attends back to tokens "
            "that earlier layers predict and writes the negative of their unembedding, pushing the prediction "
            "down. The paper found it in head 10.7 of GPT-2 small. These artifacts show head "
            f"**{head_name}** of a different model:"
        )
        what = state.what_these_are(arts)
        if what:
            st.info(literal(what))
    st.markdown(diagram(head_name, schema.parse_head(head_name)[0]), unsafe_allow_html=True)
    st.markdown(
        "- **QK circuit:** the unembedding of a predicted token, as a query, attends most to that same token as a "
        "key.\n- **OV circuit:** attending to a token lowers that token's logit most.\n"
        "- **CSPA** (copy-suppression-preserving ablation) keeps only this mechanism and mean-ablates everything "
        "else; the share of the head's effect it keeps measures how much of the head is copy suppression."
    )


def why_this_head(head_name: str, found: tuple) -> None:
    """Where a survey of the model is here (``found``): the head's rank by the survey's rule, and the rule."""
    survey, name, manifest = found
    if survey is None:
        return
    readout = ranking.survey_readout(manifest)  # the rule that picks the demo's head
    ranked = ranking.copy_suppression_ranking(survey, readout)
    keys = [f"{a}.{b}" for a, b in zip(ranked["layer"], ranked["head"], strict=True)]
    if head_name in keys:
        st.caption(
            literal(
                f"Why this head: the survey {name} ranks it {keys.index(head_name) + 1} of {len(keys)} heads as a "
                f"copy suppressor. {ranking.ranking_rule(readout)}"
            )
        )


def main() -> None:
    arts, error = state.chosen()
    st.title("Copy Suppression Explorer")
    if arts is None:
        st.markdown(GPT2_STORY)
        st.markdown(diagram("10.7", 10), unsafe_allow_html=True)
        state.empty_state(error)
    else:
        head = state.head_picker(arts, key="home_head")
        head_name = head.name
        framing(arts, head_name)
        if arts.record.model.synthetic:
            st.warning(
                "The loaded artifacts come from a synthetic model: their numbers show the tool working, "
                "not GPT-2's behaviour."
            )
        st.subheader(f"Is head {head_name} copy suppression?")
        found = verdict_view.survey_for(arts)
        why_this_head(head_name, found)
        verdict_view.readout_note(arts, head_name)
        verdict_view.show(arts, head_name, found)
        st.subheader(f"The paper's numbers and these artifacts' (head {head_name})")
        got = arts.paper_figures(head_name)
        paper_model = arts.model_name in paper.PAPER_MODEL_NAMES
        # rows that do not apply to another model (e.g. the path through GPT-2's 11.10) are left out there
        table = [
            {"quantity": f.label, "paper (GPT-2 small, 10.7)": f.text, "loaded artifacts": f.format(got.get(f.key))}
            for f in paper.FIGURES
            if paper_model or got.get(f.key) is not None
        ]
        st.dataframe(table, hide_index=True, height=35 * (len(table) + 1) + 3)  # every row in view, no inner scroll
        used = arts.readout(head_name)[0]
        if used != "logit_lens":
            by = verdicts.cspa_by_readout(arts.summary(head_name), used)
            logit = f" (with the paper's logit lens: {by['logit_lens']:.2%})" if "logit_lens" in by else ""
            st.caption(
                literal(
                    f"The CSPA rows use this set's read-out, the {schema.READOUT_LABELS[used]}{logit}; the paper's "
                    "figures use the logit lens."
                )
            )
        if not paper_model:
            st.caption(
                "The paper's figures are GPT-2 small's 10.7 on OpenWebText with the logit lens; this set is another "
                "model, head and text, so the two columns are a comparison, not a reproduction."
            )
    st.subheader("Pages")
    names = [name for name in state.pages.PAGES if name != "home"]
    for row in range(0, len(names), 4):
        for col, name in zip(st.columns(4), names[row : row + 4]):
            state.pages.link(name, container=col)
    st.caption(
        "Prompt pairs: logit difference, attribution, activation patching and self-repair on IOI and other "
        "tasks, the analysis that found the negative heads. Head survey: which heads copy-suppress or do "
        "(anti-)induction, in every model surveyed."
    )


main()
