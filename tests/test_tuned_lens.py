"""The tuned lens, the read-out choice and attention to predicted tokens, against references written here: a
known affine map planted in a tiny model, held-out metrics by explicit loops, pair counts by loops over pairs."""

from __future__ import annotations

import math

import pytest
import torch

from precompute.errors import InvalidInputError
from precompute.science import predicted, readout
from precompute.science.tuned_lens import RidgeStats, TunedLens, fit_tuned_lens, lens_quality, stored_lens
from precompute.science.verdict import logit_lens_is_poor

TIER = "fast"  # this file's test tier (tests/conftest.py); a test marked otherwise is in that tier


def test_ridge_recovers_an_affine_map_from_chunks():
    g = torch.Generator().manual_seed(0)
    d, n = 12, 600
    x = torch.randn(n, d, generator=g)
    a = 0.3 * torch.randn(d, d, generator=g)
    b = torch.randn(d, generator=g)
    y = x + x @ a + b
    st = RidgeStats(d)
    for part in torch.split(torch.arange(n), 97):  # uneven chunks: the sums must not care
        st.add(x[part], y[part])
    got_a, got_b = st.solve(0.0)
    torch.testing.assert_close(got_a, a, atol=1e-4, rtol=0)
    torch.testing.assert_close(got_b, b, atol=1e-4, rtol=0)
    # a huge ridge shrinks the correction to nothing but the mean shift: the logit lens, shifted
    big_a, big_b = st.solve(1e9)
    assert big_a.abs().max() < 1e-6
    torch.testing.assert_close(big_b, (y - x).mean(0), atol=1e-4, rtol=0)


def test_ridge_refuses_no_data():
    with pytest.raises(InvalidInputError, match="no positions"):
        RidgeStats(3).solve(0.1)


@pytest.fixture
def planted(tiny):
    """``tiny`` whose final norm outputs a known affine map of layer 1's normalised input: y = x + x A + b."""
    m = tiny.model
    d, layer = m.cfg.d_model, 1
    g = torch.Generator().manual_seed(3)
    a = 0.2 * torch.randn(d, d, generator=g)
    b = 0.5 * torch.randn(d, generator=g)
    seen = {}

    def grab(x, hook):
        c = x - x.mean(-1, keepdim=True)
        seen["x"] = c / (c.pow(2).mean(-1, keepdim=True) + m.cfg.eps).sqrt()
        return x

    def replace(y, hook):
        return seen["x"] + seen["x"] @ a + b

    m.add_hook(f"blocks.{layer}.hook_resid_pre", grab, is_permanent=True)
    m.add_hook("ln_final.hook_normalized", replace, is_permanent=True)
    try:
        yield tiny, layer, a, b
    finally:
        m.reset_hooks(including_permanent=True)


def _tokens(m, n, s, seed=0):
    g = torch.Generator().manual_seed(seed)
    body = torch.randint(1, m.cfg.d_vocab, (n, s - 1), generator=g)
    return torch.cat([torch.zeros(n, 1, dtype=torch.long), body], 1)


@pytest.mark.model
def test_fit_recovers_a_planted_affine_map_and_scores_it(planted):
    lm, layer, a, b = planted
    m = lm.model
    tokens = _tokens(m, 40, 24)
    lens = fit_tuned_lens(lm, tokens, layers=(layer,), ridge=1e-7, heldout_fraction=0.25, batch_size=8)
    assert lens.meta["n_fit_sequences"] == 30 and lens.meta["n_heldout_sequences"] == 10
    assert lens.meta["n_fit_tokens"] == 30 * 23  # position 0 left out
    # LayerNorm inputs are centred, so A is identified on the centred subspace only: compare what it does there
    held = _tokens(m, 6, 24, seed=9)
    with torch.inference_mode():
        _, cache = m.run_with_cache(held)
    pre = cache[f"blocks.{layer}.hook_resid_pre"]
    c = pre - pre.mean(-1, keepdim=True)
    x = c / (c.pow(2).mean(-1, keepdim=True) + m.cfg.eps).sqrt()
    torch.testing.assert_close(lens.translate(layer, x), x + x @ a + b, atol=2e-3, rtol=0)
    q = lens.quality[layer]
    assert q["tuned"]["top1"] == 1.0 and q["tuned"]["kl"] < 1e-4


