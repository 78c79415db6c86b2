"""OV/QK circuits: effective embedding against a forward pass, ranks against brute force, planted vs random."""

import pytest
import torch

from precompute import InvalidInputError
from precompute.models.loading import unwrap
from precompute.science.circuits import (
    EMBEDDINGS,
    circuit_factors,
    circuit_ranks,
    effective_embedding,
    rank_summary,
    ranks_from_factors,
)

TIER = "model"  # this file's test tier (tests/conftest.py); a test marked otherwise is in that tier


def _ln(x):
    x = x - x.mean(-1, keepdim=True)
    return x / (x.pow(2).mean(-1, keepdim=True) + 1e-5).sqrt()


def test_effective_embedding_matches_forward_with_self_attention(toy):
    """W_E + MLP0 with layer-0 attention fixed to self equals resid_post[0] of a forward pass in which every
    layer-0 head attends only to itself and positional embeddings are zero (minus the attention output bias)."""
    m = unwrap(toy)
    tokens = torch.tensor([[5, 17, 40, 99, 311]])

    def self_only(pattern, hook):
        return torch.eye(pattern.shape[-1]).expand_as(pattern).clone()

    def no_pos(x, hook):
        return torch.zeros_like(x)

    def no_attn_bias(x, hook):
        return x - m.b_O[0]

    with torch.inference_mode():
        _, cache = m.run_with_cache(tokens, names_filter=["blocks.0.hook_resid_post"], fwd_hooks=[])
        m.add_hook("hook_pos_embed", no_pos)
        m.add_hook("blocks.0.attn.hook_pattern", self_only)
        m.add_hook("blocks.0.hook_attn_out", no_attn_bias)
        try:
            _, cache = m.run_with_cache(tokens, names_filter=["blocks.0.hook_resid_post"], reset_hooks_end=False)
        finally:
            m.reset_hooks()
    ref = cache["blocks.0.hook_resid_post"][0]
    got = effective_embedding(toy, "W_E+mlp0")[tokens[0]]
    torch.testing.assert_close(got, ref, atol=1e-4, rtol=0)
    mlp_only = effective_embedding(toy, "mlp0")[tokens[0]]
    w_e = m.W_E[tokens[0]]
    attn_self = torch.einsum("nhe,hed->nd", torch.einsum("nd,hde->nhe", _ln(w_e), m.W_V[0]), m.W_O[0])
    torch.testing.assert_close(mlp_only, ref - w_e - attn_self, atol=1e-4, rtol=0)


def test_noattn_variant_and_plain_embedding(tiny):
    m = unwrap(tiny)
    w_e = m.W_E
    assert torch.equal(effective_embedding(tiny, "W_E"), w_e)
    mlp = torch.nn.functional.gelu(_ln(w_e) @ m.W_in[0] + m.b_in[0], approximate="tanh") @ m.W_out[0] + m.b_out[0]
    torch.testing.assert_close(effective_embedding(tiny, "mlp0_noattn"), mlp, atol=1e-4, rtol=0)
    torch.testing.assert_close(effective_embedding(tiny, "W_E+mlp0_noattn"), w_e + mlp, atol=1e-4, rtol=0)


@pytest.mark.parametrize("embedding", EMBEDDINGS)
def test_ranks_equal_brute_force(tiny, embedding):
    m = unwrap(tiny)
    layer, h = 2, 1
    w_ee = effective_embedding(tiny, embedding)
    ov_full = w_ee @ m.W_V[layer, h] @ m.W_O[layer, h] @ m.W_U  # [V, V], small vocab
    qk_full = _ln(m.W_U.T) @ m.W_Q[layer, h] @ m.W_K[layer, h].T @ _ln(w_ee).T
    n = ov_full.shape[0]
    ov_ref = torch.tensor([int((ov_full[i] < ov_full[i, i]).sum()) for i in range(n)])
    qk_ref = torch.tensor([int((qk_full[i] > qk_full[i, i]).sum()) for i in range(n)])
    ov = circuit_ranks(tiny, (layer, h), "ov", embedding)
    qk = circuit_ranks(tiny, (layer, h), "qk", embedding)
    assert ov.dtype == torch.long and ov.shape == (n,)
    # float ties between nearly equal entries may differ by one between orders of summation
    assert (ov - ov_ref).abs().max() <= 1 and (ov == ov_ref).float().mean() > 0.99
    assert (qk - qk_ref).abs().max() <= 1 and (qk == qk_ref).float().mean() > 0.99


