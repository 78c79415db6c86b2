"""Paper fidelity on GPT-2's real vocabulary (offline): the tokenizer, CSPA's exclusions, semantic neighbours, μ,
the data selection, the report's list of settings that differ, and low-precision limits."""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
import torch

from precompute import InvalidInputError
from precompute.store.reader import open_artifacts

from .conftest import SMALL_RUN

TIER = "model"  # this file's test tier (tests/conftest.py); a test marked otherwise is in that tier

ROOT = Path(__file__).resolve().parents[1]
GPT2_DIR = ROOT / "precompute" / "data" / "gpt2_tokenizer"


@pytest.fixture(scope="module")
def gpt2_tok():
    from precompute.models.tokenizers import load_local_tokenizer

    return load_local_tokenizer("gpt2")


def test_gpt2_tokenizer_files_are_the_published_ones(gpt2_tok):
    sums = {name: hashlib.sha256((GPT2_DIR / name).read_bytes()).hexdigest() for name in ("vocab.json", "merges.txt")}
    assert sums == {
        "vocab.json": "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
        "merges.txt": "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
    }
    assert len(gpt2_tok) == 50257 and gpt2_tok.bos_token_id == 50256
    assert gpt2_tok("Hello world")["input_ids"] == [15496, 995]
    assert gpt2_tok(" token")["input_ids"] == [11241]


def test_altered_tokenizer_file_is_refused(tmp_path, monkeypatch):
    import precompute.models.tokenizers as tk
    from precompute import ModelUnavailableError

    fake = tmp_path / "files"
    fake.mkdir()
    (fake / "vocab.json").write_text("{}")
    (fake / "merges.txt").write_bytes((GPT2_DIR / "merges.txt").read_bytes())
    monkeypatch.setattr(tk, "GPT2_FILES", fake)
    with pytest.raises(ModelUnavailableError, match="vocab.json is altered"):
        tk._build_gpt2(tmp_path / "out")


# ---------------------------------------------------------------- exclusions


@lru_cache(maxsize=1)
def _byte_encoder() -> dict[int, str]:
    """GPT-2's bytes -> unicode table, written out from its definition (openai/gpt-2 encoder.py)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def _reference_single_token(text: str) -> int | None:
    """A string's id when the whole string is one vocabulary entry (the only way it can be one token)."""
    vocab = json.loads((GPT2_DIR / "vocab.json").read_text())
    if text == "<|endoftext|>":
        return 50256
    return vocab.get("".join(_byte_encoder()[b] for b in text.encode("utf-8")))


def test_paper_exclusions_on_gpt2_equal_an_independent_mapping(gpt2_tok):
    from precompute.data.function_words import exclusion_ids, paper_function_ids

    strings = (
        json.loads((ROOT.parent / "shared" / "reference" / "paper-function-tokens.json").read_text())
        if (ROOT.parent / "shared").exists()
        else None
    )
    data = json.loads((ROOT / "precompute" / "data" / "paper_function_tokens.json").read_text())["strings"]
    if strings is not None:
        assert data == strings  # the shipped copy is verbatim
    ref = sorted({_reference_single_token(s) for s in data})
    assert None not in ref and len(data) == 150 and len(ref) == 147 and 50256 in ref
    ids, missing = paper_function_ids(gpt2_tok)
    assert ids == ref and missing == []
    extended, _ = exclusion_ids(gpt2_tok, "extended")
    assert len(extended) == 815 and len(set(extended) - set(ref)) == 710 and len(set(ref) - set(extended)) == 42


def test_paper_exclusions_on_another_tokenizer_report_the_rest(toy):
    from precompute.data.function_words import paper_function_ids

    ids, missing = paper_function_ids(toy.tokenizer)
    assert toy.tokenizer.bos_token_id in ids
    for text in missing:
        assert len(toy.tokenizer(text, add_special_tokens=False)["input_ids"]) != 1
    assert 0 < len(missing) < 150


