"""Gemma 3's shape on a tiny random Gemma 3 built from its config here (no real weights).

Architectures with a norm after attention (Gemma 2/3's ``post_attention_layernorm``): what a head writes is what
reaches the residual stream, z_h (W_O_h ⊙ g) / σ with the norm's clean scale σ frozen per position, against a
hooked reference written in this file (the norm's own hooks and weight, and the head's output replaced at
``hook_attn_out``, after the norm, where it reaches the stream). QK-norm and each layer's own rotation, against the
model's attention scores."""

import pytest
import torch

from precompute import CSPAConfig, analyze, load_model, mean_result
from precompute.models import architecture
from precompute.models.heads import head_output_from, output_hooks

from .conftest import doc_tokens
from .factories import TOL, make_model_folder
from .references import _ce, _kl

TIER = "model"  # this file's test tier (tests/conftest.py); a test marked otherwise is in that tier

HEAD = (1, 2)


@pytest.fixture(scope="module")
def gemma(tmp_path_factory):
    lm = load_model(str(make_model_folder("gemma3", tmp_path_factory.mktemp("gemma3"))))
    tokens = doc_tokens(lm.tokenizer, 2, 20, seed=11)
    return lm, tokens


def _true_outputs(m, cache, layer: int) -> torch.Tensor:
    """[batch, seq, n_heads, d_model]: each head's share of what the attention block adds to the stream, from the
    norm's own hooks and weight: z_h W_O_h (1 + w) / σ (Gemma's RMSNorm multiplies by 1 + weight)."""
    z = cache[f"blocks.{layer}.attn.hook_z"]
    w_o = m.blocks[layer].attn.W_O  # [n_heads, d_head, d_model], the model's own
    weight = dict(m.blocks[layer].ln1_post.named_parameters())["_original_component.weight"]
    scale = cache[f"blocks.{layer}.ln1_post.hook_scale"]
    return torch.einsum("bshe,hed->bshd", z, w_o) * (1 + weight) / scale[..., None]


def test_provenance_and_heads_sum_to_what_reaches_the_stream(gemma):
    lm, tokens = gemma
    m = lm.model
    assert architecture.of(m).post_attn_norm
    assert lm.provenance["post_attention_norm"] == "gain folded into W_O, scale frozen per position"
    assert lm.provenance["tied_embeddings"] is True
    with torch.inference_mode():
        _, cache = m.run_with_cache(tokens)
    for layer in range(m.cfg.n_layers):
        true = _true_outputs(m, cache, layer)
        # the reference decomposes the block's output exactly: the heads' shares sum to hook_attn_out
        torch.testing.assert_close(true.sum(2), cache[f"blocks.{layer}.hook_attn_out"], atol=1e-4, rtol=0)
        for h in range(m.cfg.n_heads):
            got = head_output_from(m, {k: cache[k] for k in output_hooks(m, layer)}, layer, h)
            torch.testing.assert_close(got, true[:, :, h], atol=1e-5, rtol=0)
    # the old reading (z W_O, no norm) is far from it: this test would catch it
    raw = cache["blocks.1.attn.hook_z"][:, :, 2] @ m.blocks[1].attn.W_O[2]
    assert float((raw - _true_outputs(m, cache, 1)[:, :, 2]).abs().max()) > 0.1


