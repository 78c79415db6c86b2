"""Which artifacts the app shows: a local folder (picker if several) or hf://user/repo@rev, opened once per
process; the frame puts the chosen set in the session (``choose``) and every page reads it from here
(``page_artifacts`` / ``chosen``), never by a session key of its own."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import streamlit as st

from app import discovery
from app.render.text import literal
from app.state.labels import dataset_label, model_label
from app.state.url import carry, mapped, publish, restore
from precompute.errors import ExplorerError
from precompute.store.reader import Artifacts, open_artifacts

DEFAULT_DIR = discovery.DEFAULT_DIR
ENV_VAR = "CSE_ARTIFACTS"
_ARTS, _ARTS_ERROR = "cse_arts", "cse_arts_error"  # session keys: the set the frame chose, or why it failed
SET_KEY = "artifact_source"  # session key of the sidebar's Artifact set (a source), bound to ?set=


def configured_source() -> str | None:
    """``--artifacts X`` after ``--`` on the streamlit command line, else $CSE_ARTIFACTS, else None."""
    argv = sys.argv[1:]
    for i, arg in enumerate(argv):
        if arg == "--artifacts" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--artifacts="):
            return arg.split("=", 1)[1]
    return os.environ.get(ENV_VAR) or None


def default_dir() -> Path:
    """The app's own artifacts folder (where the launcher builds the demo sets)."""
    return DEFAULT_DIR


def candidate_runs(base: Path | None = None) -> list[str]:
    """``discovery.candidate_runs`` under ``base``, by default this app's artifacts folder."""
    return discovery.candidate_runs(DEFAULT_DIR if base is None else base)


@st.cache_resource(max_entries=4, show_spinner="Opening artifacts…")
def open_source(source: str) -> Artifacts:
    """The artifacts at ``source`` (a folder or hf://…), opened once per process and shared by every session."""
    return open_artifacts(source)


def sources() -> list[str]:
    configured = configured_source()
    if configured:
        base = Path(configured).expanduser()
        if not configured.startswith("hf://") and base.is_dir() and not (base / "manifest.json").exists():
            return candidate_runs(base)  # a folder of runs
        return [configured]
    return candidate_runs()


def set_name(source: str) -> str:
    """The name a URL gives the set at ``source`` (``?set=smollm2-demo``): its folder's name, or the hf:// text."""
    return source if source.startswith("hf://") else Path(source).name


def current() -> tuple[Artifacts | None, str | None]:
    """(artifacts, error message). Draws the picker in the sidebar when there are several sources; the chosen set
    is read from and written to ``?set=``, and every in-app link carries it (``url.carried``)."""
    options = sources()
    if not options:
        return None, None
    names = {set_name(s): s for s in options}
    restore("set", SET_KEY, mapped(names))
    if st.session_state.get(SET_KEY) not in options:
        st.session_state[SET_KEY] = options[0]
    if len(options) > 1:
        source = st.sidebar.selectbox("Artifact set", options, key=SET_KEY, format_func=set_name)
    else:
        source = st.session_state[SET_KEY]
    publish({"set": (SET_KEY, set_name(source))})
    carry("set", set_name(source))
    try:
        return open_source(source), None
    except ExplorerError as err:
        return None, f"Could not open the artifacts at {literal(source)}: {literal(err)}"


def sidebar_info(arts: Artifacts) -> None:
    m = arts.manifest
    model = m["model"]
    label = model_label(model)
    with st.sidebar.expander("Loaded artifacts", expanded=False):
        st.markdown(
            f"- **Model:** {literal(label)}\n- **Heads:** {literal(', '.join(m['heads']))}\n"
            f"- **Dataset:** {literal(dataset_label(m['dataset']))} (seed {literal(m['dataset'].get('seed', '?'))})\n"
            f"- **Sequences:** {arts.n_sequences} × {arts.seq_len} tokens\n"
            f"- **Source:** {literal(arts.source)}\n- **Schema:** v{m['schema_version']}, "
            f"TransformerLens {literal(model.get('transformer_lens_version', '?'))}"
        )
    gguf = model.get("gguf") if isinstance(model.get("gguf"), dict) else {}
    if gguf.get("notice"):  # a licence that asks for its notice wherever its weights or derivatives go (Gemma)
        st.sidebar.info(
            f"{literal(gguf['notice'])}. These artifacts are derived from those weights; their folder holds the "
            "terms and the notice (licence/)."
        )
    if model.get("synthetic"):
        st.sidebar.warning(
            "These artifacts come from a **synthetic** model, not GPT-2. They demonstrate the tool; "
            "their numbers say nothing about GPT-2."
        )


