"""Resident memory of a running Streamlit server: the artifacts' model (by default GPT-2-small-shaped; any set,
e.g. ``--artifacts artifacts/smollm2-demo``) loaded and one live analysis done, then after browsing 20 examples.
Drives the real app in Debian's Chromium (Playwright). The server gets the
environment ``python -m app.launch`` gives it (``memory.server_environment``).

    python -m benchmarks.bench_app_memory [--artifacts /tmp/cse-gpt2-random] [--limit-mib 1000]

``--limit-mib``: the same steps twice, side by side, each after page cache was dropped: in an unlimited memory
cgroup, then in one of that size, which like a container's limit counts page cache
(``benchmarks/memory_limit.py``; needs a writable cgroup tree).

Builds a small gpt2-small-random artifact set first if the folder has none (random weights: cost and memory do
not depend on them).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from app.server import free_port, server_command
from benchmarks.common import emit, peak_rss_mb, rss_mb, rss_parts_mb
from benchmarks.memory_limit import MemoryLimit
from deploy.page_walk import ARGS, CHROMIUM
from precompute.models.memory import server_environment

ROOT = Path(__file__).resolve().parents[1]
UNLIMITED_MIB = 2**20  # 1 TiB: a cgroup that only measures (its counters, its own page cache)


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--artifacts", default="/tmp/cse-gpt2-random")
    p.add_argument("--limit-mib", type=int, default=None, help="run the server under this memory limit (cgroup)")
    args = p.parse_args(argv)
    art = Path(args.artifacts)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    if not (art / "manifest.json").exists():
        t = time.time()
        subprocess.run(
            [
                sys.executable,
                "-m",
                "precompute",
                "run",
                "--model",
                "gpt2-small-random",
                "--heads",
                "10.7",
                "--dataset",
                "synthetic",
                "--n-seqs",
                "40",
                "--seq-len",
                "256",
                "--n-mean",
                "2",
                "--batch-size",
                "4",
                "--shard-size",
                "10",
                "--device",
                "cpu",
                "--out",
                str(art),
            ],
            cwd=ROOT,
            env=env,
            check=True,
        )
        print(f"built artifacts in {time.time() - t:.0f} s", flush=True)
    if args.limit_mib is None:
        emit("app_memory", _measure(art, env, None))
        return
    # side by side: the same steps without and with the limit, each after page cache was dropped
    with MemoryLimit(UNLIMITED_MIB) as unlimited:
        free = _measure(art, env, unlimited)
    with MemoryLimit(args.limit_mib) as limit:
        limited = _measure(art, env, limit)
    emit("app_memory_under_limit", {"unlimited": free, "limited": limited})


def _measure(art: Path, env: dict, limit: MemoryLimit | None) -> dict:
    import json

    manifest = json.loads((art / "manifest.json").read_text())
    head, model = manifest["heads"][0], manifest["model"]["model_name"]  # gpt2-small-random 10.7, or e.g. SmolLM2's
    port = free_port()
    proc = subprocess.Popen(
        server_command(port),
        cwd=ROOT,
        env=server_environment({**env, "CSE_ARTIFACTS": str(art)}),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=limit.enter if limit else None,
    )
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
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1400})

            def browse_20():
                for i in range(20):
                    page.goto(f"{url}/browse?seq={i}&pos=5&head={head}")
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
            page.get_by_role("textbox", name="Prompt").fill("The cat sat on the mat, and the cat slept. " * 6)
            t = time.time()
            page.get_by_role("button", name="Analyse").click()
            expect(page.locator(".cse-strip").first).to_contain_text("mat", timeout=300_000)
            second_s = time.time() - t
            browse_20()
            after_browse, peak_all = rss_mb(proc.pid), peak_rss_mb(proc.pid)
            browser.close()
    finally:
        proc.terminate()
        proc.wait(10)
    return {
        "model": model,
        "head": head,
        "server_rss_mb": {
            "idle_after_start": idle,
            "after_browsing_20_examples_no_model": browse_only,
            "after_model_load_and_one_live_analysis": after_live,
            "peak_until_then": peak_live,
            "after_browsing_20_more_examples": after_browse,
            "peak_overall": peak_all,
        },
        "split_after_model_load_and_one_live_analysis": parts_live,
        "browse_only_split": browse_parts,
        "first_live_analysis_s_incl_model_load": live_s,
        "second_live_analysis_s": second_s,
        "target_mb": 1000,
        "target_peak_mb": 1600,
        "memory_limit": limit.report() if limit else None,
    }


if __name__ == "__main__":
    main()
