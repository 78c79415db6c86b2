"""Every page under streamlit.testing.v1.AppTest against toy artifacts made by the test suite."""

import re
from pathlib import Path

import pytest

from .app_helpers import _run, _text, strips

TIER = "model"  # this file's test tier (tests/conftest.py); a test marked otherwise is in that tier


@pytest.fixture
def app_env(toy_artifacts, monkeypatch):
    monkeypatch.setenv("CSE_ARTIFACTS", str(toy_artifacts))
    return toy_artifacts


def test_home(app_env):
    at = _run()
    assert not at.exception
    assert at.title[0].value == "Copy Suppression Explorer"
    assert "synthetic" in _text(at).lower()
    assert len(at.dataframe) >= 1  # paper vs artifacts table


@pytest.mark.fast
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
    (strip,) = strips(at)
    assert "cse-strip" in strip and 'data-pos="3"' in strip  # a component: a click selects without a reload
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
    for query, message in (
        ({"seq": "abc"}, "not a whole number"),
        ({"seq": "-4"}, "between 0 and 19"),
        ({"pos": "9999"}, "between 0 and 47"),
        ({"head": "10.7"}, "choose one of 1.2"),
    ):
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


@pytest.mark.parametrize(("prompt", "message"), [("   \n\t ", "prompt is empty"), ("", "Type a prompt")])
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


@pytest.mark.fast
def test_browse_pages_do_not_import_torch_or_transformer_lens():
    """Browsing needs no model: the modules the browse pages use pull in neither torch nor TransformerLens."""
    import subprocess
    import sys

    code = (
        "import sys; import app.state, app.sequence, app.state.url, app.render.tokens, precompute.paper, "
        "precompute.store.record_arrays, precompute.science.circuit_bars, precompute.jobs.report, "
        "precompute.data.tokenization; "
        "print('transformer_lens' in sys.modules, 'torch' in sys.modules)"
    )
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False False"


def test_survey_page(survey_env, monkeypatch):
    import json

    monkeypatch.setenv("CSE_ARTIFACTS", str(survey_env))
    at = _run("views/survey.py")
    assert not at.exception
    assert at.title[0].value == "Head survey"
    fig = json.loads(at.get("plotly_chart")[0].proto.spec)
    names = sorted(t.get("name") for t in fig["data"])
    llama = json.loads((survey_env / "survey-llama" / "survey.json").read_text())["model"]["model_name"]
    assert names == sorted([Path(llama).name, "toy (synthetic)"])  # the models' names, not the folders'
    colours = {t["marker"]["color"] for t in fig["data"]}
    assert len(colours) == 2  # one distinct colour per model
    assert sum(len(t["x"]) for t in fig["data"]) == 12 + 3 * 4  # every head of both models
    # the toy tokenizer has no single-token names: IOI is NaN with its reason, and x defaults to a scored metric
    assert at.selectbox(key="survey_x").value == "ov_top10"
    at.selectbox(key="survey_x").set_value("ioi_copy_suppression").run()
    assert "100% of heads have no value" in _text(at) and "single-token" in _text(at)
    assert "toy (synthetic) has no value on these axes" in _text(at)  # said, not a legend entry without points
    fig = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert "toy (synthetic)" not in [t.get("name") for t in fig["data"]]
    at.selectbox(key="survey_x").set_value("ov_top10").run()
    # colour by depth: one trace with a colour per head; the family filter keeps one model
    at.radio(key="survey_colour").set_value("depth (layer / n_layers)").run()
    fig = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert len(fig["data"]) == 1 and max(fig["data"][0]["marker"]["color"]) < 1
    assert sorted(at.multiselect(key="survey_families").options) == ["GPT-2 (synthetic toy)", "Llama"]
    at.multiselect(key="survey_families").set_value(["Llama"]).run()
    fig = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert len(fig["data"][0]["x"]) == 12
    at.multiselect(key="survey_families").set_value([]).run()
    assert "No head passes these filters" in _text(at)


@pytest.mark.fast
def test_survey_page_without_surveys_shows_the_command(tmp_path, monkeypatch):
    monkeypatch.setenv("CSE_ARTIFACTS", str(tmp_path))
    at = _run("views/survey.py")
    assert not at.exception
    assert "python -m precompute survey --model toy" in "\n".join(c.value for c in at.code)


