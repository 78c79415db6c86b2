"""The paper's table (``paper``) next to the measured numbers of an artifact folder."""

from __future__ import annotations

from .. import paper, schema
from ..science import verdict as verdicts
from ..store.run_record import ModelRecord
from ..summaries import CSPASummary

# how each of the paper's settings (``paper.RUN``) is read from an artifact folder, with its label
SETTINGS = {
    "model": ("model", lambda a, h: a.model_name),
    "head": ("head", lambda a, h: h),
    "dataset": ("dataset", lambda a, h: a.manifest["dataset"].get("name")),
    "seed": ("seed", lambda a, h: a.manifest["dataset"].get("seed")),
    "n_seqs": ("n_seqs", lambda a, h: a.n_sequences),
    "seq_len": ("seq_len", lambda a, h: a.seq_len),
    "n_mean": ("n_mean (μ from the first n analysed sequences)", lambda a, h: a.hyperparameters.get("n_mean")),
    "cspa_k_u": ("K_u", lambda a, h: a.hyperparameters.get("cspa_k_u")),
    "cspa_k_s": ("K_s", lambda a, h: a.hyperparameters.get("cspa_k_s")),
    "cspa_negative_only": ("negative components only", lambda a, h: a.hyperparameters.get("cspa_negative_only")),
    "cspa_exclusions": ("CSPA exclusions", lambda a, h: a.record.settings.cspa_exclusions),
    "indirect_excluding": (
        "indirect effect leaves out the paths through",
        lambda a, h: ",".join(f"{y[0]}.{y[1]}" for y in a.hyperparameters.get("indirect_excluding", [])) or "none",
    ),
    "cspa_interventions": (
        "CSPA interventions",
        lambda a, h: ",".join(a.record.settings.cspa_interventions),
    ),
    "readout": (
        "what 'predicted' means (read-out)",
        lambda a, h: a.hyperparameters.get("readouts", {}).get(h, {}).get("used", "logit_lens"),
    ),
    "dtype": ("forward dtype", lambda a, h: a.hyperparameters.get("dtype")),
    "selection": (
        "data selection",
        lambda a, h: paper.SELECTION
        if "np.random" in str(a.manifest["dataset"].get("selection", ""))
        else "older rule",
    ),
}


def differences(arts, head=None) -> list[tuple[str, object, object]]:
    """(setting, the paper's value, this run's value) for every setting that differs from the paper's run."""
    head_name = head or arts.manifest["heads"][0]
    out = []
    for key, (label, get) in SETTINGS.items():
        value = get(arts, head_name)
        if value != paper.RUN[key]:
            out.append((label, paper.RUN[key], value))
    return out


def rows(arts, head=None) -> list[tuple[paper.Figure, float | None]]:
    """(the paper's figure, this run's value or None) for every figure of ``paper.FIGURES``."""
    got = arts.paper_figures(head)
    return [(figure, got.get(figure.key)) for figure in paper.FIGURES]


def qk_distance_lines(arts, head_name: str) -> list[str]:
    """On a rotary model: which query-key distance the QK rows above use, and the QK top-10 at the stated ones."""
    s = arts.summary(head_name)
    if "qk_distance" not in s:
        return []
    at = ", ".join(
        f"{d}: {100 * v.frac_top10:.2f}%"
        for d, v in arts.qk_at_distances(head_name).items()
        if v.frac_top10 is not None
    )
    return [
        f"QK on this rotary model: keys {int(s['qk_distance']['used'])} positions back (the head's attended median on "
        "this text); the paper's QK has no positions (GPT-2's are learned).",
        f"  QK top 10 at other distances: {at}",
    ]


def find_survey(arts, survey_dir=None):
    """The survey of the artifacts' model: ``survey_dir`` if given, else a survey folder beside the artifacts made
    with the same model (None if there is none)."""
    from pathlib import Path

    from ..store.survey import find_surveys, read_survey

    folders = [Path(survey_dir)] if survey_dir else find_surveys(Path(arts.root).parent)
    for folder in folders:
        df, manifest = read_survey(folder)
        if ModelRecord.of(manifest["model"]).name == arts.model_name or survey_dir:
            return df
    return None


