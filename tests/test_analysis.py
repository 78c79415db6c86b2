"""``analyze`` against straightforward references: full forward passes with hooks and explicit formulas."""

import pytest
import torch

from precompute import InvalidInputError, analyze, mean_result
from precompute.models.loading import unwrap

from .conftest import doc_tokens

TIER = "model"  # this file's test tier (tests/conftest.py); a test marked otherwise is in that tier

TOL = 1e-4


def _models(request, name):
    return request.getfixturevalue(name)


@pytest.fixture(params=["tiny", "tiny_bias", "toy", "wide"])
def setup(request):
    lm = request.getfixturevalue(request.param)
    tokens = doc_tokens(lm.tokenizer, 2, 24, seed=11)
    head = (1, 2)
    mu_src = doc_tokens(lm.tokenizer, 4, 32, seed=12)
    mu = mean_result(lm, mu_src, head)
    res = analyze(lm, tokens, head, mu, k=7, cspa=None)
    return lm, tokens, head, mu, res


def _ref_pass(m, tokens, layer, h):
    with torch.inference_mode():
        logits, cache = m.run_with_cache(tokens)
    return logits, cache


def _ce(logits, tokens):
    lp = logits.log_softmax(-1)[:, :-1]
    return -lp.gather(-1, tokens[:, 1:, None])[..., 0]


def _kl(clean, other):
    p = clean.log_softmax(-1)[:, :-1]
    q = other.log_softmax(-1)[:, :-1]
    return (p.exp() * (p - q)).sum(-1)


def _frozen_logits(m, resid, scale):
    c = resid - resid.mean(-1, keepdim=True)
    return (c / scale) @ m.W_U + m.b_U


def test_mean_result_is_mean_of_hook_result(toy):
    m = unwrap(toy)
    tokens = doc_tokens(toy.tokenizer, 3, 20, seed=2)
    with torch.inference_mode():
        _, cache = m.run_with_cache(tokens)
    ref = cache["blocks.1.attn.hook_result"][:, :, 2].mean(0)
    got = mean_result(toy, tokens, (1, 2), batch_size=2)
    assert got.shape == (20, m.cfg.d_model)
    torch.testing.assert_close(got, ref, atol=TOL, rtol=0)


def test_clean_loss_and_topk(setup):
    lm, tokens, head, mu, res = setup
    m = unwrap(lm)
    logits, _ = _ref_pass(m, tokens, *head)
    torch.testing.assert_close(res.loss, _ce(logits, tokens), atol=TOL, rtol=0)
    lp = logits.log_softmax(-1)
    vals, _ = lp.topk(7, -1)
    torch.testing.assert_close(res.clean_topk_logprobs, vals, atol=TOL, rtol=0)
    torch.testing.assert_close(lp.gather(-1, res.clean_topk_ids), vals, atol=TOL, rtol=0)
    # rank = tokens with a larger logit (on log-probs, near-uniform random logits can flip by rounding)
    correct = logits[:, :-1].gather(-1, tokens[:, 1:, None])[..., 0]
    ref_rank = (logits[:, :-1] > correct[..., None]).sum(-1)
    assert torch.equal(res.clean_correct_rank, ref_rank)


def test_direct_effect_both_ln_modes(setup):
    lm, tokens, head, mu, res = setup
    m = unwrap(lm)
    layer, h = head
    logits, cache = _ref_pass(m, tokens, layer, h)
    r = cache[f"blocks.{layer}.attn.hook_result"][:, :, h]
    resid = cache[f"blocks.{m.cfg.n_layers - 1}.hook_resid_post"]
    ablated_resid = resid - r + mu[: tokens.shape[1]]
    frozen = _frozen_logits(m, ablated_resid, cache["ln_final.hook_scale"])
    with torch.inference_mode():  # unfrozen: let the model's own final LN see the ablated residual
        unfrozen = m.run_with_hooks(tokens, fwd_hooks=[("ln_final.hook_in", lambda x, hook: x - r + mu[: x.shape[1]])])
    for variant, ref in (("direct_frozen", frozen), ("direct_unfrozen", unfrozen)):
        torch.testing.assert_close(
            res[f"delta_loss_{variant}"], _ce(ref, tokens) - _ce(logits, tokens), atol=TOL, rtol=0
        )
        torch.testing.assert_close(res[f"kl_{variant}"], _kl(logits, ref), atol=TOL, rtol=0)
        vals, _ = ref.log_softmax(-1).topk(7, -1)
        torch.testing.assert_close(res[f"{variant}_topk_logprobs"], vals, atol=TOL, rtol=0)