def test_manifest_records_the_exclusion_list(toy_artifacts, toy):
    from precompute.data.function_words import paper_function_ids

    cspa = open_artifacts(toy_artifacts).hyperparameters["cspa"]
    ids, missing = paper_function_ids(toy.tokenizer)
    assert cspa["exclusions"] == "paper" and cspa["excluded_ids"] == ids
    assert cspa["exclusions_not_single_tokens"] == missing


def test_cspa_keeps_no_paper_excluded_source(toy):
    from precompute import CSPAConfig, analyze, mean_result
    from precompute.data.function_words import paper_function_ids

    from .conftest import doc_tokens

    tokens = doc_tokens(toy.tokenizer, 2, 40, seed=9)
    res = analyze(
        toy,
        tokens,
        (1, 2),
        mean_result(toy, tokens, (1, 2)),
        k=3,
        cspa=CSPAConfig(k_u=1.0, max_kept_shown=40),
        effects=("direct",),
        ln_modes=("frozen",),
    )
    excluded = set(paper_function_ids(toy.tokenizer)[0])
    kept_tokens = {
        int(tokens[b, p]) for b in range(2) for q in range(40) for p in res.cspa_kept_pos[b, q].tolist() if p >= 0
    }
    assert kept_tokens and not kept_tokens & excluded


# ---------------------------------------------------------------- semantic neighbours


@pytest.fixture(scope="module")
def gpt2_neighbours(gpt2_tok):
    from precompute.science.semantic import semantic_neighbours

    return semantic_neighbours(gpt2_tok)


def _lists(tok, nb, text):
    (i,) = tok(text)["input_ids"]
    return {k: [tok.decode([j]) for j in v[i].tolist() if j >= 0] for k, v in nb.items()}


needs_wordnet = pytest.mark.skipif(
    __import__("precompute.science.semantic", fromlist=["wordnet_dir"]).wordnet_dir() is None,
    reason="WordNet's database (Debian's wordnet-base) is not installed: `make wordnet`",
)


@needs_wordnet
def test_published_neighbour_examples(gpt2_tok, gpt2_neighbours):
    """The paper's examples (its Semantic page and Table 3) and the published table's entries the rules explain."""
    got = lambda t: _lists(gpt2_tok, gpt2_neighbours, t)  # noqa: E731
    assert got(" token")["equivalents"] == [" token", "token", " tokens", "Token", "Tokens", " Token", " Tokens"]
    assert got(" Berkeley")["substrings"] == ["keley", "Ber"]
    assert got("keley")["superstrings"] == [" Berkeley"]
    assert got(" Cairo") == {"equivalents": [" Cairo"], "superstrings": [], "substrings": []}
    assert " wrapping" in got(" Wrap")["equivalents"]
    assert got(" prisons")["equivalents"][:3] == [" prisons", " prison", "prison"]  # s, then its plural variant
    assert got("prison")["equivalents"][:3] == ["prison", " prison", " prisons"]
    assert got("VR")["equivalents"][:2] == ["VR", " VR"]
    assert got("!")["equivalents"] == ["!", " !"]  # the leading-space rule applies to punctuation too
    # what the published table has and the earlier rules did not (and the reverse)
    assert got(" conversion")["substrings"] == [] and got(" workload")["substrings"] == []
    assert got("anyahu")["substrings"] == []
    assert {" commander", " commanding"} <= set(got(" Commando")["equivalents"])
    assert {" doing", " dying"} <= set(got(" dog")["equivalents"])  # the -ing rules crop the lemma
    assert " alternative" not in got(" Alternate")["equivalents"]
    assert " election" in got(" electr")["equivalents"]  # an odd form that passes the one-token filter


