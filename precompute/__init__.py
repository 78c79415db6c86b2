"""Copy Suppression Explorer: analysis and precompute package (no Streamlit here).

Notebook entry points::

    from precompute import load_model, analyze, mean_result
    lm = load_model("toy")                       # or "gpt2-small" (network/HF cache), "gpt2-small-random"
    mu = mean_result(lm, tokens, head=(1, 2))
    res = analyze(lm, tokens, head=(1, 2), mean_result=mu, k=10)
    df = survey_heads(lm, tokens)                # every head: copy suppression, induction, ...

Layers, each importing only those above it in this list: ``errors`` and ``schema`` (the stored fields);
``data`` (text, tokenisation, function words); ``models`` (loading, weight processing, the toy model);
``science`` (analysis, CSPA, circuits, semantic neighbours); ``store`` (files, manifest, reader, Hub; needs
neither torch nor TransformerLens for reading); ``jobs`` (the precompute run, report, CLI) and ``live``.
Names are imported on first use, so ``import precompute`` is cheap.
"""

from importlib import import_module

_EXPORTS = {
    "EFFECTS": "schema",
    "LN_MODES": "schema",
    "VARIANTS": "schema",
    "AnalysisResult": "science.analysis",
    "analyze": "science.analysis",
    "mean_result": "science.analysis",
    "CSPAConfig": "science.cspa",
    "summary_metrics": "science.cspa",
    "circuit_ranks": "science.circuits",
    "survey_heads": "science.survey",
    "SurveySettings": "science.survey",
    "compare_prompts": "science.pairs",
    "self_repair": "science.self_repair",
    "ArtifactError": "errors",
    "ExplorerError": "errors",
    "HubUnavailableError": "errors",
    "InvalidInputError": "errors",
    "ModelUnavailableError": "errors",
    "MODEL_NAMES": "models.loading",
    "LoadedModel": "models.loading",
    "load_model": "models.loading",
    "Artifacts": "store.reader",
    "open_artifacts": "store.reader",
    "verify": "store.verify",
    "RunConfig": "jobs.config",
    "run": "jobs.pipeline",
    "LiveAnalyzer": "live",
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
