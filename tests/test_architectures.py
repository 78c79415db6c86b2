"""Every architecture family the project supports, on tiny random Hugging Face folders made here (no downloads):
GPT-2, GPT-NeoX (rotary, parallel residual), Llama (RMSNorm, grouped-query attention, gated MLP) and OPT (no
per-head hook_result). Each variant of ``analyze`` is checked against a hooked full forward pass, CSPA against the
materialised reference of test_cspa, DLA and the logit lens against explicit formulas, the circuits against
brute force."""

from types import SimpleNamespace

import pytest
import torch

from precompute import CSPAConfig, InvalidInputError, analyze, load_model, mean_result
from precompute.models import architecture, blocks
from precompute.models.architecture import weight_processing
from precompute.science.circuits import circuit_ranks, effective_embedding

from .conftest import doc_tokens
from .factories import TOL, make_model_folder
from .references import _ce, _kl, reference_cspa

TIER = "model"  # this file's test tier (tests/conftest.py); a test marked otherwise is in that tier

HEAD = (1, 1)  # under grouped-query attention (Llama: 4 heads, 2 kv heads) head 1 reads kv head 0


@pytest.fixture(scope="module", params=["gpt2", "neox", "llama", "opt"])
def arch(request, tmp_path_factory):
    folder = make_model_folder(request.param, tmp_path_factory.mktemp(request.param))
    lm = load_model(str(folder))
    tokens = doc_tokens(lm.tokenizer, 2, 20, seed=11)
    mu = mean_result(lm, doc_tokens(lm.tokenizer, 3, 24, seed=12), HEAD)
    return request.param, lm, tokens, mu


def _frozen(m, resid, scale):
    c = resid - resid.mean(-1, keepdim=True) if architecture.of(m).centres else resid
    return (c / scale) @ m.W_U + m.b_U


def test_provenance_records_architecture_and_processing(arch):
    kind, lm, _, _ = arch
    p = lm.provenance
    expected = {
        "gpt2": "GPT2LMHeadModel",
        "neox": "GPTNeoXForCausalLM",
        "llama": "LlamaForCausalLM",
        "opt": "OPTForCausalLM",
    }[kind]
    assert p["architecture"] == expected
    assert p["normalization"] == ("RMSNorm" if kind == "llama" else "LayerNorm")
    assert p["weight_processing"] == weight_processing(lm.model.cfg)
    assert p["weight_processing"]["center_unembed"] is (kind != "llama")
    assert p["n_key_value_heads"] == (2 if kind == "llama" else 4)
    # parameter count from the config: the HF model's weight matrices (norms and biases aside) for an untied model
    assert p["n_params"] > 0


def test_every_variant_against_hooked_forward(arch):
    kind, lm, tokens, mu = arch
    m = lm.model
    layer, h = HEAD
    res = analyze(lm, tokens, HEAD, mu, k=5, cspa=None)
    mu_s = mu[: tokens.shape[1]]
    with torch.inference_mode():
        logits, cache = m.run_with_cache(tokens)
    r = cache[f"blocks.{layer}.attn.hook_z"][:, :, h] @ m.W_O[layer, h]
    resid, scale = cache["ln_final.hook_in"], cache["ln_final.hook_scale"]
    grabbed = {}

    def grab(x, hook):
        grabbed["x"] = x.clone()

    # the head's output replaced by its mean, inside the model: through its result where the bridge has one
    if f"blocks.{layer}.attn.hook_result" in m.hook_dict and kind != "opt":

        def ablate(x, hook):
            x = x.clone()
            x[:, :, h] = mu_s
            return x

        site = f"blocks.{layer}.attn.hook_result"
    else:

        def ablate(x, hook):
            return x - r + mu_s

        site = f"blocks.{layer}.hook_attn_out"
    with torch.inference_mode():
        both_unfrozen = m.run_with_hooks(tokens, fwd_hooks=[(site, ablate), ("ln_final.hook_in", grab)])
        indirect_unfrozen = m.run_with_hooks(
            tokens, fwd_hooks=[(site, ablate), ("ln_final.hook_in", lambda x, hook: x + r - mu_s)]
        )
        direct_unfrozen = m.run_with_hooks(tokens, fwd_hooks=[("ln_final.hook_in", lambda x, hook: x - r + mu_s)])
    refs = {
        "direct_frozen": _frozen(m, resid - r + mu_s, scale),
        "direct_unfrozen": direct_unfrozen,
        "both_frozen": _frozen(m, grabbed["x"], scale),
        "both_unfrozen": both_unfrozen,
        "indirect_frozen": _frozen(m, grabbed["x"] + r - mu_s, scale),
        "indirect_unfrozen": indirect_unfrozen,
    }
    torch.testing.assert_close(res.loss, _ce(logits, tokens), atol=TOL, rtol=0)
    assert float(res.kl_both_frozen.abs().max()) > 1e-4, "the ablation must change something for the test to bite"
    for variant, ref in refs.items():
        torch.testing.assert_close(
            res[f"delta_loss_{variant}"],
            _ce(ref, tokens) - _ce(logits, tokens),
            atol=TOL,
            rtol=0,
            msg=f"{kind} {variant}",
        )
        torch.testing.assert_close(res[f"kl_{variant}"], _kl(logits, ref), atol=TOL, rtol=0, msg=f"{kind} {variant}")


