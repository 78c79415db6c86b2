"""A site ready to host: the Hugging Face Space's configuration, the app served from ``hf://user/repo@revision``
(the Hub stood in for by its own cache, offline, as in an image whose build pulled the artifacts), and every page
rendered in Chromium with no exception and no request off the machine (no font CDN, no remote icon)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from app.server import free_port, wait_healthy
from deploy.page_walk import ARGS, CHROMIUM

TIER = "fast"  # this file's test tier (tests/conftest.py); a test marked otherwise is in that tier

ROOT = Path(__file__).resolve().parents[1]
SPACE = ROOT / "deploy" / "hf-space" / "README.md"


def _front_matter(path: Path) -> dict:
    import yaml

    text = path.read_text()
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n", 2)[1])


def test_the_space_config_parses_and_matches_the_image():
    meta = _front_matter(SPACE)
    assert meta["sdk"] == "docker" and meta["app_port"] == 7860
    assert {"title", "emoji", "colorFrom", "colorTo", "license"} <= set(meta)
    assert len(meta["short_description"]) <= 60  # the Hub's limit
    text = SPACE.read_text()
    # the variables the Space must set: the port it listens on, the pinned artifacts
    assert f"| `PORT` | `{meta['app_port']}` |" in text and "| `ARTIFACTS` | `hf://USER/NAME@REVISION` |" in text
    docker = (ROOT / "Dockerfile").read_text()
    final = docker.split("# ---- the image ----", 1)[1]
    for arg in ("ARG PORT=8501", "ARG ARTIFACTS", "ARG BAKE_GPT2"):
        assert arg in final  # a Space's variables reach the build as build arguments
    assert "PORT=${PORT}" in final and "CSE_ARTIFACTS=${ARTIFACTS}" in final
    assert "org.opencontainers.image.title" in final and "org.opencontainers.image.licenses" in final


def test_the_readme_says_how_to_publish():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Publishing the site", 1)[1].split("\n## ", 1)[0]
    for needed in ("python -m precompute push", "deploy/hf-space/README.md", "app/requirements.txt", "hf://"):
        assert needed in section


def _launch(args: list[str], env: dict, log: Path):
    """``python -m app.launch`` (the image's entry point) on a free port; yields its URL once healthy."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.launch", "--port", str(port), *args],
        cwd=ROOT,
        env={**os.environ, "HF_HUB_OFFLINE": "1", **env},
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    if wait_healthy(url, 60) is None:
        proc.kill()
        pytest.fail("the app did not start: " + log.read_text()[-2000:])
    return proc, url


def _hub_cache(artifacts: Path, home: Path, repo: str, revision: str) -> None:
    """``artifacts`` as the Hub's cache holds dataset ``repo`` at ``revision`` after a download."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    cached = home / "hub" / f"datasets--{repo.replace('/', '--')}"
    shutil.copytree(artifacts, cached / "snapshots" / commit)
    (cached / "refs").mkdir(parents=True)
    (cached / "refs" / revision).write_text(commit)


@pytest.mark.browser
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium is not installed")
def test_the_app_serves_hf_artifacts_from_the_hub_cache_in_chromium(toy_artifacts, tmp_path):
    from deploy.page_walk import walk

    _hub_cache(toy_artifacts, tmp_path / "hf", "user/cse-toy", "v1")
    # as a host sets it: CSE_ARTIFACTS in the environment (a Space's variable, a Cloud app's secret)
    env = {"HF_HOME": str(tmp_path / "hf"), "CSE_ARTIFACTS": "hf://user/cse-toy@v1"}
    proc, url = _launch([], env, tmp_path / "server.log")
    try:
        (home,) = walk(url, tmp_path / "shots", pages=["home"])
        assert home.ok, home
        from playwright.sync_api import sync_playwright

        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
            page = browser.new_page()
            page.goto(url)
            page.get_by_text("Loaded artifacts").first.click(timeout=60_000)
            source = page.get_by_text("hf://user/cse-toy@").first  # the sidebar names the source (literally:
            source.wait_for(timeout=30_000)  # a word joiner after the @ keeps it from becoming a mail link)
            assert source.inner_text().replace("\u2060", "").endswith("hf://user/cse-toy@v1")
            browser.close()
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.mark.browser
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium is not installed")
def test_every_page_renders_with_no_request_off_the_machine_in_chromium(toy_artifacts, tmp_path):
    from deploy.page_walk import page_paths, walk

    proc, url = _launch(["--artifacts", str(toy_artifacts)], {}, tmp_path / "server.log")
    try:
        visits = walk(url, tmp_path / "shots")
    finally:
        proc.terminate()
        proc.wait(10)
    assert [v.name for v in visits] == list(page_paths())
    for v in visits:
        assert v.title_seen and not v.exceptions, v
        assert v.off_machine == [], v  # e.g. a Material favicon from a font CDN
    assert "Traceback" not in (tmp_path / "server.log").read_text()


def test_off_machine_means_any_host_but_this_one():
    from deploy.page_walk import off_machine

    assert off_machine("https://fonts.gstatic.com/s/i/short-term/release/materialsymbolsrounded/x/24px.svg")
    assert off_machine("wss://example.org/_stcore/stream")
    assert not off_machine("http://127.0.0.1:8501/_stcore/health")
    assert not off_machine("ws://localhost:8501/_stcore/stream")
    assert not off_machine("data:image/png;base64,AAAA") and not off_machine("blob:http://127.0.0.1/x")
