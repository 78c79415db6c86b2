"""What the analysis needs to know about a model's architecture, decided once per model and recorded.

TransformerLens's ``TransformerBridge`` wraps many Hugging Face causal LMs behind the same hook names; the
analysis relies on those names (``blocks.L.attn.hook_z`` / ``hook_v`` / ``hook_pattern``, ``blocks.L.hook_attn_out``,
``blocks.L.hook_resid_pre``, ``ln_final.hook_scale`` / ``hook_normalized``) and on the processed weights
``W_Q W_K W_V W_O W_U``. What differs between architectures, and what the project decides for each:

* **Normalisation.** LayerNorm models get the paper's processing (fold_ln, centred writing weights, centred
  unembedding): every LayerNorm is then centring + division by the RMS. RMSNorm models get fold_ln only: centring
  would change the model. ``of(m).centres`` tells the analysis which of the two it is; ``of(m).centre`` and
  ``of(m).normalise`` apply it.
* **Grouped-query attention.** ``W_K``/``W_V`` and ``hook_v`` have ``n_key_value_heads`` heads; query head h reads
  key/value head ``h // (n_heads // n_key_value_heads)`` (``of(m).kv_head``).
* **Per-head results.** Taken as ``hook_z @ W_O`` everywhere (OPT's bridge cannot produce ``hook_result``).
* **A norm after attention** (Gemma 2/3: ``post_attention_layernorm``, ``blocks.L.ln1_post``). What reaches the
  residual stream is norm(Σ_h z_h W_O_h), not Σ_h z_h W_O_h. The project takes a head's contribution as the paper
  takes LayerNorm: the norm's scale frozen at its clean value per position (σ), its gain g folded into an effective
  ``W_O`` (``weights.effective_W_O``), so the head writes z_h (W_O_h ⊙ g) / σ, linear in the head and summing to
  the attention output exactly. ``of(m).post_attn_norm`` says whether a model has one; ``heads.head_output``
  applies it; the analysis replaces a head's output after the norm (``hook_attn_out``), where it reaches the
  stream. Recorded as ``post_attention_norm`` in the provenance.
* **Re-running blocks** for the "both"/"indirect" effects and patching (``of(m).rerun`` names the runner,
  ``blocks.runner(m)`` is it): GPT-2-style blocks are re-run by hand from the cached resid_mid (``blocks.GPT2Blocks``,
  GPT-2's block maths written once, also behind the effective embedding of ``science.circuits``), Llama-style
  decoder layers by calling the model's own layers (``blocks.DecoderLayers``); every other architecture gets one
  full forward pass with the head's output replaced at ``hook_attn_out`` (right for sequential and parallel
  residual blocks alike).
* **Rotary convention** (``of(m).rotate_half``): the model types whose rotation ``rotary.rotate`` applies
  (``ROTATE_HALF``); recorded as ``rotary_convention``.
* **The paper's model** (``of(m).paper_model``): GPT-2 small's architecture and shape, whatever its weights; the
  analysis keeps the paper's choices there (the logit lens as "predicted", the name movers for self-repair).

``of(m)`` computes the record once per model (``load_model`` does it at load time and writes it into the
provenance); nothing else reads a model's config to take these decisions.
"""

from __future__ import annotations

import contextlib
import weakref
from dataclasses import dataclass

from torch import Tensor

from ..errors import ModelUnavailableError
from . import hooks, norm

# Hugging Face architecture class -> family shown in the app (anything else shows its class name)
FAMILIES = {
    "GPT2LMHeadModel": "GPT-2",
    "GPTNeoXForCausalLM": "GPT-NeoX / Pythia",
    "LlamaForCausalLM": "Llama",
    "MistralForCausalLM": "Mistral",
    "Qwen2ForCausalLM": "Qwen2",
    "OPTForCausalLM": "OPT",
    "GPTNeoForCausalLM": "GPT-Neo",
    "GPTJForCausalLM": "GPT-J",
    "GemmaForCausalLM": "Gemma",
    "PhiForCausalLM": "Phi",
}

# the hooks (layer 0 stands for every layer) and weights the analysis reads
REQUIRED_HOOKS = (
    hooks.EMBED,
    *hooks.every_layer(1, hooks.RESID_PRE, hooks.Z, hooks.V, hooks.PATTERN, hooks.ATTN_OUT, hooks.RESID_POST),
    hooks.FINAL_IN,
    hooks.FINAL_SCALE,
    hooks.FINAL_NORMALIZED,
)
REQUIRED_WEIGHTS = ("W_E", "W_Q", "W_K", "W_V", "W_O", "W_U", "b_U")


def is_rms(cfg) -> bool:
    """True for RMSNorm models (no centring), False for LayerNorm ones."""
    kind = str(getattr(cfg, "normalization_type", "LN") or "LN")
    return kind.upper().startswith("RMS")


