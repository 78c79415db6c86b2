"""The Streamlit app: pages over the artifacts, and the live model (the only package that imports Streamlit)."""

from precompute.models.memory import prepare_environment, tune_allocator

prepare_environment()  # before anything here imports torch: no MKL buffer cache in the long-running server
# one arena for threads made from here on; `python -m app.launch` sets it for the whole process
# (memory.server_environment)
tune_allocator()
