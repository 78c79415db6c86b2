"""The page registry: every page's script, title, icon and URL path in one table; ``Home.py`` builds the
``st.Page`` objects from it each run, and pages link to each other by name through ``link`` (never by path)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import streamlit as st

VIEWS = Path(__file__).resolve().parents[1] / "views"


@dataclass(frozen=True)
class PageSpec:
    script: str  # under app/views
    title: str
    icon: str
    url_path: str


PAGES = {
    "home": PageSpec("home.py", "Home", ":material/home:", "overview"),
    "circuits": PageSpec("circuits.py", "OV and QK circuits", ":material/hub:", "circuits"),
    "browse": PageSpec("browse.py", "Browse Examples", ":material/search:", "browse"),
    "live": PageSpec("live.py", "Test Your Own Examples", ":material/edit:", "test-your-own"),
    "cspa": PageSpec("cspa.py", "CSPA", ":material/scatter_plot:", "cspa"),
    "semantic": PageSpec("semantic.py", "Semantic similarity", ":material/join:", "semantic"),
    "pairs": PageSpec("pairs.py", "Prompt pairs", ":material/compare_arrows:", "pairs"),
    "survey": PageSpec("survey.py", "Head survey", ":material/grid_view:", "survey"),
}
_BUILT: dict[str, object] = {}  # name -> st.Page, as the frame last built them (the same for every session)


def build() -> list:
    """The ``st.Page`` objects of every page, home first (the default page, at /); kept for ``link``."""
    out = []
    for name, spec in PAGES.items():
        page = st.Page(
            VIEWS / spec.script, title=spec.title, icon=spec.icon, url_path=spec.url_path, default=name == "home"
        )
        _BUILT[name] = page
        out.append(page)
    return out


def page(name: str):
    """The ``st.Page`` of page ``name`` (its script path before the frame has built them, as under AppTest)."""
    return _BUILT.get(name) or f"views/{PAGES[name].script}"


def link(name: str, label: str | None = None, params: dict | None = None, container=None, icon: str | None = None):
    """A link to page ``name`` (with query parameters ``params``), in ``container`` (default: the page)."""
    from app.state.url import carried

    where = container if container is not None else st
    spec = PAGES[name]
    params = {**carried(), **(params or {})}  # the artifact set first, so a link can name another
    where.page_link(
        page(name),
        label=label or spec.title,
        icon=icon or spec.icon,
        query_params={k: str(v) for k, v in (params or {}).items()} or None,
    )
