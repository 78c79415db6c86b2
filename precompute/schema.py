"""The artifact schema: every stored field, declared once (name, shape kind, dtype, group, meaning).

Nothing else in the project spells a field name: the analysis names its outputs with these helpers, ``compact``
keeps and casts exactly the fields :func:`head_fields` lists, the reader, the app and the index read them through
the same helpers, and the field table of ``artifacts/README.md`` is generated from :data:`SPECS`
(``python -m precompute schema``; a test fails when the two drift). Pure Python: no torch, no numpy.

Shape kinds: N sequences, S tokens (BOS included), P = S - 1 predictions (entry p is about predicting token p+1
at position p), k = top-k, m = CSPA kept pairs shown, a = attention sources kept per query.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import NamedTuple

from .errors import InvalidInputError

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"

# --- ablation variants: effect x final-LayerNorm mode
EFFECTS = ("direct", "both", "indirect")
LN_MODES = ("frozen", "unfrozen")
VARIANTS = tuple(f"{e}_{ln}" for e in EFFECTS for ln in LN_MODES)
MAX_ANSWERS = 16  # answer tokens one live query may name (science.answers)
PAPER_VARIANT = "direct_frozen"

# --- read-outs: what "predicted" means for the `lens` group and CSPA's QK filter (``science.readout``)
READOUTS = ("logit_lens", "tuned_lens", "final_minus_head")
READOUT_LABELS = {
    "logit_lens": "logit lens (the paper's)",
    "tuned_lens": "tuned lens",
    "final_minus_head": "final prediction minus the head (a diagnostic: it reads later layers)",
}

# --- groups: the things a per-token quantity is measured for
CLEAN, LENS, CSPA = "clean", "lens", "cspa"
DLA_GROUPS = ("dla_neg", "dla_pos")  # the head's most negative / positive direct logit attribution
CSPA_DLA_GROUPS = ("cspa_dla_neg", "cspa_dla_pos")  # the same for CSPA's output
# groups whose top-k prediction lists are stored (the other variants keep per-token numbers only)
TOPK_GROUPS = (CLEAN, PAPER_VARIANT, CSPA, LENS)
STORED_TOPK_VARIANTS = (PAPER_VARIANT,)

# --- shape kinds and storage dtypes
PRED, SEQ, TOPK, KEPT, ATTN = "[N,P]", "[N,S]", "[N,S,k]", "[N,S,m]", "[N,S,a]"
F16, I32 = "float16", "int32"


@dataclass(frozen=True)
class Spec:
    """One stored quantity. ``template`` holds ``{g}`` where the name depends on a group; ``groups`` names the
    family of groups it is stored for (see :func:`groups`), or None for a single field."""

    template: str
    shape: str
    dtype: str
    groups: str | None
    doc: str
    cspa_only: bool = False


SPECS: dict[str, Spec] = {
    "loss": Spec("loss", PRED, F16, None, "clean cross-entropy of the next token"),
    "delta_loss": Spec(
        "delta_loss_{g}",
        PRED,
        F16,
        "ablations",
        "loss change under the intervention g (mean ablation variants effect_lnmode, or cspa)",
    ),
    "kl": Spec("kl_{g}", PRED, F16, "ablations", "KL(clean ‖ intervened) under g"),
    "correct_logprob": Spec(
        "{g}_correct_logprob",
        PRED,
        F16,
        "scored",
        "log-prob of the true next token (clean, `lens` = the prediction before the head under the head's read-out, "
        "or after intervention g)",
    ),
    "correct_rank": Spec("{g}_correct_rank", PRED, I32, "scored", "rank of the true next token (0 = top)"),
    "topk_ids": Spec("{g}_topk_ids", TOPK, I32, "topk", "top-k predicted token ids"),
    "topk_logprobs": Spec("{g}_topk_logprobs", TOPK, F16, "topk", "their log-probs"),
    "dla_ids": Spec(
        "{g}_ids",
        TOPK,
        I32,
        "dla",
        "tokens with the most negative / positive direct logit attribution (frozen final LN, "
        "relative to the mean); cspa_dla_* for CSPA's output",
    ),
    "dla_values": Spec("{g}_values", TOPK, F16, "dla", "their logit changes"),
    "cspa_kept_pos": Spec(
        "cspa_kept_pos",
        KEPT,
        I32,
        None,
        "source positions of the (source, neighbour) pairs CSPA kept, best first; -1 = none",
        cspa_only=True,
    ),
    "cspa_kept_token": Spec("cspa_kept_token", KEPT, I32, None, "the kept neighbour tokens; -1 = none", cspa_only=True),
    "cspa_kept_score": Spec(
        "cspa_kept_score",
        KEPT,
        F16,
        None,
        "their scores under the head's read-out (logit lens: the paper's)",
        cspa_only=True,
    ),
    "cspa_n_kept": Spec("cspa_n_kept", SEQ, I32, None, "number of kept (source, neighbour) entries", cspa_only=True),
    "attn_topk_pos": Spec("attn_topk_pos", ATTN, I32, None, "the a non-BOS sources with most attention"),
    "attn_topk_weight": Spec("attn_topk_weight", ATTN, F16, None, "their attention weights"),
    "attn_bos": Spec("attn_bos", SEQ, F16, None, "attention to position 0 (BOS)"),
    "out_norm_rel": Spec(
        "out_norm_rel",
        SEQ,
        F16,
        None,
        "‖v_k W_O‖ / max_s ‖v_s W_O‖ per source; info-weighted attention = A[q,k]·out_norm_rel[k]",
    ),
}

# the fields without a group, by name (quantity id = field name)
LOSS = "loss"
CSPA_KEPT_POS, CSPA_KEPT_TOKEN, CSPA_KEPT_SCORE, CSPA_N_KEPT = (
    "cspa_kept_pos",
    "cspa_kept_token",
    "cspa_kept_score",
    "cspa_n_kept",
)
ATTN_TOPK_POS, ATTN_TOPK_WEIGHT, ATTN_BOS = "attn_topk_pos", "attn_topk_weight", "attn_bos"
OUT_NORM_REL = "out_norm_rel"
assert {
    LOSS,
    CSPA_KEPT_POS,
    CSPA_KEPT_TOKEN,
    CSPA_KEPT_SCORE,
    CSPA_N_KEPT,
    ATTN_TOPK_POS,
    ATTN_TOPK_WEIGHT,
    ATTN_BOS,
    OUT_NORM_REL,
} == {q for q, spec in SPECS.items() if spec.groups is None}

# shard-level and analysis-only tensors (not per head / not stored)
TOKENS = "tokens"
ATTENTION, INFO_ATTENTION = "attention", "info_attention"  # dense [B,S,S] in an AnalysisResult only

# other files of a run folder
MEAN_RESULT, MEAN_COUNT = "mean_result", "count"
CIRCUIT_FACTORS = ("ov_src", "ov_dst", "qk_dst", "qk_src")
CIRCUIT_RANKS = {"ov": "ov_rank", "qk": "qk_rank"}
SEMANTIC_KINDS = ("equivalents", "superstrings", "substrings")
# index of the tokens where the head matters most: name -> (quantity, group, order)
INDEX_METRICS = {
    "delta_loss": ("delta_loss", PAPER_VARIANT, "largest"),  # head helps most (ablation raises loss)
    "neg_delta_loss": ("delta_loss", PAPER_VARIANT, "smallest"),  # head hurts most
    "kl": ("kl", PAPER_VARIANT, "largest"),
    "cspa_failure": ("delta_loss", CSPA, "abs"),  # loss change that CSPA does not preserve
}
INDEX_PARTS = ("seq", "pos", "value")


TOKEN_ID_QUANTITIES = ("topk_ids", "dla_ids", "cspa_kept_token")  # stored fields whose values are token ids


def holds_token_ids(field: str) -> bool:
    """Whether the stored field ``field`` holds token ids (-1 = none), whose strings an export adds beside them."""
    for quantity in TOKEN_ID_QUANTITIES:
        prefix, _, suffix = SPECS[quantity].template.partition("{g}")
        if field.startswith(prefix) and field.endswith(suffix) and len(field) >= len(prefix) + len(suffix):
            return True
    return False


def key(quantity: str, group: str | None = None) -> str:
    """The stored name of ``quantity`` (a key of SPECS) for ``group``."""
    spec = SPECS[quantity]
    if (spec.groups is None) != (group is None):
        raise KeyError(f"{quantity} {'takes no' if spec.groups is None else 'needs a'} group")
    return spec.template.format(g=group) if group is not None else spec.template


def delta_loss(g: str) -> str:
    return key("delta_loss", g)


def kl(g: str) -> str:
    return key("kl", g)


def correct_logprob(g: str) -> str:
    return key("correct_logprob", g)


def correct_rank(g: str) -> str:
    return key("correct_rank", g)


def topk_ids(g: str) -> str:
    return key("topk_ids", g)


def topk_logprobs(g: str) -> str:
    return key("topk_logprobs", g)


def dla_ids(g: str) -> str:
    return key("dla_ids", g)


def dla_values(g: str) -> str:
    return key("dla_values", g)


def index_key(metric: str, part: str) -> str:
    return f"{metric}_{part}"


def groups(family: str, variants: tuple[str, ...] = VARIANTS, cspa: bool = True) -> tuple[str, ...]:
    """The groups of a family for a run with these ablation variants (and CSPA or not)."""
    with_cspa = (CSPA,) if cspa else ()
    if family == "ablations":
        return tuple(variants) + with_cspa
    if family == "scored":
        return (CLEAN, LENS) + tuple(variants) + with_cspa
    if family == "topk":
        return tuple(g for g in TOPK_GROUPS if g in (CLEAN, LENS) or g in variants or (cspa and g == CSPA))
    if family == "dla":
        return DLA_GROUPS + (CSPA_DLA_GROUPS if cspa else ())
    raise KeyError(family)


@dataclass(frozen=True)
class Field:
    name: str
    quantity: str
    group: str | None
    shape: str
    dtype: str


def head_fields(variants: tuple[str, ...] = VARIANTS, cspa: bool = True) -> list[Field]:
    """Every stored per-head field of a run with these variants, in a fixed order."""
    out = []
    for quantity, spec in SPECS.items():
        if spec.cspa_only and not cspa:
            continue
        for g in groups(spec.groups, variants, cspa) if spec.groups else (None,):
            out.append(Field(key(quantity, g), quantity, g, spec.shape, spec.dtype))
    return out


# --- head names: "L.H" in manifests, file names and tensor prefixes
class Head(NamedTuple):
    """An attention head: (layer, head), still a tuple for every caller; ``name`` is its "L.H" spelling."""

    layer: int
    head: int

    @property
    def name(self) -> str:
        return f"{self.layer}.{self.head}"


def head_key(head: tuple[int, int]) -> str:
    return f"{head[0]}.{head[1]}"


def parse_head(text: str) -> Head:
    m = re.fullmatch(r"\s*(\d{1,4})\.(\d{1,4})\s*", text) if isinstance(text, str) else None
    if not m:
        raise InvalidInputError(f"head {text!r} is not of the form LAYER.HEAD, e.g. 10.7")
    return Head(int(m.group(1)), int(m.group(2)))


def every_head(n_layers: int, n_heads: int) -> list[str]:
    """Every head of a model of that shape, "L.H", layer by layer."""
    return [Head(layer, h).name for layer in range(n_layers) for h in range(n_heads)]


def parse_heads(text: str) -> tuple[tuple[int, int], ...]:
    """'10.7,11.10' -> ((10, 7), (11, 10)); empty entries, nothing at all and duplicates are errors."""
    parts = [p.strip() for p in str(text).split(",")]
    if not any(parts):
        raise InvalidInputError(f"heads {text!r} names no head; give e.g. 10.7,11.10")
    if any(not p for p in parts):
        raise InvalidInputError(f"heads {text!r} has an empty entry; give e.g. 10.7,11.10")
    heads = tuple(parse_head(p) for p in parts)
    if len(set(heads)) != len(heads):
        raise InvalidInputError(f"heads {text!r} names a head twice")
    return heads


def tensor_name(head: tuple[int, int], name: str) -> str:
    """A per-head field's tensor name inside a shard: ``L.H/<field>``."""
    return f"{head_key(head)}/{name}"


