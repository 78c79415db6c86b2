"""Hostile artifact folders, CLI values and API arguments: clean errors, bounded time, nothing read outside the
folder, nothing tampered shown. Each numbered test is one defect of the hardening issue (failed before, passes now);
the fuzz tests mutate valid manifests and shard bytes at random."""

from __future__ import annotations

import contextlib
import html
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from precompute import ArtifactError, InvalidInputError
from precompute.schema import MANIFEST
from precompute.store.manifest import read_manifest
from precompute.store.reader import open_artifacts
from precompute.store.verify import verify

from .conftest import SMALL_RUN, write_text_dataset
from .factories import run_cli

TIER = "model"  # this file's test tier (tests/conftest.py); a test marked otherwise is in that tier

ROOT = Path(__file__).resolve().parents[1]


def _cli(*args, timeout=120):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "precompute", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _edit_manifest(folder: Path, change) -> None:
    m = json.loads((folder / MANIFEST).read_text())
    change(m)
    (folder / MANIFEST).write_text(json.dumps(m))


def _entry(folder: Path, rel: str) -> dict:
    from precompute.store.manifest import file_entry

    return file_entry(folder, rel)


# ---------------------------------------------------------------- 1. duplicate heads


def test_duplicate_heads_are_refused_and_misaligned_shards_fail_verify(toy_artifacts, tmp_path):
    from precompute import RunConfig

    r = _cli(
        "run",
        "--model",
        "toy",
        "--dataset",
        "synthetic",
        "--n-seqs",
        "4",
        "--seq-len",
        "32",
        "--shard-size",
        "2",
        "--heads",
        "1.2,1.2",
        "--out",
        str(tmp_path / "x"),
    )
    assert r.returncode == 2 and "twice" in r.stderr and "Traceback" not in r.stderr
    with pytest.raises(InvalidInputError, match="twice"):
        RunConfig(model="toy", heads=((1, 2), (1, 2))).validate()
    # a shard whose per-head data has more rows than its tokens (what duplicate heads wrote) fails verify even
    # when its checksum is updated to match
    import torch
    from safetensors.torch import load_file, save_file

    c = _copy(toy_artifacts, tmp_path / "c")
    shard = c / "shards" / "shard_00000.safetensors"
    tensors = load_file(shard)
    tensors["1.2/loss"] = torch.cat([tensors["1.2/loss"]] * 2)
    save_file(tensors, shard)
    _edit_manifest(
        c,
        lambda m: m["files"].__setitem__("shards/shard_00000.safetensors", _entry(c, "shards/shard_00000.safetensors")),
    )
    assert any("rows" in p and "1.2/loss" in p for p in verify(c))


# ---------------------------------------------------------------- 2. paths out of the folder, bounded time


@pytest.mark.parametrize(
    "rel", ["../../../../dev/zero", "/root/.ssh/id_rsa", "/etc/passwd", "shards/../../x", "tokenizer/../../etc/passwd"]
)
def test_manifest_paths_outside_the_folder_are_refused_without_reading(toy_artifacts, tmp_path, rel):
    c = _copy(toy_artifacts, tmp_path / "c")
    _edit_manifest(c, lambda m: m["files"].__setitem__(rel, {"sha256": "0" * 64, "bytes": 0}))
    problems = verify(c)
    assert len(problems) == 1 and "not a path of the artifact layout" in problems[0]
    assert "missing" not in problems[0] and "sha256" not in problems[0]  # says nothing about the outside file


def test_fifo_and_device_symlinks_never_block(toy_artifacts, tmp_path):
    c = _copy(toy_artifacts, tmp_path / "c")
    fifo = c / "shards" / "shard_00000.safetensors"
    fifo.unlink()
    os.mkfifo(fifo)
    link = c / "shards" / "shard_00001.safetensors"
    link.unlink()
    link.symlink_to("/dev/zero")
    r = _cli("verify", str(c), timeout=60)  # a hang would raise TimeoutExpired
    assert r.returncode == 1
    assert "shard_00000.safetensors: not a regular file" in r.stderr
    assert "shard_00001.safetensors: points outside the artifact folder" in r.stderr
    arts = open_artifacts(c)
    for i in (0, 8):
        with pytest.raises(ArtifactError):
            arts.sequence(i)