def test_both_and_indirect_effects_by_full_forward(setup):
    lm, tokens, head, mu, res = setup
    m = unwrap(lm)
    layer, h = head
    logits, cache = _ref_pass(m, tokens, layer, h)
    r = cache[f"blocks.{layer}.attn.hook_result"][:, :, h]
    mu_s = mu[: tokens.shape[1]]

    def ablate_result(x, hook):
        x = x.clone()
        x[:, :, h] = mu_s
        return x

    grabbed = {}

    def grab(x, hook):
        grabbed["resid"] = x.clone()

    with torch.inference_mode():
        both_unfrozen = m.run_with_hooks(
            tokens, fwd_hooks=[(f"blocks.{layer}.attn.hook_result", ablate_result), ("ln_final.hook_in", grab)]
        )
        indirect_unfrozen = m.run_with_hooks(
            tokens,
            fwd_hooks=[
                (f"blocks.{layer}.attn.hook_result", ablate_result),
                ("ln_final.hook_in", lambda x, hook: x + r - mu_s),
            ],
        )
    both_resid = grabbed["resid"]
    scale = cache["ln_final.hook_scale"]
    refs = {
        "both_unfrozen": both_unfrozen,
        "both_frozen": _frozen_logits(m, both_resid, scale),
        "indirect_unfrozen": indirect_unfrozen,
        "indirect_frozen": _frozen_logits(m, both_resid + r - mu_s, scale),
    }
    for variant, ref in refs.items():
        torch.testing.assert_close(
            res[f"delta_loss_{variant}"], _ce(ref, tokens) - _ce(logits, tokens), atol=TOL, rtol=0, msg=variant
        )
        torch.testing.assert_close(res[f"kl_{variant}"], _kl(logits, ref), atol=TOL, rtol=0, msg=variant)
        correct = ref.log_softmax(-1)[:, :-1].gather(-1, tokens[:, 1:, None])[..., 0]
        torch.testing.assert_close(res[f"{variant}_correct_logprob"], correct, atol=TOL, rtol=0)


def test_dla_and_logit_lens_explicit_formulas(setup):
    lm, tokens, head, mu, res = setup
    m = unwrap(lm)
    layer, h = head
    _, cache = _ref_pass(m, tokens, layer, h)
    r = cache[f"blocks.{layer}.attn.hook_result"][:, :, h]
    diff = r - mu[: tokens.shape[1]]
    diff = diff - diff.mean(-1, keepdim=True)
    dla = (diff / cache["ln_final.hook_scale"]) @ m.W_U
    neg_vals, _ = dla.topk(7, -1, largest=False)
    pos_vals, _ = dla.topk(7, -1)
    torch.testing.assert_close(res.dla_neg_values, neg_vals, atol=TOL, rtol=0)
    torch.testing.assert_close(res.dla_pos_values, pos_vals, atol=TOL, rtol=0)
    torch.testing.assert_close(dla.gather(-1, res.dla_neg_ids), neg_vals, atol=TOL, rtol=0)
    pre = cache[f"blocks.{layer}.hook_resid_pre"]
    pre = pre - pre.mean(-1, keepdim=True)
    lens = (pre / cache[f"blocks.{layer}.ln1.hook_scale"]) @ m.W_U + m.b_U
    lens_lp = lens.log_softmax(-1)
    vals, _ = lens_lp.topk(7, -1)
    torch.testing.assert_close(res.lens_topk_logprobs, vals, atol=TOL, rtol=0)
    correct = lens_lp[:, :-1].gather(-1, tokens[:, 1:, None])[..., 0]
    torch.testing.assert_close(res.lens_correct_logprob, correct, atol=TOL, rtol=0)


def test_attention_and_info_weighted(setup):
    lm, tokens, head, mu, res = setup
    m = unwrap(lm)
    layer, h = head
    _, cache = _ref_pass(m, tokens, layer, h)
    pattern = cache[f"blocks.{layer}.attn.hook_pattern"][:, h]
    torch.testing.assert_close(res.attention, pattern, atol=TOL, rtol=0)
    norms = (cache[f"blocks.{layer}.attn.hook_v"][:, :, h] @ m.W_O[layer, h]).norm(dim=-1)
    for b in range(tokens.shape[0]):
        for q in range(tokens.shape[1]):
            for k in range(tokens.shape[1]):
                expected = pattern[b, q, k] * norms[b, k] / norms[b].max()
                assert abs(float(res.info_attention[b, q, k] - expected)) < TOL


