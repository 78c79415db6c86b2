"""The head survey: every column against a straightforward reference, the planted toy head first, NaN with a
reason where a model cannot be scored, the folder on disk (round trip, tampering, verify) and the CLI."""

import json
import math

import numpy as np
import pytest
import torch

from precompute import CSPAConfig, analyze, mean_result, schema
from precompute.errors import ArtifactError
from precompute.jobs.cli import main
from precompute.science.circuits import circuit_ranks
from precompute.science.survey import repeated_tokens, survey_heads
from precompute.store.survey import find_surveys, read_survey, write_survey
from precompute.store.verify import verify

from .conftest import doc_tokens

TIER = "model"  # this file's test tier (tests/conftest.py); a test marked otherwise is in that tier

SMALL = dict(n_mean=3, n_repeat=6, repeat_len=8, n_ioi=8, circuit_rows=None)


@pytest.fixture(scope="module")
def toy_survey(toy):
    tokens = doc_tokens(toy.tokenizer, 6, 32, seed=21)
    return tokens, survey_heads(toy, tokens, batch_size=4, **SMALL)


@pytest.fixture(scope="module")
def gpt2_vocab_model():
    """A tiny random GPT-2 with GPT-2's real tokenizer (so IOI names are single tokens)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from precompute.models.bridge import boot as _boot
    from precompute.models.loading import LoadedModel
    from precompute.models.tokenizers import load_local_tokenizer

    tok = load_local_tokenizer("gpt2")
    torch.manual_seed(5)
    hf = GPT2LMHeadModel(
        GPT2Config(vocab_size=50257, n_positions=64, n_embd=32, n_layer=2, n_head=2, n_inner=64)
    ).eval()
    with torch.no_grad():
        for p in hf.parameters():
            if p.ndim == 2:
                p.normal_(0, 0.3)
    return LoadedModel(model=_boot(hf, tok, "tiny-gpt2-vocab", "cpu"), name="tiny-gpt2-vocab", provenance={})


def test_one_row_per_head_with_every_column(toy, toy_survey):
    _, df = toy_survey
    cfg = toy.model.cfg
    assert list(df.columns) == list(schema.SURVEY_COLUMNS)
    assert len(df) == cfg.n_layers * cfg.n_heads
    assert df[["layer", "head"]].values.tolist() == [
        [layer, h] for layer in range(cfg.n_layers) for h in range(cfg.n_heads)
    ]


def test_planted_head_first_on_circuits_and_random_heads_near_chance(toy_survey):
    _, df = toy_survey
    for col in ("ov_top10", "qk_top10"):
        best = df.sort_values(col, ascending=False).iloc[0]
        assert (int(best.layer), int(best["head"])) == (1, 2), col
        assert best[col] > 0.5
        others = df[(df.layer != 1) | (df["head"] != 2)][col]
        assert others.max() < 0.1, f"{col}: chance is 10/512 ≈ 0.02"
    # the planted head attends away from induction sources and suppresses: never an induction head
    planted = df[(df.layer == 1) & (df["head"] == 2)].iloc[0]
    assert planted.induction < 0.05


def test_ablation_and_cspa_columns_equal_analyze(toy, toy_survey):
    tokens, df = toy_survey
    for layer, h in [(0, 1), (1, 2), (2, 3)]:
        mu = mean_result(toy, tokens[:3], (layer, h))
        res = analyze(toy, tokens, (layer, h), mu, cspa=CSPAConfig(), effects=("direct",), ln_modes=("frozen",))
        row = df[(df.layer == layer) & (df["head"] == h)].iloc[0]
        assert row.delta_loss_direct == pytest.approx(float(res.delta_loss_direct_frozen.double().mean()), abs=2e-5)
        assert row.kl_direct == pytest.approx(float(res.kl_direct_frozen.double().mean()), abs=2e-5)
        want = 1 - float(res.kl_cspa.double().mean()) / float(res.kl_direct_frozen.double().mean())
        assert row.cspa_kl_explained == pytest.approx(want, abs=1e-3)


def test_tuned_lens_columns_equal_analyze_and_loops(toy, toy_survey):
    """CSPA with the survey's tuned lens equals ``analyze`` with that read-out; attention to predicted tokens equals
    a loop over pairs on the tuned lens's top 10; OV on text equals ``ov_dynamic``'s mean z-score."""
    from precompute.science.cspa import default_excluded
    from precompute.science.ov_dynamic import ov_dynamic
    from precompute.science.survey import SURVEY_LENS_QUALITY_TOKENS
    from precompute.science.tuned_lens import fit_tuned_lens

    tokens, df = toy_survey
    lens = fit_tuned_lens(toy, tokens, batch_size=4, quality_tokens=SURVEY_LENS_QUALITY_TOKENS)
    excluded = set(default_excluded(toy.tokenizer, "paper"))
    for layer, h in [(1, 2), (2, 3)]:
        mu = mean_result(toy, tokens[:3], (layer, h))
        res = analyze(
            toy, tokens, (layer, h), mu, effects=("direct",), ln_modes=("frozen",), readout="tuned_lens", lens=lens
        )
        row = df[(df.layer == layer) & (df["head"] == h)].iloc[0]
        want = 1 - float(res.kl_cspa.double().mean()) / float(res.kl_direct_frozen.double().mean())
        assert row.cspa_kl_explained_tuned == pytest.approx(want, abs=1e-3)
        attn, top = res.attention, res.lens_topk_ids
        n = hits = chance = 0.0
        for b in range(tokens.shape[0]):
            for q in range(tokens.shape[1]):
                content = [k for k in range(1, q + 1) if int(tokens[b, k]) not in excluded]
                pred = set(top[b, q].tolist())
                for k in content:
                    if attn[b, q, k] > 0.1:
                        n += 1
                        hits += int(tokens[b, k]) in pred
                        chance += sum(int(tokens[b, j]) in pred for j in content) / len(content)
        if n and chance:
            assert row.predicted_enrichment == pytest.approx((hits / n) / (chance / n), rel=1e-6)
        else:
            assert np.isnan(row.predicted_enrichment)
        ov = ov_dynamic(toy, tokens, (layer, h), max_pairs=10**9)
        assert row.ov_text_suppression == pytest.approx(-ov.mean_source_z, abs=1e-3)


def test_circuit_columns_equal_circuit_ranks(toy, toy_survey):
    _, df = toy_survey
    for layer, h in [(1, 2), (2, 0)]:
        row = df[(df.layer == layer) & (df["head"] == h)].iloc[0]
        for circuit in ("ov", "qk"):
            want = float((circuit_ranks(toy, (layer, h), circuit) < 10).double().mean())
            assert row[f"{circuit}_top10"] == pytest.approx(want, abs=1e-6)


def _induction_reference(m, tokens, T):
    """Explicit loops: attention from q to q-T+1 and the direct effect through it on the next token."""
    _, cache = m.run_with_cache(tokens)
    L, H = m.cfg.n_layers, m.cfg.n_heads
    ind, anti = np.zeros((L, H)), np.zeros((L, H))
    for layer in range(L):
        for h in range(H):
            atts, effs = [], []
            for b in range(tokens.shape[0]):
                for q in range(T + 1, 2 * T + 1):
                    a = float(cache[f"blocks.{layer}.attn.hook_pattern"][b, h, q, q - T + 1])
                    atts.append(a)
                    if q < 2 * T:
                        out = cache[f"blocks.{layer}.attn.hook_v"][b, q - T + 1, h] @ m.W_O[layer, h]
                        out = out - out.mean()
                        nxt = int(tokens[b, q + 1])
                        effs.append(a * float(out @ m.W_U[:, nxt]) / float(cache["ln_final.hook_scale"][b, q, 0]))
            ind[layer, h], anti[layer, h] = np.mean(atts), -np.mean(effs)
    return ind, anti


def test_induction_and_anti_induction_against_loops(toy, toy_survey):
    _, df = toy_survey
    m = toy.model
    tokens = repeated_tokens(toy.tokenizer, m.cfg.d_vocab, SMALL["n_repeat"], SMALL["repeat_len"], 0)
    assert torch.equal(tokens[:, 1:9], tokens[:, 9:]) and int(tokens[0, 0]) == toy.tokenizer.bos_token_id
    ind, anti = _induction_reference(m, tokens, SMALL["repeat_len"])
    np.testing.assert_allclose(df.induction.values, ind.reshape(-1), atol=1e-5)
    np.testing.assert_allclose(df.anti_induction.values, anti.reshape(-1), atol=1e-5)


def test_ioi_needs_single_token_names(toy_survey):
    _, df = toy_survey
    assert df.ioi_copy_suppression.isna().all()
    assert "single-token" in df.attrs["reasons"]["ioi_copy_suppression"]


def test_ioi_copy_suppression_against_loops(gpt2_vocab_model):
    from precompute.data.prompts import ioi_groups

    lm = gpt2_vocab_model
    m = lm.model
    tokens = torch.tensor([[lm.tokenizer.bos_token_id] + list(range(300, 315))] * 2)
    df = survey_heads(lm, tokens, n_mean=2, n_repeat=2, repeat_len=4, n_ioi=6, circuit_rows=64)
    assert df.attrs["reasons"] == {}
    ref, n = np.zeros((2, 2)), 0
    for g in ioi_groups(lm.tokenizer, 6, 0):
        _, cache = m.run_with_cache(torch.tensor(g.clean))
        for i in range(len(g.clean)):
            end, io = len(g.clean[i]) - 1, g.io_pos[i]
            assert g.clean[i][io] == g.io_ids[i]
            for layer in range(2):
                for h in range(2):
                    a = float(cache[f"blocks.{layer}.attn.hook_pattern"][i, h, end, io])
                    out = cache[f"blocks.{layer}.attn.hook_v"][i, io, h] @ m.W_O[layer, h]
                    out = out - out.mean()
                    ref[layer, h] -= (
                        a * float(out @ m.W_U[:, g.io_ids[i]]) / float(cache["ln_final.hook_scale"][i, end, 0])
                    )
            n += 1
    np.testing.assert_allclose(df.ioi_copy_suppression.values, (ref / n).reshape(-1), atol=1e-5)
    assert df.attrs["settings"]["circuit_rows_used"] == 64


def test_bad_survey_input(toy):
    from precompute import InvalidInputError

    with pytest.raises(InvalidInputError, match="batch, seq"):
        survey_heads(toy, torch.zeros(3, dtype=torch.long))
    with pytest.raises(InvalidInputError, match="n_mean"):
        survey_heads(toy, torch.zeros(2, 5, dtype=torch.long), n_mean=0)
    with pytest.raises(InvalidInputError, match=r"\[0, 512\)"):
        survey_heads(toy, torch.full((2, 5), 10_000))


def test_folder_round_trip_verify_and_tampering(toy_survey, tmp_path):
    _, df = toy_survey
    write_survey(df, tmp_path / "s", {"name": "synthetic"})
    assert verify(tmp_path / "s") == []
    back, manifest = read_survey(tmp_path / "s")
    for col in schema.SURVEY_COLUMNS:
        np.testing.assert_array_equal(back[col].values, df[col].values.astype(back[col].dtype))
    assert manifest["reasons"] == df.attrs["reasons"] and manifest["settings"]["n_sequences"] == 6
    json.dumps(manifest, allow_nan=False)  # NaN never reaches the JSON
    # a flipped byte is refused; a manifest that lies about the model is refused
    raw = bytearray((tmp_path / "s" / schema.SURVEY_FILE).read_bytes())
    raw[-3] ^= 0xFF
    (tmp_path / "s" / schema.SURVEY_FILE).write_bytes(bytes(raw))
    assert "sha256" in verify(tmp_path / "s")[0]
    with pytest.raises(ArtifactError, match="sha256"):
        read_survey(tmp_path / "s")
    write_survey(df, tmp_path / "t", {"name": "synthetic"})
    path = tmp_path / "t" / schema.SURVEY_MANIFEST
    good = json.loads(path.read_text())
    for key, value, message in (
        ("n_heads_total", 5, "n_heads_total"),
        ("kind", "run", "kind"),
        ("files", {"../x": {}}, "files"),
        ("reasons", {"nope": "x"}, "reasons"),
    ):
        m = dict(good)
        m[key] = value
        path.write_text(json.dumps(m))
        with pytest.raises(ArtifactError, match=message):
            read_survey(tmp_path / "t")
    path.write_text("[1, 2")
    with pytest.raises(ArtifactError, match="not valid JSON"):
        read_survey(tmp_path / "t")


def test_cli_survey_writes_a_verified_folder_side_by_side(tmp_path, capsys):
    args = [
        "survey",
        "--model",
        "toy",
        "--dataset",
        "synthetic",
        "--n-seqs",
        "4",
        "--seq-len",
        "24",
        "--n-mean",
        "2",
        "--n-repeat",
        "4",
        "--repeat-len",
        "6",
        "--n-ioi",
        "4",
        "--circuit-rows",
        "64",
    ]
    assert main(args + ["--out", str(tmp_path / "a")]) == 0
    assert main(["verify", str(tmp_path / "a")]) == 0
    assert main(args + ["--out", str(tmp_path / "a")]) == 2
    assert "already holds a survey" in capsys.readouterr().err
    assert main(args + ["--out", str(tmp_path / "a"), "--overwrite"]) == 0
    assert main(args + ["--out", str(tmp_path / "b"), "--seed", "7"]) == 0
    assert [p.name for p in find_surveys(tmp_path)] == ["a", "b"]
    df, manifest = read_survey(tmp_path / "a")
    assert manifest["model"]["model_name"] == "toy" and manifest["model"]["family"] == "GPT-2"
    assert manifest["settings"]["circuit_rows_used"] == 64 and manifest["dataset"]["name"] == "synthetic"
    assert not math.isnan(float(df.kl_direct.iloc[0]))
    with pytest.raises(SystemExit):
        main(args[:-2] + ["--circuit-rows", "x", "--out", str(tmp_path / "c")])
    assert "--circuit-rows must be a whole number" in capsys.readouterr().err


def test_copy_suppression_ranking_by_mean_percentile():
    """Hand-computed: three heads, percentiles (average ties) over ov_top10, ioi and anti-induction."""
    import math

    import pandas as pd

    from precompute.science.survey import copy_suppression_ranking, strongest_copy_suppressor

    df = pd.DataFrame(
        {
            "layer": [0, 1, 2],
            "head": [0, 0, 1],
            "ov_top10": [0.1, 0.9, 0.5],
            "ioi_copy_suppression": [0.0, 2.0, 3.0],
            "anti_induction": [1.0, 0.5, 2.0],
            "induction": [9.0, 0.0, 0.0],
        }
    )
    ranked = copy_suppression_ranking(df)
    # head 2.1: (2/3 + 3/3 + 3/3) / 3; head 1.0: (3/3 + 2/3 + 1/3) / 3; head 0.0: (1/3 + 1/3 + 2/3) / 3
    assert list(zip(ranked["layer"], ranked["head"])) == [(2, 1), (1, 0), (0, 0)]
    assert math.isclose(ranked["copy_suppression_score"][0], (2 / 3 + 1 + 1) / 3)
    assert strongest_copy_suppressor(df) == (2, 1)
    # a column NaN for every head (IOI on a tokenizer without names) is left out; a NaN entry ranks lowest
    df["ioi_copy_suppression"] = float("nan")
    assert strongest_copy_suppressor(df) == (2, 1)  # (2/3 + 1) / 2 against (1 + 1/3) / 2
    df.loc[2, "ov_top10"] = float("nan")  # head 2.1: (0 + 1) / 2; head 1.0: (1 + 1/3) / 2
    assert strongest_copy_suppressor(df) == (1, 0)


def test_survey_config_hands_every_shared_setting_to_the_survey():
    """``SurveyConfig.settings()`` copies every field the CLI config shares with ``SurveySettings`` by name, so a
    setting added to both cannot be dropped on the way."""
    import dataclasses

    from precompute.jobs.survey import SurveyConfig
    from precompute.science.survey import SurveySettings

    cfg = SurveyConfig(
        model="toy",
        n_mean=3,
        batch_size=5,
        circuit_rows=None,
        repeat_len=7,
        n_repeat=9,
        n_ioi=11,
        seed=13,
        qk_distance=5,
    )
    st = cfg.settings()
    shared = {f.name for f in dataclasses.fields(SurveySettings)} - {"cspa"}
    assert shared <= {f.name for f in dataclasses.fields(SurveyConfig)}
    assert {n: getattr(st, n) for n in shared} == dict(
        n_mean=3, batch_size=5, circuit_rows=None, repeat_len=7, n_repeat=9, n_ioi=11, seed=13, qk_distance=5
    )


def test_qk_top10_on_a_rotary_model_is_for_keys_at_the_recorded_distance(survey_env):
    """The tiny Llama's survey: qk_top10 of every head equals a brute-force count with the query side rotated to
    the recorded distance (16), and the settings say so; rotation-blind scores would differ."""

    from precompute.models.loading import load_model, unwrap
    from precompute.models.rotary import at_distance
    from precompute.science.circuits import circuit_factors

    df, manifest = read_survey(survey_env / "survey-llama")
    settings = df.attrs["settings"] if df.attrs.get("settings") else manifest["settings"]
    assert settings["qk_distance"] == 16 and settings["qk_rule"].startswith("rotary: keys 16 positions back")
    lm = load_model(manifest["model"]["model_name"])
    differs = False
    for (layer, h), got in zip(zip(df["layer"], df["head"]), df["qk_top10"]):
        f = circuit_factors(lm, (int(layer), int(h)))
        for rows, rotated in ((at_distance(unwrap(lm), f["qk_dst"], 16), True), (f["qk_dst"], False)):
            full = rows @ f["qk_src"].T
            ref = float((((full >= full.diagonal()[:, None]).sum(-1) - 1) < 10).double().mean())
            if rotated:
                assert got == pytest.approx(ref, abs=2e-3), (layer, h)
            else:
                differs |= abs(got - ref) > 2e-3
    assert differs  # the rotation changes the numbers on this model


def test_an_older_survey_reads_with_the_new_columns_empty(toy_survey, tmp_path):
    """A survey written before the tuned-lens columns existed: read, those columns NaN with the reason."""
    _, df = toy_survey
    old = df.drop(columns=list(schema.SURVEY_LATER_COLUMNS))
    real = schema.SURVEY_COLUMNS
    try:
        schema.SURVEY_COLUMNS = tuple(c for c in real if c not in schema.SURVEY_LATER_COLUMNS)
        write_survey(old, tmp_path / "old", {"name": "synthetic"})
    finally:
        schema.SURVEY_COLUMNS = real
    back, manifest = read_survey(tmp_path / "old")
    for col in schema.SURVEY_LATER_COLUMNS:
        assert back[col].isna().all()
        assert "before this column existed" in manifest["reasons"][col]
    np.testing.assert_allclose(back["ov_top10"].to_numpy(), df["ov_top10"].to_numpy(), rtol=1e-6)
    # the ranking still works on what it has
    from precompute.science.survey import strongest_copy_suppressor

    assert strongest_copy_suppressor(back) == strongest_copy_suppressor(old)
