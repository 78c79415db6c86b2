"""Every page's visible text at two checkouts, on the same artifact sets, in headless Chromium: a refactor that
must not change what researchers see shows "same" for every page (screenshots beside, to look at).

    python -m deploy.page_texts OLD_ROOT NEW_ROOT --artifacts DIR --sets toy-demo,smollm2-demo [--out /tmp/pages]

OLD_ROOT / NEW_ROOT: checkouts of the project (e.g. ``git worktree add /tmp/old <commit>``); each is served with its
own code (``app/Home.py`` puts its root first on the path)."""

from __future__ import annotations

import argparse
import difflib
import json
import os
import subprocess
import time
from pathlib import Path

from app.server import free_port, server_command, wait_healthy
from deploy.page_walk import ARGS, CHROMIUM, _heading, _settle, page_paths


def serve(root: Path, artifacts: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cmd = server_command(port, home=root / "app" / "Home.py")
    env = {**os.environ, "CSE_ARTIFACTS": str(artifacts), "HF_HUB_OFFLINE": "1", "CSE_WARM_MODEL": "0"}
    proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    if wait_healthy(url, 90) is None:
        proc.kill()
        raise SystemExit(f"the app at {root} did not start")
    return proc, url


def page_texts(url: str, sets: list[str], shots: Path, tag: str) -> dict[str, str]:
    """{"<set>/<page>": the page's main text} with a full-page screenshot of each in ``shots``."""
    from playwright.sync_api import sync_playwright

    texts = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        for name_of_set in sets:
            for name, (path, title) in page_paths().items():
                ctx = browser.new_context(viewport={"width": 1400, "height": 1400})
                page = ctx.new_page()
                page.goto(f"{url}/{path}?set={name_of_set}")
                _heading(page, title, 60)
                _settle(page, time.monotonic() + 120)
                texts[f"{name_of_set}/{name}"] = _stable_text(page)
                page.screenshot(path=str(shots / f"{tag}-{name_of_set}-{name}.png"), full_page=True)
                ctx.close()
        browser.close()
    return texts


def _stable_text(page, within_s: float = 30.0) -> str:
    """The page's main text once it reads the same twice a second apart (charts and fragments draw after the
    script run ends)."""
    main = page.locator('[data-testid="stMain"]')

    def read() -> str:
        return main.inner_text() if main.count() else page.inner_text("body")

    text, deadline = read(), time.monotonic() + within_s
    while time.monotonic() < deadline:
        time.sleep(1.0)
        again = read()
        if again == text:
            return text
        text = again
    return text


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m deploy.page_texts", description=__doc__.splitlines()[0])
    p.add_argument("old", type=Path)
    p.add_argument("new", type=Path)
    p.add_argument("--artifacts", type=Path, required=True)
    p.add_argument("--sets", required=True, help="artifact sets to open each page on, comma-separated")
    p.add_argument("--out", type=Path, default=Path("/tmp/page-texts"))
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    got = {}
    for tag, root in (("old", args.old), ("new", args.new)):
        proc, url = serve(root.resolve(), args.artifacts.resolve())
        try:
            got[tag] = page_texts(url, args.sets.split(","), args.out, tag)
        finally:
            proc.terminate()
            proc.wait(10)
    (args.out / "texts.json").write_text(json.dumps(got, indent=1))
    changed = 0
    for key, old in got["old"].items():
        diff = [
            line
            for line in difflib.unified_diff(old.splitlines(), got["new"].get(key, "").splitlines(), lineterm="", n=0)
            if not line.startswith(("---", "+++", "@@"))
        ]
        changed += bool(diff)
        print(f"{key}: {'same' if not diff else f'{len(diff)} lines differ'}")
        for line in diff[:12]:
            print("   ", line[:200])
    print(f"{len(got['old']) - changed} of {len(got['old'])} pages show the same text; screenshots in {args.out}")
    return 1 if changed else 0


if __name__ == "__main__":
    raise SystemExit(main())
