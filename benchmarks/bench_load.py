"""Many users at once: 1, 4 and 8 browser sessions (headless Chromium, one context each, all on 127.0.0.1) open
Test Your Own Examples, type a different prompt each and press Analyse at the same moment, against one server.

For every round it reports each user's latency (from pressing Analyse to the analysed token strip), whether the
user was told that the analysis was queued and behind how many, whether the result equals the single-user one
(every token's tooltip the same as when the prompt is analysed alone on a fresh server), and the server's RSS.
A last round runs 8 users against a queue bounded at 2 waiting (``CSE_MAX_WAITING=2``): the users beyond the bound
are told "busy" at once rather than waiting.

    python -m benchmarks.bench_load [--artifacts artifacts/smollm2-demo] [--users 1,4,8]

Prompts are the artifact set's own text (its first sequences, decoded), different for every user and round, so no
result comes from the live cache. The browsers share the server's cores: latencies are upper bounds.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

from app.server import free_port, server_command
from benchmarks.common import emit, rss_mb
from precompute.models.memory import server_environment

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking", "--disable-dev-shm-usage"]
MAX_USERS = 16
USER_TIMEOUT_S = 300
# records the largest "N ahead" the page ever showed, and whether it said "busy"
WATCH = """
window.__cse = {ahead: 0, busy: false};
new MutationObserver(() => {
  const text = document.body ? document.body.innerText : "";
  const m = text.match(/Queued: (\\d+) analys/);
  if (m) window.__cse.ahead = Math.max(window.__cse.ahead, parseInt(m[1]));
  if (text.includes("The model is busy")) window.__cse.busy = true;
}).observe(document, {subtree: true, childList: true, characterData: true});
"""


class Server:
    """The app on a free port (the launcher's server environment), its RSS sampled every 0.2 s."""

    def __init__(self, artifacts: Path, extra_env: dict | None = None):
        self.port = free_port()
        env = server_environment(
            {**os.environ, "HF_HUB_OFFLINE": "1", "CSE_ARTIFACTS": str(artifacts), **(extra_env or {})}
        )
        self.proc = subprocess.Popen(
            server_command(self.port), cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self.url = f"http://127.0.0.1:{self.port}"
        self.peak, self._stop = 0.0, threading.Event()
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                if urllib.request.urlopen(self.url + "/_stcore/health", timeout=2).read() == b"ok":
                    break
            except OSError:
                time.sleep(0.3)
        else:
            self.close()
            raise RuntimeError("the server did not start")
        threading.Thread(target=self._sample, daemon=True).start()

    def _sample(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, rss_mb(self.proc.pid))
            except OSError:
                return
            time.sleep(0.2)

    def rss(self) -> float:
        return rss_mb(self.proc.pid)

    def close(self) -> None:
        self._stop.set()
        self.proc.terminate()
        self.proc.wait(10)


async def _user(browser, url: str, prompt: str, ready: asyncio.Barrier) -> dict:
    """One user: opens the page, types ``prompt``, waits for the others (``ready``), presses Analyse at the same
    moment as they do; the latency runs from that press to the analysed token strip (or the "busy" message)."""
    from playwright.async_api import expect

    context = await browser.new_context(viewport={"width": 1400, "height": 1200})
    await context.add_init_script(WATCH)
    page = await context.new_page()
    out: dict = {"prompt_chars": len(prompt)}
    try:
        await page.goto(url + "/test-your-own")
        box = page.get_by_role("textbox", name="Prompt")
        await box.fill(prompt, timeout=USER_TIMEOUT_S * 1000)
        await ready.wait()
        start = time.perf_counter()
        await page.get_by_role("button", name="Analyse").click()
        strip = page.locator(".cse-strip").first
        busy = page.get_by_text("The model is busy")
        await expect(strip.or_(busy).first).to_be_visible(timeout=USER_TIMEOUT_S * 1000)
        out["latency_s"] = round(time.perf_counter() - start, 2)
        seen = await page.evaluate("() => window.__cse")
        out["told_ahead"], out["told_busy"] = seen["ahead"], seen["busy"] or await busy.count() > 0
        if not out["told_busy"]:
            out["tooltips"] = await strip.locator(".cse-tip").all_text_contents()
    except Exception as err:  # noqa: BLE001 - a failed user is a result of the benchmark, not its end
        out["error"] = f"{type(err).__name__}: {str(err)[:200]}"
    finally:
        await context.close()
    return out


async def _round(url: str, prompts: list[str]) -> list[dict]:
    """``len(prompts)`` users at once; or, for one prompt each, the single-user runs one after another."""
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            ready = asyncio.Barrier(len(prompts))
            return list(await asyncio.gather(*(_user(browser, url, p, ready) for p in prompts)))
        finally:
            await browser.close()


async def _one_by_one(url: str, prompts: list[str]) -> list[dict]:
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            return [await _user(browser, url, p, asyncio.Barrier(1)) for p in prompts]
        finally:
            await browser.close()


def _prompts(artifacts: Path, n: int, tokens: int) -> list[str]:
    """``n`` different prompts from the artifact set's own text: sequence i's first ``tokens`` tokens, decoded."""
    from precompute.store.reader import open_artifacts

    arts = open_artifacts(artifacts)
    if arts.n_sequences < n:
        raise SystemExit(f"{artifacts} has {arts.n_sequences} sequences; this benchmark needs {n}")
    tok = arts.tokenizer
    return [tok.decode(arts.tokens(i).tolist()[1 : tokens + 1]).strip() for i in range(n)]


def _toy_artifacts() -> Path:
    out = Path(tempfile.mkdtemp(prefix="cse-load-")) / "toy"
    cmd = [sys.executable, "-m", "precompute", "run", "--model", "toy", "--dataset", "synthetic", "--n-seqs", "40"]
    cmd += ["--seq-len", "128", "--device", "cpu", "--out", str(out)]
    subprocess.run(cmd, cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"}, check=True, stdout=subprocess.DEVNULL)
    return out


def _summary(users: list[dict], reference: dict[str, list[str]], prompts: list[str]) -> dict:
    done = [u for u in users if "latency_s" in u and not u["told_busy"]]
    lat = [u["latency_s"] for u in done]
    return {
        "users": len(users),
        "analysed": len(done),
        "told_busy": sum(bool(u.get("told_busy")) for u in users),
        "errors": [u["error"] for u in users if "error" in u],
        "latency_s": {"median": statistics.median(lat), "max": max(lat), "min": min(lat)} if lat else None,
        "told_queued": sum(u.get("told_ahead", 0) > 0 for u in users),
        "largest_ahead_shown": max((u.get("told_ahead", 0) for u in users), default=0),
        "equal_to_single_user": sum(u.get("tooltips") == reference[p] for u, p in zip(users, prompts) if u in done),
    }


def main(argv=None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--artifacts", default=None, help="an artifact set (default: a toy set built here)")
    p.add_argument("--users", default="1,4,8", help="comma list of concurrent users per round (at most 16)")
    p.add_argument("--tokens", type=int, default=48, help="tokens per prompt")
    args = p.parse_args(argv)
    rounds = [int(x) for x in args.users.split(",")]
    if not rounds or min(rounds) < 1 or max(rounds) > MAX_USERS:
        raise SystemExit(f"--users: between 1 and {MAX_USERS} per round")
    artifacts = Path(args.artifacts) if args.artifacts else _toy_artifacts()
    busy_users = max(rounds)
    prompts = _prompts(artifacts, 1 + sum(rounds) + busy_users, args.tokens)
    warm, rest = prompts[0], prompts[1:]
    per_round, at = [], 0
    for n in rounds:
        per_round.append(rest[at : at + n])
        at += n
    busy_prompts = rest[at : at + busy_users]

    # single-user references on a fresh server: every prompt alone, one after another
    server = Server(artifacts)
    try:
        alone = asyncio.run(_one_by_one(server.url, [warm, *rest]))
        reference = {q: u.get("tooltips") for q, u in zip([warm, *rest], alone)}
        single = [u["latency_s"] for u in alone[1:] if "latency_s" in u]
    finally:
        server.close()

    server = Server(artifacts)
    results = {}
    try:
        asyncio.run(_round(server.url, [warm]))  # the model loads: rounds measure a warm server
        results["rss_mb_model_loaded"] = round(server.rss(), 0)
        for n, qs in zip(rounds, per_round):
            users = asyncio.run(_round(server.url, qs))
            results[f"{n}_users"] = {**_summary(users, reference, qs), "server_rss_mb_after": round(server.rss(), 0)}
            print(n, "users:", results[f"{n}_users"], flush=True)
        results["server_rss_mb_peak"] = round(server.peak, 0)
    finally:
        server.close()

    server = Server(artifacts, {"CSE_MAX_WAITING": "2"})  # the bound: 1 running + 2 waiting, the rest told busy
    try:
        asyncio.run(_round(server.url, [warm]))
        users = asyncio.run(_round(server.url, busy_prompts))
        results[f"{busy_users}_users_queue_bounded_at_2"] = _summary(users, reference, busy_prompts)
    finally:
        server.close()
    emit(
        "load",
        {
            "artifacts": str(artifacts),
            "tokens_per_prompt": args.tokens,
            "single_user_latency_s": {"median": statistics.median(single), "max": max(single)} if single else None,
            **results,
        },
    )


if __name__ == "__main__":
    main()
