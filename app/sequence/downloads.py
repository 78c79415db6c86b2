"""The sequence's numbers as CSV and JSON (the JSON is what ``python -m precompute export`` prints: token strings
beside every token id), with the model, set, head, text and settings inside (``app.exports``)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from app import exports
from precompute import schema as F
from precompute.store.record_arrays import exported, floats


def table(rec: dict, strings: list[str]) -> pd.DataFrame:
    s = len(strings)
    out = {"position": list(range(s)), "token": strings, "next_token": strings[1:] + [""]}
    for field, t in rec.items():
        if t.ndim == 1 and t.shape[0] in (s - 1, s) and field != F.TOKENS:
            missing = [None] * (s - t.shape[0])  # a per-prediction field has no value at the last position
            if np.issubdtype(t.dtype, np.floating):
                out[field] = floats(t) + missing
            else:  # ranks and ids stay whole numbers ("75", not "75.0"), blank where missing
                out[field] = pd.array(t.tolist() + missing, dtype="Int64")
    return pd.DataFrame(out)


def downloads(rec: dict, strings: list[str], what: str, key: str, meta: dict, tokenizer) -> None:
    exports.buttons(table(rec, strings), meta, what, key, data=exported(rec, tokenizer))
