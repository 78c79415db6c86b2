"""Working with a stored record as numpy arrays (no torch): sparse attention back to dense, JSON export.

Both the artifact reader and the live analyzer hand the app records of numpy arrays with the fields of
``store.records.compact``; these helpers are what the app, ``export`` and notebooks use on them.
"""

from __future__ import annotations

import numpy as np

from .. import schema


def dense_attention(rec: dict, info_weighted: bool = False) -> np.ndarray:
    """[S, S] attention of one sequence rebuilt from the sparse record (entries outside the top-k are 0)."""
    pos = np.asarray(rec[schema.ATTN_TOPK_POS]).astype(np.int64)
    w = np.asarray(rec[schema.ATTN_TOPK_WEIGHT]).astype(np.float32)
    bos = np.asarray(rec[schema.ATTN_BOS]).astype(np.float32)
    s = bos.shape[0]
    dense = np.zeros((s, s), dtype=np.float32)
    causal = pos <= np.arange(s)[:, None]
    rows = np.repeat(np.arange(s)[:, None], pos.shape[1], axis=1)
    dense[rows[causal], pos[causal]] = w[causal]
    dense[:, 0] = bos
    if info_weighted:
        dense = dense * np.asarray(rec[schema.OUT_NORM_REL]).astype(np.float32)[None, :]
    return dense


def to_jsonable(rec: dict) -> dict:
    """Plain lists (floats rounded to 5 decimals) for JSON export."""
    out = {}
    for name, x in rec.items():
        a = np.asarray(x)
        out[name] = np.round(a.astype(np.float64), 5).tolist() if np.issubdtype(a.dtype, np.floating) else a.tolist()
    return out


def floats(x) -> list[float]:
    """A float list from any numeric array (fp16 included)."""
    return np.asarray(x).astype(np.float64).tolist()


def token_id_strings(rec: dict, tokenizer) -> dict[str, list]:
    """``{field}_strings`` for every field of token ids (``schema.holds_token_ids``): the same nesting, None where
    the id is -1 (none)."""
    from .. import schema
    from ..data.tokenization import token_strings

    out = {}
    for field, t in rec.items():
        if not schema.holds_token_ids(field):
            continue
        ids = np.asarray(t)
        flat = ids.reshape(-1).tolist()
        it = iter(token_strings(tokenizer, [i for i in flat if i >= 0]))
        named = [next(it) if i >= 0 else None for i in flat]
        out[f"{field}_strings"] = np.array(named, dtype=object).reshape(ids.shape).tolist()
    return out


def exported(rec: dict, tokenizer) -> dict:
    """One sequence's record as JSON-ready lists: its token strings, every field, and strings beside token ids (what
    ``python -m precompute export`` prints and the app's JSON download holds)."""
    from .. import schema
    from ..data.tokenization import token_strings

    return {
        "token_strings": token_strings(tokenizer, np.asarray(rec[schema.TOKENS]).tolist()),
        **to_jsonable(rec),
        **token_id_strings(rec, tokenizer),
    }
