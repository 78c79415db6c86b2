"""Every stored field, read back from the pipeline's files at their stored precision, against an independent
reference written here: full forward passes with hooks on the processed model, the materialised CSPA of
``test_cspa.reference_cspa``, and explicit formulas. On two models: the synthetic toy and a random GPT-2."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from precompute import CSPAConfig
from precompute import schema as F
from precompute.store.reader import open_artifacts

from .conftest import SMALL_RUN, write_text_dataset
from .references import reference_cspa

TIER = "model"  # this file's test tier (tests/conftest.py); a test marked otherwise is in that tier

HEAD = (1, 2)
RUN = dict(SMALL_RUN, n_seqs=4, seq_len=24, shard_size=2, n_mean=4, k=5, batch_size=2, heads=(HEAD,))


def _close(stored, ref, what, rtol=2e-3, atol=2e-3):
    """fp16 storage: relative 2^-11, plus float32 arithmetic done in a different order."""
    np.testing.assert_allclose(
        np.asarray(stored, dtype=np.float64), np.asarray(ref, dtype=np.float64), rtol=rtol, atol=atol, err_msg=what
    )


@pytest.fixture(
    scope="module",
    params=[("toy", "logit_lens"), ("tiny", "logit_lens"), ("toy", "tuned_lens"), ("tiny", "final_minus_head")],
    ids=lambda p: "-".join(p),
)
def stored(request, tmp_path_factory):
    from precompute import RunConfig, run

    name, readout = request.param
    lm = request.getfixturevalue(name)
    root = tmp_path_factory.mktemp(f"fields-{name}-{readout}")
    data = write_text_dataset(root)
    cfg = RunConfig(**{**RUN, "model": "toy"}, dataset=str(data), out=str(root / "run"), readout=readout)
    run(cfg, loaded=lm, log=lambda *_: None)
    arts = open_artifacts(root / "run")
    recs = [arts.sequence(i) for i in range(arts.n_sequences)]
    tokens = torch.from_numpy(np.stack([r[F.TOKENS] for r in recs])).long()
    assert arts.readout()[0] == readout
    return lm, arts, recs, tokens, readout


def _readout_rows(m, arts, cache, readout, layer, pre_c, frozen_rows):
    """The read-out's prediction rows (times W_U, plus b_U: its logits), written out here from the stored lens."""
    if readout == "logit_lens":
        return pre_c / cache[f"blocks.{layer}.ln1.hook_scale"]
    if readout == "tuned_lens":
        from safetensors.torch import load_file

        lens = load_file(str(arts.root / F.TUNED_LENS_FILE))
        i = lens["layers"].tolist().index(layer)
        x = pre_c / (pre_c.pow(2).mean(-1, keepdim=True) + m.cfg.eps).sqrt()
        return x + x @ lens["weight"][i] + lens["bias"][i]
    return frozen_rows


def _references(lm, arts, tokens, readout="logit_lens"):
    m = lm.model
    layer, h = HEAD
    mu = torch.from_numpy(arts.mean_result()).float()[: tokens.shape[1]]
    with torch.inference_mode():
        logits, cache = m.run_with_cache(tokens)
    r = cache[f"blocks.{layer}.attn.hook_result"][:, :, h]
    scale = cache["ln_final.hook_scale"]
    resid = cache[f"blocks.{m.cfg.n_layers - 1}.hook_resid_post"]

    def frozen(x):
        c = x - x.mean(-1, keepdim=True)
        return (c / scale) @ m.W_U + m.b_U

    def ablate(x, hook):
        x = x.clone()
        x[:, :, h] = mu
        return x

    grabbed = {}
    with torch.inference_mode():
        direct_unfrozen = m.run_with_hooks(tokens, fwd_hooks=[("ln_final.hook_in", lambda x, hook: x - r + mu)])
        both_unfrozen = m.run_with_hooks(
            tokens,
            fwd_hooks=[
                (f"blocks.{layer}.attn.hook_result", ablate),
                ("ln_final.hook_in", lambda x, hook: grabbed.setdefault("both", x.clone())),
            ],
        )
        indirect_unfrozen = m.run_with_hooks(
            tokens,
            fwd_hooks=[(f"blocks.{layer}.attn.hook_result", ablate), ("ln_final.hook_in", lambda x, hook: x + r - mu)],
        )
    pre = cache[f"blocks.{layer}.hook_resid_pre"]
    pre_c = pre - pre.mean(-1, keepdim=True)
    excluded = tuple(arts.hyperparameters["cspa"]["excluded_ids"])
    x = resid - r + mu
    rows = _readout_rows(m, arts, cache, readout, layer, pre_c, (x - x.mean(-1, keepdim=True)) / scale)
    lens_scores = (pre_c / scale) @ m.W_U if readout == "logit_lens" else rows @ m.W_U
    _, cspa_logits, kept_positions = reference_cspa(
        m, tokens, HEAD, mu, CSPAConfig(excluded_token_ids=excluded), scores=lens_scores
    )
    direct_frozen = frozen(resid - r + mu)
    logits_of = {
        F.CLEAN: logits,
        F.LENS: rows @ m.W_U + m.b_U,
        "direct_frozen": direct_frozen,
        "direct_unfrozen": direct_unfrozen,
        "both_frozen": frozen(grabbed["both"]),
        "both_unfrozen": both_unfrozen,
        "indirect_frozen": frozen(grabbed["both"] + r - mu),
        "indirect_unfrozen": indirect_unfrozen,
        F.CSPA: cspa_logits,
    }
    diff = r - mu
    dla = ((diff - diff.mean(-1, keepdim=True)) / scale) @ m.W_U
    return {
        "logits": logits_of,
        "dla": dla,
        "cspa_dla": cspa_logits - direct_frozen,
        "pattern": cache[f"blocks.{layer}.attn.hook_pattern"][:, h],
        "src_norm": (cache[f"blocks.{layer}.attn.hook_v"][:, :, h] @ m.W_O[layer, h]).norm(dim=-1),
        "lens_scores": lens_scores,
        "kept": kept_positions,
    }