# ---------------------------------------------------------------- 3. structurally bad manifests

BAD_MANIFESTS = {
    "n_sequences_text": (lambda m: m["counts"].__setitem__("n_sequences", "abc"), "counts.n_sequences"),
    "shard_size_zero": (lambda m: m["counts"].__setitem__("shard_size", 0), "counts.shard_size"),
    "heads_empty": (lambda m: m.__setitem__("heads", []), "heads"),
    "heads_number": (lambda m: m.__setitem__("heads", 12), "heads"),
    "counts_missing": (lambda m: m.pop("counts"), "counts"),
    "summary_text": (lambda m: m.__setitem__("summary", "x"), "summary"),
    "summary_value_text": (lambda m: m["summary"]["1.2"]["cspa"].__setitem__("explained_kl", "x"), "summary.1.2"),
    "files_list": (lambda m: m.__setitem__("files", []), "files"),
    "files_null_entry": (lambda m: m["files"].__setitem__("semantic.safetensors", None), "files"),
    "schema_true": (lambda m: m.__setitem__("schema_version", True), "schema version"),
    "n_shards_inconsistent": (lambda m: m["counts"].__setitem__("n_shards", 99), "counts.n_shards"),
    "k_u_negative": (lambda m: m["hyperparameters"].__setitem__("cspa_k_u", -1), "cspa_k_u"),
    "groups_one_head": (lambda m: m.__setitem__("groups", {"1.2": {}}), "groups"),
    "groups_bad_readout": (
        lambda m: m.__setitem__("groups", {"1.2+1.0": {"readouts": {"1.2": "<b>x</b>"}}}),
        "groups.1.2+1.0.readouts",
    ),
    "readouts_unknown": (
        lambda m: m["hyperparameters"].__setitem__("readouts", {"1.2": {"used": "magic", "why": ""}}),
        "hyperparameters.readouts",
    ),
}


@pytest.mark.parametrize("name", sorted(BAD_MANIFESTS))
def test_bad_manifest_is_named_by_verify_reader_and_app(toy_artifacts, tmp_path, name):
    change, key = BAD_MANIFESTS[name]
    c = _copy(toy_artifacts, tmp_path / "c")
    _edit_manifest(c, change)
    problems = verify(c)
    assert len(problems) == 1 and key in problems[0], problems
    with pytest.raises(ArtifactError, match=re.escape(key)):
        open_artifacts(c)


@pytest.mark.parametrize(
    ("text", "what"),
    [
        ('{"schema_version": 1, "counts": {"n_sequences": NaN}}', "not valid JSON"),
        ("[" * 200_000 + "]" * 200_000, "nested too deeply"),
        ("\xff\xfe", "not valid JSON"),
    ],
)
def test_unparseable_manifests(toy_artifacts, tmp_path, text, what):
    c = _copy(toy_artifacts, tmp_path / "c")
    (c / MANIFEST).write_bytes(text.encode("utf-8", "surrogateescape") if text != "\xff\xfe" else b"\xff\xfe")
    assert what in verify(c)[0]


def test_manifest_that_is_a_directory(toy_artifacts, tmp_path):
    c = _copy(toy_artifacts, tmp_path / "c")
    (c / MANIFEST).unlink()
    (c / MANIFEST).mkdir()
    assert "not a regular file" in verify(c)[0]


