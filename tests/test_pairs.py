"""Prompt pairs: logit differences, lens, DLA, activation patching (batched vs one hooked forward per cell),
attribution patching (vs a numerical derivative), self-repair; on the toy, a GPT-2-shaped random model and a
grouped-query Llama."""

import random

import pytest
import torch

from precompute import InvalidInputError, load_model
from precompute.data.prompts import PRESETS, ioi_pairs, preset_pairs
from precompute.data.tokenization import encode
from precompute.science import patching as P
from precompute.science.pairs import GRIDS, compare_prompts, prepare_pairs
from precompute.science.self_repair import self_repair

from .conftest import doc_tokens

TIER = "model"  # this file's test tier (tests/conftest.py); a test marked otherwise is in that tier

TOL = 1e-4
HOOK = P.HOOKS


def _ld(logits, answers):
    last = logits[:, -1]
    return (last.gather(-1, answers[:, :1]) - last.gather(-1, answers[:, 1:]))[:, 0]


def _reference_cell(m, inp, grid, layer, j):
    """One hooked forward pass: the corrupted prompts with one clean activation, written out by hand."""
    name = f"blocks.{layer}.{HOOK[grid]}"
    _, clean = m.run_with_cache(inp.clean, names_filter=[name])
    act = clean[name]

    def patch(x, hook):
        x = x.clone()
        if grid in ("resid_pre", "attn_out", "mlp_out"):
            x[:, j] = act[:, j]
        elif grid == "head_z":
            x[:, :, j] = act[:, :, j]
        elif grid == "head_pattern":
            x[:, j] = act[:, j]
        else:  # values: the key/value head query head j reads
            kv = j // (m.cfg.n_heads // x.shape[2])
            x[:, :, kv] = act[:, :, kv]
        return x

    logits = m.run_with_hooks(inp.corrupted, fwd_hooks=[(name, patch)])
    return float(_ld(logits, inp.answers).mean())


def _repeat_pair(lm):
    """Toy: a prompt whose next token already appeared (a content word), so the planted head suppresses it; the
    corrupted prompt replaces that earlier occurrence."""
    from precompute.data.function_words import function_word_ids

    fw = set(function_word_ids(lm.tokenizer))
    for row in doc_tokens(lm.tokenizer, 40, 40, seed=7).tolist():
        for p in range(10, 30):
            nxt = row[p + 1]
            if nxt in fw or nxt not in row[1:p]:
                continue
            first = row.index(nxt, 1)
            wrong = next(t for t in range(20, 500) if t not in row[: p + 1] and t not in fw)
            clean = row[: p + 1]
            corrupted = list(clean)
            corrupted[first] = wrong
            return torch.tensor([clean]), torch.tensor([corrupted]), torch.tensor([[nxt, wrong]])
    raise AssertionError("no repeat found")


@pytest.fixture(scope="module")
def toy_pair(toy):
    clean, corrupted, answers = _repeat_pair(toy)
    return toy, clean, corrupted, answers, compare_prompts(toy, clean, corrupted, answers, max_batch=8)


def test_toy_planted_head_has_negative_dla_on_a_repeated_answer(toy_pair):
    _, _, _, _, res = toy_pair
    assert float(res.head_dla[1, 2]) < -0.3
    # the copying head L0H0 predicts the repeated token: strongly positive
    assert float(res.head_dla[0, 0]) > 1.0


def test_logit_diff_lens_and_dla_explicit(toy_pair):
    lm, clean, corrupted, answers, res = toy_pair
    m = lm.model
    logits, cache = m.run_with_cache(clean)
    torch.testing.assert_close(res.logit_diff_clean, _ld(logits, answers), atol=TOL, rtol=0)
    torch.testing.assert_close(res.logit_diff_corrupted, _ld(m(corrupted), answers), atol=TOL, rtol=0)
    d = (m.W_U[:, answers[:, 0]] - m.W_U[:, answers[:, 1]]).T
    scale = cache["ln_final.hook_scale"][:, -1]

    def proj(x):
        x = x - x.mean(-1, keepdim=True)
        return float(((x / scale) * d).sum(-1).mean())

    L = m.cfg.n_layers
    want = [proj(cache["blocks.0.hook_resid_pre"][:, -1])]
    for layer in range(L):
        want += [
            proj(cache[f"blocks.{layer}.hook_resid_mid"][:, -1]),
            proj(cache[f"blocks.{layer}.hook_resid_post"][:, -1]),
        ]
    torch.testing.assert_close(res.lens_logit_diff, torch.tensor(want), atol=TOL, rtol=0)
    bias = float((m.b_U[answers[:, 0]] - m.b_U[answers[:, 1]]).mean())
    assert float(res.lens_logit_diff[-1]) + bias == pytest.approx(float(res.logit_diff_clean.mean()), abs=1e-3)
    for layer in range(L):
        assert float(res.layer_dla[2 * layer + 1]) == pytest.approx(
            proj(cache[f"blocks.{layer}.hook_mlp_out"][:, -1]), abs=TOL
        )
        for h in range(m.cfg.n_heads):
            assert float(res.head_dla[layer, h]) == pytest.approx(
                proj(cache[f"blocks.{layer}.attn.hook_result"][:, -1, h]), abs=TOL
            )


