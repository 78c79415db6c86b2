"""A tuned lens (Belrose et al. 2023, "Eliciting Latent Predictions from Transformers with the Tuned Lens"): per
layer, an affine translator that carries the residual stream before that layer to what the final layer would
make of it, so that "what the model predicts at this depth" reads well in deep models where the logit lens does not.

The project's form, fitted in closed form (no SGD, no extra dependency):

* input ``x``: the residual stream before layer L, normalised as the model's final norm normalises
  (``architecture.of(m).normalise``: centred for LayerNorm, divided by its RMS); its logit-lens logits are
  ``x W_U + b_U``.
* target ``y``: the final norm's output (``ln_final.hook_normalized``), whose ``y W_U + b_U`` are the model's logits.
* translator: ``T_L(x) = x + x A_L + b_L``, the identity plus a ridge-regression correction fitted on
  ``y - x`` (Belrose's parameterisation, regularised toward the logit lens: a huge ridge gives the logit lens
  back up to a constant shift). ``A_L = (X_c^T X_c + lambda n I)^-1 X_c^T (Y - X)_c`` on centred data,
  ``b_L = mean(y - x) - mean(x) A_L``.
* tuned-lens logits at layer L: ``T_L(x) W_U + b_U``.

Fitted on a split of the run's own sequences; quality is measured on the others (held out): top-1 agreement with
the model's own next-token prediction and KL(model ‖ lens) in nats, for the tuned lens and the logit lens alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from jaxtyping import Float, Int
from torch import Tensor

from ..errors import InvalidInputError
from ..models import architecture, hooks
from ..models.loading import unwrap
from ..validate import token_ids

METHOD = "ridge"  # closed-form ridge toward the final norm's output (recorded; SGD on KL is not implemented)
DEFAULT_RIDGE = 1e-3  # lambda, relative to the mean squared input (scale-free)
HELDOUT_FRACTION = 0.25
QUALITY_TOKENS = 1024  # held-out positions scored per layer (each costs a vocabulary projection)
QUALITY_CHUNK = 128  # positions scored at once


@dataclass
class TunedLens:
    """Translators for ``layers``: ``weight`` [n, d, d] (A), ``bias`` [n, d] (b); ``quality`` per layer:
    {"tuned": {"top1", "kl"}, "logit": {"top1", "kl"}, "n_tokens"} on held-out positions."""

    layers: tuple[int, ...]
    weight: Float[Tensor, "n d_model d_model"]
    bias: Float[Tensor, "n d_model"]
    quality: dict[int, dict] = field(default_factory=dict)
    meta: dict = field(default_factory=dict)

    def translate(self, layer: int, x: Float[Tensor, "... d_model"]) -> Float[Tensor, "... d_model"]:
        """T_L(x) = x + x A_L + b_L, for ``x`` the normalised residual stream before ``layer``."""
        if layer not in self.layers:
            raise InvalidInputError(f"the tuned lens has no translator for layer {layer} (it has {self.layers})")
        i = self.layers.index(layer)
        a, b = self.weight[i].to(x.device, x.dtype), self.bias[i].to(x.device, x.dtype)
        return x + x @ a + b

    def has(self, layer: int) -> bool:
        return layer in self.layers

    def to_tensors(self) -> dict[str, Tensor]:
        return {
            "layers": torch.tensor(self.layers, dtype=torch.int32),
            "weight": self.weight.float().contiguous(),
            "bias": self.bias.float().contiguous(),
        }

    @classmethod
    def from_tensors(cls, tensors: dict, quality: dict | None = None, meta: dict | None = None) -> TunedLens:
        layers = tuple(int(x) for x in torch.as_tensor(tensors["layers"]).tolist())
        weight, bias = torch.as_tensor(tensors["weight"]).float(), torch.as_tensor(tensors["bias"]).float()
        if weight.ndim != 3 or weight.shape[0] != len(layers) or bias.shape != weight.shape[:2]:
            raise InvalidInputError("the tuned lens's tensors do not fit together (layers, weight, bias)")
        q = {int(k): v for k, v in (quality or {}).items()}
        return cls(layers, weight, bias, q, dict(meta or {}))


def stored_lens(arts) -> TunedLens | None:
    """The tuned lens an artifact set stored (``Artifacts.tuned_lens_tensors``), or None for sets made without one."""
    got = arts.tuned_lens_tensors()
    return None if got is None else TunedLens.from_tensors(*got)


class RidgeStats:
    """Running sums for the ridge fit of ``y - x ≈ x A + b`` (float64): add rows, then ``solve``."""

    def __init__(self, d: int):
        self.count = 0
        self.sx = torch.zeros(d, dtype=torch.float64)
        self.sr = torch.zeros(d, dtype=torch.float64)
        self.sxx = torch.zeros(d, d, dtype=torch.float64)
        self.sxr = torch.zeros(d, d, dtype=torch.float64)

    def add(self, x: Float[Tensor, "n d"], y: Float[Tensor, "n d"]) -> None:
        x, r = x.double().cpu(), (y.double() - x.double()).cpu()
        self.count += x.shape[0]
        self.sx += x.sum(0)
        self.sr += r.sum(0)
        self.sxx += x.T @ x
        self.sxr += x.T @ r

    def solve(self, ridge: float) -> tuple[Float[Tensor, "d d"], Float[Tensor, " d"]]:
        """(A, b) minimising |y - x - x A - b|^2 + lambda |A|^2 on the rows added, lambda = ridge x count x the
        mean variance of x (so ``ridge`` is scale-free)."""
        if self.count == 0:
            raise InvalidInputError("the tuned lens got no positions to fit")
        mx, mr = self.sx / self.count, self.sr / self.count
        cxx = self.sxx - self.count * torch.outer(mx, mx)
        cxr = self.sxr - self.count * torch.outer(mx, mr)
        lam = ridge * cxx.diagonal().mean().clamp_min(1e-12)
        a = torch.linalg.solve(cxx + lam * torch.eye(len(mx), dtype=torch.float64), cxr)
        return a.float(), (mr - mx @ a).float()


def normalised_inputs(
    m, tokens: Int[Tensor, "batch seq"], layers: tuple[int, ...]
) -> tuple[dict[int, Tensor], Float[Tensor, "batch seq d_model"], Float[Tensor, "batch seq d_vocab"]]:
    """(normalised resid_pre per layer, the final norm's output, the model's logits) for ``tokens``, float32."""
    names = [hooks.resid_pre(layer) for layer in layers] + [hooks.FINAL_NORMALIZED]
    logits, cache = m.run_with_cache(tokens.to(m.cfg.device), names_filter=names)
    norm = architecture.of(m).normalise
    xs = {layer: norm(cache[hooks.resid_pre(layer)].float()) for layer in layers}
    return xs, cache[hooks.FINAL_NORMALIZED].float(), logits.float()


def fit_tuned_lens(
    model,
    tokens: Int[Tensor, "batch seq"],
    layers: tuple[int, ...] | None = None,
    ridge: float = DEFAULT_RIDGE,
    heldout_fraction: float = HELDOUT_FRACTION,
    batch_size: int = 8,
    quality_tokens: int = QUALITY_TOKENS,
    progress=None,
) -> TunedLens:
    """Fit translators for ``layers`` (default: every layer) on the first sequences of ``tokens`` and score them on
    the last ``heldout_fraction`` of them (at least one sequence each way). Position 0 (the start token) is left out
    of both. ``progress(text, fraction)`` is told as it goes."""
    m = unwrap(model)
    token_ids(tokens, m.cfg.d_vocab, m.cfg.n_ctx, min_len=2)
    layers = tuple(range(m.cfg.n_layers)) if layers is None else tuple(sorted({int(x) for x in layers}))
    if not layers or min(layers) < 0 or max(layers) >= m.cfg.n_layers:
        raise InvalidInputError(f"tuned-lens layers must be in 0..{m.cfg.n_layers - 1}, got {layers}")
    if not (0.0 < heldout_fraction < 1.0) or ridge < 0:
        raise InvalidInputError("the tuned lens needs 0 < heldout_fraction < 1 and ridge >= 0")
    n = tokens.shape[0]
    if n < 2:
        raise InvalidInputError("the tuned lens needs at least two sequences (one to fit, one held out)")
    n_held = min(n - 1, max(1, round(n * heldout_fraction)))
    fit, held = tokens[: n - n_held].long(), tokens[n - n_held :].long()
    d = m.cfg.d_model
    stats = [RidgeStats(d) for _ in layers]
    n_batches = -(-fit.shape[0] // batch_size)
    with torch.inference_mode():
        for bi, start in enumerate(range(0, fit.shape[0], batch_size)):
            xs, y, _ = normalised_inputs(m, fit[start : start + batch_size], layers)
            y = y[:, 1:].reshape(-1, d)
            for st, layer in zip(stats, layers, strict=True):
                st.add(xs[layer][:, 1:].reshape(-1, d), y)
            if progress:
                progress(f"tuned lens: fitting, batch {bi + 1}/{n_batches}", 0.8 * (bi + 1) / n_batches)
        solved = [st.solve(ridge) for st in stats]
        lens = TunedLens(
            layers,
            torch.stack([a for a, _ in solved]),
            torch.stack([b for _, b in solved]),
            meta={
                "method": METHOD,
                "ridge": ridge,
                "form": "T(x) = x + x A + b on the normalised resid_pre; target: the final norm's output",
                "n_fit_sequences": int(fit.shape[0]),
                "n_heldout_sequences": int(held.shape[0]),
                "n_fit_tokens": int(stats[0].count),
            },
        )
        told = None if progress is None else (lambda text, f: progress(text, 0.8 + 0.2 * f))
        lens.quality = lens_quality(m, held, lens, batch_size, quality_tokens, told)
        lens.meta["n_heldout_tokens_scored"] = lens.quality[layers[0]]["n_tokens"]
    if progress:
        progress("tuned lens: fitted and scored", 1.0)
    return lens


def lens_quality(
    model,
    tokens: Int[Tensor, "batch seq"],
    lens: TunedLens,
    batch_size: int = 8,
    max_tokens: int = QUALITY_TOKENS,
    progress=None,
) -> dict[int, dict]:
    """Per layer of ``lens``: top-1 agreement with the model's own prediction and mean KL(model ‖ lens) (nats), for
    the tuned lens and the logit lens, over the first ``max_tokens`` positions after the start token of ``tokens``."""
    m = unwrap(model)
    W_U, b_U = m.W_U.float(), m.b_U.float()
    d = m.cfg.d_model
    xs_all: dict[int, list[Tensor]] = {layer: [] for layer in lens.layers}
    logits_all = []
    have = 0
    with torch.inference_mode():
        for start in range(0, tokens.shape[0], batch_size):
            if have >= max_tokens:
                break
            xs, _, logits = normalised_inputs(m, tokens[start : start + batch_size].long(), lens.layers)
            want = max_tokens - have  # only the scored positions' vocabulary rows are kept
            logits_all.append(logits[:, 1:].reshape(-1, logits.shape[-1])[:want].log_softmax(-1))
            del logits
            for layer in lens.layers:
                xs_all[layer].append(xs[layer][:, 1:].reshape(-1, d)[:want])
            have += logits_all[-1].shape[0]
        model_lp = torch.cat(logits_all)
        logits_all.clear()
        model_top = model_lp.argmax(-1)
        out: dict[int, dict] = {}
        for layer in lens.layers:
            x = torch.cat(xs_all[layer])[:max_tokens]
            row: dict = {"n_tokens": int(x.shape[0])}
            for name in ("logit", "tuned"):
                agree, kl = 0.0, 0.0
                for c0 in range(0, x.shape[0], QUALITY_CHUNK):  # vocabulary-sized temporaries of a chunk only
                    part = x[c0 : c0 + QUALITY_CHUNK]
                    rows = part if name == "logit" else lens.translate(layer, part)
                    lp = (rows @ W_U + b_U).log_softmax(-1)
                    m_lp = model_lp[c0 : c0 + QUALITY_CHUNK]
                    agree += float((lp.argmax(-1) == model_top[c0 : c0 + QUALITY_CHUNK]).double().sum())
                    kl += float((m_lp.exp() * (m_lp - lp)).sum(-1).double().sum())
                row[name] = {"top1": agree / x.shape[0], "kl": kl / x.shape[0]}
            out[layer] = row
            if progress:
                progress(f"tuned lens: scored {len(out)}/{len(lens.layers)} layers", len(out) / len(lens.layers))
    return out