def test_survey_page_during_the_demo_build_waits_for_the_survey(tmp_path, monkeypatch, toy_artifacts):
    """While the demo build runs, the page says the survey is on its way (not "No survey found") and opens it
    once it is written; the sidebar says what is being built."""
    import os
    import shutil

    from app import discovery, state

    shutil.copytree(toy_artifacts, tmp_path / "toy-demo")
    monkeypatch.delenv("CSE_ARTIFACTS", raising=False)
    monkeypatch.setattr(state.artifacts, "DEFAULT_DIR", tmp_path)
    discovery.write_status(tmp_path, state="building", what="SmolLM2-135M's head survey", pid=os.getpid())
    at = _run("views/survey.py")
    assert not at.exception
    text = _text(at)
    assert "No survey yet" in text and "SmolLM2-135M's head survey" in text and "No survey found" not in text
    assert any("Still building" in i.value for i in at.sidebar.info)
    discovery.write_status(tmp_path, state="done", path=str(tmp_path / "toy-demo"))
    at.run()
    assert "No survey found" in _text(at) and not at.sidebar.info


def test_survey_click_targets(survey_env):
    from app.survey_data import run_command, runs_with_head
    from precompute.store.survey import read_survey

    _, manifest = read_survey(survey_env / "survey-toy")
    assert runs_with_head("toy", "1.2", [str(survey_env / "run")]) == [str(survey_env / "run")]
    assert runs_with_head("toy", "0.1", [str(survey_env / "run")]) == []
    assert run_command(manifest, "0.1") == (
        "python -m precompute run --model toy --heads 0.1 --dataset synthetic --out artifacts/toy-0_1"
    )
    _, llama = read_survey(survey_env / "survey-llama")
    cmd = run_command(llama, "2.3")
    assert cmd.startswith(f"python -m precompute run --model {llama['model']['model_name']} --heads 2.3")


@pytest.mark.fast
def test_survey_hover_escapes_model_names():
    import pandas as pd

    from app.survey_data import LABELS, hover_text

    row = pd.Series({"model": "<img src=x onerror=alert(1)>", "name": "1.2", **{k: 0.5 for k in LABELS}})
    text = hover_text(row)
    assert "<img" not in text and "&lt;img" in text


def _submit(at, label):
    next(b for b in at.button if b.label == label).click().run()
    return at


def test_prompt_pairs_page(app_env):
    import json

    at = _run("views/pairs.py")
    assert not at.exception
    assert at.title[0].value == "Prompt pairs"
    at.radio(key="pairs_set").set_value("repeated tokens (synthetic text)").run()
    at.slider(key="pairs_n").set_value(16)
    _submit(at, "Analyse")
    assert not at.exception
    assert [s.value for s in at.subheader][:3] == ["Prompts", "Heads", "Patching"]
    assert len(at.dataframe[0].value) == 16
    keys = [c.proto.id for c in at.get("plotly_chart")]
    assert len(keys) >= 4 + 6 * 2 + 1  # lens, layers, heads, pattern; 6 grids twice; agreement
    heads = json.loads(at.get("plotly_chart")[2].proto.spec)
    z = heads["data"][0]["z"]
    assert len(z) == 3 and len(z[0]) == 4 and heads["data"][0]["zmid"] == 0
    # the toy's planted head suppresses the repeated answer: the most negative head, picked by default
    pick = next(b for b in at.selectbox if b.label.startswith("Head to inspect"))
    assert pick.value == "1.2"
    assert "Open head 1.2 in Browse Examples" in str([p.proto for p in at.get("page_link")])
    pick.set_value("0.0").run()
    assert "Head 0.0 has no artifacts in this set" in _text(at)
    command = "\n".join(c.value for c in at.code)
    assert "--model toy --heads 0.0 --dataset" in command and "\\" not in command  # a command, no markdown escapes
    assert at.query_params["head"] in ("0.0", ["0.0"])
    # the heads heatmap spans its cells: layers 0..2 top to bottom, heads 0..3
    assert heads["layout"]["yaxis"]["range"] == [2.5, -0.5] and heads["layout"]["xaxis"]["range"] == [-0.5, 3.5]
    _submit(at, "Measure self-repair")
    assert not at.exception
    assert "downstream components changed their direct contributions" in _text(at)
    assert "Correlation of attribution with activation patching" in _text(at)