def the_verdict(arts, head_name: str, survey=None) -> verdicts.Verdict:
    head = schema.parse_head(head_name)
    return verdicts.verdict(
        head, arts.summary(head_name), arts.readout(head_name)[0], survey, d_vocab=arts.tokenizer.vocab_size
    )


def readout_lines(arts, head_name: str) -> list[str]:
    """The read-out used and why, the tuned lens's held-out quality per layer and CSPA under each read-out."""
    used, why = arts.readout(head_name)
    lines = [f"'Predicted' read by the {schema.READOUT_LABELS[used]}: {why}."]
    quality = arts.lens_quality()
    if quality:
        n = next(iter(quality.values())).get("n_tokens", 0)
        lines.append(
            f"Held-out read-out quality per layer ({n} positions): top-1 agreement with the model and KL(model ‖ lens)"
        )
        lines.append(f"  {'layer':>5s} {'logit lens':>22s} {'tuned lens':>22s}")
        layer = schema.parse_head(head_name)[0]
        for lay, q in sorted(quality.items()):
            mark = "  <- the head's layer" if lay == layer else ""
            lines.append(
                f"  {lay:>5d} {q['logit']['top1']:>8.1%} {q['logit']['kl']:>8.2f} nats "
                f"{q['tuned']['top1']:>8.1%} {q['tuned']['kl']:>8.2f} nats{mark}"
            )
    by = verdicts.cspa_by_readout(arts.summary(head_name), used)
    if by:
        lines.append("CSPA's share of the head's KL by read-out (paper, GPT-2 10.7 with the logit lens: 76.9%):")
        for r in schema.READOUTS:
            if r in by:
                lines.append(f"  {schema.READOUT_LABELS[r]:68s} {by[r]:>8.2%}")
    return lines


def group_lines(arts) -> list[str]:
    """Each set of heads measured together: CSPA's share of the set's KL, its Δloss and each head's alone."""
    lines = []
    for name, g in arts.groups().items():
        alone, together = g.get("mean_delta_loss_alone", {}), CSPASummary.of(g)
        lines.append(
            f"Heads {name} together: Δloss {together.mean_delta_loss_ablation:+.4f} nats/token when their direct "
            f"effects are mean-ablated together (alone: {', '.join(f'{h} {v:+.4f}' for h, v in alone.items())}; sum "
            f"{sum(alone.values()):+.4f}); CSPA of the set explains {together.explained_kl:.1%} of its KL"
        )
    return lines


def verdict_lines(v: verdicts.Verdict) -> list[str]:
    lines = [f"Verdict on {v.head}: {v.word.upper()}. {v.sentence}"]
    for step in v.steps + v.extras:
        ok = {True: "passes", False: "fails", None: "not measured"}[step.passed]
        lines.append(f"  {step.title} ({ok}): {step.figure_text}; chance: {step.chance_text}")
        if step.percentile is not None:
            base = ", ".join(f"{h}: {x:.3g}" for h, x in step.baselines.items()) or "none"
            lines.append(
                f"     survey ({step.survey_column}): this head {step.head_in_survey:.3g}, percentile "
                f"{step.percentile:.0%} of all heads; baseline heads {base}"
            )
    lines.append("  " + v.thresholds)
    lines.append("  " + v.survey_note)
    return lines


