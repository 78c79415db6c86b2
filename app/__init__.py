"""The Streamlit app: pages over the artifacts, and the live model (the only package that imports Streamlit)."""

from precompute.models.memory import prepare_environment, tune_allocator

prepare_environment()  # before anything here imports torch: no MKL buffer cache in the long-running server
tune_allocator()  # before the server's threads make arenas of their own (models/memory.py)
