"""Every CLI subcommand and every `run` option, end to end, with its effect asserted."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from precompute import schema as F
from precompute.jobs.cli import main
from precompute.science.tuned_lens import stored_lens
from precompute.store.reader import open_artifacts

from .conftest import write_text_dataset

TIER = "model"  # this file's test tier (tests/conftest.py); a test marked otherwise is in that tier

BASE = [
    "--model",
    "toy",
    "--heads",
    "1.2",
    "--n-seqs",
    "6",
    "--n-mean",
    "6",
    "--seq-len",
    "32",
    "--batch-size",
    "3",
    "--shard-size",
    "3",
    "--k",
    "5",
    "--seed",
    "1",
    "--device",
    "cpu",
]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_text_dataset(tmp_path_factory.mktemp("cli-data"))


def _run(tmp_path: Path, data, *extra, name="out"):
    out = tmp_path / name
    assert main(["run", *BASE, "--dataset", str(data), "--out", str(out), *extra]) == 0
    return open_artifacts(out)


def test_run_options_take_effect(tmp_path, data):
    base = _run(tmp_path, data, name="base")
    hp = base.hyperparameters
    assert (hp["k"], hp["cspa_k_u"], hp["cspa_k_s"], hp["cspa_negative_only"], hp["dtype"]) == (
        5,
        0.05,
        1,
        True,
        "float32",
    )
    rec = base.sequence(0)
    assert rec[F.topk_ids(F.CLEAN)].shape == (32, 5) and rec[F.ATTN_TOPK_POS].shape == (32, 8)

    small = _run(
        tmp_path, data, "--k", "4", "--k-attn", "3", "--effects", "direct", "--ln-modes", "frozen", name="small"
    )
    rec = small.sequence(0)
    assert rec[F.topk_ids(F.CLEAN)].shape == (32, 4) and rec[F.ATTN_TOPK_POS].shape == (32, 3)
    assert F.kl("both_frozen") not in rec and F.kl("direct_unfrozen") not in rec and F.kl("direct_frozen") in rec

    count = _run(tmp_path, data, "--cspa-k-u", "1", name="count")
    assert count.hyperparameters["cspa_k_u"] == 1
    kept = count.field(F.CSPA_KEPT_TOKEN)
    # K_u = 1 distinct token per destination: every kept entry at a position holds the same token
    for row in kept.reshape(-1, kept.shape[-1]):
        assert len({int(t) for t in row if t >= 0}) <= 1

    signs = _run(tmp_path, data, "--cspa-both-signs", name="signs")
    assert (
        signs.hyperparameters["cspa_negative_only"] is False and signs.hyperparameters["cspa"]["negative_only"] is False
    )

    ks = _run(tmp_path, data, "--cspa-k-s", "3", name="ks")
    assert ks.hyperparameters["cspa_k_s"] == 3
    tokens, kept_tok, kept_pos = ks.field(F.TOKENS), ks.field(F.CSPA_KEPT_TOKEN), ks.field(F.CSPA_KEPT_POS)
    neighbours = [
        (b, q, j)
        for b in range(tokens.shape[0])
        for q in range(tokens.shape[1])
        for j in range(kept_tok.shape[-1])
        if kept_pos[b, q, j] >= 0 and kept_tok[b, q, j] != tokens[b, kept_pos[b, q, j]]
    ]
    assert neighbours  # with K_s > 1, semantic neighbours of a source are kept too

    ext = _run(tmp_path, data, "--cspa-exclusions", "extended", name="ext")
    from precompute.data.function_words import function_word_ids

    assert ext.hyperparameters["cspa"]["excluded_ids"] == function_word_ids(ext.tokenizer)

    half = _run(tmp_path, data, "--dtype", "float16", "--effects", "direct", "--device", "auto", name="half")
    assert half.hyperparameters["dtype"] == "float16"

    other_seed = _run(tmp_path, data, "--seed", "2", name="seed2")
    assert not np.array_equal(other_seed.field(F.TOKENS), base.field(F.TOKENS))


def test_both_signs_option_changes_cspa_on_a_random_model(tmp_path, data, tiny):
    """The planted toy head only ever suppresses, so both signs change nothing there; a random head also boosts."""
    from precompute.jobs.cli import build_parser, config_from_args
    from precompute.jobs.pipeline import run

    results = {}
    for name, extra in (("neg", []), ("both", ["--cspa-both-signs"])):
        args = build_parser().parse_args(
            ["run", *BASE, "--dataset", str(data), "--out", str(tmp_path / name), "--cspa-k-u", "1.0", *extra]
        )
        run(config_from_args(args), loaded=tiny, log=lambda *_: None)
        results[name] = open_artifacts(tmp_path / name).field(F.delta_loss(F.CSPA))
    assert not np.array_equal(results["neg"], results["both"])


def test_report_values_are_the_summary_and_the_summary_is_the_stored_fields(toy_artifacts, capsys):
    arts = open_artifacts(toy_artifacts)
    assert main(["report", str(toy_artifacts), "--head", "1.2"]) == 0
    out = capsys.readouterr().out
    s = arts.summary("1.2")
    kl_a, kl_c = arts.field(F.kl("direct_frozen")).astype(np.float64), arts.field(F.kl(F.CSPA)).astype(np.float64)
    by_hand = 1 - kl_c.mean() / kl_a.mean()
    assert abs(s["cspa"]["explained_kl"] - by_hand) < 1e-6
    line = next(x for x in out.splitlines() if x.startswith("CSPA effect explained (KL)"))
    assert line.split()[-1] == f"{100 * by_hand:.2f}%"
    ranks = arts.circuits("1.2")["ov_rank"]
    line = next(x for x in out.splitlines() if x.startswith("OV: token in its own 10 most suppressed"))
    assert line.split()[-1] == f"{100 * float((ranks < 10).mean()):.2f}%"
    loss_line = next(x for x in out.splitlines() if x.startswith("Clean loss"))
    assert loss_line.split()[-1] == f"{arts.field(F.LOSS).astype(np.float64).mean():.4f}"
    assert "SYNTHETIC" in out and "Settings that differ" in out


def test_export_head_and_schema(toy_artifacts, capsys):
    assert main(["export", str(toy_artifacts), "--seq", "3", "--head", "1.2"]) == 0
    exported = json.loads(capsys.readouterr().out)
    rec = open_artifacts(toy_artifacts).sequence(3, "1.2")
    assert exported["head"] == "1.2" and exported["sequence"] == 3
    assert exported[F.TOKENS] == rec[F.TOKENS].tolist()
    np.testing.assert_allclose(exported[F.LOSS], rec[F.LOSS].astype(np.float64), atol=1e-5)
    assert main(["schema"]) == 0
    assert capsys.readouterr().out.strip() == F.readme_table() + "\n\n" + F.survey_table()
    assert main(["export", str(toy_artifacts), "--seq", "3", "--head", "9.9"]) == 2


def test_push_and_pull_through_the_cli_with_a_hub_stub(toy_artifacts, tmp_path, monkeypatch, capsys):
    import shutil

    import huggingface_hub

    folder = tmp_path / "to-push"
    shutil.copytree(toy_artifacts, folder)
    uploads = {}

    class FakeApi:
        def create_repo(self, repo, **kw):
            uploads["repo"] = repo

        def create_branch(self, repo, **kw):
            uploads["branch"] = kw["branch"]

        def upload_folder(self, **kw):
            uploads["files"] = sorted(
                str(p.relative_to(kw["folder_path"])) for p in Path(kw["folder_path"]).rglob("*") if p.is_file()
            )
            return type("Info", (), {"oid": "abc123"})()

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    assert main(["push", str(folder), "--repo", "user/cse-toy", "--revision", "v1"]) == 0
    assert capsys.readouterr().out.strip() == "abc123"
    assert uploads["repo"] == "user/cse-toy" and uploads["branch"] == "v1"
    assert "manifest.json" in uploads["files"] and "README.md" in uploads["files"]
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda **kw: str(folder))
    arts = open_artifacts("hf://user/cse-toy@v1")
    assert arts.source == "hf://user/cse-toy@v1"
    assert arts.sequence(0)[F.TOKENS].tolist() == open_artifacts(toy_artifacts).sequence(0)[F.TOKENS].tolist()


def test_split_and_batch_size_options(tmp_path, data, monkeypatch):
    """--split reaches the Hub dataset loader; --batch-size changes how many sequences share a forward pass, not
    the stored numbers (beyond float summation order)."""
    import datasets

    from precompute.jobs.cli import build_parser, config_from_args

    seen = {}

    def fake_load(name, split=None, revision=None):
        seen.update(name=name, split=split)
        return [{"text": t} for t in Path(data).read_text().split("\n\n") if t.strip()]

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    args = build_parser().parse_args(
        ["run", *BASE, "--dataset", "someone/texts", "--split", "validation", "--out", str(tmp_path / "hub")]
    )
    assert config_from_args(args).split == "validation"
    assert (
        main(["run", *BASE, "--dataset", "someone/texts", "--split", "validation", "--out", str(tmp_path / "hub")]) == 0
    )
    assert seen == {"name": "someone/texts", "split": "validation"}
    assert open_artifacts(tmp_path / "hub").manifest["dataset"]["split"] == "validation"
    one = _run(tmp_path, data, "--batch-size", "1", name="b1")
    three = _run(tmp_path, data, "--batch-size", "3", name="b3")
    assert one.hyperparameters["batch_size"] == 1 and three.hyperparameters["batch_size"] == 3
    for name in (F.LOSS, F.delta_loss("direct_frozen"), F.kl(F.CSPA)):
        np.testing.assert_allclose(
            one.field(name).astype(np.float64), three.field(name).astype(np.float64), atol=2e-3, err_msg=name
        )


def test_readout_and_group_options_take_effect(tmp_path, data, capsys):
    auto = _run(tmp_path, data, "--groups", "1.2+1.0", name="auto")
    assert auto.hyperparameters["readout"] == "auto"
    used, why = auto.readout("1.2")
    assert used in ("logit_lens", "tuned_lens") and "held-out" in why
    assert stored_lens(auto) is not None and set(auto.lens_quality()) == {0, 1, 2}
    (name, group), *_ = auto.groups().items()
    assert name == "1.2+1.0" and set(group["mean_delta_loss_alone"]) == {"1.2", "1.0"}
    assert group["readouts"]["1.2"] == used and group["readouts"]["1.0"] in F.READOUTS
    s = auto.summary("1.2")
    assert set(s["cspa_by_readout"]) == set(F.READOUTS)
    assert s["cspa_by_readout"][used]["explained_kl"] == s["cspa"]["explained_kl"]
    logit = _run(tmp_path, data, "--readout", "logit_lens", name="logit")
    assert logit.readout("1.2") == ("logit_lens", "chosen")
    # the same CSPA with the logit lens, measured two ways: stored by the logit-lens run, and by the auto run
    assert logit.summary("1.2")["cspa"]["explained_kl"] == pytest.approx(
        s["cspa_by_readout"]["logit_lens"]["explained_kl"], abs=2e-3
    )
    main(["report", str(tmp_path / "auto")])
    out = capsys.readouterr().out
    assert "Heads 1.2+1.0 together" in out and "Verdict on 1.2:" in out and "Held-out read-out quality" in out
    for bad, message in (
        (["--readout", "<lens>"], "invalid choice"),
        (["--groups", "1.2"], "two or more different heads"),
        (["--groups", "1.2+1.2"], "two or more different heads"),
    ):
        with pytest.raises(SystemExit):
            main(["run", *BASE, "--dataset", str(data), "--out", str(tmp_path / "bad"), *bad])
        assert message in capsys.readouterr().err
