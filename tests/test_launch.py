"""The first start: the launcher's offline check, the demo build and its status on the page, and the toy fallback
when GPT-2 cannot load."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

from streamlit.testing.v1 import AppTest

from .app_helpers import APP, TIMEOUT, _text

TIER = "model"  # this file's test tier (tests/conftest.py); a test marked otherwise is in that tier


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
    assert "Now:" not in _text(at)
    # the build's latest progress line, as literal text (a link-like or markdown string stays as it is)
    discovery.write_status(
        tmp_path, state="building", what="the SYNTHETIC toy model", step="survey: heads 9/270 · 12 % · *x* http://e.x"
    )
    at.run()
    assert "Now: survey: heads 9/270 · 12 % · *x* http" in _text(at).replace("\\", "").replace("\u2060", "")
    status = json.loads((tmp_path / discovery.STATUS).read_text())
    status["pid"] = 2**22 + 12345  # no such process
    (tmp_path / discovery.STATUS).write_text(json.dumps(status))
    at.run()
    assert "build process stopped" in _text(at)


def test_build_only_writes_a_demo_and_a_done_status(tmp_path, monkeypatch):
    from app import discovery, launch
    from precompute.jobs import demo

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(demo, "TOY_DEMO", {**demo.TOY_DEMO, "n_seqs": 8, "n_mean": 8, "shard_size": 8, "seq_len": 32})
    path = launch.build_demo(tmp_path, prefer_real=True, real_model=False)
    assert (Path(path) / "manifest.json").exists()
    assert discovery.read_status(tmp_path)["state"] == "done"
    assert os.environ["HF_HUB_OFFLINE"] == "1"


def test_reporting_log_puts_its_latest_line_in_the_status_at_most_once_a_second(tmp_path, monkeypatch):
    from app import discovery, launch

    clock = [100.0]
    monkeypatch.setattr(launch.time, "monotonic", lambda: clock[0])
    printed = []
    status = launch.BuildStatus(tmp_path)
    status(what="a survey", ready=True)  # what the demo job says it makes
    tell = launch.reporting(tmp_path, printed.append, status)
    tell("heads 9/270")
    tell("heads 18/270")  # the same second: printed, not written
    assert printed == ["heads 9/270", "heads 18/270"]
    status = discovery.read_status(tmp_path)
    assert (status["step"], status["what"], status["ready"], status["state"]) == (
        "heads 9/270",
        "a survey",
        True,
        "building",
    )
    clock[0] += 1.5
    tell("heads 27/270")
    assert discovery.read_status(tmp_path)["step"] == "heads 27/270"


def test_launch_falls_back_to_the_toy_when_gpt2_cannot_load(tmp_path, monkeypatch):
    import precompute.jobs.pipeline as pipeline
    from app import discovery, launch
    from precompute import ModelUnavailableError
    from precompute.jobs import demo

    monkeypatch.setattr(launch, "hub_reachable", lambda timeout=1.0: True)
    monkeypatch.setattr(demo, "TOY_DEMO", {**demo.TOY_DEMO, "n_seqs": 8, "n_mean": 8, "shard_size": 8, "seq_len": 32})
    real = pipeline.load_model

    def load(name, device="cpu"):
        if name == "gpt2-small":
            raise ModelUnavailableError("no GPT-2 here")
        return real(name, device=device)

    monkeypatch.setattr(pipeline, "load_model", load)
    path = launch.build_demo(tmp_path, prefer_real=True, real_model=False)
    assert Path(path).name == "toy-demo" and not (tmp_path / "gpt2-demo").exists()
    assert discovery.read_status(tmp_path)["state"] == "done"


SUPERVISED = """
import os, signal, subprocess, sys, threading, time
from app.launch import supervise
builder = subprocess.Popen([sys.executable, "-c", "pass"])  # a build that finishes at once
server = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
def later():
    time.sleep(1.5)
    stat = f"/proc/{builder.pid}/stat"
    print("builder", open(stat).read().split()[2] if os.path.exists(stat) else "reaped", flush=True)
    os.kill(os.getpid(), signal.SIGTERM)
