"""Answer tokens at one position (``science.answers``), against a hooked reference written here: the head's output
taken from ``hook_z`` and W_O, the direct path ablated by hand on the cached final residual stream, the full
ablation by replacing the head's output at ``hook_attn_out`` in a second forward pass."""

import pytest
import torch

from precompute.errors import InvalidInputError
from precompute.science.analysis import mean_result
from precompute.science.answers import answer_effects

from .conftest import doc_tokens
from .references import reference

TIER = "model"  # this file's test tier (tests/conftest.py); a test marked otherwise is in that tier


IOI = "When Mary and John went to the store, John gave a drink to"


@pytest.mark.parametrize(
    ("head", "effect", "ln_mode"),
    [
        ((2, 1), "direct", "frozen"),
        ((1, 3), "both", "unfrozen"),
        ((0, 2), "both", "frozen"),
        ((1, 0), "indirect", "frozen"),
    ],
)
def test_mary_logit_probability_rank_and_dla_clean_and_ablated_equal_the_hooked_reference(wide, head, effect, ln_mode):
    tok = wide.tokenizer
    mu = mean_result(wide, doc_tokens(tok, 4, 24), head)
    ids = tok(IOI)["input_ids"]
    tokens = torch.tensor([ids])
    pos = len(ids) - 1
    answers = [tok(" Mary")["input_ids"][0], tok(" John")["input_ids"][0]]
    got = answer_effects(wide, tokens, head, mu, pos, answers, effect, ln_mode)
    clean, ablated, dla_c, dla_a = reference(wide, tokens, head, mu, pos, answers, effect, ln_mode)
    ids_t = torch.tensor(answers)
    assert got.ids == answers
    assert torch.allclose(torch.from_numpy(got.logit_clean), clean[ids_t], atol=1e-4)
    assert torch.allclose(torch.from_numpy(got.logit_ablated), ablated[ids_t], atol=1e-4)
    assert torch.allclose(torch.from_numpy(got.prob_clean), clean.softmax(-1)[ids_t], atol=1e-6)
    assert torch.allclose(torch.from_numpy(got.prob_ablated), ablated.softmax(-1)[ids_t], atol=1e-6)
    for a, want_rank, rank in zip(answers, got.rank_clean, got.rank_ablated):
        assert want_rank == int((clean > clean[a]).sum())
        assert rank == int((ablated > ablated[a]).sum())
    assert torch.allclose(torch.from_numpy(got.dla_clean), dla_c, atol=1e-4)
    assert torch.allclose(torch.from_numpy(got.dla_ablated), dla_a, atol=1e-4)
    assert not torch.allclose(clean[ids_t], ablated[ids_t], atol=1e-5)  # the ablation changes something
    if effect == "direct" and ln_mode == "frozen":  # the direct path's change is exactly the DLA's
        assert torch.allclose(
            torch.from_numpy(got.logit_clean - got.logit_ablated),
            torch.from_numpy(got.dla_clean - got.dla_ablated),
            atol=1e-4,
        )


def test_answer_effects_refuse_bad_input(wide):
    tok = wide.tokenizer
    mu = mean_result(wide, doc_tokens(tok, 2, 24), (1, 1))
    tokens = torch.tensor([tok(IOI)["input_ids"]])
    for kwargs, match in [
        (dict(pos=99), "outside"),
        (dict(answers=[]), "answer tokens"),
        (dict(answers=[10**9]), "answer token ids"),
        (dict(effect="sideways"), "variant"),
    ]:
        args = dict(pos=3, answers=[5]) | kwargs
        with pytest.raises(InvalidInputError, match=match):
            answer_effects(wide, tokens, (1, 1), mu, **args)
    with pytest.raises(InvalidInputError):
        answer_effects(wide, tokens, (7, 0), mu, 3, [5])


def test_live_analyzer_answers_for_a_stored_and_an_unstored_head(toy, toy_artifacts):
    from precompute.live import LiveAnalyzer
    from precompute.store.reader import open_artifacts

    live = LiveAnalyzer.for_artifacts(toy, open_artifacts(toy_artifacts))
    text = "The kanosa of the teri is kanosa. A kanosa was in the teri with a"
    ids = toy.tokenizer(text)["input_ids"]
    answer = toy.tokenizer(" kanosa", add_special_tokens=False)["input_ids"]
    for head in [(1, 2), (0, 3)]:
        got = live.answers(text, head, 5, answer)
        n = len(live.analyze(text, head).record["tokens"])
        tokens = torch.tensor([live.analyze(text, head).record["tokens"].tolist()])
        want = answer_effects(toy, tokens, head, live.mean_of(head), 5, answer)
        assert n >= len(ids) - 1
        assert got.logit_ablated.tolist() == pytest.approx(want.logit_ablated.tolist(), abs=1e-5)
        assert got.dla_clean.tolist() == pytest.approx(want.dla_clean.tolist(), abs=1e-5)
