"""Copy Suppression Explorer: analysis and precompute package (no Streamlit here).

Notebook entry points::

    from precompute import load_model, analyze, mean_result
    lm = load_model("toy")                       # or "gpt2-small" (network/HF cache), "gpt2-small-random"
    mu = mean_result(lm, tokens, head=(1, 2))
    res = analyze(lm, tokens, head=(1, 2), mean_result=mu, k=10)

Names are imported on first use, so reading artifacts (``precompute.artifacts``) needs neither torch nor
TransformerLens.
"""

from importlib import import_module

_EXPORTS = {
    "EFFECTS": "analysis", "LN_MODES": "analysis", "VARIANTS": "analysis", "AnalysisResult": "analysis",
    "analyze": "analysis", "mean_result": "analysis",
    "CSPAConfig": "cspa", "summary_metrics": "cspa",
    "ArtifactError": "errors", "ExplorerError": "errors", "HubUnavailableError": "errors",
    "InvalidInputError": "errors", "ModelUnavailableError": "errors",
    "MODEL_NAMES": "models", "LoadedModel": "models", "load_model": "models",
    "Artifacts": "artifacts", "open_artifacts": "artifacts",
    "circuit_ranks": "circuits",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'precompute' has no attribute {name!r}")


def __dir__():
    return __all__