def _check_patching(m, inp, res, cells_per_grid=None, seed=0):
    ld_clean, ld_corr = res.ld_clean, res.ld_corrupted
    rng = random.Random(seed)
    for grid in res.patch:
        rows, cols = res.patch[grid].shape
        todo = [(i, j) for i in range(rows) for j in range(cols)]
        if cells_per_grid:
            todo = rng.sample(todo, min(cells_per_grid, len(todo)))
        for layer, j in todo:
            want = (_reference_cell(m, inp, grid, layer, j) - ld_corr) / (ld_clean - ld_corr)
            assert float(res.patch[grid][layer, j]) == pytest.approx(want, abs=1e-3), (grid, layer, j)


def test_activation_patching_equals_one_forward_per_cell_on_the_toy(toy_pair):
    lm, _, _, _, res = toy_pair
    _check_patching(lm.model, res.inputs, res)
    # the prompts differ at one position: the clean embedding there restores the clean run exactly, and the first
    # layer's input anywhere else changes nothing
    first = int((res.inputs.clean[0] != res.inputs.corrupted[0]).nonzero()[0])
    row = res.patch["resid_pre"][0]
    assert float(row[first]) == pytest.approx(1.0, abs=1e-4)
    assert float(row[torch.arange(len(row)) != first].abs().max()) < 1e-4


def test_fast_gpt2_patching_equals_hooked_batches(toy_pair):
    """GPT-2-style blocks resume from the cached corrupted run; the hooked path runs the whole model: equal."""
    from precompute.science.pairs import clean_hooks

    lm, _, _, _, res = toy_pair
    m = lm.model
    _, cache = m.run_with_cache(res.inputs.clean, names_filter=clean_hooks(m.cfg.n_layers))
    generic = P.activation_patching(m, res.inputs, cache, res.ld_clean, res.ld_corrupted, max_batch=8)
    for grid in GRIDS:
        torch.testing.assert_close(res.patch[grid], generic[grid], atol=1e-4, rtol=0, msg=grid)


def test_patching_on_ioi_with_a_gpt2_shaped_random_model():
    lm = load_model("gpt2-small-random")
    clean, corrupted, answers, _ = ioi_pairs(lm.tokenizer, 2)
    res = compare_prompts(lm, clean, corrupted, answers, max_batch=64)
    assert res.patch["resid_pre"].shape == (12, 15) and res.patch["head_z"].shape == (12, 12)
    assert set(res.patch) == set(res.attr) == set(GRIDS)
    _check_patching(lm.model, res.inputs, res, cells_per_grid=4)
    sub = compare_prompts(lm, clean, corrupted, answers, patching=False, grids=("head_z",))
    assert set(sub.attr) == {"head_z"} and not sub.patch
    torch.testing.assert_close(sub.attr["head_z"], res.attr["head_z"])
    # the pairs differ only at the second subject: the clean embedding there restores the clean run
    first = int((res.inputs.clean[0] != res.inputs.corrupted[0]).nonzero()[0])
    assert float(res.patch["resid_pre"][0, first]) == pytest.approx(1.0, abs=1e-3)