def test_dla_lens_and_attention_explicit(arch):
    kind, lm, tokens, mu = arch
    m = lm.model
    layer, h = HEAD
    res = analyze(lm, tokens, HEAD, mu, k=5, cspa=None, effects=("direct",), ln_modes=("frozen",))
    with torch.inference_mode():
        _, cache = m.run_with_cache(tokens)
    diff = cache[f"blocks.{layer}.attn.hook_z"][:, :, h] @ m.W_O[layer, h] - mu[: tokens.shape[1]]
    if architecture.of(m).centres:
        diff = diff - diff.mean(-1, keepdim=True)
    dla = (diff / cache["ln_final.hook_scale"]) @ m.W_U
    torch.testing.assert_close(res.dla_neg_values, dla.topk(5, -1, largest=False).values, atol=TOL, rtol=0)
    pre = cache[f"blocks.{layer}.hook_resid_pre"]
    if architecture.of(m).centres:
        pre = pre - pre.mean(-1, keepdim=True)
    eps = float(m.cfg.eps)
    lens = (pre / (pre.pow(2).mean(-1, keepdim=True) + eps).sqrt()) @ m.W_U + m.b_U
    torch.testing.assert_close(res.lens_topk_logprobs, lens.log_softmax(-1).topk(5, -1).values, atol=TOL, rtol=0)
    torch.testing.assert_close(res.attention, cache[f"blocks.{layer}.attn.hook_pattern"][:, h], atol=TOL, rtol=0)
    src = cache[f"blocks.{layer}.attn.hook_v"][:, :, architecture.of(m).kv_head(h)] @ m.W_O[layer, h]
    norms = src.norm(dim=-1)
    torch.testing.assert_close(res.out_norm_rel, norms / norms.max(-1, keepdim=True).values, atol=TOL, rtol=0)


def test_cspa_against_materialised_reference(arch):
    kind, lm, tokens, mu = arch
    tok = lm.tokenizer
    excluded = (tok.bos_token_id, tok(" the", add_special_tokens=False)["input_ids"][0])
    cfg = CSPAConfig(k_u=0.2, excluded_token_ids=excluded, max_kept_shown=64)
    res = analyze(lm, tokens, HEAD, mu, k=5, cspa=cfg, effects=("direct",), ln_modes=("frozen",))
    clean, ref_logits, kept = reference_cspa(lm.model, tokens, HEAD, mu, cfg)
    torch.testing.assert_close(res.delta_loss_cspa, _ce(ref_logits, tokens) - _ce(clean, tokens), atol=TOL, rtol=0)
    torch.testing.assert_close(res.kl_cspa, _kl(clean, ref_logits), atol=TOL, rtol=0)
    for (b, q), positions in kept.items():
        assert sorted({p for p in res.cspa_kept_pos[b, q].tolist() if p >= 0}) == positions


