"""The checks every entry point shares: whole-number settings and token-id tensors. One message per mistake,
raised as ``InvalidInputError`` (the CLI prints it without a traceback; the app shows it as text)."""

from __future__ import annotations

from .errors import InvalidInputError


def whole_number(name: str, value, limit: int | None = None, lo: int = 1) -> int:
    """``value`` if it is an int (not a bool) in [lo, limit], else InvalidInputError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        what = "a positive integer" if lo == 1 else f"an integer of at least {lo}"
        raise InvalidInputError(f"{name} must be {what}, got {value!r}")
    if limit is not None and value > limit:
        raise InvalidInputError(f"{name} {value} is above the limit {limit}")
    return value


def token_ids(tokens, d_vocab: int, n_ctx: int | None = None, min_len: int = 1):
    """``tokens`` if it is an integer tensor [batch, seq] (batch >= 1, min_len <= seq <= n_ctx) of ids in
    [0, d_vocab), else InvalidInputError saying which of these it breaks."""
    import torch

    if not isinstance(tokens, torch.Tensor) or tokens.dtype not in (torch.int64, torch.int32, torch.int16):
        raise InvalidInputError("tokens must be an integer tensor of token ids, shape [batch, seq]")
    if tokens.ndim != 2:
        raise InvalidInputError(f"tokens must have shape [batch, seq]; got {tuple(tokens.shape)}")
    b, s = tokens.shape
    if b == 0 or s == 0:
        raise InvalidInputError(f"empty batch: tokens has shape {tuple(tokens.shape)}; need at least one token")
    if s < min_len:
        raise InvalidInputError(
            f"need at least {min_len} tokens per sequence (BOS plus one) to measure a next-token loss"
        )
    if n_ctx is not None and s > n_ctx:
        raise InvalidInputError(f"sequence of {s} tokens is longer than the model's context n_ctx = {n_ctx}")
    lo, hi = int(tokens.min()), int(tokens.max())
    if lo < 0 or hi >= d_vocab:
        raise InvalidInputError(f"token ids must be in [0, {d_vocab}); got [{lo}, {hi}]")
    return tokens