def test_every_stored_field_equals_an_independent_reference(stored):
    lm, arts, recs, tokens, readout = stored
    ref = _references(lm, arts, tokens, readout)
    checked = set()
    targets = tokens[:, 1:]
    for b, rec in enumerate(recs):
        for g, logits in ref["logits"].items():
            lp = logits[b].log_softmax(-1)
            correct = lp[:-1].gather(-1, targets[b, :, None])[:, 0]
            _close(rec[F.correct_logprob(g)], correct, g)
            gap = logits[b, :-1] - logits[b, :-1].gather(-1, targets[b, :, None])
            rank = (gap > 0).sum(-1)
            near_tie = (gap.abs() < 1e-4).sum(-1) > 1
            assert np.all((rec[F.correct_rank(g)] == rank.numpy()) | near_tie.numpy()), g
            checked |= {F.correct_logprob(g), F.correct_rank(g)}
            if g != F.CLEAN and g != F.LENS:
                clean_lp = ref["logits"][F.CLEAN][b].log_softmax(-1)[:-1]
                clean_correct = clean_lp.gather(-1, targets[b, :, None])[:, 0]
                _close(rec[F.delta_loss(g)], clean_correct - correct, g)
                _close(rec[F.kl(g)], (clean_lp.exp() * (clean_lp - lp[:-1])).sum(-1), g)
                checked |= {F.delta_loss(g), F.kl(g)}
            if F.topk_ids(g) in rec:
                ids = torch.from_numpy(rec[F.topk_ids(g)]).long()
                top = lp.topk(ids.shape[-1], -1).values
                _close(lp.gather(-1, ids), top, f"{g} top-k ids")
                _close(rec[F.topk_logprobs(g)], top, f"{g} top-k log-probs")
                checked |= {F.topk_ids(g), F.topk_logprobs(g)}
        _close(
            rec[F.LOSS], -ref["logits"][F.CLEAN][b].log_softmax(-1)[:-1].gather(-1, targets[b, :, None])[:, 0], "loss"
        )
        for groups, dla in ((F.DLA_GROUPS, ref["dla"][b]), (F.CSPA_DLA_GROUPS, ref["cspa_dla"][b])):
            for g, largest in zip(groups, (False, True)):
                ids = torch.from_numpy(rec[F.dla_ids(g)]).long()
                top = dla.topk(ids.shape[-1], -1, largest=largest).values
                _close(dla.gather(-1, ids), top, f"{g} ids")
                _close(rec[F.dla_values(g)], top, f"{g} values")
                checked |= {F.dla_ids(g), F.dla_values(g)}
        # CSPA's kept pairs: positions among the reference's, their token the source's, their score the lens score
        s = tokens.shape[1]
        for q in range(s):
            pos = [int(p) for p in rec[F.CSPA_KEPT_POS][q] if p >= 0]
            assert set(pos) <= set(ref["kept"][(b, q)])
            assert int(rec[F.CSPA_N_KEPT][q]) == len(ref["kept"][(b, q)])
            shown = min(len(ref["kept"][(b, q)]), rec[F.CSPA_KEPT_POS].shape[1])
            assert len(pos) == shown
            for p, t, v in zip(rec[F.CSPA_KEPT_POS][q], rec[F.CSPA_KEPT_TOKEN][q], rec[F.CSPA_KEPT_SCORE][q]):
                if p < 0:
                    assert t == -1
                    continue
                assert int(t) == int(tokens[b, p])
                _close(v, ref["lens_scores"][b, q, int(t)], "kept score")
        checked |= {F.CSPA_KEPT_POS, F.CSPA_KEPT_TOKEN, F.CSPA_KEPT_SCORE, F.CSPA_N_KEPT}
        # attention: the top non-BOS sources, their weights, BOS, and the relative output norms
        pattern = ref["pattern"][b]
        ka = rec[F.ATTN_TOPK_POS].shape[1]
        top = pattern[:, 1:].topk(ka, -1).values
        _close(rec[F.ATTN_TOPK_WEIGHT], top, "attention weights")
        _close(pattern.gather(-1, torch.from_numpy(rec[F.ATTN_TOPK_POS]).long()), top, "attention positions")
        _close(rec[F.ATTN_BOS], pattern[:, 0], "attention to BOS")
        norm = ref["src_norm"][b]
        _close(rec[F.OUT_NORM_REL], norm / norm.max(), "out_norm_rel")
        checked |= {F.ATTN_TOPK_POS, F.ATTN_TOPK_WEIGHT, F.ATTN_BOS, F.OUT_NORM_REL, F.LOSS}
    stored_names = {f.name for f in F.head_fields()}
    assert checked == stored_names, sorted(stored_names - checked)
