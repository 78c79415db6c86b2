"""One run's record, typed and read once from its manifest: the model, the heads, the settings (with the defaults of
sets made before a setting was recorded applied here, once) and each head's summary (``summaries.HeadSummary``).
Survey manifests carry the same ``model`` section, read by :meth:`ModelRecord.of` too."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..schema import EFFECTS, LN_MODES, parse_head
from ..summaries import HeadSummary

# what a set made before a setting was recorded used: the extended exclusion list (the paper's became the default
# later) and both CSPA interventions
LEGACY_SETTINGS: dict[str, Any] = {
    "cspa_exclusions": "extended",
    "cspa_interventions": ("qk", "ov"),
    "effects": EFFECTS,  # every effect and LN mode
    "ln_modes": LN_MODES,
    "readout": "logit_lens",  # the paper's "predicted", before read-outs were recorded
}


@dataclass(frozen=True)
class ModelRecord:
    """The manifest's ``model`` section: what the app and the report need of it, and the whole as stored."""

    name: str
    n_layers: int
    n_heads: int
    n_ctx: int
    synthetic: bool
    family: str
    stored: Mapping[str, Any]

    @classmethod
    def of(cls, section: Mapping[str, Any]) -> ModelRecord:
        return cls(
            name=str(section["model_name"]),
            n_layers=int(section.get("n_layers") or 0),
            n_heads=int(section.get("n_heads") or 0),
            n_ctx=int(section.get("n_ctx") or 0),
            synthetic=bool(section.get("synthetic")),
            family=str(section.get("family") or section.get("architecture") or "unknown"),
            stored=dict(section),
        )


@dataclass(frozen=True)
class RunSettings:
    """The run's hyperparameters (``manifest["hyperparameters"]``) with the legacy defaults applied."""

    cspa_k_u: float
    cspa_k_s: int
    cspa_negative_only: bool
    cspa_exclusions: str
    cspa_interventions: tuple[str, ...]
    k: int
    k_attn: int
    effects: tuple[str, ...]
    ln_modes: tuple[str, ...]
    readout: str  # the rule the run used to choose each head's read-out
    n_mean: int | None  # sequences the head means were taken over (None: not recorded)
    stored: Mapping[str, Any]

    @classmethod
    def of(cls, hp: Mapping[str, Any]) -> RunSettings:
        return cls(
            cspa_k_u=hp["cspa_k_u"],
            cspa_k_s=int(hp["cspa_k_s"]),
            cspa_negative_only=bool(hp["cspa_negative_only"]),
            cspa_exclusions=str(hp.get("cspa_exclusions", LEGACY_SETTINGS["cspa_exclusions"])),
            cspa_interventions=tuple(hp.get("cspa_interventions", LEGACY_SETTINGS["cspa_interventions"])),
            k=int(hp["k"]),
            k_attn=int(hp["k_attn"]),
            effects=tuple(hp.get("effects", LEGACY_SETTINGS["effects"])),
            ln_modes=tuple(hp.get("ln_modes", LEGACY_SETTINGS["ln_modes"])),
            readout=str(hp.get("readout", LEGACY_SETTINGS["readout"])),
            n_mean=int(hp["n_mean"]) if hp.get("n_mean") else None,
            stored=dict(hp),
        )


@dataclass(frozen=True)
class RunRecord:
    model: ModelRecord
    heads: tuple[tuple[int, int], ...]
    settings: RunSettings
    summaries: Mapping[str, HeadSummary]

    @classmethod
    def of(cls, manifest: Mapping[str, Any]) -> RunRecord:
        """From a manifest ``store.manifest.validate`` accepted."""
        return cls(
            model=ModelRecord.of(manifest["model"]),
            heads=tuple(parse_head(h) for h in manifest["heads"]),
            settings=RunSettings.of(manifest["hyperparameters"]),
            summaries={k: HeadSummary.of(v) for k, v in (manifest.get("summary") or {}).items()},
        )
