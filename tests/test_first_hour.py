"""The first hour of a researcher: each defect found by trying the app as a new user, as a regression test, plus
the new views (two heads side by side, a position as a source, Semantic similarity) and the first start."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from .conftest import SMALL_RUN, write_text_dataset
from .test_app import APP, TIMEOUT, _run, _text


@pytest.fixture
def app_env(toy_artifacts, monkeypatch):
    monkeypatch.setenv("CSE_ARTIFACTS", str(toy_artifacts))
    return toy_artifacts


@pytest.fixture(scope="module")
def two_head_artifacts(toy, tmp_path_factory):
    from precompute import RunConfig, run

    root = tmp_path_factory.mktemp("two")
    data = write_text_dataset(root)
    out = root / "run"
    run(RunConfig(**{**SMALL_RUN, "heads": ((1, 2), (0, 1)), "n_seqs": 8, "n_mean": 8, "shard_size": 8},
                  dataset=str(data), out=str(out)), loaded=toy, log=lambda *_: None)
    return out


def _live(at, prompt: str):
    at.text_area(key="live_text_(type your own)").set_value(prompt)
    at.button[0].click().run()
    return at


# 1. a prompt of 8 tokens or fewer crashed the page (slider with min = max)
@pytest.mark.parametrize("prompt", ["kape", "The kape is"])
def test_1_short_prompts_render_every_tab(app_env, prompt):
    at = _live(_run("views/live.py"), prompt)
    assert not at.exception
    assert any("cse-strip" in m.value for m in at.markdown)
    assert [t.label for t in at.tabs] == ["Token details", "As a source", "Attention", "Download"]


# 4. the attention window always shows BOS, where the head parks its attention
def test_4_attention_window_keeps_bos():
    from app.sequence.attention import window_bounds

    for s, pos, window in ((200, 150, 48), (3, 1, 48), (50, 0, 8), (50, 49, 8)):
        start, end = window_bounds(s, pos, window)
        assert 1 <= start < end <= s and (pos in range(start, end) or pos == 0)
        assert end - start == min(window, s - 1)


# 6. the search panel stays open; Browse opens on the highest-ranked example
def test_6_browse_opens_on_the_top_example_and_the_search_stays_open(app_env):
    from precompute.store.reader import open_artifacts

    idx = open_artifacts(app_env).index()
    at = _run("views/browse.py")
    assert not at.exception
    assert at.number_input(key="browse_seq").value == int(idx["delta_loss_seq"][0])
    assert at.number_input(key="browse_pos").value == int(idx["delta_loss_pos"][0])
    assert at.expander[0].proto.expanded
    at.number_input(key="browse_pos").set_value(3).run()
    assert at.expander[0].proto.expanded and not at.exception


# 7. the true next token's row is the first row of the prediction tables
def test_7_next_token_row_comes_first(app_env):
    at = _run("views/browse.py", {"seq": "2", "pos": "10", "head": "1.2"})
    frames = [d.value for d in at.dataframe if "prob" in d.value.columns]
    assert len(frames) >= 3
    for df in frames[:3]:
        assert str(df.iloc[0]["token"]).startswith("next ")


# 8. the ablated column follows the sidebar or says it cannot
def test_8_after_ablation_column_says_which_variant(app_env):
    at = _run("views/browse.py", {"seq": "2", "pos": "10", "head": "1.2"})
    assert "After ablation (direct, frozen LN)" in _text(at)
    at.radio(key="browse_effect").set_value("both").run()
    text = _text(at)
    assert "Top-k lists are stored for the paper's variant only" in text and "both, frozen" in text


# 9, 10. live tokens are not links (the caption says so); a new prompt starts at its own last prediction
def test_9_10_live_caption_and_position_reset(app_env):
    at = _live(_run("views/live.py"), "The kape of the ripe is kape.")
    assert "choose the position with the box above" in _text(at) and "click it to select" not in _text(at)
    first = [n for n in at.number_input if n.key.startswith("live_pos_")][0]
    first.set_value(0).run()
    at = _live(at, "The kape is")
    pos = [n for n in at.number_input if n.key.startswith("live_pos_")][0]
    n_tokens = [m.value for m in at.markdown if "cse-strip" in m.value][0].count('class="cse-tok')
    assert pos.key != first.key and pos.value == n_tokens - 2 != 0
    assert not at.exception


# 11. byte pieces show as escapes, not as '\ufffd'
def test_11_byte_tokens_show_their_bytes():
    from precompute.data.tokenization import token_strings
    from precompute.models.tokenizers import load_local_tokenizer

    tok = load_local_tokenizer("gpt2")
    ids = tok("日本")["input_ids"]
    strings = token_strings(tok, ids)
    assert "\ufffd" not in "".join(strings) and strings[0].startswith("<0x")
    assert token_strings(tok, tok("Hello world")["input_ids"]) == ["Hello", " world"]


def test_two_heads_side_by_side(two_head_artifacts, monkeypatch):
    monkeypatch.setenv("CSE_ARTIFACTS", str(two_head_artifacts))
    at = _run("views/browse.py", {"seq": "1", "pos": "5", "head": "1.2"})
    at.selectbox(key="browse_compare").set_value("0.1").run()
    assert not at.exception
    strips = [m.value for m in at.markdown if "cse-strip" in m.value]
    assert len(strips) == 2 and strips[0] != strips[1]
    assert "Head 0.1" in _text(at) and "Head 1.2" in _text(at)


def test_a_position_as_a_source_against_a_hand_made_record():
    """Destinations that attend to position 1 (from the sparse attention), with weights and what is kept there."""
    from app.sequence.details import as_source
    from precompute import schema as F

    class Tok:
        def decode(self, ids):
            return "".join(f"<{i}>" for i in ids)

        def convert_ids_to_tokens(self, i):
            return None

    rec = {F.TOKENS: np.array([0, 7, 8, 7]),
           F.ATTN_TOPK_POS: np.array([[1, 2], [1, 2], [1, 2], [2, 1]]),
           F.ATTN_TOPK_WEIGHT: np.array([[0, 0], [0.5, 0], [0.25, 0.5], [0.6, 0.125]], dtype=np.float16),
           F.ATTN_BOS: np.array([1, 0.5, 0.25, 0.275], dtype=np.float16),
           F.CSPA_KEPT_POS: np.array([[-1], [-1], [1], [-1]]), F.CSPA_KEPT_TOKEN: np.array([[-1], [-1], [7], [-1]]),
           F.dla_ids("dla_neg"): np.array([[0], [7], [7], [3]]),
           F.dla_values("dla_neg"): np.array([[0], [-1.5], [-2.0], [-0.5]], dtype=np.float16)}
    strings = ["<0>", "<7>", "<8>", "<7>"]
    df = as_source(rec, strings, 1, Tok())
    assert df["destination"].tolist() == [1, 2, 3]
    assert df["attention"].tolist() == [0.5, 0.25, 0.125]
    assert df["CSPA keeps (suppressed)"].tolist() == ["", "'<7>'", ""]
    assert df.iloc[:, 4].tolist()[:2] == [-1.5, -2.0] and np.isnan(df.iloc[2, 4])
    assert as_source(rec, strings, 2, Tok())["destination"].tolist() == [2, 3]  # itself, and 3 via top-k


def test_semantic_similarity_page(app_env):
    at = _run("views/semantic.py")
    assert not at.exception
    token = at.text_input(key="sem_token").value
    assert token.startswith(" ")
    assert [c.value for c in at.code][0] != "(none)"  # the default token has equivalents
    at.text_input(key="sem_token").set_value("kanosa teri").run()
    assert not at.exception and "not one" in _text(at)
    at.text_input(key="sem_token").set_value("").run()
    assert not at.exception and "Type a token" in _text(at)


# first start: the offline check takes about a second, with no retries; the page shows the build's progress
def test_offline_check_is_fast(monkeypatch):
    from app import launch

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert launch.hub_reachable() is False
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(launch, "HUB", ("127.0.0.1", 9))  # nothing listens there: refused at once
    assert launch.hub_reachable(timeout=1.0) is False


def test_page_shows_the_build_progress_then_a_dead_build(tmp_path, monkeypatch):
    from app import discovery, state

    monkeypatch.delenv("CSE_ARTIFACTS", raising=False)
    monkeypatch.setattr(state.artifacts, "DEFAULT_DIR", tmp_path)
    discovery.write_status(tmp_path, state="building", what="the SYNTHETIC toy model")
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.run()
    assert not at.exception
    assert "Building the SYNTHETIC toy model" in _text(at)
    status = json.loads((tmp_path / discovery.STATUS).read_text())
    status["pid"] = 2**22 + 12345  # no such process
    (tmp_path / discovery.STATUS).write_text(json.dumps(status))
    at.run()
    assert "build process stopped" in _text(at)


def test_build_only_writes_a_demo_and_a_done_status(tmp_path, monkeypatch):
    from app import discovery, launch

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(launch, "TOY_DEMO", {**launch.TOY_DEMO, "n_seqs": 8, "n_mean": 8, "shard_size": 8,
                                             "seq_len": 32})
    path = launch.build_demo(tmp_path, prefer_real=True, real_model=False)
    assert (Path(path) / "manifest.json").exists()
    assert discovery.read_status(tmp_path)["state"] == "done"
    assert os.environ["HF_HUB_OFFLINE"] == "1"


def test_selecting_a_search_row_opens_that_token(app_env):
    from precompute.store.reader import open_artifacts

    idx = open_artifacts(app_env).index()
    at = _run("views/browse.py")
    at.session_state["browse_table"] = {"selection": {"rows": [3], "columns": [], "cells": []}}
    at.run()
    assert not at.exception
    assert at.number_input(key="browse_seq").value == int(idx["delta_loss_seq"][3])
    assert at.number_input(key="browse_pos").value == int(idx["delta_loss_pos"][3])


def test_choosing_among_runs(toy_artifacts, two_head_artifacts, tmp_path, monkeypatch):
    import shutil

    base = tmp_path / "runs"
    shutil.copytree(toy_artifacts, base / "one-head")
    shutil.copytree(two_head_artifacts, base / "two-heads")
    monkeypatch.setenv("CSE_ARTIFACTS", str(base))
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    picker = at.sidebar.selectbox(key="artifact_source")
    assert sorted(Path(o).name for o in picker.options) == ["one-head", "two-heads"]
    picker.set_value(str(base / "two-heads")).run()
    assert not at.exception
    assert at.sidebar.selectbox(key="home_head").options == ["1.2", "0.1"]
    picker.set_value(str(base / "one-head")).run()
    assert at.sidebar.selectbox(key="home_head").options == ["1.2"]


def test_launch_falls_back_to_the_toy_when_gpt2_cannot_load(tmp_path, monkeypatch):
    from app import discovery, launch
    from precompute import ModelUnavailableError
    import precompute.jobs.pipeline as pipeline

    monkeypatch.setattr(launch, "hub_reachable", lambda timeout=1.0: True)
    monkeypatch.setattr(launch, "TOY_DEMO", {**launch.TOY_DEMO, "n_seqs": 8, "n_mean": 8, "shard_size": 8,
                                             "seq_len": 32})
    real = pipeline.load_model

    def load(name, device="cpu"):
        if name == "gpt2-small":
            raise ModelUnavailableError("no GPT-2 here")
        return real(name, device=device)

    monkeypatch.setattr(pipeline, "load_model", load)
    path = launch.build_demo(tmp_path, prefer_real=True, real_model=False)
    assert Path(path).name == "toy-demo" and not (tmp_path / "gpt2-demo").exists()
    assert discovery.read_status(tmp_path)["state"] == "done"
