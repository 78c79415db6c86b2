"""The verdict on a head: its words from hand-made summaries, percentiles and baselines from a hand-made survey,
the causal QK test against one hooked forward per trial, and the planted toy head told apart from the others."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from precompute.science import verdict as verdicts
from precompute.science.causal_qk import _trials, causal_qk
from precompute.science.cspa import default_excluded

TIER = "model"  # this file's test tier (tests/conftest.py); a test marked otherwise is in that tier


def _summary(enrichment=5.0, ov=0.3, cspa=0.44, logit=0.09):
    return {
        "attends_predicted": {
            "n_pairs": 100,
            "frac_predicted": 0.33,
            "frac_chance": 0.33 / enrichment,
            "top": 10,
            "enrichment": enrichment,
        },
        "ov_dynamic": {"n_pairs": 90, "frac_top10": ov, "chance_top10": 10 / 49152},
        "cspa": {"explained_kl": cspa},
        "cspa_by_readout": {"logit_lens": {"explained_kl": logit}, "tuned_lens": {"explained_kl": cspa}},
        "causal_qk": {"n_trials": 10, "rise": 0.2, "control_rise": 0.01, "clean": 0.1, "scale": 0.5},
    }


@pytest.mark.fast
def test_words_follow_the_written_thresholds():
    v = verdicts.verdict((24, 4), _summary(), "tuned_lens")
    assert v.word == "copy suppression"
    assert v.sentence == (
        "Copy suppression explains 44% of 24.4's effect (KL) on this text with the tuned lens "
        "(9% with the paper's logit lens)."
    )
    assert [s.passed for s in v.steps] == [True, True, True] and v.extras[0].passed is True
    assert verdicts.verdict((24, 4), _summary(cspa=0.6), "tuned_lens").word == "copy suppression (strong)"
    # the causal QK test: attention must at least double and beat a random token's boost 3 to 1
    for rise, control, clean, supports in (
        (0.014, 0.002, 0.008, True),
        (0.014, 0.005, 0.008, False),
        (0.005, 0.0, 0.008, False),
        (-0.01, -0.02, 0.0, False),
    ):
        s = _summary()
        s["causal_qk"].update(rise=rise, control_rise=control, clean=clean)
        assert verdicts.verdict((24, 4), s, "tuned_lens").extras[0].passed is supports, (rise, control, clean)
    assert verdicts.verdict((24, 4), _summary(enrichment=1.2), "tuned_lens").word == "partly copy suppression"
    assert verdicts.verdict((24, 4), _summary(enrichment=1.2, ov=0.01), "tuned_lens").word == (
        "not copy suppression on this text"
    )
    # the head's own read-out is the logit lens: its share is the stored cspa summary's
    s = _summary(cspa=0.09)
    s["cspa_by_readout"]["tuned_lens"]["explained_kl"] = 0.44
    v = verdicts.verdict((24, 4), s, "logit_lens")
    assert v.word == "not copy suppression on this text" and v.steps[2].passed is False  # (3) decides
    assert "with the paper's logit lens (44% with the tuned lens)" in v.sentence
    empty = verdicts.verdict((1, 2), {}, "logit_lens")
    assert empty.word == "undetermined" and empty.sentence == "CSPA was not measured for 1.2 in this set."


@pytest.mark.fast
def test_percentiles_and_baselines_from_a_survey():
    survey = pd.DataFrame(
        {
            "layer": [3, 3, 4, 4, 5, 9],
            "head": [0, 1, 0, 1, 0, 0],
            "kl_direct": [0.5, 0.1, 0.9, 0.0, 0.3, 2.0],
            "predicted_enrichment": [1.0, 2.0, 6.0, float("nan"), 1.5, 0.5],
            "ov_text_suppression": [0.1, 0.2, 3.0, 0.0, 0.4, 0.5],
            "cspa_kl_explained": [0.0, 0.1, 0.2, 0.0, 0.0, 0.0],
            "cspa_kl_explained_tuned": [0.01, 0.02, 0.5, 0.0, 0.05, 0.0],
            "ov_top10": [0.2, 0.6, 0.9, 0.1, 0.5, 0.99],
        }
    )
    # the partner: the best OV head of layers 3-5 other than itself (9.0 is too far)
    assert verdicts.suggested_partner(survey, (4, 0)) == (3, 1)
    assert verdicts.suggested_partner(survey, (9, 0)) is None
    # other heads of layers 3-5 by KL: 3.0 (0.5), 5.0 (0.3), 3.1 (0.1); 9.0 is too far
    assert verdicts.baseline_heads(survey, (4, 0)) == [(3, 0), (5, 0), (3, 1)]
    v = verdicts.verdict((4, 0), _summary(), "tuned_lens", survey)
    step1, step2, step3 = v.steps
    assert step1.percentile == 1.0 and step1.head_in_survey == 6.0  # the NaN head is left out
    assert step1.baselines == {"3.0": 1.0, "5.0": 1.5, "3.1": 2.0}
    assert step3.survey_column == "cspa_kl_explained_tuned" and step3.baselines["3.0"] == 0.01
    sv = verdicts.survey_verdict(survey, (4, 0), "tuned_lens", "8 sequences × 128 tokens of python-docs")
    assert [st.passed for st in sv.steps] == [True, True, True] and sv.word == "copy suppression (strong)"
    assert sv.sentence == (
        "Copy suppression explains 50% of 4.0's effect (KL) on the survey's text with the tuned lens "
        "(20% with the paper's logit lens)."
    )
    assert "8 sequences × 128 tokens" in sv.survey_note and "standard deviations" in sv.thresholds
    weak = verdicts.survey_verdict(survey, (3, 1), "tuned_lens")
    assert [st.passed for st in weak.steps] == [True, False, False] and weak.word == "not copy suppression on this text"
    low = verdicts.verdict((3, 0), _summary(), "logit_lens", survey)
    assert low.steps[2].survey_column == "cspa_kl_explained"
    assert low.steps[1].percentile == pytest.approx(2 / 6)  # 0.1 is above 0.0 only, itself included


def test_causal_qk_equals_one_hooked_forward_per_trial(toy, toy_tokens):
    m = toy.model
    tokens = toy_tokens[:3, :24].long()
    excluded = torch.zeros(m.cfg.d_vocab, dtype=torch.bool)
    excluded[list(default_excluded(toy.tokenizer))] = True
    head = (1, 2)
    got = causal_qk(toy, tokens, head, excluded, per_sequence=2, batch_size=3, seed=4)
    trials = _trials(tokens, excluded, 2, torch.Generator().manual_seed(4))
    assert got["n_trials"] == len(trials) > 0
    clean, rise, control = [], [], []
    W_U = m.W_U
    for i, q, t, c in trials:
        where = [k for k in range(1, q) if int(tokens[i, k]) == t]
        att = []
        for tok in (None, t, c):

            def add(x, hook, tok=tok, q=q):
                if tok is None:
                    return x
                u = W_U[:, tok] - W_U[:, tok].mean()  # the toy's norms centre
                x = x.clone()
                x[0, q] += 0.5 * x[0, q].norm() * u / u.norm()
                return x

            seen: dict = {}

            def grab(x, hook, seen=seen):
                seen["p"] = x[0, 2].clone()

            m.run_with_hooks(
                tokens[i : i + 1], fwd_hooks=[("blocks.1.hook_resid_pre", add), ("blocks.1.attn.hook_pattern", grab)]
            )
            att.append(float(seen["p"][q, where].sum()))
        clean.append(att[0])
        rise.append(att[1] - att[0])
        control.append(att[2] - att[0])
    assert got["clean"] == pytest.approx(sum(clean) / len(clean), abs=1e-5)
    assert got["rise"] == pytest.approx(sum(rise) / len(rise), abs=1e-5)
    assert got["control_rise"] == pytest.approx(sum(control) / len(control), abs=1e-5)
    # the planted copy suppressor responds to the prediction; a head of the other layer does not
    assert got["rise"] > 0.2 and got["rise"] > 3 * max(got["control_rise"], 0.0)
    other = causal_qk(toy, tokens, (0, 1), excluded, per_sequence=2, seed=4)
    assert abs(other["rise"]) < 0.05


def test_heads_together_equal_a_hooked_reference(toy, toy_tokens):
    """Two heads' direct effects mean-ablated together (frozen final norm) and CSPA of both, against the
    materialised CSPA of ``test_cspa.reference_cspa`` for each head, added up."""
    from precompute import CSPAConfig, mean_result
    from precompute.science.joint import group_key, joint_effect, parse_groups

    from .references import reference_cspa

    m = toy.model
    tokens = toy_tokens[:2, :20].long()
    heads = ((1, 2), (1, 0))
    means = {h: mean_result(toy, tokens, h) for h in heads}
    excluded = tuple(default_excluded(toy.tokenizer))
    got = joint_effect(toy, tokens, heads, means, CSPAConfig(), batch_size=1)
    with torch.inference_mode():
        logits, cache = m.run_with_cache(tokens)
    scale = cache["ln_final.hook_scale"]
    resid = cache[f"blocks.{m.cfg.n_layers - 1}.hook_resid_post"]
    shift = sum(cache[f"blocks.{L}.attn.hook_result"][:, :, h] - means[(L, h)][:20] for L, h in heads)
    x = resid - shift
    ablated = ((x - x.mean(-1, keepdim=True)) / scale) @ m.W_U + m.b_U
    cspa = logits.clone()
    for h in heads:
        _, cspa_h, _ = reference_cspa(m, tokens, h, means[h][:20], CSPAConfig(excluded_token_ids=excluded))
        cspa = cspa + (cspa_h - logits)
    targets = tokens[:, 1:]
    clean_lp = logits[:, :-1].log_softmax(-1)

    def effects(lg):
        lp = lg[:, :-1].log_softmax(-1)
        kl = (clean_lp.exp() * (clean_lp - lp)).sum(-1)
        dl = clean_lp.gather(-1, targets[..., None])[..., 0] - lp.gather(-1, targets[..., None])[..., 0]
        return kl.double().mean(), dl.double().mean()

    kl_a, dl_a = effects(ablated)
    kl_c, _ = effects(cspa)
    assert got["mean_delta_loss_ablation"] == pytest.approx(float(dl_a), abs=1e-4)
    assert got["explained_kl"] == pytest.approx(1 - float(kl_c / kl_a), abs=1e-3)
    assert group_key(heads) == "1.2+1.0"
    assert parse_groups("1.2+1.0, 2.1+2.2+0.0") == (((1, 2), (1, 0)), ((2, 1), (2, 2), (0, 0)))
    from precompute.errors import InvalidInputError

    for bad in ("1.2", "1.2+1.2", "1.2+x"):
        with pytest.raises(InvalidInputError):
            parse_groups(bad)
    with pytest.raises(InvalidInputError, match="no mean result"):
        joint_effect(toy, tokens, ((1, 2), (2, 0)), means, CSPAConfig())


def test_heads_together_live_with_a_head_the_set_did_not_store(toy, toy_artifacts):
    """The CSPA page's live joint effect: a head outside the set gets its mean over the set's first n_mean
    sequences, and the result equals ``joint_effect`` called with those means."""
    from precompute import mean_result
    from precompute.live import LiveModel
    from precompute.science.joint import joint_effect
    from precompute.store.reader import open_artifacts

    arts = open_artifacts(toy_artifacts)
    live = LiveModel(toy)
    got = live.joint_effect(arts, [(1, 2), (0, 1)], n_seqs=2)
    an = live.analyzer(arts)
    n_mean = arts.hyperparameters["n_mean"]
    tokens = torch.stack([torch.as_tensor(arts.tokens(i)).long() for i in range(max(2, n_mean))])
    means = {(1, 2): an.mean_results[(1, 2)], (0, 1): mean_result(toy, tokens[:n_mean], (0, 1))}
    readouts = {(1, 2): an.readout_of((1, 2)), (0, 1): an.readout_of((0, 1))}
    want = joint_effect(toy, tokens[:2], ((1, 2), (0, 1)), means, an.cspa, readouts, an.lens)
    assert got["explained_kl"] == pytest.approx(want["explained_kl"], abs=1e-9)
    assert got["readouts"] == {"1.2": readouts[(1, 2)], "0.1": readouts[(0, 1)]}
