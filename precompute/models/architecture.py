"""What the analysis needs to know about a model's architecture, decided once per model and recorded.

TransformerLens's ``TransformerBridge`` wraps many Hugging Face causal LMs behind the same hook names; the
analysis relies on those names (``blocks.L.attn.hook_z`` / ``hook_v`` / ``hook_pattern``, ``blocks.L.hook_attn_out``,
``blocks.L.hook_resid_pre``, ``ln_final.hook_scale`` / ``hook_normalized``) and on the processed weights
``W_Q W_K W_V W_O W_U``. What differs between architectures, and what the project decides for each:

* **Normalisation.** LayerNorm models get the paper's processing (fold_ln, centred writing weights, centred
  unembedding): every LayerNorm is then centring + division by the RMS. RMSNorm models get fold_ln only: centring
  would change the model. ``centres(m)`` tells the analysis which of the two it is.
* **Grouped-query attention.** ``W_K``/``W_V`` and ``hook_v`` have ``n_key_value_heads`` heads; query head h reads
  key/value head ``h // (n_heads // n_key_value_heads)`` (``kv_head``).
* **Per-head results.** Taken as ``hook_z @ W_O`` everywhere (OPT's bridge cannot produce ``hook_result``).
* **Re-running blocks** for the "both"/"indirect" effects: GPT-2-style blocks are re-run by hand from the cached
  resid_mid (``blocks``); every other architecture gets one full forward pass with the head's output replaced at
  ``hook_attn_out`` (right for sequential and parallel residual blocks alike).
"""

from __future__ import annotations

from ..errors import ModelUnavailableError

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
REQUIRED_HOOKS = ("hook_embed", "blocks.0.hook_resid_pre", "blocks.0.attn.hook_z", "blocks.0.attn.hook_v",
                  "blocks.0.attn.hook_pattern", "blocks.0.hook_attn_out", "blocks.0.hook_resid_post",
                  "ln_final.hook_in", "ln_final.hook_scale", "ln_final.hook_normalized")
REQUIRED_WEIGHTS = ("W_E", "W_Q", "W_K", "W_V", "W_O", "W_U", "b_U")


def is_rms(cfg) -> bool:
    """True for RMSNorm models (no centring), False for LayerNorm ones."""
    kind = str(getattr(cfg, "normalization_type", "LN") or "LN")
    return kind.upper().startswith("RMS")


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


def centres(m) -> bool:
    """Whether the model's norms centre (LayerNorm) or not (RMSNorm)."""
    return not is_rms(m.cfg)


def centring(m):
    """``norm.centre`` for LayerNorm models; the identity for RMSNorm ones (their norms do not centre)."""
    from .norm import centre

    return centre if centres(m) else (lambda x: x)


def n_kv_heads(m) -> int:
    cfg = m.cfg
    return int(getattr(cfg, "n_key_value_heads", None) or cfg.n_heads)


def kv_head(m, h: int) -> int:
    """The key/value head that query head ``h`` reads (itself without grouped-query attention)."""
    return h // (m.cfg.n_heads // n_kv_heads(m))


def describe(m) -> dict:
    """The architecture facts recorded in the provenance."""
    cfg = m.cfg
    arch = str(getattr(cfg, "architecture", None) or type(m).__name__)
    return {
        "architecture": arch,
        "family": FAMILIES.get(arch, arch),
        "normalization": "RMSNorm" if is_rms(cfg) else "LayerNorm",
        "positional_embedding": str(getattr(cfg, "positional_embedding_type", "standard")),
        "parallel_attn_mlp": bool(getattr(cfg, "parallel_attn_mlp", False)),
        "n_key_value_heads": n_kv_heads(m),
        "gated_mlp": bool(getattr(cfg, "gated_mlp", False)),
        "act_fn": str(getattr(cfg, "act_fn", "")),
        "d_mlp": int(getattr(cfg, "d_mlp", 0) or 0),
        "n_params": count_parameters(m),
    }


def count_parameters(m) -> int:
    """Parameters of the model as its config describes it (embeddings, attention, MLP, unembedding; norms and
    biases left out), so sizes come from configs rather than a hand-kept table."""
    cfg = m.cfg
    d, n_layers, d_vocab = cfg.d_model, cfg.n_layers, cfg.d_vocab
    d_head, n_heads, kv = cfg.d_head, cfg.n_heads, n_kv_heads(m)
    attn = d * d_head * (2 * n_heads + 2 * kv)
    d_mlp = int(getattr(cfg, "d_mlp", 0) or 0)
    mlp = d * d_mlp * (3 if getattr(cfg, "gated_mlp", False) else 2)
    return int(d_vocab * d * 2 + n_layers * (attn + mlp))


def check_supported(m) -> None:
    """ModelUnavailableError naming every hook or weight the analysis needs that this model lacks."""
    hooks = getattr(m, "hook_dict", {})
    missing = [h for h in REQUIRED_HOOKS if h not in hooks]
    for w in REQUIRED_WEIGHTS:
        try:
            getattr(m, w)
        except Exception:  # noqa: BLE001 - TransformerBridge raises several kinds for a missing weight
            missing.append(w)
    if missing:
        arch = getattr(m.cfg, "architecture", None) or type(m).__name__
        raise ModelUnavailableError(f"architecture {arch} cannot be analysed: TransformerLens's bridge gives it no "
                                    f"{', '.join(missing)}. Supported: GPT-2, GPT-NeoX/Pythia, Llama-family, OPT "
                                    "and other architectures whose bridge has these hooks and weights.")
