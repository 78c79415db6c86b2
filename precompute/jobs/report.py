"""The paper's table next to the measured numbers of an artifact folder (upstream-app.md §3)."""

from __future__ import annotations

PAPER = {
    "CSPA effect explained (KL)": ("explained_kl", 0.769),
    "OV: token in its own 10 most suppressed": ("ov_top10", 0.8470),
    "OV: token suppressed most (rank 0)": ("ov_rank0", 0.5726),
    "QK: token is the top key (argmax)": ("qk_rank0", 0.7124),
    "QK: token among the top 10 keys": ("qk_top10", 0.9572),
    "Direct-effect mean ablation: Δloss (nats/token)": ("delta_loss", 0.0102),
    "Clean loss (nats/token)": ("clean_loss", 3.03),
}


def measured(arts, head=None) -> dict:
    s = arts.summary(head)
    cspa, ov, qk = s.get("cspa", {}), s.get("ov", {}), s.get("qk", {})
    return {
        "explained_kl": cspa.get("explained_kl"), "ov_top10": ov.get("frac_top10"), "ov_rank0": ov.get("frac_rank0"),
        "qk_rank0": qk.get("frac_rank0"), "qk_top10": qk.get("frac_top10"),
        "delta_loss": cspa.get("mean_delta_loss_ablation"), "clean_loss": cspa.get("mean_clean_loss"),
    }


# the paper's run (upstream-app.md §3-4): what `report` compares an artifact folder's settings with
PAPER_RUN = {
    "model": ("gpt2-small", lambda a, h: a.manifest["model"].get("model_name")),
    "head": ("10.7", lambda a, h: h),
    "dataset": ("stas/openwebtext-10k", lambda a, h: a.manifest["dataset"].get("name")),
    "seed": (6, lambda a, h: a.manifest["dataset"].get("seed")),
    "n_seqs": (500, lambda a, h: a.n_sequences),
    "seq_len": (1000, lambda a, h: a.seq_len),
    "n_mean (μ from the first n analysed sequences)": (100, lambda a, h: a.hyperparameters.get("n_mean")),
    "K_u": (0.05, lambda a, h: a.hyperparameters.get("cspa_k_u")),
    "K_s": (1, lambda a, h: a.hyperparameters.get("cspa_k_s")),
    "negative components only": (True, lambda a, h: a.hyperparameters.get("cspa_negative_only")),
    "CSPA exclusions": ("paper", lambda a, h: a.hyperparameters.get("cspa_exclusions", "extended")),
    "forward dtype": ("float32", lambda a, h: a.hyperparameters.get("dtype")),
    "data selection": ("paper's rule (np.random seed, curly quotes, longer than seq_len)",
                       lambda a, h: "paper's rule (np.random seed, curly quotes, longer than seq_len)"
                       if "np.random" in str(a.manifest["dataset"].get("selection", "")) else "older rule"),
}


def differences(arts, head=None) -> list[tuple[str, object, object]]:
    """(setting, the paper's value, this run's value) for every setting that differs from the paper's run."""
    head_name = head or arts.manifest["heads"][0]
    out = []
    for name, (paper, get) in PAPER_RUN.items():
        value = get(arts, head_name)
        if value != paper:
            out.append((name, paper, value))
    return out


def rows(arts, head=None) -> list[tuple[str, float, float | None]]:
    got = measured(arts, head)
    return [(label, paper, got.get(key)) for label, (key, paper) in PAPER.items()]


def format_report(arts, head=None) -> str:
    model = arts.manifest["model"]
    head_name = head or arts.manifest["heads"][0]
    lines = [f"Model {model['model_name']}, head {head_name}, {arts.n_sequences} x {arts.seq_len} tokens of "
             f"{arts.manifest['dataset']['name']}"]
    if model.get("synthetic"):
        lines.append("NOTE: this is a SYNTHETIC model (offline); its numbers are not comparable to the paper's. "
                     "Run with --model gpt2-small where the Hub is reachable to reproduce them.")
    lines.append(f"{'quantity':52s} {'paper (GPT-2 10.7)':>18s} {'measured':>10s}")
    for label, paper, value in rows(arts, head):
        fmt = (lambda x: f"{100 * x:.2f}%") if paper < 1 and "loss" not in label.lower() else (lambda x: f"{x:.4f}")
        lines.append(f"{label:52s} {fmt(paper):>18s} {fmt(value) if value is not None else 'n/a':>10s}")
    diff = differences(arts, head)
    if diff:
        lines.append("Settings that differ from the paper's run (so the numbers are not one to one):")
        lines += [f"  {name}: paper {paper!r}, this run {value!r}" for name, paper, value in diff]
    else:
        lines.append("Every setting is the paper's.")
    return "\n".join(lines)
