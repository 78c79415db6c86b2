"""Shared fixtures: offline, deterministic models and token batches built by the project's own code; and the test
tiers (markers): ``fast`` (no model), ``model`` (a model built here: the toy, tiny random Hugging Face folders),
``browser`` (Debian's Chromium against a running app), ``real_model`` (the trained SmolLM2-135M). ``make test``
runs them all; ``pytest -m fast`` is the quick loop."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("CSE_CACHE_DIR", os.path.join(os.path.dirname(__file__), "..", ".cache"))
# no background model loads started by opening a set (app.live_model.warm) while tests run in the same process:
# tests/test_warm_model.py turns it on where it is what is tested
os.environ.setdefault("CSE_WARM_MODEL", "0")

import pytest  # noqa: E402
import torch  # noqa: E402

# The tensors' shape annotations (jaxtyping) checked at run time (beartype) wherever the model tier runs the
# analysis's inner steps: installed before any precompute module is imported (CSE_JAXTYPING=0 turns it off). The
# public entry points are left out: they take any input and refuse a bad one with a message (docs/BAD_INPUT.md).
CHECKED_SHAPES = [
    "precompute.science.scoring",
    "precompute.science.survey_effects",
    "precompute.science.row_reductions",
    "precompute.science.readout",
    "precompute.science.tuned_lens",
    "precompute.science.patching_fast",
    "precompute.science.ov_dynamic",
    "precompute.models.heads",
    "precompute.models.rotary",
    "precompute.models.norm",
    "precompute.models.blocks",
]
if os.environ.get("CSE_JAXTYPING", "1") != "0":
    from jaxtyping import install_import_hook  # noqa: E402

    install_import_hook(CHECKED_SHAPES, "beartype.beartype")


@pytest.fixture(scope="session")
def toy():
    from precompute import load_model

    return load_model("toy")


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory):
    """A tiny random Llama (rotary positions, RMSNorm, grouped-query attention) with the toy tokenizer."""
    from precompute.models.loading import load_model

    from .factories import make_model_folder

    return load_model(str(make_model_folder("llama", tmp_path_factory.mktemp("tiny-llama"))))


@pytest.fixture(scope="session")
def tiny():
    """A tiny GPT-2 with random weights (HF init), the toy tokenizer, and the paper's weight processing."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from precompute.models.bridge import boot as _boot
    from precompute.models.loading import LoadedModel
    from precompute.models.tokenizers import load_local_tokenizer

    tok = load_local_tokenizer("toy")
    torch.manual_seed(1)
    hf = GPT2LMHeadModel(
        GPT2Config(vocab_size=len(tok), n_positions=64, n_embd=64, n_layer=3, n_head=4, n_inner=128)
    ).eval()
    return LoadedModel(model=_boot(hf, tok, "tiny", "cpu"), name="toy", provenance={"synthetic": True})


@pytest.fixture(scope="session")
def tiny_bias():
    """Like ``tiny`` but with untied embeddings and an unembedding bias, so code paths for b_U != 0 are tested."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from precompute.models.bridge import boot as _boot
    from precompute.models.loading import LoadedModel
    from precompute.models.tokenizers import load_local_tokenizer

    tok = load_local_tokenizer("toy")
    torch.manual_seed(2)
    cfg = GPT2Config(
        vocab_size=len(tok), n_positions=64, n_embd=64, n_layer=3, n_head=4, n_inner=128, tie_word_embeddings=False
    )
    hf = GPT2LMHeadModel(cfg).eval()
    hf.lm_head = torch.nn.Linear(64, len(tok), bias=True)
    with torch.no_grad():
        hf.lm_head.bias.normal_(0, 0.5)
    lm = LoadedModel(model=_boot(hf, tok, "tiny-bias", "cpu"), name="toy", provenance={"synthetic": True})
    assert float(lm.model.b_U.abs().max()) > 0.1
    return lm


@pytest.fixture(scope="session")
def wide():
    """A tiny GPT-2 body with GPT-2's real 50,257-token vocabulary and tokenizer: vocabulary-sized rows as long as
    the real model's, so the CPU row reductions (``science.row_reductions``) take their grouped path."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from precompute.models.bridge import boot as _boot
    from precompute.models.loading import LoadedModel
    from precompute.models.tokenizers import load_local_tokenizer

    tok = load_local_tokenizer("gpt2")
    torch.manual_seed(3)
    hf = GPT2LMHeadModel(
        GPT2Config(vocab_size=len(tok), n_positions=64, n_embd=64, n_layer=3, n_head=4, n_inner=128)
    ).eval()
    return LoadedModel(model=_boot(hf, tok, "wide", "cpu"), name="wide", provenance={"synthetic": True})


def doc_tokens(tokenizer, n: int, length: int, seed: int = 0) -> torch.Tensor:
    """[n, length] token ids of synthetic documents, BOS first."""
    from precompute.data.synthetic import corpus
    from precompute.data.tokenization import encode

    rows = []
    for doc in corpus(n_docs=4 * n + 8, seed=seed, min_sentences=30):
        ids = encode(tokenizer, doc)
        if len(ids) >= length:
            rows.append(ids[:length])
        if len(rows) == n:
            break
    return torch.tensor(rows)


def real_tokens(tokenizer, n: int, length: int) -> torch.Tensor:
    """[n, length] token ids of real English (``python-docs``: CPython's reference manual), start token first."""
    from precompute.data.selection import select_sequences
    from precompute.data.sources import load_documents

    return torch.tensor(select_sequences(load_documents("python-docs"), tokenizer, n, length))


@pytest.fixture(scope="session")
def toy_tokens(toy):
    return doc_tokens(toy.tokenizer, 3, 40, seed=5)


