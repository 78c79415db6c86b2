"""The whole offline demo build as one process, as `make run` starts it on a fresh machine: the toy set and survey,
SmolLM2's first load into an empty weight cache, its survey and its set (issue 38's target: <= 8 minutes on a quiet
2-core machine). Prints every log line with the seconds since the start, then the phases and the longest silence.

    python -m benchmarks.bench_demo
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import emit

ROOT = Path(__file__).resolve().parents[1]
BUILD = (
    "from pathlib import Path; import sys; from app.launch import build_demo; "
    "build_demo(Path(sys.argv[1]), prefer_real=False)"
)


def main(argv=None):
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1", "CSE_CACHE_DIR": str(Path(tmp) / "cache")}
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-c", BUILD, str(Path(tmp) / "artifacts")],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        lines = []
        for line in proc.stdout:
            lines.append((time.perf_counter() - t0, line.rstrip()))
            print(f"[{lines[-1][0]:7.1f}] {lines[-1][1]}", file=sys.stderr, flush=True)
        code = proc.wait()
        total = time.perf_counter() - t0
        peak_mb = __import__("resource").getrusage(__import__("resource").RUSAGE_CHILDREN).ru_maxrss / 1024
    built = {m.group(1): round(t, 1) for t, text in lines if (m := re.match(r"Built .*/([\w-]+)", text))}
    gaps = [b[0] - a[0] for a, b in zip(lines, lines[1:])]
    emit(
        "demo_build",
        {
            "exit_code": code,
            "total_s": total,
            "target_s": 480,
            "set_ready_at_s": built,
            "longest_silence_s": max(gaps, default=0.0),
            "log_lines": len(lines),
            "peak_rss_mb": peak_mb,
        },
    )


if __name__ == "__main__":
    main()
