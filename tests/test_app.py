"""Every page under streamlit.testing.v1.AppTest against toy artifacts made by the test suite."""

import re
import pytest
from streamlit.testing.v1 import AppTest

from pathlib import Path

APP = str(Path(__file__).resolve().parents[1] / "app" / "Home.py")
TIMEOUT = 120


@pytest.fixture
def app_env(toy_artifacts, monkeypatch):
    monkeypatch.setenv("CSE_ARTIFACTS", str(toy_artifacts))
    return toy_artifacts


def _run(page=None, query=None):
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    if query:
        for k, v in query.items():
            at.query_params[k] = v
    at.run()
    if page:
        at.switch_page(page)
        at.run()
    return at


def _text(at) -> str:
    """The page's text as a reader sees it (markdown backslash escapes of literal text removed)."""
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption] + [t.value for t in at.title]
    parts += [e.value for e in at.error] + [w.value for w in at.warning] + [i.value for i in at.info]
    return re.sub(r"\\([!-/:-@\[-`{-~])", r"\1", "\n".join(str(p) for p in parts))


def test_home(app_env):
    at = _run()
    assert not at.exception
    assert at.title[0].value == "Copy Suppression Explorer"
    assert "synthetic" in _text(at).lower()
    assert len(at.dataframe) >= 1  # paper vs artifacts table


def test_empty_state_without_artifacts(tmp_path, monkeypatch):
    monkeypatch.setenv("CSE_ARTIFACTS", str(tmp_path / "nothing-here"))
    at = _run()
    assert not at.exception
    for page in ("views/browse.py", "views/circuits.py", "views/cspa.py", "views/live.py"):
        at.switch_page(page)
        at.run()
        assert not at.exception
        assert "python -m precompute run --model toy" in "\n".join(c.value for c in at.code)


def test_corrupt_artifacts_are_explained(tmp_path, monkeypatch, toy_artifacts):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(toy_artifacts, bad)
    (bad / "manifest.json").write_text("{broken")
    monkeypatch.setenv("CSE_ARTIFACTS", str(bad))
    at = _run("views/browse.py")
    assert not at.exception
    assert "not valid JSON" in _text(at)


def test_browse_interactions(app_env):
    at = _run("views/browse.py")
    assert not at.exception
    assert "cse-strip" in _text(at)
    at.number_input(key="browse_seq").set_value(7).run()
    assert not at.exception
    assert at.query_params["seq"] == ["7"] or at.query_params["seq"] == "7"
    at.number_input(key="browse_pos").set_value(20).run()
    assert "Position 20" in _text(at)
    at.sidebar.radio(key="browse_effect").set_value("both").run()
    at.sidebar.radio(key="browse_ln").set_value("unfrozen").run()
    at.sidebar.selectbox(key="browse_metric").set_value("KL(clean ‖ ablated)").run()
    at.sidebar.toggle(key="browse_extreme").set_value(True).run()
    assert not at.exception
    assert "KL (both_unfrozen)" in [m.label for m in at.metric]
    at.text_input(key="browse_filter").set_value("zzzz-no-such-token").run()
    assert "No token matches" in _text(at)


def test_browse_deep_link_and_bad_links(app_env):
    at = _run("views/browse.py", query={"seq": "3", "pos": "11", "head": "1.2"})
    assert not at.exception
    assert at.number_input(key="browse_seq").value == 3
    assert "Position 11" in _text(at)
    for query, message in (({"seq": "abc"}, "not a whole number"), ({"seq": "-4"}, "between 0 and 19"),
                           ({"pos": "9999"}, "between 0 and 47"), ({"head": "10.7"}, "these artifacts have 1.2")):
        at = _run("views/browse.py", query=query)
        assert not at.exception
        assert message in _text(at), query


def test_circuits_page(app_env):
    at = _run("views/circuits.py")
    assert not at.exception
    at.text_input(key="circ_token").set_value(" the").run()
    assert not at.exception
    assert "itself is number" in _text(at)
    at.radio(key="circ_focus").set_value("destination").run()
    assert not at.exception
    at.text_input(key="circ_token").set_value("kanosa teri").run()
    assert "not one" in _text(at) and not at.exception
    at.text_input(key="circ_token").set_value("").run()
    assert "Type a token" in _text(at)
    at.text_input(key="circ_token").set_value("'\" the'\"").run()
    assert not at.exception


def test_live_page_submit_prompt(app_env):
    at = _run("views/live.py")
    assert not at.exception
    assert "press **Analyse**" in _text(at)
    at.text_area(key="live_text_(type your own)").set_value("The kanosa of the teri is kanosa.")
    at.button[0].click().run()
    assert not at.exception
    assert "cse-strip" in _text(at)
    assert "Position" in _text(at)


@pytest.mark.parametrize("prompt, message", [("   \n\t ", "prompt is empty"), ("", "Type a prompt")])
def test_live_page_bad_prompts(app_env, prompt, message):
    at = _run("views/live.py")
    at.text_area(key="live_text_(type your own)").set_value(prompt)
    at.button[0].click().run()
    assert not at.exception
    assert message in _text(at)


def test_cspa_page(app_env):
    at = _run("views/cspa.py")
    assert not at.exception
    labels = [m.label for m in at.metric]
    assert "Effect explained (KL)" in labels
    assert "Click a point" in _text(at)


def test_circuits_vocabulary_search(app_env):
    at = _run("views/circuits.py")
    at.text_input(key="circ_search").set_value("kanos").run()
    assert not at.exception
    (pills,) = at.get("button_group")
    assert "' kanosa'" in pills.options
    pills.set_value(" kanosa").run()  # a result is clickable: it opens the token
    assert not at.exception and at.text_input(key="circ_token").value == " kanosa"
    assert "' kanosa' itself is number" in _text(at)
    at.text_input(key="circ_search").set_value("qqqqqq").run()
    assert "No token contains" in _text(at)


def test_browse_pages_do_not_import_torch_or_transformer_lens():
    """Browsing needs no model: the modules the browse pages use pull in neither torch nor TransformerLens."""
    import subprocess
    import sys

    code = ("import sys; import app.state, app.sequence, app.params, app.render.tokens, "
            "precompute.store.record_arrays, precompute.science.circuit_bars, precompute.jobs.report, precompute.data.tokenization; "
            "print('transformer_lens' in sys.modules, 'torch' in sys.modules)")
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False False"