def test_gqa_value_patching_on_llama(tmp_path):
    from .factories import make_model_folder

    lm = load_model(str(make_model_folder("llama", tmp_path / "llama")))
    tok = lm.tokenizer
    rows = doc_tokens(tok, 3, 14, seed=3)
    corrupted = rows.clone()
    corrupted[:, 5] = (corrupted[:, 5] + 11) % lm.model.cfg.d_vocab
    answers = torch.stack([rows[:, -1], (rows[:, -1] + 3) % lm.model.cfg.d_vocab], 1)
    res = compare_prompts(lm, rows, corrupted, answers)
    _check_patching(lm.model, res.inputs, res, cells_per_grid=6)
    # heads sharing a key/value head get the same value patch
    torch.testing.assert_close(res.patch["head_v"][:, 0], res.patch["head_v"][:, 1])
    # Llama-style layers resume from the cached corrupted run (patching_fast) like GPT-2's: equal to the hooked
    # batches that run the whole model for every cell
    from precompute.models import architecture
    from precompute.science.pairs import clean_hooks

    m = lm.model
    assert architecture.of(m).rerun == architecture.RERUN_LAYERS
    _, cache = m.run_with_cache(res.inputs.clean, names_filter=clean_hooks(m.cfg.n_layers))
    generic = P.activation_patching(m, res.inputs, cache, res.ld_clean, res.ld_corrupted, max_batch=8)
    for grid in GRIDS:
        torch.testing.assert_close(res.patch[grid], generic[grid], atol=1e-4, rtol=0, msg=grid)


def _numerical_attribution(m, inp, grid, layer, j, eps=1e-2):
    name = f"blocks.{layer}.{HOOK[grid]}"
    _, clean = m.run_with_cache(inp.clean, names_filter=[name])
    _, corr = m.run_with_cache(inp.corrupted, names_filter=[name])
    sel = {
        "resid_pre": (slice(None), j),
        "attn_out": (slice(None), j),
        "mlp_out": (slice(None), j),
        "head_z": (slice(None), slice(None), j),
        "head_pattern": (slice(None), j),
    }[grid]
    delta = (clean[name] - corr[name])[sel]

    def f(t):
        def patch(x, hook):
            x = x.clone()
            x[sel] = x[sel] + t * delta
            return x

        return float(_ld(m.run_with_hooks(inp.corrupted, fwd_hooks=[(name, patch)]), inp.answers).double().mean())

    return (f(eps) - f(-eps)) / (2 * eps)


def test_attribution_patching_is_the_derivative(toy_pair):
    lm, _, _, _, res = toy_pair
    m = lm.model
    denom = res.ld_clean - res.ld_corrupted
    for grid, layer, j in [
        ("resid_pre", 1, 5),
        ("attn_out", 1, 12),
        ("mlp_out", 0, 3),
        ("head_z", 1, 2),
        ("head_pattern", 1, 2),
        ("head_z", 2, 0),
    ]:
        want = _numerical_attribution(m, res.inputs, grid, layer, j) / denom
        assert float(res.attr[grid][layer, j]) == pytest.approx(want, abs=2e-2 * max(1.0, abs(want))), (grid, layer, j)


def test_self_repair_against_explicit_contributions():
    lm = load_model("gpt2-small-random")
    m = lm.model
    clean, _, answers, _ = ioi_pairs(lm.tokenizer, 4)
    rep = self_repair(lm, clean, answers)  # the GPT-2 default: name movers 9.9, 9.6, 10.0, mean ablation
    assert rep.heads == ((9, 9), (9, 6), (10, 0))
    mean_z = {}
    _, cache = m.run_with_cache(clean)
    for layer in (9, 10):
        mean_z[layer] = cache[f"blocks.{layer}.attn.hook_z"].mean(0, keepdim=True)

    def ablate(x, hook):
        layer = int(hook.name.split(".")[1])
        x = x.clone()
        for l2, h in rep.heads:
            if l2 == layer:
                x[:, :, h] = mean_z[layer][:, :, h]
        return x

    grabbed = {}
    with m.hooks(fwd_hooks=[("blocks.9.attn.hook_z", ablate), ("blocks.10.attn.hook_z", ablate)]):
        logits, ab = m.run_with_cache(clean)
    d = (m.W_U[:, answers[:, 0]] - m.W_U[:, answers[:, 1]]).T

    def contrib(c, layer, h):
        r = c[f"blocks.{layer}.attn.hook_z"][:, -1, h] @ m.W_O[layer, h]
        r = r - r.mean(-1, keepdim=True)
        return float(((r / c["ln_final.hook_scale"][:, -1]) * d).sum(-1).mean())

    for layer, h in [(10, 7), (11, 10), (10, 3)]:
        assert float(rep.head_change[layer, h]) == pytest.approx(
            contrib(ab, layer, h) - contrib(cache, layer, h), abs=1e-3
        )
    assert torch.isnan(rep.head_change[9, 9]) and torch.isnan(rep.head_change[5, 0])
    assert float(rep.head_share.nan_to_num().sum() + rep.mlp_share.nan_to_num().sum()) == pytest.approx(1.0, abs=1e-4)
    assert rep.ld_ablated == pytest.approx(float(_ld(logits, answers).mean()), abs=1e-3)
    assert not grabbed
    resample = self_repair(lm, clean, answers, method="resample")
    assert resample.method == "resample" and resample.ld_ablated != rep.ld_ablated


