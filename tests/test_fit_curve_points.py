"""Annealed-equivalent points from whole curves: each derived point is the final loss the curve law
gives a run of the same schedule cut short, on the validation scale of its run; duplicates of real
runs are dropped; `fit --curve-points` uses them and backtests both ways."""

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest

from scaling_cli.cli import main
from scaling_cli.fit import curve_laws, curve_points, loss_laws
from scaling_cli.fit.bootstrap import FitOptions

PEAK = 3e-3
SIZES = (1e5, 3e5, 1e6, 3e6)
VAL_OVER_TRAIN = 1.03  # validation loss of every run sits 3% above its train loss


def _tissue(n: float) -> dict:
    """A size-dependent curve law: larger models have a lower floor and learn a bit faster."""
    return dict(L0=2.0 + 40.0 / n ** 0.3, A=1.2, alpha=0.45, C=0.25)


def _true_final(n: float, steps: int) -> float:
    """The train loss at the end of a cosine run of `steps` steps (warmup 5%) under the law."""
    lr = curve_laws.cosine_schedule(steps, PEAK, max(1, round(0.05 * steps)))
    s1, s2 = curve_laws.tissue_features(lr, max(1, round(0.05 * steps)))
    return float(curve_laws.tissue_loss((s1[-1:], s2[-1:]), **_tissue(n))[0])


def _runs(lengths=(400, 1600), noise=0.01, seed=0):
    """One row per run (validation loss at the end) and per-step curves (train loss + noise)."""
    rng = np.random.default_rng(seed)
    runs, curves = [], []
    for n in SIZES:
        for steps in lengths:
            run = f"n{n:g}-t{steps}"
            warmup = max(1, round(0.05 * steps))
            lr = curve_laws.cosine_schedule(steps, PEAK, warmup)
            s1, s2 = curve_laws.tissue_features(lr, warmup)
            loss = curve_laws.tissue_loss((s1, s2), **_tissue(n)) + rng.normal(0, noise, steps)
            tokens = steps * 1024.0
            runs.append({"run": run, "params": n, "tokens": tokens, "flops": 6 * n * tokens,
                         "loss": VAL_OVER_TRAIN * _true_final(n, steps)})
            curves.append(pd.DataFrame({"run": run, "step": np.arange(1, steps + 1), "lr": lr, "loss": loss,
                                        "tokens": np.arange(1, steps + 1) * 1024.0}))
    return pd.DataFrame(runs), pd.concat(curves, ignore_index=True)


def test_derived_points_are_the_annealed_final_losses_of_shorter_runs():
    done, curves = _runs()
    points, info = curve_points.build_points(done, curves)
    final, derived = points[points["source"] == "final"], points[points["source"] == "curve"]
    assert len(final) == len(done) and (final["weight"] == 1.0).all()
    assert (derived["weight"] == curve_points.CURVE_WEIGHT).all()
    # 0.25 of the 1600-step run is the 400-step run, which exists: dropped as a duplicate.
    assert info["n_duplicates_dropped"] == len(SIZES)
    assert info["n_curve"] == len(derived) == len(SIZES) * (3 + 2)
    for _, p in derived.iterrows():
        steps = int(round(p["tokens"] / 1024))
        truth = VAL_OVER_TRAIN * _true_final(p["params"], steps)
        assert p["loss"] == pytest.approx(truth, rel=0.004), (p["run"], steps)
        run = done.set_index("run").loc[p["run"]]
        assert p["flops"] / run["flops"] == pytest.approx(p["tokens"] / run["tokens"])
    # A mid-run point of a cosine run is not its annealed equivalent: the raw curve sits higher.
    mid = derived[derived["run"] == "n1e+06-t1600"].sort_values("tokens").iloc[1]
    raw = curves[(curves["run"] == "n1e+06-t1600") & (curves["step"].between(790, 810))]["loss"].mean()
    assert VAL_OVER_TRAIN * raw > mid["loss"] * 1.01


def test_compressed_schedule_is_the_same_shape_at_fewer_steps():
    lr = curve_laws.cosine_schedule(1000, PEAK, 50)
    short, warmup = curve_points.compressed_schedule(lr, 50, 250)
    np.testing.assert_allclose(short, curve_laws.cosine_schedule(250, PEAK, 12.5), atol=PEAK * 0.01)
    assert warmup == 12 and len(short) == 250


def test_backtest_and_weighted_fit_on_curve_points():
    done, curves = _runs(lengths=(400, 1600, 6400))
    points, _ = curve_points.build_points(done, curves)
    derived = curve_points.derived_points(points, done, "total")["total"]
    assert len(derived) == (points["source"] == "curve").sum()
    assert (done["run"].to_numpy()[derived.owner] == points.loc[points["source"] == "curve", "run"].to_numpy()).all()
    options = FitOptions(n_boot=20, grid_size=2)
    result = curve_points.compare(done, derived, options)
    assert result["n_test"] == 3 and set(result["scores"]) == {"final", "final+curve"}
    assert result["scores"]["final+curve"]["n_train"] > result["scores"]["final"]["n_train"]
    for score in result["scores"].values():
        assert score["status"] == "ok" and score["mean_abs_rel_error"] < 0.05
    # every L(N, D) law trains on the derived points too, each run one bootstrap unit
    block = loss_laws.fit_loss_laws(done, options, "total", extra={"total": derived})
    entry = block["entries"]["chinchilla"]
    assert entry["status"] == "ok" and entry["n_units"] == len(done) and len(entry["samples"]) == 20
    assert entry["points_used"] == {"final": len(done), "curve": len(derived)}
    held = block["backtests"]["largest_size"]
    # the held-out size's own derived points never train its refit
    largest = done["params"].to_numpy()[derived.owner] == done["params"].max()
    assert held["n_train_derived"] == int((~largest).sum())


