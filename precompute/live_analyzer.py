"""Live analysis of typed text for one artifact set (``LiveAnalyzer``), the half of the model boundary that the
live page uses; ``precompute.live.LiveModel.analyzer`` makes one per set on its model's queue.

``LiveAnalyzer`` analyses typed text with the same ``analyze`` + ``compact`` the precompute job uses. Results are
cached per (head, text, read-out) in a bounded LRU, so memory stays bounded however many prompts are typed; a
cached prompt gains the other ablation variants only when they are asked for (the paper's set first). Any head of
the model can be analysed: one the set did not store gets its mean output over the set's text (``mean_of``).
"""

from __future__ import annotations

import threading
import unicodedata
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from . import schema
from .data.tokenization import encode
from .errors import InvalidInputError
from .model_queue import queue_of
from .models.loading import unwrap
from .models.memory import release
from .schema import EFFECTS, LN_MODES, STORED_TOPK_VARIANTS
from .science.analysis import analyze
from .science.cspa import CSPAConfig
from .science.tuned_lens import stored_lens
from .store.artifact_set import ArtifactSet
from .store.records import as_arrays, compact

MAX_CHARS = 100_000
MAX_COMPUTED_MEANS = 64  # mean outputs of heads the artifacts did not store, kept per analyzer
OnWait = Callable[[int], None] | None  # told how many analyses are ahead while a caller waits for the model


@dataclass(frozen=True)
class LiveResult:
    record: dict  # numpy arrays: the same fields as an artifact sequence (``Artifacts.sequence``)
    n_tokens_in: int  # tokens the text had (BOS included) before any cut
    cut_to: int | None  # the length it was cut to, or None
    computed: frozenset = frozenset()  # the ablation variants the record holds


def clean_prompt(text: str) -> str:
    """Normalise typed text: NFC, no NUL or other C0/C1 control characters except newline and tab."""
    if not isinstance(text, str):
        raise InvalidInputError("the prompt must be text")
    text = unicodedata.normalize("NFC", text)
    # control characters (except newline and tab) and lone surrogates, which no encoder can take, are dropped
    text = "".join(ch for ch in text if ch in "\n\t" or unicodedata.category(ch) not in ("Cc", "Cs"))
    if not text.strip():
        raise InvalidInputError("the prompt is empty: type some text to analyse")
    if len(text) > MAX_CHARS:
        text = text[:MAX_CHARS]
    return text