def test_bad_manifest_in_the_app_is_a_message(toy_artifacts, tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    c = _copy(toy_artifacts, tmp_path / "c")
    _edit_manifest(c, lambda m: m["counts"].__setitem__("shard_size", 0))
    monkeypatch.setenv("CSE_ARTIFACTS", str(c))
    at = AppTest.from_file(str(ROOT / "app" / "Home.py"), default_timeout=60).run()
    assert not at.exception
    assert any("counts.shard_size" in e.value.replace("\\", "") for e in at.error)


# ---------------------------------------------------------------- 4, 8, 9. CLI values


@pytest.mark.fast
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--cspa-k-s", "100000"], "--cspa-k-s 100000 is above the limit"),
        (["--cspa-k-u", "inf"], "finite"),
        (["--cspa-k-u", "1e400"], "finite"),
        (["--cspa-k-u", "nan"], "finite"),
        (["--heads", ","], "names no head"),
        (["--heads", "1.2,"], "empty entry"),
        (["--n-mean", "50", "--n-seqs", "10"], "--n-mean 50 is above --n-seqs"),
        (["--k", "5000"], "above the limit"),
    ],
)
def test_numeric_flags_are_bounded(tmp_path, capsys, args, message):
    code, _, err = run_cli(
        capsys,
        "run",
        "--model",
        "toy",
        "--dataset",
        "synthetic",
        "--seq-len",
        "32",
        "--n-seqs",
        "10",
        "--n-mean",
        "5",
        *args,
        "--out",
        str(tmp_path / "o"),
    )
    assert code == 2 and message in err, err[-500:]


@pytest.mark.fast
def test_a_small_first_run_takes_the_mean_over_all_its_sequences(tmp_path):
    """No --n-mean: the paper's 100, or every sequence when there are fewer; recorded and named by report."""
    from precompute import RunConfig

    assert (
        RunConfig().n_mean == 100 and RunConfig(n_seqs=16).n_mean == 16 and RunConfig(n_seqs=16, n_mean=4).n_mean == 4
    )
    out = tmp_path / "o"
    args = ("--model", "toy", "--dataset", "synthetic", "--n-seqs", "16", "--seq-len", "32", "--out", str(out))
    r = _cli("run", *args)
    assert r.returncode == 0, r.stderr[-800:]
    arts = open_artifacts(out)
    assert arts.hyperparameters["n_mean"] == 16 and arts.mean_count().tolist() == [16] * 32
    r = _cli("report", str(out))
    assert r.returncode == 0 and "n_mean (μ from the first n analysed sequences): paper 100, this run 16" in r.stdout


# ---------------------------------------------------------------- 5. tokenizer


