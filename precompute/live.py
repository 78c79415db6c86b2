"""The one boundary between the app and a model: ``LiveModel`` (as the LLM Transparency Tool's ``TransparentLlm``).

A ``LiveModel`` holds one loaded model and offers what the pages need of it (compare prompt pairs, self-repair, a
head's attention on a prompt, and ``analyzer(arts)`` for typed text), each through the same science functions
the precompute job calls. TransformerLens hooks live on the model object, so the model runs one analysis at a time,
in turns the ``LiveModel`` keeps inside; callers never see them, nor a hook name.

Every forward pass takes a turn on the model's ``ModelQueue`` (first come, first served, bounded: beyond
``max_waiting`` callers a ``BusyError``); a caller passes ``on_wait`` to hear how many analyses are ahead of it.

``LiveAnalyzer`` (``precompute.live_analyzer``, re-exported here) analyses typed text for one artifact set.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import TYPE_CHECKING, Protocol

import numpy as np
import torch

from . import schema
from .errors import InvalidInputError
from .live_analyzer import LiveAnalyzer, LiveResult, OnWait, clean_prompt
from .model_queue import DEFAULT_MAX_WAITING, queue_of
from .models.loading import unwrap
from .store.records import as_arrays
from .summaries import CSPASummary

if TYPE_CHECKING:  # the type only
    from .store.artifact_set import ArtifactSet

__all__ = ["LiveAnalyzer", "LiveModel", "LiveResult", "clean_prompt"]

MAX_ANALYZERS = 4  # artifact sets whose analyzer a model keeps


class ModelBoundary(Protocol):
    """What the app asks of a model, in the manner of the LLM Transparency Tool's ``TransparentLlm``: arrays and
    dataclasses out, never a tensor, a hook or a lock. ``LiveModel`` is the real one; the app's tests can give it
    another (``app.live_model.use_backend``)."""

    @property
    def name(self) -> str: ...

    @property
    def tokenizer(self): ...

    @property
    def shape(self) -> tuple[int, int]: ...

    def analyzer(self, arts: ArtifactSet, **kwargs) -> LiveAnalyzer: ...

    def compare_prompts(self, clean, corrupted, answers, **options): ...

    def self_repair(self, prompts, answers, heads, method: str = "mean", on_wait: OnWait = None): ...

    def cspa_interventions(
        self, arts: ArtifactSet, head, n_seqs: int = 8, on_wait: OnWait = None, progress=None
    ) -> dict[str, CSPASummary]: ...

    def joint_effect(
        self, arts: ArtifactSet, heads, n_seqs: int = 8, on_wait: OnWait = None, progress=None
    ) -> dict: ...

    def default_ablation_heads(self) -> tuple[tuple[int, int], ...]: ...

    def attention(self, tokens, head, on_wait: OnWait = None) -> np.ndarray: ...


def _from_app(x):
    """Token arrays the app hands back (numpy) as tensors; strings and tensors as they are."""
    return torch.from_numpy(x) if isinstance(x, np.ndarray) else x


class LiveModel:
    """One loaded model, shared by every session of the app: what the pages ask of a model, each run in its turn
    on the model's queue (hooks are model state). ``on_wait(ahead)``: told while the caller waits."""

    def __init__(self, loaded, max_waiting: int = DEFAULT_MAX_WAITING):
        self.loaded = loaded
        self.queue = queue_of(unwrap(loaded), max_waiting)  # the model's one queue (``model_queue.queue_of``)
        self._analyzers: OrderedDict[tuple, LiveAnalyzer] = OrderedDict()
        self._analyzers_lock = threading.Lock()

    @property
    def name(self) -> str:
        return self.loaded.name

    @property
    def tokenizer(self):
        return self.loaded.tokenizer

    @property
    def shape(self) -> tuple[int, int]:
        """(n_layers, n_heads)."""
        cfg = self.loaded.model.cfg
        return int(cfg.n_layers), int(cfg.n_heads)

    def analyzer(self, arts: ArtifactSet, **kwargs) -> LiveAnalyzer:
        """Live analysis of typed text for the artifact set ``arts`` (its mean results and hyperparameters), on
        this model and in its queue: one analyzer per set and settings (the last ``MAX_ANALYZERS`` kept)."""
        key = (str(getattr(arts, "source", id(arts))), tuple(sorted(kwargs.items())))
        with self._analyzers_lock:
            hit = self._analyzers.get(key)
            if hit is not None:
                self._analyzers.move_to_end(key)
                return hit
        made = LiveAnalyzer.for_artifacts(self.loaded, arts, **kwargs)
        with self._analyzers_lock:
            made = self._analyzers.setdefault(key, made)
            while len(self._analyzers) > MAX_ANALYZERS:
                self._analyzers.popitem(last=False)
        return made

    def compare_prompts(
        self,
        clean,
        corrupted,
        answers,
        patching: bool = True,
        attribution: bool = True,
        progress=None,
        on_wait: OnWait = None,
        top_n: int | None = None,
        partial=None,
    ):
        """``science.pairs.compare_prompts`` on this model: logit difference, lens, attribution, patching (of the
        ``top_n`` cells attribution ranks first, or every cell); ``partial`` is told the patching grids so far. Arrays
        out (``store.records.as_arrays``)."""
        from .science.pairs import compare_prompts

        told = None if partial is None else (lambda grids: partial(as_arrays(grids)))
        with self.queue.turn(on_wait):
            return as_arrays(
                compare_prompts(
                    self.loaded,
                    _from_app(clean),
                    _from_app(corrupted),
                    _from_app(answers),
                    patching=patching,
                    attribution=attribution,
                    progress=progress,
                    top_n=top_n,
                    partial=told,
                )
            )

    def self_repair(self, prompts, answers, heads, method: str = "mean", on_wait: OnWait = None):
        """``science.self_repair.self_repair`` on this model (arrays out)."""
        from .science.self_repair import self_repair

        with self.queue.turn(on_wait):
            return as_arrays(self_repair(self.loaded, _from_app(prompts), _from_app(answers), heads, method))

    def cspa_interventions(
        self, arts: ArtifactSet, head, n_seqs: int = 8, on_wait: OnWait = None, progress=None
    ) -> dict[str, CSPASummary]:
        """CSPA with each of the paper's three interventions on the first ``n_seqs`` sequences of ``arts``, with
        the artifacts' CSPA settings: {"qk,ov" | "qk" | "ov": summary_metrics} (``science.cspa_interventions``)."""
        from .science.cspa_interventions import compare_interventions

        an = self.analyzer(arts)
        key = (int(head[0]), int(head[1]))
        if key not in an.mean_results:
            raise InvalidInputError(f"head {key[0]}.{key[1]} has no mean result in these artifacts")
        n = max(1, min(int(n_seqs), arts.n_sequences))
        tokens = torch.stack([torch.as_tensor(arts.tokens(i)).long() for i in range(n)])
        with self.queue.turn(on_wait):
            return compare_interventions(
                self.loaded,
                tokens,
                key,
                an.mean_results[key],
                an.cspa,
                an.neighbours,
                progress=progress,
                readout=an.readout_of(key),
                lens=an.lens,
            )

    def joint_effect(self, arts: ArtifactSet, heads, n_seqs: int = 8, on_wait: OnWait = None, progress=None) -> dict:
        """``science.joint.joint_effect`` of the set ``heads`` on the first ``n_seqs`` sequences of ``arts``, with
        its CSPA settings and tuned lens; a head the artifacts did not store gets its mean output over the set's
        first ``n_mean`` sequences and the set's read-out rule (``science.readout.resolve``)."""
        from .models.heads import check_head
        from .science.joint import joint_effect, mean_results_for

        an = self.analyzer(arts)
        keys = tuple(check_head(self.loaded.model, h) for h in heads)
        n = max(1, min(int(n_seqs), arts.n_sequences))
        n_mean = max(1, min(int(arts.hyperparameters.get("n_mean", n)), arts.n_sequences))
        tokens = torch.stack([torch.as_tensor(arts.tokens(i)).long() for i in range(max(n, n_mean))])
        readout_of = {h: an.readout_of(h) for h in keys}
        with self.queue.turn(on_wait):
            means = mean_results_for(self.loaded, tokens[:n_mean], keys, an.mean_results)
            got = joint_effect(
                self.loaded, tokens[:n], keys, means, an.cspa, readout_of, an.lens, an.neighbours, progress=progress
            )
        got["readouts"] = {schema.head_key(h): readout_of[h] for h in keys}
        return got

    def default_ablation_heads(self) -> tuple[tuple[int, int], ...]:
        """The heads self-repair ablates by default here (GPT-2's name movers), or () where the caller chooses."""
        from .science.self_repair import default_heads

        return default_heads(self.loaded)

    def attention(self, tokens, head, on_wait: OnWait = None) -> np.ndarray:
        """Head ``head``'s attention pattern [query, key] (float32) on one prompt's token ids."""
        from .models.heads import check_head
        from .science.analysis import attention_pattern

        layer, h = check_head(self.loaded.model, head)
        ids = torch.as_tensor(tokens).long().reshape(1, -1)
        with self.queue.turn(on_wait):
            return attention_pattern(self.loaded, ids, layer, h)[0].numpy()