def test_mean_ablation_variants_equal_the_hooked_reference(gemma):
    lm, tokens = gemma
    m = lm.model
    layer, h = HEAD
    mu_tokens = doc_tokens(lm.tokenizer, 3, 24, seed=12)
    mu = mean_result(lm, mu_tokens, HEAD)
    with torch.inference_mode():
        _, mu_cache = m.run_with_cache(mu_tokens)
        torch.testing.assert_close(mu, _true_outputs(m, mu_cache, layer)[:, :, h].mean(0), atol=1e-5, rtol=0)
        logits, cache = m.run_with_cache(tokens)
    mu_s = mu[: tokens.shape[1]]
    r = _true_outputs(m, cache, layer)[:, :, h]
    resid, scale = cache["ln_final.hook_in"], cache["ln_final.hook_scale"]
    grabbed = {}

    def frozen(x):  # RMSNorm: no centring; the final norm's clean scale
        return (x / scale) @ m.W_U + m.b_U

    def ablate(x, hook):  # after the post-attention norm, where the head's output reaches the stream
        return x - r + mu_s

    def grab(x, hook):
        grabbed["x"] = x.clone()

    with torch.inference_mode():
        both_unfrozen = m.run_with_hooks(
            tokens, fwd_hooks=[(f"blocks.{layer}.hook_attn_out", ablate), ("ln_final.hook_in", grab)]
        )
        direct_unfrozen = m.run_with_hooks(tokens, fwd_hooks=[("ln_final.hook_in", lambda x, hook: x - r + mu_s)])
    refs = {
        "direct_frozen": frozen(resid - r + mu_s),
        "direct_unfrozen": direct_unfrozen,
        "both_frozen": frozen(grabbed["x"]),
        "both_unfrozen": both_unfrozen,
        "indirect_frozen": frozen(grabbed["x"] + r - mu_s),
    }
    res = analyze(lm, tokens, HEAD, mu, k=5, cspa=None)
    assert float(res.kl_direct_frozen.abs().max()) > 1e-4, "the ablation must change something for the test to bite"
    for variant, ref in refs.items():
        torch.testing.assert_close(
            res[f"delta_loss_{variant}"], _ce(ref, tokens) - _ce(logits, tokens), atol=TOL, rtol=0, msg=variant
        )
        torch.testing.assert_close(res[f"kl_{variant}"], _kl(logits, ref), atol=TOL, rtol=0, msg=variant)
    # DLA of the head: (r - mu) through the final norm's clean scale
    dla = ((r - mu_s) / scale) @ m.W_U
    torch.testing.assert_close(res.dla_neg_values, dla.topk(5, -1, largest=False).values, atol=TOL, rtol=0)


def test_cspa_keeping_everything_moves_what_the_head_writes(gemma):
    """QK-only CSPA that keeps every source keeps the head's whole output, divided by the post-attention norm's
    scale at each destination: it leaves the model's output unchanged (Δloss and KL 0); without that division it
    would not."""
    lm, tokens = gemma
    mu = mean_result(lm, doc_tokens(lm.tokenizer, 3, 24, seed=12), HEAD)
    cfg = CSPAConfig(k_u=1.0, interventions=("qk",), excluded_token_ids=(), negative_only=False)
    res = analyze(lm, tokens, HEAD, mu, k=5, cspa=cfg, effects=("direct",), ln_modes=("frozen",))
    assert float(res.kl_direct_frozen.abs().max()) > 1e-4
    assert float(res.kl_cspa.abs().max()) < 1e-5
    assert float(res.delta_loss_cspa.abs().max()) < 1e-4


def test_indirect_excluding_keeps_the_excluded_heads_clean_after_the_norm(gemma):
    """``--indirect-excluding`` on the tiny Gemma 3: with nothing excluded it is the analysis's indirect effect; with
    head 2.1 excluded, that head writes exactly its clean output in the intervened run (the other heads of its layer
    what they write there), read off the model's own ``hook_attn_out``."""
    from precompute.science.indirect import _keep_clean_outputs, indirect_excluding

    lm, tokens = gemma
    m = lm.model
    mu = mean_result(lm, doc_tokens(lm.tokenizer, 3, 24, seed=12), (0, 1))
    none = indirect_excluding(lm, tokens, (0, 1), mu, excluded=())
    res = analyze(lm, tokens, (0, 1), mu, k=5, cspa=None, effects=("indirect",))
    torch.testing.assert_close(none["frozen"], res.delta_loss_indirect_frozen.float().cpu(), atol=1e-4, rtol=0)
    torch.testing.assert_close(none["unfrozen"], res.delta_loss_indirect_unfrozen.float().cpu(), atol=1e-4, rtol=0)
    some = indirect_excluding(lm, tokens, (0, 1), mu, excluded=((2, 1),))
    assert float((some["frozen"] - none["frozen"]).abs().max()) > 1e-5  # the exclusion changes something
    with torch.inference_mode():
        _, clean = m.run_with_cache(tokens)
        r = _true_outputs(m, clean, 0)[:, :, 1]
        got = {}

        def grab(x, hook):
            got[hook.name] = x.clone()

        fwd = [("blocks.0.hook_attn_out", lambda x, hook: x - r + mu[: tokens.shape[1]])]
        fwd += _keep_clean_outputs(m, clean, 2, [1])
        fwd += [
            ("blocks.2.hook_attn_out", grab),
            ("blocks.2.attn.hook_z", grab),
            ("blocks.2.ln1_post.hook_scale", grab),
        ]
        m.run_with_hooks(tokens, fwd_hooks=fwd)
    weight = dict(m.blocks[2].ln1_post.named_parameters())["_original_component.weight"]
    now = torch.einsum("bshe,hed->bshd", got["blocks.2.attn.hook_z"], m.blocks[2].attn.W_O) * (1 + weight)
    now = now / got["blocks.2.ln1_post.hook_scale"][..., None]
    others = now[:, :, [0, 2, 3]].sum(2)
    torch.testing.assert_close(
        got["blocks.2.hook_attn_out"] - others, _true_outputs(m, clean, 2)[:, :, 1], atol=1e-4, rtol=0
    )