def vocabulary_apart(cfg) -> bool:
    """Whether the embedding and the unembedding are processed apart from TransformerLens's processing, which
    copies the whole state dict at each step (``bridge.vocabulary_apart``): RMSNorm models, where processing
    leaves the embedding alone and scales the unembedding's columns by the final norm's gain. The processed
    weights are the same bit for bit; only the load's peak memory differs."""
    return is_rms(cfg)


def weight_processing(cfg) -> dict:
    """The TransformerLens weight processing for a model of config ``cfg`` (recorded in every artifact)."""
    centring = not is_rms(cfg)
    return {
        "fold_ln": True,
        "center_writing_weights": centring,
        "center_unembed": centring,
        "fold_value_biases": True,
        "refactor_factored_attn_matrices": False,
    }


# Hugging Face model types whose rotary embedding rotates halves (``rotate_half``), the one convention
# ``rotary.rotate`` applies; a rotary model of another type gets no distance-dependent QK circuit
ROTATE_HALF = {
    "llama",
    "mistral",
    "mixtral",
    "qwen2",
    "qwen3",
    "gpt_neox",
    "olmo",
    "olmo2",
    "gemma",
    "gemma2",
    "gemma3",
    "gemma3_text",
    "phi3",
}

# Hugging Face model types whose decoder layer is input norm -> attention -> residual -> post-attention norm ->
# MLP -> residual, called as the model's forward calls it (``blocks``)
HF_LAYER_MODELS = ("llama", "mistral", "qwen2")
RERUN_GPT2, RERUN_LAYERS = "gpt2-blocks", "decoder-layers"


def _gpt2_blocks(cfg) -> bool:
    """GPT-2-style blocks, which ``blocks`` re-runs with hand-written maths."""
    return (
        getattr(cfg, "architecture", None) == "GPT2LMHeadModel"
        and getattr(cfg, "act_fn", None) == "gelu_new"
        and getattr(cfg, "positional_embedding_type", "standard") == "standard"
        and not getattr(cfg, "parallel_attn_mlp", False)
    )


def _gpt2_small_shape(cfg) -> bool:
    """GPT-2 small's architecture and shape (12 layers of 12 heads, d_model 768, GPT-2's 50,257 tokens)."""
    shape = (getattr(cfg, "n_layers", 0), getattr(cfg, "n_heads", 0), getattr(cfg, "d_model", 0), cfg.d_vocab)
    return _gpt2_blocks(cfg) and shape == (12, 12, 768, 50257)


def hf_decoder(m):
    """The Hugging Face inner model whose decoder layers can be called one by one (Llama-style), or None."""
    inner = getattr(getattr(m, "original_model", None), "model", None)
    config = getattr(inner, "config", None)
    if getattr(config, "model_type", None) not in HF_LAYER_MODELS or getattr(m.cfg, "parallel_attn_mlp", False):
        return None
    layers = getattr(inner, "layers", None)
    if layers is None or not hasattr(inner, "rotary_emb") or len(layers) != m.cfg.n_layers:
        return None
    if not all(hasattr(layer, "mlp") and hasattr(layer, "post_attention_layernorm") for layer in layers):
        return None
    return inner


@dataclass(frozen=True)
class Architecture:
    """The decisions the analysis makes per architecture, computed once per model (``of``) and read everywhere:
    whether its norms centre, which key/value head each query head reads, and which fast paths apply."""

    name: str  # the Hugging Face architecture class
    family: str
    centres: bool  # LayerNorm (centring + RMS) rather than RMSNorm (RMS only)
    eps: float
    n_heads: int
    n_kv_heads: int
    rerun: str | None  # how the last blocks are re-run: RERUN_GPT2, RERUN_LAYERS, or None (full forward passes)
    rotary: bool
    post_attn_norm: bool = False  # a norm between the attention output and the residual stream (Gemma 2/3)
    qk_norm: bool = False  # queries and keys pass through a per-head norm before the rotation (Gemma 3, Qwen3)
    model_type: str | None = None  # the Hugging Face config's model_type
    rotate_half: bool = False  # a rotary model whose rotation ``rotary.rotate`` applies (``ROTATE_HALF``)
    paper_model: bool = False  # GPT-2 small's architecture and shape (the paper's model, whatever its weights)

    def kv_head(self, h: int) -> int:
        """The key/value head that query head ``h`` reads (itself without grouped-query attention)."""
        return h // (self.n_heads // self.n_kv_heads)

    def centre(self, x: Tensor) -> Tensor:
        """``x`` centred as this model's norms centre it: mean removed for LayerNorm, unchanged for RMSNorm."""
        return norm.centre(x) if self.centres else x

    def normalise(self, x: Tensor) -> Tensor:
        """This model's (folded) norm of ``x``: centring where it centres, then division by the RMS."""
        x = self.centre(x)
        return x / norm.rms_scale(x, self.eps)

    @property
    def resumable(self) -> bool:
        """Whether ``blocks.run_from_mid`` / ``run_from_pre`` can re-run this model's last blocks."""
        return self.rerun is not None


