"""Where documents come from: the Hugging Face Hub, a local .txt / .jsonl file or folder, or the synthetic text.

* ``synthetic``: the project's own synthetic language (``synthetic``), for the toy model and offline demos.
* ``python-docs``: real English offline, the prose of CPython's reference manual (``python_docs``).
* a path: ``.txt`` files hold documents separated by blank lines; ``.jsonl`` files hold one JSON object per line
  with a ``"text"`` field; a folder means every such file in it, in sorted order.
* anything else: a Hub dataset name (default ``stas/openwebtext-10k``, split ``train``, the paper's data).
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import HubUnavailableError, InvalidInputError

PARQUET_REVISION = "refs/convert/parquet"


def _read_txt(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8", errors="replace")
    return [d.strip() for d in text.split("\n\n") if d.strip()]


def _read_jsonl(path: Path) -> list[str]:
    docs = []
    with path.open(encoding="utf-8", errors="replace") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                raise InvalidInputError(f"{path}: line {n} is not valid JSON ({err.msg})") from None
            if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
                raise InvalidInputError(f'{path}: line {n} has no string field "text"')
            docs.append(obj["text"])
    return docs


def _from_path(path: Path) -> list[str]:
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in (".txt", ".jsonl"))
        if not files:
            raise InvalidInputError(f"dataset folder {path} holds no .txt or .jsonl files")
        return [d for f in files for d in _from_path(f)]
    if path.suffix == ".jsonl":
        return _read_jsonl(path)
    if path.suffix == ".txt":
        return _read_txt(path)
    raise InvalidInputError(f"dataset file {path} must end in .txt or .jsonl")


def _from_hub(name: str, split: str) -> list[str]:
    try:
        import datasets
    except ImportError as err:  # pragma: no cover - installed with the project
        raise HubUnavailableError(f"the 'datasets' package is needed to read {name!r}: {err}") from None
    try:
        try:
            ds = datasets.load_dataset(name, split=split)
        except Exception as err:  # noqa: BLE001
            # datasets >= 4 no longer runs loading scripts (stas/openwebtext-10k has one); the Hub keeps an
            # automatic Parquet conversion of such datasets on the refs/convert/parquet branch.
            if "script" not in str(err).lower():
                raise
            ds = datasets.load_dataset(name, split=split, revision=PARQUET_REVISION)
    except Exception as err:  # noqa: BLE001 - datasets raises many types for "unreachable / not cached"
        raise HubUnavailableError(
            f"could not load the dataset {name!r} (split {split!r}) from the Hugging Face Hub or the local cache: "
            f"{type(err).__name__}: {str(err)[:200]}. To work offline, pass --dataset PATH (a .txt or .jsonl file "
            "or a folder of them), or --dataset synthetic, or copy an HF cache that holds it into HF_HOME."
        ) from None
    return [row["text"] for row in ds]


def load_documents(dataset: str, split: str = "train", n_synthetic: int = 2000) -> list[str]:
    """All documents of ``dataset`` in their stored order (shuffling is the caller's, with a seed)."""
    if dataset == "synthetic":
        from .synthetic import corpus

        return corpus(n_docs=n_synthetic, seed=0, min_sentences=20, max_sentences=60)
    if dataset == "python-docs":
        from .python_docs import documents

        return list(documents())
    path = Path(dataset)
    if path.exists():
        return _from_path(path)
    if dataset.startswith((".", "/", "~")) or dataset.endswith((".txt", ".jsonl")) or "/" not in dataset:
        raise InvalidInputError(f"dataset path {dataset!r} does not exist (and it is not a Hub 'owner/name')")
    return _from_hub(dataset, split)


def shuffled(docs: list[str], seed: int) -> list[str]:
    """The documents in the paper's seeded order: ``np.random.seed(seed); np.random.shuffle(docs)`` (numpy's legacy
    Mersenne Twister, the same on every platform)."""
    import numpy as np

    out = list(docs)
    np.random.RandomState(seed).shuffle(out)
    return out


def provenance(dataset: str) -> dict:
    """What is known about where ``dataset``'s text came from (recorded with every run and survey)."""
    if dataset == "synthetic":
        return {"source": "the project's synthetic language (precompute.data.synthetic), generated", "real_text": False}
    if dataset == "python-docs":
        from .python_docs import provenance as docs_provenance

        return {**docs_provenance(), "real_text": True}
    path = Path(dataset)
    if path.exists():
        return {"source": f"local {'folder' if path.is_dir() else 'file'} {path.resolve()}", "real_text": True}
    return {"source": f"Hugging Face Hub dataset {dataset}", "real_text": True}
