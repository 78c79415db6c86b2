"""The manifest of a run folder: reading it safely, validating it in one place, and resolving the paths it names.

Every consumer (``verify``, the reader, ``push``/``pull``, the app) goes through :func:`read_manifest`, which
refuses anything that is not a well-formed manifest of this schema version with an :class:`ArtifactError` naming
the offending key. Paths in ``files`` must be relative, inside the folder, of the known layout, and regular files
(:func:`resolve_file`), so nothing outside the folder is ever read and nothing can block a read (FIFOs, devices).
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
from pathlib import Path

from .. import schema
from ..errors import ArtifactError
from .files import sha256_file
from .run_record import LEGACY_SETTINGS

MAX_MANIFEST_BYTES = 64 * 2**20
MAX_COUNT = 10**9
ALLOWED_PATH = re.compile(
    r"^(shards/shard_\d{5}\.safetensors|(mean|circuits|index)/\d{1,4}\.\d{1,4}\.safetensors|semantic\.safetensors"
    r"|survey\.safetensors|tuned_lens\.safetensors"
    r"|(tokenizer|" + schema.TERMS_DIR + r")/[A-Za-z0-9_][A-Za-z0-9._-]{0,99})$"
)
SHA256 = re.compile(r"^[0-9a-f]{64}$")


class MissingFileError(ArtifactError):
    """A file the manifest lists is not in the folder."""


def file_entry(root: Path, rel: str) -> dict:
    """The manifest entry of a file just written: sha256, bytes, and for safetensors the tensors' shapes."""
    from safetensors import safe_open

    path = root / rel
    entry = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
    if rel.endswith(".safetensors"):
        with safe_open(str(path), framework="numpy") as f:
            entry["tensors"] = {k: list(f.get_slice(k).get_shape()) for k in f.keys()}
    return entry


def _fail(key: str, what: str) -> ArtifactError:
    return ArtifactError(f"manifest.json: {key} {what}")


def _int(obj: dict, key: str, path: str, lo: int, hi: int = MAX_COUNT) -> int:
    value = obj.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(f"{path}.{key}", f"must be a whole number, got {value!r:.80}")
    if not lo <= value <= hi:
        raise _fail(f"{path}.{key}", f"must be between {lo} and {hi}, got {value}")
    return value


def _dict(obj: dict, key: str, path: str = "") -> dict:
    value = obj.get(key)
    if not isinstance(value, dict):
        raise _fail(
            f"{path}{key}",
            "is missing or not an object" if value is None else f"must be an object, got {type(value).__name__}",
        )
    return value


