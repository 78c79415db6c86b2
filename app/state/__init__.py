"""The app's state layer: which artifacts are open (``artifacts``), how they are named (``labels``), the URL's
parameters (``url``), the page registry (``pages``) and each page's own session values (``session.page_state``).
Pages read shared state only through these functions."""

from app.state import pages, url
from app.state.artifacts import (
    ENV_VAR,
    building,
    candidate_runs,
    choose,
    chosen,
    configured_source,
    current,
    default_dir,
    empty_state,
    open_source,
    page_artifacts,
    page_tokenizer,
    set_name,
    sidebar_build_note,
    sidebar_info,
    sources,
    wait_for,
)
from app.state.labels import dataset_label, model_label, what_these_are
from app.state.session import page_state
from app.state.url import head_picker

__all__ = [
    "ENV_VAR",
    "building",
    "candidate_runs",
    "choose",
    "chosen",
    "configured_source",
    "current",
    "dataset_label",
    "default_dir",
    "empty_state",
    "head_picker",
    "model_label",
    "open_source",
    "page_state",
    "page_artifacts",
    "page_tokenizer",
    "set_name",
    "pages",
    "sidebar_build_note",
    "sidebar_info",
    "sources",
    "url",
    "wait_for",
    "what_these_are",
]
