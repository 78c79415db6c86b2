"""``app.live_model.warm``: a set's model starts loading in the background when the set is opened, the first
analysis waits only for the rest of that same load, a failed load is tried again, and at most MAX_MODELS loads
are held."""

import threading
import types

import pytest

TIER = "fast"  # this file's test tier (tests/conftest.py); a test marked otherwise is in that tier


@pytest.fixture
def fresh(monkeypatch):
    from app import live_model

    monkeypatch.setenv("CSE_WARM_MODEL", "1")  # the suite turns it off elsewhere (tests/conftest.py)
    monkeypatch.setattr(live_model, "_LOADS", type(live_model._LOADS)())
    live_model._model.clear()
    yield live_model
    live_model._model.clear()


def _arts(name):
    return types.SimpleNamespace(model_name=name)  # what the live layer reads of a set: its model


def test_warm_starts_one_load_that_the_first_use_waits_for(fresh, monkeypatch):
    import precompute.models.loading as loading
    from precompute.models.loading import load_model

    toy = load_model("toy")
    gate, calls = threading.Event(), []

    def slow_load(name, device="cpu"):
        calls.append(name)
        gate.wait(30)
        return toy

    monkeypatch.setattr(loading, "load_model", slow_load)
    fresh.warm(_arts("toy"))
    fresh.warm(_arts("toy"))  # opened again while loading: still one load
    got = []
    user = threading.Thread(target=lambda: got.append(fresh._model("toy")))
    user.start()
    user.join(0.3)
    assert user.is_alive() and not got  # the first use waits for the load under way…
    gate.set()
    user.join(30)
    assert got[0].loaded is toy and calls == ["toy"]  # …and gets it, without a second load


def test_a_failed_load_is_not_kept_and_warm_can_be_turned_off(fresh, monkeypatch):
    import precompute.models.loading as loading
    from precompute.errors import ModelUnavailableError

    calls = []

    def failing(name, device="cpu"):
        calls.append(name)
        raise ModelUnavailableError("not here")

    monkeypatch.setattr(loading, "load_model", failing)
    fresh.warm(_arts("gpt2-small"))
    with pytest.raises(ModelUnavailableError, match="not here"):
        fresh._model("gpt2-small")
    assert "gpt2-small" not in fresh._LOADS
    with pytest.raises(ModelUnavailableError):
        fresh._model("gpt2-small")  # tried again
    assert calls == ["gpt2-small", "gpt2-small"]
    monkeypatch.setenv("CSE_WARM_MODEL", "0")
    fresh.warm(_arts("other"))
    assert "other" not in fresh._LOADS


def test_at_most_max_models_loads_are_held(fresh, monkeypatch):
    import precompute.models.loading as loading

    monkeypatch.setattr(loading, "load_model", lambda name, device="cpu": name)
    for name in ("a", "b", "c", "b"):
        fresh.warm(_arts(name))
    assert list(fresh._LOADS) == ["c", "b"]  # "a", the least recently opened, went first


def test_an_import_race_with_a_page_is_retried(fresh, monkeypatch):
    """transformers' lazy imports are not thread-safe: a background load that meets a page importing it at the same
    moment fails with ImportError once; the load is retried (and a load that keeps failing so says so)."""
    import precompute.models.loading as loading

    monkeypatch.setattr(fresh.time, "sleep", lambda s: None)
    calls = []

    def flaky(name, device="cpu"):
        calls.append(name)
        if len(calls) < 3:
            raise ImportError("cannot import name 'PreTrainedTokenizerFast' from 'transformers'")
        return "loaded"

    monkeypatch.setattr(loading, "load_model", flaky)
    assert fresh._load_retrying("toy") == "loaded" and len(calls) == 3
    monkeypatch.setattr(loading, "load_model", lambda name, device="cpu": (_ for _ in ()).throw(ImportError("x")))
    with pytest.raises(ImportError):
        fresh._load_retrying("toy")
