"""Downstream laws (scaling_cli/fit/downstream.py): parameter recovery of BLEU(D_p), CE(D_p) and
Err(L) on synthetic data, the "not supported" verdict on flat and non-monotone metrics, the
two-stage prediction, and the CLI: `fit` of a plain table with an accuracy column and
`predict --json` with the metric keys.

    pytest tests/test_fit_downstream.py
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from scaling_cli.cli import main
from scaling_cli.fit import downstream as ds
from scaling_cli.fit import laws
from scaling_cli.fit.bootstrap import FitOptions

FAST = ["--n-boot", "30", "--grid-size", "2", "--curve-groups", "0"]

# Ground truth of the synthetic laws (Isik-like BLEU in 10-25, Gadre-like error from chance down).
BLEU_TRUTH = {"A": 0.05, "alpha": 0.5, "beta": 1.5}
CE_TRUTH = {"E": 1.2, "A": 40.0, "alpha": 0.25}
ERR_TRUTH = {"eps": 0.76, "k": 8.0, "gamma": 1.1}


def test_laws_are_registered():
    assert {"bleu_tokens", "downstream_ce", "error_of_loss"} <= set(laws.LAWS)
    assert laws.law_value("error_of_loss", 3.0, ERR_TRUTH) == pytest.approx(0.76 - 8.0 * np.exp(-3.3))


def test_bleu_law_recovers_its_parameters():
    rng = np.random.default_rng(0)
    d = np.geomspace(1e6, 1e9, 12)
    bleu = ds.bleu_tokens(d, *BLEU_TRUTH.values()) + rng.normal(0, 0.02, len(d))
    fit = ds.fit_bleu_tokens(d, bleu, FitOptions(n_boot=50))
    for name in ("alpha", "beta"):
        assert fit["params"][name] == pytest.approx(BLEU_TRUTH[name], rel=0.08)
        lo, hi = fit["intervals"][name]
        assert lo <= fit["params"][name] <= hi
    assert np.log(fit["params"]["A"]) == pytest.approx(np.log(BLEU_TRUTH["A"]), abs=0.5)
    assert fit["residuals"]["rmse"] < 0.05


def test_downstream_ce_law_recovers_its_parameters():
    rng = np.random.default_rng(1)
    d = np.geomspace(1e6, 1e10, 10)
    ce = ds.downstream_ce(d, *CE_TRUTH.values()) * np.exp(rng.normal(0, 0.002, len(d)))
    fit = ds.fit_downstream_ce(d, ce, FitOptions(n_boot=30))
    for name, truth in CE_TRUTH.items():
        assert fit["params"][name] == pytest.approx(truth, rel=0.1)


def test_error_law_recovers_its_parameters():
    rng = np.random.default_rng(2)
    loss = np.linspace(2.2, 5.0, 14)
    err = ds.error_of_loss(loss, *ERR_TRUTH.values()) + rng.normal(0, 0.002, len(loss))
    fit = ds.fit_error_of_loss(loss, err, FitOptions(n_boot=50))
    for name, truth in ERR_TRUTH.items():
        assert fit["params"][name] == pytest.approx(truth, rel=0.1)
        lo, hi = fit["intervals"][name]
        assert lo < hi


def test_support_verdicts():
    rng = np.random.default_rng(3)
    loss = np.linspace(3.0, 5.0, 10)
    # An accuracy stuck at chance (Isik's and Gadre's small models): flat and trendless.
    flat = ds.support(-loss, 0.25 + rng.normal(0, 0.01, 10), "acc", chance=0.25, n_items=100)
    assert not flat["supported"] and "flat" in flat["reason"]
    # A clear rise from chance.
    acc = 1 - ds.error_of_loss(loss, *ERR_TRUTH.values())
    assert ds.support(-loss, acc, "acc", chance=0.25, n_items=100)["supported"]
    # BLEU that rises then falls with more pretraining (Isik's misaligned case).
    d = np.geomspace(1e6, 1e9, 8)
    bumpy = np.array([4.0, 8.0, 11.0, 12.0, 10.0, 8.0, 6.5, 5.0])
    verdict = ds.support(np.log(d), bumpy, "bleu")
    assert not verdict["supported"] and "non-monotone" in verdict["reason"]
    # A rise followed by a late fall still breaks the rule, even with a positive rank correlation.
    late = np.array([2.0, 4.0, 6.0, 8.0, 10.0, 12.0, 14.0, 7.0])
    assert ds._spearman(np.log(d), late) > ds.SPEARMAN_MIN
    assert "non-monotone" in ds.support(np.log(d), late, "bleu")["reason"]
    assert ds.support(np.log(d), ds.bleu_tokens(d, *BLEU_TRUTH.values()), "bleu")["supported"]
    assert ds.support(np.log(d[:3]), bumpy[:3], "bleu")["status"] == "not enough data"


def test_fit_metric_reports_not_supported_instead_of_a_law():
    d = np.geomspace(1e6, 1e9, 6)
    runs = pd.DataFrame({"params": 1e7, "tokens": d, "flops": 6e7 * d, "loss": 4.0 - 0.1 * np.arange(6),
                         "t_bleu": [5.0, 9.0, 12.0, 9.0, 6.0, 3.0], "t_acc": 0.25})
    entry = ds.fit_metric("t_bleu", "bleu", runs, FitOptions(n_boot=0))
    assert entry["status"] == "not supported" and "non-monotone" in entry["reason"] and not entry["groups"]
    assert ds.predict_metric(entry, 1e7, 1e10, 3.0, None, 0.9)["value"] is None
    entry = ds.fit_metric("t_acc", "acc", runs, FitOptions(n_boot=0), chance=0.25, n_items=100)
    assert entry["status"] == "not supported" and "params" not in entry


def test_metric_columns_are_detected_by_suffix():
    cols = ["params", "tokens", "loss", "next_verse_acc", "next_verse_acc_norm", "translation_bleu", "translation_chrf",
            "translation_ce", "translation_bpb", "next_verse_n", "finetune_loss", "hellaswag_err"]
    found = ds.detect_metric_columns(cols, exclude={"loss"})
    assert found == {"next_verse_acc": "acc", "next_verse_acc_norm": "acc", "translation_bleu": "bleu",
                     "translation_chrf": "chrf", "translation_ce": "ce", "hellaswag_err": "err"}
    assert ds.task_of("next_verse_acc_norm") == "next_verse"
    assert ds.parse_metric_spec("score:bleu", ["score"]) == ("score", "bleu")
    with pytest.raises(ValueError, match="KIND"):
        ds.parse_metric_spec("score", ["score"])


def _published_table(seed: int = 0) -> pd.DataFrame:
    """One row per model, like published runs: N, D, loss and a 4-choice accuracy in percent."""
    rng = np.random.default_rng(seed)
    rows = []
    for n in (2e7, 6e7, 2e8, 6e8, 2e9):
        for m in (10, 20, 40):
            d = m * n
            loss = float(laws.chinchilla_loss((n, d), *laws.EPOCH_CHINCHILLA.values()) * np.exp(rng.normal(0, 0.004)))
            acc = 1 - ds.error_of_loss(loss, *ERR_TRUTH.values()) + rng.normal(0, 0.004)
            rows.append({"model": f"m{n:.0e}-{m}", "params": n, "tokens": d, "loss": loss, "acc": 100 * acc,
                         "boolq": 50 + rng.normal(0, 0.5)})
    return pd.DataFrame(rows)


def test_cli_fits_a_plain_table_with_accuracy_and_predict_has_the_metric_keys(tmp_path, capsys):
    table = _published_table()
    path = tmp_path / "published.csv"
    table.to_csv(path, index=False)
    outdir = tmp_path / "fit"
    assert main(["fit", str(path), "--metric-col", "acc", "--metric-col", "boolq:acc", "--chance", "0.25",
                 "-o", str(outdir), *FAST]) == 0
    out = capsys.readouterr().out
    assert "acc" in out and "not supported" in out  # boolq is flat
    report = json.loads((outdir / "fit.json").read_text())
    block = report["downstream"]["metrics"]
    acc = block["acc"]
    assert acc["status"] == "ok" and acc["law"] == "error_of_loss" and acc["chance"] == 0.25
    for name, truth in ERR_TRUTH.items():
        assert acc["params"][name] == pytest.approx(truth, rel=0.25)
    assert block["boolq"]["status"] == "not supported"
    assert "downstream_acc.png" in report["plots"] and (outdir / "downstream_acc.png").stat().st_size > 1000

    capsys.readouterr()
    n, d = 1e10, 2e11
    assert main(["predict", "--params", str(n), "--tokens", str(d), "--fit", str(outdir), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert {"acc", "acc_interval", "boolq", "downstream"} <= set(result)
    lo, hi = result["acc_interval"]
    assert lo <= result["acc"] <= hi
    truth = 1 - ds.error_of_loss(laws.chinchilla_loss((n, d), *laws.EPOCH_CHINCHILLA.values()), *ERR_TRUTH.values())
    assert result["acc"] == pytest.approx(truth, abs=0.03)
    assert result["boolq"] is None and result["downstream"]["boolq"]["status"] == "not supported"
    assert main(["predict", "--params", str(n), "--tokens", str(d), "--fit", str(outdir)]) == 0
    assert "acc" in capsys.readouterr().out


def test_fit_auto_detects_bleu_per_model_size(tmp_path):
    rows = []
    for n in (1e7, 4e7):
        for d in np.geomspace(1e8, 1e10, 6):
            loss = float(laws.chinchilla_loss((n, d), *laws.EPOCH_CHINCHILLA.values()))
            rows.append({"params": n, "tokens": d, "loss": loss,
                         "wmt_bleu": float(ds.bleu_tokens(d, BLEU_TRUTH["A"] * (n / 1e7) ** 0.3, 0.5, 1.5)),
                         "wmt_ce": float(ds.downstream_ce(d, *CE_TRUTH.values()))})
    path = tmp_path / "isik.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    assert main(["fit", str(path), "-o", str(tmp_path / "f"), "--no-plots", *FAST]) == 0
    report = json.loads((tmp_path / "f" / "fit.json").read_text())
    bleu = report["downstream"]["metrics"]["wmt_bleu"]
    assert bleu["status"] == "ok" and len(bleu["groups"]) == 2
    assert report["downstream"]["metrics"]["wmt_ce"]["status"] == "ok"
    from scaling_cli.predict import predict

    got = predict(report, params=4e7, tokens=3e10)
    assert got["wmt_bleu"] == pytest.approx(float(ds.bleu_tokens(3e10, BLEU_TRUTH["A"] * 4 ** 0.3, 0.5, 1.5)), rel=0.05)
    assert got["downstream"]["wmt_bleu"]["extrapolation"]
    assert predict(report, params=1e9, tokens=3e10)["wmt_bleu"] is None  # no fitted size near 1e9
