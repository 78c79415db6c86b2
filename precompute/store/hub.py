"""Pushing an artifact folder to a Hugging Face *dataset* repo, and pulling one back at a pinned revision."""

from __future__ import annotations

import json
import re
from pathlib import Path

from ..errors import HubUnavailableError, InvalidInputError
from .run_record import ModelRecord

REPO_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
REV_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,127}$")
HF_PATTERN = re.compile(
    r"^hf://(?P<repo>[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*)"
    r"(@(?P<rev>[A-Za-z0-9._/-]+))?$"
)


def validate_repo(repo: str, revision: str | None = None) -> None:
    if not REPO_RE.match(repo or "") or ".." in repo:
        raise InvalidInputError(f"Hub repo id {repo!r} is not of the form USER/NAME (letters, digits, . _ -)")
    if revision is not None and (not REV_RE.match(revision) or ".." in revision):
        raise InvalidInputError(f"Hub revision {revision!r} is not a valid branch, tag or commit")


def dataset_card(manifest: dict, repo: str) -> str:
    model = ModelRecord.of(manifest["model"])
    synthetic = " (SYNTHETIC model)" if model.synthetic else ""
    return f"""---
tags: [interpretability, copy-suppression, transformer-lens]
---
# Copy Suppression Explorer artifacts: {model.name}{synthetic}

Precomputed analyses of heads {", ".join(manifest["heads"])} for the Copy Suppression Explorer dashboard
(schema version {manifest["schema_version"]}; see `artifacts/README.md` in the project for every field).

* Model: `{model.name}`, weight processing {json.dumps(model.stored["weight_processing"])}
* Dataset: `{manifest["dataset"]["name"]}` (split `{manifest["dataset"]["split"]}`, seed {manifest["dataset"]["seed"]})
* Sequences: {manifest["counts"]["n_sequences"]} x {manifest["counts"]["seq_len"]} tokens (BOS included)

Load it with:

```python
from precompute import open_artifacts
arts = open_artifacts("hf://{repo}@<revision>")
arts.sequence(0)
```

Files are safetensors and JSON only.
"""


def push(folder: str | Path, repo: str, revision: str | None = None, private: bool = False) -> str:
    """Create or update dataset repo ``repo`` with the folder and a generated card; returns the commit id."""
    from huggingface_hub import HfApi

    from .manifest import read_manifest
    from .verify import verify

    validate_repo(repo, revision)
    folder = Path(folder)
    problems = verify(folder)
    if problems:
        raise InvalidInputError("refusing to push a folder that fails verification:\n  " + "\n  ".join(problems))
    manifest = read_manifest(folder)
    (folder / "README.md").write_text(dataset_card(manifest, repo))
    api = HfApi()
    try:
        api.create_repo(repo, repo_type="dataset", private=private, exist_ok=True)
        if revision:
            api.create_branch(repo, repo_type="dataset", branch=revision, exist_ok=True)
        info = api.upload_folder(
            folder_path=str(folder),
            repo_id=repo,
            repo_type="dataset",
            revision=revision,
            commit_message="Copy Suppression Explorer artifacts",
        )
    except Exception as err:  # noqa: BLE001 - network, auth and HTTP errors all end here
        raise HubUnavailableError(
            f"could not push to the Hub dataset {repo!r}: {type(err).__name__}: "
            f"{str(err)[:300]}. Check the network and `huggingface-cli login`."
        ) from None
    return getattr(info, "oid", None) or str(info)


def pull(source: str) -> Path:
    """Download ``hf://user/repo@revision`` into the HF cache (or find it there offline); returns the folder."""
    from huggingface_hub import snapshot_download

    m = HF_PATTERN.match(source)
    if not m:
        raise InvalidInputError(f"{source!r} is not of the form hf://USER/REPO@REVISION")
    repo, rev = m.group("repo"), m.group("rev")
    validate_repo(repo, rev)
    try:
        folder = Path(snapshot_download(repo_id=repo, repo_type="dataset", revision=rev))
    except Exception as err:  # noqa: BLE001
        raise HubUnavailableError(
            f"could not fetch artifacts {source!r} from the Hugging Face Hub or the local cache: "
            f"{type(err).__name__}. Connect to the network, or point the app at a local artifact folder."
        ) from None
    from .manifest import read_manifest

    read_manifest(folder)  # a downloaded folder is held to the same manifest rules as a local one
    return folder
