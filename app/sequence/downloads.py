"""The sequence's numbers as CSV and JSON (the same fields as ``python -m precompute export``)."""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import streamlit as st

from precompute import schema as F
from precompute.store.record_arrays import floats, to_jsonable


def csv_text(rec: dict, strings: list[str]) -> str:
    s = len(strings)
    table = {"position": list(range(s)), "token": strings, "next_token": strings[1:] + [""]}
    for field, t in rec.items():
        if t.ndim == 1 and t.shape[0] in (s - 1, s) and field != F.TOKENS:
            missing = [None] * (s - t.shape[0])  # a per-prediction field has no value at the last position
            if np.issubdtype(t.dtype, np.floating):
                table[field] = floats(t) + missing
            else:  # ranks and ids stay whole numbers ("75", not "75.0"), blank where missing
                table[field] = pd.array(t.tolist() + missing, dtype="Int64")
    buf = io.StringIO()
    pd.DataFrame(table).to_csv(buf, index=False)
    return buf.getvalue()


def json_text(rec: dict, strings: list[str]) -> str:
    return json.dumps({"token_strings": strings, **to_jsonable(rec)})


def downloads(rec: dict, strings: list[str], name: str, key: str) -> None:
    c1, c2 = st.columns(2)
    c1.download_button(
        "Download CSV", csv_text(rec, strings), file_name=f"{name}.csv", mime="text/csv", key=f"{key}_csv"
    )
    c2.download_button(
        "Download JSON", json_text(rec, strings), file_name=f"{name}.json", mime="application/json", key=f"{key}_json"
    )