def _values_of(res, ids_name):
    """The values listed beside a top-k id field (``*_values`` or ``*_logprobs``)."""
    base = ids_name[: -len("_ids")]
    return res[base + "_values"] if base + "_values" in res.tensors else res[base + "_logprobs"]


def test_chunking_does_not_change_results(toy, toy_tokens):
    mu = mean_result(toy, toy_tokens, (1, 2))
    a = analyze(toy, toy_tokens, (1, 2), mu, k=5, chunk_rows=7)
    b = analyze(toy, toy_tokens, (1, 2), mu, k=5)
    for name in a.fields():
        if not name.endswith("_ids"):
            torch.testing.assert_close(a[name], b[name], atol=1e-5, rtol=0, msg=name)
            continue
        # GEMMs of other row counts round differently: ids may swap only where values tie to within 1e-5
        # (BOS, where the head's output equals its mean, has a DLA of rounding noise in every entry)
        vals = _values_of(a, name)
        differs = (a[name] != b[name]).any(-1)
        tied = (vals.diff(dim=-1).abs() <= 1e-5).any(-1) | (vals.abs() <= 1e-5).all(-1)
        assert bool((~differs | tied).all()), name
        assert int(differs.sum()) <= int(differs.numel() * 0.1), name  # a few rows at most, not a broken sort


def test_batch_equals_one_by_one(toy, toy_tokens):
    mu = mean_result(toy, toy_tokens, (1, 2))
    batch = analyze(toy, toy_tokens, (1, 2), mu, k=5)
    for i in range(toy_tokens.shape[0]):
        single = analyze(toy, toy_tokens[i : i + 1], (1, 2), mu, k=5)
        for name in ("loss", "delta_loss_direct_frozen", "kl_cspa", "delta_loss_both_unfrozen", "cspa_kept_pos"):
            torch.testing.assert_close(single[name][0], batch[name][i], atol=1e-5, rtol=0, msg=name)


def test_any_head_and_subset_of_effects(tiny):
    tokens = doc_tokens(tiny.tokenizer, 1, 16, seed=3)
    mu = mean_result(tiny, tokens, (0, 3))
    res = analyze(tiny, tokens, (0, 3), mu, k=3, effects=("direct",), ln_modes=("frozen",), cspa=None)
    assert res.variants == ("direct_frozen",)
    assert "kl_both_frozen" not in res.fields() and "kl_cspa" not in res.fields()
    assert res.delta_loss_direct_frozen.shape == (1, 15)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(tokens=torch.zeros(0, 5, dtype=torch.long)), "empty batch"),
        (dict(tokens=torch.zeros(2, 0, dtype=torch.long)), "empty batch"),
        (dict(tokens=torch.zeros(1, 1, dtype=torch.long)), "at least 2 tokens"),
        (dict(tokens=torch.zeros(1, 300, dtype=torch.long)), "longer than the model's context"),
        (dict(tokens=torch.zeros(5, dtype=torch.long)), "shape [batch, seq]"),
        (dict(tokens=torch.zeros(1, 5)), "integer tensor"),
        (dict(tokens=torch.full((1, 5), 10_000)), "token ids must be in"),
        (dict(head=(7, 0)), "does not exist"),
        (dict(head=(1, 9)), "does not exist"),
        (dict(head="1.2"), "(layer, head) pair"),
        (dict(mu=torch.zeros(3, 512)), "covers 3 positions"),
        (dict(mu=torch.zeros(10, 7)), "d_model=512"),
        (dict(k=0), "k must be"),
        (dict(effects=("sideways",)), "unknown effect"),
    ],
)
def test_bad_input_is_explained(toy, kwargs, message):
    args = dict(tokens=torch.zeros(1, 5, dtype=torch.long), head=(1, 2), mu=torch.zeros(8, 512), k=3)
    args.update(kwargs)
    extra = {"effects": args.pop("effects")} if "effects" in args else {}
    with pytest.raises(
        InvalidInputError, match=message.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(").replace(")", r"\)")
    ):
        analyze(toy, args["tokens"], args["head"], args["mu"], k=args["k"], **extra)


def test_mean_result_bad_head(toy):
    with pytest.raises(InvalidInputError, match="head 3.0 does not exist"):
        mean_result(toy, torch.zeros(1, 4, dtype=torch.long), (3, 0))


