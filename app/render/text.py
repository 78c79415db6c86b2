"""Showing any string (URL parameters, tokens, file contents, error messages) as literal text in Streamlit's
markdown-rendering elements (st.markdown, st.caption, st.warning, st.error, …): every character that markdown,
Streamlit's directives (``:red[…]``, ``:material/…:``), LaTeX or HTML would interpret is backslash-escaped."""

from __future__ import annotations

import re

_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$&:='\"])")


def literal(text) -> str:
    """``text`` as markdown source that renders as exactly ``text`` (one paragraph; line breaks become spaces)."""
    return _SPECIAL.sub(r"\\\1", " ".join(str(text).split()))
