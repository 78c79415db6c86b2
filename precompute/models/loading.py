"""Loading the models the project works with, as TransformerLens ``TransformerBridge`` objects.

``load_model(name)`` returns a :class:`LoadedModel`: the TransformerLens model (weights processed the way the paper
did: fold_ln, center_writing_weights, center_unembed, fold_value_biases; per-head ``hook_result`` enabled) plus the
provenance of every choice, which the precompute job writes into the artifact manifest.

Names:

* ``gpt2-small``: the real GPT-2 small, weights from the Hugging Face Hub (or the local HF cache).
* ``gpt2-small-random``: GPT-2 small's exact shape, random weights from a fixed seed, GPT-2's real tokenizer
  (shipped with the project). Offline. For benchmarks (cost does not depend on the weights) and everything that
  depends only on GPT-2's vocabulary.
* ``toy``: SYNTHETIC. A tiny hand-planted model with a copy-suppression head at L1H2 (see ``toy_model``).
"""

from __future__ import annotations

import importlib.metadata
import os
from dataclasses import dataclass, field
from typing import Any

from ..errors import InvalidInputError, ModelUnavailableError

MODEL_NAMES = ("gpt2-small", "gpt2-small-random", "toy")
DEFAULT_HEADS = {"gpt2-small": (10, 7), "gpt2-small-random": (10, 7), "toy": (1, 2)}
RANDOM_SEED = 0

# The weight processing of the paper (TransformerLens HookedTransformer.from_pretrained defaults), decided here
# explicitly rather than left to library defaults, and recorded in every artifact.
WEIGHT_PROCESSING = {
    "fold_ln": True,
    "center_writing_weights": True,
    "center_unembed": True,
    "fold_value_biases": True,
    "refactor_factored_attn_matrices": False,
}


@dataclass
class LoadedModel:
    """A TransformerLens model plus where it came from. ``analyze`` and friends accept this or the bare model."""

    model: Any  # transformer_lens.TransformerBridge
    name: str
    provenance: dict = field(default_factory=dict)

    @property
    def synthetic(self) -> bool:
        return bool(self.provenance.get("synthetic"))

    @property
    def default_head(self) -> tuple[int, int]:
        return DEFAULT_HEADS[self.name]

    @property
    def tokenizer(self):
        return self.model.tokenizer


def unwrap(model) -> Any:
    """The TransformerLens model inside ``model`` (a LoadedModel or a bare model)."""
    return model.model if isinstance(model, LoadedModel) else model


def _versions() -> dict:
    out = {}
    for pkg in ("transformer-lens", "transformers", "torch"):
        try:
            out[pkg.replace("-", "_") + "_version"] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:  # pragma: no cover - always installed with the project
            out[pkg.replace("-", "_") + "_version"] = "unknown"
    return out


def _resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InvalidInputError(f"device {device!r} was asked for but CUDA is not available on this machine")
    if device not in ("cpu",) and not device.startswith("cuda"):
        raise InvalidInputError(f"unknown device {device!r}; use 'cpu', 'cuda', 'cuda:N' or 'auto'")
    return device


def _boot(hf_model, tokenizer, label: str, device: str):
    from transformer_lens import TransformerBridge

    bridge = TransformerBridge.boot_transformers(label, hf_model=hf_model, tokenizer=tokenizer, device=device)
    return _process(bridge)


def _process(bridge):
    bridge.set_use_attn_result(True)
    bridge.enable_compatibility_mode(disable_warnings=True, **WEIGHT_PROCESSING)
    bridge.eval()
    for p in bridge.parameters():
        p.requires_grad_(False)
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


def _load_gpt2_small(device: str):
    """The real model. Offline without a cache, fail at once with one actionable message."""
    from transformer_lens import TransformerBridge

    hint = (
        "GPT-2 small's weights could not be loaded from the Hugging Face Hub or the local HF cache "
        f"(HF_HOME={os.environ.get('HF_HOME', '~/.cache/huggingface')}). Either connect to the network, or copy "
        "a cache that holds 'gpt2' (e.g. run `huggingface-cli download gpt2` on a machine with network and copy "
        "its HF_HOME here), or use --model toy / gpt2-small-random, which work offline."
    )
    if os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0"):
        from huggingface_hub import try_to_load_from_cache

        if not isinstance(try_to_load_from_cache("gpt2", "config.json"), str):
            raise ModelUnavailableError(hint + " (HF_HUB_OFFLINE is set and 'gpt2' is not in the cache.)")
    try:
        bridge = TransformerBridge.boot_transformers("gpt2", device=device)
    except (OSError, ValueError, ConnectionError) as err:
        raise ModelUnavailableError(f"{hint} Underlying error: {type(err).__name__}: {str(err)[:300]}") from None
    return _process(bridge)


def load_model(name: str, device: str = "cpu") -> LoadedModel:
    """Load one of ``MODEL_NAMES`` with the paper's weight processing; see the module docstring."""
    import torch

    from ..data.function_words import function_word_ids
    from .tokenizers import load_local_tokenizer

    if name not in MODEL_NAMES:
        raise InvalidInputError(f"unknown model {name!r}; choose one of: {', '.join(MODEL_NAMES)}")
    device = _resolve_device(device)
    prov: dict = {"model_name": name, "device": device, "weight_processing": dict(WEIGHT_PROCESSING), **_versions()}
    if name == "gpt2-small":
        bridge = _load_gpt2_small(device)
        prov.update(synthetic=False, weights="huggingface:gpt2", tokenizer="huggingface:gpt2")
    elif name == "gpt2-small-random":
        from transformers import GPT2Config, GPT2LMHeadModel

        tokenizer = load_local_tokenizer("gpt2")
        torch.manual_seed(RANDOM_SEED)
        hf_model = GPT2LMHeadModel(GPT2Config(vocab_size=50257, n_positions=1024)).eval()
        bridge = _boot(hf_model, tokenizer, "gpt2-small-random", device)
        prov.update(synthetic=True, weights=f"random (GPT2Config defaults, torch seed {RANDOM_SEED})",
                    tokenizer="GPT-2's real tokenizer (vocabulary files shipped in precompute/data/gpt2_tokenizer)")
    else:
        from .toy import TOY_PLANTED_HEAD, TOY_SEED, build_toy_hf_model, unigram_log_prior

        tokenizer = load_local_tokenizer("toy")
        hf_model = build_toy_hf_model(len(tokenizer), tokenizer.bos_token_id, unigram_log_prior(tokenizer),
                                      function_word_ids(tokenizer), seed=TOY_SEED)
        bridge = _boot(hf_model, tokenizer, "toy", device)
        prov.update(synthetic=True, weights=f"hand-planted (precompute.models.toy, seed {TOY_SEED})",
                    tokenizer="locally built BPE on the project's synthetic text",
                    planted_head=f"{TOY_PLANTED_HEAD[0]}.{TOY_PLANTED_HEAD[1]}")
    from .memory import release

    release()  # processing weights peaks far above the final size; give the freed pages back
    cfg = bridge.cfg
    prov.update(n_layers=cfg.n_layers, n_heads=cfg.n_heads, d_model=cfg.d_model, d_head=cfg.d_head,
                d_vocab=cfg.d_vocab, n_ctx=cfg.n_ctx)
    return LoadedModel(model=bridge, name=name, provenance=prov)