def test_prompt_pairs_says_it_is_loading_before_it_loads_the_model(app_env, monkeypatch):
    """A first visit waits for torch, the model and its prompt sets: the page shows a spinner around that wait
    (it used to show only its title for seconds)."""
    import contextlib

    import streamlit

    from app import live_model

    events: list[tuple] = []
    real_spinner, real_get = streamlit.spinner, live_model.get_model

    @contextlib.contextmanager
    def spinner(text="", **kw):
        events.append(("spinner", text))
        with real_spinner(text, **kw):
            yield
        events.append(("spinner done", text))

    def get_model(arts):
        events.append(("get_model",))
        return real_get(arts)

    monkeypatch.setattr(streamlit, "spinner", spinner)
    monkeypatch.setattr(live_model, "get_model", get_model)
    at = _run("views/pairs.py")
    assert not at.exception
    i = events.index(("get_model",))
    opened = [e[1] for e in events[:i] if e[0] == "spinner"]
    assert opened and "Loading" in opened[-1] and "prompt sets" in opened[-1]
    assert ("spinner done", opened[-1]) in events[i + 1 :]
    assert at.title[0].value == "Prompt pairs"


def test_prompt_pairs_bad_input(app_env):
    at = _run("views/pairs.py")
    assert at.radio(key="pairs_set").value == "repeated tokens (synthetic text)"  # the toy has no one-token names
    radio = at.radio(key="pairs_set")
    captions = dict(zip(radio.options, [c.strip() for c in radio.proto.captions]))
    # the sets the toy's tokenizer cannot build say why under their names, and cannot be analysed
    assert "single-token English first names" in captions["IOI (generated)"]
    assert all("prompts of one length" in captions[f"preset: {p}"] for p in ("pronouns", "antonyms", "sizes"))
    assert captions["repeated tokens (synthetic text)"] == "" and captions["your own pairs"] == ""
    radio.set_value("IOI (generated)").run()
    assert "IOI (generated) cannot be analysed here" in _text(at)
    assert next(b for b in at.button if b.label == "Analyse").disabled
    at.radio(key="pairs_set").set_value("your own pairs").run()
    at.text_area(key="pairs_text").set_value("<b>the teri</b> | the zuda")
    _submit(at, "Analyse")
    assert "does not have four fields" in _text(at)
    at.text_area(key="pairs_text").set_value("the teri of the | the zuda of the | teri | kanosa teri")
    _submit(at, "Analyse")
    assert "is 2 tokens, not one" in _text(at) or "not one" in _text(at)
    at.text_area(key="pairs_text").set_value("<b>x</b> the teri of the | <b>x</b> the zuda of the | teri | zuda")
    _submit(at, "Analyse")
    assert not at.exception
    assert at.dataframe[0].value["clean"][0].startswith("<b>x</b>")  # shown as text, in a table


def test_long_and_link_like_values_in_a_link_are_cut_and_never_links(app_env):
    """A 5,000-digit ?seq= is "too long" in a short message; URLs and www. names in ?head= are broken by a word
    joiner (U+2060) so Streamlit's markdown cannot auto-link them."""
    at = _run("views/browse.py", query={"seq": "9" * 5000, "head": "see http://127.0.0.1:9/evil www.evil.example"})
    assert not at.exception
    warnings = [w.value for w in at.warning if "Ignored the link" in w.value]
    assert len(warnings) == 2 and all(len(w) < 200 for w in warnings)
    assert any("too long for a number between 0 and 19" in w for w in warnings)
    head_warning = next(w for w in warnings if "head=" in w)
    assert "…" in head_warning and "http\u2060" in head_warning
    assert "http:" not in head_warning.replace("\\", "") and "www." not in head_warning.replace("\\", "")


def test_a_live_link_analyses_its_prompt_and_keeps_it(app_env):
    at = _run("views/live.py", query={"prompt": "The kanosa of the teri is kanosa."})
    assert not at.exception
    assert "cse-strip" in _text(at) and "kanosa" in _text(at)
    assert at.query_params["prompt"] in ("The kanosa of the teri is kanosa.", ["The kanosa of the teri is kanosa."])


def test_clicking_a_heatmap_cell_selects_that_head_once(app_env):
    """A click on the heads heatmap (its clickable markers) picks that head; picking another in the box afterwards
    is not overridden by the click still selected in the chart."""
    at = _run("views/pairs.py", query={"prompts": "repeat"})
    _submit(at, "Analyse")
    at.session_state["pairs_heads"] = {"selection": {"points": [{"x": 2, "y": 0, "curve_number": 1}]}}
    at.run()
    pick = next(b for b in at.selectbox if b.label.startswith("Head to inspect"))
    assert not at.exception and pick.value == "0.2" and at.query_params["head"] in ("0.2", ["0.2"])
    pick.set_value("2.3").run()
    assert next(b for b in at.selectbox if b.label.startswith("Head to inspect")).value == "2.3"


