"""First-click latency on the live page: a user opens a SmolLM2 set, spends ``--think`` seconds choosing a
prompt, then presses Analyse; we time that press until the result, with the model loaded in the background when
the set is opened (``app.live_model.warm``) and without (``CSE_WARM_MODEL=0``: loaded at the press, as before).
Each case runs in a fresh process with an empty in-process model cache (the processed-weight cache on disk is
warm in both), through Streamlit's AppTest (the server side: no browser time).

    python -m benchmarks.bench_first_click --artifacts artifacts/smollm2-demo [--think 5]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from benchmarks.common import emit

ROOT = Path(__file__).resolve().parents[1]
ONE = """
import json, sys, time
from streamlit.testing.v1 import AppTest
at = AppTest.from_file("app/Home.py", default_timeout=300)
at.run()                                   # the set opened (the Home page)
time.sleep(float(sys.argv[1]))             # the user reads and chooses a prompt
at.switch_page("views/live.py"); at.run()
at.text_area(key="live_text_(type your own)").set_value("When Mary and John went to the store, John gave a drink to")
t = time.perf_counter()
next(b for b in at.button if b.label == "Analyse").click().run()
took = time.perf_counter() - t
assert not at.exception, at.exception
print(json.dumps({"first_click_s": took, "analysed": any("cse-strip" in str(m.value) for m in at.markdown)}))
"""


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--artifacts", required=True)
    p.add_argument("--think", type=float, default=5.0)
    args = p.parse_args(argv)
    out = {}
    for case, warm in (("loaded at the press (before)", "0"), ("loaded in the background (after)", "1")):
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "CSE_ARTIFACTS": args.artifacts, "CSE_WARM_MODEL": warm}
        got = subprocess.run(
            [sys.executable, "-c", ONE, str(args.think)], cwd=ROOT, env=env, capture_output=True, text=True
        )
        if got.returncode:
            raise SystemExit(got.stderr[-2000:])
        out[case] = json.loads(got.stdout.strip().splitlines()[-1])
    emit("first_click", {"artifacts": args.artifacts, "think_s": args.think, **out})


if __name__ == "__main__":
    main()
