"""Hardening: hostile prompts, faults during precompute, concurrency of live analysis, security properties.

The bad-input catalogue (docs/BAD_INPUT.md) maps every case to a test, here or in the other test files.
"""

import errno
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from precompute import ArtifactError, InvalidInputError
from precompute.live import LiveAnalyzer, clean_prompt
from precompute.schema import MANIFEST
from precompute.store.reader import open_artifacts
from precompute.store.verify import verify

from .conftest import SMALL_RUN, write_text_dataset

TIER = "model"  # this file's test tier (tests/conftest.py); a test marked otherwise is in that tier

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def live(toy, toy_artifacts):
    return LiveAnalyzer.for_artifacts(toy, open_artifacts(toy_artifacts), max_cached=4)


# ---------------------------------------------------------------- prompts

HOSTILE = {
    "control_chars": "The kanosa\x00 of\x07 the\x1b[31m teri",
    "emoji": "The kanosa 🙂🚀 of the teri 👍🏽",
    "zero_width": "The\u200b kanosa\u200d of\u2060 the\ufeff teri",
    "right_to_left": "The kanosa \u202eעברית\u202c of the teri مرحبا",
    "html_script": "<script>alert('x')</script><img src=x onerror=alert(1)> kanosa",
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_prompts_are_analysed(live, name):
    res = live.analyze(HOSTILE[name], (1, 2))
    rec = res.record
    n = int(rec["tokens"].shape[0])
    assert n >= 3 and rec["loss"].shape == (n - 1,)
    assert np.isfinite(rec["delta_loss_direct_frozen"].astype("float32")).all()


@pytest.mark.fast
def test_control_characters_are_removed_but_newlines_kept():
    assert clean_prompt("a\x00b\x07c\nd\te") == "abc\nd\te"


@pytest.mark.parametrize("prompt", ["", "   \n\t  ", "\x00\x01\x02"])
def test_empty_prompts_are_refused(live, prompt):
    with pytest.raises(InvalidInputError, match="prompt is empty"):
        live.analyze(prompt, (1, 2))


def test_very_long_prompt_is_cut_to_the_context(live, toy):
    text = "The kanosa of the teri is kanosa. " * 700  # ~24,000 characters, far more tokens than n_ctx
    assert len(text) > 20_000
    res = live.analyze(text, (1, 2))
    assert res.cut_to == live.max_tokens <= toy.model.cfg.n_ctx
    assert res.n_tokens_in > res.cut_to
    assert int(res.record["tokens"].shape[0]) == res.cut_to


def test_live_takes_a_head_the_set_did_not_store_and_refuses_one_the_model_lacks(live, toy, toy_artifacts):
    """A head outside the set gets its mean output over the set's first n_mean sequences (as the precompute job
    computes it); a head the model does not have is refused with its valid ranges."""
    from precompute.science.analysis import mean_result

    arts = open_artifacts(toy_artifacts)
    assert not live.stored((0, 1)) and live.stored((1, 2))
    n_mean = arts.manifest["hyperparameters"]["n_mean"]
    tokens = torch.stack([torch.as_tensor(arts.tokens(i)).long() for i in range(n_mean)])
    want = mean_result(toy, tokens, (0, 1))
    res = live.analyze("The kanosa of the teri is kanosa.", (0, 1))
    assert torch.allclose(live.mean_of((0, 1)), want, atol=1e-6)
    assert res.record["tokens"].shape[0] > 2
    assert len(live.all_heads) == toy.model.cfg.n_layers * toy.model.cfg.n_heads
    with pytest.raises(InvalidInputError, match="does not exist"):
        live.analyze("The kanosa", (9, 0))


@pytest.mark.fast
def test_html_in_tokens_is_escaped_in_the_strip():
    from app.render.tokens import token_strip

    tokens = ["<script>alert(1)</script>", '" onmouseover="x', "&amp;", "\n"]
    html = token_strip(
        tokens,
        ["rgb(1,2,3)"] * 4,
        ["<b>tip</b>", "'", '"', "x"],
        selected=0,
        link_params={"seq": 1, "head": '1.2"><script>'},
    )
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert 'onmouseover="x' not in html and "&lt;b&gt;tip&lt;/b&gt;" in html
    assert "&amp;amp;" in html
    assert "<script>" not in re.sub(r"<style>.*?</style>", "", html, flags=re.S)


def test_hostile_prompt_through_the_app_is_shown_as_text(toy_artifacts, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("CSE_ARTIFACTS", str(toy_artifacts))
    at = AppTest.from_file(str(ROOT / "app" / "Home.py"), default_timeout=120)
    at.run()
    at.switch_page("views/live.py")
    at.run()
    at.text_area(key="live_text_(type your own)").set_value(HOSTILE["html_script"])
    at.button[0].click().run()
    assert not at.exception
    strip = next(m.value for m in at.markdown if "cse-strip" in m.value)
    body = strip.split("</style>", 1)[1]
    # the tokenizer splits the tags into pieces; none of them may survive as markup
    assert "<script" not in body and "<img" not in body and "onerror=alert" not in body.replace("=", "=")
    assert "&lt;" in body and "&gt;" in body


# ---------------------------------------------------------------- artifacts and models


def test_model_mismatch_between_artifacts_and_live_mode(tiny, toy_artifacts):
    arts = open_artifacts(toy_artifacts)
    renamed = type(tiny)(model=tiny.model, name="gpt2-small-random", provenance={})
    with pytest.raises(InvalidInputError, match="made with 'toy'"):
        LiveAnalyzer.for_artifacts(renamed, arts)
    with pytest.raises(InvalidInputError, match="does not fit the live model"):
        LiveAnalyzer.for_artifacts(tiny, arts)  # same name, but d_model 64 vs the artifacts' 512


def test_reader_bad_indices_and_heads(toy_artifacts):
    arts = open_artifacts(toy_artifacts)
    for bad in (-1, 20, 10**9, "3", 2.5, True):
        with pytest.raises(InvalidInputError, match="out of range"):
            arts.sequence(bad)
    with pytest.raises(InvalidInputError, match="not in these artifacts"):
        arts.sequence(0, head="9.9")
    with pytest.raises(InvalidInputError, match="LAYER.HEAD"):
        arts.sequence(0, head="nine")


def test_shard_deleted_after_opening_gives_a_clear_error(toy_artifacts, tmp_path):
    copy = tmp_path / "a"
    shutil.copytree(toy_artifacts, copy)
    arts = open_artifacts(copy)
    (copy / "shards" / "shard_00002.safetensors").unlink()
    with pytest.raises(ArtifactError, match="shard_00002.safetensors is missing"):
        arts.sequence(17)
    assert arts.sequence(0)["tokens"].shape == (48,)  # the rest still works


def test_app_pages_survive_missing_files(toy_artifacts, tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    copy = tmp_path / "b"
    shutil.copytree(toy_artifacts, copy)
    (copy / "circuits" / "1.2.safetensors").unlink()
    (copy / "shards" / "shard_00000.safetensors").unlink()
    monkeypatch.setenv("CSE_ARTIFACTS", str(copy))
    at = AppTest.from_file(str(ROOT / "app" / "Home.py"), default_timeout=120)
    at.run()
    assert not at.exception  # Home works
    for page, message in (
        ("views/circuits.py", "circuit tables cannot be read"),
        ("views/browse.py", "cannot be shown"),
        ("views/cspa.py", "cannot be read"),
    ):
        at.switch_page(page)
        at.run()
        assert not at.exception, page
        assert any(message in e.value for e in at.error), page


# ---------------------------------------------------------------- faults in the precompute job


def _cli_args(data, out, **over):
    cfg = {**SMALL_RUN, **over}
    return [
        "run",
        "--model",
        "toy",
        "--heads",
        "1.2",
        "--dataset",
        str(data),
        "--n-seqs",
        str(cfg["n_seqs"]),
        "--seq-len",
        str(cfg["seq_len"]),
        "--batch-size",
        str(cfg["batch_size"]),
        "--shard-size",
        str(cfg["shard_size"]),
        "--n-mean",
        str(cfg["n_mean"]),
        "--k",
        str(cfg["k"]),
        "--seed",
        str(cfg["seed"]),
        "--out",
        str(out),
        "--device",
        "cpu",
    ]


def _tree(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.name.startswith(".")
    }


@pytest.mark.model  # runs the toy pipeline in subprocesses
@pytest.mark.parametrize("points", [("after_mean", "after_shard:0", "after_shard:5", "before_manifest")])
def test_sigkill_at_named_points_always_resumes_identically(tmp_path, points):
    """SIGKILL at each named point of the job (a test-only hook, no sleeps), resuming after each: a manifest,
    when present, always verifies, and the end result equals an uninterrupted run byte for byte."""
    from precompute.jobs.faults import FAULT_ENV

    data = write_text_dataset(tmp_path)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    clean = tmp_path / "clean"
    subprocess.run(
        [sys.executable, "-m", "precompute", *_cli_args(data, clean, n_seqs=24, shard_size=3)],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
    )
    killed = tmp_path / "killed"
    for point in points:
        r = subprocess.run(
            [sys.executable, "-m", "precompute", *_cli_args(data, killed, n_seqs=24, shard_size=3), "--resume"],
            cwd=ROOT,
            env={**env, FAULT_ENV: point},
            capture_output=True,
        )
        assert r.returncode == -signal.SIGKILL, (point, r.returncode)
        assert not (killed / MANIFEST).exists()  # every named point lies before the manifest
        if point.startswith("after_shard:"):
            k = int(point.split(":")[1])
            assert (killed / "shards" / f"shard_{k:05d}.safetensors").exists()
    r = subprocess.run(
        [sys.executable, "-m", "precompute", *_cli_args(data, killed, n_seqs=24, shard_size=3), "--resume"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    assert verify(killed) == []
    tk, tc = _tree(killed), _tree(clean)
    assert tk == tc, sorted(k for k in tc if tk.get(k) != tc[k])


def test_disk_full_never_leaves_a_manifest_pointing_at_a_bad_shard(toy, tmp_path, monkeypatch):
    import precompute.store.files as artifacts
    from precompute import RunConfig, run

    data = write_text_dataset(tmp_path)
    out = tmp_path / "out"
    cfg = dict(SMALL_RUN, dataset=str(data), out=str(out))
    real = artifacts.atomic_write_bytes

    def failing(path, payload):
        if path.name == "shard_00001.safetensors":  # the second shard
            # simulate a partial write: bytes land in a temp file, then the disk is full
            (path.parent / f".{path.name}.partial.tmp").write_bytes(payload[: len(payload) // 3])
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, payload)

    monkeypatch.setattr(artifacts, "atomic_write_bytes", failing)
    with pytest.raises(OSError, match="No space left"):
        run(RunConfig(**cfg), loaded=toy, log=lambda *_: None)
    assert not (out / MANIFEST).exists()
    assert not (out / "shards" / "shard_00001.safetensors").exists()
    monkeypatch.setattr(artifacts, "atomic_write_bytes", real)
    run(RunConfig(**cfg, resume=True), loaded=toy, log=lambda *_: None)
    assert verify(out) == []
    assert not any(p.name.endswith(".safetensors") and p.stat().st_size == 0 for p in out.rglob("*"))


def test_failure_mid_run_keeps_completed_shards_and_resumes(toy, tmp_path, monkeypatch):
    import precompute.jobs.pipeline as pipeline
    from precompute import RunConfig, run
    from precompute.errors import HubUnavailableError

    data = write_text_dataset(tmp_path)
    out = tmp_path / "out"
    cfg = dict(SMALL_RUN, dataset=str(data), out=str(out))
    real = pipeline.analyze
    calls = {"n": 0}

    def flaky(*a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise HubUnavailableError("connection to the Hub lost")
        return real(*a, **k)

    monkeypatch.setattr(pipeline, "analyze", flaky)
    with pytest.raises(HubUnavailableError):
        run(RunConfig(**cfg), loaded=toy, log=lambda *_: None)
    assert (out / "shards" / "shard_00000.safetensors").exists() and not (out / MANIFEST).exists()
    first = (out / "shards" / "shard_00000.safetensors").stat().st_mtime_ns
    monkeypatch.setattr(pipeline, "analyze", real)
    run(RunConfig(**cfg, resume=True), loaded=toy, log=lambda *_: None)
    assert (out / "shards" / "shard_00000.safetensors").stat().st_mtime_ns == first  # kept, not redone
    assert verify(out) == []


# ---------------------------------------------------------------- concurrency


def test_eight_threads_equal_one_by_one_and_cache_is_bounded(toy, toy_artifacts):
    arts = open_artifacts(toy_artifacts)
    prompts = [
        f"The kanosa of the teri is {w}. A {w} was in the ruko with a kanosa."
        for w in ("zuda", "teri", "ruko", "risupo", "konori", "lide", "mili", "lisa")
    ]
    sequential = LiveAnalyzer.for_artifacts(toy, arts, max_cached=3)
    expected = [sequential.analyze(p, (1, 2)).record for p in prompts]
    shared = LiveAnalyzer.for_artifacts(toy, arts, max_cached=3)
    results: dict[int, dict] = {}
    errors = []
    barrier = threading.Barrier(8)

    def work(i):
        try:
            barrier.wait()
            results[i] = shared.analyze(prompts[i], (1, 2)).record
        except Exception as err:  # noqa: BLE001
            errors.append(err)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for i in range(8):
        assert results[i].keys() == expected[i].keys()
        for name in expected[i]:
            assert np.array_equal(results[i][name], expected[i][name]), (i, name)
    assert shared.cached_count() == 3


# ---------------------------------------------------------------- security


@pytest.mark.fast
def test_no_unpickling_and_no_remote_code_anywhere():
    code = [p for p in ROOT.rglob("*.py") if ".venv" not in p.parts and "tests" not in p.parts]
    pattern = re.compile(
        r"pickle\.loads?\(|torch\.load\(|trust_remote_code\s*=\s*True|(?<![.\w])eval\(|(?<![.\w])exec\("
    )
    offenders = [str(p) for p in code if pattern.search(p.read_text())]
    assert offenders == []


@pytest.mark.fast
def test_streamlit_only_inside_app():
    leaks = [
        str(p)
        for p in ROOT.rglob("*.py")
        if ".venv" not in p.parts
        and p.parts[len(ROOT.parts)] not in ("app", "tests", "benchmarks")
        and re.search(r"^\s*(import streamlit|from streamlit)", p.read_text(), re.M)
    ]
    assert leaks == []


def test_app_binds_where_it_is_told(monkeypatch, toy_artifacts):
    import app.launch as launch

    seen = {}

    class FakeServer:  # the server the launcher starts and supervises, exiting at once
        def __init__(self, cmd, cwd=None, env=None):
            seen["cmd"], seen["env"] = cmd, env

        def wait(self, timeout=None):
            return 0

        def poll(self):
            return 0

    monkeypatch.setattr(launch.subprocess, "Popen", FakeServer)
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    monkeypatch.setenv("MKL_DISABLE_FAST_MM", "0")  # a user's own setting wins
    assert launch.main(["--port", "8765", "--artifacts", str(toy_artifacts)]) == 0
    cmd = seen["cmd"]
    assert cmd[cmd.index("--server.address") + 1] == "127.0.0.1"
    assert cmd[cmd.index("--server.port") + 1] == "8765"
    # the server starts with one malloc arena from its first allocation on (models/memory.py)
    assert seen["env"]["MALLOC_ARENA_MAX"] == "1" and seen["env"]["MKL_DISABLE_FAST_MM"] == "0"
    assert seen["env"]["PATH"] == os.environ["PATH"]
    launch.main(["--port", "8765", "--address", "0.0.0.0", "--artifacts", str(toy_artifacts)])
    assert seen["cmd"][seen["cmd"].index("--server.address") + 1] == "0.0.0.0"


def test_live_paper_set_first_other_variants_on_demand(toy, toy_artifacts, monkeypatch):
    """The first answer holds the paper's variant (and CSPA) only; another variant is computed when asked for,
    kept with the prompt, and equals what a full analysis gives."""
    import numpy as np

    import precompute.live_analyzer as live_module
    from precompute.live import LiveAnalyzer

    arts = open_artifacts(toy_artifacts)
    calls = []
    real = live_module.analyze
    monkeypatch.setattr(live_module, "analyze", lambda *a, **k: calls.append(k["effects"]) or real(*a, **k))
    lazy = LiveAnalyzer.for_artifacts(toy, arts)
    text = "The kanosa of the teri is kanosa. A kanosa was in the teri."
    first = lazy.analyze(text, (1, 2), variants=("direct_frozen",))
    assert first.computed == {"direct_frozen"} and "kl_both_frozen" not in first.record
    assert "kl_cspa" in first.record and calls == [("direct",)]
    second = lazy.analyze(text, (1, 2), variants=("both_unfrozen",))
    assert calls == [("direct",), ("both",)] and {"direct_frozen", "both_unfrozen"} <= second.computed
    again = lazy.analyze(text, (1, 2), variants=("both_unfrozen", "direct_frozen"))
    assert len(calls) == 2 and again is second  # cached
    full = LiveAnalyzer.for_artifacts(toy, arts).analyze(text, (1, 2))
    for name in (
        "kl_both_unfrozen",
        "delta_loss_both_unfrozen",
        "both_unfrozen_correct_rank",
        "kl_cspa",
        "delta_loss_direct_frozen",
        "direct_frozen_topk_ids",
    ):
        np.testing.assert_allclose(
            second.record[name].astype(np.float64),
            full.record[name].astype(np.float64),
            atol=2e-3,
            rtol=0,
            err_msg=name,
        )
    with pytest.raises(InvalidInputError, match="not among"):
        lazy.analyze(text, (1, 2), variants=("sideways_frozen",))
