"""The lazy reader of a run folder (layout and fields: ``artifacts/README.md``, names: ``precompute.schema``).

Shards are opened on demand and only the requested slices are read. Every file is checked against the manifest's
sha256 the first time this process opens it (then remembered while the file is unchanged), so tampered or
swapped data is refused with a message, never shown. Returns numpy arrays and imports no torch: browsing needs no
deep-learning stack (``torch.from_numpy`` where a tensor is wanted).
"""

from __future__ import annotations

import threading
from functools import cached_property, lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from safetensors import safe_open

from .. import paper, schema
from ..errors import ArtifactError, InvalidInputError
from ..schema import head_key, parse_head
from ..summaries import HeadSummary, RankSummary
from .files import sha256_file
from .manifest import read_manifest, resolve_file
from .run_record import RunRecord

if TYPE_CHECKING:
    from .artifact_set import ArtifactSet

_VERIFIED: dict[tuple, str] = {}  # (real path, mtime_ns, size, inode) -> sha256 checked in this process
_VERIFIED_LOCK = threading.Lock()


def checked_path(root: Path, manifest: dict, rel: str, source: str) -> Path:
    """``rel`` inside ``root``, checked against the manifest (size, then sha256 once per process and file state)."""
    want = manifest["files"].get(rel)
    if want is None:
        raise ArtifactError(f"{rel} is not listed in the manifest of {source}; the run is incomplete or altered")
    path = resolve_file(root, rel)
    st = path.stat()
    if st.st_size != want["bytes"]:
        raise ArtifactError(
            f"{rel} in {source} has {st.st_size} bytes, the manifest says {want['bytes']}: it is "
            "corrupt or was modified. Run `python -m precompute verify`"
        )
    key = (str(path), st.st_mtime_ns, st.st_size, st.st_ino)
    with _VERIFIED_LOCK:
        known = _VERIFIED.get(key) == want["sha256"]
    if not known:
        if sha256_file(path, limit=st.st_size) != want["sha256"]:
            raise ArtifactError(
                f"{rel} in {source} does not match the manifest's sha256: it is corrupt or was "
                "modified, so it is not shown. Run `python -m precompute verify`"
            )
        with _VERIFIED_LOCK:
            _VERIFIED[key] = want["sha256"]
    return path


