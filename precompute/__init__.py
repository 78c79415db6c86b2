"""Copy Suppression Explorer: analysis and precompute package (no Streamlit here).

Notebook entry points::

    from precompute import load_model, analyze, mean_result
    lm = load_model("toy")                       # or "gpt2-small" (network/HF cache), "gpt2-small-random"
    mu = mean_result(lm, tokens, head=(1, 2))
    res = analyze(lm, tokens, head=(1, 2), mean_result=mu, k=10)
"""

from .analysis import EFFECTS, LN_MODES, VARIANTS, AnalysisResult, analyze, mean_result
from .cspa import CSPAConfig, summary_metrics
from .errors import ArtifactError, ExplorerError, HubUnavailableError, InvalidInputError, ModelUnavailableError
from .models import MODEL_NAMES, LoadedModel, load_model
from .artifacts import Artifacts, open_artifacts
from .circuits import circuit_ranks

__all__ = [
    "EFFECTS", "LN_MODES", "VARIANTS", "AnalysisResult", "analyze", "mean_result", "CSPAConfig",
    "summary_metrics", "ArtifactError", "ExplorerError", "HubUnavailableError", "InvalidInputError",
    "ModelUnavailableError", "MODEL_NAMES", "LoadedModel", "load_model", "Artifacts", "open_artifacts",
    "circuit_ranks",
]
