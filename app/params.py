"""Reading deep-link query parameters (?seq=…&pos=…&head=…) defensively: bad values give a message, not a crash."""

from __future__ import annotations

import streamlit as st
from app.render.text import literal


def int_param(name: str, lo: int, hi: int) -> tuple[int | None, str | None]:
    raw = st.query_params.get(name)
    if raw is None:
        return None, None
    try:
        value = int(str(raw).strip())
    except ValueError:
        return None, f"Ignored the link's {name}={literal(repr(raw))}: not a whole number."
    if not lo <= value <= hi:
        return None, f"Ignored the link's {name}={value}: it must be between {lo} and {hi}."
    return value, None


def head_param(arts) -> tuple[str | None, str | None]:
    raw = st.query_params.get("head")
    if raw is None:
        return None, None
    if raw not in arts.manifest["heads"]:
        return None, f"Ignored the link's head={literal(repr(raw))}: these artifacts have {literal(', '.join(arts.manifest['heads']))}."
    return raw, None
