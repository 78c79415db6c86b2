"""Installing torch as users do: the CPU build by its local version, never PyPI's CUDA build by accident.

Stand-ins for the registries, made here as PEP 503 file indexes holding tiny fake ``torch`` wheels: "PyPI" has
``torch 2.13.0`` (on Linux, the CUDA build), "the PyTorch CPU index" has ``torch 2.13.0+cpu``. A fresh virtual
environment, with pip's own configuration switched off (this machine's find-links holds the real CPU wheel), runs
``deploy/install_torch.sh`` and the README's by-hand line against them."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

TIER = "fast"  # this file's test tier (tests/conftest.py); a test marked otherwise is in that tier

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "deploy" / "install_torch.sh"
CLOSED_PORT_INDEX = "http://127.0.0.1:9/simple"  # nothing listens on the discard port: refused at once


def _wheel(folder: Path, version: str) -> Path:
    """A pure-Python wheel named torch at ``version`` whose module says which build it is."""
    name = f"torch-{version}-py3-none-any.whl"
    info = f"torch-{version}.dist-info"
    files = {
        "torch/__init__.py": f"__version__ = {version!r}\n",
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: torch\nVersion: {version}\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(text.encode())}")
    record.append(f"{info}/RECORD,,")
    folder.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(folder / name, "w") as z:
        for path, text in files.items():
            z.writestr(path, text)
        z.writestr(f"{info}/RECORD", "\n".join(record) + "\n")
    return folder / name


def _index(root: Path, *versions: str) -> str:
    """A PEP 503 simple index (file://) with one fake torch wheel per version."""
    project = root / "torch"
    links = [_wheel(project, v).name for v in versions]
    (project / "index.html").write_text("".join(f'<a href="{n}">{n}</a><br>' for n in links))
    (root / "index.html").write_text('<a href="torch/">torch</a>')
    return root.as_uri()


@pytest.fixture(scope="module")
def registries(tmp_path_factory):
    base = tmp_path_factory.mktemp("registries")
    return {
        "pypi": _index(base / "pypi", "2.13.0"),  # PyPI's Linux torch: the CUDA build
        "pytorch_cpu": _index(base / "pytorch-cpu", "2.13.0+cpu"),
        "both": _index(base / "both", "2.13.0", "2.13.0+cpu"),
        "wheels": _wheel(base / "wheels", "2.13.0+cpu").parent,  # a wheel folder (find-links)
    }


@pytest.fixture
def venv(tmp_path):
    subprocess.run([sys.executable, "-m", "venv", str(tmp_path / "venv")], check=True)
    return tmp_path / "venv" / "bin" / "python"


def _env(**extra) -> dict:
    """The environment with pip's configuration off (no config files, no PIP_* variables)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_") and k != "CSE_TORCH_INDEX"}
    return {**env, "PIP_CONFIG_FILE": os.devnull, "PIP_DISABLE_PIP_VERSION_CHECK": "1", **extra}


def _installed(python: Path) -> str | None:
    r = subprocess.run(
        [str(python), "-c", "import importlib.metadata as m; print(m.version('torch'))"], capture_output=True, text=True
    )
    return r.stdout.strip() if r.returncode == 0 else None


def _install(python: Path, variant: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["sh", str(SCRIPT), str(python), variant], capture_output=True, text=True, env=_env(**env), timeout=300
    )


def test_the_pins_name_the_cpu_build_and_the_same_version_for_cuda():
    from deploy.docker_check import torch_pin

    cpu, gpu = torch_pin(ROOT / "constraints.txt"), torch_pin(ROOT / "constraints-gpu.txt")
    assert cpu == "2.13.0+cpu" and gpu == "2.13.0"
    assert "torch==2.13.0\n" in (ROOT / "requirements.txt").read_text()  # either build satisfies it


def test_cpu_install_takes_the_cpu_wheel_from_the_pytorch_index_when_pypi_has_cuda(venv, registries):
    r = _install(venv, "cpu", CSE_TORCH_INDEX=registries["both"])
    assert r.returncode == 0, r.stderr
    assert _installed(venv) == "2.13.0+cpu"
    # a second run sees it and touches nothing
    again = _install(venv, "cpu", CSE_TORCH_INDEX=CLOSED_PORT_INDEX)
    assert again.returncode == 0 and "installed already" in again.stdout


def test_cpu_install_takes_a_local_wheel_first_without_any_index(venv, registries):
    r = _install(venv, "cpu", CSE_TORCH_INDEX=CLOSED_PORT_INDEX, PIP_FIND_LINKS=str(registries["wheels"]))
    assert r.returncode == 0, r.stderr
    assert "from a wheel on this machine" in r.stdout and _installed(venv) == "2.13.0+cpu"


def test_cpu_install_without_a_source_stops_with_a_message_and_installs_nothing(venv, registries):
    r = _install(venv, "cpu", CSE_TORCH_INDEX=CLOSED_PORT_INDEX)
    assert r.returncode == 1
    assert "could not install torch==2.13.0+cpu" in r.stderr and CLOSED_PORT_INDEX in r.stderr
    assert "Nothing was installed from PyPI" in r.stderr and "make install TORCH=cuda" in r.stderr
    assert _installed(venv) is None
    # pip was asked once: no "Retrying" lines (the default would retry five times per lookup)
    assert "Retrying" not in r.stderr


def test_cpu_install_never_falls_back_to_pypis_cuda_build(venv, registries):
    """Only "PyPI" answers: the CUDA build is there, and it is not taken."""
    r = _install(venv, "cpu", CSE_TORCH_INDEX=registries["pypi"])
    assert r.returncode == 1 and _installed(venv) is None


def test_cuda_install_takes_pypis_build_and_not_a_local_cpu_wheel(venv, registries):
    """On a machine whose find-links holds the CPU wheel (this one), the GPU path still takes PyPI's build."""
    r = _install(venv, "cuda", CSE_TORCH_INDEX=registries["pypi"], PIP_FIND_LINKS=str(registries["wheels"]))
    assert r.returncode == 0, r.stderr
    assert _installed(venv) == "2.13.0"


def test_cuda_install_replaces_a_cpu_build_already_installed(venv, registries):
    """`make install TORCH=cuda` on a venv that has the CPU build: 2.13.0+cpu satisfies torch==2.13.0, and is
    replaced all the same."""
    assert _install(venv, "cpu", CSE_TORCH_INDEX=registries["pytorch_cpu"]).returncode == 0
    assert _installed(venv) == "2.13.0+cpu"
    r = _install(venv, "cuda", CSE_TORCH_INDEX=registries["pypi"])
    assert r.returncode == 0, r.stderr
    assert _installed(venv) == "2.13.0"


def test_a_bad_variant_is_refused(venv):
    r = _install(venv, "rocm")
    assert r.returncode == 2 and "cpu or cuda" in r.stderr


def _dry_run(python: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(python), "-m", "pip", "install", "--dry-run", "--quiet", "--report", "-", "--retries", "0", *args],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=300,
    )