def test_missing_or_corrupt_tokenizer_is_an_artifact_error(toy_artifacts, tmp_path):
    a = _copy(toy_artifacts, tmp_path / "a")
    (a / "tokenizer" / "tokenizer.json").unlink()
    with pytest.raises(ArtifactError, match="tokenizer/tokenizer.json is missing"):
        _ = open_artifacts(a).tokenizer
    b = _copy(toy_artifacts, tmp_path / "b")
    (b / "tokenizer" / "tokenizer.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="tokenizer"):
        _ = open_artifacts(b).tokenizer
    c = _copy(toy_artifacts, tmp_path / "c")
    (c / "tokenizer" / "added_tokens.json").write_text("{}")  # unlisted file
    with pytest.raises(ArtifactError, match="does not list"):
        _ = open_artifacts(c).tokenizer


def test_browse_with_a_corrupt_tokenizer_shows_a_message(toy_artifacts, tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    c = _copy(toy_artifacts, tmp_path / "c")
    (c / "tokenizer" / "tokenizer.json").write_text("{not json")
    monkeypatch.setenv("CSE_ARTIFACTS", str(c))
    at = AppTest.from_file(str(ROOT / "app" / "Home.py"), default_timeout=60).run()
    at.switch_page("views/browse.py").run()
    assert not at.exception
    assert any("sha256" in e.value or "tokenizer" in e.value for e in at.error)


# ---------------------------------------------------------------- 6, 12. output folders


@pytest.mark.fast
def test_empty_out_is_refused_and_nothing_is_deleted(tmp_path):
    (tmp_path / MANIFEST).write_text("{}")
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "precompute",
            "run",
            "--model",
            "toy",
            "--dataset",
            "synthetic",
            "--n-seqs",
            "4",
            "--n-mean",
            "4",
            "--seq-len",
            "32",
            "--out=",
        ],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2 and "--out must name an output folder" in r.stderr
    assert (tmp_path / MANIFEST).read_text() == "{}"


def test_existing_run_needs_resume_or_overwrite_and_stale_shards_go(toy, tmp_path):
    from precompute import RunConfig, run

    data = write_text_dataset(tmp_path)
    out = tmp_path / "out"
    cfg = dict(SMALL_RUN, dataset=str(data), out=str(out))
    run(RunConfig(**cfg), loaded=toy, log=lambda *_: None)
    assert len(list((out / "shards").iterdir())) == 3
    with pytest.raises(InvalidInputError, match="--resume .* --overwrite"):
        run(RunConfig(**{**cfg, "n_seqs": 12}), loaded=toy, log=lambda *_: None)
    run(RunConfig(**{**cfg, "n_seqs": 12}, overwrite=True), loaded=toy, log=lambda *_: None)
    assert sorted(p.name for p in (out / "shards").iterdir()) == ["shard_00000.safetensors", "shard_00001.safetensors"]
    assert sorted(r for r in read_manifest(out)["files"] if r.startswith("shards/")) == [
        "shards/shard_00000.safetensors",
        "shards/shard_00001.safetensors",
    ]
    (out / "shards" / "shard_00007.safetensors").write_bytes(b"stale")
    run(RunConfig(**{**cfg, "n_seqs": 12}, resume=True), loaded=toy, log=lambda *_: None)
    assert not (out / "shards" / "shard_00007.safetensors").exists() and verify(out) == []


# ---------------------------------------------------------------- 7. URL parameters as literal text


def _tags(markdown_source: str) -> set[str]:
    from markdown_it import MarkdownIt

    rendered = MarkdownIt("commonmark").enable(["table", "strikethrough"]).render(markdown_source)
    return set(re.findall(r"<([a-z0-9]+)", rendered))


def test_url_parameters_are_shown_as_text(toy_artifacts, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("CSE_ARTIFACTS", str(toy_artifacts))
    at = AppTest.from_file(str(ROOT / "app" / "Home.py"), default_timeout=60).run()
    at.query_params["head"] = "[click me](http://evil.example) ![x](http://evil.example/pixel.png) <b>x</b>"
    at.query_params["seq"] = "**bold** :red[x]"
    at.switch_page("views/browse.py").run()
    assert not at.exception
    warnings = [w.value for w in at.warning if "Ignored the link" in w.value]
    assert any("click me" in w for w in warnings) and any("bold" in w for w in warnings)
    for w in warnings:
        assert _tags(w) <= {"p"}, w
        assert "\\[" in w or "[" not in w


@pytest.mark.fast
@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=80))
@example("[x](http://127.0.0.1:9/evil) and http://127.0.0.1:9/evil")
@example("visit www.evil.example or HTTPS://EVIL.EXAMPLE/x?y=1")
@example("write to someone@evil.example, mailto:x@y.example, xmpp:z@w.example")
@example("'  ' is two spaces, '   ' three")
def test_literal_renders_any_text_as_itself(text):
    from app.render.text import NBSP, WORD_JOINER, literal

    source = literal(text)
    assert _tags(source) <= {"p"}
    from markdown_it import MarkdownIt

    rendered = MarkdownIt("commonmark").render(source)
    shown = html.unescape(re.sub(r"</?p>\n?", "", rendered))
    plain = shown.replace(WORD_JOINER, "").replace(NBSP, " ")
    # exactly the text, on one line: line breaks become one space, the ends are trimmed, and a run of spaces keeps
    # its length (two spaces are not shown as one)
    one_line = re.sub(r"[\r\n\t\f\v\x85\u2028\u2029]+", " ", text.replace("\x00", "\ufffd")).strip()
    assert plain == one_line.replace(NBSP, " ")
    # nothing GFM would auto-link is left in the shown text: a scheme, "www." or "@" is broken by a word joiner
    assert not re.search(r"(?i)\b(https?|ftp|mailto|xmpp):|\bwww\.|@[^\u2060]", shown)