@pytest.mark.parametrize("embedding", ["W_E+mlp0", "mlp0_noattn"])
def test_circuit_ranks_brute_force(arch, embedding):
    kind, lm, _, _ = arch
    m = lm.model
    layer, h = HEAD
    kv = architecture.of(m).kv_head(h)
    w_ee = effective_embedding(lm, embedding)
    if kind != "gpt2":  # block 0 on each token alone equals the forward pass of a one-token sequence
        tokens = torch.tensor([[7], [40]])
        hooks = [("hook_pos_embed", lambda x, hook: torch.zeros_like(x))] if "hook_pos_embed" in m.hook_dict else []
        if embedding.endswith("_noattn"):
            hooks.append(("blocks.0.hook_attn_out", lambda x, hook: torch.zeros_like(x)))
        with torch.inference_mode(), m.hooks(fwd_hooks=hooks):
            _, cache = m.run_with_cache(tokens)
        site = "blocks.0.hook_mlp_out" if embedding.startswith("mlp0") else "blocks.0.hook_resid_post"
        torch.testing.assert_close(w_ee[tokens[:, 0]], cache[site][:, 0], atol=TOL, rtol=0)

    def ln(x):
        x = x - x.mean(-1, keepdim=True) if architecture.of(m).centres else x
        return x / (x.pow(2).mean(-1, keepdim=True) + float(m.cfg.eps)).sqrt()

    ov_full = w_ee @ m.W_V[layer, kv] @ m.W_O[layer, h] @ m.W_U
    qk_full = ln(m.W_U.T) @ m.W_Q[layer, h] @ m.W_K[layer, kv].T @ ln(w_ee).T
    n = ov_full.shape[0]
    ov_ref = torch.tensor([int((ov_full[i] < ov_full[i, i]).sum()) for i in range(n)])
    qk_ref = torch.tensor([int((qk_full[i] > qk_full[i, i]).sum()) for i in range(n)])
    ov = circuit_ranks(lm, HEAD, "ov", embedding)
    qk = circuit_ranks(lm, HEAD, "qk", embedding)
    assert (ov - ov_ref).abs().max() <= 1 and (ov == ov_ref).float().mean() > 0.99
    assert (qk - qk_ref).abs().max() <= 1 and (qk == qk_ref).float().mean() > 0.99


def test_grouped_query_head_reads_its_shared_value_head(arch):
    kind, lm, _, _ = arch
    expected = [0, 0, 1, 1] if kind == "llama" else [0, 1, 2, 3]
    assert [architecture.of(lm.model).kv_head(h) for h in range(4)] == expected


def test_bad_head_names_the_models_ranges(arch):
    _, lm, tokens, mu = arch
    with pytest.raises(InvalidInputError, match="layers 0-2 and heads 0-3"):
        analyze(lm, tokens, (3, 0), mu)


def test_unsupported_architecture_names_what_is_missing():
    from precompute.errors import ModelUnavailableError
    from precompute.models.architecture import check_supported

    class Cfg:
        architecture = "MadeUpForCausalLM"

    class Fake:
        cfg = Cfg()
        hook_dict = {"hook_embed": None}
        W_E = torch.zeros(1)

    with pytest.raises(ModelUnavailableError, match="MadeUpForCausalLM.*blocks.0.attn.hook_z.*W_Q"):
        check_supported(Fake())


def test_pipeline_artifacts_and_live_mode_on_a_llama_folder(tmp_path):
    """The whole path for a non-GPT-2 model: the run folder verifies, records the architecture, and the live
    analyzer (loading the artifacts' model by its spec) gives what the run stored."""
    import numpy as np

    from precompute import LiveAnalyzer, RunConfig, open_artifacts, run, schema, verify

    folder = make_model_folder("llama", tmp_path / "llama")
    out = run(
        RunConfig(
            model=str(folder),
            heads=(HEAD,),
            dataset="synthetic",
            n_seqs=4,
            seq_len=24,
            batch_size=2,
            shard_size=4,
            n_mean=2,
            k=5,
            out=str(tmp_path / "run"),
        ),
        log=lambda *_: None,
    )
    assert verify(out) == []
    arts = open_artifacts(out)
    model = arts.manifest["model"]
    assert model["architecture"] == "LlamaForCausalLM" and model["weight_processing"]["center_unembed"] is False
    live = LiveAnalyzer.for_artifacts(load_model(model["model_name"]), arts)
    tokens = arts.sequence(0, "1.1")["tokens"]
    text = live.loaded.tokenizer.decode(tokens[1:].tolist())
    res = live.analyze(text, HEAD)
    stored = arts.sequence(0, "1.1")
    assert res.record[schema.TOKENS].tolist() == stored[schema.TOKENS].tolist()  # decode/encode round trip
    for name in (schema.LOSS, schema.kl("direct_frozen"), schema.kl("cspa"), schema.delta_loss("both_unfrozen")):
        np.testing.assert_allclose(res.record[name], stored[name].astype(np.float32), atol=2e-3, err_msg=name)