def test_semantic_rules_step_by_step():
    """Each rule on hand-made one-token sets (no tokenizer): the family, the singles, core words, the ordering."""
    from precompute.science.semantic import core_words, family, ordered_equivalents, singles

    one = {" dog", " dogs", " doing", " dying", " Dog", "dog", "Dog", "DOG", " Mcdonald", "Mcdonald", "MCDONALD"}
    assert family("ab", one) == ["ab"]  # two letters: no word family
    assert family("dog", one)[0] == "dog" and {"dogs", "doing", "dying"} <= set(family("dog", one))
    assert "dogged" not in family("dog", one)  # " dogged" is not one token here
    # str.capitalize lowers the rest ("McDonald" -> "Mcdonald"); str.upper; every form with a leading space
    assert "McDonald" not in singles(" McDonald", one | {" McDonald"})
    assert {"Mcdonald", "MCDONALD", " Mcdonald"} <= set(singles(" McDonald", one | {" McDonald"}))
    assert singles("dog", one)[:1] == ["dog"] and set(singles("dog", one)) <= one
    assert core_words(" Berkeley") == ["Berkeley"] and core_words("keley") == ["keley"]
    assert core_words(" conversion") == [] and core_words(" 1999") == [] and core_words(" (") == []
    assert ordered_equivalents(" tokens", ["x", " Tokens", "token", " token", "tokens", " tokens"])[:4] == [
        " tokens",
        "tokens",
        " token",
        "token",
    ]
    assert ordered_equivalents("VR", ["VR", "vr", " VR"]) == ["VR", " VR", "vr"]


def test_neighbour_rules_hold_on_the_whole_vocabulary(gpt2_tok, gpt2_neighbours):
    """Rules checked on every token: itself first, then its space variant when that is one token; a byte fragment
    has only itself; a space + lower-case word has no substrings; substrings are pieces of at least 3 characters of
    the core word, longest first; superstrings are their inverse (less the equivalents), in vocabulary order."""
    vocab = [gpt2_tok.decode([i]) for i in range(len(gpt2_tok))]
    index = {}
    for i, s in enumerate(vocab):
        index.setdefault(s, i)
    one = {s for s in index if len(gpt2_tok(s)["input_ids"]) == 1}
    eq, sup, sub = (gpt2_neighbours[k].numpy() for k in ("equivalents", "superstrings", "substrings"))
    lists = {k: [[int(j) for j in row if j >= 0] for row in a] for k, a in (("eq", eq), ("sup", sup), ("sub", sub))}
    for i in range(50256):
        s, row = vocab[i], lists["eq"][i]
        assert row[0] == i
        if index[s] != i:
            continue
        if s not in one:  # a byte fragment (half of a character): only itself
            assert row == [i] and lists["sub"][i] == [], s
            continue
        assert all(vocab[j] in one for j in row), s
        space = s[1:] if s.startswith(" ") else " " + s
        if space in one and index.get(space) in row:
            assert row[1] == index[space], (s, [vocab[j] for j in row])
        pieces = lists["sub"][i]
        if s.startswith(" ") and len(s) > 1 and not s[1].isupper():
            assert pieces == [], s  # no core word
        assert [len(vocab[j]) for j in pieces] == sorted((len(vocab[j]) for j in pieces), reverse=True)
        for j in pieces:
            assert len(vocab[j]) >= 3 and vocab[j].strip() in s and j not in row
            assert i in lists["sup"][j] or i in lists["eq"][j]
        assert lists["sup"][i] == sorted(lists["sup"][i]) and not set(lists["sup"][i]) & set(row)
    for j in range(50256):
        for i in lists["sup"][j]:
            assert j in lists["sub"][i] or j in lists["eq"][i] or j in lists["sup"][i], (vocab[j], vocab[i])


def test_the_manifest_records_the_semantic_rules(toy_artifacts):
    """The manifest names the rule set and the libraries that built the table."""
    import json

    from precompute.science.semantic import RULE_SET, rules

    m = json.loads((toy_artifacts / "manifest.json").read_text())
    assert m["hyperparameters"]["semantic"] == rules() and rules()["rules"] == RULE_SET
    assert "nltk" in rules()["lemmatizer"] or "lemminflect" in rules()["lemmatizer"]


# ---------------------------------------------------------------- μ and data selection


