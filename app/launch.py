"""``python -m app.launch``: start the app at once and, when there are no artifacts yet, build a demo set beside it.

With no artifacts (none configured with --artifacts / $CSE_ARTIFACTS and none under ``artifacts/``), a background
process builds a small set: GPT-2 small on a few hundred OpenWebText sequences where the Hugging Face Hub answers
within a second; otherwise, offline, the synthetic toy model on its own synthetic text (ready in seconds), then the
real trained SmolLM2-135M on real English (CPython's reference manual): its head survey, and a set for the head that
survey ranks as the strongest copy suppressor. The app is usable meanwhile: its pages show the build's progress
(``artifacts/.build-status.json``) and open the artifacts when they are ready. ``python -m app.launch --build-only``
builds in the foreground (the Docker image does this); ``--toy-only`` skips SmolLM2.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from app.discovery import DEFAULT_DIR, candidate_runs, write_status  # noqa: E402
from app.server import server_command  # noqa: E402
from precompute.jobs import demo  # noqa: E402 - needs ROOT on the path
from precompute.models.memory import server_environment  # noqa: E402

HUB = ("huggingface.co", 443)


def hub_reachable(timeout: float = 1.0) -> bool:
    """Whether the Hugging Face Hub answers at all, in about a second (no retries): the offline check."""
    if os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0"):
        return False
    try:
        with socket.create_connection(HUB, timeout=timeout):
            return True
    except OSError:
        return False


def _has_artifacts(configured: str | None) -> bool:
    return bool(configured) or bool(candidate_runs(DEFAULT_DIR))


def build_demo(out_dir: Path, prefer_real: bool = True, real_model: bool = True) -> Path:
    """Build the demo sets (``precompute.jobs.demo``), reporting progress to the status file the app reads. Online,
    GPT-2 small's set; offline, the toy set first (quick), then, with ``real_model``, SmolLM2's survey and a SmolLM2
    set for the head it ranks first."""
    from precompute.errors import ExplorerError

    def log(msg: str) -> None:
        print(msg, flush=True)

    def built(path: Path, start: float) -> None:
        log(f"Built {path} in {time.time() - start:.0f} s.")
        ready_line(path, log)

    if prefer_real and hub_reachable():
        try:
            start = time.time()
            path = demo.gpt2_set(out_dir, log, BuildStatus(out_dir))
            built(path, start)
            demo.toy_survey(out_dir, log, BuildStatus(out_dir))
            write_status(out_dir, state="done", path=str(path))
            return path
        except ExplorerError as err:
            log(f"GPT-2 small is not available here ({type(err).__name__}): {err}")
            with contextlib.suppress(OSError):  # leave no empty run folder behind
                (out_dir / "gpt2-demo").rmdir()
    else:
        os.environ["HF_HUB_OFFLINE"] = "1"  # nothing below may wait on the network
        log("The Hugging Face Hub is not reachable (checked in about a second): building the offline demo.")
    start = time.time()
    status = BuildStatus(out_dir)
    try:
        path = demo.toy_set(out_dir, reporting(out_dir, log, status), status)
    except Exception as err:
        write_status(out_dir, state="failed", error=f"{type(err).__name__}: {err}")
        raise
    built(path, start)
    demo.toy_survey(out_dir, log, status)
    if real_model:
        build_real_model(out_dir, "smollm2", log)
    write_status(out_dir, state="done", path=str(path))
    return path


URL_VAR = "CSE_APP_URL"  # the app's address, which the launcher gives its demo builder for the "ready" lines


class BuildStatus:
    """``status(**fields)`` for the demo job: the build status the app reads, ``what`` it makes (and ``ready`` once
    a first set exists); :func:`reporting` adds the latest line to ``current``."""

    def __init__(self, out_dir: Path):
        self.out_dir, self.current = out_dir, {}

    def __call__(self, **fields) -> None:
        self.current = dict(fields)
        write_status(self.out_dir, state="building", **fields)


def reporting(out_dir: Path, log, status: BuildStatus):
    """``log`` that also puts its latest line in the build status (``step``, at most one write a second), so the
    app shows the build's progress (heads done, time left) and not only which set it makes."""
    last = [0.0]

    def tell(msg: str) -> None:
        log(msg)
        now = time.monotonic()
        if now - last[0] >= 1.0:
            write_status(out_dir, state="building", **status.current, step=str(msg))
            last[0] = now

    return tell