def shard_path(i: int) -> str:
    return f"shards/shard_{i:05d}.safetensors"


def head_file(kind: str, head: tuple[int, int]) -> str:
    """``mean/L.H.safetensors``, ``circuits/…`` or ``index/…``."""
    return f"{kind}/{head_key(head)}.safetensors"


SEMANTIC_FILE = "semantic.safetensors"
TUNED_LENS_FILE = "tuned_lens.safetensors"  # the run's tuned lens: layers [n] int32, weight [n,d,d], bias [n,d] float32
TOKENIZER_DIR = "tokenizer"
TERMS_DIR = "licence"  # the model licence's terms and notice, where it asks for them to travel with derived files

# --- the head survey: a folder of its own, ``survey.json`` (its manifest) + ``survey.safetensors`` (one row per
# head, one 1-D tensor per column)
SURVEY_MANIFEST = "survey.json"
SURVEY_FILE = "survey.safetensors"
SURVEY_KIND = "survey"
SURVEY_INDEX = ("layer", "head")  # int32
SURVEY_METRICS = {  # float32; larger = more of the behaviour; NaN where the model cannot be scored (reason recorded)
    "ov_top10": "fraction of tokens whose own OV-circuit rank is < 10 (the token suppresses itself; circuit_ranks)",
    "qk_top10": "fraction of tokens whose own QK-circuit rank is < 10 (the predicted token attends to itself)",
    "delta_loss_direct": "mean loss change when the head's direct effect is mean-ablated (frozen final LN)",
    "kl_direct": "mean KL(clean ‖ ablated) of that ablation",
    "cspa_kl_explained": "CSPA's share of the head's KL: 1 − mean KL(CSPA) / mean KL(ablation) (paper settings: "
    "the logit lens decides what is predicted)",
    "cspa_kl_explained_tuned": "the same with the survey's tuned lens deciding what is predicted",
    "predicted_enrichment": "attention to predicted tokens: among pairs with attention > 0.1 to a content source, "
    "P(source in the tuned lens's top 10 at the destination) ÷ the same for a uniform content source of the prefix "
    "(chance: 1)",
    "ov_text_suppression": "−(mean z-score of the attended source token in the DLA of the vector the head moves from "
    "it, over pairs with attention > 0.1, the start token left out; a random token: 0)",
    "anti_induction": "−(direct effect on the correct token via attention to the induction source), repeated "
    "random tokens",
    "ioi_copy_suppression": "−(direct effect on the IO name's logit via END→IO attention), IOI prompts",
    "induction": "mean attention from a token to the one after its previous occurrence, repeated random tokens",
}
SURVEY_COLUMNS = SURVEY_INDEX + tuple(SURVEY_METRICS)
# columns added after surveys were first written: an older survey reads with NaN there
SURVEY_LATER_COLUMNS = ("cspa_kl_explained_tuned", "predicted_enrichment", "ov_text_suppression")


def readme_table() -> str:
    """The field table of ``artifacts/README.md``, generated from SPECS."""
    family_text = {
        "ablations": "g ∈ the run's ablation variants and `cspa`",
        "scored": "g ∈ `clean`, `lens`, the variants, `cspa`",
        "topk": "g ∈ " + ", ".join(f"`{g}`" for g in TOPK_GROUPS),
        "dla": "g ∈ " + ", ".join(f"`{g}`" for g in DLA_GROUPS + CSPA_DLA_GROUPS),
    }
    lines = ["| field | shape | dtype | meaning |", "|---|---|---|---|"]
    for spec in SPECS.values():
        where = f" ({family_text[spec.groups]})" if spec.groups else ""
        lines.append(f"| `{spec.template}` | {spec.shape} | {spec.dtype} | {spec.doc}{where} |")
    return "\n".join(lines)


def survey_table() -> str:
    """The column table of the survey in ``artifacts/README.md``, generated from SURVEY_METRICS."""
    lines = ["| column | dtype | meaning |", "|---|---|---|", "| `layer`, `head` | int32 | the head |"]
    lines += [f"| `{name}` | float32 | {doc} |" for name, doc in SURVEY_METRICS.items()]
    return "\n".join(lines)