_RECORDS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def of(m) -> Architecture:
    """The architecture record of model ``m`` (computed on first use, at load time for loaded models)."""
    try:
        return _RECORDS[m]
    except (KeyError, TypeError):
        pass
    cfg = m.cfg
    name = str(getattr(cfg, "architecture", None) or type(m).__name__)
    rerun = RERUN_GPT2 if _gpt2_blocks(cfg) else RERUN_LAYERS if hf_decoder(m) is not None else None
    rotary = str(getattr(cfg, "positional_embedding_type", "standard")) == "rotary"
    model_type = getattr(getattr(getattr(m, "original_model", None), "config", None), "model_type", None)
    record = Architecture(
        name=name,
        family=FAMILIES.get(name, name),
        centres=not is_rms(cfg),
        eps=norm.eps_of(m),
        n_heads=int(cfg.n_heads),
        n_kv_heads=int(getattr(cfg, "n_key_value_heads", None) or cfg.n_heads),
        rerun=rerun,
        rotary=rotary,
        post_attn_norm=hooks.post_attn_scale(0) in getattr(m, "hook_dict", {}),
        qk_norm=hooks.block(0, "attn.q_norm.hook_out") in getattr(m, "hook_dict", {}),
        model_type=model_type,
        rotate_half=rotary and model_type in ROTATE_HALF,
        paper_model=_gpt2_small_shape(cfg),
    )
    with contextlib.suppress(TypeError):  # an object that cannot be weakly referenced: computed again next time
        _RECORDS[m] = record
    return record


def describe(m) -> dict:
    """The architecture facts recorded in the provenance."""
    cfg, arch = m.cfg, of(m)
    return {
        "architecture": arch.name,
        "family": arch.family,
        "normalization": "LayerNorm" if arch.centres else "RMSNorm",
        "positional_embedding": str(getattr(cfg, "positional_embedding_type", "standard")),
        "parallel_attn_mlp": bool(getattr(cfg, "parallel_attn_mlp", False)),
        "n_key_value_heads": arch.n_kv_heads,
        "gated_mlp": bool(getattr(cfg, "gated_mlp", False)),
        "act_fn": str(getattr(cfg, "act_fn", "")),
        "d_mlp": int(getattr(cfg, "d_mlp", 0) or 0),
        "n_params": count_parameters(m),
        "tied_embeddings": tied_embeddings(m),
        "rerun": arch.rerun or "full forward passes",
        "post_attention_norm": "gain folded into W_O, scale frozen per position" if arch.post_attn_norm else "none",
        "qk_norm": arch.qk_norm,
        "rotary_convention": ("rotate_half" if arch.rotate_half else "unsupported") if arch.rotary else "none",
        "paper_model": arch.paper_model,
    }


def tied_embeddings(m) -> bool:
    """Whether the model's unembedding is its embedding (the Hugging Face config's ``tie_word_embeddings``)."""
    config = getattr(getattr(m, "original_model", None), "config", None)
    return bool(getattr(config, "tie_word_embeddings", False))


def count_parameters(m) -> int:
    """Parameters of the model as its config describes it (embeddings, attention, MLP, unembedding once where it
    is tied to the embedding; norms and biases left out), so sizes come from configs rather than a hand-kept
    table."""
    cfg = m.cfg
    d, n_layers, d_vocab = cfg.d_model, cfg.n_layers, cfg.d_vocab
    d_head, n_heads, kv = cfg.d_head, cfg.n_heads, of(m).n_kv_heads
    attn = d * d_head * (2 * n_heads + 2 * kv)
    d_mlp = int(getattr(cfg, "d_mlp", 0) or 0)
    mlp = d * d_mlp * (3 if getattr(cfg, "gated_mlp", False) else 2)
    return int(d_vocab * d * (1 if tied_embeddings(m) else 2) + n_layers * (attn + mlp))


def check_supported(m) -> None:
    """ModelUnavailableError naming every hook or weight the analysis needs that this model lacks."""
    present = getattr(m, "hook_dict", {})
    missing = [h for h in REQUIRED_HOOKS if h not in present]
    for w in REQUIRED_WEIGHTS:
        try:
            getattr(m, w)
        except Exception:  # noqa: BLE001 - TransformerBridge raises several kinds for a missing weight
            missing.append(w)
    if missing:
        arch = getattr(m.cfg, "architecture", None) or type(m).__name__
        raise ModelUnavailableError(
            f"architecture {arch} cannot be analysed: TransformerLens's bridge gives it no "
            f"{', '.join(missing)}. Supported: GPT-2, GPT-NeoX/Pythia, Llama-family, OPT "
            "and other architectures whose bridge has these hooks and weights."
        )
