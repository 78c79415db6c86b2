"""A head survey on disk: ``survey.json`` (its manifest: model provenance, dataset, settings, the reason for every
NaN column, the file's hash) and ``survey.safetensors`` (one 1-D tensor per column of ``schema.SURVEY_COLUMNS``).

Reading validates the manifest, resolves the file inside the folder, checks its size and hash before parsing, and
checks every column's name, dtype and length: the same guarantees as a run folder (``manifest``, ``verify``).
"""

from __future__ import annotations

import json
import math
import os
import stat
from pathlib import Path

from .. import schema
from ..errors import ArtifactError
from .files import save_tensors, sha256_file, write_json
from .manifest import MAX_MANIFEST_BYTES, MissingFileError, file_entry, resolve_file
from .run_record import ModelRecord

MAX_HEADS = 1_000_000


def _fail(key: str, what: str) -> ArtifactError:
    return ArtifactError(f"{schema.SURVEY_MANIFEST}: {key} {what}")


def write_survey(df, out: str | Path, dataset: dict) -> Path:
    """Write ``df`` (from ``survey_heads``) into the folder ``out``; returns the folder."""
    import numpy as np
    import torch

    out = Path(out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for col in schema.SURVEY_COLUMNS:
        dtype = np.int32 if col in schema.SURVEY_INDEX else np.float32
        tensors[col] = torch.from_numpy(np.array(df[col].to_numpy(dtype=dtype), copy=True))
    save_tensors(out / schema.SURVEY_FILE, tensors, {"kind": schema.SURVEY_KIND})
    model = {k: v for k, v in df.attrs.get("model", {}).items()}
    manifest = {
        "schema_version": schema.SCHEMA_VERSION,
        "kind": schema.SURVEY_KIND,
        "model": model,
        "dataset": dataset,
        "settings": df.attrs.get("settings", {}),
        "reasons": df.attrs.get("reasons", {}),
        "n_heads_total": int(len(df)),
        "files": {schema.SURVEY_FILE: file_entry(out, schema.SURVEY_FILE)},
    }
    write_json(out / schema.SURVEY_MANIFEST, _finite(manifest))
    return out


def _finite(obj):
    """JSON without NaN/inf (written as null)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def validate_survey(manifest) -> dict:
    """The manifest, or ArtifactError naming the bad key."""
    if not isinstance(manifest, dict):
        raise ArtifactError(f"{schema.SURVEY_MANIFEST} must hold a JSON object")
    if manifest.get("kind") != schema.SURVEY_KIND:
        raise _fail("kind", f"must be {schema.SURVEY_KIND!r}")
    version = manifest.get("schema_version")
    if isinstance(version, bool) or version != schema.SCHEMA_VERSION:
        raise _fail("schema_version", f"is {version!r:.40}; this version reads {schema.SCHEMA_VERSION} only")
    model = manifest.get("model")
    if not isinstance(model, dict) or not isinstance(model.get("model_name"), str) or not model["model_name"]:
        raise _fail("model.model_name", "must be a non-empty string")
    for key in ("n_layers", "n_heads"):
        v = model.get(key)
        if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= MAX_HEADS:
            raise _fail(f"model.{key}", f"must be a positive whole number, got {v!r:.40}")
    n = manifest.get("n_heads_total")
    if n != model["n_layers"] * model["n_heads"]:
        raise _fail("n_heads_total", "must equal model.n_layers × model.n_heads")
    for key in ("dataset", "settings", "reasons"):
        if not isinstance(manifest.get(key), dict):
            raise _fail(key, "must be an object")
    if any(c not in schema.SURVEY_METRICS or not isinstance(r, str) for c, r in manifest["reasons"].items()):
        raise _fail("reasons", "must map survey metrics to text")
    files = manifest.get("files")
    if not isinstance(files, dict) or set(files) != {schema.SURVEY_FILE}:
        raise _fail("files", f"must list exactly {schema.SURVEY_FILE}")
    entry = files[schema.SURVEY_FILE]
    if (
        not isinstance(entry, dict)
        or not isinstance(entry.get("sha256"), str)
        or len(entry["sha256"]) != 64
        or isinstance(entry.get("bytes"), bool)
        or not isinstance(entry.get("bytes"), int)
        or not 0 < entry["bytes"] < 1 << 40
    ):
        raise _fail(f"files[{schema.SURVEY_FILE!r}]", "needs a sha256 and a size in bytes")
    return manifest


def read_survey_manifest(root) -> dict:
    root = Path(root)
    path = root / schema.SURVEY_MANIFEST
    if not path.exists():
        raise ArtifactError(f"{root} has no {schema.SURVEY_MANIFEST}: not a survey folder")
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_MANIFEST_BYTES:
            raise ArtifactError(f"{path} is not a regular file of at most {MAX_MANIFEST_BYTES} bytes")
        with open(path, "rb") as fh:
            manifest = json.loads(fh.read(MAX_MANIFEST_BYTES + 1).decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError, RecursionError) as err:
        raise ArtifactError(f"{path} is not valid JSON ({str(err)[:200]})") from None
    except OSError as err:
        raise ArtifactError(f"{path} cannot be read ({err.strerror or err})") from None
    return validate_survey(manifest)


def verify_survey(root) -> list[str]:
    """Problems of a survey folder (empty = it matches its manifest)."""
    try:
        read_survey(root)
    except ArtifactError as err:
        return [str(err)]
    return []


def read_survey(root):
    """(pandas DataFrame with a ``model`` column, manifest) of the survey folder ``root``; ArtifactError if
    anything does not match."""
    import numpy as np
    import pandas as pd
    from safetensors import safe_open

    root = Path(root)
    manifest = read_survey_manifest(root)
    want = manifest["files"][schema.SURVEY_FILE]
    try:
        path = resolve_file(root, schema.SURVEY_FILE)
    except MissingFileError:
        raise ArtifactError(f"{root}: {schema.SURVEY_FILE} is missing") from None
    size = path.stat().st_size
    if size != want["bytes"]:
        raise ArtifactError(f"{root}: {schema.SURVEY_FILE} is {size} bytes, the manifest says {want['bytes']}")
    if sha256_file(path, limit=size) != want["sha256"]:
        raise ArtifactError(f"{root}: {schema.SURVEY_FILE} does not match its sha256 (corrupted or modified)")
    n = manifest["n_heads_total"]
    cols = {}
    try:
        with safe_open(str(path), framework="numpy") as f:
            keys = set(f.keys())
            # surveys made before the newer columns were added lack them: NaN there, with the reason
            required = set(schema.SURVEY_COLUMNS) - set(schema.SURVEY_LATER_COLUMNS)
            if not required <= keys or not keys <= set(schema.SURVEY_COLUMNS):
                raise ArtifactError(
                    f"{root}: {schema.SURVEY_FILE} must hold exactly the columns {', '.join(schema.SURVEY_COLUMNS)}"
                )
            for col in schema.SURVEY_COLUMNS:
                if col not in keys:
                    cols[col] = np.full(n, np.nan, dtype=np.float32)
                    manifest.setdefault("reasons", {})[col] = "the survey was made before this column existed"
                    continue
                arr = f.get_tensor(col)
                kind = "int32" if col in schema.SURVEY_INDEX else "float32"
                if arr.ndim != 1 or arr.shape[0] != n or str(arr.dtype) != kind:
                    raise ArtifactError(f"{root}: column {col} must be {kind} [{n}]")
                cols[col] = arr
    except ArtifactError:
        raise
    except Exception as err:  # noqa: BLE001 - any parse failure is a bad file
        raise ArtifactError(
            f"{root}: {schema.SURVEY_FILE} is not a readable safetensors file ({str(err)[:200]})"
        ) from None
    df = pd.DataFrame(cols)
    df.insert(0, "model", ModelRecord.of(manifest["model"]).name)
    # what the ranking's read-out is decided from (``science.verdict.survey_readout``), as ``survey_heads`` sets it
    df.attrs.update(model=ModelRecord.of(manifest["model"]).stored, settings=manifest.get("settings", {}))
    return df, manifest


def find_surveys(base) -> list[Path]:
    """Survey folders directly inside ``base`` (and ``base`` itself), by name."""
    base = Path(base)
    if not base.is_dir():
        return []
    found = [p for p in sorted(base.iterdir()) if (p / schema.SURVEY_MANIFEST).is_file()]
    if (base / schema.SURVEY_MANIFEST).is_file():
        found.insert(0, base)
    return found