def test_tokenizer_without_bos_uses_end_of_text(tmp_path):
    """Some tokenizers (Qwen2's) have no BOS: sequences then start with the end-of-text token, and that is recorded."""
    from precompute.data.tokenization import encode

    folder = make_model_folder("gpt2", tmp_path / "nobos")
    cfg_path = folder / "tokenizer_config.json"
    import json

    conf = json.loads(cfg_path.read_text())
    conf["bos_token"] = None
    cfg_path.write_text(json.dumps(conf))
    lm = load_model(str(folder))
    tok = lm.tokenizer
    assert tok.bos_token_id == tok.eos_token_id is not None
    assert lm.provenance["bos_token"] == tok.eos_token
    assert encode(tok, "the teri")[0] == tok.eos_token_id


def test_start_token_rules():
    from transformers import PreTrainedTokenizerFast

    from precompute.errors import ModelUnavailableError
    from precompute.models.loading import _set_start_token as _ensure_bos
    from precompute.models.tokenizers import load_local_tokenizer

    base = load_local_tokenizer("toy")
    tok = PreTrainedTokenizerFast(tokenizer_object=base.backend_tokenizer, eos_token=base.eos_token or "<|endoftext|>")
    assert tok.bos_token_id is None
    prov = {}
    _ensure_bos(tok, prov)
    assert tok.bos_token_id == tok.eos_token_id and prov["bos_token"] == tok.eos_token
    bare = PreTrainedTokenizerFast(tokenizer_object=base.backend_tokenizer)
    with pytest.raises(ModelUnavailableError, match="neither a BOS nor an end-of-text"):
        _ensure_bos(bare, {})
    with pytest.raises(ModelUnavailableError, match="without a tokenizer"):
        _ensure_bos(None, {})
    # a chat-turn marker as BOS: the document separator when the vocabulary has it, else a plain end-of-text token
    chat = PreTrainedTokenizerFast(
        tokenizer_object=base.backend_tokenizer, bos_token="<|im_start|>", eos_token="<|endoftext|>"
    )
    chat.add_special_tokens({"additional_special_tokens": ["<|im_start|>"]})
    prov = {}
    _ensure_bos(chat, prov)
    assert chat.bos_token == "<|endoftext|>" and chat.bos_token_id == base.convert_tokens_to_ids("<|endoftext|>")
    assert prov["start_token"]["id"] == chat.bos_token_id and "chat-turn marker" in prov["start_token"]["why"]
    from tokenizers import Tokenizer, models

    no_sep = Tokenizer(models.WordLevel({"<|im_start|>": 0, "<|im_end|>": 1, "</s>": 2, "a": 3}, unk_token="a"))
    only_eos = PreTrainedTokenizerFast(tokenizer_object=no_sep, bos_token="<|im_start|>", eos_token="</s>")
    _ensure_bos(only_eos, {})
    assert only_eos.bos_token == "</s>" and only_eos.bos_token_id == 2
    all_chat = PreTrainedTokenizerFast(tokenizer_object=no_sep, bos_token="<|im_start|>", eos_token="<|im_end|>")
    with pytest.raises(ModelUnavailableError, match="chat-turn marker"):
        _ensure_bos(all_chat, {})


def test_llama_layers_resume_bit_for_bit(tmp_path):
    """``blocks.run_from_pre`` / ``run_from_mid`` on Llama-style layers give exactly the forward pass's final
    residual stream, from every layer; other architectures without such layers are not resumable."""
    from precompute.models import blocks

    lm = load_model(str(make_model_folder("llama", tmp_path / "llama")))
    m = lm.model
    tokens = doc_tokens(lm.tokenizer, 2, 18, seed=4)
    names = [f"blocks.{layer}.{h}" for layer in range(m.cfg.n_layers) for h in ("hook_resid_pre", "hook_resid_mid")]
    with torch.inference_mode():
        _, cache = m.run_with_cache(tokens, names_filter=names + ["ln_final.hook_in"])
        final = cache["ln_final.hook_in"]
        for layer in range(m.cfg.n_layers):
            assert torch.equal(blocks.run_from_pre(m, layer, cache[f"blocks.{layer}.hook_resid_pre"]), final)
            assert torch.equal(blocks.run_from_mid(m, layer, cache[f"blocks.{layer}.hook_resid_mid"]), final)
        # a changed residual changes what follows (the layers really ran)
        bumped = blocks.run_from_mid(m, 0, cache["blocks.0.hook_resid_mid"] * 1.5)
        assert not torch.allclose(bumped, final)
    neox = load_model(str(make_model_folder("neox", tmp_path / "neox")))
    assert not architecture.of(neox.model).resumable