def test_bad_pairs_are_explained(toy):
    with pytest.raises(InvalidInputError, match="not one"):
        prepare_pairs(toy, ["the teri"], ["the zuda"], [(" kanosa teri", " teri")])
    with pytest.raises(InvalidInputError, match="different lengths"):
        prepare_pairs(toy, ["the teri", "the teri and the zuda"], ["a", "b"], [(" the", " a")] * 2)
    with pytest.raises(InvalidInputError, match="same number of tokens"):
        prepare_pairs(
            toy,
            torch.zeros(1, 5, dtype=torch.long),
            torch.zeros(1, 6, dtype=torch.long),
            torch.zeros(1, 2, dtype=torch.long),
        )
    with pytest.raises(InvalidInputError, match="nothing to restore"):
        compare_prompts(toy, torch.tensor([[0, 5, 6, 7]]), torch.tensor([[0, 5, 6, 7]]), torch.tensor([[8, 9]]))
    with pytest.raises(InvalidInputError, match="heads to ablate"):
        self_repair(toy, torch.tensor([[0, 5, 6, 7]]), torch.tensor([[8, 9]]))
    with pytest.raises(InvalidInputError, match="at least two"):
        self_repair(toy, torch.tensor([[0, 5, 6, 7]]), torch.tensor([[8, 9]]), heads=[(1, 2)], method="resample")


def test_prompt_sets():
    from precompute.models.tokenizers import load_local_tokenizer

    tok = load_local_tokenizer("gpt2")
    clean, corrupted, answers, texts = ioi_pairs(tok, 8)
    assert clean.shape == corrupted.shape == (8, 15)
    for c, k, (io, s) in zip(clean.tolist(), corrupted.tolist(), answers.tolist()):
        diff = [i for i in range(len(c)) if c[i] != k[i]]
        assert len(diff) == 1 and c[diff[0]] == s and k[diff[0]] == io  # only the second subject is swapped
        assert io in c and s in c
    orders = {tuple(c.index(x) for x in (io, s)) for c, (io, s) in zip(clean.tolist(), answers.tolist())}
    assert len(orders) == 2, "both ABBA and BABA"
    for name in PRESETS:
        c, k, a = preset_pairs(name)
        assert len({len(encode(tok, x)) for x in c + k}) == 1, name
        prepare_pairs_ok = [len(tok(x, add_special_tokens=False)["input_ids"]) for pair in a for x in pair]
        assert set(prepare_pairs_ok) == {1}, name
        assert preset_pairs(name, tok) == (c, k, a)  # GPT-2's tokenizer keeps every row


def test_presets_built_for_a_tokenizer_keep_the_rows_that_fit(monkeypatch):
    """Hand-made preset on GPT-2's tokenizer: two rows of one length, one row a token longer, one row with a
    multi-token answer: the two fitting rows are kept; a set with fewer than two fitting rows is refused."""
    import precompute.data.prompts as prompts
    from precompute.models.tokenizers import load_local_tokenizer

    tok = load_local_tokenizer("gpt2")
    rows = [
        ("John is tall. Mary is", "John is short. Mary is", " short", " tall"),
        ("Tom is old. Anna is", "Tom is young. Anna is", " young", " old"),
        ("Tom is old. Anna really is", "Tom is young. Anna really is", " young", " old"),  # one token longer
        ("Bob is fast. Sue is", "Bob is slow. Sue is", " lethargic", " fast"),
    ]  # ' lethargic': three tokens
    assert len(tok(" lethargic", add_special_tokens=False)["input_ids"]) == 3
    monkeypatch.setitem(prompts.PRESETS, "handmade", rows)
    c, k, a = preset_pairs("handmade", tok)
    assert (
        c == [rows[0][0], rows[1][0]]
        and k == [rows[0][1], rows[1][1]]
        and a == [(" short", " tall"), (" young", " old")]
    )
    assert preset_pairs("handmade") == ([r[0] for r in rows], [r[1] for r in rows], [(r[2], r[3]) for r in rows])
    monkeypatch.setitem(prompts.PRESETS, "handmade", rows[2:])
    with pytest.raises(InvalidInputError, match="cannot be built with this tokenizer"):
        preset_pairs("handmade", tok)


