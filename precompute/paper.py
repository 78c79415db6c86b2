"""The paper's published figures, its run's settings and its heads, each keyed by name (McDougall, Conmy, Rushing
et al., *Copy Suppression: Comprehensively Understanding an Attention Head*, arXiv 2310.04625; the reference
notes' §3-4). ``jobs.report`` prints them beside a run's numbers and the app shows them; both look them up by key.
"""

from __future__ import annotations

from dataclasses import dataclass

HEAD = (10, 7)  # the head the paper studies, in GPT-2 small
DATASET = "stas/openwebtext-10k"  # the paper's text: OpenWebText (the 10k-document Hub copy the runs stream)
PAPER_MODEL_NAMES = ("gpt2-small", "gpt2-small-random")  # the paper's model (and its random-weight twin)
NEGATIVE_HEADS = ((10, 7), (11, 10))  # GPT-2 small's two copy-suppression (negative name-mover) heads
NAME_MOVERS = ((9, 9), (9, 6), (10, 0))  # the IOI name movers the paper ablates to measure self-repair


@dataclass(frozen=True)
class Figure:
    key: str  # the name ``jobs.report.measured`` gives the run's value
    label: str
    value: float
    unit: str  # "share" (printed as a percentage) or "nats"
    source: str  # where a run stores its value: "section.key" of a head's summary (``summaries.HeadSummary.value``)

    def format(self, x: float | None) -> str:
        if x is None:
            return "n/a"
        return f"{100 * x:.2f}%" if self.unit == "share" else f"{x:.4f}"

    @property
    def text(self) -> str:
        """The paper's value as printed."""
        return self.format(self.value)


FIGURES = (
    Figure("explained_kl", "CSPA effect explained (KL)", 0.769, "share", "cspa.explained_kl"),
    Figure(
        "explained_top_bucket",
        "CSPA effect explained, top 1% bucket of ablation Δloss",
        0.881,
        "share",
        "cspa.explained_top_bucket",
    ),
    Figure("ov_top10", "OV: token in its own 10 most suppressed", 0.8470, "share", "ov.frac_top10"),
    Figure("ov_rank0", "OV: token suppressed most (rank 0)", 0.5726, "share", "ov.frac_rank0"),
    Figure(
        "ov_dynamic_top10",
        "OV on text: source in its 10 most suppressed (attn > 10%)",
        0.7824,
        "share",
        "ov_dynamic.frac_top10",
    ),
    Figure(
        "ov_dynamic_semantic",
        "OV on text, ranks 1-9: top one a semantic neighbour",
        0.8969,
        "share",
        "ov_dynamic.frac_rank1_9_semantic",
    ),
    Figure("qk_rank0", "QK: token is the top key (argmax)", 0.7124, "share", "qk.frac_rank0"),
    Figure("qk_top10", "QK: token among the top 10 keys", 0.9572, "share", "qk.frac_top10"),
    Figure(
        "delta_loss", "Direct-effect mean ablation: Δloss (nats/token)", 0.0102, "nats", "cspa.mean_delta_loss_ablation"
    ),
    Figure(
        "indirect_excluding",
        "Indirect effect without 11.10's path: Δloss (frozen LN)",
        0.0008,
        "nats",
        "indirect_excluding.delta_loss_frozen",
    ),
    Figure("clean_loss", "Clean loss (nats/token)", 3.03, "nats", "cspa.mean_clean_loss"),
)
FIGURE = {f.key: f for f in FIGURES}


def explained_top_bucket(curve_ablation: list[float], curve_cspa: list[float]) -> float | None:
    """The top-percentile figure from a percentile curve (buckets of tokens sorted by the ablation's Δloss): effect
    explained in the top bucket, where mean ablation raised the loss most, 1 - mean CSPA Δloss / mean ablation
    Δloss there (paper: 88.1% over 100 buckets). None without a curve."""
    if not curve_ablation or not curve_cspa or curve_ablation[-1] == 0:
        return None
    return 1.0 - curve_cspa[-1] / curve_ablation[-1]


# CSPA's KL effect explained with each intervention (paper §3.3), by CSPAConfig.interventions joined with ","
CSPA_INTERVENTIONS = {"qk,ov": 0.769, "qk": 0.952, "ov": 0.811}
CSPA_INTERVENTION_LABELS = {"qk,ov": "CSPA, QK and OV (the paper's)", "qk": "CSPA, QK only", "ov": "CSPA, OV only"}
# share of self-repair that 10.7 and 11.10 do together when the name movers are ablated (IOI)
SELF_REPAIR_NEGATIVE_SHARE = 0.39

SELECTION = "paper's rule (np.random seed, curly quotes, longer than seq_len)"
# the paper's run: what ``report`` compares an artifact folder's settings with
RUN = {
    "model": "gpt2-small",
    "head": f"{HEAD[0]}.{HEAD[1]}",
    "dataset": DATASET,
    "seed": 6,
    "n_seqs": 500,
    "seq_len": 1000,
    "n_mean": 100,
    "cspa_k_u": 0.05,
    "cspa_k_s": 1,
    "cspa_negative_only": True,
    "cspa_exclusions": "paper",
    "cspa_interventions": "qk,ov",
    "readout": "logit_lens",
    "indirect_excluding": "11.10",
    "dtype": "float32",
    "selection": SELECTION,
}
