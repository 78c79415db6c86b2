"""The Head survey page's data: every survey folder found, as one table, the filters, and where a head can be
opened. No drawing here (the page is ``views/survey.py``)."""

from __future__ import annotations

import html
import json
from pathlib import Path

import pandas as pd
import streamlit as st

from precompute import paper, schema
from precompute.errors import ArtifactError
from precompute.science import ranking as rankings
from precompute.store.run_record import ModelRecord
from precompute.store.survey import find_surveys, read_survey

LABELS = {
    "ioi_copy_suppression": "copy suppression (IOI)",
    "anti_induction": "anti-induction",
    "induction": "induction",
    "ov_top10": "OV: own token in bottom 10",
    "qk_top10": "QK: own token in top 10",
    "delta_loss_direct": "Δloss, direct ablation",
    "kl_direct": "KL, direct ablation",
    "cspa_kl_explained": "CSPA: share of KL explained (logit lens)",
    "cspa_kl_explained_tuned": "CSPA: share of KL explained (tuned lens)",
    "predicted_enrichment": "attention to predicted tokens (× chance, tuned lens)",
    "ov_text_suppression": "OV on text: source suppression (−z)",
}
assert set(LABELS) == set(schema.SURVEY_METRICS)


def survey_bases(configured: str | None, default: Path) -> list[Path]:
    """Where surveys are looked for: the configured artifacts folder (a folder of runs, or a run folder and the
    folder around it), else the default ``artifacts/``."""
    if not configured or configured.startswith("hf://"):
        return [default]
    base = Path(configured).expanduser()
    return [base, base.parent] if (base / schema.MANIFEST).exists() else [base]


def survey_folders(bases: list[Path]) -> list[Path]:
    seen, out = set(), []
    for base in bases:
        for p in find_surveys(base):
            if p.resolve() not in seen:
                seen.add(p.resolve())
                out.append(p)
    return out


@st.cache_data(max_entries=32, show_spinner=False)
def _read(folder: str, stamp: float):
    df, manifest = read_survey(folder)
    return df, manifest


def load(folders: list[Path]) -> tuple[pd.DataFrame, dict[str, dict], list[str]]:
    """(all heads of all surveys, manifest per survey name, problems). The ``survey`` column names the folder;
    ``depth`` = layer / n_layers; ``family`` and ``params_m`` come from each survey's recorded config."""
    frames, manifests, problems = [], {}, []
    for folder in folders:
        try:
            stamp = (folder / schema.SURVEY_MANIFEST).stat().st_mtime
            df, manifest = _read(str(folder), stamp)
        except (ArtifactError, OSError) as err:
            problems.append(f"{folder.name}: {err}")
            continue
        model = ModelRecord.of(manifest["model"])
        name = folder.name
        df = df.copy()
        df.insert(0, "survey", name)
        df["family"] = f"{model.family} (synthetic toy)" if model.stored.get("planted_head") else model.family
        df["params_m"] = params_millions(model.stored)
        df["depth"] = df["layer"] / max(1, model.n_layers)
        df["name"] = df["layer"].astype(str) + "." + df["head"].astype(str)
        frames.append(df)
        manifests[name] = manifest
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    if not table.empty:
        table["model_label"] = table["survey"].map(legend_names(manifests))
    return table, manifests, problems


# Okabe & Ito's colour-blind-safe qualitative palette, one colour per survey in the legend's order
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")
NO_VALUE = "n/a"  # how a head without a value for a metric reads, in hovers and tables alike


def params_millions(model: dict) -> float:
    """The model's parameters in millions as its config describes them, a tied embedding counted once (surveys made
    before ``tied_embeddings`` was recorded counted it twice: their figure stands as recorded)."""
    return float(model.get("n_params") or 0) / 1e6