def _paper_selection(texts: list[str], seed: int, n: int, seq_len: int, tok) -> list[list[int]]:
    """Independent re-implementation of the paper's process_webtext (the authors' code, paper §2)."""
    np.random.seed(seed)
    order = list(texts)
    np.random.shuffle(order)
    out = []
    for t in order:
        t = t.replace("\u2018", "'").replace("\u2019", "'").replace("\u201c", '"').replace("\u201d", '"')
        ids = [tok.bos_token_id] + tok(t, add_special_tokens=False, split_special_tokens=True)["input_ids"]
        if len(ids) > seq_len:
            out.append(ids[:seq_len])
        if len(out) == n:
            break
    return out


def test_data_selection_and_mu_are_the_papers(toy, tmp_path):
    from precompute import RunConfig, mean_result, run
    from precompute.data.synthetic import corpus

    docs = corpus(n_docs=60, seed=5, min_sentences=2, max_sentences=30)
    docs = [d.replace("The", "\u201cThe", 1).replace(".", "\u2019.", 1) for d in docs]  # curly quotes to normalise
    path = tmp_path / "docs.jsonl"
    path.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    cfg = dict(SMALL_RUN, dataset=str(path), out=str(tmp_path / "out"), seed=6, n_seqs=10, n_mean=6, shard_size=4)
    run(RunConfig(**cfg), loaded=toy, log=lambda *_: None)
    arts = open_artifacts(tmp_path / "out")
    expected = _paper_selection(docs, 6, 10, SMALL_RUN["seq_len"], toy.tokenizer)
    assert arts.field("tokens").tolist() == expected
    # μ: per position, the mean over the first n_mean analysed sequences, by a hooked forward in the test
    stored = torch.from_numpy(arts.mean_result())
    tokens = torch.tensor(expected[:6])
    _, cache = toy.model.run_with_cache(tokens, names_filter=["blocks.1.attn.hook_z"])
    ref = (cache["blocks.1.attn.hook_z"][:, :, 2] @ toy.model.W_O[1, 2]).mean(0)
    torch.testing.assert_close(stored, ref, atol=1e-5, rtol=0)
    assert arts.mean_count().tolist() == [6] * SMALL_RUN["seq_len"]
    torch.testing.assert_close(mean_result(toy, tokens, (1, 2)), stored, atol=1e-6, rtol=0)


def test_report_names_every_setting_that_differs(toy_artifacts):
    from precompute import paper
    from precompute.jobs.report import SETTINGS, differences, format_report
    from precompute.store.reader import Artifacts

    arts = open_artifacts(toy_artifacts)
    names = {d[0] for d in differences(arts)}
    assert {"model", "head", "seed", "n_seqs", "seq_len", "n_mean (μ from the first n analysed sequences)"} <= names
    assert "K_u" not in names and "CSPA exclusions" not in names and "data selection" not in names
    text = format_report(arts)
    assert "Settings that differ from the paper's run" in text and "seed: paper 6, this run 1" in text
    m = json.loads(json.dumps(arts.manifest))  # the same run, relabelled with the paper's settings
    m["model"]["model_name"], m["heads"] = "gpt2-small", ["10.7"]
    m["dataset"].update(name="stas/openwebtext-10k", seed=6)
    m["hyperparameters"].update(n_mean=100, indirect_excluding=[[11, 10]])
    paper_like = Artifacts.__new__(Artifacts)
    paper_like.manifest, paper_like.n_sequences, paper_like.seq_len = m, 500, 1000
    assert differences(paper_like, "10.7") == []
    assert len(SETTINGS) >= 12 and set(SETTINGS) == set(paper.RUN)


def test_low_precision_is_limited_to_the_direct_effect():
    from precompute import RunConfig

    with pytest.raises(InvalidInputError, match="direct effect only"):
        RunConfig(model="toy", dtype="bfloat16").validate()
    RunConfig(model="toy", dtype="bfloat16", effects=("direct",)).validate()
