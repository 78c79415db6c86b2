"""What "predicted" means: the read-out of the residual stream before a head that the paper's copy suppression is
about (the tokens earlier layers predict). One choice, used everywhere the analysis reads a prediction: CSPA's
QK filter (which sources are "predicted"), the prediction panels of Browse and the live page (stored as the
``lens`` group), and the attention-to-predicted measure of the verdict.

* ``logit_lens``: the paper's. The residual stream before the head's layer, normalised, times W_U. Good in GPT-2
  small at layer 10; poor in deep models (SmolLM2 at layer 24 agrees with the model's top-1 on 37 % of positions).
* ``tuned_lens``: the same after the layer's affine translator (``tuned_lens``), fitted on other text.
* ``final_minus_head``: the model's final prediction with the head's direct effect mean-ablated (frozen final
  norm): no fitting, but it reads the layers after the head, so it is a diagnostic, not a prediction "before" it.

``auto`` (the default of a run) resolves per head: the logit lens for GPT-2 small (so the paper's numbers
reproduce), otherwise whichever of the logit and tuned lens agrees better with the model's own top-1 on held-out
text at the head's layer.
"""

from __future__ import annotations

from jaxtyping import Float
from torch import Tensor

from ..errors import InvalidInputError
from ..models.norm import rms_scale
from ..schema import READOUTS
from .tuned_lens import TunedLens

AUTO = "auto"


def available(lens: TunedLens | None, layer: int) -> tuple[str, ...]:
    """The read-outs that can be computed at ``layer``: the tuned lens only where ``lens`` has a translator there."""
    return tuple(r for r in READOUTS if r != "tuned_lens" or (lens is not None and lens.has(layer)))


def check(readout: str, lens: TunedLens | None, layer: int | None = None) -> str:
    """``readout`` if it is one of READOUTS and can be computed (the tuned lens needs a translator for ``layer``)."""
    if readout not in READOUTS:
        raise InvalidInputError(f"read-out {readout!r:.40} is not one of {', '.join(READOUTS)}")
    if readout == "tuned_lens" and (lens is None or (layer is not None and not lens.has(layer))):
        where = "" if layer is None else f" for layer {layer}"
        raise InvalidInputError(f"the tuned-lens read-out needs a fitted tuned lens{where} (science.tuned_lens)")
    return readout


def resolve(requested: str, lens: TunedLens | None, layer: int, paper_model: bool) -> tuple[str, str]:
    """(read-out, why) for a head at ``layer``; ``requested`` is one of READOUTS or ``auto``."""
    if requested != AUTO:
        return check(requested, lens, layer), "chosen"
    if paper_model:
        return "logit_lens", "the paper's model: the paper's logit lens, so its numbers reproduce"
    if lens is None or not lens.has(layer) or layer not in lens.quality:
        return "logit_lens", "no tuned lens fitted for this layer"
    q = lens.quality[layer]
    if q["tuned"]["top1"] > q["logit"]["top1"]:
        return "tuned_lens", (
            f"the tuned lens agrees with the model's top-1 on {q['tuned']['top1']:.0%} of held-out positions at "
            f"layer {layer}, the logit lens on {q['logit']['top1']:.0%}"
        )
    return "logit_lens", (
        f"the logit lens agrees with the model's top-1 as well as the tuned lens at layer {layer} "
        f"({q['logit']['top1']:.0%} vs {q['tuned']['top1']:.0%})"
    )


def rows(
    readout: str,
    layer: int,
    pre_c: Float[Tensor, "batch seq d_model"],
    eps: float,
    sigma_f: Float[Tensor, "batch seq 1"],
    lens: TunedLens | None = None,
    final_c: Float[Tensor, "batch seq d_model"] | None = None,
    delta_c: Float[Tensor, "batch seq d_model"] | None = None,
) -> tuple[Float[Tensor, "batch seq d_model"], Float[Tensor, "batch seq d_model"]]:
    """(panel rows, CSPA score rows) of ``readout``: ``rows W_U + b_U`` are the prediction's logits (panel), and
    CSPA ranks sources at each destination by ``score rows . W_U[:, token]``.

    ``pre_c``: the centred residual stream before ``layer``; ``final_c`` / ``delta_c``: the centred final residual
    stream and the head's centred output minus its mean (``final_minus_head`` only); ``sigma_f``: the final norm's
    scale. The logit lens scores CSPA as the paper does, (resid / sigma_final) . W_U, which ranks tokens at each
    destination exactly as the normalised panel rows do."""
    check(readout, lens, layer)
    if readout == "logit_lens":
        return pre_c / rms_scale(pre_c, eps), pre_c / sigma_f
    if readout == "tuned_lens":
        assert lens is not None
        tuned = lens.translate(layer, pre_c / rms_scale(pre_c, eps))
        return tuned, tuned
    if final_c is None or delta_c is None:
        raise InvalidInputError("the final-minus-head read-out needs the final residual stream and the head's output")
    ablated = (final_c - delta_c) / sigma_f
    return ablated, ablated