@pytest.mark.model
def test_held_out_metrics_equal_a_loop_reference(tiny):
    m = tiny.model
    tokens = _tokens(m, 12, 16, seed=4)
    lens = fit_tuned_lens(tiny, tokens, ridge=1e-2, heldout_fraction=0.25, batch_size=4)
    held = tokens[9:]
    got = lens_quality(tiny, held, lens, batch_size=2, max_tokens=20)
    with torch.inference_mode():
        logits, cache = m.run_with_cache(held)
    for layer in range(m.cfg.n_layers):
        pre = cache[f"blocks.{layer}.hook_resid_pre"]
        rows = {"logit": [], "tuned": []}
        count = 0
        for i in range(held.shape[0]):
            for p in range(1, held.shape[1]):
                if count == 20:
                    break
                count += 1
                c = pre[i, p] - pre[i, p].mean()
                x = c / (c.pow(2).mean() + m.cfg.eps).sqrt()
                model_lp = logits[i, p].log_softmax(-1)
                for name, row in (("logit", x), ("tuned", lens.translate(layer, x))):
                    lp = (row @ m.W_U + m.b_U).log_softmax(-1)
                    kl = float((model_lp.exp() * (model_lp - lp)).sum())
                    rows[name].append((int(lp.argmax() == model_lp.argmax()), kl))
        assert got[layer]["n_tokens"] == 20
        for name, vals in rows.items():
            assert got[layer][name]["top1"] == pytest.approx(sum(v[0] for v in vals) / len(vals))
            assert got[layer][name]["kl"] == pytest.approx(sum(v[1] for v in vals) / len(vals), rel=1e-4, abs=1e-6)


@pytest.mark.model
def test_lens_round_trips_and_refuses_bad_input(tiny):
    tokens = _tokens(tiny.model, 6, 12)
    lens = fit_tuned_lens(tiny, tokens, layers=(0, 2), batch_size=3)
    back = TunedLens.from_tensors(lens.to_tensors(), lens.quality, lens.meta)
    x = torch.randn(5, tiny.model.cfg.d_model)
    torch.testing.assert_close(back.translate(2, x), lens.translate(2, x))
    with pytest.raises(InvalidInputError, match="no translator for layer 1"):
        lens.translate(1, x)
    with pytest.raises(InvalidInputError, match="at least two sequences"):
        fit_tuned_lens(tiny, tokens[:1])
    with pytest.raises(InvalidInputError, match="layers must be in"):
        fit_tuned_lens(tiny, tokens, layers=(7,))
    with pytest.raises(InvalidInputError, match="do not fit together"):
        TunedLens.from_tensors({"layers": torch.tensor([0]), "weight": torch.zeros(2, 3, 3), "bias": torch.zeros(2, 3)})


def test_readout_resolution_rules():
    q = {5: {"logit": {"top1": 0.37, "kl": 8.7}, "tuned": {"top1": 0.63, "kl": 0.6}, "n_tokens": 10}}
    lens = TunedLens((5,), torch.zeros(1, 2, 2), torch.zeros(1, 2), q)
    assert readout.resolve("auto", lens, 5, paper_model=True)[0] == "logit_lens"  # the paper's numbers reproduce
    used, why = readout.resolve("auto", lens, 5, paper_model=False)
    assert used == "tuned_lens" and "63%" in why and "37%" in why
    assert readout.resolve("auto", lens, 4, paper_model=False)[0] == "logit_lens"  # no translator there
    assert readout.resolve("auto", None, 5, paper_model=False)[0] == "logit_lens"
    q[5]["tuned"]["top1"] = 0.37
    assert readout.resolve("auto", lens, 5, paper_model=False)[0] == "logit_lens"  # a tie keeps the paper's
    assert readout.resolve("final_minus_head", None, 5, paper_model=False) == ("final_minus_head", "chosen")
    with pytest.raises(InvalidInputError, match="needs a fitted tuned lens"):
        readout.resolve("tuned_lens", None, 5, paper_model=False)
    with pytest.raises(InvalidInputError, match="not one of"):
        readout.check("<b>lens</b>", None)
    assert logit_lens_is_poor(q[5]) is True
    assert logit_lens_is_poor({"logit": {"top1": 0.9, "kl": 0.5}}) is False


