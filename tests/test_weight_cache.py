"""The processed-weight cache (``models.weight_cache``): a cached load is the same model, bit for bit, and every
damaged, tampered or foreign entry falls back to processing the weights."""

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from precompute import analyze, load_model, mean_result
from precompute.models import weight_cache
from precompute.models.bridge import boot as _boot
from precompute.models.bridge import cached_or_full as _cached

from .conftest import doc_tokens

TIER = "model"  # this file's test tier (tests/conftest.py); a test marked otherwise is in that tier

HOOKS = ["blocks.1.hook_resid_pre", "blocks.1.attn.hook_z", "blocks.1.attn.hook_pattern", "ln_final.hook_scale"]


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("CSE_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("CSE_WEIGHT_CACHE", raising=False)
    return tmp_path / "processed"


def _tiny_loader(seed=1):
    """What load_model passes to _cached, for a tiny GPT-2 with the toy tokenizer."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from precompute.models.tokenizers import load_local_tokenizer

    tok = load_local_tokenizer("toy")
    config = GPT2Config(vocab_size=len(tok), n_positions=64, n_embd=64, n_layer=3, n_head=4, n_inner=128)

    def full():
        torch.manual_seed(seed)
        return _boot(GPT2LMHeadModel(config).eval(), tok, "tiny", "cpu")

    identity = {"spec": "tiny-test", "seed": seed, "config": config.to_json_string()}
    return identity, (lambda: weight_cache.skeleton_of(config, GPT2LMHeadModel)), (lambda: tok), full


def _load(seed=1, identity=None):
    ident, skeleton, tok, full = _tiny_loader(seed)
    return _cached(identity or ident, skeleton, tok, "tiny", "cpu", full)


def _same_model(a, b, tokens):
    with torch.inference_mode():
        la, ca = a.run_with_cache(tokens, names_filter=HOOKS)
        lb, cb = b.run_with_cache(tokens, names_filter=HOOKS)
    assert torch.equal(la, lb)
    for name in HOOKS:
        assert torch.equal(ca[name], cb[name]), name


def test_second_load_comes_from_the_cache_and_is_the_same_model(cache_dir):
    first, hit = _load()
    assert not hit
    files = list(cache_dir.glob("*.safetensors"))
    assert len(files) == 1
    second, hit = _load()
    assert hit
    tokens = doc_tokens(first.tokenizer, 2, 20, seed=3)
    _same_model(first, second, tokens)
    # the parameters are the file's tensors (memory-mapped), not copies
    state = load_file(str(files[0]))
    assert torch.equal(second.W_U, first.W_U) and torch.equal(state["unembed.weight"], first.unembed.weight)
    # the file is plain safetensors with the identity in its header; nothing in it is pickled
    with safe_open(str(files[0]), framework="pt") as fh:
        assert fh.metadata()["format"] == weight_cache.FORMAT
        assert "tiny-test" in fh.metadata()["identity"]


def test_another_identity_is_another_entry(cache_dir):
    _load(seed=1)
    other, hit = _load(seed=2)
    assert not hit  # a different seed is different weights: never served from seed 1's entry
    assert len(list(cache_dir.glob("*.safetensors"))) == 2
    ident, *_ = _tiny_loader(1)
    _, hit = _load(identity={**ident, "spec": "renamed"})
    assert not hit


@pytest.mark.parametrize("damage", ["truncated", "garbage", "foreign identity", "tampered values", "no probe"])
def test_damaged_entries_fall_back_to_processing(cache_dir, damage):
    reference, _ = _load()
    path = next(cache_dir.glob("*.safetensors"))
    data = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(b"\x00" * 64 + data[64:])
    else:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata()
        tensors = {k: v.clone() for k, v in load_file(str(path)).items()}
        if damage == "foreign identity":
            meta = {**meta, "identity": meta["identity"].replace("tiny-test", "other")}
        elif damage == "tampered values":
            tensors["blocks.0.mlp.out.weight"][0, 0] += 1.0  # the probe's logits change
        else:
            del tensors["__probe_logits__"]
        save_file(tensors, str(path), metadata=meta)
    again, hit = _load()
    assert not hit
    _same_model(reference, again, doc_tokens(reference.tokenizer, 1, 16, seed=4))
    _, hit = _load()  # the fallback rewrote a good entry
    assert hit


def test_the_cache_can_be_turned_off(cache_dir, monkeypatch):
    monkeypatch.setenv("CSE_WEIGHT_CACHE", "0")
    _, hit = _load()
    assert not hit and not list(cache_dir.glob("*"))


def test_an_unwritable_cache_still_loads(tmp_path, monkeypatch):
    ident, skeleton, tok, full = _tiny_loader()  # the tokenizer is built first, in the normal cache
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("CSE_CACHE_DIR", str(blocker))  # the weight cache cannot be written under a file
    model, hit = _cached(ident, skeleton, tok, "tiny", "cpu", full)
    assert not hit and model.cfg.n_layers == 3


def test_gpt2_small_random_cached_load_gives_identical_analysis(cache_dir):
    """The real wiring in load_model: the second load is memory-mapped and every analysis field is identical."""
    first = load_model("gpt2-small-random")
    second = load_model("gpt2-small-random")
    assert (first.weights_from_cache, second.weights_from_cache) == (False, True)
    assert first.provenance == second.provenance
    tokens = doc_tokens(first.tokenizer, 1, 24, seed=5)
    mu = mean_result(first, doc_tokens(first.tokenizer, 2, 24, seed=6), (10, 7))
    a = analyze(first, tokens, (10, 7), mu, k=5)
    b = analyze(second, tokens, (10, 7), mu, k=5)
    assert a.fields() == b.fields()
    for name in a.fields():
        assert torch.equal(a[name], b[name]), name


def test_page_out_only_touches_the_files_own_mapping(cache_dir):
    """The embedding's pages are let go and read back from the file unchanged; memory that is not the file's
    mapping (where MADV_DONTNEED would zero it) is refused."""
    first, _ = _load()
    second, hit = _load()
    assert hit
    path = next(cache_dir.glob("*.safetensors"))
    before = first.W_E.clone()
    assert weight_cache.page_out(second.W_E, path)  # the tiny W_E spans whole pages of the file
    assert torch.equal(second.W_E, before)  # read back from the file
    anon = torch.randn(64, 1024)
    kept = anon.clone()
    assert not weight_cache.page_out(anon, path)
    assert torch.equal(anon, kept)
    assert not weight_cache.page_out(first.W_E, path)  # the processed (not memory-mapped) model's own tensor
    assert torch.equal(first.W_E, before)