def test_the_readmes_by_hand_line_resolves_the_cpu_wheel(venv, registries):
    """`pip install --extra-index-url <PyTorch CPU> -c constraints.txt …` with only "PyPI" and "the PyTorch CPU
    index": the resolver picks 2.13.0+cpu; without the PyTorch index it stops (it never takes the CUDA build)."""
    c = str(ROOT / "constraints.txt")
    r = _dry_run(
        venv,
        "--index-url",
        registries["pypi"],
        "--extra-index-url",
        registries["pytorch_cpu"],
        "-c",
        c,
        "torch==2.13.0",
    )
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert [(i["metadata"]["name"], i["metadata"]["version"]) for i in report["install"]] == [("torch", "2.13.0+cpu")]
    r = _dry_run(venv, "--index-url", registries["pypi"], "-c", c, "torch==2.13.0")
    assert r.returncode != 0 and "Cannot install torch==2.13.0" in r.stderr and not r.stdout.strip()


def test_streamlit_clouds_requirements_give_the_cpu_wheel():
    lines = [ln.split("#")[0].strip() for ln in (ROOT / "app" / "requirements.txt").read_text().splitlines()]
    lines = [ln for ln in lines if ln]
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in lines
    assert "torch==2.13.0+cpu" in lines and "-r ../requirements.txt" in lines


def test_the_makefile_installs_torch_first_with_the_script():
    make = (ROOT / "Makefile").read_text()
    recipe = make.split("$(VENV)/.installed:", 1)[1].split("\n\n", 1)[0]
    steps = [ln.strip() for ln in recipe.splitlines()[1:]]
    assert steps[1] == "sh deploy/install_torch.sh $(PY) $(TORCH)"
    assert steps[2] == "$(PIP) install -q -c $(CONSTRAINTS) -r requirements.txt"
    assert "constraints-gpu.txt" in make.split("CONSTRAINTS :=", 1)[1].splitlines()[0]
