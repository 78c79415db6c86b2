"""Browse at scale: open a 10,000 x 1024-token artifact set (SYNTHETIC values, real schema), switch examples,
query the search index; server-side times and resident memory as more shards are visited.

    python -m benchmarks.bench_browse [--dir /tmp/cse-synthetic-10k] [--n-seqs 10000] [--switches 50]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time
from pathlib import Path

from benchmarks.common import emit, rss_mb


def _stats(ts: list[float]) -> dict:
    ts = sorted(ts)
    return {"median_s": statistics.median(ts), "p95_s": ts[int(0.95 * (len(ts) - 1))], "max_s": ts[-1], "n": len(ts)}


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--dir", default="/tmp/cse-synthetic-10k")
    p.add_argument("--n-seqs", type=int, default=10_000)
    p.add_argument("--seq-len", type=int, default=1024)
    p.add_argument("--switches", type=int, default=50)
    args = p.parse_args(argv)
    root = Path(args.dir)
    if not (root / "manifest.json").exists():
        from benchmarks.synthetic_artifacts import generate

        t = time.time()
        generate(root, args.n_seqs, args.seq_len, 64)
        print(f"generated in {time.time() - t:.0f} s")
    size_gb = sum(f.stat().st_size for f in root.rglob("*") if f.is_file()) / 1e9

    from precompute import open_artifacts
    from precompute.data.tokenization import token_strings

    rss0 = rss_mb()
    t = time.perf_counter()
    arts = open_artifacts(root)
    open_s = time.perf_counter() - t
    tok = arts.tokenizer
    from app.sequence import strip_html

    opts = {
        "variant": "direct_frozen",
        "metric": "delta_loss",
        "metric_label": "Δloss",
        "extreme": False,
        "newlines": True,
    }
    rng = random.Random(0)

    def switch(i: int) -> float:
        t = time.perf_counter()
        rec = arts.sequence(i)
        strings = token_strings(tok, rec["tokens"].tolist())
        strip_html(rec, strings, opts, 10, {"seq": i, "head": "10.7"})
        return time.perf_counter() - t

    # first visits of a shard hash it once (the reader checks every file against the manifest); later visits don't
    first_visit, seen = [], []
    visited: set[int] = set()
    for _ in range(args.switches):
        i = rng.randrange(arts.n_sequences)
        shard = i // arts.shard_size
        (seen if shard in visited else first_visit).append(switch(i))
        visited.add(shard)
    switches = first_visit + seen
    from precompute.store.files import sha256_file

    shard0 = root / "shards" / "shard_00000.safetensors"
    t = time.perf_counter()
    sha256_file(shard0)
    hash_s = time.perf_counter() - t
    rss_after_few = rss_mb()
    for _ in range(300):
        switch(rng.randrange(arts.n_sequences))
    rss_after_many = rss_mb()
    t = time.perf_counter()
    idx = arts.index()
    rows = [(int(s), int(q)) for s, q in zip(idx["delta_loss_seq"][:200], idx["delta_loss_pos"][:200])]
    index_s = time.perf_counter() - t
    t = time.perf_counter()
    for s, q in rows[:50]:
        token_strings(tok, arts.sequence(s)["tokens"][max(0, q - 8) : q + 2].tolist())
    table_s = time.perf_counter() - t

    # the real page, server-side, through Streamlit's AppTest
    os.environ["CSE_ARTIFACTS"] = str(root)
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "app" / "Home.py"), default_timeout=300)
    at.run()
    at.switch_page("views/browse.py")
    t = time.perf_counter()
    at.run()
    first_page_s = time.perf_counter() - t
    page_switch = []
    for _ in range(10):
        at.number_input(key="browse_seq").set_value(rng.randrange(arts.n_sequences))
        t = time.perf_counter()
        at.run()
        page_switch.append(time.perf_counter() - t)
        assert not at.exception, at.exception
    emit(
        "browse",
        {
            "artifact_set": {
                "n_sequences": arts.n_sequences,
                "seq_len": arts.seq_len,
                "n_shards": arts.manifest["counts"]["n_shards"],
                "size_gb": size_gb,
                "values": "SYNTHETIC random (benchmarks/synthetic_artifacts.py)",
            },
            "open_s": open_s,
            "switch_example_reader_plus_strip": _stats(switches),
            "switch_first_visit_of_a_shard (hash checked)": _stats(first_visit) if first_visit else None,
            "switch_shard_already_seen": _stats(seen) if seen else None,
            "sha256_one_shard": {"bytes": shard0.stat().st_size, "seconds": hash_s},
            "index_query_s": index_s,
            "search_table_50_rows_s": table_s,
            "browse_page_first_run_s (incl. search table, cached after)": first_page_s,
            "browse_page_switch_sequence_apptest": _stats(page_switch),
            "rss_mb": {
                "before_open": rss0,
                f"after_{args.switches}_switches": rss_after_few,
                f"after_{args.switches + 300}_switches": rss_after_many,
            },
        },
    )


if __name__ == "__main__":
    main()