# every page's link parameters (app/state/url.py's restore calls), set all at once to one hostile value
PAGE_PARAMS = {
    "views/browse.py": (
        "head",
        "seq",
        "pos",
        "tab",
        *(f"browse_{c}" for c in ("effect", "ln", "metric", "extreme", "nl")),
    ),
    "views/live.py": ("head", "prompt", "answer", "set"),
    "views/circuits.py": ("head", "token", "focus"),
    "views/semantic.py": ("head", "token"),
    "views/cspa.py": ("head", "set"),
    "views/pairs.py": ("head", "prompts"),
    "views/survey.py": ("x", "y", "colour", "survey", "head"),
}
MARKUP_ALLOWED = {"p", "strong", "em", "code", "ul", "ol", "li", "br", "pre", "h1", "h2", "h3", "h4"}
AUTOLINKABLE = re.compile(r"(?i)\b(https?|ftp|mailto|xmpp):|\bwww\.|@[^\u2060]")
HOSTILE = st.one_of(
    st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=1, max_size=60),
    st.sampled_from(["http://127.0.0.1:9/evil", "www.evil.example", "x@evil.example", "9" * 5000]),
    st.builds(
        lambda a, b: f"[{a}](http://{b}.example) ![i](http://{b}.example/p.png) <img src=x>",
        st.text(max_size=8),
        st.from_regex(r"[a-z]{1,8}", fullmatch=True),
    ),
)


@pytest.fixture
def app_env_with_survey(survey_env, monkeypatch):
    monkeypatch.setenv("CSE_ARTIFACTS", str(survey_env))
    return survey_env


@pytest.mark.parametrize("page", list(PAGE_PARAMS))
@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=HOSTILE)
@example(value="[x](http://127.0.0.1:9/evil) and http://127.0.0.1:9/evil www.evil.example")
@example(value="9" * 5000)
def test_hostile_links_make_no_markup_and_no_long_message_on_any_page(page, value, app_env_with_survey):
    """Random text, URLs, markdown links and images, and 5,000-character values in every parameter of every page:
    the page runs, every message is short, and no rendered text holds a link, an image or a tag made from them."""
    from markdown_it import MarkdownIt
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "app" / "Home.py"), default_timeout=120).run()
    at.query_params.clear()
    at.query_params.update({name: value for name in PAGE_PARAMS[page]})
    at.switch_page(page).run()
    assert not at.exception, at.exception
    md = MarkdownIt("commonmark").enable(["table", "strikethrough"])
    sources = [e.value for kind in ("markdown", "caption", "warning", "error", "info", "success") for e in at.get(kind)]
    for source in sources:
        source = str(source)
        if "cse-strip" in source or "<style>" in source:  # the app's own HTML (its text escaped: test_hardening)
            continue
        rendered = md.render(source)
        tags = set(re.findall(r"<([a-z0-9]+)", rendered))
        assert tags <= MARKUP_ALLOWED, (tags, source[:200])
        shown = html.unescape(re.sub(r"<[^>]+>", "", rendered))
        assert not AUTOLINKABLE.search(shown), shown[:200]
    for w in at.warning:
        assert len(w.value) < 400, w.value[:100]


# ---------------------------------------------------------------- 10, 11. the Python API


def test_lone_surrogate_and_head_none(toy, toy_artifacts):
    import torch

    from precompute import analyze
    from precompute.live import LiveAnalyzer

    live = LiveAnalyzer.for_artifacts(toy, open_artifacts(toy_artifacts))
    res = live.analyze("The kanosa \ud800 of the teri", (1, 2))
    assert int(res.record["tokens"].shape[0]) > 3
    with pytest.raises(InvalidInputError, match="head must be a"):
        live.analyze("The kanosa", None)
    with pytest.raises(InvalidInputError, match="head must be a"):
        analyze(toy, torch.tensor([[0, 5, 6]]), None, torch.zeros(8, toy.model.cfg.d_model))


def test_typed_endoftext_is_text_not_bos(toy):
    from precompute.data.tokenization import encode

    tok = toy.tokenizer
    ids = encode(tok, "a <|endoftext|> b")
    assert ids[0] == tok.bos_token_id and tok.bos_token_id not in ids[1:]
    assert "<|endoftext|>" in tok.decode(ids[1:])


# ---------------------------------------------------------------- 13. the reader checks hashes