@pytest.mark.parametrize("fast", [True, False])
def test_top_n_patches_the_cells_attribution_ranks_first_and_equals_full_patching_there(toy_pair, fast, monkeypatch):
    """AtP then activation patching of the top N: the patched cells are exactly the N largest |attribution| cells,
    their values equal full activation patching's (the resumed path and the hooked one), the rest are NaN; the
    partial callback sees the cells fill in and its last grids equal the result."""
    from precompute.models import architecture

    lm, clean, corrupted, answers, full = toy_pair
    if not fast:  # the hooked batches that run the whole model
        real = architecture.of

        def generic(m):
            import dataclasses

            return dataclasses.replace(real(m), rerun=None)

        monkeypatch.setattr(architecture, "of", generic)
    seen = []
    res = compare_prompts(lm, clean, corrupted, answers, max_batch=8, top_n=7, partial=seen.append, attribution=False)
    assert res.attr == {} and (res.patched_cells, res.total_cells) == (7, P.cell_count(lm.model, GRIDS, clean.shape[1]))
    attr = torch.cat([full.attr[g].reshape(-1) for g in GRIDS]).abs()
    patched = torch.cat([res.patch[g].reshape(-1) for g in GRIDS])
    want = set(attr.argsort(descending=True)[:7].tolist())
    assert set(torch.nonzero(~patched.isnan())[:, 0].tolist()) == want
    everything = torch.cat([full.patch[g].reshape(-1) for g in GRIDS])
    idx = sorted(want)
    torch.testing.assert_close(patched[idx], everything[idx], atol=1e-4, rtol=0)
    counts = [sum(int((~g.isnan()).sum()) for g in grids.values()) for grids in seen]
    assert counts == sorted(counts) and counts[-1] == 7 and len(seen) >= 1
    for g in GRIDS:
        torch.testing.assert_close(seen[-1][g], res.patch[g], equal_nan=True)
    # N at or above the number of cells patches every cell, as top_n=None
    assert compare_prompts(lm, clean, corrupted, answers, max_batch=8, top_n=10_000).patched_cells == res.total_cells
    with pytest.raises(InvalidInputError, match="top_n"):
        compare_prompts(lm, clean, corrupted, answers, top_n=-1)


def test_the_live_boundary_hands_the_app_arrays_equal_to_the_analysis(toy_pair):
    """``LiveModel`` returns numpy (the pages hold no torch) with the values of the analysis it wraps, and takes the
    arrays it handed out back (self-repair and attention on the pairs' own token rows)."""
    import numpy as np

    from precompute.live import LiveModel
    from precompute.science.analysis import attention_pattern

    toy, clean, corrupted, answers, want = toy_pair
    live = LiveModel(toy)
    told = []
    got = live.compare_prompts(clean, corrupted, answers, partial=told.append)
    assert isinstance(got.head_dla, np.ndarray) and isinstance(got.inputs.clean, np.ndarray)
    assert told and all(isinstance(v, np.ndarray) for grids in told for v in grids.values())
    np.testing.assert_allclose(got.head_dla, want.head_dla.numpy(), atol=1e-5)
    for g in want.patch:
        np.testing.assert_allclose(got.patch[g], want.patch[g].numpy(), atol=1e-4, equal_nan=True)
        np.testing.assert_allclose(got.attr[g], want.attr[g].numpy(), atol=1e-4, equal_nan=True)
    rep = live.self_repair(got.inputs.clean, got.inputs.answers, [(1, 2)])
    ref = self_repair(toy, clean, answers, [(1, 2)])
    assert isinstance(rep.head_change, np.ndarray) and rep.ld_clean == pytest.approx(ref.ld_clean, abs=1e-6)
    np.testing.assert_allclose(rep.head_share, ref.head_share.numpy(), atol=1e-6, equal_nan=True)
    pattern = live.attention(got.inputs.clean[0], (1, 2))
    assert isinstance(pattern, np.ndarray)
    np.testing.assert_allclose(pattern, attention_pattern(toy, clean[:1], 1, 2)[0].numpy(), atol=1e-6)
