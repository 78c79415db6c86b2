"""The survey's vocabulary stage (``science/survey_effects.py``) against plain projections and logsumexp, and the
survey's ablation and CSPA columns against ``analyze`` on an RMSNorm model (the toy's LayerNorm case and the tiny
Gemma 3's norm after attention are in ``test_survey.py`` and ``test_gemma3_tiny.py``)."""

import pytest
import torch

from precompute import CSPAConfig, analyze, mean_result
from precompute.science.cspa import SparseCSPA
from precompute.science.survey import survey_heads
from precompute.science.survey_effects import HeadShifts, TokenDirections, shifted_lse

from .conftest import doc_tokens

TIER = "fast"  # this file's test tier (tests/conftest.py); a test marked otherwise is in that tier


def _case(seed: int, centred: bool, d_model=12, d_head=3, vocab=50, b=2, s=7, n_tok=5):
    """Random logits, a head's factored ablation and two CSPA forms (one sparse on the batch's tokens, one dense);
    returns the inputs and the d_model rows a plain projection would use."""
    g = torch.Generator().manual_seed(seed)
    W_U = torch.randn(d_model, vocab, generator=g)
    tokens = torch.randint(vocab, (b, s), generator=g)
    keep = torch.ones(b, s, dtype=torch.bool)
    keep[:, -1] = False  # the last position predicts nothing
    n = int(keep.sum())
    flat = torch.randn(n, vocab, generator=g) * 3
    dirs = TokenDirections.of(tokens, W_U)
    ids = dirs.ids[torch.randperm(len(dirs.ids), generator=g)[:n_tok]].sort().values
    weights = torch.randn(b, s, n_tok, generator=g) * (torch.rand(b, s, n_tok, generator=g) < 0.4)
    mean = torch.randn(b, s, 1, generator=g) * 0.1 if centred else torch.zeros(b, s, 1)
    sp = SparseCSPA(weights, ids, mean)
    sparse_rows = (weights @ W_U[:, ids].T - mean)[keep]  # [n, d]: what the sparse form stands for
    dense = torch.randn(n, d_model, generator=g) * 0.3
    coef, basis = torch.randn(n, d_head, generator=g), torch.randn(d_head, d_model, generator=g) * 0.5
    head = HeadShifts(coef, basis, [dirs.sparse(sp, keep), dense])
    return flat, W_U, dirs, head, coef @ basis, [sparse_rows, dense]


@pytest.mark.parametrize("centred", [False, True])
def test_shifted_lse_equals_logsumexp_of_projected_rows(centred, monkeypatch):
    import precompute.science.survey_effects as se

    monkeypatch.setattr(se, "BLOCK", 16)  # several vocabulary blocks and row sub-chunks, a ragged last one
    monkeypatch.setattr(se, "SUB_ROWS", 5)
    flat, W_U, dirs, head, dla, cspa = _case(3, centred)
    torch.testing.assert_close(head.cspa_rows(0, dirs), cspa[0], atol=1e-5, rtol=1e-5)
    got = shifted_lse(flat, [head, head], dirs, W_U)
    want = torch.stack(
        [
            torch.logsumexp(flat - dla @ W_U, -1),
            torch.logsumexp(flat - dla @ W_U + cspa[0] @ W_U, -1),
            torch.logsumexp(flat - dla @ W_U + cspa[1] @ W_U, -1),
        ]
    )
    torch.testing.assert_close(got, torch.stack([want, want]), atol=1e-4, rtol=1e-5)
    # G projected a block at a time gives the same
    monkeypatch.setattr(se, "G_WHOLE_BYTES", 0)
    torch.testing.assert_close(shifted_lse(flat, [head], dirs, W_U)[0], want, atol=1e-4, rtol=1e-5)


def test_rows_beyond_float32s_range_are_recomputed_exactly():
    flat, W_U, dirs, head, dla, cspa = _case(4, False)
    head.coef[2] *= 400.0  # exp(-dla) overflows on this row
    head.coef[3] *= -400.0  # and underflows to zero on this one
    got = shifted_lse(flat, [head], dirs, W_U)[0]
    dla = head.coef @ head.basis
    want = torch.logsumexp((flat - dla @ W_U).double(), -1).float()
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got[0], want, atol=1e-3, rtol=1e-5)


@pytest.mark.model
def test_sparse_cspa_of_an_rmsnorm_model_has_no_centring(tiny_llama, monkeypatch):
    """An RMSNorm model's final norm does not centre: the sparse CSPA DLA equals the dense one (it once subtracted
    the mean over d_model as a LayerNorm model's does)."""
    from .references import sparse_and_dense_analyses

    results = sparse_and_dense_analyses(tiny_llama, (1, 1), 48, monkeypatch)
    for field in ("delta_loss_cspa", "kl_cspa", "cspa_dla_neg_values", "cspa_dla_pos_values"):
        torch.testing.assert_close(results["sparse"][field], results["dense"][field], atol=1e-5, rtol=0, msg=field)


