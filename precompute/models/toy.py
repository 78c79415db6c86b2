"""The synthetic toy model: a tiny GPT-2 with hand-planted weights and a known copy-suppression head.

SYNTHETIC. It is not trained and says nothing about GPT-2; it exists so that tests have known behaviour to assert
and so that anyone offline gets a real end-to-end demo.

Residual stream (d_model = 512) is split into named subspaces:

* ``T`` (dims 0-119): token identity. The embedding of token t is a random unit vector e_t inside T.
* ``P`` (dims 120-239): predictions. The unembedding of token t reads M e_t, the copy of e_t moved into P,
  so the logit of t is proportional to (resid . M e_t).
* ``BOS`` (dim 240): set only by the BOS token, so the planted head can fall back to attending to BOS.
* ``PRIOR`` (dim 241): 1 in every embedding; the unembedding reads a unigram log-frequency prior from it.

Layers:

* **L0H0, the copying head** (the earlier component that makes real predictions): uniform causal attention, OV
  maps T to P. After it, position q predicts every token seen so far, in proportion to its frequency; on the
  synthetic documents (topics of a few repeated words) that is a genuinely good prediction.
* **MLP0** copies T onto itself (gelu(x) - gelu(-x) = x), so the "MLP0 only" effective embedding is meaningful.
* **L1H2, the planted copy-suppression head** (``TOY_PLANTED_HEAD``): QK compares the destination's predictions
  (P, via W_Q) with the source's token identity (T, via W_K), so it attends to earlier tokens the residual stream
  predicts, with a query bias that makes BOS the default; OV maps T to -M, i.e. writes minus the unembedding of
  the token it attends to.
* Every other head and the MLPs of layers 1-2 are small random weights ("random heads" for comparison).
"""

from __future__ import annotations

import torch

TOY_PLANTED_HEAD = (1, 2)
TOY_COPY_HEAD = (0, 0)
TOY_SEED = 0
D_MODEL, N_HEADS, N_LAYERS, N_CTX, D_MLP = 512, 4, 3, 256, 256
D_HEAD = D_MODEL // N_HEADS
T_DIMS = range(0, 120)
P_DIMS = range(120, 240)
BOS_DIM = 240
PRIOR_DIM = 241  # constant in every embedding; the unembedding reads a unigram log-frequency prior from it
_BOS_HEAD_DIM = 120  # head dimension the planted head uses for its "attend to BOS" default

# Gains, chosen so that the copy head's predictions, the planted head's suppression and the BOS default are of
# comparable size after LayerNorm (see tests/test_toy_model.py for the behaviour they produce).
COPY_GAIN = 0.3
MLP_GAIN = 1.0 / 16
QK_GAIN = 3.0
BOS_QUERY_BIAS = 30.0
OV_GAIN = 0.03
UNEMBED_GAIN = 1.0
RANDOM_MLP_SCALE = 0.1


PRIOR_GAIN = 0.1
FUNCTION_WORD_NORM = 0.15


def unigram_log_prior(tokenizer, n_docs: int = 60) -> torch.Tensor:
    """Log unigram frequencies of the synthetic language (add-0.1 smoothing), shape [d_vocab]."""
    from ..data.synthetic import corpus

    counts = torch.full((len(tokenizer),), 0.1)
    for doc in corpus(n_docs=n_docs, seed=777):
        ids = torch.tensor(tokenizer(doc, add_special_tokens=False)["input_ids"])
        counts.index_add_(0, ids, torch.ones(len(ids)))
    return (counts / counts.sum()).log()


