"""The survey's probes on generated text (``survey.survey_heads`` calls them): every head's attention and direct
effect on repeated random tokens (induction and anti-induction) and on IOI prompts (copy suppression of the indirect
object), all heads from one cached forward pass; and the cache helpers the survey shares, with a post-attention
norm's scale where the model has one (``architecture`` module docstring)."""

from __future__ import annotations

import torch
from jaxtyping import Int
from torch import Tensor

from ..errors import InvalidInputError
from ..models import architecture, hooks
from ..models.heads import dest_scale
from ..models.weights import effective_W_O


def _all_heads_cache(m, tokens: Tensor, names: list[str]):
    logits, cache = m.run_with_cache(tokens.to(m.W_U.device), names_filter=names)
    return logits.float(), {n: cache[n].float() for n in names}


def _post_scales(m) -> list[str]:
    """The post-attention norm's scale hooks of every layer, where the model has that norm (else none)."""
    return hooks.every_layer(m.cfg.n_layers, hooks.POST_ATTN_SCALE) if architecture.of(m).post_attn_norm else []


def repeated_tokens(tokenizer, d_vocab: int, n: int, length: int, seed: int) -> Int[Tensor, "n seq"]:
    """BOS + ``length`` random text tokens (``data.tokenization.text_token_ids``: no special, control or reserved
    token), repeated twice: [n, 1 + 2 length]."""
    from ..data.tokenization import text_token_ids

    allowed = torch.tensor(text_token_ids(tokenizer, d_vocab))
    g = torch.Generator().manual_seed(seed)
    body = allowed[torch.randint(len(allowed), (n, length), generator=g)]
    bos = torch.full((n, 1), int(tokenizer.bos_token_id))
    return torch.cat([bos, body, body], dim=1)


def _probe_cache(m, tokens: Tensor) -> dict[str, Tensor]:
    names = [hooks.FINAL_SCALE] + hooks.every_layer(m.cfg.n_layers, hooks.PATTERN, hooks.V) + _post_scales(m)
    return _all_heads_cache(m, tokens, names)[1]


def _probe_scores(m, cache: dict, src: Tensor, dst: Tensor, answer: Tensor) -> tuple[Tensor, Tensor]:
    """For every head: mean attention dst→src and −(mean direct effect on ``answer`` through it), [L, H] each.

    ``src``, ``dst``, ``answer``: [n, m] positions and token ids per sequence."""
    L, H = m.cfg.n_layers, m.cfg.n_heads
    cen = architecture.of(m).centre
    dev = m.W_U.device
    src, dst, answer = src.to(dev), dst.to(dev), answer.to(dev)
    sigma = cache[hooks.FINAL_SCALE].gather(1, dst[..., None])  # [n, m, 1]
    w_ans = m.W_U.float().T[answer]  # [n, m, d]
    att_mean = torch.empty(L, H)
    effect = torch.empty(L, H)
    rows = torch.arange(src.shape[0], device=dev)[:, None]
    for layer in range(L):
        pattern, v = cache[hooks.pattern(layer)], cache[hooks.v(layer)]
        W_O = effective_W_O(m, layer).float()
        dest = dest_scale(m, cache, layer)
        at_dst = 1.0 if dest is None else dest.gather(1, dst[..., None])  # [n, m, 1]: what reaches the stream
        for h in range(H):
            a = pattern[:, h][rows, dst, src]  # [n, m]
            out = cen(v[:, :, architecture.of(m).kv_head(h)][rows, src] @ W_O[h]) / at_dst  # [n, m, d]
            att_mean[layer, h] = a.mean()
            effect[layer, h] = -(a * ((out / sigma) * w_ans).sum(-1)).mean()
    return att_mean, effect


def _induction(m, n_repeat: int, repeat_len: int, seed: int) -> tuple[Tensor, Tensor]:
    tokens = repeated_tokens(m.tokenizer, m.cfg.d_vocab, n_repeat, repeat_len, seed)
    n, T = tokens.shape[0], repeat_len
    dst = torch.arange(T + 1, 2 * T + 1).expand(n, T)  # second-half positions
    src = dst - T + 1  # the token after the first occurrence
    nxt = torch.cat([tokens, tokens[:, :1]], 1)[:, 1:]  # next token (dummy after the last position)
    cache = _probe_cache(m, tokens)
    induction, _ = _probe_scores(m, cache, src, dst, nxt.gather(1, dst))
    # anti-induction: only where the next token is known (not the last position)
    _, anti = _probe_scores(m, cache, src[:, :-1], dst[:, :-1], nxt.gather(1, dst[:, :-1]))
    return induction, anti


def _ioi(m, n_ioi: int, seed: int) -> Tensor:
    from ..data.prompts import ioi_groups

    groups = ioi_groups(m.tokenizer, n_ioi, seed)
    total, count = None, 0
    for g in groups:
        tokens = torch.tensor(g.clean)
        end = torch.full((len(g.clean), 1), tokens.shape[1] - 1)
        _, eff = _probe_scores(
            m, _probe_cache(m, tokens), torch.tensor(g.io_pos)[:, None], end, torch.tensor(g.io_ids)[:, None]
        )
        total = eff * len(g.clean) if total is None else total + eff * len(g.clean)
        count += len(g.clean)
    if total is None:
        raise InvalidInputError("the IOI probe got no prompts")
    return total / count
