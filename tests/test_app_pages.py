"""What a researcher meets on the pages: short prompts, the attention window, Browse's first view and search,
the details table, the live caption, byte tokens, two heads side by side, a position as a source, the Semantic
similarity page and the artifact picker (each once a defect found by using the app as a new user)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from .app_helpers import APP, TIMEOUT, _run, _text

TIER = "model"  # this file's test tier (tests/conftest.py); a test marked otherwise is in that tier


@pytest.fixture
def app_env(toy_artifacts, monkeypatch):
    monkeypatch.setenv("CSE_ARTIFACTS", str(toy_artifacts))
    return toy_artifacts


def _live(at, prompt: str):
    at.text_area(key="live_text_(type your own)").set_value(prompt)
    at.button[0].click().run()
    return at


# a prompt of 8 tokens or fewer crashed the page (slider with min = max)
@pytest.mark.parametrize("prompt", ["kape", "The kape is"])
def test_short_prompts_render_every_tab(app_env, prompt):
    at = _live(_run("views/live.py"), prompt)
    assert not at.exception
    assert any("cse-strip" in m.value for m in at.markdown)
    assert [t.label for t in at.tabs] == ["Token details", "As a source", "Attention", "Download"]


# the attention window always shows BOS, where the head parks its attention
@pytest.mark.fast
def test_attention_window_keeps_bos():
    from app.sequence.attention import window_bounds

    for s, pos, window in ((200, 150, 48), (3, 1, 48), (50, 0, 8), (50, 49, 8)):
        start, end = window_bounds(s, pos, window)
        assert 1 <= start < end <= s and (pos in range(start, end) or pos == 0)
        assert end - start == min(window, s - 1)


# the search panel stays open; Browse opens on the highest-ranked example
def test_browse_opens_on_the_top_example_and_the_search_stays_open(app_env):
    from precompute.store.reader import open_artifacts

    idx = open_artifacts(app_env).index()
    at = _run("views/browse.py")
    assert not at.exception
    assert at.number_input(key="browse_seq").value == int(idx["delta_loss_seq"][0])
    assert at.number_input(key="browse_pos").value == int(idx["delta_loss_pos"][0])
    assert at.expander[0].proto.expanded
    at.number_input(key="browse_pos").set_value(3).run()
    assert at.expander[0].proto.expanded and not at.exception


# the true next token's row is the first row of the prediction tables
def test_next_token_row_comes_first(app_env):
    at = _run("views/browse.py", {"seq": "2", "pos": "10", "head": "1.2"})
    frames = [d.value for d in at.dataframe if "prob" in d.value.columns]
    assert len(frames) >= 3
    for df in frames[:3]:
        assert str(df.iloc[0]["token"]).startswith("next ")


# the ablated column follows the sidebar or says it cannot
def test_after_ablation_column_says_which_variant(app_env):
    at = _run("views/browse.py", {"seq": "2", "pos": "10", "head": "1.2"})
    assert "After ablation (direct, frozen LN)" in _text(at)
    at.radio(key="browse_effect").set_value("both").run()
    text = _text(at)
    assert "Top-k lists are stored for the paper's variant only" in text and "both, frozen" in text


# live tokens are not links (the caption says so); a new prompt starts at its own last prediction
def test_live_caption_and_position_reset(app_env):
    at = _live(_run("views/live.py"), "The kape of the ripe is kape.")
    assert "choose the position with the box above" in _text(at) and "click it to select" not in _text(at)
    first = [n for n in at.number_input if n.key.startswith("live_pos_")][0]
    first.set_value(0).run()
    at = _live(at, "The kape is")
    pos = [n for n in at.number_input if n.key.startswith("live_pos_")][0]
    n_tokens = [m.value for m in at.markdown if "cse-strip" in m.value][0].count('class="cse-tok')
    assert pos.key != first.key and pos.value == n_tokens - 1 != 0  # a new prompt opens at its last token
    assert not at.exception


# byte pieces show as escapes, not as '\ufffd'
@pytest.mark.fast
def test_byte_tokens_show_their_bytes():
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
    from .app_helpers import strips as page_strips

    strips = page_strips(at)
    assert len(strips) == 2 and strips[0] != strips[1]
    assert "Head 0.1" in _text(at) and "Head 1.2" in _text(at)


@pytest.mark.fast
def test_a_position_as_a_source_against_a_hand_made_record():
    """Destinations that attend to position 1 (from the sparse attention), with weights and what is kept there."""
    from app.sequence.details import as_source
    from precompute import schema as F

    class Tok:
        def decode(self, ids):
            return "".join(f"<{i}>" for i in ids)

        def convert_ids_to_tokens(self, i):
            return None

    rec = {
        F.TOKENS: np.array([0, 7, 8, 7]),
        F.ATTN_TOPK_POS: np.array([[1, 2], [1, 2], [1, 2], [2, 1]]),
        F.ATTN_TOPK_WEIGHT: np.array([[0, 0], [0.5, 0], [0.25, 0.5], [0.6, 0.125]], dtype=np.float16),
        F.ATTN_BOS: np.array([1, 0.5, 0.25, 0.275], dtype=np.float16),
        F.CSPA_KEPT_POS: np.array([[-1], [-1], [1], [-1]]),
        F.CSPA_KEPT_TOKEN: np.array([[-1], [-1], [7], [-1]]),
        F.dla_ids("dla_neg"): np.array([[0], [7], [7], [3]]),
        F.dla_values("dla_neg"): np.array([[0], [-1.5], [-2.0], [-0.5]], dtype=np.float16),
    }
    strings = ["<0>", "<7>", "<8>", "<7>"]
    df = as_source(rec, strings, 1, Tok())
    assert df["destination"].tolist() == [1, 2, 3]
    assert df["attention"].tolist() == [0.5, 0.25, 0.125]
    assert df["CSPA keeps (suppressed)"].tolist() == ["", "'<7>'", ""]
    assert df.iloc[:, 4].tolist() == ["-1.500", "-2.000", ""]  # blank, never "None", where it is not listed
    assert as_source(rec, strings, 2, Tok())["destination"].tolist() == [2, 3]  # itself, and 3 via top-k


def test_semantic_similarity_page(app_env):
    at = _run("views/semantic.py")
    assert not at.exception
    token = at.text_input(key="sem_token").value
    assert token.startswith(" ")
    assert [c.value for c in at.code][0] != "(none)"  # the default token has equivalents
    # and the head suppresses it: no word-like token with equivalents has a lower OV rank of itself
    from precompute import schema as F
    from precompute.store.reader import open_artifacts

    arts = open_artifacts(app_env)
    ids = arts.tokenizer(token, add_special_tokens=False)["input_ids"]
    assert len(ids) == 1 and int(arts.circuits("1.2")[F.CIRCUIT_RANKS["ov"]][ids[0]]) < 10
    at.text_input(key="sem_token").set_value("kanosa teri").run()
    assert not at.exception and "not one" in _text(at)
    at.text_input(key="sem_token").set_value("").run()
    assert not at.exception and "Type a token" in _text(at)
    at.text_input(key="sem_token").set_value("  ").run()  # two spaces are shown as two, not one
    shown = _text(at).replace("\u00a0", " ")  # a run of spaces renders as space + no-break spaces
    assert not at.exception and "'  ' is 2 tokens, not one" in shown and "' ' is 2" not in shown
    at.text_input(key="sem_token").set_value(" token").run()
    at.slider(key="sem_max").set_value(1).run()
    assert not at.exception and "1 neighbour shown" in _text(at) and "1 neighbours" not in _text(at)


def test_search_ranked_by_cspa_failure_shows_the_signed_loss_change_it_ranks_by_size(app_env):
    from precompute.store.reader import open_artifacts

    idx = open_artifacts(app_env).index()
    at = _run("views/browse.py")
    at.selectbox(key="browse_rank").set_value("Where CSPA misses the effect (largest |Δloss under CSPA|)").run()
    assert not at.exception
    table = at.dataframe[0].value
    column = "Δloss under CSPA (signed)"
    assert column in table.columns and "value" not in table.columns
    stored = idx["cspa_failure_value"][: len(table)].tolist()
    assert table[column].tolist() == pytest.approx(stored, abs=1e-6)
    sizes = [abs(v) for v in table[column]]
    assert sizes == sorted(sizes, reverse=True)


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