def write_text_dataset(folder, n_docs: int = 60, seed: int = 3, fmt: str = "txt"):
    """A local dataset file of the project's synthetic documents (.txt: blank-line separated; .jsonl)."""
    import json
    from pathlib import Path

    from precompute.data.synthetic import corpus

    docs = corpus(n_docs=n_docs, seed=seed, min_sentences=15, max_sentences=40)
    path = Path(folder) / f"docs.{fmt}"
    if fmt == "txt":
        path.write_text("\n\n".join(docs) + "\n")
    else:
        path.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    return path


SMALL_RUN = dict(
    model="toy", heads=((1, 2),), n_seqs=20, seq_len=48, batch_size=4, shard_size=8, n_mean=12, k=5, seed=1
)


@pytest.fixture(scope="session")
def toy_artifacts(tmp_path_factory, toy):
    """A small toy artifact folder made by the real pipeline (shared by pipeline and app tests)."""
    from precompute import RunConfig, run

    root = tmp_path_factory.mktemp("arts")
    data = write_text_dataset(root)
    out = root / "run"
    run(RunConfig(dataset=str(data), out=str(out), **SMALL_RUN), loaded=toy, log=lambda *_: None)
    return out


@pytest.fixture(scope="session")
def two_head_artifacts(tmp_path_factory, toy):
    """A toy run of two heads (the planted 1.2 and 0.1), for pages whose head comes from the URL."""
    from precompute import RunConfig, run

    root = tmp_path_factory.mktemp("arts2")
    out = root / "run"
    cfg = {**SMALL_RUN, "heads": ((1, 2), (0, 1)), "n_seqs": 8, "n_mean": 8, "shard_size": 8}
    run(RunConfig(dataset="synthetic", out=str(out), **cfg), loaded=toy, log=lambda *_: None)
    return out


@pytest.fixture(scope="session")
def survey_env(tmp_path_factory, toy_artifacts, toy):
    """A folder of runs holding the toy run and two surveys (toy and a tiny random Llama), side by side."""
    import shutil

    from precompute.jobs.survey import SurveyConfig, run_survey

    from .factories import make_model_folder

    base = tmp_path_factory.mktemp("survey-app")
    shutil.copytree(toy_artifacts, base / "run")
    small = dict(
        dataset="synthetic",
        n_seqs=4,
        seq_len=24,
        n_mean=2,
        n_repeat=4,
        repeat_len=6,
        n_ioi=4,
        circuit_rows=None,
        device="cpu",
    )
    run_survey(SurveyConfig(model="toy", out=str(base / "survey-toy"), **small), loaded=toy, log=lambda *_: None)
    llama = make_model_folder("llama", tmp_path_factory.mktemp("llama"))
    run_survey(SurveyConfig(model=str(llama), out=str(base / "survey-llama"), **small), log=lambda *_: None)
    return base


# a test that asks for one of these fixtures runs a model: it cannot be in the fast tier
MODEL_FIXTURES = {
    "toy",
    "tiny_llama",
    "tiny",
    "tiny_bias",
    "wide",
    "toy_tokens",
    "toy_artifacts",
    "two_head_artifacts",
    "survey_env",
    "live",
    "fuzz_base",
}
TIERS = ("fast", "model", "browser", "real_model")


def tier_of(marked: list[str], file_tier: str | None, fixtures: set[str], where: str) -> str:
    """A test's tier: its own tier marker (the nearest, if several), else its file's ``TIER``. A file without a
    ``TIER`` or a fast test that asks for a model fixture is an error, not a guess."""
    tier = marked[0] if marked else file_tier
    if tier not in TIERS:
        raise pytest.UsageError(f"{where}: no test tier; set TIER = one of {TIERS} in the file or mark the test")
    if tier == "fast" and MODEL_FIXTURES & fixtures:
        raise pytest.UsageError(f"{where} is in the fast tier but uses {sorted(MODEL_FIXTURES & fixtures)}")
    return tier


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items):
    """Each test gets exactly one tier marker, declared by its file (``TIER``) or by itself (see the module
    docstring); the selection by ``-m`` runs after this."""
    for item in items:
        marked = [m.name for m in item.iter_markers() if m.name in TIERS]
        tier = tier_of(marked, getattr(item.module, "TIER", None), set(item.fixturenames), item.nodeid)
        if not marked:
            item.add_marker(getattr(pytest.mark, tier))


# CI sets CSE_REQUIRE (e.g. "browser,real_model,wordnet"): a skipped test of a tier named there, or one skipped for
# want of WordNet, fails the run instead of passing quietly with less tested (.ci/run)
SKIPPED_REQUIRED: list[str] = []


def required() -> set[str]:
    return {x.strip() for x in os.environ.get("CSE_REQUIRE", "").split(",") if x.strip()}


def required_kinds(tier: str | None, reason: str) -> set[str]:
    """What a skipped test was: its tier, and "wordnet" where WordNet's absence skipped it."""
    return {tier or ""} | ({"wordnet"} if "wordnet" in reason.lower() else set())


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.skipped and required():
        tier = next((m.name for m in item.iter_markers() if m.name in TIERS), None)
        reason = str(rep.longrepr[-1]) if isinstance(rep.longrepr, tuple) else str(rep.longrepr)
        if required_kinds(tier, reason) & required():
            SKIPPED_REQUIRED.append(f"{item.nodeid}: {reason}")


def pytest_sessionfinish(session, exitstatus):
    if SKIPPED_REQUIRED:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(f"{len(SKIPPED_REQUIRED)} test(s) of a required tier (CSE_REQUIRE) were skipped:")
            for line in SKIPPED_REQUIRED:
                reporter.write_line("  " + line)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