def test_reader_refuses_tampered_swapped_and_outside_data(toy_artifacts, tmp_path):
    a = _copy(toy_artifacts, tmp_path / "a")
    shard = a / "shards" / "shard_00001.safetensors"
    data = bytearray(shard.read_bytes())
    data[-10] ^= 0x40  # a data byte, not the header: safetensors still parses it
    shard.write_bytes(bytes(data))
    arts = open_artifacts(a)
    arts.sequence(0)  # shard 0 is fine
    with pytest.raises(ArtifactError, match="does not match the manifest"):
        arts.sequence(8)
    b = _copy(toy_artifacts, tmp_path / "b")
    s0, s1 = b / "shards" / "shard_00000.safetensors", b / "shards" / "shard_00001.safetensors"
    tmp = b / "shards" / "tmp"
    s0.rename(tmp), s1.rename(s0), tmp.rename(s1)
    with pytest.raises(ArtifactError):
        open_artifacts(b).sequence(0)
    c = _copy(toy_artifacts, tmp_path / "c")
    outside = tmp_path / "outside.safetensors"
    shutil.copy(c / "semantic.safetensors", outside)
    (c / "semantic.safetensors").unlink()
    (c / "semantic.safetensors").symlink_to(outside)
    with pytest.raises(ArtifactError, match="outside"):
        open_artifacts(c).semantic()


# ---------------------------------------------------------------- fuzzing


def _paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, prefix + (i,))


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=3),
    max_leaves=6,
)


@pytest.fixture(scope="module")
def fuzz_base(toy_artifacts, tmp_path_factory):
    return _copy(toy_artifacts, tmp_path_factory.mktemp("fuzz") / "base")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzz_manifest_mutations_give_clean_answers(fuzz_base, tmp_path, data):
    original = json.loads((fuzz_base / MANIFEST).read_text())
    m = json.loads(json.dumps(original))
    for _ in range(data.draw(st.integers(1, 3))):
        paths = [p for p in _paths(m) if p]
        path = data.draw(st.sampled_from(paths))
        parent = m
        for k in path[:-1]:
            parent = parent[k]
        if data.draw(st.booleans()) and isinstance(parent, dict):
            parent.pop(path[-1])
        else:
            parent[path[-1]] = data.draw(JSON_VALUES)
    folder = tmp_path / f"m{data.draw(st.integers(0, 10**9))}"
    shutil.copytree(fuzz_base, folder, dirs_exist_ok=True)
    (folder / MANIFEST).write_text(json.dumps(m))
    problems = verify(folder)  # never raises
    assert isinstance(problems, list) and all(isinstance(p, str) for p in problems)
    try:
        arts = open_artifacts(folder)
    except ArtifactError:
        return
    for i in (0, arts.n_sequences - 1):  # whatever opens reads consistent data or refuses
        with contextlib.suppress(ArtifactError, InvalidInputError):
            arts.sequence(i)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(offsets=st.lists(st.integers(0, 10**9), min_size=1, max_size=4), xor=st.integers(1, 255), seq=st.integers(0, 19))
def test_fuzz_shard_bytes_are_refused_or_untampered(fuzz_base, tmp_path_factory, offsets, xor, seq):
    import numpy as np

    folder = _copy(fuzz_base, tmp_path_factory.mktemp("bytes") / "c")
    expected = open_artifacts(fuzz_base).sequence(seq)
    shard = folder / "shards" / f"shard_{seq // 8:05d}.safetensors"
    data = bytearray(shard.read_bytes())
    for off in offsets:
        data[off % len(data)] ^= xor
    shard.write_bytes(bytes(data))
    try:
        got = open_artifacts(folder).sequence(seq)
    except ArtifactError:
        return
    assert got.keys() == expected.keys()
    for k in got:
        assert np.array_equal(got[k], expected[k], equal_nan=True)


# ---------------------------------------------------------------- the validator, case by case (mutation testing)


def _valid_manifest(toy_artifacts) -> dict:
    return json.loads((toy_artifacts / MANIFEST).read_text())


