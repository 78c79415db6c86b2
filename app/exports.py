"""Downloads that stand alone: every CSV and JSON the app offers names its model, artifact set, head, dataset and
settings, in its file name and inside it (CSV: ``# key: value`` lines before the header, which
``pandas.read_csv(path, comment="#")`` skips; JSON: a ``metadata`` object beside the data)."""

from __future__ import annotations

import io
import json
import re

import numpy as np
import pandas as pd
import streamlit as st

from app.state.artifacts import set_name

STEM_CHARS = re.compile(r"[^A-Za-z0-9._-]+")


def _plain(value):
    """``json.dumps``'s fallback for numpy numbers and arrays (and anything else: its text)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def metadata(arts, head: str | None = None, **extra) -> dict:
    """What a download is about: the set's model, its name, the head, the text and every setting it was made with."""
    m = arts.manifest
    out = {
        "model": m["model"].get("model_name"),
        "artifact_set": set_name(arts.source),
        "head": head,
        "dataset": {k: m["dataset"].get(k) for k in ("name", "seed", "split") if k in m["dataset"]},
        "sequences": f"{arts.n_sequences} x {arts.seq_len} tokens",
        "settings": m.get("hyperparameters", {}),
        "schema_version": m.get("schema_version"),
        "made_by": "Copy Suppression Explorer",
    }
    out.update(extra)
    return {k: v for k, v in out.items() if v is not None}


def survey_metadata(survey: str, manifest: dict, **extra) -> dict:
    """A survey's ``metadata``: its model, folder, text and settings."""
    out = {
        "model": manifest.get("model", {}).get("model_name"),
        "survey": survey,
        "dataset": manifest.get("dataset", {}).get("name"),
        "settings": manifest.get("settings", {}),
        "made_by": "Copy Suppression Explorer",
    }
    out.update(extra)
    return {k: v for k, v in out.items() if v is not None}


def file_stem(meta: dict, what: str) -> str:
    """``model_set_headL.H_what`` in safe characters, e.g. ``smollm2-135m_smollm2-demo_head24.4_seq55``."""
    parts = [meta.get("model"), meta.get("artifact_set") or meta.get("survey")]
    parts += [f"head{meta['head']}" if meta.get("head") else None, what]
    text = "_".join(str(p).rsplit("/", 1)[-1] for p in parts if p)
    return STEM_CHARS.sub("-", text).strip("-")[:160] or "export"


def csv_text(table: pd.DataFrame, meta: dict) -> str:
    """``# key: value`` lines (values as JSON, one line each) and then the table as CSV."""
    buf = io.StringIO()
    for key, value in meta.items():
        buf.write(f"# {key}: {json.dumps(value, ensure_ascii=False, default=_plain)}\n")
    table.to_csv(buf, index=False)
    return buf.getvalue()


def json_text(data: dict, meta: dict) -> str:
    return json.dumps({"metadata": meta, **data}, ensure_ascii=False, default=_plain)


def buttons(table: pd.DataFrame, meta: dict, what: str, key: str, data: dict | None = None) -> None:
    """CSV and JSON download buttons for ``table`` (the JSON holds ``data`` where given, else the table's rows)."""
    stem = file_stem(meta, what)
    c1, c2 = st.columns(2)
    c1.download_button(
        "Download CSV", csv_text(table, meta), file_name=f"{stem}.csv", mime="text/csv", key=f"{key}_csv"
    )
    payload = data if data is not None else {"rows": json.loads(table.to_json(orient="records"))}
    c2.download_button(
        "Download JSON", json_text(payload, meta), file_name=f"{stem}.json", mime="application/json", key=f"{key}_json"
    )
