"""CSPA against a materialised, loop-by-loop reference written here, plus selection rules and metrics."""

import math

import pytest
import torch

from precompute import CSPAConfig, InvalidInputError, analyze, mean_result, summary_metrics
from precompute.models.loading import unwrap
from precompute.science.cspa import first_occurrence, keep_counts
from precompute.science.semantic import neighbour_table, semantic_neighbours
from precompute.science.tuned_lens import stored_lens

from .conftest import doc_tokens
from .references import _ce, _kl, reference_cspa, sparse_and_dense_analyses

TIER = "model"  # this file's test tier (tests/conftest.py); a test marked otherwise is in that tier


CONFIGS = [
    dict(k_u=0.05, k_s=1, negative_only=True),
    dict(k_u=0.05, k_s=1, negative_only=True, interventions=("qk",)),
    dict(k_u=0.05, k_s=1, negative_only=True, interventions=("ov",)),
    dict(k_u=0.3, k_s=3, negative_only=False, interventions=("qk",)),
    dict(k_u=0.3, k_s=3, negative_only=True, interventions=("ov",)),
    dict(k_u=0.2, k_s=1, negative_only=False),
    dict(k_u=3, k_s=1, negative_only=True),
    dict(k_u=0.3, k_s=3, negative_only=True),
    dict(k_u=2, k_s=3, negative_only=False),
]


CASES = [(name, p) for name in ("tiny", "toy") for p in CONFIGS] + [("wide", p) for p in CONFIGS if p["k_s"] == 1]
CASES += [("tiny_llama", p) for p in CONFIGS if p["k_s"] == 1]  # rotary, RMSNorm, grouped-query


@pytest.mark.parametrize(
    ("model_name", "params"),
    CASES,
    ids=lambda p: p
    if isinstance(p, str)
    else "-".join(f"{k}={','.join(v) if isinstance(v, tuple) else v}" for k, v in p.items()),
)
def test_factorised_cspa_matches_materialised_reference(request, model_name, params):
    lm = request.getfixturevalue(model_name)
    m = unwrap(lm)
    tok = lm.tokenizer
    tokens = doc_tokens(tok, 2, 18, seed=4)
    head = (1, 2)
    mu = mean_result(lm, doc_tokens(tok, 3, 24, seed=8), head)
    # exclude BOS and two frequent function-word tokens
    excluded = (
        tok.bos_token_id,
        tok(" the", add_special_tokens=False)["input_ids"][0],
        tok(".", add_special_tokens=False)["input_ids"][0],
    )
    cfg = CSPAConfig(excluded_token_ids=excluded, max_kept_shown=64, **params)
    table = None
    if cfg.k_s > 1:
        table = neighbour_table(semantic_neighbours(tok), cfg.k_s)
        # make sure some tokens really have several neighbours in this test
        assert (table[tokens.flatten()][:, 1] >= 0).any()
    res = analyze(lm, tokens, head, mu, k=5, cspa=cfg, neighbours=table, effects=("direct",), ln_modes=("frozen",))
    clean, ref_logits, kept_ref = reference_cspa(m, tokens, head, mu, cfg, table)
    torch.testing.assert_close(res.delta_loss_cspa, _ce(ref_logits, tokens) - _ce(clean, tokens), atol=1e-4, rtol=0)
    torch.testing.assert_close(res.kl_cspa, _kl(clean, ref_logits), atol=1e-4, rtol=0)
    for (b, q), positions in kept_ref.items():
        got = sorted({p for p in res.cspa_kept_pos[b, q].tolist() if p >= 0})
        assert got == positions, (b, q)


def test_selection_never_keeps_excluded_or_future_sources(toy):
    tok = toy.tokenizer
    tokens = doc_tokens(tok, 2, 40, seed=9)
    mu = mean_result(toy, tokens, (1, 2))
    # the excluded ids are chosen here (BOS and the test's own function words), not taken from the code under test
    excluded = {tok.bos_token_id} | {
        tok(w, add_special_tokens=False)["input_ids"][0] for w in (" the", " of", " and", " is", ".", ",")
    }
    res = analyze(
        toy,
        tokens,
        (1, 2),
        mu,
        k=3,
        cspa=CSPAConfig(k_u=1.0, max_kept_shown=40, excluded_token_ids=tuple(sorted(excluded))),
        effects=("direct",),
        ln_modes=("frozen",),
    )
    assert any(int(t) in excluded for t in tokens[0, 1:])  # the documents do contain excluded tokens
    for b in range(2):
        for q in range(40):
            for p in res.cspa_kept_pos[b, q].tolist():
                if p < 0:
                    continue
                assert p <= q
                assert int(tokens[b, p]) not in excluded
        # k_u = 1.0 keeps every allowed source: at the last position, all non-excluded positions
        allowed = sorted(p for p in range(40) if int(tokens[b, p]) not in excluded)
        assert int(res.cspa_n_kept[b, 39]) == len(allowed)