def test_a_valid_manifest_passes_and_boundaries_hold(toy_artifacts):
    from precompute.store.manifest import validate

    m = _valid_manifest(toy_artifacts)
    assert validate(m) is m
    m["counts"].update(n_sequences=1, shard_size=1, n_shards=1, seq_len=2)
    assert validate(m) is m  # the smallest run there can be
    m["counts"]["seq_len"] = 1 << 20
    assert validate(m) is m
    for key, value, message in (
        ("seq_len", 1, "counts.seq_len must be between 2 and 1048576, got 1"),
        ("seq_len", (1 << 20) + 1, "must be between 2 and 1048576"),
        ("n_sequences", 0, "counts.n_sequences must be between 1 and"),
        ("n_sequences", "abc", "counts.n_sequences must be a whole number, got 'abc'"),
    ):
        bad = json.loads(json.dumps(m))
        bad["counts"][key] = value
        with pytest.raises(ArtifactError, match=re.escape(message)):
            validate(bad)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: m["heads"].append(m["heads"][0]), "manifest.json: heads lists a head twice"),
        (
            lambda m: m.__setitem__("heads", ["x"]),
            "manifest.json: heads holds 'x', which is not of the form LAYER.HEAD",
        ),
        (lambda m: m.__setitem__("heads", []), 'heads must be a non-empty list of heads like "10.7"'),
        (lambda m: m["model"].pop("model_name"), "manifest.json: model.model_name must be a non-empty string"),
        (lambda m: m.pop("schema_version"), "manifest.json has no schema_version"),
        (lambda m: m.__setitem__("schema_version", "1"), "schema version '1'"),
        (lambda m: m.__setitem__("schema_version", 2), "reads version 1 only"),
        (lambda m: m["dataset"].pop("name"), "manifest.json: dataset.name must be a non-empty string"),
        (lambda m: m["counts"].__setitem__("n_shards", 2), "counts.n_shards is 2 but n_sequences / shard_size needs 3"),
        (
            lambda m: m["hyperparameters"].__setitem__("cspa_negative_only", 1),
            "cspa_negative_only must be true or false",
        ),
        (lambda m: m["hyperparameters"].__setitem__("effects", ["sideways"]), "effects must be a list drawn from"),
        (lambda m: m["hyperparameters"].__setitem__("cspa_exclusions", "mine"), "cspa_exclusions must be 'paper'"),
        (lambda m: m["hyperparameters"].__setitem__("k", 0), "hyperparameters.k must be between 1 and"),
        (lambda m: m["summary"]["1.2"].__setitem__("ov", 3), "summary.1.2.ov must be an object"),
        (lambda m: m["files"]["semantic.safetensors"].__setitem__("sha256", "0" * 63), "needs a sha256 of 64 hex"),
        (lambda m: m["files"]["semantic.safetensors"].__setitem__("tensors", {"x": [1.5]}), "must map tensor names"),
        (lambda m: m["files"]["semantic.safetensors"].__setitem__("bytes", -1), "bytes must be between 0 and"),
    ],
)
def test_each_rule_of_the_validator_with_its_message(toy_artifacts, change, message):
    from precompute.store.manifest import validate

    m = _valid_manifest(toy_artifacts)
    change(m)
    with pytest.raises(ArtifactError, match=re.escape(message)):
        validate(m)


@pytest.mark.fast
def test_not_an_object_is_not_a_manifest():
    from precompute.store.manifest import validate

    with pytest.raises(ArtifactError, match="must hold a JSON object"):
        validate([1, 2])


@pytest.mark.fast
@pytest.mark.parametrize(
    ("rel", "ok"),
    [
        ("shards/shard_00000.safetensors", True),
        ("mean/10.7.safetensors", True),
        ("tokenizer/tokenizer.json", True),
        ("semantic.safetensors", True),
        ("shards/shard_1.safetensors", False),
        ("tokenizer/../x", False),
        ("../x", False),
        ("/etc/passwd", False),
        ("tokenizer/.hidden", False),
        ("index/a.b.safetensors", False),
        (5, False),
        ("semantic.safetensors\n", False),
    ],
)
def test_allowed_paths(rel, ok):
    from precompute.store.manifest import valid_rel_path

    assert valid_rel_path(rel) is ok