def ready_line(path: Path, log=print) -> None:
    """One plain line saying a demo set is ready and the link that opens it (where the app's address is known)."""
    base = os.environ.get(URL_VAR)
    name = Path(path).name
    log(f"Ready: the set {name}" + (f", open {base.rstrip('/')}/?set={name}" if base else "") + ".")


def quiet_bars_off_terminal(environ) -> None:
    """No carriage-return progress bars (tqdm's, e.g. the GGUF conversion's) where the log is not a terminal."""
    if not sys.stderr.isatty():
        environ.setdefault("TQDM_DISABLE", "1")


def build_real_model(out_dir: Path, key: str, log=print) -> Path | None:
    """The real model ``key``'s survey and set (``precompute.jobs.demo.real_model_set``), its progress in the build
    status; a ready line once the set is there. Logged, never fatal."""
    status = BuildStatus(out_dir)
    path = demo.real_model_set(out_dir, key, reporting(out_dir, log, status), status)
    if path is not None:
        ready_line(path, log)
    return path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m app.launch", description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=int(os.environ.get("PORT", 8501)))
    p.add_argument("--address", default=os.environ.get("CSE_ADDRESS", "127.0.0.1"))
    p.add_argument(
        "--artifacts",
        default=os.environ.get("CSE_ARTIFACTS"),
        help="artifact folder, folder of runs, or hf://user/repo@revision",
    )
    p.add_argument("--offline-demo", action="store_true", help="build the toy demo without trying GPT-2 small")
    p.add_argument("--build-only", action="store_true", help="build the demo set (if none) and exit")
    p.add_argument("--toy-only", action="store_true", help="offline, build the toy demo only (no SmolLM2 set)")
    p.add_argument(
        "--gemma",
        action="store_true",
        help="opt-in (after `make install-gemma`): build Gemma 3 270M's survey and a set for the head it ranks "
        "first next to the demo sets, then exit (the Gemma Terms of Use travel with them)",
    )
    args = p.parse_args(argv)
    quiet_bars_off_terminal(os.environ)
    if args.gemma:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        return 0 if build_real_model(DEFAULT_DIR, "gemma3") is not None else 1
    os.environ[URL_VAR] = f"http://{args.address}:{args.port}"
    base = DEFAULT_DIR
    builder = None
    if not _has_artifacts(args.artifacts):
        if args.build_only:
            build_demo(base, prefer_real=not args.offline_demo, real_model=not args.toy_only)
            return 0
        cmd = [sys.executable, "-m", "app.launch", "--build-only"] + (["--offline-demo"] if args.offline_demo else [])
        cmd += ["--toy-only"] if args.toy_only else []
        builder = subprocess.Popen(cmd, cwd=ROOT)
        write_status(base, state="building", what="the demo artifact set", pid=builder.pid)
        print("No artifacts yet: building a demo set in the background; the app shows its progress.", flush=True)
    elif args.build_only:
        return 0
    cmd = server_command(args.port, args.address, ["--artifacts", args.artifacts] if args.artifacts else ())
    print(f"Starting the app on http://{args.address}:{args.port}", flush=True)
    server = subprocess.Popen(cmd, cwd=ROOT, env=server_environment(os.environ))
    return supervise(server, builder)


# how long the server and a build get to exit after SIGTERM before they are killed: `docker stop` must end within
# 2 s, and that includes the container's teardown (about 0.4 s); with a model loaded, Streamlit alone can take
# longer than 1.5 s to exit (`make docker-check` measured docker stop at 1.91 s and over 2 s with a 1.5 s grace)
STOP_GRACE_S = 1.0


def supervise(server: subprocess.Popen, builder: subprocess.Popen | None, grace_s: float = STOP_GRACE_S) -> int:
    """Wait for the server; reap the demo builder when it finishes (no ``<defunct>`` process for the app's life);
    on SIGTERM or SIGINT (``docker stop``, Ctrl-C) pass the signal on to the server and a running build, give them
    ``grace_s`` to exit, kill what is left, and return 0. Returns the server's exit code when it stops by itself."""
    stop: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, frame: stop.append(signum)) for sig in STOP_SIGNALS}
    try:
        while not stop:
            if builder is not None and builder.poll() is not None:
                builder = None  # finished and reaped
            try:
                code = server.wait(timeout=0.2)
            except subprocess.TimeoutExpired:
                continue
            return code
        children = [p for p in (server, builder) if p is not None and p.poll() is None]
        for p in children:
            p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for p in children:
            try:
                p.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if builder is not None and builder.poll() is None:  # the server stopped by itself: no orphaned build
            builder.terminate()
            builder.wait()


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


if __name__ == "__main__":
    sys.exit(main())