def test_chunked_ranks_equal_unchunked():
    g = torch.Generator().manual_seed(0)
    rows, cols = torch.randn(300, 8, generator=g), torch.randn(300, 8, generator=g)
    for circuit in ("ov", "qk"):
        assert torch.equal(
            ranks_from_factors(rows, cols, circuit, chunk=7), ranks_from_factors(rows, cols, circuit, chunk=1000)
        )


def test_planted_head_scores_near_100_and_random_head_near_chance(toy):
    planted_ov = rank_summary(circuit_ranks(toy, (1, 2), "ov"))
    planted_qk = rank_summary(circuit_ranks(toy, (1, 2), "qk"))
    random_ov = rank_summary(circuit_ranks(toy, (1, 0), "ov"))
    random_qk = rank_summary(circuit_ranks(toy, (1, 0), "qk"))
    # planted: near 100% (function words are deliberately weak, as in GPT-2); chance is 10/512 ~ 2% for top 10
    assert planted_ov.frac_top10 > 0.85 and planted_qk.frac_top10 > 0.95
    assert planted_ov.median_rank == 0 and planted_qk.median_rank == 0
    assert random_ov.frac_top10 < 0.06 and random_qk.frac_top10 < 0.06
    assert random_ov.median_rank > 150


def test_factors_reproduce_bars(toy):
    from precompute.science.circuit_bars import circuit_bars

    f = circuit_factors(toy, (1, 2))
    assert all(v.shape == (512, 128) for v in f.values())
    s = 300
    ov_row = f["ov_src"][s] @ f["ov_dst"].T
    assert int((ov_row < ov_row[s]).sum()) == int(circuit_ranks(toy, (1, 2), "ov", factors=f)[s])
    arrays = {k: v.numpy() for k, v in f.items()}
    ids, vals, own, rank = circuit_bars(arrays, s, "ov", "source", 5)
    ref_vals, ref_ids = ov_row.topk(5, largest=False)
    assert ids.tolist() == ref_ids.tolist() and abs(own - float(ov_row[s])) < 1e-4
    assert rank == int(circuit_ranks(toy, (1, 2), "ov", factors=f)[s])
    qk_col = f["qk_dst"] @ f["qk_src"][s]  # which query tokens attend most to source s
    ids, vals, own, rank = circuit_bars(arrays, s, "qk", "source", 5)
    assert ids.tolist() == qk_col.topk(5).indices.tolist() and rank == int((qk_col > qk_col[s]).sum())


def test_rank_summary_hand_computed():
    s = rank_summary(torch.tensor([0, 0, 3, 12, 50]), n_worst=2)
    assert s.frac_rank0 == pytest.approx(0.4) and s.frac_top10 == pytest.approx(0.6)
    assert s.median_rank == 3 and s.mean_rank == pytest.approx(13.0)
    assert s.worst_token_ids == (4, 3) and s.worst_ranks == (50, 12)


def test_bad_circuit_arguments(toy):
    with pytest.raises(InvalidInputError, match="unknown circuit"):
        circuit_ranks(toy, (1, 2), "vo")
    with pytest.raises(InvalidInputError, match="unknown embedding"):
        effective_embedding(toy, "W_X")
    with pytest.raises(InvalidInputError, match="does not exist"):
        circuit_factors(toy, (10, 12))


# ---------------------------------------------------------------- rotary models: QK at a query-key distance


@pytest.fixture(scope="module", params=["llama", "neox"])
def rotary_model(request, tmp_path_factory):
    from precompute.models.loading import load_model

    from .factories import make_model_folder

    return load_model(str(make_model_folder(request.param, tmp_path_factory.mktemp(request.param))))


