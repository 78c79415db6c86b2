"""The app's side of the model boundary: one ``LiveModel`` per model spec (loaded lazily, the first time a page
needs it; torch and TransformerLens import only then), and one ``LiveAnalyzer`` per artifact set on top of it.
Pages ask these for results; they never touch a hook or a lock."""

from __future__ import annotations

import streamlit as st

from precompute.errors import ExplorerError


@st.cache_resource(show_spinner="Loading the model (first use only)…", max_entries=2)
def _model(model_name: str):
    """The ``LiveModel`` of ``model_name``, shared by every artifact set of that model and every session."""
    from precompute.live import LiveModel
    from precompute.models.loading import load_model

    return LiveModel(load_model(model_name, device="cpu"))


@st.cache_resource(show_spinner="Reading the artifacts' mean results…", max_entries=4)
def _analyzer(model_name: str, source: str):
    """A thread-safe LiveAnalyzer for the artifacts at ``source``, on their model's shared ``LiveModel``."""
    from app.state import open_source

    return _model(model_name).analyzer(open_source(source), max_cached=32)


def get_model(arts):
    """(the LiveModel of the model ``arts`` were made with, None) or (None, why it cannot be loaded)."""
    try:
        return _model(arts.manifest["model"]["model_name"]), None
    except ExplorerError as err:
        return None, str(err)


def get_analyzer(arts):
    """(the LiveAnalyzer for ``arts``, None) or (None, why there is none)."""
    try:
        return _analyzer(arts.manifest["model"]["model_name"], arts.source), None
    except ExplorerError as err:
        return None, str(err)
