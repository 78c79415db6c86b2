"""The app's side of the model boundary: one ``LiveModel`` per model spec (loaded lazily, the first time a page
needs it; torch and TransformerLens import only then), and one ``LiveAnalyzer`` per artifact set on top of it.
Pages ask these for results; they never touch a hook or a lock."""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING

import streamlit as st

from precompute.errors import ExplorerError, InvalidInputError
from precompute.model_queue import DEFAULT_MAX_WAITING
from precompute.validate import whole_number

if TYPE_CHECKING:  # the type only: precompute.live imports torch
    from precompute.live import ModelBoundary

MAX_WAITING_LIMIT = 1000


def max_waiting() -> int:
    """How many analyses may wait for the shared model ($CSE_MAX_WAITING, default 8); one more is told "busy"."""
    raw = os.environ.get("CSE_MAX_WAITING", "").strip()
    if not raw:
        return DEFAULT_MAX_WAITING
    try:
        value = int(raw)
    except ValueError:
        raise InvalidInputError(f"CSE_MAX_WAITING must be a whole number, got {raw[:40]!r}") from None
    return whole_number("CSE_MAX_WAITING", value, MAX_WAITING_LIMIT, lo=0)


MAX_MODELS = 2  # models held in memory at once (the least recently opened goes first)
_LOADS: OrderedDict[str, Future] = OrderedDict()  # model name -> its load, started in the background
_LOADS_LOCK = threading.Lock()


def _load_in_background(model_name: str) -> Future:
    """The load of ``model_name``, started at most once (in a daemon thread, outside any page's run)."""
    with _LOADS_LOCK:
        fut = _LOADS.get(model_name)
        if fut is None:
            fut = Future()
            _LOADS[model_name] = fut

            def load() -> None:
                try:
                    fut.set_result(_load_retrying(model_name))
                except BaseException as err:  # noqa: BLE001 - handed to whoever waits on it, re-raised there
                    fut.set_exception(err)

            threading.Thread(target=load, name=f"load {model_name}", daemon=True).start()
            while len(_LOADS) > MAX_MODELS:
                _LOADS.popitem(last=False)
        _LOADS.move_to_end(model_name)
        return fut


IMPORT_RETRIES = 5


def _load_retrying(model_name: str):
    """``load_model`` in a thread beside a page's run: transformers' lazy imports are not thread-safe, so a page
    importing it at the same moment can make a ``from transformers import …`` fail once ("cannot import name");
    that is retried after a pause (any other error is raised at once)."""
    from precompute.models.loading import load_model

    for attempt in range(IMPORT_RETRIES):
        try:
            return load_model(model_name, device="cpu")
        except ImportError:
            if attempt == IMPORT_RETRIES - 1:
                raise
            time.sleep(1.0)
    raise AssertionError("unreachable")


def warm(arts) -> None:
    """Start loading the model of ``arts`` now, in the background, so that the first analysis waits only for
    what is left of the load (``CSE_WARM_MODEL=0`` turns this off: models then load at first use)."""
    if _BACKEND is not None or os.environ.get("CSE_WARM_MODEL", "1").strip().lower() in ("0", "false", "no"):
        return
    # what pages import from transformers, imported here first: its lazy imports are not thread-safe
    from transformers import PreTrainedTokenizerFast  # noqa: F401

    _load_in_background(arts.model_name)


_BACKEND: Callable[[str], ModelBoundary] | None = None  # tests: a fake model boundary instead of LiveModel


def use_backend(factory: Callable[[str], ModelBoundary] | None) -> None:
    """Tests: give the app ``factory(model_name)`` instead of loading models (None: the real ``LiveModel`` again);
    the cached models and analyzers are dropped either way."""
    global _BACKEND
    _BACKEND = factory
    _model.clear()
    _analyzer.clear()


@st.cache_resource(show_spinner="Loading the model (first use only)…", max_entries=MAX_MODELS)
def _model(model_name: str) -> ModelBoundary:
    """The ``LiveModel`` of ``model_name``, shared by every artifact set of that model and every session (its load
    may already be under way: ``warm``)."""
    from precompute.live import LiveModel

    if _BACKEND is not None:
        return _BACKEND(model_name)

    fut = _load_in_background(model_name)
    try:
        loaded = fut.result()
    except BaseException as err:  # noqa: BLE001 - re-raised below, or the load retried here
        with _LOADS_LOCK:  # a failed load is not kept: the next use tries again
            if _LOADS.get(model_name) is fut:
                del _LOADS[model_name]
        if not isinstance(err, ImportError):
            raise
        loaded = _load_retrying(model_name)  # an import race in the background: load here, in the page's run
    return LiveModel(loaded, max_waiting=max_waiting())


@st.cache_resource(show_spinner="Reading the artifacts' mean results…", max_entries=4)
def _analyzer(model_name: str, source: str):
    """A thread-safe LiveAnalyzer for the artifacts at ``source``, on their model's shared ``LiveModel``."""
    from app.state import open_source

    return _model(model_name).analyzer(open_source(source), max_cached=32)


def get_model(arts):
    """(the LiveModel of the model ``arts`` were made with, None) or (None, why it cannot be loaded)."""
    try:
        return _model(arts.model_name), None
    except ExplorerError as err:
        return None, str(err)


def get_analyzer(arts):
    """(the LiveAnalyzer for ``arts``, None) or (None, why there is none)."""
    try:
        return _analyzer(arts.model_name, arts.source), None
    except ExplorerError as err:
        return None, str(err)


def queue_notice():
    """An ``on_wait`` for the model's queue: while this session's analysis waits, a notice at this place on the
    page says how many are ahead of it; it goes when the analysis starts."""
    slot = st.empty()

    def on_wait(ahead: int) -> None:
        if ahead:
            slot.info(
                f"Queued: {ahead} {'analysis is' if ahead == 1 else 'analyses are'} ahead of yours on the shared "
                "model. It starts by itself.",
                icon=":material/hourglass_top:",
            )
        else:
            slot.empty()

    return on_wait