@pytest.mark.parametrize("delta", [0, 1, 4, 16])
def test_rotation_to_a_distance_is_the_models_own_in_a_forward_pass(rotary_model, delta):
    """A key token delta positions before a query position in a real forward pass: the query rotated by
    ``qk_at_distance`` against the unrotated key gives the model's own attention score there (Llama: full rotary;
    NeoX: partial rotary, 4 of 16 dimensions), for every head and several query positions."""
    from precompute.models import architecture, hooks
    from precompute.science.circuits import qk_at_distance

    m = unwrap(rotary_model)
    arch = architecture.of(m)
    tokens = torch.tensor([[0] + list(range(5, 29))])  # 25 positions
    layer = 1
    names = [hooks.block(layer, f"attn.hook_{n}") for n in ("q", "k", "attn_scores")]
    _, cache = m.run_with_cache(tokens, names_filter=names)
    q, k, scores = (cache[n][0].float() for n in names)
    scale = m.cfg.d_head**-0.5
    for h in range(m.cfg.n_heads):
        for p in (delta, 20, 24):
            got = qk_at_distance(rotary_model, q[p, h][None], delta)[0] @ k[p - delta, arch.kv_head(h)] * scale
            torch.testing.assert_close(got, scores[h, p, p - delta], atol=1e-4, rtol=1e-4)
    assert not torch.allclose(qk_at_distance(rotary_model, q[5], 16), q[5])  # the rotation does something
    assert torch.equal(qk_at_distance(rotary_model, q[5], 0), q[5].float())  # distance 0: none


def test_learned_positions_keep_the_papers_position_blind_qk(toy):
    from precompute.science.circuits import qk_at_distance

    x = torch.randn(7, toy.model.cfg.d_head)
    assert torch.equal(qk_at_distance(toy, x, 16), x)  # learned positions: the paper's QK, no rotation


def test_attended_distances_from_the_stored_attention():
    """Hand-made sparse attention: quantiles of q - k weighted by attention, the start token left out."""
    from precompute.science.circuits import attended_distances

    # one sequence of 6 positions, two sources per query: (BOS, q - 1) with weights (0.5, 0.5), except q = 5
    pos = torch.tensor([[[0, 0], [0, 0], [0, 1], [0, 2], [0, 3], [1, 4]]])
    weight = torch.tensor([[[1.0, 0.0], [1.0, 0.0], [0.5, 0.5], [0.5, 0.5], [0.5, 0.5], [0.9, 0.1]]])
    got = attended_distances(pos, weight)
    # distance 1 carries 0.5 + 0.5 + 0.5 + 0.1 = 1.6 and distance 4 carries 0.9: median 1, p90 4
    assert got["median"] == 1 and got["quantiles"]["p90"] == 4 and got["quantiles"]["p50"] == 1
    assert got["weight_share"] == pytest.approx(2.5 / 6.0)
    assert attended_distances(pos[:, :2], weight[:, :2]) is None  # only the start token attended


def _tiny_llama_run(folder, out):
    """A small run of head 1.1 of the tiny Llama in ``folder`` on synthetic text, opened."""
    from precompute import RunConfig, open_artifacts, run

    cfg = RunConfig(
        model=str(folder), heads=((1, 1),), dataset="synthetic", n_seqs=4, seq_len=24, shard_size=4, out=str(out)
    )
    return open_artifacts(run(cfg, log=lambda *_: None))