threading.Thread(target=later, daemon=True).start()
code = supervise(server, builder)
print("code", code, "server stopped", server.poll() is not None, "by signal", -server.returncode)
"""


def test_the_launcher_reaps_its_builder_and_passes_sigterm_on():
    """A finished demo build is reaped (no <defunct> process for the app's life); SIGTERM is passed on to the server
    (which dies of that very signal, not of a kill after the grace period) and the launcher returns 0."""
    import re
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", SUPERVISED], cwd=root, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "builder reaped" in out.stdout, out.stdout
    code, stopped, by = re.search(r"code (\d+) server stopped (\w+) by signal (\d+)", out.stdout).groups()
    assert code == "0" and stopped == "True" and int(by) == signal.SIGTERM


def test_sigterm_stops_the_launched_app_and_frees_its_port(toy_artifacts):
    """``python -m app.launch`` as ``docker stop`` meets it: SIGTERM to the launcher ends it cleanly (exit 0) and its
    Streamlit server with it (the port is free again). How long that takes is measured by ``make docker-check``
    (docker stop, BENCHMARKS.md), not asserted here."""
    import signal
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    root = Path(__file__).resolve().parents[1]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "app.launch", "--artifacts", str(toy_artifacts), "--port", str(port)]
    proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2).read() == b"ok":
                    break
            except OSError:
                time.sleep(0.3)
        else:
            raise AssertionError("the app did not start")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0  # nothing listens: the server is gone too
    finally:
        if proc.poll() is None:
            proc.kill()


def test_ready_lines_name_the_set_and_its_link_and_logs_get_no_carriage_return_bars(tmp_path, monkeypatch):
    import subprocess
    import sys

    from app import launch

    lines = []
    monkeypatch.setenv(launch.URL_VAR, "http://127.0.0.1:8501")
    launch.ready_line(tmp_path / "smollm2-demo", lines.append)
    assert lines == ["Ready: the set smollm2-demo, open http://127.0.0.1:8501/?set=smollm2-demo."]
    monkeypatch.delenv(launch.URL_VAR)
    launch.ready_line(tmp_path / "toy-demo", lines.append)
    assert lines[-1] == "Ready: the set toy-demo."
    env: dict[str, str] = {}
    launch.quiet_bars_off_terminal(env)  # pytest's stderr is not a terminal
    assert env == {"TQDM_DISABLE": "1"}
    # what that does to a third-party bar (transformers' GGUF conversion uses a plain tqdm)
    code = "from tqdm.auto import tqdm\nfor _ in tqdm(range(3), desc='Converting'): pass"
    for extra, bar in (({}, True), (env, False)):
        err = subprocess.run(
            [sys.executable, "-c", code],
            env={**{k: v for k, v in os.environ.items() if k != "TQDM_DISABLE"}, **extra},
            capture_output=True,
            check=True,
        ).stderr
        assert (b"\r" in err) is bar, err


def test_the_demo_job_builds_the_toy_set_from_the_command_line(tmp_path, monkeypatch, capsys):
    """``python -m precompute demo toy``: the recipe the launcher uses, in-process (its arguments checked too)."""
    import pytest

    from precompute.jobs import demo
    from precompute.jobs.cli import main

    monkeypatch.setattr(demo, "TOY_DEMO", {**demo.TOY_DEMO, "n_seqs": 8, "n_mean": 8, "shard_size": 8, "seq_len": 32})
    monkeypatch.setattr(demo, "TOY_SURVEY", {**demo.TOY_SURVEY, "n_seqs": 4, "seq_len": 24, "n_mean": 4})
    assert main(["demo", "toy", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"Built {tmp_path / 'toy-demo'}" in out and "Building the SYNTHETIC toy model" in out
    assert (tmp_path / "toy-demo" / "manifest.json").exists() and (tmp_path / "survey-toy").is_dir()
    with pytest.raises(SystemExit):
        main(["demo", "no-such-demo"])
    assert "invalid choice: 'no-such-demo'" in capsys.readouterr().err