def test_prompt_pairs_opens_on_its_links_set_and_head(app_env):
    """?prompts= picks the prompt set by its short name, ?head= the head to inspect once the analysis is there; a failed
    analysis clears the previous result."""
    at = _run("views/pairs.py", query={"prompts": "repeat", "head": "0.1"})
    assert not at.exception and at.radio(key="pairs_set").value == "repeated tokens (synthetic text)"
    _submit(at, "Analyse")
    pick = next(b for b in at.selectbox if b.label.startswith("Head to inspect"))
    assert pick.value == "0.1" and at.query_params["prompts"] in ("repeat", ["repeat"])
    at.radio(key="pairs_set").set_value("your own pairs").run()
    at.text_area(key="pairs_text").set_value("one line without fields")
    _submit(at, "Analyse")
    assert "does not have four fields" in _text(at)
    assert not [s.value for s in at.subheader if s.value == "Prompts"]  # the old result is gone


def test_a_full_queue_says_busy_instead_of_waiting(app_env, monkeypatch):
    """With $CSE_MAX_WAITING=0 and the shared model busy, a live analysis is refused at once with "busy"."""
    import threading

    from app import live_model

    monkeypatch.setenv("CSE_MAX_WAITING", "0")
    live_model._model.clear(), live_model._analyzer.clear()
    try:
        at = _run("views/live.py")
        model = live_model._model("toy")
        assert model.queue.max_waiting == 0
        inside, release = threading.Event(), threading.Event()

        def hold():
            with model.queue.turn():
                inside.set()
                release.wait(30)

        holder = threading.Thread(target=hold)
        holder.start()
        inside.wait(10)
        try:
            at.text_area(key="live_text_(type your own)").set_value("A teri of the kanosa, busy.")
            _submit(at, "Analyse")
            assert not at.exception
            assert "The model is busy" in _text(at) and "Try again in a moment" in _text(at)
        finally:
            release.set()
            holder.join(10)
        _submit(at, "Analyse")
        assert "cse-strip" in _text(at)  # free again: the same prompt is analysed
    finally:
        live_model._model.clear(), live_model._analyzer.clear()


def test_a_bad_queue_bound_is_explained(app_env, monkeypatch):
    from app import live_model

    monkeypatch.setenv("CSE_MAX_WAITING", "many")
    live_model._model.clear()
    try:
        at = _run("views/pairs.py")
        assert not at.exception and "CSE_MAX_WAITING must be a whole number, got 'many'" in _text(at)
    finally:
        live_model._model.clear()


def test_live_page_any_head_last_position_and_answer_tokens(app_env):
    """Live analysis of a head the set did not store, opened at the prompt's last token, with answer tokens whose
    table equals ``science.answers`` on the same prompt (the page's variant: direct effect, frozen norm)."""
    import torch

    from precompute import load_model
    from precompute.science.analysis import mean_result
    from precompute.science.answers import answer_effects
    from precompute.store.reader import open_artifacts

    text = "The kanosa of the teri is kanosa. A kanosa was in the teri with a"
    at = _run("views/live.py", query={"head": "0.3", "prompt": text, "answer": " kanosa| teri|zzqq"})
    assert not at.exception, at.exception
    assert at.sidebar.selectbox(key="live_head").value == "0.3"
    assert "0.3" in at.sidebar.selectbox(key="live_head").options[-9:]  # every head of the model is offered
    pos_box = next(n for n in at.number_input if n.label == "Token position")
    toy = load_model("toy")
    ids = toy.tokenizer(text)["input_ids"]
    assert pos_box.value == len(ids) - 1  # the last token
    df = next(d.value for d in at.dataframe if "logit ablated" in d.value.columns)
    assert list(df["token"][:2]) == ["' kanosa'", "' teri'"]
    arts = open_artifacts(app_env)
    n_mean = arts.manifest["hyperparameters"]["n_mean"]
    mu = mean_result(toy, torch.stack([torch.as_tensor(arts.tokens(i)).long() for i in range(n_mean)]), (0, 3))
    want = answer_effects(toy, torch.tensor([ids]), (0, 3), mu, len(ids) - 1, list(df["id"]))
    assert df["logit ablated"].tolist() == pytest.approx(want.logit_ablated.tolist(), abs=1e-4)
    assert df["DLA clean"].tolist() == pytest.approx(want.dla_clean.tolist(), abs=1e-4)
    assert re.search(r"'zzqq' is \d+ tokens \(.*\): its first is used", _text(at))  # several tokens: the first
    sentence = re.search(r"Head 0\.3 (raises|lowers|leaves)[^\n]*", _text(at)).group(0)
    d = float(df["logit clean"][0] - df["logit ablated"][0])
    assert ("raises" if d > 0 else "lowers") in sentence