def test_self_repair_ablates_after_the_norm_and_equals_the_hooked_reference(gemma):
    """Self-repair on the tiny Gemma 3: the heads' outputs mean-ablated where they reach the stream (after the
    post-attention norm, its scale frozen); the ablated logit difference and the heads' clean direct effect equal a
    hooked reference written here."""
    from precompute.data.tokenization import encode
    from precompute.science.self_repair import self_repair

    lm, _ = gemma
    m = lm.model
    prompts = ["The kanosa of the teri is", "The teri of the kanosa is", "A ruko of the zuda is"]
    answers = [(" kanosa", " teri"), (" teri", " kanosa"), (" ruko", " zuda")]
    got = self_repair(lm, prompts, answers, heads=[(1, 1), (1, 3)], method="mean")
    toks = torch.tensor([encode(lm.tokenizer, p) for p in prompts])
    ids = torch.tensor([[lm.tokenizer(a, add_special_tokens=False)["input_ids"][0] for a in pair] for pair in answers])
    with torch.inference_mode():
        logits, cache = m.run_with_cache(toks)
        out = _true_outputs(m, cache, 1)[:, :, [1, 3]].sum(2)  # the two heads, as they reach the stream
        ablated = m.run_with_hooks(
            toks, fwd_hooks=[("blocks.1.hook_attn_out", lambda x, hook: x + out.mean(0, keepdim=True) - out)]
        )

    def ld(lg):
        last = lg[:, -1]
        return float((last.gather(1, ids[:, :1]) - last.gather(1, ids[:, 1:])).mean())

    assert got.ld_clean == pytest.approx(ld(logits), abs=1e-4)
    assert got.ld_ablated == pytest.approx(ld(ablated), abs=1e-4)
    dirs = m.W_U[:, ids[:, 0]] - m.W_U[:, ids[:, 1]]  # [d, n]
    direct = (_true_outputs(m, cache, 1)[:, -1][:, [1, 3]].sum(1) / cache["ln_final.hook_scale"][:, -1]) * dirs.T
    assert got.direct_effect == pytest.approx(float(direct.sum(-1).mean()), abs=1e-4)


def test_prompt_pairs_head_contributions_sum_to_each_attention_block(gemma):
    """Prompt pairs on the tiny Gemma 3: each head's direct contribution to the logit difference goes through the
    post-attention norm, so the heads of a layer add up to that layer's attention block (read at
    ``hook_attn_out``), and activation patching runs."""
    from precompute.science.pairs import compare_prompts

    lm, _ = gemma
    clean = ["The kanosa of the teri is", "The teri of the kanosa is"]
    corrupted = ["The teri of the kanosa is", "The kanosa of the teri is"]
    answers = [(" kanosa", " teri"), (" teri", " kanosa")]
    res = compare_prompts(lm, clean, corrupted, answers, patching=True, attribution=True, grids=("head_z",))
    n_layers = lm.model.cfg.n_layers
    attn_blocks = res.layer_dla[0::2]  # layer_dla alternates attention and MLP, layer by layer
    torch.testing.assert_close(res.head_dla.sum(-1), attn_blocks, atol=1e-4, rtol=1e-4)
    assert res.head_dla.shape == (n_layers, lm.model.cfg.n_heads) and float(res.head_dla.abs().max()) > 1e-3
    assert res.patch["head_z"].shape == (n_layers, lm.model.cfg.n_heads)