class Artifacts:
    """Lazy reader of one artifact folder."""

    def __init__(self, root: str | Path, source: str | None = None):
        self.root = Path(root)
        self.source = source or str(self.root)
        self.manifest = read_manifest(self.root)
        self.heads = [parse_head(h) for h in self.manifest["heads"]]
        counts = self.manifest["counts"]
        self.n_sequences = counts["n_sequences"]
        self.seq_len = counts["seq_len"]
        self.shard_size = counts["shard_size"]
        self.n_shards = counts["n_shards"]
        self._tokenizer = None

    # -- helpers
    def _head(self, head) -> tuple[int, int]:
        if head is None:
            return self.heads[0]
        try:
            head = parse_head(head) if isinstance(head, str) else tuple(int(x) for x in head)
        except (TypeError, ValueError):
            raise InvalidInputError(f"head {head!r:.40} is not of the form LAYER.HEAD") from None
        if head not in self.heads:
            raise InvalidInputError(
                f"head {head_key(head)} is not in these artifacts; available: "
                f"{', '.join(head_key(h) for h in self.heads)}"
            )
        return head

    def _locate(self, i) -> tuple[int, int]:
        """(shard, row) of sequence ``i``, or InvalidInputError for a bad index."""
        if not isinstance(i, (int, np.integer)) or isinstance(i, bool) or not (0 <= i < self.n_sequences):
            raise InvalidInputError(f"sequence index {i!r} is out of range: 0 to {self.n_sequences - 1}")
        return divmod(int(i), self.shard_size)

    def open_file(self, rel: str):
        """An open (numpy) safetensors handle of a checked file of the folder."""
        path = checked_path(self.root, self.manifest, rel, self.source)
        try:
            return _open_cached(str(path), path.stat().st_mtime_ns)
        except Exception as err:  # noqa: BLE001
            raise ArtifactError(
                f"{rel} in {self.source} cannot be read ({str(err)[:200]}); it may be corrupt"
            ) from None

    def _read(self, rel: str, what):
        f = self.open_file(rel)
        try:
            return what(f)
        except Exception as err:  # noqa: BLE001 - a file changed or damaged under us
            raise ArtifactError(
                f"{rel} in {self.source} cannot be read ({str(err)[:200]}); run `python -m precompute verify`"
            ) from None

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            self._tokenizer = self._load_tokenizer()
        return self._tokenizer

    def _load_tokenizer(self):
        prefix = schema.TOKENIZER_DIR + "/"
        listed = sorted(rel for rel in self.manifest["files"] if rel.startswith(prefix))
        if prefix + "tokenizer.json" not in listed:
            raise ArtifactError(
                f"{self.source} has no tokenizer/tokenizer.json in its manifest; re-run the "
                "precompute to include the tokenizer"
            )
        for rel in listed:
            checked_path(self.root, self.manifest, rel, self.source)
        folder = self.root / schema.TOKENIZER_DIR
        extra = sorted(p.name for p in folder.iterdir() if prefix + p.name not in listed)
        if extra:
            raise ArtifactError(
                f"{self.source}: tokenizer/ holds files the manifest does not list ({extra[0]}); "
                "remove them or run `python -m precompute verify`"
            )
        try:
            from transformers import PreTrainedTokenizerFast

            return PreTrainedTokenizerFast.from_pretrained(str(folder))
        except Exception as err:  # noqa: BLE001 - a damaged tokenizer must not surface as a traceback
            raise ArtifactError(
                f"the tokenizer in {self.source} cannot be loaded ({type(err).__name__}); it may "
                "be corrupt. Run `python -m precompute verify`"
            ) from None

    @cached_property
    def record(self) -> RunRecord:
        """The run's record, typed (``run_record.RunRecord``): model, heads, settings, summaries."""
        return RunRecord.of(self.manifest)

    @property
    def model_name(self) -> str:
        return self.record.model.name

    @property
    def hyperparameters(self) -> dict:
        return self.manifest["hyperparameters"]

    # -- public API
    def sequence(self, i: int, head=None) -> dict[str, np.ndarray]:
        """All stored fields of sequence ``i`` for ``head`` (default: the first head), plus ``tokens``."""
        prefix = schema.tensor_name(self._head(head), "")
        shard, row = self._locate(i)

        def read(f):
            out = {schema.TOKENS: f.get_slice(schema.TOKENS)[row]}
            for name in f.keys():
                if name.startswith(prefix):
                    out[name[len(prefix) :]] = f.get_slice(name)[row]
            return out

        return self._read(schema.shard_path(shard), read)

    def tokens(self, i: int) -> np.ndarray:
        """Only the token ids of sequence ``i`` (cheaper than ``sequence`` when that is all you need)."""
        shard, row = self._locate(i)
        return self._read(schema.shard_path(shard), lambda f: f.get_slice(schema.TOKENS)[row])

    def field(self, name: str, head=None) -> np.ndarray:
        """One per-token field for every sequence (concatenated over shards), e.g. for the CSPA scatter."""
        tensor = name if name == schema.TOKENS else schema.tensor_name(self._head(head), name)
        return np.concatenate(
            [self._read(schema.shard_path(i), lambda f: f.get_tensor(tensor)) for i in range(self.n_shards)], 0
        )

    def _head_tensors(self, kind: str, head) -> dict[str, np.ndarray]:
        return self._read(schema.head_file(kind, self._head(head)), lambda f: {k: f.get_tensor(k) for k in f.keys()})

    def mean_result(self, head=None) -> np.ndarray:
        return self._head_tensors("mean", head)[schema.MEAN_RESULT]

    def mean_count(self, head=None) -> np.ndarray:
        return self._head_tensors("mean", head)[schema.MEAN_COUNT]

    def circuits(self, head=None) -> dict[str, np.ndarray]:
        return self._head_tensors("circuits", head)

    def index(self, head=None) -> dict[str, np.ndarray]:
        return self._head_tensors("index", head)

    def semantic(self) -> dict[str, np.ndarray]:
        return self._read(schema.SEMANTIC_FILE, lambda f: {k: f.get_tensor(k) for k in f.keys()})

    def summary(self, head=None) -> dict:
        """The head's summary as stored (plain JSON); :meth:`head_summary` reads its sections typed."""
        return self.manifest.get("summary", {}).get(head_key(self._head(head)), {})

    def head_summary(self, head=None) -> HeadSummary:
        """The head's summary with its typed sections (``summaries.HeadSummary``)."""
        return self.record.summaries.get(head_key(self._head(head))) or HeadSummary.of(None)

    def readout(self, head=None) -> tuple[str, str]:
        """(read-out, why) of ``head``: what "predicted" meant for its CSPA and prediction fields
        (``science.readout``); sets made before read-outs were recorded used the paper's logit lens."""
        got = self.hyperparameters.get("readouts", {}).get(head_key(self._head(head)))
        if isinstance(got, dict) and got.get("used") in schema.READOUTS:
            return str(got["used"]), str(got.get("why", ""))
        return "logit_lens", "made before read-outs were recorded: the paper's logit lens"

    def tuned_lens_tensors(self) -> tuple[dict, dict, dict] | None:
        """(tensors, quality, settings) of the run's tuned lens as stored, or None for sets made without one;
        ``science.tuned_lens.stored_lens`` turns them into a ``TunedLens`` (the files never know the science)."""
        if schema.TUNED_LENS_FILE not in self.manifest.get("files", {}):
            return None
        meta = dict(self.hyperparameters.get("tuned_lens", {}))
        quality = meta.pop("quality", {})
        tensors = self._read(schema.TUNED_LENS_FILE, lambda f: {k: f.get_tensor(k) for k in f.keys()})
        return tensors, quality, meta

    def lens_quality(self) -> dict[int, dict]:
        """The tuned lens's held-out quality per layer (tuned and logit lens), {} for sets made without one."""
        q = self.hyperparameters.get("tuned_lens", {}).get("quality", {})
        return {int(k): v for k, v in q.items() if str(k).isdigit()}

    def groups(self) -> dict[str, dict]:
        """Sets of heads measured together (``science.joint``, ``--groups``): {"24.4+23.3": summary}."""
        return dict(self.manifest.get("groups", {}))

    def qk_at_distances(self, head=None) -> dict[int, RankSummary]:
        """On a rotary model, the QK rank summaries at the stated query-key distances, by distance ({} else)."""
        return self.head_summary(head).qk_at()

    def paper_figures(self, head=None) -> dict[str, float | None]:
        """This run's value of each of the paper's figures (``paper.FIGURES``, by key, each read from where its
        ``source`` says), None where not stored."""
        s = self.head_summary(head)
        return {f.key: s.value(f.source) for f in paper.FIGURES}


def read_field(root: Path, n_shards: int, tensor: str) -> np.ndarray:
    """One stored tensor concatenated over the shards the precompute job has just written (no manifest yet)."""
    parts = []
    for i in range(n_shards):
        path = Path(root) / schema.shard_path(i)
        with safe_open(str(path), framework="numpy") as f:
            parts.append(f.get_tensor(tensor))
    return np.concatenate(parts, 0)


@lru_cache(maxsize=8)
def _open_cached(path: str, mtime_ns: int):
    return safe_open(path, framework="numpy")


def open_artifacts(source: str | Path) -> Artifacts:
    """Open a local artifact folder or ``hf://user/repo@revision`` (downloaded into the normal HF cache)."""
    text = str(source)
    if text.startswith("hf://"):
        from .hub import pull

        return Artifacts(pull(text), source=text)
    return Artifacts(Path(text).expanduser())


if TYPE_CHECKING:

    def _an_artifact_set(arts: Artifacts) -> ArtifactSet:  # mypy: Artifacts is what the live boundary reads
        return arts
