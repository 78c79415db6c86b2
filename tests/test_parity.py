"""The processed TransformerLens model against the original Hugging Face model: every numeric reference in the
suite runs on the processed model, so a bug in loading, weight processing or the fused-qkv drop would pass them
all. Here the log-probabilities of both must agree on the same tokens (tolerance from float32)."""

from __future__ import annotations

import copy

import pytest
import torch

from .conftest import doc_tokens

TIER = "model"  # this file's test tier (tests/conftest.py); a test marked otherwise is in that tier

TOL = 1e-4


def _hf_logprobs(hf, tokens: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return hf(tokens).logits.float().log_softmax(-1)


def _bridge_logprobs(lm, tokens: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return lm.model(tokens).float().log_softmax(-1)


def test_toy_model_equals_its_hugging_face_original(toy):
    from precompute.data.function_words import function_word_ids
    from precompute.models.toy import TOY_SEED, build_toy_hf_model, unigram_log_prior

    tok = toy.tokenizer
    hf = build_toy_hf_model(
        len(tok), tok.bos_token_id, unigram_log_prior(tok), function_word_ids(tok), seed=TOY_SEED
    ).eval()
    tokens = doc_tokens(tok, 3, 64, seed=21)
    diff = (_bridge_logprobs(toy, tokens) - _hf_logprobs(hf, tokens)).abs().max()
    assert float(diff) < TOL


@pytest.mark.parametrize(("tied", "bias"), [(True, False), (False, True)])
def test_random_gpt2_equals_its_hugging_face_original(tied, bias):
    from transformers import GPT2Config, GPT2LMHeadModel

    from precompute.models.bridge import boot as _boot
    from precompute.models.loading import LoadedModel
    from precompute.models.tokenizers import load_local_tokenizer

    tok = load_local_tokenizer("toy")
    torch.manual_seed(7)
    hf = GPT2LMHeadModel(
        GPT2Config(
            vocab_size=len(tok), n_positions=64, n_embd=64, n_layer=3, n_head=4, n_inner=128, tie_word_embeddings=tied
        )
    ).eval()
    if bias:
        hf.lm_head = torch.nn.Linear(64, len(tok), bias=True)
        with torch.no_grad():
            hf.lm_head.bias.normal_(0, 0.5)
    with torch.no_grad():  # non-trivial LayerNorm weights, so folding them is really tested
        for module in hf.modules():
            if isinstance(module, torch.nn.LayerNorm):
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0, 0.2)
    original = copy.deepcopy(hf)  # processing must not be allowed to touch the reference
    lm = LoadedModel(model=_boot(hf, tok, "parity", "cpu"), name="parity", provenance={})
    tokens = doc_tokens(tok, 2, 48, seed=5)
    diff = (_bridge_logprobs(lm, tokens) - _hf_logprobs(original, tokens)).abs().max()
    assert float(diff) < TOL


def test_parity_check_can_fail():
    """The comparison notices a wrong weight: perturb one processed matrix and the difference exceeds TOL."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from precompute.models.bridge import boot as _boot
    from precompute.models.loading import LoadedModel
    from precompute.models.tokenizers import load_local_tokenizer

    tok = load_local_tokenizer("toy")
    torch.manual_seed(8)
    hf = GPT2LMHeadModel(
        GPT2Config(vocab_size=len(tok), n_positions=64, n_embd=64, n_layer=2, n_head=4, n_inner=128)
    ).eval()
    original = copy.deepcopy(hf)
    lm = LoadedModel(model=_boot(hf, tok, "parity-bad", "cpu"), name="parity-bad", provenance={})
    with torch.no_grad():
        next(p for n, p in lm.model.named_parameters() if "mlp" in n and p.ndim == 2).mul_(1.5)
    tokens = doc_tokens(tok, 1, 32, seed=6)
    assert float((_bridge_logprobs(lm, tokens) - _hf_logprobs(original, tokens)).abs().max()) > TOL