@pytest.mark.model
def test_survey_ablation_and_cspa_columns_equal_analyze_on_an_rmsnorm_model(tiny_llama):
    tokens = doc_tokens(tiny_llama.tokenizer, 5, 40, seed=22)
    df = survey_heads(tiny_llama, tokens, batch_size=2, n_mean=3, n_repeat=4, repeat_len=8, n_ioi=8, circuit_rows=64)
    for layer, h in [(0, 0), (1, 1), (1, 3)]:
        mu = mean_result(tiny_llama, tokens[:3], (layer, h))
        res = analyze(tiny_llama, tokens, (layer, h), mu, cspa=CSPAConfig(), effects=("direct",), ln_modes=("frozen",))
        row = df[(df.layer == layer) & (df["head"] == h)].iloc[0]
        assert row.delta_loss_direct == pytest.approx(float(res.delta_loss_direct_frozen.double().mean()), abs=2e-5)
        assert row.kl_direct == pytest.approx(float(res.kl_direct_frozen.double().mean()), abs=2e-5)
        want = 1 - float(res.kl_cspa.double().mean()) / float(res.kl_direct_frozen.double().mean())
        assert row.cspa_kl_explained == pytest.approx(want, abs=1e-3)


def _compare_by_analyze(lm, tokens, head, mu, ways, lens):
    """The reference: ``analyze`` once per way (its own forward pass and vocabulary stage), as ``compare`` was."""
    from precompute import schema
    from precompute.science.cspa import summary_metrics

    kl_a = dl_a = None
    out = {}
    for key, (cfg, readout) in ways.items():
        res = analyze(
            lm, tokens, head, mu, cspa=cfg, effects=("direct",), ln_modes=("frozen",), readout=readout, lens=lens
        )
        if kl_a is None:
            kl_a = res[schema.kl(schema.PAPER_VARIANT)].flatten()
            dl_a = res[schema.delta_loss(schema.PAPER_VARIANT)].flatten()
        kl_c, dl_c = res[schema.kl(schema.CSPA)].flatten(), res[schema.delta_loss(schema.CSPA)].flatten()
        out[key] = summary_metrics(kl_a, kl_c, dl_a, dl_c)
    return out


@pytest.mark.parametrize("which", ["toy", "tiny_llama", "gemma3"])
def test_cspa_several_ways_in_one_forward_equal_analyze_per_way(which, request, tmp_path):
    """``cspa_interventions.compare`` (one forward pass per batch for every way, the shared log-partitions) equals
    ``analyze`` run once per way, for the three interventions and for the read-outs, on a LayerNorm model, an
    RMSNorm one with grouped-query attention and one with a norm after attention."""
    from precompute.models.loading import load_model
    from precompute.science.cspa_interventions import compare
    from precompute.science.tuned_lens import fit_tuned_lens

    from .factories import make_model_folder

    if which == "gemma3":
        lm = load_model(str(make_model_folder("gemma3", tmp_path / "g")))
        head = (1, 1)
    else:
        lm = request.getfixturevalue(which)
        head = (1, 2) if which == "toy" else (1, 1)
    tokens = doc_tokens(lm.tokenizer, 6, 32, seed=41)
    mu = mean_result(lm, tokens[:4], head)
    lens = fit_tuned_lens(lm, tokens, batch_size=3, quality_tokens=16)
    ways = {
        "both": (CSPAConfig(), "logit_lens"),
        "qk": (CSPAConfig(interventions=("qk",)), "logit_lens"),
        "ov": (CSPAConfig(interventions=("ov",)), "logit_lens"),
        "tuned": (CSPAConfig(), "tuned_lens"),
        "final": (CSPAConfig(), "final_minus_head"),
    }
    got = compare(lm, tokens, head, mu, ways, lens, batch_size=4)
    want = _compare_by_analyze(lm, tokens, head, mu, ways, lens)
    for key in ways:
        for metric in ("mean_kl_ablation", "mean_kl_cspa", "mean_delta_loss_ablation", "mean_delta_loss_cspa"):
            assert getattr(got[key], metric) == pytest.approx(getattr(want[key], metric), rel=1e-4, abs=1e-6), (
                key,
                metric,
            )
        assert got[key].explained_kl == pytest.approx(want[key].explained_kl, abs=1e-4), key
