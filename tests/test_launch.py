"""The first start: the launcher's offline check, the demo build and its status on the page, and the toy fallback
when GPT-2 cannot load."""

from __future__ import annotations

import json
import os
from pathlib import Path

from streamlit.testing.v1 import AppTest

from .test_app import APP, TIMEOUT, _text


# first start: the offline check takes about a second, with no retries; the page shows the build's progress
def test_offline_check_is_fast(monkeypatch):
    from app import launch

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert launch.hub_reachable() is False
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(launch, "HUB", ("127.0.0.1", 9))  # nothing listens there: refused at once
    assert launch.hub_reachable(timeout=1.0) is False


def test_page_shows_the_build_progress_then_a_dead_build(tmp_path, monkeypatch):
    from app import discovery, state

    monkeypatch.delenv("CSE_ARTIFACTS", raising=False)
    monkeypatch.setattr(state.artifacts, "DEFAULT_DIR", tmp_path)
    discovery.write_status(tmp_path, state="building", what="the SYNTHETIC toy model")
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.run()
    assert not at.exception
    assert "Building the SYNTHETIC toy model" in _text(at)
    status = json.loads((tmp_path / discovery.STATUS).read_text())
    status["pid"] = 2**22 + 12345  # no such process
    (tmp_path / discovery.STATUS).write_text(json.dumps(status))
    at.run()
    assert "build process stopped" in _text(at)


def test_build_only_writes_a_demo_and_a_done_status(tmp_path, monkeypatch):
    from app import discovery, launch

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(
        launch, "TOY_DEMO", {**launch.TOY_DEMO, "n_seqs": 8, "n_mean": 8, "shard_size": 8, "seq_len": 32}
    )
    path = launch.build_demo(tmp_path, prefer_real=True, real_model=False)
    assert (Path(path) / "manifest.json").exists()
    assert discovery.read_status(tmp_path)["state"] == "done"
    assert os.environ["HF_HUB_OFFLINE"] == "1"


def test_launch_falls_back_to_the_toy_when_gpt2_cannot_load(tmp_path, monkeypatch):
    import precompute.jobs.pipeline as pipeline
    from app import discovery, launch
    from precompute import ModelUnavailableError

    monkeypatch.setattr(launch, "hub_reachable", lambda timeout=1.0: True)
    monkeypatch.setattr(
        launch, "TOY_DEMO", {**launch.TOY_DEMO, "n_seqs": 8, "n_mean": 8, "shard_size": 8, "seq_len": 32}
    )
    real = pipeline.load_model

    def load(name, device="cpu"):
        if name == "gpt2-small":
            raise ModelUnavailableError("no GPT-2 here")
        return real(name, device=device)

    monkeypatch.setattr(pipeline, "load_model", load)
    path = launch.build_demo(tmp_path, prefer_real=True, real_model=False)
    assert Path(path).name == "toy-demo" and not (tmp_path / "gpt2-demo").exists()
    assert discovery.read_status(tmp_path)["state"] == "done"
