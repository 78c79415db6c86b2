"""Tokenizers built locally and deterministically, for the offline models.

TransformerLens reloads a tokenizer by its ``name_or_path``, so an in-memory tokenizer is not enough: each one is
built once into a cache folder (``$CSE_CACHE_DIR`` or ``~/.cache/copy-suppression-explorer``) and loaded from
disk. Building is deterministic, so the cache can always be deleted. A model's own tokenizer in a folder is
loaded as the bridge keeps it (``load_with_bos``), so it is not reloaded.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

BOS = "<|endoftext|>"
PAD = "<pad>"
TOKENIZER_BUILD_VERSION = "1"


def cache_root() -> Path:
    return Path(os.environ.get("CSE_CACHE_DIR", Path.home() / ".cache" / "copy-suppression-explorer"))


def _wrap_and_save(tok, folder: Path, pad_token: str):
    from transformers import PreTrainedTokenizerFast

    hf = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=BOS, pad_token=pad_token)
    hf.model_max_length = 1_000_000
    hf.save_pretrained(str(folder))


def _build_toy(folder: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from ..data.synthetic import corpus

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TOY_VOCAB_SIZE,
        special_tokens=[BOS, PAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus(n_docs=400, seed=12345), trainer)
    _wrap_and_save(tok, folder, PAD)


GPT2_FILES = Path(__file__).resolve().parents[1] / "data" / "gpt2_tokenizer"
GPT2_SHA256 = {
    "vocab.json": "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
    "merges.txt": "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
}


def _build_gpt2(folder: Path) -> None:
    """GPT-2's real tokenizer from the vocabulary files shipped in ``precompute/data/gpt2_tokenizer`` (checked)."""
    import hashlib

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    from ..errors import ModelUnavailableError

    for name, want in GPT2_SHA256.items():
        path = GPT2_FILES / name
        got = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "missing"
        if got != want:
            raise ModelUnavailableError(
                f"GPT-2's tokenizer file {path} is {got if got == 'missing' else 'altered'} "
                f"(sha256 {got[:12]}…, expected {want[:12]}…); restore it from the repository"
            )
    bpe = models.BPE.from_file(str(GPT2_FILES / "vocab.json"), str(GPT2_FILES / "merges.txt"))
    tok = Tokenizer(bpe)
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([BOS])
    _wrap_and_save(tok, folder, BOS)


TOY_VOCAB_SIZE = 512
_BUILDERS = {"toy": _build_toy, "gpt2": _build_gpt2}


def tokenizer_dir(kind: str) -> Path:
    """The folder holding tokenizer ``kind`` ("toy" or "gpt2"), built on first use."""
    if kind not in _BUILDERS:
        raise ValueError(f"unknown local tokenizer {kind!r}; known: {sorted(_BUILDERS)}")
    folder = cache_root() / "tokenizers" / f"{kind}-v{TOKENIZER_BUILD_VERSION}"
    if (folder / "tokenizer.json").exists():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{kind}-", dir=folder.parent))
    try:
        _BUILDERS[kind](tmp)
        with contextlib.suppress(OSError):  # another process won the race; its copy is identical
            tmp.rename(folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def load_local_tokenizer(kind: str):
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast.from_pretrained(str(tokenizer_dir(kind)))


def load_with_bos(folder: Path):
    """The folder's tokenizer as TransformerBridge wants it (``add_bos_token=True``), loaded once: given another,
    the bridge loads a second copy of it (``get_tokenizer_with_bos``), 300 MB more for Gemma 3's 262,144 tokens.
    A tokenizer with no BOS token is loaded as it is.

    What only built it is let go: transformers' tokenizer classes keep the vocabulary and merges they handed the
    Rust tokenizer as Python objects (``_vocab``, ``_merges``: 170 MB for Gemma 3, read only in ``__init__``),
    and the JSON parser's leftovers go back to the system (``release``)."""
    from transformers import AutoTokenizer

    from .memory import release

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder), add_bos_token=True)
    except ValueError:
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
    if getattr(tokenizer, "backend_tokenizer", None) is not None:  # the Rust tokenizer holds its own copy
        for built_from in ("_vocab", "_merges"):
            tokenizer.__dict__.pop(built_from, None)
    release()
    return tokenizer