def test_fit_cli_curve_points_flag(tmp_path, capsys):
    done, curves = _runs()
    table = curves.merge(done[["run", "params"]], on="run").rename(columns={"run": "run_id"})
    table["flops"] = 6 * table["params"] * table["tokens"]
    path = tmp_path / "curves.csv"
    table.to_csv(path, index=False)
    assert main(["fit", str(path), "--n-boot", "10", "--grid-size", "2", "--no-plots",  # forced on
                 "--curve-groups", "0", "--curve-points", "--verbose"]) == 0
    assert "from curves" in capsys.readouterr().out
    report = json.loads((tmp_path / "curves_fit" / "fit.json").read_text())
    entry = report["laws"]["curve_points"]
    assert entry["status"] == "ok" and entry["n_curve"] > 0 and entry["used"] is True
    assert entry["decision"].startswith("forced on")
    assert report["laws"]["chinchilla"]["points_used"] == {"final": entry["n_final"], "curve": entry["n_curve"]}
    assert report["options"]["curve_points"] is True
    # by default the backtest decides, and fit.json says what it compared
    assert main(["fit", str(path), "--n-boot", "0", "--grid-size", "2", "--no-plots", "--curve-groups", "0"]) == 0
    report = json.loads((tmp_path / "curves_fit" / "fit.json").read_text())
    entry = report["laws"]["curve_points"]
    assert report["options"]["curve_points"] is None and set(entry["backtest"]["scores"]) == {"final", "final+curve"}
    assert report["laws"]["chinchilla"]["points_used"]["curve"] == (entry["n_curve"] if entry["used"] else 0)
    assert main(["fit", str(path), "--no-curve-points", "--n-boot", "0", "--grid-size", "2", "--no-plots",
                 "--curve-groups", "0"]) == 0
    report = json.loads((tmp_path / "curves_fit" / "fit.json").read_text())
    assert "curve_points" not in report["laws"] and report["laws"]["chinchilla"]["points_used"]["curve"] == 0


def test_curve_points_are_dropped_when_they_worsen_the_held_out_size():
    done, curves = _runs(lengths=(400, 1600, 6400))
    points, _ = curve_points.build_points(done, curves)
    derived = curve_points.derived_points(points, done, "total")["total"]
    options = FitOptions(n_boot=0, grid_size=2)
    # the curve law recovers these curves (points within 0.4% of the truth): with them is no worse
    good = curve_points.decide(done, derived, options)
    errors = {k: v["mean_abs_rel_error"] for k, v in good["backtest"]["scores"].items()}
    assert good["used"] is True and errors["final+curve"] <= errors["final"] + curve_points.DROP_MARGIN
    # a curve law that misreads the curves: every derived point 6% high, more so for larger models
    biased = dataclasses.replace(derived, loss=derived.loss * (1.0 + 0.06 * np.log10(derived.params / 1e5)))
    bad = curve_points.decide(done, biased, options)
    errors = {k: v["mean_abs_rel_error"] for k, v in bad["backtest"]["scores"].items()}
    assert bad["used"] is False and errors["final+curve"] > errors["final"] + curve_points.DROP_MARGIN
    assert f"{errors['final+curve']:.2%} with them vs {errors['final']:.2%} without" in bad["decision"]
    # forced on, they are used whatever the comparison says
    assert curve_points.decide(done, biased, FitOptions(n_boot=0, grid_size=2, curve_points=True))["used"] is True


def test_backtest_cli_trains_on_the_curve_points_fit_uses(tmp_path, capsys):
    done, curves = _runs(lengths=(400, 1600, 6400))
    table = curves.merge(done[["run", "params"]], on="run").rename(columns={"run": "run_id"})
    table["flops"] = 6 * table["params"] * table["tokens"]
    path = tmp_path / "curves.csv"
    table.to_csv(path, index=False)
    args = ["backtest", str(path), "--n-boot", "0", "--grid-size", "2", "--no-plots"]
    assert main(args) == 0
    assert "also train on" in capsys.readouterr().out
    with_points = json.loads((tmp_path / "curves_backtest" / "backtest.json").read_text())["backtests"]
    assert with_points["largest_size"]["n_train_derived"] > 0
    assert main([*args, "--no-curve-points"]) == 0
    assert "derived from curves" not in capsys.readouterr().out
    without = json.loads((tmp_path / "curves_backtest" / "backtest.json").read_text())["backtests"]
    assert "n_train_derived" not in without["largest_size"]