def test_survey_columns_equal_the_analysis_and_a_hooked_loop(gemma):
    """The survey's all-heads-at-once paths on a model with a norm after attention: ablation and CSPA columns equal
    ``analyze`` of each head (itself checked against the hooked reference above); induction and anti-induction equal
    a loop over positions through the norm's own hooks and weight."""
    import numpy as np

    from precompute.science.survey import repeated_tokens, survey_heads

    lm, _ = gemma
    m = lm.model
    tokens = doc_tokens(lm.tokenizer, 6, 24, seed=21)
    small = dict(n_mean=3, n_repeat=4, repeat_len=8, n_ioi=4, circuit_rows=None)
    df = survey_heads(lm, tokens, batch_size=3, **small)
    for layer, h in [(0, 1), (1, 2), (2, 3)]:
        mu = mean_result(lm, tokens[:3], (layer, h))
        res = analyze(lm, tokens, (layer, h), mu, cspa=CSPAConfig(), effects=("direct",), ln_modes=("frozen",))
        row = df[(df.layer == layer) & (df["head"] == h)].iloc[0]
        assert row.delta_loss_direct == pytest.approx(float(res.delta_loss_direct_frozen.double().mean()), abs=2e-5)
        assert row.kl_direct == pytest.approx(float(res.kl_direct_frozen.double().mean()), abs=2e-5)
        want = 1 - float(res.kl_cspa.double().mean()) / float(res.kl_direct_frozen.double().mean())
        assert row.cspa_kl_explained == pytest.approx(want, abs=1e-3)
    T = small["repeat_len"]
    rep = repeated_tokens(lm.tokenizer, m.cfg.d_vocab, small["n_repeat"], T, 0)
    with torch.inference_mode():
        _, cache = m.run_with_cache(rep)
    anti = np.zeros((m.cfg.n_layers, m.cfg.n_heads))
    for layer in range(m.cfg.n_layers):
        weight = dict(m.blocks[layer].ln1_post.named_parameters())["_original_component.weight"]
        for h in range(m.cfg.n_heads):
            effs = []
            for b in range(rep.shape[0]):
                for q in range(T + 1, 2 * T):
                    a = float(cache[f"blocks.{layer}.attn.hook_pattern"][b, h, q, q - T + 1])
                    v = cache[f"blocks.{layer}.attn.hook_v"][b, q - T + 1, 0]  # one key/value head
                    out = v @ m.blocks[layer].attn.W_O[h] * (1 + weight)
                    out = out / float(cache[f"blocks.{layer}.ln1_post.hook_scale"][b, q, 0])
                    nxt = int(rep[b, q + 1])
                    effs.append(a * float(out @ m.W_U[:, nxt]) / float(cache["ln_final.hook_scale"][b, q, 0]))
            anti[layer, h] = -np.mean(effs)
    np.testing.assert_allclose(df.anti_induction.values, anti.reshape(-1), atol=1e-4)