def test_attention_to_predicted_equals_a_loop_over_pairs():
    g = torch.Generator().manual_seed(5)
    b, s, vocab, top = 3, 14, 9, 2
    tokens = torch.randint(0, vocab, (b, s), generator=g)
    top_ids = torch.randint(0, vocab, (b, s, top), generator=g)
    attn = torch.rand(b, s, s, generator=g).tril()
    attn = attn / attn.sum(-1, keepdim=True)
    excluded = torch.zeros(vocab, dtype=torch.bool)
    excluded[[2, 5]] = True
    got = predicted.summarise(predicted.pair_stats(tokens, top_ids, predicted.content_mask(tokens, excluded), attn))
    n = hits = chance = 0.0
    for i in range(b):
        for q in range(s):
            content = [k for k in range(1, q + 1) if int(tokens[i, k]) not in (2, 5)]
            if not content:
                continue
            pred = set(top_ids[i, q].tolist())
            p_rand = sum(int(tokens[i, k]) in pred for k in content) / len(content)
            for k in content:
                if attn[i, q, k] > 0.1:
                    n += 1
                    hits += int(tokens[i, k]) in pred
                    chance += p_rand
    assert got["n_pairs"] == n > 0
    assert got["frac_predicted"] == pytest.approx(hits / n)
    assert got["frac_chance"] == pytest.approx(chance / n)
    assert got["enrichment"] == pytest.approx((hits / n) / (chance / n))
    # from stored top-a lists the same numbers come back
    a = 6
    w, pos = attn[:, :, 1:].topk(a, -1)
    stored = predicted.from_stored(tokens, pos + 1, w, top_ids, excluded, top=top)
    assert stored["n_pairs"] == got["n_pairs"] and stored["frac_predicted"] == pytest.approx(got["frac_predicted"])
    empty = predicted.summarise(None)
    assert empty["n_pairs"] == 0 and math.isnan(empty["enrichment"])


@pytest.mark.model
def test_live_analysis_takes_each_readout_and_the_set_default(toy, toy_artifacts):
    """The live page's read-out choice: each read-out's record equals ``analyze`` with it (the artifacts' tuned lens
    and mean), the default is the set's own, and an unknown one is refused."""
    import numpy as np

    from precompute import analyze
    from precompute.live import LiveAnalyzer
    from precompute.store.reader import open_artifacts

    arts = open_artifacts(toy_artifacts)
    an = LiveAnalyzer.for_artifacts(toy, arts)
    head = (1, 2)
    assert an.readout_of(head) == arts.readout("1.2")[0]
    assert set(an.readouts_for(head)) == {"logit_lens", "tuned_lens", "final_minus_head"}
    text = "The kanosa of the teri is kanosa. A kanosa was in the teri with a ruko."
    mu = torch.from_numpy(arts.mean_result("1.2"))
    lens = stored_lens(arts)
    records = {}
    for r in ("logit_lens", "tuned_lens", "final_minus_head"):
        rec = an.analyze(text, head, variants=("direct_frozen",), readout=r).record
        tokens = torch.from_numpy(rec["tokens"]).long()[None]
        want = analyze(toy, tokens, head, mu, k=an.k, effects=("direct",), ln_modes=("frozen",), readout=r, lens=lens)
        np.testing.assert_allclose(rec["lens_topk_logprobs"], want.lens_topk_logprobs[0].numpy(), rtol=2e-3, atol=2e-3)
        np.testing.assert_allclose(rec["kl_cspa"], want.kl_cspa[0].numpy(), rtol=2e-3, atol=2e-3)
        records[r] = rec
    default = an.analyze(text, head, variants=("direct_frozen",)).record
    np.testing.assert_array_equal(default["lens_topk_ids"], records[an.readout_of(head)]["lens_topk_ids"])
    assert not np.array_equal(records["logit_lens"]["lens_topk_logprobs"], records["tuned_lens"]["lens_topk_logprobs"])
    with pytest.raises(InvalidInputError, match="not one of"):
        an.analyze(text, head, readout="oracle")
    # a head the set did not store gets the run's rule (auto here) applied to its layer
    assert arts.hyperparameters["readout"] == "auto"
    assert an.readout_of((0, 1)) == readout.resolve("auto", lens, 0, paper_model=False)[0]
