"""Resident memory of a running Streamlit server: GPT-2-small-shaped model loaded and one live analysis done,
then after browsing 20 examples. Drives the real app in Debian's Chromium (Playwright).

    python -m benchmarks.bench_app_memory [--artifacts /tmp/cse-gpt2-random]

Builds a small gpt2-small-random artifact set first if the folder has none (random weights: cost and memory do
not depend on them).
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from benchmarks.common import emit, peak_rss_mb, rss_mb, rss_parts_mb

ROOT = Path(__file__).resolve().parents[1]
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--artifacts", default="/tmp/cse-gpt2-random")
    args = p.parse_args(argv)
    art = Path(args.artifacts)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    if not (art / "manifest.json").exists():
        t = time.time()
        subprocess.run([sys.executable, "-m", "precompute", "run", "--model", "gpt2-small-random", "--heads", "10.7",
                        "--dataset", "synthetic", "--n-seqs", "40", "--seq-len", "256", "--n-mean", "2",
                        "--batch-size", "4", "--shard-size", "10", "--device", "cpu", "--out", str(art)],
                       cwd=ROOT, env=env, check=True)
        print(f"built artifacts in {time.time() - t:.0f} s", flush=True)
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", str(ROOT / "app" / "Home.py"),
                             "--server.headless", "true", "--server.port", str(port), "--server.address",
                             "127.0.0.1", "--browser.gatherUsageStats", "false"], cwd=ROOT,
                            env={**env, "CSE_ARTIFACTS": str(art)}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                if urllib.request.urlopen(url + "/_stcore/health", timeout=2).read() == b"ok":
                    break
            except OSError:
                time.sleep(0.3)
        idle = rss_mb(proc.pid)
        from playwright.sync_api import expect, sync_playwright

        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1400})

            def browse_20():
                for i in range(20):
                    page.goto(f"{url}/browse?seq={i}&pos=5&head=10.7")
                    expect(page.locator(".cse-strip").first).to_be_visible(timeout=120_000)
                time.sleep(1)

            browse_20()
            browse_only, browse_parts = rss_mb(proc.pid), rss_parts_mb(proc.pid)
            page.goto(url + "/test-your-own")
            expect(page.get_by_role("heading", name="Test Your Own Examples")).to_be_visible(timeout=120_000)
            page.get_by_role("textbox", name="Prompt").fill("All's fair in love and war. " * 8)
            t = time.time()
            page.get_by_role("button", name="Analyse").click()
            expect(page.locator(".cse-strip").first).to_be_visible(timeout=300_000)
            live_s = time.time() - t
            time.sleep(1)
            after_live, peak_live, parts_live = rss_mb(proc.pid), peak_rss_mb(proc.pid), rss_parts_mb(proc.pid)
            browse_20()
            after_browse, peak_all = rss_mb(proc.pid), peak_rss_mb(proc.pid)
            browser.close()
    finally:
        proc.terminate()
        proc.wait(10)
    emit("app_memory", {"model": "gpt2-small-random (GPT-2 small shape)", "server_rss_mb": {
        "idle_after_start": idle, "after_browsing_20_examples_no_model": browse_only,
        "after_model_load_and_one_live_analysis": after_live,
        "peak_until_then": peak_live, "after_browsing_20_more_examples": after_browse, "peak_overall": peak_all},
        "split_after_model_load_and_one_live_analysis": parts_live,
        "browse_only_split": browse_parts,
        "first_live_analysis_s_incl_model_load": live_s, "target_mb": 1000, "target_peak_mb": 1600})


if __name__ == "__main__":
    main()