def test_hook_registry_spells_transformer_lens_names():
    """Every name ``models.hooks`` gives equals TransformerLens's own ``utils.get_act_name``."""
    from transformer_lens.utilities import get_act_name

    from precompute.models import hooks

    for layer in (0, 3, 11):
        assert hooks.resid_pre(layer) == get_act_name("resid_pre", layer)
        assert hooks.resid_mid(layer) == get_act_name("resid_mid", layer)
        assert hooks.resid_post(layer) == get_act_name("resid_post", layer)
        assert hooks.attn_out(layer) == get_act_name("attn_out", layer)
        assert hooks.mlp_out(layer) == get_act_name("mlp_out", layer)
        assert hooks.z(layer) == get_act_name("z", layer)
        assert hooks.v(layer) == get_act_name("v", layer)
        assert hooks.pattern(layer) == get_act_name("pattern", layer)
    assert get_act_name("embed") == hooks.EMBED and get_act_name("pos_embed") == hooks.POS_EMBED
    assert get_act_name("scale") == hooks.FINAL_SCALE and get_act_name("normalized") == hooks.FINAL_NORMALIZED
    assert hooks.every_layer(2, hooks.Z, hooks.V) == [
        "blocks.0.attn.hook_z",
        "blocks.0.attn.hook_v",
        "blocks.1.attn.hook_z",
        "blocks.1.attn.hook_v",
    ]


def test_architecture_record_per_family(tmp_path):
    """The record ``load_model`` writes: GPT-2 centres and re-runs its blocks by hand; Llama (grouped-query, RMSNorm,
    rotary) reads key/value head h // 2 and re-runs its own decoder layers; NeoX runs full forward passes."""
    gpt2 = architecture.of(load_model("toy").model)
    assert (gpt2.centres, gpt2.rerun, gpt2.rotary, gpt2.kv_head(3)) == (True, architecture.RERUN_GPT2, False, 3)
    llama = load_model(str(make_model_folder("llama", tmp_path / "llama")))
    rec = architecture.of(llama.model)
    assert (rec.centres, rec.rerun, rec.rotary) == (False, architecture.RERUN_LAYERS, True)
    assert [rec.kv_head(h) for h in range(rec.n_heads)] == [
        h // (rec.n_heads // rec.n_kv_heads) for h in range(rec.n_heads)
    ]
    assert llama.provenance["rerun"] == architecture.RERUN_LAYERS
    x = torch.randn(3, llama.model.cfg.d_model)
    torch.testing.assert_close(rec.centre(x), x)  # RMSNorm: no centring
    torch.testing.assert_close(rec.normalise(x), x / (x.pow(2).mean(-1, keepdim=True) + rec.eps).sqrt())
    torch.testing.assert_close(gpt2.centre(x), x - x.mean(-1, keepdim=True))
    neox_model = load_model(str(make_model_folder("neox", tmp_path / "neox"))).model
    neox = architecture.of(neox_model)
    assert neox.rerun is None and not neox.resumable
    # one strategy per family, chosen once: the block runner, the rotary convention, the paper's model
    assert blocks.runner(load_model("toy").model) is blocks.GPT2
    assert isinstance(blocks.runner(llama.model), blocks.DecoderLayers)
    assert blocks.runner(llama.model).inner(llama.model) is architecture.hf_decoder(llama.model)
    with pytest.raises(InvalidInputError, match="cannot be re-run"):
        blocks.runner(neox_model)
    assert (rec.model_type, rec.rotate_half, neox.rotate_half, gpt2.rotate_half) == ("llama", True, True, False)
    assert llama.provenance["rotary_convention"] == "rotate_half" and llama.provenance["paper_model"] is False
    assert not gpt2.paper_model and not rec.paper_model  # the toy is GPT-2-style but not GPT-2 small's shape
    small = SimpleNamespace(
        architecture="GPT2LMHeadModel", act_fn="gelu_new", n_layers=12, n_heads=12, d_model=768, d_vocab=50257
    )
    assert architecture._gpt2_small_shape(small)
    assert not architecture._gpt2_small_shape(SimpleNamespace(**{**vars(small), "d_vocab": 50258}))


