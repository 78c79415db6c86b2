"""Writing and hashing files: atomic writes (temporary file in the same folder, then rename), safetensors with the
project's metadata, JSON. Safetensors and JSON only: nothing is ever pickled."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

META_KEY = "cse"
READ_BLOCK = 1 << 20


def sha256_file(path: Path, limit: int | None = None) -> str:
    """The sha256 of a file; with ``limit``, at most that many bytes are read (a bound on hostile files)."""
    h = hashlib.sha256()
    left = limit
    with open(path, "rb") as fh:
        while left is None or left > 0:
            block = fh.read(READ_BLOCK if left is None else min(READ_BLOCK, left))
            if not block:
                break
            h.update(block)
            if left is not None:
                left -= len(block)
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


def save_tensors(path: Path, tensors: dict, metadata: dict[str, str] | None = None) -> None:
    """Write a safetensors file atomically.

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
        meta = json.loads((f.metadata() or {}).get(META_KEY, "{}"))
    except json.JSONDecodeError:
        return {}
    return meta if isinstance(meta, dict) else {}


def write_json(path: Path, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def copy_terms(provenance: dict, out: Path) -> list[str]:
    """Where the model's licence asks for its terms and notice to travel with anything derived from its weights
    (``provenance["gguf"]["terms_files"]``, e.g. the Gemma Terms of Use), copy them into ``out/licence/`` with a
    ``NOTICE.txt`` holding the licence's notice sentence; returns the paths written, relative to ``out``."""
    from .. import schema

    found = provenance.get("gguf")
    gguf: dict = found if isinstance(found, dict) else {}
    sources = [Path(p) for p in gguf.get("terms_files") or []]
    if not sources:
        return []
    folder = out / schema.TERMS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for src in sources:
        atomic_write_bytes(folder / src.name, src.read_bytes())
        written.append(f"{schema.TERMS_DIR}/{src.name}")
    notice = str(gguf.get("notice") or "")
    if notice:
        text = f"{notice}\n\nLicence: {gguf.get('licence', '')}\nThese files were derived from those weights.\n"
        atomic_write_bytes(folder / "NOTICE.txt", text.encode("utf-8"))
        written.append(f"{schema.TERMS_DIR}/NOTICE.txt")
    return written
