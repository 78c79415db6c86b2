"""Running the app in tests: the AppTest runner and its text, and the real server for browser tests."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from app.server import free_port, server_command, wait_healthy

ROOT = Path(__file__).resolve().parents[1]


def _serve(artifacts, log: Path | None = None):
    """The app on a free port; the server's output goes to ``log`` when given (to check it logged no error)."""
    port = free_port()
    # the server as users run it: opening a set starts its model's load in the background (the suite turns that
    # off in its own process, tests/conftest.py)
    env = {**os.environ, "CSE_ARTIFACTS": str(artifacts), "HF_HUB_OFFLINE": "1", "CSE_WARM_MODEL": "1"}
    proc = subprocess.Popen(
        server_command(port),
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL if log is None else log.open("w"),
        stderr=subprocess.STDOUT if log is not None else subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    if wait_healthy(url, 60) is None:
        proc.kill()
        pytest.fail("streamlit did not start")
    yield url
    proc.terminate()
    proc.wait(10)


APP = str(Path(__file__).resolve().parents[1] / "app" / "Home.py")


TIMEOUT = 120


def _run(page=None, query=None):
    """The app at ``page`` opened by a link with ``query`` (AppTest runs the default page first; the link's
    parameters arrive with the switch, as a page link's do)."""
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    if query and not page:
        at.query_params.update(query)
    at.run()
    if page:
        at.query_params.clear()
        at.query_params.update(query or {})
        at.switch_page(page)
        at.run()
    return at


def _text(at) -> str:
    """The page's text as a reader sees it (markdown backslash escapes of literal text removed)."""
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption] + [t.value for t in at.title]
    parts += [e.value for e in at.error] + [w.value for w in at.warning] + [i.value for i in at.info]
    return re.sub(r"\\([!-/:-@\[-`{-~])", r"\1", "\n".join(str(p) for p in parts)).replace("\u2060", "")


def strips(at) -> list[str]:
    """The HTML of every token strip on the page: Markdown strips (the live page) and the clickable strip
    component's (Browse), in page order."""
    import json

    out = []
    for el in at.main:
        if getattr(el, "type", None) == "bidi_component" and el.proto.component_name == "cse_token_strip":
            out.append(json.loads(el.proto.json))
        elif "cse-strip" in str(getattr(el, "value", "")):
            out.append(str(el.value))
    return out
