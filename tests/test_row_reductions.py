"""The CPU row reductions against the plain torch calls they replace (``science.row_reductions``)."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from precompute.science import row_reductions
from precompute.science.row_reductions import GROUP, count_above, topk

TIER = "fast"  # this file's test tier (tests/conftest.py); a test marked otherwise is in that tier


def _check_topk(x, k, largest):
    vals, ids = topk(x, k, largest=largest)
    ref_vals, ref_ids = x.topk(k, dim=-1, largest=largest)
    assert vals.shape == ids.shape == (x.shape[0], k)
    assert torch.equal(vals, ref_vals)  # the same values, in the same order
    assert torch.equal(x.gather(-1, ids), vals)  # the ids point at them
    assert all(len(set(row.tolist())) == k for row in ids)  # no entry twice
    if not largest:
        return
    distinct = all(len(set(row.tolist())) == row.numel() for row in x)
    if distinct:
        assert torch.equal(ids, ref_ids)


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(8 * GROUP, 8 * GROUP + 3 * GROUP),
    rows=st.integers(1, 5),
    k=st.integers(1, 2),
    largest=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_grouped_topk_equals_torch_topk(n, rows, k, largest, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, n, generator=g) * 4
    assert row_reductions._grouped(x, k)
    _check_topk(x, k, largest)


@pytest.mark.parametrize("where", ["head", "tail", "one group", "spread"])
@pytest.mark.parametrize("largest", [True, False])
def test_grouped_topk_finds_the_extremes_wherever_they_are(where, largest):
    n, k = 50257, 10  # GPT-2's vocabulary: 196 groups of 256 and a ragged tail of 81
    x = torch.zeros(3, n)
    sign = 1.0 if largest else -1.0
    spots = {
        "head": range(k),
        "tail": range(n - k, n),
        "one group": range(512, 512 + k),
        "spread": range(0, n, n // k),
    }[where]
    for rank, v in enumerate(list(spots)[:k]):
        x[:, v] = sign * (100.0 - rank)
    _check_topk(x, k, largest)
    assert sorted(topk(x, k, largest)[1][0].tolist()) == sorted(list(spots)[:k])


def test_grouped_topk_with_ties_keeps_torch_values():
    g = torch.Generator().manual_seed(5)
    x = torch.randint(0, 6, (4, 12_000), generator=g).float()  # thousands of ties at every value
    for largest in (True, False):
        _check_topk(x, 10, largest)


def test_small_rows_and_other_devices_use_torch_topk():
    x = torch.randn(2, 1000)
    assert not row_reductions._grouped(x, 10)  # too few groups: the plain call
    assert not row_reductions._grouped(torch.randn(2, 50257), 60)  # k too large for the groups
    vals, ids = topk(x, 10)
    assert torch.equal(vals, x.topk(10).values) and torch.equal(ids, x.topk(10).indices)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 3000), rows=st.integers(1, 4), seed=st.integers(0, 2**31 - 1), ties=st.booleans())
def test_count_above_equals_comparison_count(n, rows, seed, ties):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 4, (rows, n), generator=g).float() if ties else torch.randn(rows, n, generator=g)
    value = x[:, torch.randint(0, n, (1,), generator=g)[0]]
    got = count_above(x, value)
    ref = torch.tensor([sum(1 for v in row.tolist() if v > c) for row, c in zip(x, value.tolist())])
    assert got.dtype == torch.int64 and torch.equal(got, ref)


def test_count_above_on_a_full_vocabulary_row():
    x = torch.arange(50257, dtype=torch.float32).flip(0)[None].repeat(2, 1)  # descending 50256 .. 0
    got = count_above(x, torch.tensor([50256.0, -1.0]))
    assert got.tolist() == [0, 50257]


def test_shape_annotations_are_checked_at_run_time():
    """tests/conftest.py installs jaxtyping's import hook on the analysis's inner modules: a tensor of the wrong
    rank for its annotation fails where it is passed, not later as a wrong number."""
    import os

    import jaxtyping

    if os.environ.get("CSE_JAXTYPING", "1") == "0":
        pytest.skip("CSE_JAXTYPING=0: the run-time shape checks are off")
    with pytest.raises(jaxtyping.TypeCheckError):
        topk(torch.zeros(5), 2)  # a row, not [rows, d_vocab]
