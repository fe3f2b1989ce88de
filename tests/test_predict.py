"""predict: targets from any two of N, D, C (or C alone), CI inside PI, fallbacks and errors."""

import json

import numpy as np
import pytest

from scaling_cli.errors import UserError
from scaling_cli.fit import artifact, laws, synthetic
from scaling_cli.fit.bootstrap import FitOptions
from scaling_cli.fit.pipeline import fit_all
from scaling_cli.fit.table import ColumnSpec, prepare_table
from scaling_cli.predict import format_prediction, predict

EPOCH = laws.EPOCH_CHINCHILLA


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    iso = synthetic.isoflop_runs(seed=0, noise=0.005)
    prepared = prepare_table(iso, ColumnSpec())
    rep = fit_all(prepared, FitOptions(n_boot=40, grid_size=2))
    path = artifact.write_report(rep, str(tmp_path_factory.mktemp("fit")))
    return artifact.read_report(path)  # exactly what the CLI reads back


def test_loss_at_params_and_tokens_with_intervals(report):
    r = predict(report, params=7e9, tokens=1.4e12)
    true = laws.chinchilla_loss((7e9, 1.4e12), *EPOCH.values())
    assert r["loss"] == pytest.approx(true, rel=0.03)
    assert r["loss_pi"][0] <= r["loss_ci"][0] < r["loss"] < r["loss_ci"][1] <= r["loss_pi"][1]
    assert (r["loss_lo"], r["loss_hi"]) == tuple(r["loss_pi"])
    assert r["flops"] == pytest.approx(6 * 7e9 * 1.4e12) and r["law"] == report["selection"]["loss_law"]
    assert r["extrapolation_factor_flops"] > 1000
    json.dumps(artifact.to_jsonable(r))  # JSON-serialisable
    assert "CI" in format_prediction(r)


def test_flops_alone_gives_the_compute_optimal_allocation(report):
    r = predict(report, flops=1e21)
    opt = r["compute_optimal"]
    assert 6 * r["params"] * r["tokens"] == pytest.approx(1e21)
    assert r["params"] == pytest.approx(opt["params_opt"])
    n_true, d_true = laws.chinchilla_optimum(1e21, *EPOCH.values())
    assert opt["params_opt"] == pytest.approx(n_true, rel=0.25)
    lo, hi = opt["params_opt_interval"]
    assert lo < opt["params_opt"] < hi


def test_params_alone_uses_compute_optimal_tokens_and_params_with_flops(report):
    r = predict(report, params=1e9)
    assert r["tokens"] == pytest.approx(r["compute_optimal"]["tokens_opt_for_params"])
    r2 = predict(report, params=1e9, flops=6e20)
    assert r2["tokens"] == pytest.approx(1e11)


def test_bad_targets_raise_user_errors(report):
    with pytest.raises(UserError, match="--params"):
        predict(report, tokens=1e12)
    with pytest.raises(UserError, match="at most two"):
        predict(report, params=1e9, tokens=1e10, flops=6e19)
    with pytest.raises(UserError, match="positive"):
        predict(report, params=-1.0, tokens=1e10)


def test_compute_only_selection_falls_back_outside_its_ratios(report):
    rep = json.loads(json.dumps(report))
    rep["selection"] = {"loss_law": "compute_only", "reason": "forced for the test"}
    rep["laws"]["compute_only"] = {
        "law": "compute_only", "status": "ok", "group_rel_tol": 0.1,
        "groups": [{"M": 20.0, "params": {"E": 1.8, "A": 50.0, "alpha": 0.1}, "samples": [[1.8, 50.0, 0.1]] * 3,
                    "residuals": {"rmse_log": 0.01}}]}
    at_ratio = predict(rep, params=1e9, tokens=2e10)
    assert at_ratio["law"] == "compute_only"
    assert at_ratio["loss"] == pytest.approx(1.8 + 50.0 * (6 * 1e9 * 2e10) ** -0.1)
    off_ratio = predict(rep, params=1e9, tokens=2e12)
    assert off_ratio["law"] == "chinchilla" and "fell back" in off_ratio["law_reason"]


def test_missing_and_foreign_fit_files(tmp_path):
    with pytest.raises(UserError, match="run `scaling-cli fit RUNS` first"):
        artifact.read_report(str(tmp_path / "fit.json"))
    (tmp_path / "fit.json").write_text(json.dumps({"schema": "other/v9"}))
    with pytest.raises(UserError, match="schema"):
        artifact.read_report(str(tmp_path))
    assert artifact.to_jsonable({"a": np.float64("nan"), "b": (np.int64(3),)}) == {"a": None, "b": [3]}


def test_the_point_is_the_geometric_mean_of_the_laws_that_backtest_alike(report):
    from scaling_cli.fit import parametric

    law = report["selection"]["loss_law"]
    other = next(k for k in ("chinchilla", "chinchilla_fixed_e", "overtrain", "overtrain_fixed_e")
                 if k != law and report["laws"].get(k, {}).get("status") == "ok")
    alone = json.loads(json.dumps(report))
    alone["selection"]["alike"] = [law]
    pair = json.loads(json.dumps(report))
    pair["selection"]["alike"] = [law, other]
    unused = json.loads(json.dumps(pair))
    pair["selection"]["average"] = {"used": True}
    unused["selection"]["average"] = {"used": False}
    n, d = 7e9, 1.4e12
    own = float(np.ravel(parametric.entry_loss(report["laws"][law], n, d, 6 * n * d))[0])
    theirs = float(np.ravel(parametric.entry_loss(report["laws"][other], n, d, 6 * n * d))[0])
    r1, r2 = predict(alone, params=n, tokens=d), predict(pair, params=n, tokens=d)
    assert r1["loss"] == pytest.approx(own) and r1["averaged_over"] == []
    assert r2["loss"] == pytest.approx(np.sqrt(own * theirs)) and r2["loss_selected_law"] == pytest.approx(own)
    assert r2["averaged_over"] == [law, other] and r2["law"] == law
    lo, hi = r2["loss_pi"]
    assert lo <= min(own, theirs) and max(own, theirs) <= hi and lo < r2["loss"] < hi
    # the bootstrap is the selected law's, recentred on the averaged point
    shift = r2["loss"] / own
    assert np.allclose(np.array(r2["loss_ci"]) / shift, r1["loss_ci"], rtol=1e-9)
    assert f"geometric mean with {other}" in format_prediction(r2)
    # where the average did not backtest better, the point is the selected law's; the interval still spans both
    r3 = predict(unused, params=n, tokens=d)
    assert r3["loss"] == pytest.approx(own) and r3["averaged_over"] == []
    assert r3["loss_pi"][0] <= min(own, theirs) and max(own, theirs) <= r3["loss_pi"][1]
    assert "geometric mean" not in format_prediction(r3)