def test_a_rotary_run_stores_qk_at_the_attended_distance_and_the_stated_ones(tmp_path):
    """A run on a tiny Llama: the QK side stored rotated to the head's attended median distance, its ranks against
    a brute-force reference written here, and rank summaries at 1, 4, 16 and 64 positions in the manifest."""
    from precompute.models.loading import load_model
    from precompute.models.rotary import at_distance

    from .factories import make_model_folder

    folder = make_model_folder("llama", tmp_path / "llama")
    arts = _tiny_llama_run(folder, tmp_path / "r")
    s = arts.summary("1.1")
    assert {f"qk_at_{d}" for d in (1, 4, 16, 64)} <= set(s) and s["qk_distance"]["used"] >= 1
    lm = load_model(str(folder))
    f = circuit_factors(lm, (1, 1))
    rotated = at_distance(unwrap(lm), f["qk_dst"], int(s["qk_distance"]["used"]))
    stored = arts.circuits("1.1")
    torch.testing.assert_close(torch.from_numpy(stored["qk_dst"]).float(), rotated, atol=2e-3, rtol=2e-3)
    full = rotated @ f["qk_src"].T  # brute force: the whole [query token, key token] matrix
    ref = (full >= full.diagonal()[:, None]).sum(-1) - 1
    assert (torch.from_numpy(stored["qk_rank"]).long() - ref).abs().max() <= 1  # float16 storage ties
    four = at_distance(unwrap(lm), f["qk_dst"], 4) @ f["qk_src"].T
    ref4 = ((four >= four.diagonal()[:, None]).sum(-1) - 1).double()
    assert s["qk_at_4"]["frac_top10"] == pytest.approx(float((ref4 < 10).double().mean()), abs=1e-9)


def test_a_bad_distance_is_refused_on_a_rotary_model(rotary_model):
    from precompute.science.circuits import qk_at_distance

    for bad in (-1, 1.5, True):
        with pytest.raises(InvalidInputError, match="whole number"):
            qk_at_distance(rotary_model, torch.zeros(2, unwrap(rotary_model).cfg.d_head), bad)


def test_ov_dynamic_against_a_loop_over_pairs(toy, toy_artifacts):
    """The OV circuit on the run's text: every (q, k) with attention > 10% (start token out), the moved vector
    A v_k W_O / sigma_f on the vocabulary, the source's rank; a loop here against the stored summary."""
    from precompute.store.reader import open_artifacts

    arts = open_artifacts(toy_artifacts)
    head = tuple(int(x) for x in arts.manifest["heads"][0].split("."))
    m = unwrap(toy)
    tokens = torch.from_numpy(arts.field("tokens").astype("int64"))
    _, cache = m.run_with_cache(tokens)
    layer, h = head
    A = cache[f"blocks.{layer}.attn.hook_pattern"][:, h]
    v = cache[f"blocks.{layer}.attn.hook_v"][:, :, h]
    sigma = cache["ln_final.hook_scale"][..., 0]
    nb = {k: torch.as_tensor(t) for k, t in arts.semantic().items()}
    ranks, semantic, zs = [], [], []
    for b in range(tokens.shape[0]):
        for q in range(tokens.shape[1]):
            for k in range(1, q + 1):
                if A[b, q, k] <= 0.1:
                    continue
                logits = (A[b, q, k] * v[b, k] @ m.W_O[layer, h] / sigma[b, q]) @ m.W_U
                src = int(tokens[b, k])
                zs.append(float((logits[src] - logits.mean()) / logits.std(correction=0)))
                rank = int((logits < logits[src]).sum())
                ranks.append(rank)
                if 1 <= rank < 10:
                    near = {int(x) for t in nb.values() for x in t[src].tolist() if x >= 0}
                    semantic.append(int(logits.argmin()) in near)
    got = arts.summary()["ov_dynamic"]
    assert got["n_pairs"] == len(ranks) > 50
    r = torch.tensor(ranks)
    assert got["frac_top10"] == pytest.approx(float((r < 10).double().mean()), abs=1e-9)
    assert got["frac_rank0"] == pytest.approx(float((r == 0).double().mean()), abs=1e-9)
    assert got["mean_source_z"] == pytest.approx(sum(zs) / len(zs), abs=1e-4)
    assert got["chance_top10"] == 10 / m.cfg.d_vocab
    if semantic:
        assert got["frac_rank1_9_semantic"] == pytest.approx(sum(semantic) / len(semantic), abs=1e-9)
    assert arts.paper_figures()["ov_dynamic_top10"] == got["frac_top10"]