def test_kept_count_rule_and_first_occurrence():
    assert keep_counts(0.05, 45).tolist()[:3] == [1, 1, 1]
    assert keep_counts(0.05, 45)[20].item() == 2  # ceil(0.05 * 21) = 2
    assert keep_counts(0.05, 45)[40].item() == 3  # ceil(0.05 * 41) = 3
    assert keep_counts(4, 5).tolist() == [4] * 5
    cand = torch.tensor([[5, 6, 5, 7, 6]])
    valid = torch.tensor([[True, False, True, True, True]])
    assert first_occurrence(cand, valid).tolist() == [[True, False, False, True, True]]


def test_cspa_with_k_u_one_and_no_exclusions_keeps_every_source(tiny):
    """k_u = 1.0 and nothing excluded: every source k <= q is kept at q."""
    tokens = doc_tokens(tiny.tokenizer, 1, 12, seed=2)
    mu = mean_result(tiny, tokens, (1, 2))
    cfg = CSPAConfig(k_u=1.0, negative_only=False, excluded_token_ids=())
    res = analyze(tiny, tokens, (1, 2), mu, cspa=cfg, effects=("direct",), ln_modes=("frozen",))
    assert res.cspa_n_kept[0].tolist() == [q + 1 for q in range(12)]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(k_u=0.0), "in \\(0, 1\\]"),
        (dict(k_u=1.5), "in \\(0, 1\\]"),
        (dict(k_u=0), ">= 1"),
        (dict(k_u="5%"), "fraction"),
        (dict(k_s=0), "k_s"),
        (dict(max_kept_shown=0), "max_kept_shown"),
        (dict(interventions=()), "interventions must be qk,ov, qk or ov"),
        (dict(interventions=("qk", "xx")), "interventions must be"),
        (dict(interventions=("qk", "qk")), "interventions must be"),
        (dict(interventions="qk"), "interventions must be"),
    ],
)
def test_bad_cspa_config(kwargs, message):
    with pytest.raises(InvalidInputError, match=message):
        CSPAConfig(**kwargs)


def test_k_s_above_one_needs_a_table(toy):
    with pytest.raises(InvalidInputError, match="neighbour table"):
        analyze(toy, torch.zeros(1, 4, dtype=torch.long), (1, 2), torch.zeros(4, 512), cspa=CSPAConfig(k_s=2))


def test_summary_metrics_hand_computed():
    kl_a = torch.tensor([0.4, 0.2, 0.2, 0.0])
    kl_c = torch.tensor([0.1, 0.0, 0.1, 0.0])
    dl_a = torch.tensor([1.0, -0.5, 0.3, 0.0])
    dl_c = torch.tensor([0.2, -0.1, 0.0, 0.1])
    s = summary_metrics(kl_a, kl_c, dl_a, dl_c, n_buckets=2)
    assert s.explained_kl == pytest.approx(1 - 0.05 / 0.2)
    assert s.explained_loss_net == pytest.approx(1 - 0.05 / 0.2)
    assert s.explained_loss_abs == pytest.approx(1 - 0.1 / 0.45)
    # buckets by ablation Δloss: [-0.5, 0.0] and [0.3, 1.0]
    assert s.curve_ablation == pytest.approx([-0.25, 0.65])
    assert s.curve_cspa == pytest.approx([0.0, 0.1])
    assert s.explained_top_bucket == pytest.approx(1 - 0.1 / 0.65)  # the top bucket, [0.3, 1.0]
    with pytest.raises(InvalidInputError):
        summary_metrics(kl_a, kl_c[:2], dl_a, dl_c)