def _str(obj: dict, key: str, path: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value or len(value) > 10_000:
        raise _fail(f"{path}.{key}", f"must be a non-empty string, got {value!r:.80}")
    return value


def valid_rel_path(rel) -> bool:
    """A relative path of the artifact layout (no '..' can match: every name starts with a letter or digit)."""
    return isinstance(rel, str) and ALLOWED_PATH.fullmatch(rel) is not None


def validate(manifest) -> dict:
    """Check types, ranges, required keys and paths; return the manifest or raise ArtifactError naming the key."""
    if not isinstance(manifest, dict):
        raise ArtifactError("manifest.json must hold a JSON object: not a Copy Suppression Explorer manifest")
    version = manifest.get("schema_version")
    if version is None:
        raise ArtifactError("manifest.json has no schema_version: not a Copy Suppression Explorer manifest")
    if isinstance(version, bool) or version != schema.SCHEMA_VERSION or not isinstance(version, int):
        raise ArtifactError(
            f"manifest.json has schema version {version!r:.40}; this version of Copy Suppression "
            f"Explorer reads version {schema.SCHEMA_VERSION} only. Update the software or re-run "
            "the precompute."
        )
    model = _dict(manifest, "model")
    _str(model, "model_name", "model")
    heads = manifest.get("heads")
    if not isinstance(heads, list) or not heads:
        raise _fail("heads", f'must be a non-empty list of heads like "10.7", got {heads!r:.80}')
    for h in heads:
        if not isinstance(h, str) or not re.fullmatch(r"\d{1,4}\.\d{1,4}", h):
            raise _fail("heads", f"holds {h!r:.40}, which is not of the form LAYER.HEAD")
    if len(set(heads)) != len(heads):
        raise _fail("heads", "lists a head twice")
    dataset = _dict(manifest, "dataset")
    _str(dataset, "name", "dataset")
    counts = _dict(manifest, "counts")
    n = _int(counts, "n_sequences", "counts", 1)
    _int(counts, "seq_len", "counts", 2, 1 << 20)
    size = _int(counts, "shard_size", "counts", 1)
    n_shards = _int(counts, "n_shards", "counts", 1)
    if n_shards != math.ceil(n / size):
        raise _fail("counts.n_shards", f"is {n_shards} but n_sequences / shard_size needs {math.ceil(n / size)}")
    hp = _dict(manifest, "hyperparameters")
    for key in ("k", "k_attn", "cspa_k_s"):
        _int(hp, key, "hyperparameters", 1, 1 << 20)
    k_u = hp.get("cspa_k_u")
    if isinstance(k_u, bool) or not isinstance(k_u, (int, float)) or not math.isfinite(k_u) or k_u <= 0:
        raise _fail("hyperparameters.cspa_k_u", f"must be a positive number, got {k_u!r:.40}")
    if not isinstance(hp.get("cspa_negative_only"), bool):
        raise _fail("hyperparameters.cspa_negative_only", "must be true or false")
    if hp.get("cspa_exclusions", LEGACY_SETTINGS["cspa_exclusions"]) not in ("paper", "extended"):
        raise _fail("hyperparameters.cspa_exclusions", "must be 'paper' or 'extended'")
    for key, allowed in (("effects", schema.EFFECTS), ("ln_modes", schema.LN_MODES)):
        value = hp.get(key)
        if not isinstance(value, list) or not value or any(v not in allowed for v in value):
            raise _fail(f"hyperparameters.{key}", f"must be a list drawn from {', '.join(allowed)}")
    _check_summary(manifest.get("summary", {}))
    _check_groups(manifest.get("groups", {}))
    readouts = hp.get("readouts", {})
    if not isinstance(readouts, dict) or any(
        not isinstance(v, dict) or v.get("used") not in schema.READOUTS or not isinstance(v.get("why", ""), str)
        for v in readouts.values()
    ):
        raise _fail("hyperparameters.readouts", f"must map heads to {{used: one of {', '.join(schema.READOUTS)}, why}}")
    files = _dict(manifest, "files")
    for rel, entry in files.items():
        if not valid_rel_path(rel):
            raise _fail("files", f"names {rel!r:.120}, which is not a path of the artifact layout inside the folder")
        if not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str) or not SHA256.match(entry["sha256"]):
            raise _fail(f"files[{rel!r}]", "needs a sha256 of 64 hex digits")
        _int(entry, "bytes", f"files[{rel!r}]", 0, 1 << 50)
        tensors = entry.get("tensors")
        if tensors is not None and (
            not isinstance(tensors, dict)
            or any(
                not isinstance(s, list) or any(isinstance(d, bool) or not isinstance(d, int) for d in s)
                for s in tensors.values()
            )
        ):
            raise _fail(f"files[{rel!r}].tensors", "must map tensor names to shapes (lists of whole numbers)")
    return manifest


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _numbers(value) -> bool:
    return _is_number(value) or (isinstance(value, list) and all(_is_number(v) for v in value))


def _numbers_or_object(value) -> bool:
    """A number, a list of numbers, or an object of them (one level of nesting)."""
    return _numbers(value) or (
        isinstance(value, dict) and all(isinstance(k, str) and _numbers(v) for k, v in value.items())
    )