def legend_names(manifests: dict[str, dict]) -> dict[str, str]:
    """{survey folder: its name in the legend}: the model's name (the folder too where two surveys share a model)."""
    models = {survey: str(m["model"].get("model_name") or survey) for survey, m in manifests.items()}
    out = {}
    for survey, name in models.items():
        shown = Path(name).name if "/" in name else name  # a model loaded from a folder: the folder's name
        label = shown + (" (synthetic)" if manifests[survey]["model"].get("synthetic") else "")
        out[survey] = label if list(models.values()).count(name) == 1 else f"{label} · {survey}"
    return out


def default_axis(table: pd.DataFrame, preferred: tuple[str, ...]) -> str:
    """The first metric of ``preferred`` that every survey in ``table`` has values for (else the one most surveys
    have), so no surveyed model vanishes from the default view."""

    def coverage(col: str) -> int:
        return int(table.groupby("survey")[col].apply(lambda c: c.notna().any()).sum())

    full = table["survey"].nunique()
    for col in preferred:
        if coverage(col) == full:
            return col
    return max(preferred, key=coverage)


def value_text(v) -> str:
    return NO_VALUE if pd.isna(v) else format(float(v), ".3f")


def filtered(table: pd.DataFrame, families: list[str], params: tuple[float, float]) -> pd.DataFrame:
    if table.empty:
        return table
    keep = table["family"].isin(families) & table["params_m"].between(params[0], params[1])
    return table[keep].reset_index(drop=True)


def hover_text(row: pd.Series) -> str:
    """Every metric of a head, its model's name escaped (plotly renders a subset of HTML in hover text)."""
    lines = [f"<b>{html.escape(str(row['model']))} [{row['name']}]</b>"]
    for col, label in LABELS.items():
        v = row[col]
        lines.append(f"{html.escape(label)}: {value_text(v)}")
    return "<br>".join(lines)


def runs_with_head(model_name: str, head: str, run_folders: list[str]) -> list[str]:
    """Local run folders made with ``model_name`` that hold ``head``."""
    out = []
    for folder in run_folders:
        try:
            manifest = json.loads((Path(folder) / schema.MANIFEST).read_text())
        except (OSError, ValueError):
            continue
        if (
            isinstance(manifest, dict)
            and isinstance(manifest.get("model"), dict)
            and ModelRecord.of(manifest["model"]).name == model_name
            and head in (manifest.get("heads") or [])
        ):
            out.append(folder)
    return out


def run_command(manifest: dict, head: str) -> str:
    """The exact command that makes artifacts for ``head`` of the survey's model."""
    import shlex

    model = ModelRecord.of(manifest["model"]).name
    dataset = manifest.get("dataset", {}).get("name", paper.DATASET)
    slug = "".join(c if c.isalnum() else "-" for c in Path(model).name)[:40].strip("-") or "model"
    return (
        f"python -m precompute run --model {shlex.quote(model)} --heads {head} --dataset {shlex.quote(dataset)} "
        f"--out artifacts/{slug}-{head.replace('.', '_')}"
    )


def survey_of(model_name: str, configured: str | None, default: Path):
    """(the survey DataFrame of ``model_name``, its folder name, its manifest) from the surveys the Head survey page
    finds, or (None, None, None) where none is of that model."""
    folders = survey_folders(survey_bases(configured, default))
    table, manifests, _ = load(folders)
    for name, manifest in manifests.items():
        if ModelRecord.of(manifest["model"]).name == model_name:
            part = table[table["survey"] == name].reset_index(drop=True)
            return part, name, manifest
    return None, None, None


def ranked_heads(table: pd.DataFrame, manifests: dict[str, dict], survey_name: str) -> tuple[pd.DataFrame, str]:
    """(the heads of one survey, strongest copy suppressor first, with the score and every column; the rule in
    words) by ``science.ranking.copy_suppression_ranking`` under the survey's read-out."""
    part = table[table["survey"] == survey_name].reset_index(drop=True)
    readout = rankings.survey_readout(manifests[survey_name])
    ranked = rankings.copy_suppression_ranking(part, readout)
    merged = ranked.merge(part, on=["layer", "head"], how="left")
    merged.insert(0, "rank", range(1, len(merged) + 1))
    return merged, rankings.ranking_rule(readout)