def format_report(arts, head=None, survey=None) -> str:
    model = arts.record.model
    head_name = head or arts.manifest["heads"][0]
    lines = [
        f"Model {model.name}, head {head_name}, {arts.n_sequences} x {arts.seq_len} tokens of "
        f"{arts.manifest['dataset']['name']}"
    ]
    if model.synthetic:
        lines.append(
            "NOTE: this is a SYNTHETIC model (offline); its numbers are not comparable to the paper's. "
            "Run with --model gpt2-small where the Hub is reachable to reproduce them."
        )
    width = max(len(f.label) for f in paper.FIGURES)
    lines.append(f"{'quantity':{width}s} {'paper (GPT-2 10.7)':>18s} {'measured':>10s}")
    for figure, value in rows(arts, head):
        lines.append(f"{figure.label:{width}s} {figure.text:>18s} {figure.format(value):>10s}")
    lines += qk_distance_lines(arts, head_name)
    diff = differences(arts, head)
    if diff:
        lines.append("Settings that differ from the paper's run (so the numbers are not one to one):")
        lines += [f"  {name}: paper {want!r}, this run {value!r}" for name, want, value in diff]
    else:
        lines.append("Every setting is the paper's.")
    lines += readout_lines(arts, head_name)
    lines += verdict_lines(the_verdict(arts, head_name, survey))
    lines += group_lines(arts)
    return "\n".join(lines)


INTERVENTION_FIGURES, INTERVENTION_LABELS = paper.CSPA_INTERVENTIONS, paper.CSPA_INTERVENTION_LABELS


def interventions(arts, head=None, n_seqs: int = 8, loaded=None) -> dict:
    """CSPA with each intervention on the first ``n_seqs`` sequences (loads the artifacts' model on the CPU)."""
    from ..live import LiveModel
    from ..models.loading import load_model

    model = LiveModel(loaded if loaded is not None else load_model(arts.model_name, device="cpu"))
    head_name = head or arts.manifest["heads"][0]
    return model.cspa_interventions(arts, tuple(int(x) for x in head_name.split(".")), n_seqs)


def intervention_lines(results: dict, n_seqs: int) -> list[str]:
    lines = [f"CSPA with each intervention (KL effect explained, first {n_seqs} sequences, measured live):"]
    for key, label in INTERVENTION_LABELS.items():
        got = results[key].explained_kl
        lines.append(f"  {label:40s} {100 * INTERVENTION_FIGURES[key]:>17.2f}% {100 * got:>9.2f}%")
    return lines


def report_json(
    arts, head=None, measured_interventions: dict | None = None, n_seqs: int | None = None, survey=None
) -> dict:
    """The whole table as data: every paper figure with this run's value, the settings that differ, the QK
    distance on rotary models and, when measured, CSPA with each intervention."""
    head_name = head or arts.manifest["heads"][0]
    model = arts.record.model
    out = {
        "model": model.name,
        "synthetic": model.synthetic,
        "head": head_name,
        "n_sequences": arts.n_sequences,
        "seq_len": arts.seq_len,
        "dataset": arts.manifest["dataset"]["name"],
        "figures": [
            {"key": f.key, "label": f.label, "unit": f.unit, "paper": f.value, "measured": v}
            for f, v in rows(arts, head)
        ],
        "settings_that_differ": [{"setting": n, "paper": p, "run": r} for n, p, r in differences(arts, head)],
    }
    s = arts.summary(head_name)
    used, why = arts.readout(head_name)
    out["readout"] = {"used": used, "why": why, "cspa_explained_kl": verdicts.cspa_by_readout(s, used)}
    out["lens_quality"] = {str(k): v for k, v in arts.lens_quality().items()}
    v = the_verdict(arts, head_name, survey)
    out["verdict"] = {
        "word": v.word,
        "sentence": v.sentence,
        "steps": [
            {
                "step": st.title,
                "figure": st.figure,
                "text": st.figure_text,
                "chance": st.chance_text,
                "passed": st.passed,
                "survey_column": st.survey_column,
                "percentile": st.percentile,
                "baselines": st.baselines,
            }
            for st in v.steps + v.extras
        ],
        "thresholds": v.thresholds,
    }
    if arts.groups():
        out["groups"] = arts.groups()
    if "qk_distance" in s:
        out["qk_distance"] = s["qk_distance"]
        out["qk_at_distance"] = {str(d): v.as_dict() for d, v in arts.qk_at_distances(head_name).items()}
    if measured_interventions is not None:
        out["cspa_interventions"] = {
            key: {"paper": INTERVENTION_FIGURES[key], "measured": measured_interventions[key].explained_kl}
            for key in INTERVENTION_LABELS
        }
        out["cspa_interventions_n_sequences"] = n_seqs
    return out
