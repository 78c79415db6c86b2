"""The URL half of the state layer: every query parameter a page reads (``seq``, ``pos``, ``head`` on every page,
and each page's own) goes through ``restore`` before its widget is drawn and ``publish`` after, so any page opens
from a deep link and a shared or reloaded URL shows what the reader saw. A bad value in a link gives one warning
(literal text) and is ignored; it never raises. This is the app's one URL mechanism.
"""

from __future__ import annotations

from collections.abc import Callable

import streamlit as st

from app.render.text import literal
from precompute import schema
from precompute.errors import ExplorerError
from precompute.schema import Head, head_key, parse_head

_SEEN = "_cse_url_seen"  # session key: {widget key: the URL text last applied to it or published from it}
_CARRIED = "_cse_url_carried"  # session key: {name: value} every in-app link carries (the artifact set)
MAX_SHOWN = 40  # characters of a bad value quoted back in a warning

Parsed = tuple[object, str | None]  # (value, None) or (None, why the link's value was ignored)


def _quoted(name: str, raw: str) -> str:
    text = raw if len(raw) <= MAX_SHOWN else raw[:MAX_SHOWN] + "…"
    return f"Ignored the link's {name}={literal(repr(text))}"


def whole(lo: int, hi: int) -> Callable[[str, str], Parsed]:
    """A parser for a whole number in [lo, hi]."""

    def parse(name: str, raw: str) -> Parsed:
        digits = raw.strip()
        if len(digits) > len(str(hi)) + 2:  # far above any valid value (and no 5,000-digit int() either)
            return None, f"{_quoted(name, raw)}: too long for a number between {lo} and {hi}."
        try:
            value = int(digits)
        except ValueError:
            return None, f"{_quoted(name, raw)}: not a whole number."
        if not lo <= value <= hi:
            return None, f"Ignored the link's {name}={value}: it must be between {lo} and {hi}."
        return value, None

    return parse


def choice(options) -> Callable[[str, str], Parsed]:
    """A parser for one of ``options`` (compared as text; the option itself is returned)."""
    by_text = {str(o): o for o in options}

    def parse(name: str, raw: str) -> Parsed:
        if raw in by_text:
            return by_text[raw], None
        shown = ", ".join(list(by_text)[:8]) + (", …" if len(by_text) > 8 else "")
        return None, f"{_quoted(name, raw)}: choose one of {literal(shown)}."

    return parse


def mapped(mapping: dict) -> Callable[[str, str], Parsed]:
    """A parser for one of ``mapping``'s keys (the short names a URL shows); the value is ``mapping[key]``."""

    def parse(name: str, raw: str) -> Parsed:
        if raw in mapping:
            return mapping[raw], None
        return None, f"{_quoted(name, raw)}: choose one of {literal(', '.join(mapping))}."

    return parse


def flag(name: str, raw: str) -> Parsed:
    if raw.lower() in ("true", "1", "yes", "on"):
        return True, None
    if raw.lower() in ("false", "0", "no", "off"):
        return False, None
    return None, f"{_quoted(name, raw)}: give true or false."


def text(limit: int) -> Callable[[str, str], Parsed]:
    """A parser for free text of at most ``limit`` characters (shown as literal text wherever it is shown)."""

    def parse(name: str, raw: str) -> Parsed:
        if len(raw) > limit:
            return None, f"{_quoted(name, raw)}: longer than {limit} characters."
        return raw, None

    return parse


def given(name: str) -> bool:
    """Whether the URL carries ``?name=`` (a page opened from a deep link)."""
    return name in st.query_params


def restore(name: str, key: str, parse: Callable[[str, str], Parsed]) -> None:
    """Before widget ``key`` is drawn: a ``?name=`` this session has not applied yet (a deep link, a reload, a page
    link) becomes the widget's value; a bad one is reported once and ignored."""
    raw = st.query_params.get(name)
    seen = st.session_state.setdefault(_SEEN, {})
    if raw is None or (seen.get(key) == raw and key in st.session_state):
        return
    seen[key] = raw
    value, problem = parse(name, str(raw))
    if problem:
        st.warning(problem)
    else:
        st.session_state[key] = value


def publish(values: dict[str, tuple[str, object]], defaults: dict[str, object] | None = None) -> None:
    """After the widgets: ``{name: (key, value)}`` into the URL (``?name=value``), so it can be shared; the session
    remembers each as applied, so a value the reader changes next is not overwritten by the old URL. A value equal
    to its entry in ``defaults`` leaves the URL (it is what the page shows without one)."""
    seen = st.session_state.setdefault(_SEEN, {})
    defaults = defaults or {}
    for name, (key, value) in values.items():
        if name in defaults and value == defaults[name]:
            seen.pop(key, None)
            if name in st.query_params:
                del st.query_params[name]
            continue
        raw = str(value).lower() if isinstance(value, bool) else str(value)
        seen[key] = raw
        if st.query_params.get(name) != raw:
            st.query_params[name] = raw


def carry(name: str, value: str) -> None:
    """Make every in-app link (page links, token links) carry ``?name=value`` from now on (the frame's ``set``)."""
    st.session_state.setdefault(_CARRIED, {})[name] = value


def carried() -> dict[str, str]:
    """The parameters every in-app link carries, so that a link never leaves the set its page shows."""
    return dict(st.session_state.get(_CARRIED, {}))


def remove(name: str) -> None:
    """``?name=`` out of the URL (a value that cannot travel in a link, e.g. a very long prompt)."""
    if name in st.query_params:
        del st.query_params[name]


def head_picker(arts, key: str, default: str | None = None, every_head: bool = False) -> Head:
    """The sidebar's head selector for ``arts``, restored from and published to ``?head=``: the set's heads, or
    with ``every_head`` every head of its model (the set's own marked and listed first)."""
    stored = list(arts.manifest["heads"])
    heads = every_head_stored_first(arts.manifest) if every_head else stored
    restore("head", key, _head_in(heads))
    if st.session_state.get(key) not in heads:
        st.session_state[key] = default if default in heads else heads[0]
    name = st.sidebar.selectbox(
        "Head",
        heads,
        key=key,
        format_func=(lambda h: f"{h} (stored in this set)" if h in stored else h) if every_head else str,
        help="Every head of the model; a head this set did not store gets its mean output from the set's text "
        "when first analysed."
        if every_head
        else None,
    )
    publish({"head": (key, name)})
    return parse_head(name)


def every_head_stored_first(manifest: dict) -> list[str]:
    """Every head of the set's model, the set's own first (the order the live page offers them in)."""
    stored = list(manifest["heads"])
    return stored + [h for h in all_heads(manifest) if h not in stored]


def all_heads(manifest: dict) -> list[str]:
    """Every head of the set's model ("L.H", layer by layer), from the shape its manifest records."""
    model = manifest.get("model", {})
    n_layers, n_heads = int(model.get("n_layers") or 0), int(model.get("n_heads") or 0)
    return schema.every_head(n_layers, n_heads)


def _head_in(heads: list[str]) -> Callable[[str, str], Parsed]:
    def parse(name: str, raw: str) -> Parsed:
        try:
            key = head_key(parse_head(raw))
        except ExplorerError:  # malformed text is just a bad link
            key = None
        if key in heads:
            return key, None
        shown = ", ".join(heads) if len(heads) <= 8 else f"{', '.join(heads[:4])}, …, {heads[-1]}"
        return None, f"{_quoted(name, raw)}: choose one of {literal(shown)}."

    return parse
