"""Showing any string (URL parameters, tokens, file contents, error messages) as literal text in Streamlit's
markdown-rendering elements (st.markdown, st.caption, st.warning, st.error, …): every character that markdown,
Streamlit's directives (``:red[…]``, ``:material/…:``), LaTeX or HTML would interpret is backslash-escaped, and
what GitHub-flavoured markdown would auto-link (``http://…``, ``www.…``, ``name@host``) gets an invisible word
joiner (U+2060) that breaks the pattern, so no outside string becomes a link."""

from __future__ import annotations

import re

_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$&:='\"])")
WORD_JOINER = "\u2060"
# what GFM auto-links: the schemes http(s):// (and cmark-gfm's mailto: and xmpp:), "www.", and "@" (e-mail)
_LINKISH = re.compile(r"(?i)(\b(?:https?|ftp|mailto|xmpp)(?=:)|\bwww(?=\.)|@)")


NBSP = "\u00a0"
_LINE_BREAK = re.compile(r"[\r\n\t\f\v\x85\u2028\u2029]+")
_RUN_OF_SPACES = re.compile(r"(?<= ) ")  # every space after the first of a run (HTML would collapse the run)


def literal(text) -> str:
    """``text`` as markdown source that renders as exactly ``text`` (one paragraph: line breaks become spaces, the
    ends are trimmed; runs of spaces inside keep their length, as no-break spaces)."""
    one_line = _RUN_OF_SPACES.sub(NBSP, _LINE_BREAK.sub(" ", str(text)).strip())
    return _SPECIAL.sub(r"\\\1", _LINKISH.sub(r"\1" + WORD_JOINER, one_line))
