"""Artifact folders: atomic writing, the manifest, verification, and the lazy reader (schema: artifacts/README.md).

A run folder holds ``manifest.json`` (written last), ``shards/shard_NNNNN.safetensors``, ``mean/L.H.safetensors``,
``circuits/L.H.safetensors``, ``index/L.H.safetensors``, ``semantic.safetensors`` and ``tokenizer/``. Tensors
are safetensors only; metadata is JSON. Nothing is ever unpickled. The reader returns numpy arrays and does not
import torch, so browsing artifacts needs no deep-learning stack (``torch.from_numpy`` where one is needed).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from functools import lru_cache
from pathlib import Path

import numpy as np
from safetensors import safe_open

from .errors import ArtifactError, InvalidInputError

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"


def head_key(head: tuple[int, int]) -> str:
    return f"{head[0]}.{head[1]}"


def parse_head(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"\s*(\d+)\.(\d+)\s*", str(text))
    if not m:
        raise InvalidInputError(f"head {text!r} is not of the form LAYER.HEAD, e.g. 10.7")
    return int(m.group(1)), int(m.group(2))


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o644)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


META_KEY = "cse"


def save_tensors(path: Path, tensors: dict, metadata: dict[str, str] | None = None) -> None:
    """Write a safetensors file atomically (temporary file in the same folder, then rename).

    Metadata is stored as one JSON string under the key ``cse``: safetensors does not keep the order of several
    metadata keys, and byte-identical files (resume, distributed runs) need a fixed order.
    """
    from safetensors.torch import save

    meta = {META_KEY: json.dumps(metadata or {}, sort_keys=True)}
    data = save({k: v.contiguous() for k, v in tensors.items()}, metadata=meta)
    atomic_write_bytes(path, data)


def read_metadata(f) -> dict:
    """The metadata written by ``save_tensors`` from an open safetensors file."""
    try:
        return json.loads((f.metadata() or {}).get(META_KEY, "{}"))
    except json.JSONDecodeError:
        return {}


def write_json(path: Path, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def file_entry(root: Path, rel: str) -> dict:
    path = root / rel
    entry = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
    if rel.endswith(".safetensors"):
        with safe_open(str(path), framework="numpy") as f:
            entry["tensors"] = {k: list(f.get_slice(k).get_shape()) for k in f.keys()}
    return entry


def verify(root: str | Path) -> list[str]:
    """Problems found in an artifact folder (empty list = every file matches the manifest)."""
    root = Path(root)
    problems: list[str] = []
    try:
        manifest = read_manifest(root)
    except ArtifactError as err:
        return [str(err)]
    for rel, want in sorted(manifest.get("files", {}).items()):
        path = root / rel
        if not path.exists():
            problems.append(f"{rel}: missing")
            continue
        if path.stat().st_size != want.get("bytes"):
            problems.append(f"{rel}: size {path.stat().st_size} bytes, manifest says {want.get('bytes')}")
            continue
        if sha256_file(path) != want.get("sha256"):
            problems.append(f"{rel}: sha256 does not match the manifest (corrupted or modified)")
            continue
        if rel.endswith(".safetensors"):
            try:
                with safe_open(str(path), framework="numpy") as f:
                    shapes = {k: list(f.get_slice(k).get_shape()) for k in f.keys()}
            except Exception as err:  # noqa: BLE001 - any parse failure is a bad file
                problems.append(f"{rel}: not a readable safetensors file ({err})")
                continue
            if shapes != want.get("tensors"):
                problems.append(f"{rel}: tensor names or shapes differ from the manifest")
    return problems


def read_manifest(root: Path) -> dict:
    path = Path(root) / MANIFEST
    if not Path(root).exists():
        raise ArtifactError(f"artifact folder {root} does not exist")
    if not path.exists():
        raise ArtifactError(f"{root} has no {MANIFEST}: the run is incomplete (resume it with --resume) or this "
                            "is not an artifact folder")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ArtifactError(f"{path} is not valid JSON ({err})") from None
    if not isinstance(manifest, dict) or "schema_version" not in manifest:
        raise ArtifactError(f"{path} has no schema_version: not a Copy Suppression Explorer manifest")
    version = manifest["schema_version"]
    if version != SCHEMA_VERSION:
        raise ArtifactError(f"{path} has schema version {version!r}; this version of Copy Suppression Explorer "
                            f"reads version {SCHEMA_VERSION} only. Update the software or re-run the precompute.")
    return manifest


class Artifacts:
    """Lazy reader of one artifact folder. Shards are opened on demand; only requested slices are read."""

    def __init__(self, root: str | Path, source: str | None = None):
        self.root = Path(root)
        self.source = source or str(self.root)
        self.manifest = read_manifest(self.root)
        self.heads = [parse_head(h) for h in self.manifest["heads"]]
        counts = self.manifest["counts"]
        self.n_sequences = int(counts["n_sequences"])
        self.seq_len = int(counts["seq_len"])
        self.shard_size = int(counts["shard_size"])
        self._tokenizer = None

    # -- helpers
    def _head(self, head) -> tuple[int, int]:
        if head is None:
            return self.heads[0]
        head = parse_head(head) if isinstance(head, str) else tuple(head)
        if head not in self.heads:
            raise InvalidInputError(f"head {head_key(head)} is not in these artifacts; available: "
                                    f"{', '.join(head_key(h) for h in self.heads)}")
        return head

    def _locate(self, i) -> tuple[int, int]:
        """(shard, row) of sequence ``i``, or InvalidInputError for a bad index."""
        if not isinstance(i, int) or isinstance(i, bool) or not (0 <= i < self.n_sequences):
            raise InvalidInputError(f"sequence index {i!r} is out of range: 0 to {self.n_sequences - 1}")
        return divmod(i, self.shard_size)

    def _open(self, rel: str):
        path = self.root / rel
        if not path.exists():
            raise ArtifactError(f"{rel} is missing from {self.source}; run `python -m precompute verify`")
        try:
            return _open_cached(str(path), path.stat().st_mtime_ns)
        except ArtifactError:
            raise
        except Exception as err:  # noqa: BLE001
            raise ArtifactError(f"{rel} in {self.source} cannot be read ({err}); it may be corrupt") from None

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            from transformers import PreTrainedTokenizerFast

            self._tokenizer = PreTrainedTokenizerFast.from_pretrained(str(self.root / "tokenizer"))
        return self._tokenizer

    @property
    def model_name(self) -> str:
        return self.manifest["model"]["model_name"]

    # -- public API
    def sequence(self, i: int, head=None) -> dict[str, np.ndarray]:
        """All stored fields of sequence ``i`` for ``head`` (default: the first head), plus ``tokens``."""
        key = head_key(self._head(head))
        shard, row = self._locate(i)
        f = self._open(f"shards/shard_{shard:05d}.safetensors")
        prefix = key + "/"
        try:
            out = {"tokens": f.get_slice("tokens")[row]}
            for name in f.keys():
                if name.startswith(prefix):
                    out[name[len(prefix):]] = f.get_slice(name)[row]
        except Exception as err:  # noqa: BLE001 - a file changed or damaged under us
            raise ArtifactError(f"shard {shard} of {self.source} cannot be read ({err}); run "
                                "`python -m precompute verify`") from None
        return out

    def tokens(self, i: int) -> np.ndarray:
        """Only the token ids of sequence ``i`` (cheaper than ``sequence`` when that is all you need)."""
        shard, row = self._locate(i)
        try:
            return self._open(f"shards/shard_{shard:05d}.safetensors").get_slice("tokens")[row]
        except ArtifactError:
            raise
        except Exception as err:  # noqa: BLE001
            raise ArtifactError(f"shard {shard} of {self.source} cannot be read ({err})") from None

    def field(self, name: str, head=None) -> np.ndarray:
        """One per-token field for every sequence (concatenated over shards), e.g. for the CSPA scatter."""
        tensor = "tokens" if name == "tokens" else f"{head_key(self._head(head))}/{name}"
        try:
            return read_field(self.root, self.manifest["counts"]["n_shards"], tensor)
        except FileNotFoundError as err:
            raise ArtifactError(f"{err.filename} is missing from {self.source}; run `python -m precompute verify`"
                                ) from None
        except Exception as err:  # noqa: BLE001 - a damaged shard
            raise ArtifactError(f"field {name!r} of {self.source} cannot be read ({err}); it may be corrupt") from None

    def mean_result(self, head=None) -> np.ndarray:
        return self._open(f"mean/{head_key(self._head(head))}.safetensors").get_tensor("mean_result")

    def circuits(self, head=None) -> dict[str, np.ndarray]:
        f = self._open(f"circuits/{head_key(self._head(head))}.safetensors")
        return {k: f.get_tensor(k) for k in f.keys()}

    def index(self, head=None) -> dict[str, np.ndarray]:
        f = self._open(f"index/{head_key(self._head(head))}.safetensors")
        return {k: f.get_tensor(k) for k in f.keys()}

    def semantic(self) -> dict[str, np.ndarray]:
        f = self._open("semantic.safetensors")
        return {k: f.get_tensor(k) for k in f.keys()}

    def summary(self, head=None) -> dict:
        return self.manifest.get("summary", {}).get(head_key(self._head(head)), {})


def read_field(root: Path, n_shards: int, tensor: str) -> np.ndarray:
    """One stored tensor concatenated over every shard (needs no manifest: the precompute job uses it too)."""
    parts = []
    for i in range(n_shards):
        path = Path(root) / "shards" / f"shard_{i:05d}.safetensors"
        if not path.exists():
            raise FileNotFoundError(2, "missing", str(path.relative_to(root)))
        with safe_open(str(path), framework="numpy") as f:
            parts.append(f.get_tensor(tensor))
    return np.concatenate(parts, 0)


@lru_cache(maxsize=8)
def _open_cached(path: str, mtime_ns: int):
    return safe_open(path, framework="numpy")


HF_PATTERN = re.compile(r"^hf://(?P<repo>[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*)(@(?P<rev>[A-Za-z0-9._/-]+))?$")


def open_artifacts(source: str | Path) -> Artifacts:
    """Open a local artifact folder or ``hf://user/repo@revision`` (downloaded into the normal HF cache)."""
    text = str(source)
    if text.startswith("hf://"):
        from .hub import pull

        return Artifacts(pull(text), source=text)
    return Artifacts(Path(text).expanduser())