def test_ov_dynamic_on_a_rotary_grouped_query_model(tiny_llama):
    """The same loop on a tiny Llama (RMSNorm, grouped-query values: query head h reads key/value head h // 2)."""
    from precompute.models import architecture
    from precompute.science.ov_dynamic import ov_dynamic

    from .conftest import doc_tokens

    m = unwrap(tiny_llama)
    tokens = doc_tokens(tiny_llama.tokenizer, 3, 20, seed=2)
    layer, h = 1, 3
    kv = architecture.of(m).kv_head(h)
    _, cache = m.run_with_cache(tokens)
    A = cache[f"blocks.{layer}.attn.hook_pattern"][:, h]
    v = cache[f"blocks.{layer}.attn.hook_v"][:, :, kv]
    sigma = cache["ln_final.hook_scale"][..., 0]
    ranks = []
    for b in range(tokens.shape[0]):
        for q in range(tokens.shape[1]):
            for k in range(1, q + 1):
                if A[b, q, k] > 0.1:
                    logits = (A[b, q, k] * v[b, k] @ m.W_O[layer, h] / sigma[b, q]) @ m.W_U
                    ranks.append(int((logits < logits[int(tokens[b, k])]).sum()))
    got = ov_dynamic(tiny_llama, tokens, (layer, h))
    r = torch.tensor(ranks)
    assert got.n_pairs == len(ranks) > 10
    assert got.frac_top10 == pytest.approx(float((r < 10).double().mean()), abs=1e-9)
    assert got.median_rank == float(r.double().median())


def test_a_large_vocabulary_ranks_a_sample_of_its_tokens(tmp_path, monkeypatch):
    """Above EXACT_RANK_VOCAB tokens a run ranks a seeded sample of EXACT_RANK_VOCAB² / d_vocab text tokens (ranks
    among all tokens, equal to a brute-force reference here) and stores −1 for the rest; the summaries are over
    the sample, their worst tokens are real token ids, and the files say what was ranked."""
    import precompute.science.circuits as C
    from precompute.models.loading import load_model

    from .factories import make_model_folder

    folder = make_model_folder("llama", tmp_path / "llama")
    lm = load_model(str(folder))
    V = lm.model.cfg.d_vocab
    monkeypatch.setattr(C, "EXACT_RANK_VOCAB", int((V * 40) ** 0.5))  # a sample of about 40 of its tokens
    ids = C.ranked_rows(lm.tokenizer, V)
    assert len(ids) == C.EXACT_RANK_VOCAB**2 // V and torch.equal(ids, ids.sort().values)
    assert torch.equal(ids, C.ranked_rows(lm.tokenizer, V))  # seeded: the same sample every time
    arts = _tiny_llama_run(folder, tmp_path / "r")
    stored = arts.circuits("1.1")
    ov = torch.from_numpy(stored["ov_rank"]).long()
    f = circuit_factors(lm, (1, 1))
    full = f["ov_src"] @ f["ov_dst"].T  # brute force over every token
    ref = (full <= full.diagonal()[:, None]).sum(-1) - 1
    assert (ov[ids] - ref[ids]).abs().max() <= 1  # float16 storage ties
    rest = torch.ones(V, dtype=torch.bool)
    rest[ids] = False
    assert (ov[rest] == -1).all()
    s = arts.summary("1.1")
    assert s["ranked"] == {"tokens": len(ids), "of": V} and s["ov"]["n_tokens"] == len(ids)
    assert s["ov"]["frac_top10"] == pytest.approx(float((ref[ids] < 10).double().mean()), abs=1.5 / len(ids))
    assert set(s["ov"]["worst_token_ids"]) <= set(ids.tolist())
    assert C.ranked_rows(lm.tokenizer, 10) is None  # a small vocabulary: every token


def test_rank_summary_maps_sampled_entries_to_their_tokens():
    s = rank_summary(torch.tensor([5, 0, 9]), n_worst=2, ids=torch.tensor([10, 40, 70]))
    assert s.worst_token_ids == (70, 10) and s.worst_ranks == (9, 5) and s.n_tokens == 3
