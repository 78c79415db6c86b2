"""``verify``: every file of a run folder against its manifest, in bounded time on any input.

Each file is resolved inside the folder (no ``..``, no symlink out, regular files only), its size is compared
with the manifest before any byte is hashed, and at most that many bytes are read.
"""

from __future__ import annotations

from pathlib import Path

from .. import schema
from ..errors import ArtifactError
from .files import sha256_file
from .manifest import MissingFileError, read_manifest, resolve_file


def check_file(root: Path, rel: str, want: dict) -> str | None:
    """The problem with one file, or None when it matches its manifest entry."""
    try:
        path = resolve_file(root, rel)
    except MissingFileError:
        return f"{rel}: missing"
    except ArtifactError as err:
        return str(err)
    size = path.stat().st_size
    if size != want["bytes"]:
        return f"{rel}: size {size} bytes, manifest says {want['bytes']}"
    if sha256_file(path, limit=size) != want["sha256"]:
        return f"{rel}: sha256 does not match the manifest (corrupted or modified)"
    if rel.endswith(".safetensors"):
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="numpy") as f:
                shapes = {k: list(f.get_slice(k).get_shape()) for k in f.keys()}
        except Exception as err:  # noqa: BLE001 - any parse failure is a bad file
            return f"{rel}: not a readable safetensors file ({str(err)[:200]})"
        if shapes != want.get("tensors"):
            return f"{rel}: tensor names or shapes differ from the manifest"
    return None


def verify(root: str | Path) -> list[str]:
    """Problems found in an artifact folder (empty list = every file matches the manifest)."""
    root = Path(root)
    if (root / schema.SURVEY_MANIFEST).exists() and not (root / schema.MANIFEST).exists():
        from .survey import verify_survey

        return verify_survey(root)
    try:
        manifest = read_manifest(root)
    except ArtifactError as err:
        return [str(err)]
    problems = [p for rel, want in sorted(manifest["files"].items()) if (p := check_file(root, rel, want))]
    problems += [
        f"{rel}: listed nowhere in the manifest's files"
        for rel in expected_files(manifest)
        if rel not in manifest["files"]
    ]
    return problems + shard_shape_problems(manifest)


def shard_shape_problems(manifest: dict) -> list[str]:
    """Shards whose tensors do not all hold the rows the counts say (e.g. misaligned per-head data)."""
    counts = manifest["counts"]
    out = []
    for i in range(counts["n_shards"]):
        rel = schema.shard_path(i)
        tensors = manifest["files"].get(rel, {}).get("tensors") or {}
        rows = min(counts["shard_size"], counts["n_sequences"] - i * counts["shard_size"])
        if tensors.get(schema.TOKENS) != [rows, counts["seq_len"]]:
            out.append(f"{rel}: tokens should have shape [{rows}, {counts['seq_len']}]")
        bad = sorted(name for name, shape in tensors.items() if not shape or shape[0] != rows)
        if bad:
            out.append(f"{rel}: {len(bad)} tensors do not have {rows} rows (e.g. {bad[0]})")
    return out


def expected_files(manifest: dict) -> list[str]:
    """The files every complete run folder holds, from its counts and heads."""
    heads = [schema.parse_head(h) for h in manifest["heads"]]
    out = [schema.shard_path(i) for i in range(manifest["counts"]["n_shards"])]
    out += [schema.head_file(kind, h) for h in heads for kind in ("mean", "circuits", "index")]
    return out + [schema.SEMANTIC_FILE]
