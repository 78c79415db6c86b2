"""Turning text into token ids the same way everywhere: BOS first, then the text's tokens (no other specials)."""

from __future__ import annotations


def encode(tokenizer, text: str) -> list[int]:
    """BOS followed by the tokens of ``text``. The tokenizer's own special-token handling is not used: special-token
    text typed in ``text`` (e.g. ``<|endoftext|>``) is tokenised as ordinary characters, never as a special token."""
    ids = tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]
    return [int(tokenizer.bos_token_id)] + list(ids)


def encode_batch(tokenizer, texts: list[str], length: int):
    """[len(texts), length] ids (a torch tensor) of texts at least ``length`` tokens long (BOS included), cut."""
    import torch

    rows = [encode(tokenizer, t)[:length] for t in texts]
    if any(len(r) < length for r in rows):
        raise ValueError("every text must be at least `length` tokens long")
    return torch.tensor(rows, dtype=torch.long)


def token_strings(tokenizer, ids) -> list[str]:
    """Readable strings for ids (decoded one by one, so byte-level pieces show as text where possible)."""
    return [tokenizer.decode([int(i)]) for i in ids]
