"""The app's server process, written once: the Streamlit command line the launcher, the tests, the benchmarks and
the page walk all start, a free local port, and the health check they wait on (no Streamlit imported here)."""

from __future__ import annotations

import socket
import sys
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

HOME = Path(__file__).resolve().parent / "Home.py"


def server_command(port: int, address: str = "127.0.0.1", app_args: Sequence[str] = (), home: Path = HOME) -> list[str]:
    """``streamlit run app/Home.py`` headless on ``address:port`` without usage statistics; ``app_args`` go to
    the app itself (after ``--``); ``home``: another checkout's ``app/Home.py`` (``deploy.page_texts``)."""
    cmd = [sys.executable, "-m", "streamlit", "run", str(home), "--server.port", str(port)]
    cmd += ["--server.address", address, "--server.headless", "true", "--browser.gatherUsageStats", "false"]
    return cmd + (["--", *app_args] if app_args else [])


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, within_s: float) -> float | None:
    """Seconds until the app at ``url`` answers ``/_stcore/health`` with ok, or None after ``within_s``."""
    start = time.monotonic()
    while time.monotonic() - start < within_s:
        try:
            if urllib.request.urlopen(url + "/_stcore/health", timeout=2).read() == b"ok":
                return time.monotonic() - start
        except OSError:
            time.sleep(0.2)
    return None
