"""Booting, processing and caching a TransformerLens ``TransformerBridge``: the steps every model spec of
``loading`` shares. ``process`` checks the architecture, applies its weight processing (``architecture``) and
freezes the model; ``cached_or_full`` serves the processed weights from the weight cache when it holds them."""

from __future__ import annotations

import contextlib
import importlib.metadata

# The weight processing of the paper (TransformerLens HookedTransformer.from_pretrained defaults) for LayerNorm
# models; ``architecture.weight_processing`` decides it per model and every artifact records it.
WEIGHT_PROCESSING = {
    "fold_ln": True,
    "center_writing_weights": True,
    "center_unembed": True,
    "fold_value_biases": True,
    "refactor_factored_attn_matrices": False,
}


def versions() -> dict:
    out = {}
    for pkg in ("transformer-lens", "transformers", "torch"):
        try:
            out[pkg.replace("-", "_") + "_version"] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:  # pragma: no cover - always installed with the project
            out[pkg.replace("-", "_") + "_version"] = "unknown"
    return out


def boot(hf_model, tokenizer, label: str, device: str):
    from transformer_lens import TransformerBridge

    bridge = TransformerBridge.boot_transformers(label, hf_model=hf_model, tokenizer=tokenizer, device=device)
    return process(bridge)


def process(bridge, before_forward=None):
    """Check, process (as ``architecture.weight_processing`` decides) and freeze a booted bridge.
    ``before_forward(bridge)``: called once the weights are in place, before the first forward pass."""
    from .architecture import check_supported, weight_processing

    check_supported(bridge)
    with contextlib.suppress(NotImplementedError):  # per-head hook_result where it can (not OPT)
        bridge.set_use_attn_result(True)  # the analysis itself uses hook_z
    bridge.enable_compatibility_mode(disable_warnings=True, **weight_processing(bridge.cfg))
    bridge.eval()
    for p in bridge.parameters():
        p.requires_grad_(False)
    from .memory import release

    release()  # processing leaves copies in reference cycles: gone before the forward passes add their own
    if before_forward is not None:
        before_forward(bridge)
    _drop_unused_fused_qkv(bridge)
    return bridge


def _drop_unused_fused_qkv(bridge) -> None:
    """Free the fused q/k/v weights that TransformerBridge keeps next to the split (processed) ones it uses.

    About 85 MB for GPT-2 small. Only kept if a forward pass gives bit-identical logits without them; otherwise
    they are restored (a future TransformerLens that does use them loses nothing but the saving).
    """
    import torch

    fused = [(n, p) for n, p in bridge.named_parameters() if ".attn.qkv." in n]
    if not fused:
        return
    probe = torch.arange(min(4, bridge.cfg.d_vocab), device=fused[0][1].device)[None]
    with torch.inference_mode():
        ref = bridge(probe)
    saved = [(p, p.data) for _, p in fused]
    for p, data in saved:
        p.data = torch.empty(0, dtype=data.dtype, device=data.device)
    try:
        with torch.inference_mode():
            ok = torch.equal(bridge(probe), ref)
    except Exception:  # noqa: BLE001 - the fused weights are in use after all
        ok = False
    if not ok:
        for p, data in saved:
            p.data = data


def cached_or_full(identity: dict | None, skeleton, tokenizer, label: str, device: str, full):
    """The processed model from the weight cache when it holds this identity (``weight_cache``), else ``full()``,
    whose processed weights are then saved. Returns (bridge, whether it came from the cache)."""
    from . import weight_cache

    if identity is None or device != "cpu" or not weight_cache.enabled():
        return full(), False
    identity = {**identity, "weight_processing": WEIGHT_PROCESSING, **versions()}
    key = weight_cache.entry_key(identity)
    bridge = weight_cache.load(key, identity, skeleton, tokenizer, label, device, process)
    if bridge is not None:
        return bridge, True
    with weight_cache.capture() as state:
        bridge = full()
    if state:
        weight_cache.save(key, identity, state, bridge)
    return bridge, False