def test_cspa_survey_and_circuits_pages_offer_downloads(app_env, survey_env, monkeypatch):
    for page in ("views/cspa.py", "views/circuits.py"):
        at = _run(page)
        assert not at.exception
        labels = [el.proto.label for el in at.get("download_button")]
        assert labels[-2:] == ["Download CSV", "Download JSON"], page
    monkeypatch.setenv("CSE_ARTIFACTS", str(survey_env))
    at = _run("views/survey.py")
    assert not at.exception
    assert [el.proto.label for el in at.get("download_button")][-2:] == ["Download CSV", "Download JSON"]


def test_a_set_whose_licence_asks_for_a_notice_shows_it(toy_artifacts, tmp_path, monkeypatch):
    """A set made from weights whose licence asks its notice to travel with derivatives (Gemma) says so in the
    sidebar on every page (the notice read from the manifest's provenance, shown as text)."""
    import json
    import shutil

    copy = tmp_path / "noticed"
    shutil.copytree(toy_artifacts, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["model"]["gguf"] = {
        "notice": "Gemma is provided under and subject to the Gemma Terms of Use found at ai.google.dev/gemma/terms"
    }
    (copy / "manifest.json").write_text(json.dumps(manifest))
    monkeypatch.setenv("CSE_ARTIFACTS", str(copy))
    at = _run("views/browse.py")
    assert not at.exception
    shown = [i.value for i in at.sidebar.info]
    assert any("Gemma Terms of Use" in v and "licence/" in v for v in shown), shown


def test_live_compare_with_any_head_of_the_model(app_env):
    at = _run("views/live.py", query={"prompt": "The kanosa of the teri is kanosa."})
    box = at.sidebar.selectbox(key="live_compare")
    assert "0.0" in box.options and "2.3" in box.options and box.options[0] == "(none)"
    box.set_value("0.0").run()
    assert not at.exception
    assert len(strips(at)) == 2 and "Head 0.0" in _text(at)


def test_prompt_pairs_top_cells_and_stop(app_env):
    """Activation patching of the top N cells attribution ranks: the page says how many of how many, blank cells
    (NaN) elsewhere; after a Stop, the cells patched so far are listed, largest first."""
    import math

    at = _run("views/pairs.py")
    at.radio(key="pairs_set").set_value("repeated tokens (synthetic text)").run()
    at.number_input(key="pairs_top").set_value(5)
    _submit(at, "Analyse")
    assert not at.exception
    res = at.session_state["pairs_result"]
    assert res.patched_cells == 5 and res.total_cells > 5
    assert f"measured the 5 of {res.total_cells} cells" in _text(at)
    values = [float(v) for g in res.patch.values() for v in g.flatten()]
    assert sum(not math.isnan(v) for v in values) == 5
    # a Stop mid-way: the page reruns with no result and the grids patched so far
    partial = {g: t.copy() for g, t in res.patch.items()}  # arrays, as the model boundary hands them out
    at.session_state["pairs_partial"] = partial
    del at.session_state["pairs_result"]
    at.run()
    assert "Stopped after 5 activation-patched cells" in _text(at)
    table = at.dataframe[0].value
    assert len(table) == 5 and list(table["recovered"].abs()) == sorted(table["recovered"].abs(), reverse=True)


@pytest.mark.fast
def test_a_page_reaches_only_its_own_session_values(monkeypatch):
    """``state.page_state``: a page's view of the session, keyed by its prefix; another page's key is refused."""
    from app.state import session

    store: dict = {"browse_seq": 3, "_browse_picked": (1, 2), "pairs_head": "1.2"}
    monkeypatch.setattr(session.st, "session_state", store)
    mine = session.page_state("browse")
    assert mine["browse_seq"] == 3 and "_browse_picked" in mine and sorted(mine) == ["_browse_picked", "browse_seq"]
    mine["browse_pos"] = 7
    assert store["browse_pos"] == 7 and mine.setdefault("browse_pos", 0) == 7 and mine.pop("browse_pos") == 7
    with pytest.raises(KeyError, match="not one of this page's keys"):
        mine["pairs_head"]
    with pytest.raises(KeyError, match="browse_"):
        mine["browsers"] = 1  # the prefix is a whole word
    with pytest.raises(KeyError):
        mine.get("pairs_head")  # not a silent None either
    assert mine.get("browse_nothing", 5) == 5 and mine.pop("browse_nothing", None) is None
