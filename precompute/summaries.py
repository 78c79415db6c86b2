"""A head's stored summary, typed. The science layer builds these dataclasses (``science.cspa.summary_metrics``,
``science.circuits``' rank summaries, ``science.ov_dynamic``); the manifest stores them as plain JSON
(``as_dict``), and every reader turns a stored section back into its dataclass with :meth:`Section.of`, where the
defaults of sets made before a key existed are applied, once. The section keys are spelled here only
(``tests/test_layout.py`` checks that no other module writes them as strings).

Sections of ``manifest["summary"]["L.H"]``: ``cspa`` (:class:`CSPASummary`), ``ov``, ``qk`` and ``qk_at_<d>``
(:class:`RankSummary`), ``ov_dynamic`` (:class:`OVDynamicSummary`); the others (``attends_predicted``, ``causal_qk``,
``lens_quality``, ``qk_distance``, ``cspa_by_readout``, ``indirect_excluding``) stay as the writer's dicts.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Self

from .paper import explained_top_bucket


@dataclass(frozen=True)
class Section:
    """A summary section: its known keys as fields (a stored key this version does not know is kept in ``extra``)."""

    extra: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def of(cls, stored: Mapping[str, Any] | None) -> Self:
        """The section as stored (a dict from the manifest, None or {} where it is missing)."""
        stored = dict(stored or {})
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        known = {k: _frozen(v) for k, v in stored.items() if k in names}
        return cls(**known, extra={k: v for k, v in stored.items() if k not in names})._legacy()

    def _legacy(self) -> Self:
        return self

    def as_dict(self) -> dict[str, Any]:
        """What the manifest stores: the fields that are set (None and empty sequences left out), then ``extra``."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        out = {k: list(v) if isinstance(v, tuple) else v for k, v in out.items() if v is not None and v != ()}
        return {**out, **self.extra}

    def get(self, name: str) -> Any:
        """A field by name (``paper.Figure.source``'s second part)."""
        return getattr(self, name)


def _frozen(v: Any) -> Any:
    return tuple(v) if isinstance(v, list) else v


@dataclass(frozen=True)
class CSPASummary(Section):
    """CSPA against the head's ablation over the run's tokens (paper §3.3), ``science.cspa.summary_metrics``."""

    n_tokens: int = 0
    explained_kl: float | None = None
    explained_top_bucket: float | None = None  # the top 1% bucket of ablation Δloss (sets before it: from the curves)
    explained_loss_net: float | None = None
    explained_loss_abs: float | None = None
    mean_kl_ablation: float | None = None
    mean_kl_cspa: float | None = None
    mean_delta_loss_ablation: float | None = None
    mean_delta_loss_cspa: float | None = None
    mean_clean_loss: float | None = None  # the run's clean loss (written by the job, not by summary_metrics)
    curve_ablation: tuple[float, ...] = ()  # mean Δloss per equal-count bucket of ablation Δloss
    curve_cspa: tuple[float, ...] = ()
    explained_kl_interval: tuple[float, float] | None = None  # central 90% over sequences resampled (live only)

    def _legacy(self) -> Self:
        if self.explained_top_bucket is None and self.curve_ablation:
            top = explained_top_bucket(list(self.curve_ablation), list(self.curve_cspa))
            return dataclasses.replace(self, explained_top_bucket=top)
        return self

    def without_curves(self) -> CSPASummary:
        return dataclasses.replace(self, curve_ablation=(), curve_cspa=())

    def brief(self) -> CSPASummary:
        """The headline numbers only (what a run stores for CSPA under each read-out)."""
        return CSPASummary(
            n_tokens=self.n_tokens,
            explained_kl=self.explained_kl,
            explained_loss_net=self.explained_loss_net,
            explained_loss_abs=self.explained_loss_abs,
            mean_kl_cspa=self.mean_kl_cspa,
        )


@dataclass(frozen=True)
class RankSummary(Section):
    """Where each token ranks in its own row of a circuit (OV: among the tokens it suppresses; QK: among the keys),
    ``science.circuits``: rank 0 = first."""

    n_tokens: int = 0
    frac_rank0: float | None = None
    frac_top10: float | None = None
    median_rank: float | None = None
    mean_rank: float | None = None
    worst_token_ids: tuple[int, ...] = ()
    worst_ranks: tuple[int, ...] = ()


@dataclass(frozen=True)
class OVDynamicSummary(Section):
    """OV on real text (``science.ov_dynamic``): where each attended source token ranks among the tokens the head's
    output there suppresses."""

    n_pairs: int = 0
    frac_rank0: float | None = None
    frac_top10: float | None = None
    frac_rank1_9: float | None = None
    frac_rank1_9_semantic: float | None = None  # of ranks 1-9: the top one is a semantic neighbour
    median_rank: float | None = None
    mean_source_z: float | None = None
    chance_top10: float | None = None  # 10 / d_vocab


SECTIONS: dict[str, type[Section]] = {
    "cspa": CSPASummary,
    "ov": RankSummary,
    "qk": RankSummary,
    "ov_dynamic": OVDynamicSummary,
}
QK_AT = "qk_at_"  # qk_at_<distance>: the QK circuit at that query-key distance (a RankSummary)


@dataclass(frozen=True)
class HeadSummary:
    """One head's summary as the manifest stores it, its typed sections read once."""

    stored: Mapping[str, Any]
    cspa: CSPASummary
    ov: RankSummary
    qk: RankSummary
    ov_dynamic: OVDynamicSummary

    @classmethod
    def of(cls, stored: Mapping[str, Any] | None) -> HeadSummary:
        s = dict(stored or {})
        return cls(
            stored=s,
            cspa=CSPASummary.of(s.get("cspa")),
            ov=RankSummary.of(s.get("ov")),
            qk=RankSummary.of(s.get("qk")),
            ov_dynamic=OVDynamicSummary.of(s.get("ov_dynamic")),
        )

    def section(self, name: str) -> Mapping[str, Any]:
        """A section that stays a dict (``attends_predicted``, ``causal_qk``…), {} where missing."""
        got = self.stored.get(name)
        return got if isinstance(got, Mapping) else {}

    def qk_at(self) -> dict[int, RankSummary]:
        """The ``qk_at_<distance>`` sections, by distance, in order."""
        found = {}
        for k, v in self.stored.items():
            if k.startswith(QK_AT) and k.removeprefix(QK_AT).isdigit() and isinstance(v, Mapping):
                found[int(k.removeprefix(QK_AT))] = RankSummary.of(v)
        return dict(sorted(found.items()))

    def value(self, source: str) -> float | None:
        """The number at ``source`` = "section.key" (a typed section's field, or a key of a dict section); None
        where the set did not store it (or stored a non-number)."""
        section, key = source.split(".", 1)
        typed = {"cspa": self.cspa, "ov": self.ov, "qk": self.qk, "ov_dynamic": self.ov_dynamic}.get(section)
        got = typed.get(key) if typed is not None else self.section(section).get(key)
        if isinstance(got, bool) or not isinstance(got, int | float) or not math.isfinite(float(got)):
            return None
        return float(got)