def test_top_percentile_bucket_against_a_sort_in_the_test(toy_artifacts):
    """The paper's top-percentile figure (88.1% for 10.7): among the 1% of tokens where mean ablation raised the
    loss most, 1 - mean Δloss under CSPA / mean Δloss under ablation; from a plain sort here, and as the app and
    report read it from the stored curve."""
    from precompute import schema
    from precompute.store.reader import open_artifacts

    g = torch.Generator().manual_seed(0)
    dl_a = torch.randn(1000, generator=g, dtype=torch.float64)
    dl_c = dl_a * torch.rand(1000, generator=g, dtype=torch.float64)
    top = dl_a.argsort()[-10:]  # 1000 tokens: 100 buckets of 10
    ref = 1 - float(dl_c[top].mean()) / float(dl_a[top].mean())
    s = summary_metrics(dl_a.abs(), dl_c.abs(), dl_a, dl_c)
    assert s.explained_top_bucket == pytest.approx(ref, abs=1e-9)
    arts = open_artifacts(toy_artifacts)
    dla = torch.from_numpy(arts.field(schema.delta_loss(schema.PAPER_VARIANT))[:, :-1].astype("float64")).flatten()
    dlc = torch.from_numpy(arts.field(schema.delta_loss(schema.CSPA))[:, :-1].astype("float64")).flatten()
    order = dla.argsort()
    last = torch.tensor_split(order, 100)[-1]
    ref = 1 - float(dlc[last].mean()) / float(dla[last].mean())
    assert arts.paper_figures()["explained_top_bucket"] == pytest.approx(ref, abs=1e-3)


def test_sparse_and_dense_cspa_dla_agree(toy, monkeypatch):
    results = sparse_and_dense_analyses(toy, (1, 2), 64, monkeypatch)
    for field in ("delta_loss_cspa", "kl_cspa", "cspa_dla_neg_values", "cspa_dla_pos_values", "cspa_topk_logprobs"):
        torch.testing.assert_close(results["sparse"][field], results["dense"][field], atol=1e-4, rtol=0, msg=field)


def test_keep_counts_at_exact_multiples():
    """K = ceil(k_u (q + 1)): where k_u (q + 1) is a whole number, K is exactly that number (float noise aside)."""
    k = keep_counts(0.05, 60)
    assert k[19].item() == 1 and k[20].item() == 2 and k[39].item() == 2 and k[59].item() == 3
    assert keep_counts(0.25, 8).tolist() == [1, 1, 1, 1, 2, 2, 2, 2]
    assert keep_counts(3, 4).tolist() == [3, 3, 3, 3]


def test_first_occurrence_is_per_row_and_ignores_invalid_entries():
    cand = torch.tensor([[1, 2, 1, 0, 1], [1, 2, 1, 0, 1]])
    valid = torch.tensor([[False, True, True, True, True], [True, True, True, True, True]])
    got = first_occurrence(cand, valid)
    assert got.tolist() == [[False, True, True, True, False], [True, True, False, True, False]]


def test_explained_is_nan_without_an_effect():
    from precompute.science.cspa import explained

    assert math.isnan(explained(torch.zeros(4), torch.ones(4)))
    assert explained(torch.full((4,), 2.0), torch.full((4,), 0.5)) == pytest.approx(0.75)


def test_cspa_interventions_from_the_command_line_are_recorded_and_named_by_report(tmp_path):
    """``--cspa-interventions ov,qk`` is the paper's CSPA (recorded as qk,ov); ``qk`` alone is recorded and named
    by report among the settings that differ; a bad name is refused."""
    from precompute import RunConfig
    from precompute.jobs.pipeline import run
    from precompute.jobs.report import differences
    from precompute.store.reader import open_artifacts

    assert RunConfig(cspa_interventions=("ov", "qk")).cspa().interventions == ("qk", "ov")
    with pytest.raises(InvalidInputError, match="interventions"):
        RunConfig(model="toy", cspa_interventions=("qv",)).validate()
    out = tmp_path / "qk"
    cfg = RunConfig(
        model="toy", dataset="synthetic", n_seqs=4, seq_len=24, shard_size=4, cspa_interventions=("qk",), out=str(out)
    )
    run(cfg, log=lambda *_: None)
    arts = open_artifacts(out)
    assert arts.hyperparameters["cspa_interventions"] == ["qk"]
    assert arts.hyperparameters["cspa"]["interventions"] == ["qk"]
    assert ("CSPA interventions", "qk,ov", "qk") in [tuple(d) for d in differences(arts)]