def build_toy_hf_model(vocab_size: int, bos_id: int, log_prior: torch.Tensor, function_ids: list[int],
                       seed: int = TOY_SEED):
    """A ``GPT2LMHeadModel`` with the planted weights above; deterministic in ``seed``."""
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(
        vocab_size=vocab_size, n_positions=N_CTX, n_embd=D_MODEL, n_layer=N_LAYERS, n_head=N_HEADS,
        n_inner=D_MLP, activation_function="gelu_new", tie_word_embeddings=False, layer_norm_epsilon=1e-5,
        bos_token_id=bos_id, eos_token_id=bos_id,
    )
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(cfg).eval()
    gen = torch.Generator().manual_seed(seed + 1)
    t_idx, p_idx = torch.tensor(list(T_DIMS)), torch.tensor(list(P_DIMS))
    n_t = len(T_DIMS)

    with torch.no_grad():
        tr = model.transformer
        # Embeddings: e_t random unit vectors in T; BOS only on its own dimension; no positional signal.
        emb = torch.zeros(vocab_size, D_MODEL)
        e = torch.randn(vocab_size, n_t, generator=gen)
        emb[:, t_idx] = e / e.norm(dim=-1, keepdim=True)
        # Function words and punctuation carry little token identity, so neither the copying head nor the
        # planted head moves them (as in GPT-2, where 10.7 does not suppress function words).
        emb[torch.tensor(function_ids, dtype=torch.long)] *= FUNCTION_WORD_NORM
        emb[bos_id] = 0.0
        emb[bos_id, BOS_DIM] = 1.0
        emb[:, PRIOR_DIM] = 1.0
        tr.wte.weight.copy_(emb)
        tr.wpe.weight.zero_()
        # Unembedding reads the prediction subspace: logit_t = UNEMBED_GAIN * (resid . M e_t).
        unemb = torch.zeros(vocab_size, D_MODEL)
        unemb[:, p_idx] = UNEMBED_GAIN * emb[:, t_idx]
        unemb[:, PRIOR_DIM] = PRIOR_GAIN * log_prior
        model.lm_head.weight.copy_(unemb)

        def head_cols(kind: int, head: int, dims: range) -> torch.Tensor:
            # c_attn is a Conv1D with weight [d_model, 3 * d_model]: Q | K | V, heads contiguous within each.
            return kind * D_MODEL + head * D_HEAD + torch.tensor(list(dims))

        def plant_head(layer: int, head: int) -> None:
            attn = tr.h[layer].attn
            for kind in range(3):
                cols = head_cols(kind, head, range(D_HEAD))
                attn.c_attn.weight[:, cols] = 0.0
                attn.c_attn.bias[cols] = 0.0
            attn.c_proj.weight[head * D_HEAD:(head + 1) * D_HEAD, :] = 0.0

        # L0H0: uniform attention (Q = K = 0), V reads T, O writes into P.
        plant_head(*TOY_COPY_HEAD)
        a0 = tr.h[0].attn
        v_cols = head_cols(2, TOY_COPY_HEAD[1], range(n_t))
        a0.c_attn.weight[t_idx, v_cols] = 1.0
        a0.c_proj.weight[TOY_COPY_HEAD[1] * D_HEAD + torch.arange(n_t), p_idx] = COPY_GAIN

        # MLP0: copies T onto T.
        mlp0 = tr.h[0].mlp
        mlp0.c_fc.weight.zero_()
        mlp0.c_fc.bias.zero_()
        mlp0.c_proj.weight.zero_()
        mlp0.c_proj.bias.zero_()
        mlp0.c_fc.weight[t_idx, torch.arange(n_t)] = 1.0
        mlp0.c_fc.weight[t_idx, n_t + torch.arange(n_t)] = -1.0
        mlp0.c_proj.weight[torch.arange(n_t), t_idx] = MLP_GAIN
        mlp0.c_proj.weight[n_t + torch.arange(n_t), t_idx] = -MLP_GAIN
        for layer in range(1, N_LAYERS):
            tr.h[layer].mlp.c_proj.weight.mul_(RANDOM_MLP_SCALE)
            tr.h[layer].mlp.c_proj.bias.zero_()

        # The planted copy-suppression head.
        layer, head = TOY_PLANTED_HEAD
        plant_head(layer, head)
        a1 = tr.h[layer].attn
        q_cols = head_cols(0, head, range(n_t))
        k_cols = head_cols(1, head, range(n_t))
        v_cols = head_cols(2, head, range(n_t))
        a1.c_attn.weight[p_idx, q_cols] = QK_GAIN
        a1.c_attn.weight[t_idx, k_cols] = 1.0
        a1.c_attn.bias[head_cols(0, head, range(_BOS_HEAD_DIM, _BOS_HEAD_DIM + 1))] = BOS_QUERY_BIAS
        a1.c_attn.weight[BOS_DIM, head_cols(1, head, range(_BOS_HEAD_DIM, _BOS_HEAD_DIM + 1))] = 1.0
        a1.c_attn.weight[t_idx, v_cols] = 1.0
        a1.c_proj.weight[head * D_HEAD + torch.arange(n_t), p_idx] = -OV_GAIN
    return model
