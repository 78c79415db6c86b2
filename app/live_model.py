"""The shared model for live analysis: loaded lazily (torch and TransformerLens import only here), once."""

from __future__ import annotations

import streamlit as st

from precompute.errors import ExplorerError


@st.cache_resource(show_spinner="Loading the model (first use only)…", max_entries=2)
def analyzer(model_name: str, source: str):
    """A thread-safe LiveAnalyzer for the model the artifacts were made with, with their mean results."""
    from app.state import open_source
    from precompute.live import LiveAnalyzer
    from precompute.models.loading import load_model

    arts = open_source(source)
    loaded = load_model(model_name, device="cpu")
    return LiveAnalyzer.for_artifacts(loaded, arts, max_cached=32)


def get_analyzer(arts):
    """(analyzer, error message)."""
    name = arts.manifest["model"]["model_name"]
    try:
        return analyzer(name, arts.source), None
    except ExplorerError as err:
        return None, str(err)