@pytest.mark.parametrize("kind", ["gemma3", "llama", "llama-tied", "gpt2"])
def test_vocabulary_processed_apart_equals_transformer_lens_processing_bit_for_bit(kind, tmp_path, monkeypatch):
    """``bridge.vocabulary_apart`` (RMSNorm models: the embedding and unembedding kept out of TransformerLens's
    copies) against TransformerLens processing the whole model: every processed tensor and the logits equal; the
    weight cache's captured state too. GPT-2 (LayerNorm, centred) does not qualify and is processed whole."""
    from transformer_lens import TransformerBridge
    from transformers import AutoModelForCausalLM

    from precompute.models import bridge as bridge_module
    from precompute.models import weight_cache

    folder = make_model_folder(kind.removesuffix("-tied"), tmp_path)
    if kind == "llama-tied":
        hf = AutoModelForCausalLM.from_pretrained(folder)
        hf.config.tie_word_embeddings = True
        hf.tie_weights()
        hf.save_pretrained(folder)

    from transformer_lens.weight_processing import ProcessWeights

    original, seen = ProcessWeights.process_weights, []

    def spy(state_dict, cfg, **kw):  # the embedding's rows TransformerLens processes
        seen.append(state_dict["embed.weight"].shape[0])
        return original(state_dict, cfg, **kw)

    def processed(apart: bool):
        b = TransformerBridge.boot_transformers(str(folder), device="cpu")
        if not apart:
            monkeypatch.setattr(architecture, "vocabulary_apart", lambda cfg: False)
        monkeypatch.setattr(ProcessWeights, "process_weights", staticmethod(spy))
        with weight_cache.capture() as state:
            bridge_module.process(b)
        monkeypatch.undo()
        return b, state

    whole, whole_state = processed(apart=False)
    apart, apart_state = processed(apart=True)
    d_vocab = apart.cfg.d_vocab
    assert architecture.vocabulary_apart(apart.cfg) is (kind != "gpt2")
    assert seen == [d_vocab, d_vocab if kind == "gpt2" else bridge_module.SAMPLED_ROWS + 1]
    assert set(whole_state) == set(apart_state)
    assert all(torch.equal(whole_state[k], apart_state[k]) for k in whole_state)
    assert apart_state["unembed.weight"].shape[0] == apart.cfg.d_vocab == apart_state["embed.weight"].shape[0]
    if kind == "gemma3":  # the final norm's gain (1 + w, w ≠ 0 here) is in the unembedding, not in the embedding
        assert not torch.equal(apart_state["unembed.weight"], apart_state["embed.weight"])
    tokens = torch.arange(12)[None] % apart.cfg.d_vocab
    with torch.inference_mode():
        assert torch.equal(whole(tokens), apart(tokens))
    assert torch.equal(whole.W_U, apart.W_U) and torch.equal(whole.W_E, apart.W_E)


def test_vocabulary_processed_apart_refuses_a_transform_it_does_not_reproduce(tmp_path, monkeypatch):
    """Should TransformerLens process the stand-in rows otherwise than by the final norm's gain, the load stops
    with a RuntimeError rather than give wrong weights."""
    from transformer_lens import TransformerBridge
    from transformer_lens.weight_processing import ProcessWeights

    from precompute.models import bridge as bridge_module

    folder = make_model_folder("llama", tmp_path)
    b = TransformerBridge.boot_transformers(str(folder), device="cpu")
    original = ProcessWeights.process_weights

    def also_shift(state_dict, cfg, **kw):
        out = original(state_dict, cfg, **kw)
        key = next(k for k in out if k.endswith("embed_tokens.weight") or k == "embed.weight")
        out[key] = out[key] + 1.0
        return out

    monkeypatch.setattr(ProcessWeights, "process_weights", staticmethod(also_shift))
    with pytest.raises(RuntimeError, match="vocabulary_apart cannot reproduce it"):
        bridge_module.process(b)