def test_three_interventions_side_by_side_in_report_json_and_on_the_cspa_page(toy, toy_artifacts, capsys, monkeypatch):
    """``report --interventions 2 --json``: the whole table as data, with CSPA three ways measured on the first two
    sequences; the paper's CSPA there equals analyze with the artifacts' settings; the CSPA page shows the same."""
    import json

    from precompute import paper, schema
    from precompute.jobs.cli import main
    from precompute.store.reader import open_artifacts

    arts = open_artifacts(toy_artifacts)
    assert main(["report", str(toy_artifacts), "--interventions", "2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [f["key"] for f in out["figures"]] == [f.key for f in paper.FIGURES]
    assert {"model", "head", "settings_that_differ", "cspa_interventions"} <= set(out)
    three = out["cspa_interventions"]
    assert set(three) == {"qk,ov", "qk", "ov"} and three["qk"]["paper"] == 0.952
    head = tuple(int(x) for x in out["head"].split("."))
    tokens = torch.stack([torch.as_tensor(arts.tokens(i)).long() for i in range(2)])
    mu = torch.from_numpy(arts.mean_result(out["head"]))
    res = analyze(
        toy,
        tokens,
        head,
        mu,
        cspa=CSPAConfig(exclusions="paper"),
        effects=("direct",),
        ln_modes=("frozen",),
        readout=arts.readout(out["head"])[0],  # the head's own read-out, as the set's CSPA
        lens=stored_lens(arts),
    )
    ref = summary_metrics(
        res[schema.kl(schema.PAPER_VARIANT)],
        res[schema.kl(schema.CSPA)],
        res[schema.delta_loss(schema.PAPER_VARIANT)],
        res[schema.delta_loss(schema.CSPA)],
    )
    # the three ways share one forward pass and their own log-partitions (cspa_interventions.compare): float32 apart
    assert three["qk,ov"]["measured"] == pytest.approx(ref.explained_kl, abs=1e-5)
    assert len({round(v["measured"], 6) for v in three.values()}) == 3  # three different numbers
    assert main(["report", str(toy_artifacts), "--interventions", "2"]) == 0
    text = capsys.readouterr().out
    assert "CSPA, QK only" in text and "CSPA with each intervention" in text
    assert main(["report", str(toy_artifacts), "--interventions", "-3"]) == 2

    from streamlit.testing.v1 import AppTest

    from .app_helpers import APP

    monkeypatch.setenv("CSE_ARTIFACTS", str(toy_artifacts))
    at = AppTest.from_file(APP, default_timeout=120).run()
    at.switch_page("views/cspa.py").run()
    at.selectbox(key="cspa_n").set_value(2).run()
    next(b for b in at.button if b.label == "Compute the three side by side").click().run()
    assert not at.exception
    table = at.dataframe[-1].value
    assert table["intervention"].tolist() == list(paper.CSPA_INTERVENTION_LABELS.values())
    assert table["effect explained (KL)"].tolist()[0] == f"{100 * three['qk,ov']['measured']:.1f}%"
    lo, hi = (float(v.rstrip("%")) for v in table["90% interval over sequences"].tolist()[0].split(" to "))
    assert lo <= 100 * three["qk,ov"]["measured"] + 0.05 and hi >= 100 * three["qk,ov"]["measured"] - 0.05


def test_explained_interval_over_sequences_hand_cases():
    from precompute.science.cspa import explained, explained_interval

    # every sequence explains the same share: the interval is that share, exactly
    a = torch.tensor([[1.0, 1.0], [2.0, 0.0], [0.5, 0.5]])
    lo, hi = explained_interval(a, 0.25 * a)
    assert lo == pytest.approx(0.75) and hi == pytest.approx(0.75)
    # two kinds of sequence (share 1 and share 0, equal KL): the resampled share is the fraction of the first
    # kind drawn, so the 90% interval lies inside [0, 1] around 0.5 and is wide with 4 sequences
    a = torch.ones(4, 3)
    c = torch.tensor([[0.0] * 3, [0.0] * 3, [1.0] * 3, [1.0] * 3])
    lo, hi = explained_interval(a, c)
    assert 0.0 <= lo < 0.5 < hi <= 1.0 and hi - lo >= 0.5
    assert explained(a.flatten(), c.flatten()) == pytest.approx(0.5)
    # one sequence: its own share
    assert explained_interval(torch.tensor([[2.0, 2.0]]), torch.tensor([[1.0, 0.0]])) == pytest.approx((0.75, 0.75))
