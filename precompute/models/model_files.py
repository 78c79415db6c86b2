"""A model file given as an argument, checked before any reader touches it: a regular file (not a directory, FIFO,
device or dangling link: nothing is opened before that is known), a GGUF header this project can read whose counts
fit the file (24 bytes read, so a header claiming 2^60 tensors never reaches an allocator), and its sha256."""

from __future__ import annotations

import hashlib
import os
import struct
from pathlib import Path

from ..errors import InvalidInputError, ModelUnavailableError


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


GGUF_HEADER = 24  # the magic "GGUF", the version (uint32), the tensor count and the metadata count (uint64 each)
GGUF_VERSIONS = (2, 3)
# the fewest bytes one metadata entry (key length, a 1-byte key, value type, a 1-byte value) and one tensor entry
# (name length, a 1-byte name, dimension count, one dimension, type, offset) can take: a header that claims more
# entries than the file can hold is damaged, and is refused before any reader allocates for them
MIN_KV_BYTES, MIN_TENSOR_BYTES = 14, 33


def regular_file(path: Path, what: str = "model file") -> os.stat_result:
    """``path``'s stat after checking it names a regular file: "does not exist" only where nothing exists; a
    directory, FIFO, device or socket, and a link to nothing, each said as such (nothing is opened)."""
    import stat

    if not os.path.lexists(path):
        raise InvalidInputError(f"{what} {path} does not exist")
    try:
        st = path.stat()
    except FileNotFoundError:
        raise InvalidInputError(f"{what} {path} is a broken link (it points to nothing)") from None
    except OSError as err:
        raise InvalidInputError(f"{what} {path} cannot be read: {err.strerror or err}") from None
    if not stat.S_ISREG(st.st_mode):
        kind = (
            "a directory"
            if stat.S_ISDIR(st.st_mode)
            else "a FIFO"
            if stat.S_ISFIFO(st.st_mode)
            else "a device"
            if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)
            else "not a plain file"
        )
        raise InvalidInputError(f"{what} {path} is not a regular file ({kind})")
    return st


def check_header(path: Path, size: int) -> None:
    """InvalidInputError unless ``path`` starts with a GGUF header this project can read and whose counts fit the
    file: 24 bytes read, whatever the file."""
    with open(path, "rb") as fh:
        head = fh.read(GGUF_HEADER)
    if head[:4] != b"GGUF":
        raise InvalidInputError(f"{path} is not a GGUF file (it does not start with the bytes 'GGUF')")
    if len(head) < GGUF_HEADER:
        raise InvalidInputError(f"{path} is damaged: it ends inside its header ({size} bytes)")
    version, n_tensors, n_kv = struct.unpack("<IQQ", head[4:])
    if version not in GGUF_VERSIONS:
        raise InvalidInputError(
            f"{path} is GGUF version {version}; this project reads versions {' and '.join(map(str, GGUF_VERSIONS))}"
        )
    if GGUF_HEADER + n_kv * MIN_KV_BYTES + n_tensors * MIN_TENSOR_BYTES > size:
        raise InvalidInputError(
            f"{path} is damaged: its header claims {n_tensors:,} tensors and {n_kv:,} metadata entries, more than "
            f"a file of {size:,} bytes can hold"
        )


def check_file(path: Path, want: str | None = None, install: str | None = None) -> str:
    """The file's sha256, after checking that it is a regular GGUF file with a sound header (and, given ``want``,
    the expected one)."""
    st = regular_file(path, "GGUF file")
    check_header(path, st.st_size)
    sha = file_sha256(path)
    if want is not None and sha != want:
        fix = f" Reinstall it with `{install}`." if install else ""
        raise ModelUnavailableError(
            f"{path} has sha256 {sha[:16]}…, not the expected {want[:16]}…: the file is "
            f"damaged or another version.{fix}"
        )
    return sha
