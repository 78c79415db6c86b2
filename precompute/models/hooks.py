"""TransformerLens hook names: the analysis's one interface to a model's activations, spelled here only.

TransformerBridge gives every supported architecture the same names (``architecture.REQUIRED_HOOKS`` checks a
loaded model has them). Everything that caches or patches an activation asks this module for its name; the names
equal TransformerLens's own ``utils.get_act_name`` (tested).
"""

from __future__ import annotations

EMBED = "hook_embed"
POS_EMBED = "hook_pos_embed"  # learned positions (GPT-2); rotary models have none
FINAL_IN = "ln_final.hook_in"  # the residual stream before the final norm
FINAL_SCALE = "ln_final.hook_scale"
FINAL_NORMALIZED = "ln_final.hook_normalized"

# a block's hooks, by their name inside the block
RESID_PRE, RESID_MID, RESID_POST = "hook_resid_pre", "hook_resid_mid", "hook_resid_post"
ATTN_OUT, MLP_OUT = "hook_attn_out", "hook_mlp_out"
Z, V, PATTERN = "attn.hook_z", "attn.hook_v", "attn.hook_pattern"
# the norm after attention (Gemma 2/3: ``post_attention_layernorm``), whose output is what reaches the stream
POST_ATTN_SCALE = "ln1_post.hook_scale"


def block(layer: int, name: str) -> str:
    """The full name of hook ``name`` (one of the block names above) of block ``layer``."""
    return f"blocks.{int(layer)}.{name}"


def resid_pre(layer: int) -> str:
    return block(layer, RESID_PRE)


def resid_mid(layer: int) -> str:
    return block(layer, RESID_MID)


def resid_post(layer: int) -> str:
    return block(layer, RESID_POST)


def attn_out(layer: int) -> str:
    return block(layer, ATTN_OUT)


def mlp_out(layer: int) -> str:
    return block(layer, MLP_OUT)


def z(layer: int) -> str:
    return block(layer, Z)


def v(layer: int) -> str:
    return block(layer, V)


def pattern(layer: int) -> str:
    return block(layer, PATTERN)


def post_attn_scale(layer: int) -> str:
    """The scale (RMS) of the norm after attention at each position, in models that have one."""
    return block(layer, POST_ATTN_SCALE)


def every_layer(n_layers: int, *names: str) -> list[str]:
    """The full names of the block hooks ``names`` in every one of ``n_layers`` layers, layer by layer."""
    return [block(layer, name) for layer in range(n_layers) for name in names]
