"""How the app names a set's model and text to a reader (no Streamlit here: plain strings, shown as literal text)."""

from __future__ import annotations

from precompute import paper


def model_label(model: dict) -> str:
    """A reader's name for the artifacts' model: the spec, what it is, and "SYNTHETIC" where it is."""
    name = str(model.get("model_name", "?"))
    if model.get("synthetic"):
        return f"{name} (SYNTHETIC)"
    gguf = model.get("gguf")
    if isinstance(gguf, dict):
        return (
            f"{name} ({model.get('family', '?')} family, real trained weights from the GGUF file "
            f"{gguf.get('file', '?')}, {gguf.get('quantisation', '?')} dequantised to float32)"
        )
    return name


def dataset_label(dataset: dict) -> str:
    name = str(dataset.get("name", "?"))
    if name == "python-docs":
        return f"CPython's reference manual ({name}, from pydoc_data.topics; PSF licence)"
    if name == "synthetic":
        return "the project's synthetic language (synthetic)"
    return name


def what_these_are(arts) -> str | None:
    """For artifacts of a model that is neither GPT-2 small nor synthetic: one sentence saying which model, heads
    and text they are (literal text), else None."""
    m = arts.manifest
    model = m["model"]
    if model.get("synthetic") or model.get("model_name") == "gpt2-small":
        return None
    heads = ", ".join(m["heads"])
    not_owt = "" if m["dataset"].get("name") == paper.DATASET else ", not OpenWebText"
    return (
        f"These artifacts are {model_label(model)}, not GPT-2 small; head {heads}; text: "
        f"{dataset_label(m['dataset'])}{not_owt}; {arts.n_sequences} sequences of {arts.seq_len} tokens."
    )