class LiveAnalyzer:
    """Thread-safe live analysis for one loaded model and its artifacts' mean results."""

    def __init__(
        self,
        loaded,
        mean_results: dict[tuple[int, int], Tensor],
        cspa: CSPAConfig | None = None,
        k: int = 10,
        k_attn: int = 8,
        max_cached: int = 32,
        neighbours: Tensor | None = None,
        effects: tuple[str, ...] = EFFECTS,
        ln_modes: tuple[str, ...] = LN_MODES,
        readouts: dict[tuple[int, int], str] | None = None,
        lens=None,
        readout_rule: str = "logit_lens",
        mean_tokens: Callable[[], Tensor] | None = None,
    ):
        self.loaded = loaded
        # the set's text for the mean output of a head it did not store ([n_mean, seq] token ids, read when needed)
        self.mean_tokens = mean_tokens
        self.computed_means: OrderedDict[tuple[int, int], Tensor] = OrderedDict()
        self.readouts = dict(readouts or {})  # head -> what "predicted" means (science.readout); default logit lens
        self.lens = lens  # the artifacts' tuned lens (science.tuned_lens.TunedLens) or None
        self.readout_rule = readout_rule  # the run's --readout, for heads it did not store (auto, or one read-out)
        self.effects, self.ln_modes = effects, ln_modes
        self.neighbours = neighbours
        self.mean_results = mean_results
        self.cspa = cspa if cspa is not None else CSPAConfig()
        self.k, self.k_attn = k, k_attn
        self.max_cached = max_cached
        # one analysis at a time (hooks are model state): the model's one queue (``model_queue.queue_of``), the
        # same its LiveModel holds; no other can be given
        self.queue = queue_of(unwrap(loaded))
        self._cache_lock = threading.Lock()
        self._cache: OrderedDict[tuple, LiveResult] = OrderedDict()

    @classmethod
    def for_artifacts(cls, loaded, arts: ArtifactSet, **kwargs) -> LiveAnalyzer:
        """An analyzer with the artifacts' mean results and the hyperparameters they were made with."""
        settings = arts.record.settings  # legacy defaults applied (``store.run_record``)
        cspa = CSPAConfig(
            k_u=settings.cspa_k_u,
            k_s=settings.cspa_k_s,
            negative_only=settings.cspa_negative_only,
            exclusions=settings.cspa_exclusions,
            interventions=settings.cspa_interventions,
        )
        neighbours = None
        if cspa.k_s > 1:
            from .science.semantic import neighbour_table

            neighbours = neighbour_table({k: torch.from_numpy(v) for k, v in arts.semantic().items()}, cspa.k_s)
        model_name = arts.model_name
        if getattr(loaded, "name", model_name) != model_name:
            raise InvalidInputError(
                f"the artifacts were made with {model_name!r} but the live model is "
                f"{loaded.name!r}; live results would not be comparable"
            )
        means: dict[tuple[int, int], Tensor] = {h: torch.from_numpy(arts.mean_result(h)) for h in arts.heads}
        n_mean = max(1, min(settings.n_mean or arts.n_sequences, arts.n_sequences))
        d_model = loaded.model.cfg.d_model
        for h, mu in means.items():
            if mu.ndim != 2 or mu.shape[1] != d_model:
                raise InvalidInputError(
                    f"the artifacts' mean result for head {h[0]}.{h[1]} has shape "
                    f"{tuple(mu.shape)}, which does not fit the live model (d_model {d_model})"
                )
        return cls(
            loaded,
            means,
            cspa=cspa,
            k=settings.k,
            k_attn=settings.k_attn,
            neighbours=neighbours,
            effects=settings.effects,
            ln_modes=settings.ln_modes,
            readouts={h: arts.readout(h)[0] for h in arts.heads},
            lens=stored_lens(arts),
            readout_rule=settings.readout,
            mean_tokens=lambda: _set_tokens(arts, n_mean),
            **kwargs,
        )

    @property
    def tokenizer(self):
        return self.loaded.tokenizer

    def readouts_for(self, head: tuple[int, int]) -> tuple[str, ...]:
        """The read-outs live analysis of ``head`` can use here (the tuned lens only where the artifacts have one for
        its layer)."""
        from .science import readout as readouts

        return readouts.available(self.lens, int(head[0]))

    def readout_of(self, head: tuple[int, int]) -> str:
        """The read-out the artifacts used for ``head``; for a head they did not store, the run's rule applied to it
        (``science.readout.resolve``; the paper's logit lens where the rule cannot be applied)."""
        from .science import readout as readouts

        head = (int(head[0]), int(head[1]))
        if head in self.readouts:
            return self.readouts[head]
        rule = self.readout_rule if self.readout_rule in (readouts.AUTO, *schema.READOUTS) else "logit_lens"
        try:
            return readouts.resolve(rule, self.lens, head[0], bool(getattr(self.loaded, "paper_model", False)))[0]
        except InvalidInputError:
            return "logit_lens"

    @property
    def max_tokens(self) -> int:
        """The longest prompt analysed: the model's context and the mean ablation's length (the set's sequences)."""
        n_ctx = self.loaded.model.cfg.n_ctx
        return min([n_ctx] + [int(mu.shape[0]) for mu in self.mean_results.values()])

    @property
    def all_heads(self) -> list[tuple[int, int]]:
        """Every head of the model, layer by layer (live analysis takes any of them)."""
        n_layers, n_heads = int(self.loaded.model.cfg.n_layers), int(self.loaded.model.cfg.n_heads)
        return [(layer, h) for layer in range(n_layers) for h in range(n_heads)]

    def stored(self, head: tuple[int, int]) -> bool:
        """Whether the artifacts hold ``head``'s mean output (else it is computed on the set's text when needed)."""
        return (int(head[0]), int(head[1])) in self.mean_results

    def mean_of(self, head: tuple[int, int], on_wait: OnWait = None) -> Tensor:
        """The head's per-position mean output: the artifacts' where they stored it, else computed once (in the
        model's queue) over the set's first ``n_mean`` sequences, as the precompute job computes it, and kept
        for the 64 heads asked for last."""
        from .models.heads import check_head
        from .science.analysis import mean_result

        key = check_head(self.loaded.model, head)
        if key in self.mean_results:
            return self.mean_results[key]
        with self._cache_lock:
            if key in self.computed_means:
                self.computed_means.move_to_end(key)
                return self.computed_means[key]
        if self.mean_tokens is None:
            raise InvalidInputError(f"head {key[0]}.{key[1]} has no mean result in these artifacts")
        tokens = self.mean_tokens()
        with self.queue.turn(on_wait):
            mu = mean_result(self.loaded, tokens, key)
        with self._cache_lock:
            self.computed_means[key] = mu
            while len(self.computed_means) > MAX_COMPUTED_MEANS:
                self.computed_means.popitem(last=False)
        return mu

    def answers(
        self,
        text: str,
        head: tuple[int, int],
        pos: int,
        answers: list[int],
        variant: str = schema.PAPER_VARIANT,
        on_wait: OnWait = None,
    ):
        """``science.answers.answer_effects`` for the prompt ``text`` (cut as ``analyze`` cuts it) at ``pos``."""
        from .science.answers import answer_effects

        if variant not in self.variants:
            raise InvalidInputError(f"variant {variant!r} is not among these artifacts' {self.variants}")
        effect, ln_mode = variant.split("_")
        ids = encode(self.loaded.tokenizer, clean_prompt(text))[: self.max_tokens]
        mu = self.mean_of(head, on_wait)
        with self.queue.turn(on_wait):
            return answer_effects(self.loaded, torch.tensor([ids]), head, mu, pos, answers, effect, ln_mode)

    def cached_count(self) -> int:
        with self._cache_lock:
            return len(self._cache)

    @property
    def variants(self) -> tuple[str, ...]:
        return tuple(f"{e}_{ln}" for e in self.effects for ln in self.ln_modes)

    def analyze(
        self,
        text: str,
        head: tuple[int, int],
        variants: tuple[str, ...] | None = None,
        on_wait: OnWait = None,
        readout: str | None = None,
    ) -> LiveResult:
        """The record of ``text`` for ``head``. ``variants``: the ablation variants the caller needs (default: all
        the artifacts hold). The paper's variant and CSPA come first; any other variant is computed when first
        asked for and then kept with the prompt's cached record, so the first answer costs the paper set only.
        ``readout``: what "predicted" means for CSPA and the prediction fields (default: the artifacts' choice
        for the head, ``readout_of``)."""
        from .models.heads import check_head

        head = check_head(self.loaded.model, head)
        wanted = self.variants if variants is None else tuple(variants)
        unknown = [v for v in wanted if v not in self.variants]
        if unknown:
            raise InvalidInputError(f"variant {unknown[0]!r} is not among these artifacts' {self.variants}")
        text = clean_prompt(text)
        from .science import readout as readouts

        chosen = readouts.check(readout or self.readout_of(head), self.lens, head[0])
        key = (head, text, chosen)
        with self._cache_lock:
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
                if set(wanted) <= cached.computed:
                    return cached
        if cached is None:
            ids = encode(self.loaded.tokenizer, text)
            n_in = len(ids)
            if n_in < 2:
                raise InvalidInputError("the prompt produced no tokens")
            cut = self.max_tokens if n_in > self.max_tokens else None
            tokens = torch.tensor([ids[: self.max_tokens]])
            first = (schema.PAPER_VARIANT,) + tuple(v for v in wanted if v != schema.PAPER_VARIANT)
            record = self._record(tokens, head, first, self.cspa, on_wait, chosen)
            record[schema.TOKENS] = tokens[0].to(torch.int32).numpy()
            out = LiveResult(record=record, n_tokens_in=n_in, cut_to=cut, computed=frozenset(_cross(first)))
        else:
            missing = tuple(v for v in wanted if v not in cached.computed)
            tokens = torch.from_numpy(cached.record[schema.TOKENS]).long()[None]
            extra = self._record(tokens, head, missing, None, on_wait, chosen)
            record = {**extra, **cached.record}  # only the new variants' fields are added
            out = LiveResult(
                record=record,
                n_tokens_in=cached.n_tokens_in,
                cut_to=cached.cut_to,
                computed=cached.computed | frozenset(_cross(missing)),
            )
        release()  # vocabulary-sized temporaries of a long prompt run to hundreds of MB
        with self._cache_lock:
            self._cache[key] = out
            self._cache.move_to_end(key)
            while len(self._cache) > self.max_cached:
                self._cache.popitem(last=False)
        return out

    def _record(
        self, tokens: Tensor, head, variants: tuple[str, ...], cspa, on_wait: OnWait = None, readout: str = "logit_lens"
    ) -> dict:
        effects = tuple(dict.fromkeys(v.split("_")[0] for v in variants))
        ln_modes = tuple(dict.fromkeys(v.split("_")[1] for v in variants))
        mu = self.mean_of(head, on_wait)
        with self.queue.turn(on_wait):
            res = analyze(
                self.loaded,
                tokens,
                head,
                mu,
                k=self.k,
                cspa=cspa,
                neighbours=self.neighbours,
                topk_groups=STORED_TOPK_VARIANTS,
                effects=effects,
                ln_modes=ln_modes,
                readout=readout,
                lens=self.lens,
            )
        return as_arrays({name: t[0] for name, t in compact(res, self.k_attn).items()})


def _set_tokens(arts: ArtifactSet, n: int) -> Tensor:
    """The set's first ``n`` sequences as one [n, seq] tensor (the text its mean ablation averages over)."""
    return torch.stack([torch.as_tensor(arts.tokens(i)).long() for i in range(n)])


def _cross(variants: tuple[str, ...]) -> set[str]:
    """The variants ``analyze`` computes for these (every effect with every LN mode asked for)."""
    effects = {v.split("_")[0] for v in variants}
    ln_modes = {v.split("_")[1] for v in variants}
    return {f"{e}_{ln}" for e in effects for ln in ln_modes}
