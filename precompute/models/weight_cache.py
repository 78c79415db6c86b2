"""Processed weights, cached: a GPT-2-shaped model's weights are processed once and then memory-mapped.

Processing GPT-2 small's weights (TransformerBridge's fold_ln, centring, untying W_U from W_E…) peaks at 2.5 GB
for a model whose processed tensors are 622 MiB. The first load of a model saves the processed tensors, exactly
as TransformerLens hands them to the model's components, to ``<cache>/processed/<key>.safetensors`` (safetensors
only: nothing is unpickled). Later loads build the model's skeleton with uninitialised weights, give the
components the memory-mapped tensors instead of processing (no copy: every parameter is a view of the file), and
check a probe: the logits of a fixed token sequence must equal, bit for bit, those the full load gave. Anything
else (a missing or damaged file, other versions, a different probe) falls back to the full load, which rewrites
the entry. The cache can always be deleted.

Two savings: loading peaks at the final size, and the token embedding W_E, read a row per token, stays on disk
but for the rows of tokens seen (:func:`page_out`; BENCHMARKS.md §4).

Keys hold everything the processed values depend on: the model spec, its weights' identity (the random model's
seed, the Hub snapshot), the weight processing and the versions of TransformerLens, transformers and torch.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path

import torch

FORMAT = "1"
PROBE_LEN = 16


def cache_dir() -> Path:
    from .tokenizers import cache_root

    return cache_root() / "processed"


def enabled() -> bool:
    """``CSE_WEIGHT_CACHE=0`` turns the cache off (every load processes the weights)."""
    return os.environ.get("CSE_WEIGHT_CACHE", "1") not in ("0", "false", "no")


def entry_key(identity: dict) -> str:
    """A file name for this exact set of processed weights."""
    blob = json.dumps({"format": FORMAT, **identity}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def probe_tokens(d_vocab: int) -> torch.Tensor:
    """A fixed [1, PROBE_LEN] sequence spread over the vocabulary."""
    return (torch.arange(PROBE_LEN) * 7919 % d_vocab)[None]


_CAPTURING: list[dict] = []  # the dicts capture() is filling


def replace_captured(replaced: dict) -> None:
    """In the state dicts being captured, each tensor that is a key of ``replaced`` (the same tensor, or one with
    its storage and shape) becomes its value: what ``bridge.vocabulary_apart`` processed after TransformerLens."""
    for grabbed in _CAPTURING:
        for name, tensor in list(grabbed.items()):
            for old, new in replaced.items():
                if tensor is old or (tensor.data_ptr() == old.data_ptr() and tensor.shape == old.shape):
                    grabbed[name] = new


@contextlib.contextmanager
def capture():
    """While active, the first processed state dict TransformerLens distributes to a model's components is kept
    in the yielded dict (the full load's processing runs as usual)."""
    from transformer_lens.weight_processing import ProcessWeights

    grabbed: dict = {}
    _CAPTURING.append(grabbed)
    original = ProcessWeights.distribute_weights_to_components

    def distribute(state_dict, component_mapping, verbose=False):
        if not grabbed:
            grabbed.update(state_dict)
        return original(state_dict, component_mapping, verbose)

    ProcessWeights.distribute_weights_to_components = staticmethod(distribute)
    try:
        yield grabbed
    finally:
        ProcessWeights.distribute_weights_to_components = staticmethod(original)
        _CAPTURING.remove(grabbed)


def save(key: str, identity: dict, state: dict, bridge) -> Path | None:
    """Write the entry (atomically: a temporary file renamed into place). None if it cannot be written."""
    from safetensors.torch import save_file

    folder = cache_dir()
    path = folder / f"{key}.safetensors"
    with torch.inference_mode():
        probe = bridge(probe_tokens(bridge.cfg.d_vocab).to(bridge.cfg.device)).float().cpu()
    tensors = {name: t.detach().to("cpu").contiguous() for name, t in state.items()}
    tensors["__probe_logits__"] = probe
    meta = {"format": FORMAT, "identity": json.dumps(identity, sort_keys=True)}
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        save_file(tensors, str(tmp), metadata=meta)
        os.replace(tmp, path)
    except OSError:
        return None
    return path


def load(key: str, identity: dict, skeleton, tokenizer, label: str, device: str, process):
    """The bridge built from the cache entry, or None (no entry, another identity, a damaged file, a probe that
    differs). ``skeleton()``: the Hugging Face model with uninitialised weights and ``tokenizer()``, built only
    once the entry is found; ``process(bridge, before_forward, from_cache=True)``: what a full load does after booting
    (``bridge.process``), run here with the cached weights."""
    from safetensors import safe_open
    from safetensors.torch import load_file
    from transformer_lens import TransformerBridge
    from transformer_lens.weight_processing import ProcessWeights

    path = cache_dir() / f"{key}.safetensors"
    if device != "cpu" or not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
        if meta.get("format") != FORMAT or meta.get("identity") != json.dumps(identity, sort_keys=True):
            return None
        state = load_file(str(path))  # memory-mapped: no copy
    except Exception:  # noqa: BLE001 - a damaged or truncated file (SafetensorError, OSError…): process instead
        return None
    probe = state.pop("__probe_logits__", None)
    if probe is None:
        return None
    bridge = TransformerBridge.boot_transformers(label, hf_model=skeleton(), tokenizer=tokenizer(), device=device)

    def process_weights(verbose=False, fold_ln=True, **_):  # what TransformerBridge.process_weights does after
        bridge._weights_processed = True  # computing the state dict, with the cached one
        ProcessWeights.distribute_weights_to_components(state_dict=state, component_mapping=bridge.real_components)
        if fold_ln:
            bridge._fold_layer_norms_into_batched_experts()
        if bridge.adapter is not None:
            bridge.adapter.postprocess_weights(bridge)

    bridge.process_weights = process_weights
    try:
        bridge = process(bridge, before_forward=lambda b: page_out(b.W_E, path), from_cache=True)
        with torch.inference_mode():
            same = torch.equal(bridge(probe_tokens(bridge.cfg.d_vocab)).float(), probe)
    except Exception:  # noqa: BLE001 - entry and model do not fit together: process instead
        return None
    finally:
        bridge.__dict__.pop("process_weights", None)
    return bridge if same else None


def page_out(tensor: torch.Tensor, path: Path) -> bool:
    """Let the pages of a memory-mapped, never-written tensor go (Linux): the token embedding is read a row per
    token, so after this only the rows of tokens actually seen come back, a page at a time (random access: no
    read-ahead; the file's unmapped cached pages are dropped too, or a fault would map a whole cached folio of
    neighbours). Measured: 120 random tokens bring back 1 MiB of GPT-2's 147 MiB W_E instead of 98 MiB."""
    import ctypes

    from .memory import libc

    lib = libc()
    if lib is None or not hasattr(lib, "madvise") or not hasattr(os, "posix_fadvise"):
        return False
    page = os.sysconf("SC_PAGE_SIZE")
    first = -(-tensor.data_ptr() // page) * page  # whole pages inside the tensor only
    last = (tensor.data_ptr() + tensor.numel() * tensor.element_size()) // page * page
    offset = _file_offset(path, first, last) if last > first else None
    if offset is None:
        return False  # never on memory that is not this file's mapping: there, DONTNEED would zero it
    addr, size = ctypes.c_void_p(first), ctypes.c_size_t(last - first)
    MADV_RANDOM, MADV_DONTNEED = 1, 4
    if lib.madvise(addr, size, MADV_RANDOM) != 0 or lib.madvise(addr, size, MADV_DONTNEED) != 0:
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, offset, last - first, os.POSIX_FADV_DONTNEED)  # only pages no process maps
    finally:
        os.close(fd)
    return True


def _file_offset(path: Path, first: int, last: int) -> int | None:
    """Where in ``path`` the memory [first, last) is mapped from, if it lies inside one mapping of it
    (``/proc/self/maps``); else None."""
    target = str(Path(path).resolve())
    try:
        with open("/proc/self/maps") as fh:
            for line in fh:
                fields = line.split(maxsplit=5)
                if len(fields) == 6 and fields[5].strip() == target:
                    lo, hi = (int(x, 16) for x in fields[0].split("-"))
                    if lo <= first and last <= hi:
                        return int(fields[2], 16) + first - lo
    except OSError:
        return None
    return None


def skeleton_of(config, model_class):
    """``model_class(config)`` with uninitialised weights (no random init: nothing is computed or touched). The
    weights are fresh anonymous mappings, so what TransformerBridge's boot reads of them before the cached tensors
    replace them is the kernel's shared zero page, not resident memory. Buffers are built for real (accelerate's
    ``init_empty_weights`` leaves them alone): a rotary model's frequencies are in no state dict."""
    from accelerate import init_empty_weights

    from .memory import fresh_pages

    with init_empty_weights(include_buffers=False):
        model = model_class(config)
    made: dict[int, torch.nn.Parameter] = {}  # tied weights stay one tensor
    with fresh_pages():
        for module in model.modules():
            for name, p in list(module._parameters.items()):
                if p is not None and p.is_meta:
                    if id(p) not in made:
                        made[id(p)] = torch.nn.Parameter(torch.empty_like(p, device="cpu"), p.requires_grad)
                    module._parameters[name] = made[id(p)]
    return model.eval()
