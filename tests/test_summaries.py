"""A head's stored summary read typed (``precompute/summaries.py``): legacy defaults, round trips, figure sources."""

import math

import pytest

from precompute import paper
from precompute.summaries import CSPASummary, HeadSummary, OVDynamicSummary, RankSummary

TIER = "fast"


def test_a_set_made_before_the_top_bucket_was_stored_gets_it_from_its_curves():
    old = {"explained_kl": 0.5, "curve_ablation": [0.1, 0.4], "curve_cspa": [0.0, 0.1], "n_tokens": 7}
    s = CSPASummary.of(old)
    assert s.explained_top_bucket == pytest.approx(1 - 0.1 / 0.4)  # 1 - mean CSPA Δloss / mean ablation Δloss
    assert s.n_tokens == 7 and s.curve_ablation == (0.1, 0.4)
    stored = CSPASummary.of({**old, "explained_top_bucket": 0.25})
    assert stored.explained_top_bucket == 0.25  # a stored value is never recomputed
    assert CSPASummary.of(None).explained_kl is None and CSPASummary.of({}).curve_cspa == ()


def test_round_trip_keeps_unknown_keys_and_drops_nothing():
    d = {"n_tokens": 3, "frac_rank0": 0.5, "frac_top10": 1.0, "worst_token_ids": [4, 2], "later_key": {"x": 1}}
    r = RankSummary.of(d)
    assert r.worst_token_ids == (4, 2) and r.extra == {"later_key": {"x": 1}}
    assert r.as_dict() == d
    assert RankSummary.of(r.as_dict()) == r


def test_every_paper_figure_reads_from_its_source():
    stored = {
        "cspa": {
            "explained_kl": 0.7,
            "mean_delta_loss_ablation": 0.01,
            "mean_clean_loss": 3.1,
            "curve_ablation": [1.0],
        },
        "ov": {"frac_top10": 0.8, "frac_rank0": 0.5},
        "qk": {"frac_top10": 0.9, "frac_rank0": 0.6},
        "ov_dynamic": {"frac_top10": 0.75, "frac_rank1_9_semantic": 0.4, "n_pairs": 5},
        "indirect_excluding": {"delta_loss_frozen": 0.002},
    }
    s = HeadSummary.of(stored)
    got = {f.key: s.value(f.source) for f in paper.FIGURES}
    assert got == {
        "explained_kl": 0.7,
        "explained_top_bucket": None,  # a curve without its CSPA half: no figure
        "ov_top10": 0.8,
        "ov_rank0": 0.5,
        "ov_dynamic_top10": 0.75,
        "ov_dynamic_semantic": 0.4,
        "qk_rank0": 0.6,
        "qk_top10": 0.9,
        "delta_loss": 0.01,
        "indirect_excluding": 0.002,
        "clean_loss": 3.1,
    }
    assert HeadSummary.of({"cspa": {"explained_kl": math.nan}}).value("cspa.explained_kl") is None
    assert HeadSummary.of({"ov": {"frac_top10": "0.8"}}).value("ov.frac_top10") is None  # not a number
    assert HeadSummary.of(None).value("ov_dynamic.frac_top10") is None


def test_qk_at_distances_in_order():
    s = HeadSummary.of({"qk_at_16": {"frac_top10": 0.2}, "qk_at_4": {"frac_top10": 0.4}, "qk_at_x": {}, "qk_at_1": 3})
    assert list(s.qk_at()) == [4, 16] and s.qk_at()[4].frac_top10 == 0.4
    assert OVDynamicSummary.of({"n_pairs": 0}).frac_top10 is None


def test_run_record_applies_the_legacy_defaults_once():
    from precompute.store.run_record import LEGACY_SETTINGS, RunRecord

    hp = {"cspa_k_u": 0.05, "cspa_k_s": 1, "cspa_negative_only": True, "k": 10, "k_attn": 8}
    old = {
        "model": {"model_name": "gpt2-small", "n_layers": 12, "n_heads": 12, "n_ctx": 1024},
        "heads": ["10.7"],
        "hyperparameters": hp,
        "summary": {"10.7": {"cspa": {"explained_kl": 0.77}}},
    }
    r = RunRecord.of(old)
    assert r.model.name == "gpt2-small" and (r.model.n_layers, r.model.n_ctx) == (12, 1024) and not r.model.synthetic
    assert r.heads == ((10, 7),) and r.summaries["10.7"].cspa.explained_kl == 0.77
    s = r.settings
    assert s.cspa_exclusions == "extended" == LEGACY_SETTINGS["cspa_exclusions"]  # before the paper's list
    assert s.cspa_interventions == ("qk", "ov") and s.readout == "logit_lens" and s.n_mean is None
    new = RunRecord.of({**old, "hyperparameters": {**hp, "cspa_exclusions": "paper", "cspa_interventions": ["ov"]}})
    assert new.settings.cspa_exclusions == "paper" and new.settings.cspa_interventions == ("ov",)
