"""Turning text into token ids the same way everywhere: the start token first, then the text's tokens (no other
specials). ``start_token`` decides the start token once per tokenizer; ``load_model`` sets it as the tokenizer's BOS,
so ``tokenizer.bos_token_id`` is the start token everywhere after loading."""

from __future__ import annotations

import re
from functools import lru_cache

# chat-turn markers: some instruction-tuned tokenizers name one as their BOS, but plain text never starts with one
CHAT_MARKERS = (
    "<|im_start|>",
    "<|im_end|>",
    "<start_of_turn>",
    "<end_of_turn>",
    "<|start_header_id|>",
    "<|user|>",
    "<|system|>",
    "<|assistant|>",
    "[INST]",
)
DOCUMENT_SEPARATOR = "<|endoftext|>"


def start_token(tokenizer) -> tuple[str, str]:
    """(the token a plain-text sequence starts with, why). The paper starts every sequence with GPT-2's BOS,
    ``<|endoftext|>``, the separator between its training documents (and what attention sinks on).

    * a BOS that is not a chat-turn marker: BOS;
    * a BOS that is a chat-turn marker (SmolLM2's ``<|im_start|>``): ``<|endoftext|>`` when the vocabulary has it
      as one token (SmolLM2 was pretrained on documents separated by it), else the end-of-text token if that is no
      chat marker either;
    * no BOS: the end-of-text token (Qwen2's tokenizer, for example).

    Raises ModelUnavailableError when none of these exists."""
    from ..errors import ModelUnavailableError

    bos, eos = tokenizer.bos_token, tokenizer.eos_token
    if bos is not None and str(bos) not in CHAT_MARKERS:
        return str(bos), "the tokenizer's BOS"
    if bos is not None:
        sep = tokenizer.convert_tokens_to_ids(DOCUMENT_SEPARATOR)
        if isinstance(sep, int) and tokenizer.convert_ids_to_tokens(sep) == DOCUMENT_SEPARATOR:
            return DOCUMENT_SEPARATOR, (
                f"the tokenizer's BOS {bos} is a chat-turn marker; plain text starts with "
                f"the document separator {DOCUMENT_SEPARATOR} (id {sep}) instead"
            )
        if eos is not None and str(eos) not in CHAT_MARKERS:
            return str(eos), f"the tokenizer's BOS {bos} is a chat-turn marker; its end-of-text token instead"
        raise ModelUnavailableError(
            f"the tokenizer's BOS {bos} is a chat-turn marker and it has no document separator to start plain text with"
        )
    if eos is None:
        raise ModelUnavailableError("the tokenizer has neither a BOS nor an end-of-text token to start sequences with")
    return str(eos), "the tokenizer has no BOS; its end-of-text token instead"


def encode(tokenizer, text: str) -> list[int]:
    """BOS followed by the tokens of ``text``. The tokenizer's own special-token handling is not used: special-token
    text typed in ``text`` (e.g. ``<|endoftext|>``) is tokenised as ordinary characters, never as a special token."""
    ids = tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]
    return [int(tokenizer.bos_token_id)] + list(ids)


def token_strings(tokenizer, ids) -> list[str]:
    """Readable strings for ids, decoded one by one. A byte-level piece that is not whole UTF-8 on its own (part
    of an emoji or a CJK character) shows its bytes as ``<0xE6><0x97>`` instead of the replacement character."""
    out = []
    for i in ids:
        text = tokenizer.decode([int(i)])
        if "\ufffd" in text:
            raw = _token_bytes(tokenizer, int(i))
            if raw is not None:
                escaped: str = raw.decode("utf-8", errors="backslashreplace")
                text = re.sub(r"\\x([0-9a-f]{2})", _byte_name, escaped)
        out.append(text)
    return out


@lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    """The inverse of GPT-2's bytes -> printable-unicode table used by byte-level BPE vocabularies."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


def _byte_name(match: re.Match[str]) -> str:
    """``\\xe2`` (a byte that is not UTF-8 on its own) as ``<0xE2>``."""
    return f"<0x{match.group(1).upper()}>"


def _token_bytes(tokenizer, i: int) -> bytes | None:
    piece = tokenizer.convert_ids_to_tokens(i)
    table = _byte_decoder()
    if not isinstance(piece, str) or any(ch not in table for ch in piece):
        return None
    return bytes(table[ch] for ch in piece)


UNUSED_TOKEN = re.compile(r"<unused\d+>|\[unused\d+\]")  # reserved slots (Gemma: 6,000+), never text


def text_token_ids(tokenizer, d_vocab: int) -> list[int]:
    """The ids below ``d_vocab`` that stand for text: not a special or control token (the tokenizer's specials and
    every added token marked special), not a reserved ``<unusedN>`` slot, not beyond the tokenizer's own vocabulary
    (padding rows of the embedding). Random-token probes and circuit samples draw from these."""
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    for i, added in (getattr(tokenizer, "added_tokens_decoder", None) or {}).items():
        if getattr(added, "special", False):
            special.add(int(i))
    size = min(int(d_vocab), len(tokenizer))
    names = tokenizer.convert_ids_to_tokens(list(range(size)))
    return [i for i, name in enumerate(names) if i not in special and not UNUSED_TOKEN.fullmatch(str(name))]
