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


def build_toy_hf_model(
    vocab_size: int, bos_id: int, log_prior: torch.Tensor, function_ids: list[int], seed: int = TOY_SEED
):
    """A ``GPT2LMHeadModel`` with the planted weights above; deterministic in ``seed``."""
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(
        vocab_size=vocab_size,
        n_positions=N_CTX,
        n_embd=D_MODEL,
        n_layer=N_LAYERS,
        n_head=N_HEADS,
        n_inner=D_MLP,
        activation_function="gelu_new",
        tie_word_embeddings=False,
        layer_norm_epsilon=1e-5,
        bos_token_id=bos_id,
        eos_token_id=bos_id,
    )
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(cfg).eval()
    with torch.no_grad():
        _plant_embeddings(model, bos_id, log_prior, function_ids, torch.Generator().manual_seed(seed + 1))
        tr = model.transformer
        _plant_copy_head(tr)
        _plant_mlps(tr)
        _plant_suppressor(tr)
    return model


_T, _P = torch.tensor(list(T_DIMS)), torch.tensor(list(P_DIMS))
_N_T = len(T_DIMS)


def _head_cols(kind: int, head: int, dims: range) -> torch.Tensor:
    """Columns of a head's Q (kind 0), K (1) or V (2) in c_attn, a Conv1D with weight [d_model, 3 d_model]: Q | K | V,
    heads contiguous within each."""
    return kind * D_MODEL + head * D_HEAD + torch.tensor(list(dims))


def _clear_head(tr, layer: int, head: int) -> None:
    attn = tr.h[layer].attn
    for kind in range(3):
        cols = _head_cols(kind, head, range(D_HEAD))
        attn.c_attn.weight[:, cols] = 0.0
        attn.c_attn.bias[cols] = 0.0
    attn.c_proj.weight[head * D_HEAD : (head + 1) * D_HEAD, :] = 0.0


def _plant_embeddings(model, bos_id: int, log_prior: torch.Tensor, function_ids: list[int], gen) -> None:
    """Embeddings: e_t random unit vectors in T; BOS only on its own dimension; no positional signal. The
    unembedding reads the prediction subspace: logit_t = UNEMBED_GAIN (resid . M e_t), plus the prior."""
    vocab_size = model.transformer.wte.weight.shape[0]
    emb = torch.zeros(vocab_size, D_MODEL)
    e = torch.randn(vocab_size, _N_T, generator=gen)
    emb[:, _T] = e / e.norm(dim=-1, keepdim=True)
    # Function words and punctuation carry little token identity, so neither the copying head nor the planted
    # head moves them (as in GPT-2, where 10.7 does not suppress function words).
    emb[torch.tensor(function_ids, dtype=torch.long)] *= FUNCTION_WORD_NORM
    emb[bos_id] = 0.0
    emb[bos_id, BOS_DIM] = 1.0
    emb[:, PRIOR_DIM] = 1.0
    model.transformer.wte.weight.copy_(emb)
    model.transformer.wpe.weight.zero_()
    unemb = torch.zeros(vocab_size, D_MODEL)
    unemb[:, _P] = UNEMBED_GAIN * emb[:, _T]
    unemb[:, PRIOR_DIM] = PRIOR_GAIN * log_prior
    model.lm_head.weight.copy_(unemb)


def _plant_copy_head(tr) -> None:
    """L0H0: uniform attention (Q = K = 0), V reads T, O writes into P."""
    layer, head = TOY_COPY_HEAD
    _clear_head(tr, layer, head)
    attn = tr.h[layer].attn
    attn.c_attn.weight[_T, _head_cols(2, head, range(_N_T))] = 1.0
    attn.c_proj.weight[head * D_HEAD + torch.arange(_N_T), _P] = COPY_GAIN


def _plant_mlps(tr) -> None:
    """MLP0 copies T onto T; the other MLPs keep small random weights."""
    mlp0 = tr.h[0].mlp
    mlp0.c_fc.weight.zero_()
    mlp0.c_fc.bias.zero_()
    mlp0.c_proj.weight.zero_()
    mlp0.c_proj.bias.zero_()
    mlp0.c_fc.weight[_T, torch.arange(_N_T)] = 1.0
    mlp0.c_fc.weight[_T, _N_T + torch.arange(_N_T)] = -1.0
    mlp0.c_proj.weight[torch.arange(_N_T), _T] = MLP_GAIN
    mlp0.c_proj.weight[_N_T + torch.arange(_N_T), _T] = -MLP_GAIN
    for layer in range(1, N_LAYERS):
        tr.h[layer].mlp.c_proj.weight.mul_(RANDOM_MLP_SCALE)
        tr.h[layer].mlp.c_proj.bias.zero_()


def _plant_suppressor(tr) -> None:
    """The planted copy-suppression head: queries read P (predictions), keys T (tokens), a BOS default, and the
    output writes minus the token's prediction direction."""
    layer, head = TOY_PLANTED_HEAD
    _clear_head(tr, layer, head)
    attn = tr.h[layer].attn
    attn.c_attn.weight[_P, _head_cols(0, head, range(_N_T))] = QK_GAIN
    attn.c_attn.weight[_T, _head_cols(1, head, range(_N_T))] = 1.0
    attn.c_attn.bias[_head_cols(0, head, range(_BOS_HEAD_DIM, _BOS_HEAD_DIM + 1))] = BOS_QUERY_BIAS
    attn.c_attn.weight[BOS_DIM, _head_cols(1, head, range(_BOS_HEAD_DIM, _BOS_HEAD_DIM + 1))] = 1.0
    attn.c_attn.weight[_T, _head_cols(2, head, range(_N_T))] = 1.0
    attn.c_proj.weight[head * D_HEAD + torch.arange(_N_T), _P] = -OV_GAIN