@pytest.mark.parametrize(("layer", "deltas"), [(0, (0, 1, 4, 7)), (2, (0, 1, 4, 16, 23))])
def test_qk_with_qk_norm_and_each_layers_rotation_equals_the_models_attention_scores(gemma, layer, deltas):
    """The QK circuit's pieces on a sliding layer (0: rotary base 10k, window 8) and the global one (2: base 1M):
    a query and a key from the forward pass (x W_Q, x W_K), through ``qk_normed`` (QK-norm) and ``qk_at_distance``
    (that layer's rotation), score as the model's own attention does at that distance, for every head."""
    from precompute.models import hooks
    from precompute.science.circuits import qk_at_distance, qk_normed

    lm, _ = gemma
    m = lm.model
    arch = architecture.of(m)
    assert arch.qk_norm and lm.provenance["qk_norm"] is True
    tokens = torch.tensor([[0] + list(range(5, 29))])  # 25 positions
    names = [hooks.block(layer, f"attn.hook_{n}") for n in ("q", "k", "attn_scores")]
    with torch.inference_mode():
        _, cache = m.run_with_cache(tokens, names_filter=names)
    q, k, scores = (cache[n][0].float() for n in names)  # q [seq, heads, d_head] before QK-norm
    scale = m.original_model.config.query_pre_attn_scalar**-0.5
    for h in range(m.cfg.n_heads):
        for delta in deltas:
            for p in (p for p in (delta, 20, 24) if p >= delta):
                query = qk_at_distance(lm, qk_normed(m, layer, q[p, h][None], "q"), delta, layer)[0]
                key = qk_normed(m, layer, k[p - delta, arch.kv_head(h)][None], "k")[0]
                torch.testing.assert_close(query @ key * scale, scores[h, p, p - delta], atol=1e-4, rtol=1e-4)
    # the pieces matter: without QK-norm, or with the other layer kind's rotation, the scores differ
    p, delta = 24, 4
    plain = qk_at_distance(lm, q[p, 0][None], delta, layer)[0] @ k[p - delta, 0] * scale
    assert abs(float(plain - scores[0, p, p - delta])) > 1e-3
    other = 2 if layer == 0 else 0
    wrong = qk_at_distance(lm, qk_normed(m, layer, q[p, 0][None], "q"), delta, other)[0]
    key = qk_normed(m, layer, k[p - delta, 0][None], "k")[0]
    assert abs(float(wrong @ key * scale - scores[0, p, p - delta])) > 1e-4


def test_a_run_on_the_tiny_gemma3_has_no_silent_errors(gemma, tmp_path):
    """``precompute run`` end to end on the tiny Gemma 3: it finishes, records the norm decisions, and its stored
    mean ablation Δloss equals the analysis of the same sequence."""
    from precompute import RunConfig, open_artifacts, run

    from .conftest import write_text_dataset

    lm, _ = gemma
    data = write_text_dataset(tmp_path)
    out = tmp_path / "run"
    cfg = RunConfig(
        model="gemma3-tiny",
        heads=(HEAD,),
        dataset=str(data),
        out=str(out),
        n_seqs=6,
        seq_len=24,
        n_mean=4,
        batch_size=2,
        shard_size=3,
        k=5,
        seed=1,
    )
    run(cfg, loaded=lm, log=lambda *_: None)
    arts = open_artifacts(out)
    assert arts.manifest["model"]["post_attention_norm"] == "gain folded into W_O, scale frozen per position"
    rec = arts.sequence(2)
    mu = torch.from_numpy(arts.mean_result(HEAD))
    res = analyze(lm, torch.as_tensor(rec["tokens"]).long()[None], HEAD, mu, k=5, cspa=None)
    stored = torch.from_numpy(rec["delta_loss_direct_frozen"].astype("float32"))
    torch.testing.assert_close(stored, res.delta_loss_direct_frozen[0].float(), atol=2e-3, rtol=0)


def test_heads_together_equal_the_hooked_reference(gemma):
    """Two heads' direct effects mean-ablated together (``science.joint``) on the tiny Gemma 3: the Δloss equals the
    hooked reference with both heads' post-norm outputs replaced by their means (final norm frozen)."""
    from precompute.science.joint import joint_effect

    lm, tokens = gemma
    m = lm.model
    heads = ((1, 2), (2, 0))
    mu_tokens = doc_tokens(lm.tokenizer, 3, 24, seed=12)
    means = {one: mean_result(lm, mu_tokens, one) for one in heads}
    got = joint_effect(lm, tokens, heads, means, CSPAConfig())
    with torch.inference_mode():
        logits, cache = m.run_with_cache(tokens)
    s = tokens.shape[1]
    shift = sum(_true_outputs(m, cache, layer)[:, :, h] - means[(layer, h)][:s] for layer, h in heads)
    ablated = ((cache["ln_final.hook_in"] - shift) / cache["ln_final.hook_scale"]) @ m.W_U + m.b_U
    want = float((_ce(ablated, tokens) - _ce(logits, tokens)).double().mean())
    assert got["mean_delta_loss_ablation"] == pytest.approx(want, abs=1e-5)
    assert abs(want) > 1e-4