def _check_summary(summary) -> None:
    """summary: {head: {section: {key: number | list of numbers | {key: number | list of numbers}}}}, sections
    cspa / ov / qk / … (numbers only, at most one level of nesting below a section)."""
    if not isinstance(summary, dict):
        raise _fail("summary", "must be an object of per-head objects")
    for head, sections in summary.items():
        if not isinstance(sections, dict):
            raise _fail(f"summary.{head}", "must be an object")
        for name, values in sections.items():
            if not isinstance(values, dict):
                raise _fail(f"summary.{head}.{name}", "must be an object")
            for key, value in values.items():
                if not _numbers_or_object(value):
                    raise _fail(
                        f"summary.{head}.{name}.{key}",
                        f"must be a number, a list of numbers or an object of them, got {value!r:.40}",
                    )


def _check_groups(groups) -> None:
    """groups: {"L.H+L.H…": {key: number | list | object of numbers, "readouts": {head: read-out}}}."""
    if not isinstance(groups, dict):
        raise _fail("groups", "must be an object of per-group objects")
    for name, values in groups.items():
        if not isinstance(name, str) or not re.fullmatch(r"\d{1,4}\.\d{1,4}(\+\d{1,4}\.\d{1,4})+", name):
            raise _fail("groups", f"names {name!r:.40}, which is not of the form L.H+L.H")
        if not isinstance(values, dict):
            raise _fail(f"groups.{name}", "must be an object")
        for key, value in values.items():
            if key == "readouts":
                if not isinstance(value, dict) or any(v not in schema.READOUTS for v in value.values()):
                    raise _fail(f"groups.{name}.readouts", f"must map heads to one of {', '.join(schema.READOUTS)}")
                continue
            if not _numbers_or_object(value):
                raise _fail(f"groups.{name}.{key}", "must be a number, a list of numbers or an object of them")


def read_manifest(root) -> dict:
    """The validated manifest of the run folder ``root``, or ArtifactError with a message for the user."""
    root = Path(root)
    path = root / schema.MANIFEST
    if not root.is_dir():
        raise ArtifactError(f"artifact folder {root} does not exist")
    if not path.exists():
        raise ArtifactError(
            f"{root} has no {schema.MANIFEST}: the run is incomplete (resume it with --resume) or "
            "this is not an artifact folder"
        )
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            raise ArtifactError(f"{path} is not a regular file")
        if st.st_size > MAX_MANIFEST_BYTES:
            raise ArtifactError(f"{path} is {st.st_size} bytes, more than a manifest can be ({MAX_MANIFEST_BYTES})")
        with open(path, "rb") as fh:
            manifest = json.loads(fh.read(MAX_MANIFEST_BYTES + 1).decode("utf-8"), parse_constant=_no_constant)
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError) as err:
        raise ArtifactError(f"{path} is not valid JSON ({str(err)[:200]})") from None
    except RecursionError:
        raise ArtifactError(f"{path} is nested too deeply to be a manifest") from None
    except OSError as err:
        raise ArtifactError(f"{path} cannot be read ({err.strerror or err})") from None
    return validate(manifest)


def _no_constant(name: str):
    raise ValueError(f"{name} is not a valid JSON number")


def resolve_file(root: Path, rel: str) -> Path:
    """The path of ``rel`` inside ``root``: relative, of the layout, not leaving the folder (symlinks resolved),
    and a regular file; ArtifactError otherwise (FileNotFoundError-like message for a missing one)."""
    if not valid_rel_path(rel):
        raise ArtifactError(f"{rel!r:.120} is not a path of the artifact layout")
    base = Path(root).resolve()
    path = base / rel
    try:
        real = path.resolve(strict=True)
    except FileNotFoundError:
        raise MissingFileError(f"{rel} is missing") from None
    except (OSError, RuntimeError) as err:  # loops, permissions
        raise ArtifactError(f"{rel}: cannot be resolved ({err})") from None
    if not real.is_relative_to(base):
        raise ArtifactError(f"{rel}: points outside the artifact folder")
    if not stat.S_ISREG(os.stat(real).st_mode):
        raise ArtifactError(f"{rel}: not a regular file")
    return real
