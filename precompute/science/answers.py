"""Answer tokens at one position: a named token's logit, probability, rank and the head's direct logit attribution
(DLA), clean and with the head mean-ablated, as Neuronpedia's and the LLM Transparency Tool's token pages show them.

One forward pass (``analysis._forward``, the same the analysis makes) gives the clean logits, the final norm's
clean scale, the head's output and, for ``both``/``indirect``, the re-run residual stream; the ablated logits at
the position are its residual stream divided by the final norm's scale (frozen: the clean one, as the paper;
unfrozen: recomputed) times W_U, plus b_U. DLA is the head's output (clean) or its mean output (ablated) through
the clean final-norm scale and the answer's unembedding column, in logits.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor

from ..errors import InvalidInputError
from ..models import architecture
from ..models.heads import check_head
from ..models.loading import unwrap
from ..models.norm import rms_scale
from ..schema import EFFECTS, LN_MODES, MAX_ANSWERS
from ..validate import token_ids
from .analysis import _forward


@dataclass(frozen=True)
class AnswerEffects:
    """Per answer token (in the order asked), at one position: clean and ablated logit, probability and rank
    (0 = the model's top prediction), and the head's DLA (logits) with its clean and its mean output."""

    ids: list[int]
    logit_clean: np.ndarray
    logit_ablated: np.ndarray
    prob_clean: np.ndarray
    prob_ablated: np.ndarray
    rank_clean: np.ndarray
    rank_ablated: np.ndarray
    dla_clean: np.ndarray
    dla_ablated: np.ndarray
    effect: str
    ln_mode: str


def _ranks(logits: Float[Tensor, " d_vocab"], ids: Tensor) -> np.ndarray:
    """How many tokens have a strictly larger logit than each of ``ids`` (0 = top)."""
    return (logits[None, :] > logits[ids][:, None]).sum(-1).numpy().astype(np.int64)


def answer_effects(
    model,
    tokens: Int[Tensor, "1 seq"],
    head: tuple[int, int],
    mean_result: Float[Tensor, "positions d_model"],
    pos: int,
    answers: list[int],
    effect: str = "direct",
    ln_mode: str = "frozen",
) -> AnswerEffects:
    """The answers' figures at position ``pos`` of ``tokens`` (one sequence) with head ``head`` mean-ablated in the
    variant (``effect``, ``ln_mode``) the pages use."""
    m = unwrap(model)
    layer, h = check_head(m, head)
    token_ids(tokens, m.cfg.d_vocab, m.cfg.n_ctx)
    if tokens.ndim != 2 or tokens.shape[0] != 1:
        raise InvalidInputError("answer effects take one sequence, shape [1, seq]")
    if effect not in EFFECTS or ln_mode not in LN_MODES:
        raise InvalidInputError(f"unknown ablation variant {effect!r}/{ln_mode!r}")
    s = int(tokens.shape[1])
    if not 0 <= int(pos) < s:
        raise InvalidInputError(f"position {pos} is outside the prompt's {s} tokens")
    if not answers or len(answers) > MAX_ANSWERS:
        raise InvalidInputError(f"name between 1 and {MAX_ANSWERS} answer tokens")
    if any(not 0 <= int(a) < m.cfg.d_vocab for a in answers):
        raise InvalidInputError(f"answer token ids must lie in [0, {m.cfg.d_vocab})")
    if mean_result.shape[0] < s:
        raise InvalidInputError(f"the mean ablation covers {mean_result.shape[0]} positions, the prompt has {s}")
    ids = torch.tensor([int(a) for a in answers])
    tokens = tokens.to(m.W_U.device).long()
    cen = architecture.of(m).centre
    with torch.inference_mode():
        fwd = _forward(m, tokens, layer, h, mean_result, rerun=effect != "direct")
        p = int(pos)
        x_c, delta_c, sigma = fwd.x_c[0, p], fwd.delta_c[0, p], fwd.sigma_f[0, p]
        if effect == "direct":
            resid = x_c - delta_c
        else:
            assert fwd.both_c is not None  # rerun=True computes it
            resid = fwd.both_c[0, p] + (delta_c if effect == "indirect" else 0.0)
        scale = sigma if ln_mode == "frozen" else rms_scale(resid, fwd.eps)
        W_U, b_U = m.W_U.float(), m.b_U.float()
        clean = fwd.clean_logits[0, p].cpu()
        ablated = ((resid / scale) @ W_U + b_U).cpu()
        mu_c = cen(fwd.mu[p])
        dla_clean = ((delta_c + mu_c) / sigma) @ W_U[:, ids]
        dla_ablated = (mu_c / sigma) @ W_U[:, ids]
    return AnswerEffects(
        ids=[int(a) for a in answers],
        logit_clean=clean[ids].numpy(),
        logit_ablated=ablated[ids].numpy(),
        prob_clean=clean.softmax(-1)[ids].numpy(),
        prob_ablated=ablated.softmax(-1)[ids].numpy(),
        rank_clean=_ranks(clean, ids),
        rank_ablated=_ranks(ablated, ids),
        dla_clean=dla_clean.cpu().numpy(),
        dla_ablated=dla_ablated.cpu().numpy(),
        effect=effect,
        ln_mode=ln_mode,
    )
