"""Every page of a running app in headless Chromium: does it render with no exception, how long until it settles,
and does it send any request off the machine (a font CDN, an icon, telemetry)? Shared by ``deploy.docker_check``,
the browser tests and the benchmarks, with the Chromium settings, a free port and the wait for a healthy server."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from app.server import free_port, wait_healthy  # noqa: F401 - the walk's callers take them from here too

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]"}
# Streamlit marks its root with the script's state: "running" while a run is in progress, then "notRunning"
SCRIPT_STATE = "() => document.querySelector('[data-testid=stApp]')?.getAttribute('data-test-script-state')"
# the heading a page shows, where it is not the page's title in the registry
HEADINGS = {"home": "Copy Suppression Explorer"}
EXCEPTION = '[data-testid="stException"]'
NOTICE = '[data-testid="stSpinner"], [data-testid="stProgress"]'
NETWORK_CHANGED = "ERR_NETWORK_CHANGED"
FIRST_TRY_S = 45.0  # a page whose requests the host's network change aborted is loaded again after this


@dataclass
class PageVisit:
    name: str
    url: str
    title_seen: bool = False
    exceptions: list[str] = field(default_factory=list)
    off_machine: list[str] = field(default_factory=list)
    settle_s: float = 0.0
    # the longest stretch in which the page's script was running with no spinner or progress bar on the page: a
    # wait the user is not told about
    silent_s: float = 0.0
    # loaded again once because Chromium aborted requests on a change of the host's network (docker adding a
    # container's interface: net::ERR_NETWORK_CHANGED), not because of the app
    reloaded: bool = False
    screenshot: str | None = None

    @property
    def ok(self) -> bool:
        return self.title_seen and not self.exceptions and not self.off_machine


def page_paths() -> dict[str, tuple[str, str]]:
    """name -> (URL path, heading) of every page in the app's registry (Home is /)."""
    from app.state.pages import PAGES

    return {
        name: ("" if name == "home" else spec.url_path, HEADINGS.get(name, spec.title)) for name, spec in PAGES.items()
    }


def off_machine(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in ("http", "https", "ws", "wss") and (parts.hostname or "") not in LOCAL_HOSTS


def walk(
    base_url: str,
    out_dir: Path | None = None,
    settle_timeout_s: float = 180.0,
    pages=None,
    queries: dict[str, str] | None = None,
) -> list[PageVisit]:
    """Visit each page (all by default) at ``base_url``, with its query string from ``queries`` if any (e.g. a
    prompt for the live page, analysed at once), wait until its script run is over (not running for a second, or
    ``settle_timeout_s``), and report exceptions shown, requests off the machine and a screenshot in ``out_dir``."""
    from playwright.sync_api import sync_playwright

    visits = []
    paths = page_paths()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        for name in pages or paths:
            path, title = paths[name]
            query = (queries or {}).get(name)
            visit = PageVisit(name, f"{base_url}/{path}" + (f"?{query}" if query else ""))
            ctx = browser.new_context(viewport={"width": 1400, "height": 1400})
            page = ctx.new_page()
            page.on("request", lambda req, v=visit: v.off_machine.append(req.url) if off_machine(req.url) else None)
            aborted: list[str] = []
            page.on("requestfailed", lambda req, a=aborted: a.append(req.failure or ""))
            start = time.monotonic()
            page.goto(visit.url)
            visit.title_seen = _heading(page, title, min(FIRST_TRY_S, settle_timeout_s))
            deadline = start + settle_timeout_s
            if not visit.title_seen and any(NETWORK_CHANGED in f for f in aborted):
                visit.reloaded = True
                page.reload()
                visit.title_seen = _heading(page, title, settle_timeout_s)
                deadline = time.monotonic() + settle_timeout_s
            visit.silent_s = round(_settle(page, deadline), 2)
            visit.settle_s = round(time.monotonic() - start, 2)
            visit.exceptions = [e.inner_text()[:300] for e in page.locator(EXCEPTION).all()]
            if out_dir is not None:
                out_dir.mkdir(parents=True, exist_ok=True)
                shot = out_dir / f"{name}.png"
                page.screenshot(path=str(shot), full_page=True)
                visit.screenshot = str(shot)
            ctx.close()
            visits.append(visit)
        browser.close()
    return visits


def _heading(page, title: str, timeout_s: float) -> bool:
    try:
        page.get_by_role("heading", name=title).first.wait_for(timeout=timeout_s * 1000)
        return True
    except Exception:  # noqa: BLE001 - a missing heading is reported, not raised
        return False


def _settle(page, deadline: float) -> float:
    """Until no script run has been in progress for a second (or the deadline). Returns the longest time the
    script ran with no spinner or progress bar shown."""
    quiet_since = silent_since = None
    longest_silent = 0.0
    while time.monotonic() < deadline:
        running = page.evaluate(SCRIPT_STATE) == "running"
        now = time.monotonic()
        if running and page.locator(NOTICE).count() == 0:
            silent_since = silent_since or now
            longest_silent = max(longest_silent, now - silent_since)
        else:
            silent_since = None
        if running:
            quiet_since = None
        elif quiet_since is None:
            quiet_since = now
        elif now - quiet_since >= 1.0:
            break
        page.wait_for_timeout(100)
    return longest_silent
