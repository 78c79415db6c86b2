"""The toy model's planted head does what it was built to do (synthetic model, known behaviour)."""

from precompute import analyze, mean_result
from precompute.models.toy import TOY_PLANTED_HEAD

from .conftest import doc_tokens

TIER = "model"  # this file's test tier (tests/conftest.py); a test marked otherwise is in that tier


def test_planted_head_attends_to_predicted_tokens_and_suppresses_them(toy):
    tokens = doc_tokens(toy.tokenizer, 8, 120, seed=21)
    mu = mean_result(toy, doc_tokens(toy.tokenizer, 16, 256, seed=99), TOY_PLANTED_HEAD)
    res = analyze(toy, tokens, TOY_PLANTED_HEAD, mu, k=10, cspa=None)
    strong = 0
    for b in range(tokens.shape[0]):
        for q in range(1, tokens.shape[1]):
            row = res.attention[b, q, 1 : q + 1]
            k = int(row.argmax()) + 1
            if float(res.attention[b, q, k]) < 0.3:
                continue
            strong += 1
            attended = int(tokens[b, k])
            # the residual stream predicted it (logit lens before the head) ...
            assert attended in res.lens_topk_ids[b, q].tolist()
            # ... and the head pushes it down: among its 3 most negative direct logit attributions.
            assert attended in res.dla_neg_ids[b, q, :3].tolist()
    assert strong >= 20  # the behaviour is not vacuous


def test_copy_suppression_helps_on_average_and_bos_is_the_default(toy):
    tokens = doc_tokens(toy.tokenizer, 8, 120, seed=21)
    mu = mean_result(toy, doc_tokens(toy.tokenizer, 16, 256, seed=99), TOY_PLANTED_HEAD)
    res = analyze(toy, tokens, TOY_PLANTED_HEAD, mu, k=5, cspa=None, effects=("direct",))
    assert float(res.delta_loss_direct_frozen.mean()) > 0  # ablating the head's direct effect hurts
    assert float(res.attention[:, 10:, 0].mean()) > 0.5  # mostly parked on BOS


def test_a_random_head_does_not_copy_suppress(toy):
    tokens = doc_tokens(toy.tokenizer, 4, 120, seed=21)
    mu = mean_result(toy, tokens, (1, 0))
    res = analyze(toy, tokens, (1, 0), mu, k=10, cspa=None, effects=("direct",))
    # a random head spreads attention: no source gets >= 0.3 beyond the first few positions
    assert float(res.attention[:, 20:, 1:].max()) < 0.3
