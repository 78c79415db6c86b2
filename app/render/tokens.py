"""Token strips as small HTML/CSS: coloured spans with hover tooltips. Every string is escaped here."""

from __future__ import annotations

import html
from urllib.parse import urlencode

from .colors import text_colour

CSS = """
<style>
.cse-strip{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:14px;line-height:2.1;word-wrap:break-word}
.cse-tok{position:relative;padding:2px 1px;border-radius:3px;margin:0 1px;white-space:pre;
text-decoration:none !important}
.cse-tok:hover{outline:2px solid #444}
.cse-sel{outline:3px solid #f5a623 !important}
.cse-tok .cse-tip{visibility:hidden;position:absolute;z-index:10;left:0;top:1.9em;background:#222;color:#fff;
  padding:4px 8px;border-radius:4px;font-size:12px;white-space:pre;line-height:1.4;min-width:12em}
.cse-tok:hover .cse-tip{visibility:visible}
.cse-nl{color:#999}
</style>
"""


def display_token(text: str, show_newlines: bool = True) -> str:
    """Visible form of a token: newlines and tabs as escapes (optional), nothing else changed. Not escaped."""
    if show_newlines:
        text = text.replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r")
    return text


def token_strip(
    tokens: list[str],
    colours: list[str],
    tooltips: list[str],
    selected: int | None = None,
    link_params: dict | None = None,
    show_newlines: bool = True,
) -> str:
    """HTML for a strip of tokens. ``link_params`` (e.g. {"seq": 3, "head": "10.7"}) makes each token a link
    to ``?...&pos=i`` (a deep link; ``data-pos`` lets the page's strip component select it without a reload).
    All token text and tooltips are HTML-escaped."""
    parts = [CSS, '<div class="cse-strip">']
    for i, (tok, colour, tip) in enumerate(zip(tokens, colours, tooltips)):
        cls = "cse-tok cse-sel" if i == selected else "cse-tok"
        style = f"background:{html.escape(colour)};color:{text_colour(colour)}"
        body = html.escape(display_token(tok, show_newlines)) or "&nbsp;"
        tip_html = f'<span class="cse-tip">{html.escape(tip)}</span>'
        if link_params is not None:
            href = "?" + urlencode({**link_params, "pos": i})
            parts.append(
                f'<a class="{cls}" style="{style}" href="{html.escape(href)}" target="_self" data-pos="{i}">'
                f"{body}{tip_html}</a>"
            )
        else:
            parts.append(f'<span class="{cls}" style="{style}">{body}{tip_html}</span>')
        if show_newlines is False and "\n" in tok:
            parts.append("<br>")
    parts.append("</div>")
    return "".join(parts)
