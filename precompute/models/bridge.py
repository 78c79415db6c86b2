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


def process(bridge, before_forward=None, from_cache: bool = False):
    """Check, process (as ``architecture.weight_processing`` decides) and freeze a booted bridge.
    ``before_forward(bridge)``: called once the weights are in place, before the first forward pass;
    ``from_cache``: the processed weights come from the weight cache (nothing is computed, nothing set apart)."""
    from .architecture import check_supported, weight_processing

    check_supported(bridge)
    with contextlib.suppress(NotImplementedError):  # per-head hook_result where it can (not OPT)
        bridge.set_use_attn_result(True)  # the analysis itself uses hook_z
    with contextlib.nullcontext() if from_cache else vocabulary_apart(bridge):
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


SAMPLED_ROWS = 64  # real rows of each vocabulary-sized matrix that TransformerLens processes as a check


@contextlib.contextmanager
def vocabulary_apart(bridge):
    """While TransformerLens processes the weights, the embedding and the unembedding are stand-ins: a row of ones
    and SAMPLED_ROWS real rows; afterwards the whole matrices are processed here as TransformerLens processed
    the stand-ins, and checked to be exactly that on the sampled rows.

    Why: TransformerLens's processing copies the whole state dict at each step (fold_layer_norm,
    fold_value_biases), and for Gemma 3 a vocabulary-sized matrix is 671 MB: processing peaked at +3.6 GB over
    the model. For an RMSNorm model (no centring; ``architecture.vocabulary_apart``) processing leaves the
    embedding as it is and scales the unembedding's d_model columns by the final norm's folded gain, which the
    row of ones reads out exactly (1 × g = g); float32 weights only. Anything else (another transform, a bias
    that is not zero) is a ``RuntimeError``: tests/test_architectures.py holds every family to TransformerLens's
    own processing, bit for bit. Models that do not qualify are processed whole, as before."""
    import torch

    from . import weight_cache
    from .architecture import vocabulary_apart as qualifies

    embed = getattr(getattr(bridge, "embed", None), "original_component", None)
    head = getattr(getattr(bridge, "unembed", None), "original_component", None)
    bias = getattr(head, "bias", None)
    if (
        not qualifies(bridge.cfg)
        or embed is None
        or head is None
        or (bias is not None and bool(bias.any()))
        or embed.weight.dtype != torch.float32  # TransformerLens folds in float32 and rounds back: not one product
        or head.weight.dtype != torch.float32
    ):
        yield
        return
    E, U = embed.weight, head.weight
    tied = E.data_ptr() == U.data_ptr()
    d_vocab = E.shape[0]
    rows = torch.linspace(0, d_vocab - 1, min(SAMPLED_ROWS, d_vocab), device=E.device).long()
    ones = torch.ones(1, E.shape[1], dtype=E.dtype, device=E.device)
    raw_E, raw_U = E.data, U.data
    stand_E = torch.cat([ones, raw_E[rows]])
    stand_U = stand_E if tied else torch.cat([ones, raw_U[rows]])
    kept_E, kept_U = stand_E.clone(), stand_U.clone()  # as they were, should processing write in place
    E.data = stand_E
    if not tied:
        U.data = stand_U
    if bias is not None:  # the bridge's zero bias of the unembedding
        head.bias = torch.zeros(len(stand_U), dtype=bias.dtype, device=bias.device)
    try:
        yield
    except BaseException:
        E.data, U.data = raw_E, raw_U
        if bias is not None:
            head.bias = bias
        raise
    embed = bridge.embed.original_component  # processing may have put new parameters in place
    head = bridge.unembed.original_component
    done_E, done_U = embed.weight.detach(), head.weight.detach()
    done_bias = getattr(head, "bias", None)
    gain = done_U[0].clone()
    if not (
        embed.weight is not head.weight  # untied by processing, as the whole matrices are below
        and torch.equal(done_E, kept_E)
        and torch.equal(done_U[1:], kept_U[1:] * gain)
        and (done_bias is None or (done_bias.shape == (len(kept_U),) and not bool(done_bias.any())))
    ):
        raise RuntimeError(
            "TransformerLens processed the embedding or the unembedding of this "
            f"{getattr(bridge.cfg, 'architecture', 'model')} other than as the final norm's gain: "
            "precompute.models.bridge.vocabulary_apart cannot reproduce it"
        )
    full_U = _scaled_columns(raw_U, gain)  # a matrix of its own, as TransformerLens makes (tied or not)
    replaced = {done_E: raw_E, done_U: full_U}
    if done_bias is not None:
        replaced[done_bias] = torch.zeros(d_vocab, dtype=done_bias.dtype, device=done_bias.device)
        head.bias = replaced[done_bias]  # a buffer: set under its name
    embed.weight.data = raw_E
    head.weight.data = full_U
    weight_cache.replace_captured(replaced)


def _scaled_columns(matrix, gain, rows: int = 16384):
    """``matrix * gain`` (each row times the d_model gain) in blocks of rows, into one new tensor."""
    import torch

    out = torch.empty_like(matrix)
    for start in range(0, matrix.shape[0], rows):
        torch.mul(matrix[start : start + rows], gain, out=out[start : start + rows])
    return out


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
