"""What the app shows, by value: the Home table, the colour scale, downloads against `export`, live against stored,
and low-precision forwards against float32 within a bound derived from the precision."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from precompute import schema as F
from precompute.store.reader import open_artifacts

from .app_helpers import _run

TIER = "model"  # this file's test tier (tests/conftest.py); a test marked otherwise is in that tier


@pytest.fixture
def app_env(toy_artifacts, monkeypatch):
    monkeypatch.setenv("CSE_ARTIFACTS", str(toy_artifacts))
    return toy_artifacts


def test_home_table_shows_the_summary(app_env):
    arts = open_artifacts(app_env)
    s = arts.summary("1.2")
    at = _run()
    tables = [d.value for d in at.dataframe]
    (table,) = [t for t in tables if "quantity" in t.columns]
    rows = {r["quantity"]: r["loaded artifacts"] for r in table.to_dict("records")}
    assert rows["CSPA effect explained (KL)"] == f"{100 * s['cspa']['explained_kl']:.2f}%"
    assert rows["QK: token among the top 10 keys"] == f"{100 * s['qk']['frac_top10']:.2f}%"
    assert rows["Clean loss (nats/token)"] == f"{s['cspa']['mean_clean_loss']:.4f}"
    assert rows["Direct-effect mean ablation: Δloss (nats/token)"] == f"{s['cspa']['mean_delta_loss_ablation']:.4f}"


def test_home_and_cspa_verdicts_show_the_summary_and_the_plot_reading(app_env):
    """The verdict's figures are the stored summary's, its word follows the thresholds, and the CSPA page's reading
    of its scatter is computed from the same per-token values (y near 0: kept; on the diagonal: not kept)."""
    from app.survey_data import LABELS  # noqa: F401 - the page's labels import cleanly
    from precompute.science import verdict as verdicts

    arts = open_artifacts(app_env)
    s = arts.summary("1.2")
    want = verdicts.verdict((1, 2), s, arts.readout("1.2")[0], None)
    for page in (None, "views/cspa.py"):
        at = _run(page) if page else _run()
        (steps,) = [t.value for t in at.table if t.value.index.name == "step"]
        got = {step: r for step, r in zip(steps.index, steps.to_dict("records"), strict=True)}
        assert got["3. CSPA explains its effect"]["measured"].startswith(f"{100 * s['cspa']['explained_kl']:.1f}%")
        att = s["attends_predicted"]
        assert f"{100 * att['frac_predicted']:.1f}%" in got["1. It attends to predicted tokens"]["measured"]
        assert f"{100 * s['ov_dynamic']['frac_top10']:.1f}%" in got["2. It suppresses what it attends to"]["measured"]
        assert any(f"Verdict on 1.2: {want.word}." in m.value for m in at.markdown)
    x = arts.field(F.delta_loss(F.PAPER_VARIANT), "1.2").astype("float64").reshape(-1)
    y = arts.field(F.delta_loss(F.CSPA), "1.2").astype("float64").reshape(-1)
    x, y = x.astype("float32").astype("float64"), y.astype("float32").astype("float64")
    big = np.abs(x) >= np.quantile(np.abs(x), 0.9)
    kept_big = float((np.abs(y[big]) < 0.5 * np.abs(x[big])).mean())
    reading = [c.value for c in at.caption if c.value.startswith("Reading:")]
    assert reading and f"{kept_big:.0%} lie nearer y = 0" in reading[0]


def _rgb(css: str) -> tuple[int, int, int]:
    return tuple(int(x) for x in css[4:-1].split(","))


@pytest.mark.fast
def test_colour_scale_sign_and_range():
    from app.sequence.strip import colours

    vals = [2.5, 1.25, 0.0, -1.25, -2.5, 10.0, float("nan")]
    c = [_rgb(x) for x in colours(vals, "delta_loss", extreme=False)]
    assert c[0] == (33, 102, 172) and c[4] == (178, 24, 43)  # +2.5 full blue (head helps), -2.5 full red
    assert c[2] == (247, 247, 247) and c[5] == c[0] and c[6] == (220, 220, 220)  # white at 0; clipped; NaN grey
    assert c[1][2] > c[1][0] and c[3][0] > c[3][2]  # halfway: bluish, reddish
    assert c[1] == tuple(round(w + (e - w) * 0.5) for w, e in zip((247, 247, 247), (33, 102, 172)))
    # DLA: a negative attribution (suppression, the head's job) is blue
    assert _rgb(colours([-1.0], "dla", extreme=False)[0]) == (33, 102, 172)
    # scaled to the sequence's extreme: the largest magnitude is full colour
    assert _rgb(colours([0.1, -0.05], "kl", extreme=True)[0]) == (33, 102, 172)
    assert _rgb(colours([1.0], "logprob", extreme=False)[0]) == (33, 102, 172)


def test_downloads_equal_export_and_carry_their_metadata(toy_artifacts, capsys):
    from app import exports
    from app.sequence.downloads import table
    from precompute.data.tokenization import token_strings
    from precompute.jobs.cli import main
    from precompute.store.record_arrays import exported as record_json

    arts = open_artifacts(toy_artifacts)
    rec = arts.sequence(4)
    strings = token_strings(arts.tokenizer, rec[F.TOKENS].tolist())
    assert main(["export", str(toy_artifacts), "--seq", "4"]) == 0
    exported = json.loads(capsys.readouterr().out)
    meta = exports.metadata(arts, "1.2", sequence=4, variant="direct_frozen")
    downloaded = json.loads(exports.json_text(record_json(rec, arts.tokenizer), meta))
    assert downloaded.pop("metadata") == {
        "model": "toy",
        "artifact_set": toy_artifacts.name,
        "head": "1.2",
        "dataset": {k: arts.manifest["dataset"][k] for k in ("name", "seed", "split")},
        "sequences": f"{arts.n_sequences} x {arts.seq_len} tokens",
        "settings": arts.manifest["hyperparameters"],
        "schema_version": arts.manifest["schema_version"],
        "made_by": "Copy Suppression Explorer",
        "sequence": 4,
        "variant": "direct_frozen",
    }
    assert {k: v for k, v in exported.items() if k not in ("sequence", "head")} == downloaded
    # token strings beside token ids: the top-k predictions' strings are the tokenizer's for those ids
    ids_field = F.topk_ids("clean")
    got_ids, got_strings = exported[ids_field][7], exported[ids_field + "_strings"][7]
    assert got_strings == token_strings(arts.tokenizer, got_ids)
    assert exports.file_stem(meta, "seq4") == f"toy_{toy_artifacts.name}_head1.2_seq4"
    assert exports.file_stem({"model": "a/b c", "head": "<1>"}, "x y") == "b-c_head-1-_x-y"
    import csv
    import io

    text = exports.csv_text(table(rec, strings), meta)
    assert text.startswith('# model: "toy"\n') and '# head: "1.2"\n' in text
    import pandas as pd

    assert list(pd.read_csv(io.StringIO(text), comment="#", keep_default_na=False)["token"]) == strings
    rows = list(csv.DictReader(io.StringIO("".join(line for line in text.splitlines(True) if line[0] != "#"))))
    assert [r["token"] for r in rows] == strings
    for p in (0, 7, 20):
        assert float(rows[p][F.LOSS]) == pytest.approx(exported[F.LOSS][p], abs=1e-4)
        assert float(rows[p][F.delta_loss("direct_frozen")]) == pytest.approx(
            exported[F.delta_loss("direct_frozen")][p], abs=1e-4
        )
    assert rows[-1][F.LOSS] == ""  # the last token has no next token
    rank = F.correct_rank("direct_frozen")
    assert [r[rank] for r in rows[:-1]] == [str(int(v)) for v in exported[rank]]  # whole numbers: "75", not "75.0"
    assert rows[-1][rank] == ""
    kl = F.kl("direct_frozen")
    assert min(float(r[kl]) for r in rows[:-1]) >= 0.0


def test_live_equals_stored_for_the_same_text(toy, toy_artifacts):
    from precompute.data.tokenization import encode
    from precompute.live import LiveAnalyzer

    arts = open_artifacts(toy_artifacts)
    live = LiveAnalyzer.for_artifacts(toy, arts)
    tok = arts.tokenizer
    compared = 0
    for i in range(arts.n_sequences):
        rec = arts.sequence(i)
        text = tok.decode(rec[F.TOKENS][1:].tolist())
        if encode(tok, text) != rec[F.TOKENS].tolist():
            continue  # only texts that tokenise back to the same ids
        got = live.analyze(text, (1, 2)).record
        assert got.keys() == rec.keys()
        for name in rec:
            a, b = np.asarray(got[name]), np.asarray(rec[name])
            if np.issubdtype(b.dtype, np.floating):
                np.testing.assert_allclose(
                    a.astype(np.float64), b.astype(np.float64), atol=2e-3, rtol=2e-3, err_msg=name
                )
            elif name.endswith("_rank") or name in (F.ATTN_TOPK_POS,) or "_ids" in name or "kept" in name:
                assert np.mean(a != b) <= 0.02, name  # float ties may reorder equal entries
            else:
                assert np.array_equal(a, b), name
        compared += 1
        if compared == 3:
            break
    assert compared == 3


@pytest.mark.model  # loads a model in the test
@pytest.mark.parametrize(("dtype", "eps"), [(torch.bfloat16, 2.0**-8), (torch.float16, 2.0**-11)])
def test_low_precision_forward_within_its_bound(dtype, eps, tmp_path):
    """Δloss and KL of every low-precision variant (direct effect, both LN modes, CSPA) against float32, per
    token. The bound comes from the precision: the low-precision logits carry a relative rounding error of about
    eps, so each is off by about eps * max|logit|, and a log-softmax difference (Δloss) moves by at most twice the
    largest logit error. (Measured on this toy: bf16 0.043 against a bound of 0.18; fp16 0.008 against 0.022.)"""
    from precompute import analyze, load_model, mean_result

    from .conftest import doc_tokens

    lm32 = load_model("toy")
    lm_low = load_model("toy")
    lm_low.model.to(dtype)
    tokens = doc_tokens(lm32.tokenizer, 2, 48, seed=17)
    mu = mean_result(lm32, tokens, (1, 2))
    kw = dict(k=5, effects=("direct",), ln_modes=("frozen", "unfrozen"))
    a, b = analyze(lm32, tokens, (1, 2), mu, **kw), analyze(lm_low, tokens, (1, 2), mu, **kw)
    with torch.inference_mode():
        clean32 = lm32.model(tokens).float()
    bound = 2 * eps * float(clean32.abs().max())
    for v in ("direct_frozen", "direct_unfrozen", "cspa"):
        for field in (F.delta_loss(v), F.kl(v)):
            err = float((a[field] - b[field]).abs().max())
            assert err <= bound, (field, err, bound)
    assert bound < 0.1  # the bound itself is informative: well below the mean Δloss of the head (0.27)
    assert math.isfinite(float(b[F.kl("cspa")].sum()))


class FakeBoundary:
    """A model boundary (``precompute.live.ModelBoundary``) that loads nothing: fixed CSPA shares per intervention,
    and a record of what the page asked."""

    def __init__(self, model_name: str):
        self.name, self.asked = model_name, []

    def cspa_interventions(self, arts, head, n_seqs=8, on_wait=None, progress=None):
        from precompute.summaries import CSPASummary

        self.asked.append((tuple(head), n_seqs))
        shares = {"qk,ov": 0.5, "qk": 0.25, "ov": 0.125}
        return {
            k: CSPASummary(n_tokens=42, explained_kl=v, explained_kl_interval=(v - 0.01, v + 0.01))
            for k, v in shares.items()
        }


def test_the_app_runs_against_a_fake_model_boundary(app_env):
    """The CSPA page's interventions table from a fake backend (``app.live_model.use_backend``): the page shows what
    the boundary returned, and asked for the head and the number of sequences chosen."""
    from app import live_model
    from precompute import paper

    made = []

    def factory(name):
        made.append(FakeBoundary(name))
        return made[-1]

    live_model.use_backend(factory)
    try:
        at = _run("views/cspa.py")
        at.selectbox(key="cspa_n").set_value(2).run()
        next(b for b in at.button if b.label == "Compute the three side by side").click().run()
        assert not at.exception
        table = at.dataframe[-1].value
    finally:
        live_model.use_backend(None)
    assert [m.name for m in made] == ["toy"] and made[0].asked == [((1, 2), 2)]
    assert table["intervention"].tolist() == list(paper.CSPA_INTERVENTION_LABELS.values())
    assert table["effect explained (KL)"].tolist() == ["50.0%", "25.0%", "12.5%"]
    assert table["90% interval over sequences"].tolist()[0] == "49.0% to 51.0%"
    assert table["tokens"].tolist() == [42, 42, 42]
