"""The precompute job end to end on the toy model: files, reader, export, verify, resume, distributed, CLI."""

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from precompute import ArtifactError, analyze
from precompute.schema import MANIFEST, SCHEMA_VERSION
from precompute.science.tuned_lens import stored_lens
from precompute.store.reader import open_artifacts
from precompute.store.record_arrays import dense_attention
from precompute.store.records import compact
from precompute.store.verify import verify

from .conftest import SMALL_RUN, write_text_dataset
from .factories import run_cli

TIER = "model"  # this file's test tier (tests/conftest.py); a test marked otherwise is in that tier

ROOT = Path(__file__).resolve().parents[1]


def _cli(*args, env_extra=None, timeout=600):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", **(env_extra or {})}
    return subprocess.run(
        [sys.executable, "-m", "precompute", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


def _run_args(data, out, **over):
    cfg = {**SMALL_RUN, **over}
    args = [
        "run",
        "--model",
        cfg["model"],
        "--heads",
        ",".join(f"{layer}.{h}" for layer, h in cfg["heads"]),
        "--dataset",
        str(data),
        "--n-seqs",
        str(cfg["n_seqs"]),
        "--seq-len",
        str(cfg["seq_len"]),
        "--batch-size",
        str(cfg["batch_size"]),
        "--shard-size",
        str(cfg["shard_size"]),
        "--n-mean",
        str(cfg["n_mean"]),
        "--k",
        str(cfg["k"]),
        "--seed",
        str(cfg["seed"]),
        "--out",
        str(out),
        "--device",
        "cpu",
    ]
    return args


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_folder_layout_and_manifest(toy_artifacts):
    m = json.loads((toy_artifacts / MANIFEST).read_text())
    assert m["schema_version"] == SCHEMA_VERSION
    assert m["model"]["model_name"] == "toy" and m["model"]["synthetic"] is True
    assert m["model"]["weight_processing"]["fold_ln"] is True
    assert m["heads"] == ["1.2"] and m["counts"] == {"n_sequences": 20, "seq_len": 48, "shard_size": 8, "n_shards": 3}
    assert m["hyperparameters"]["cspa"]["k_u"] == 0.05 and m["hyperparameters"]["seed"] == 1
    for rel in (
        "shards/shard_00000.safetensors",
        "shards/shard_00002.safetensors",
        "mean/1.2.safetensors",
        "circuits/1.2.safetensors",
        "index/1.2.safetensors",
        "semantic.safetensors",
        "tokenizer/tokenizer.json",
    ):
        assert rel in m["files"] and len(m["files"][rel]["sha256"]) == 64
    assert verify(toy_artifacts) == []
    summary = m["summary"]["1.2"]
    assert summary["ov"]["frac_top10"] > 0.8 and summary["qk"]["frac_top10"] > 0.9


def _VALUES_OF(name: str) -> str:
    """The stored values that order an id field."""
    if name.endswith("_topk_ids"):
        return name.replace("_topk_ids", "_topk_logprobs")
    if name.endswith("_ids"):
        return name[: -len("_ids")] + "_values"
    if name == "attn_topk_pos":
        return "attn_topk_weight"
    return "cspa_kept_score"


def test_reader_and_export_agree_with_analyze_on_stored_mean(toy, toy_artifacts):
    arts = open_artifacts(toy_artifacts)
    assert arts.n_sequences == 20 and arts.seq_len == 48
    mu = torch.from_numpy(arts.mean_result("1.2"))
    assert mu.shape[1] == 512 and mu.shape[0] >= 48
    for i in (0, 9, 19):
        rec = {k: torch.from_numpy(v) for k, v in arts.sequence(i).items()}
        tokens = rec["tokens"].long()[None]
        lens = stored_lens(arts)
        direct = compact(analyze(toy, tokens, (1, 2), mu, k=5, readout=arts.readout("1.2")[0], lens=lens))
        for name, stored in rec.items():
            if name == "tokens":
                continue
            live = direct[name][0]
            assert stored.dtype == live.dtype and stored.shape == live.shape, name
            if stored.dtype.is_floating_point:
                torch.testing.assert_close(stored.float(), live.float(), atol=2e-3, rtol=2e-3, msg=name)
            elif name.endswith("_ids") or name.endswith("_token") or name.endswith("_pos"):
                # an id may differ only where its value ties (within fp16) with a neighbour in the ranking
                values = rec[_VALUES_OF(name)].float()
                tie = torch.zeros_like(values, dtype=torch.bool)
                tie[..., 1:] |= (values[..., 1:] - values[..., :-1]).abs() < 2e-3
                tie[..., :-1] |= (values[..., 1:] - values[..., :-1]).abs() < 2e-3
                assert bool(((stored == live) | tie).all()), name
            else:
                assert torch.equal(stored, live), name
    out = _cli("export", str(toy_artifacts), "--seq", "9")
    assert out.returncode == 0, out.stderr
    exported = json.loads(out.stdout)
    rec = arts.sequence(9)
    assert exported["tokens"] == rec["tokens"].tolist()
    assert len(exported["token_strings"]) == 48
    assert exported["delta_loss_direct_frozen"] == pytest.approx(
        rec["delta_loss_direct_frozen"].astype("float64").tolist(), abs=1e-4
    )
    assert set(exported) >= {"loss", "kl_cspa", "dla_neg_ids", "lens_topk_ids", "cspa_kept_pos", "attn_topk_pos"}


def test_sparse_attention_round_trip(toy, toy_artifacts):
    arts = open_artifacts(toy_artifacts)
    rec = arts.sequence(4)
    tokens = torch.from_numpy(rec["tokens"]).long()[None]
    res = analyze(toy, tokens, (1, 2), torch.from_numpy(arts.mean_result()), k=5, cspa=None, effects=("direct",))
    dense = torch.from_numpy(dense_attention(rec))
    full = res.attention[0]
    # entries kept are exact (fp16), BOS column exact, the rest of each row is small
    kept = dense > 0
    torch.testing.assert_close(dense[kept], full[kept], atol=1e-3, rtol=1e-3)
    torch.testing.assert_close(dense[:, 0], full[:, 0], atol=1e-3, rtol=0)
    info = torch.from_numpy(dense_attention(rec, info_weighted=True))
    torch.testing.assert_close(info[kept], res.info_attention[0][kept], atol=2e-3, rtol=2e-3)


def test_index_points_at_the_largest_values(toy_artifacts):
    arts = open_artifacts(toy_artifacts)
    idx = arts.index()
    dl = torch.from_numpy(arts.field("delta_loss_direct_frozen")).float()
    assert float(idx["delta_loss_value"][0]) == pytest.approx(float(dl.max()), abs=1e-3)
    s, p = int(idx["delta_loss_seq"][0]), int(idx["delta_loss_pos"][0])
    assert float(dl[s, p]) == pytest.approx(float(dl.max()), abs=1e-3)
    assert float(idx["neg_delta_loss_value"][0]) == pytest.approx(float(dl.min()), abs=1e-3)
    values = idx["kl_value"]
    assert (values[:-1] >= values[1:]).all()


def test_cli_end_to_end_jsonl_resume_after_kill_is_identical(tmp_path):
    data = write_text_dataset(tmp_path, fmt="jsonl")
    clean = tmp_path / "clean"
    r = _cli(*_run_args(data, clean, n_seqs=24, shard_size=4))
    assert r.returncode == 0, r.stderr
    assert _cli("verify", str(clean)).returncode == 0
    # killed right after shards 0, 2 and 4 are written (a test-only hook): each time resume; end identical
    from precompute.jobs.faults import FAULT_ENV

    killed = tmp_path / "killed"
    for k in (0, 2, 4):
        r = _cli(
            *_run_args(data, killed, n_seqs=24, shard_size=4), "--resume", env_extra={FAULT_ENV: f"after_shard:{k}"}
        )
        assert r.returncode == -signal.SIGKILL and not (killed / MANIFEST).exists()
        assert len(list((killed / "shards").glob("shard_*.safetensors"))) == k + 1
    r = _cli(*_run_args(data, killed, n_seqs=24, shard_size=4), "--resume")
    assert r.returncode == 0, r.stderr
    assert _tree(killed) == _tree(clean)  # no temporary file is left behind either


def test_verify_catches_corruption(toy_artifacts, tmp_path):
    def copy():
        dst = tmp_path / f"c{len(list(tmp_path.iterdir()))}"
        shutil.copytree(toy_artifacts, dst)
        return dst

    a = copy()
    shard = a / "shards" / "shard_00001.safetensors"
    shard.write_bytes(shard.read_bytes()[:-100])
    assert any("shard_00001" in p and "size" in p for p in verify(a))
    b = copy()
    shard = b / "shards" / "shard_00000.safetensors"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x01
    shard.write_bytes(bytes(data))
    assert any("shard_00000" in p and "sha256" in p for p in verify(b))
    c = copy()
    (c / "circuits" / "1.2.safetensors").unlink()
    assert verify(c) == ["circuits/1.2.safetensors: missing"]
    d = copy()
    (d / MANIFEST).unlink()
    assert "no manifest.json" in verify(d)[0]
    r = _cli("verify", str(b))
    assert r.returncode == 1 and "shard_00000" in r.stderr
    e = copy()
    m = json.loads((e / MANIFEST).read_text())
    m["schema_version"] = SCHEMA_VERSION + 1
    (e / MANIFEST).write_text(json.dumps(m))
    with pytest.raises(ArtifactError, match="schema version 2"):
        open_artifacts(e)
    f = copy()
    (f / MANIFEST).write_text("{not json")
    with pytest.raises(ArtifactError, match="not valid JSON"):
        open_artifacts(f)


def test_two_processes_equal_one(tmp_path):
    data = write_text_dataset(tmp_path)
    one, two = tmp_path / "one", tmp_path / "two"
    r = _cli(*_run_args(data, one, n_seqs=16, shard_size=4))
    assert r.returncode == 0, r.stderr
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    args = _run_args(data, two, n_seqs=16, shard_size=4)
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--master_port",
            "29517",
            "-m",
            "precompute",
            *args,
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert _tree(two) == _tree(one)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--heads", "10.12"], "does not exist"),
        (["--heads", "1,2"], "LAYER.HEAD"),
        (["--n-seqs", "0"], "--n-seqs must be a positive integer"),
        (["--batch-size", "-3"], "--batch-size must be a positive integer"),
        (["--seq-len", "5000"], "above the model's context"),
        (["--dataset", "/nonexistent/docs.txt"], "does not exist"),
        (["--n-seqs", "5000"], "documents have more than"),
    ],
)
def test_cli_bad_arguments(tmp_path, capsys, args, message):
    data = write_text_dataset(tmp_path, n_docs=20)
    base = _run_args(data, tmp_path / "out")
    code, _, err = run_cli(capsys, *base, *args)
    assert code != 0
    assert message in err