def test_mean_coefficients_reproduce_real_means_and_refuse_others(toy, tiny):
    from precompute.models.heads import mean_coefficients
    from precompute.models.weights import layer_weight

    for lm in (toy, tiny):  # the toy's planted W_O is rank-deficient
        m = unwrap(lm)
        tokens = doc_tokens(lm.tokenizer, 3, 24, seed=21)
        mu = mean_result(lm, tokens, (1, 2))
        W = layer_weight(m, "W_O", 1)[2].float()
        z_bar = mean_coefficients(mu, W)
        assert z_bar is not None and z_bar.shape == (mu.shape[0], W.shape[0])
        torch.testing.assert_close(z_bar @ W, mu, atol=1e-6 * float(mu.abs().max()), rtol=0)
        assert mean_coefficients(torch.randn_like(mu), W) is None  # not this head's mean
        assert mean_coefficients(mu + 1e-3 * mu.abs().max(), W) is None  # shifted off W_O's row space
        assert float(mean_coefficients(torch.zeros_like(mu), W).abs().max()) == 0.0


@pytest.mark.parametrize("name", ["tiny", "toy", "wide"])
def test_dla_through_the_heads_d_head_space_equals_the_d_model_projection(request, name, monkeypatch):
    """The DLA projected as (z - z̄)/sigma @ (W_O_h W_U) gives every field the d_model projection gives."""
    import precompute.science.analysis as analysis_module

    lm = request.getfixturevalue(name)
    tokens = doc_tokens(lm.tokenizer, 2, 24, seed=22)
    mu = mean_result(lm, doc_tokens(lm.tokenizer, 3, 24, seed=23), (1, 2))
    factored = analyze(lm, tokens, (1, 2), mu, k=6)
    monkeypatch.setattr(analysis_module, "mean_coefficients", lambda mu, W: None)
    dense = analyze(lm, tokens, (1, 2), mu, k=6)
    assert factored.fields() == dense.fields()
    for field in factored.fields():
        if field.endswith("_ids"):
            continue  # compared through their values below (near-ties may swap)
        torch.testing.assert_close(factored[field], dense[field], atol=1e-4, rtol=0, msg=field)
    for field in ("dla_neg_ids", "dla_pos_ids"):
        vals = _values_of(dense, field)
        assert (factored[field] == dense[field]).float().mean() > 0.9, field
        torch.testing.assert_close(_values_of(factored, field), vals, atol=1e-4, rtol=0, msg=field)


def test_head_unembedding_is_reused_and_follows_weight_changes(tiny, monkeypatch):
    """W_O_h W_U is kept for the last head analysed on a model, and never used once the weights change."""
    import precompute.science.analysis as analysis_module
    from precompute.models.weights import layer_weight

    m = unwrap(tiny)
    tokens = doc_tokens(tiny.tokenizer, 2, 20, seed=24)
    mu = mean_result(tiny, doc_tokens(tiny.tokenizer, 3, 20, seed=25), (1, 2))
    analyze(tiny, tokens, (1, 2), mu, k=4, cspa=None)
    kept = analysis_module._UNEMBEDDINGS[m][1]
    analyze(tiny, tokens, (1, 2), mu, k=4, cspa=None)
    assert analysis_module._UNEMBEDDINGS[m][1] is kept  # reused
    W_O = layer_weight(m, "W_O", 1)
    with torch.no_grad():
        W_O.mul_(2.0)  # in place: a new version of the same storage
    try:
        changed = analyze(tiny, tokens, (1, 2), mu, k=4, cspa=None)
        assert analysis_module._UNEMBEDDINGS[m][1] is not kept
        monkeypatch.setattr(analysis_module, "mean_coefficients", lambda mu, W: None)
        dense = analyze(tiny, tokens, (1, 2), mu, k=4, cspa=None)
        torch.testing.assert_close(changed.dla_neg_values, dense.dla_neg_values, atol=1e-4, rtol=0)
    finally:
        with torch.no_grad():
            W_O.mul_(0.5)  # exact: the session's model is as it was
    monkeypatch.undo()
    other = analyze(tiny, tokens, (2, 1), mean_result(tiny, tokens, (2, 1)), k=4, cspa=None)
    assert analysis_module._UNEMBEDDINGS[m][0][:2] == (2, 1) and other.dla_neg_values.shape[-1] == 4