@st.fragment(run_every=2)
def _build_progress() -> None:
    """While ``make run`` builds the demo set in the background: what it builds; the app opens it when done."""
    from app.discovery import builder_alive, read_status

    status = read_status(DEFAULT_DIR) or {}
    if status.get("state") == "done" or candidate_runs():
        st.rerun()
    if status.get("state") == "building" and not builder_alive(status):
        status = {"state": "failed", "error": "the build process stopped; run `make run` again"}
    if status.get("state") == "failed":
        st.error(f"Building the demo artifacts failed: {literal(status.get('error', '?'))}")
        return
    started = status.get("time")
    st.info(
        f"Building {literal(status.get('what', 'the demo artifacts'))}… This page opens them as soon as they "
        "are ready" + (f" (status updated {max(0, int(time.time() - started))} s ago)." if started else ".")
    )
    _step(status)


def _step(status: dict, where=st) -> None:
    """The build's latest progress line (what the command line prints), as literal text."""
    if status.get("step"):
        where.caption(f"Now: {literal(status['step'])}")


def building() -> dict | None:
    """The demo build's status while it is still running (another set or survey is on its way), else None. Only
    for the default artifacts folder, which the launcher builds into (not for a configured source)."""
    from app.discovery import builder_alive, read_status

    if configured_source():
        return None
    status = read_status(DEFAULT_DIR) or {}
    return status if status.get("state") == "building" and builder_alive(status) else None


def sidebar_build_note() -> None:
    """While the demo build still runs, a note in the sidebar saying what it is making and its latest progress line
    (refreshed every few seconds)."""
    if building() is not None:
        with st.sidebar:
            _sidebar_note()


@st.fragment(run_every=5)
def _sidebar_note() -> None:
    status = building()
    if status is None:
        return
    st.info(
        f"Still building: {literal(status.get('what', 'more demo artifacts'))}. New sets appear "
        "in the picker when they are ready."
    )
    _step(status)


@st.fragment(run_every=3)
def wait_for(count, current: int, what: str) -> None:
    """While the demo build runs: rerun the page once ``count()`` differs from ``current`` (something new was
    written), saying meanwhile that ``what`` is being built."""
    status = building()
    if count() != current or status is None:
        st.rerun()
    st.info(
        f"{what} The demo build is making it now: {literal(status.get('what', '…'))}. This page opens it as "
        "soon as it is ready."
    )
    _step(status)


def empty_state(error: str | None = None) -> None:
    """What to show when no artifacts can be opened: the build's progress, or the commands that make some."""
    from app.discovery import read_status

    if error:
        st.error(error)  # already literal (see current())
    # the launcher's build concerns the default folder only; a configured source that is empty is just empty
    if not configured_source() and (read_status(DEFAULT_DIR) or {}).get("state") in ("building", "failed"):
        _build_progress()
        return
    st.info("No artifacts found. Make a small set offline with the synthetic toy model (about a minute):")
    st.code(
        "python -m precompute run --model toy --dataset synthetic --n-seqs 200 --seq-len 128 --out artifacts/toy",
        language="bash",
    )
    st.markdown("Or, where the Hugging Face Hub is reachable (GPU recommended), the paper's setting:")
    st.code(
        "python -m precompute run --model gpt2-small --heads 10.7,11.10 --n-seqs 500 --seq-len 1000 "
        "--out artifacts/gpt2",
        language="bash",
    )
    st.markdown("Then reload this page, or start the app with `CSE_ARTIFACTS=PATH_OR_hf://user/repo@rev`.")


def choose() -> Artifacts | None:
    """The frame's part (``Home.py``, every run): open the chosen set (drawing the picker where there are several)
    and keep it, or why it failed, for this run's page."""
    arts, error = current()
    st.session_state[_ARTS], st.session_state[_ARTS_ERROR] = arts, error
    return arts


def chosen() -> tuple[Artifacts | None, str | None]:
    """(the artifacts the frame chose, or None; why they could not be opened, or None)."""
    return st.session_state.get(_ARTS), st.session_state.get(_ARTS_ERROR)


def page_artifacts() -> Artifacts:
    """The artifacts chosen in the frame, or the empty state and a stop."""
    arts, error = chosen()
    if arts is None:
        empty_state(error)
        st.stop()
    return arts


def page_tokenizer(arts: Artifacts):
    """The artifacts' tokenizer, or a message and a stop when it cannot be loaded."""
    try:
        return arts.tokenizer
    except ExplorerError as err:
        st.error(f"The artifacts' tokenizer cannot be used: {literal(err)}")
        st.stop()