def test_cli_malformed_jsonl_and_unwritable_out(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{oops\n')
    code, _, err = run_cli(capsys, *_run_args(bad, tmp_path / "out"))
    assert code == 2 and "line 2 is not valid JSON" in err
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, err = run_cli(capsys, *_run_args(write_text_dataset(tmp_path, n_docs=20), blocker / "sub"))
    assert code == 2 and "cannot write to the output folder" in err


def test_cli_offline_hub_dataset_is_explained(tmp_path):
    r = _cli(*_run_args("someone/some-dataset", tmp_path / "out"), env_extra={"HF_HOME": str(tmp_path / "hf")})
    assert r.returncode == 2
    assert "someone/some-dataset" in r.stderr and "--dataset PATH" in r.stderr and "Traceback" not in r.stderr


def test_bare_cli_prints_help(capsys):
    code, out, _ = run_cli(capsys)
    assert code == 0 and "run" in out and "verify" in out and "export" in out and "demo" in out


def test_bfloat16_forward_runs_and_stays_close(toy, tmp_path):
    """--dtype bfloat16 (meant for GPUs) works end to end; numbers stay near the float32 run."""
    from precompute import RunConfig, load_model, run

    data = write_text_dataset(tmp_path)
    cfg = dict(SMALL_RUN, dataset=str(data), n_seqs=8, shard_size=8, n_mean=8, effects=("direct",))
    run(RunConfig(out=str(tmp_path / "f32"), **cfg), loaded=toy, log=lambda *_: None)
    run(RunConfig(out=str(tmp_path / "bf16"), dtype="bfloat16", **cfg), loaded=load_model("toy"), log=lambda *_: None)
    a, b = open_artifacts(tmp_path / "f32"), open_artifacts(tmp_path / "bf16")
    assert b.manifest["hyperparameters"]["dtype"] == "bfloat16" and verify(tmp_path / "bf16") == []
    la, lb = a.field("loss").astype("float32"), b.field("loss").astype("float32")
    assert abs(la - lb).mean() < 0.05


def test_hub_dataset_with_a_loading_script_falls_back_to_the_parquet_conversion(monkeypatch):
    import datasets

    from precompute.data.sources import PARQUET_REVISION, load_documents

    calls = []

    def fake_load(name, split=None, revision=None):
        calls.append(revision)
        if revision is None:
            raise RuntimeError("Dataset scripts are no longer supported, but found openwebtext-10k.py")
        return [{"text": "first document"}, {"text": "second document"}]

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    assert load_documents("stas/openwebtext-10k") == ["first document", "second document"]
    assert calls == [None, PARQUET_REVISION]


def test_a_run_says_its_progress_and_each_finishing_step(toy, tmp_path, monkeypatch):
    """Progress lines with tokens done of all, tokens/s and the time left (one a batch here: the interval is 0), then
    one line per finishing step, so a long run never goes quiet."""
    import precompute.jobs.pipeline as pipeline
    from precompute.jobs.config import RunConfig
    from precompute.jobs.pipeline import run

    monkeypatch.setattr(pipeline, "PROGRESS_EVERY_S", 0.0)
    lines = []
    cfg = {**SMALL_RUN, "dataset": "synthetic", "n_seqs": 6, "batch_size": 2, "shard_size": 4, "n_mean": 4}
    run(RunConfig(out=str(tmp_path / "run"), device="cpu", **cfg), loaded=toy, log=lines.append)
    total = 6 * cfg["seq_len"]
    analysed = [line for line in lines if "analysed" in line and "tokens/s" in line]
    assert [line.split("analysed ")[1].split(" tokens")[0] for line in analysed[:3]] == [
        f"{n:,}/{total:,}" for n in (2 * cfg["seq_len"], 4 * cfg["seq_len"], total)
    ]
    assert "left" in analysed[0] and "left" not in analysed[2]
    steps = [line for line in lines if line.startswith("finishing: ")]
    head = f"{cfg['heads'][0][0]}.{cfg['heads'][0][1]}"
    assert steps[0] == f"finishing: head {head}: OV and QK circuits over the vocabulary…"
    assert any("the OV circuit on the run's text" in line for line in steps)
    assert "previous step" in steps[1] and steps[-1].startswith("finishing: done (last step")


def test_a_run_of_a_model_whose_licence_travels_opens_and_verifies(tmp_path):
    """A run of a model whose licence asks for its terms to travel (Gemma 3) lists licence/ files in its manifest;
    the set opens, verifies, and a tampered terms file is caught."""
    from precompute import load_model
    from precompute.jobs.config import RunConfig
    from precompute.jobs.pipeline import run

    terms = tmp_path / "TERMS.html"
    terms.write_text("<p>terms</p>")
    lm = load_model("toy")
    lm.provenance["gguf"] = {"terms_files": [str(terms)], "notice": "Provided under the terms.", "licence": "terms"}
    cfg = {**SMALL_RUN, "dataset": "synthetic", "n_seqs": 4, "batch_size": 2, "shard_size": 4, "n_mean": 4}
    out = run(RunConfig(out=str(tmp_path / "run"), device="cpu", **cfg), loaded=lm, log=lambda *_: None)
    manifest = json.loads((out / MANIFEST).read_text())
    assert {"licence/TERMS.html", "licence/NOTICE.txt"} <= set(manifest["files"])
    assert open_artifacts(out).n_sequences == 4
    assert verify(out) == []
    (out / "licence" / "TERMS.html").write_text("<p>other terms</p>")
    assert any("licence/TERMS.html" in p for p in verify(out))