def test_kl_is_never_negative_when_the_ablation_barely_moves_the_logits():
    """KL(clean || logits) >= 0; where the two are nearly equal float error used to leave -1e-7 in the files."""
    from precompute.science.scoring import Scorer

    g = torch.Generator().manual_seed(0)
    clean = torch.randn(64, 500, generator=g) * 8
    nearly = clean + 1e-6 * torch.randn(64, 500, generator=g)
    scorer = Scorer(clean, torch.zeros(64, dtype=torch.long), k=5)
    kl = scorer.score(nearly)["kl"]
    p, q = clean.double().log_softmax(-1), nearly.double().log_softmax(-1)
    ref = (p.exp() * (p - q)).sum(-1)
    assert float(kl.min()) >= 0.0
    torch.testing.assert_close(kl.double(), ref, atol=1e-5, rtol=0)
    rho = torch.ones(64, 1)
    assert float(scorer.score_rescaled(nearly, rho, clean.new_zeros(64), {}, topk=False)["kl"].min()) >= 0.0


@pytest.mark.parametrize("model_name", ["toy", "tiny", "tiny_llama"])
def test_indirect_effect_without_a_downstream_heads_path(request, model_name):
    """No head excluded: analyze's indirect effect. One excluded: a reference written here, hooking the residual
    stream (head output -> mu), the excluded head's z (kept clean) and the final residual (direct path restored)."""
    from precompute import analyze, mean_result
    from precompute.science.indirect import indirect_excluding

    from .conftest import doc_tokens

    lm = request.getfixturevalue(model_name)
    m = lm.model
    tokens = doc_tokens(lm.tokenizer, 2, 20, seed=3)
    head, later = (1, 2), (2, 1)
    mu = mean_result(lm, doc_tokens(lm.tokenizer, 3, 24, seed=5), head)
    res = analyze(lm, tokens, head, mu, effects=("direct", "indirect"), cspa=None)
    none = indirect_excluding(lm, tokens, head, mu)
    torch.testing.assert_close(none["frozen"], res["delta_loss_indirect_frozen"], atol=2e-4, rtol=0)
    torch.testing.assert_close(none["unfrozen"], res["delta_loss_indirect_unfrozen"], atol=2e-4, rtol=0)

    got = indirect_excluding(lm, tokens, head, mu, excluded=(later,))
    with torch.inference_mode():
        logits, cache = m.run_with_cache(tokens)
    r = cache["blocks.1.attn.hook_z"][:, :, 2] @ m.W_O[1, 2]  # z is per query head on every architecture
    clean_z2 = cache["blocks.2.attn.hook_z"]
    mu_s = mu[: tokens.shape[1]]

    def z2(z, hook):
        z = z.clone()
        z[:, :, 1] = clean_z2[:, :, 1]
        return z

    with torch.inference_mode():
        ref_logits = m.run_with_hooks(
            tokens,
            fwd_hooks=[
                ("blocks.1.hook_attn_out", lambda x, hook: x + mu_s - r),
                ("blocks.2.attn.hook_z", z2),
                ("ln_final.hook_in", lambda x, hook: x + r - mu_s),
            ],
        )
    torch.testing.assert_close(got["unfrozen"], _ce(ref_logits, tokens) - _ce(logits, tokens), atol=2e-4, rtol=0)
    assert not torch.allclose(got["unfrozen"], none["unfrozen"], atol=1e-4)  # the cut path carried something
    with pytest.raises(InvalidInputError, match="later layer"):
        indirect_excluding(lm, tokens, head, mu, excluded=((1, 0),))


def test_a_run_records_the_indirect_effect_without_a_later_heads_path(tmp_path):
    """``--indirect-excluding 2.1``: the summary's mean equals indirect_excluding over the stored tokens; report
    prints it and names the setting."""
    from precompute import RunConfig, open_artifacts, run
    from precompute.jobs.report import format_report
    from precompute.models.loading import load_model
    from precompute.science.indirect import indirect_excluding

    cfg = RunConfig(
        model="toy",
        heads=((1, 2),),
        dataset="synthetic",
        n_seqs=4,
        seq_len=24,
        shard_size=4,
        batch_size=2,
        indirect_excluding=((2, 1),),
        out=str(tmp_path / "r"),
    )
    arts = open_artifacts(run(cfg, log=lambda *_: None))
    got = arts.summary("1.2")["indirect_excluding"]
    toy = load_model("toy")
    ref = indirect_excluding(
        toy,
        torch.from_numpy(arts.field("tokens").astype("int64")),
        (1, 2),
        torch.from_numpy(arts.mean_result("1.2")),
        ((2, 1),),
    )
    assert got["delta_loss_frozen"] == pytest.approx(float(ref["frozen"].double().mean()), abs=1e-5)
    assert arts.paper_figures("1.2")["indirect_excluding"] == got["delta_loss_frozen"]
    text = format_report(arts)
    assert "Indirect effect without 11.10's path" in text and "this run '2.1'" in text
