"""``python -m app.launch``: make sure there are artifacts to show, then start the Streamlit app.

With no artifacts (none configured with --artifacts / $CSE_ARTIFACTS and none under ``artifacts/``), it first
builds a small set: GPT-2 small on a few hundred OpenWebText sequences where the Hugging Face Hub is reachable,
otherwise the synthetic toy model on its own synthetic text. It says which, and shows progress.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

GPT2_DEMO = dict(model="gpt2-small", heads=((10, 7), (11, 10)), dataset="stas/openwebtext-10k", n_seqs=200,
                 seq_len=128, n_mean=50, batch_size=8, shard_size=50, seed=6)
TOY_DEMO = dict(model="toy", heads=((1, 2),), dataset="synthetic", n_seqs=300, seq_len=128, n_mean=100,
                batch_size=16, shard_size=100, seed=6)


def _has_artifacts(configured: str | None) -> bool:
    from app.state import candidate_runs

    if configured:
        return True
    return bool(candidate_runs(ROOT / "artifacts"))


def build_demo(out_dir: Path, prefer_real: bool = True) -> Path:
    from precompute.errors import ExplorerError
    from precompute.jobs.config import RunConfig
    from precompute.jobs.pipeline import run

    if prefer_real and os.environ.get("HF_HUB_OFFLINE", "") in ("", "0"):
        print("No artifacts yet: trying GPT-2 small on 200 OpenWebText sequences x 128 tokens "
              "(a few minutes on a CPU)…", flush=True)
        try:
            start = time.time()
            path = run(RunConfig(out=str(out_dir / "gpt2-demo"), device="auto", **GPT2_DEMO))
            print(f"Built {path} in {time.time() - start:.0f} s.", flush=True)
            return path
        except ExplorerError as err:
            kind = type(err).__name__.replace("Error", "").lower()
            print(f"GPT-2 small is not available here ({kind}: no network and no HF cache holding it).",
                  flush=True)
            try:
                (out_dir / "gpt2-demo").rmdir()  # leave no empty run folder behind
            except OSError:
                pass
    print("Building the offline demo: the SYNTHETIC toy model on its own synthetic text, 300 sequences x 128 "
          "tokens (about a minute)…", flush=True)
    start = time.time()
    path = run(RunConfig(out=str(out_dir / "toy-demo"), device="cpu", **TOY_DEMO))
    print(f"Built {path} in {time.time() - start:.0f} s.", flush=True)
    return path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m app.launch", description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=int(os.environ.get("PORT", 8501)))
    p.add_argument("--address", default=os.environ.get("CSE_ADDRESS", "127.0.0.1"))
    p.add_argument("--artifacts", default=os.environ.get("CSE_ARTIFACTS"),
                   help="artifact folder, folder of runs, or hf://user/repo@revision")
    p.add_argument("--offline-demo", action="store_true", help="build the toy demo without trying GPT-2 small")
    args = p.parse_args(argv)
    if not _has_artifacts(args.artifacts):
        build_demo(ROOT / "artifacts", prefer_real=not args.offline_demo)
    cmd = [sys.executable, "-m", "streamlit", "run", str(ROOT / "app" / "Home.py"), "--server.port", str(args.port),
           "--server.address", args.address, "--server.headless", "true", "--browser.gatherUsageStats", "false"]
    if args.artifacts:
        cmd += ["--", "--artifacts", args.artifacts]
    print(f"Starting the app on http://{args.address}:{args.port}", flush=True)
    return subprocess.call(cmd, cwd=ROOT)


if __name__ == "__main__":
    sys.exit(main())
