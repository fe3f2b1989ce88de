"""`scaling-cli fit` end to end: a CSV and a run store in, fit.json and PNGs out; bad input exits 2."""

import json

import numpy as np
import pandas as pd
import pytest

from scaling_cli.cli import main
from scaling_cli.fit import laws, synthetic

FAST = ["--n-boot", "20", "--grid-size", "2"]


@pytest.fixture(scope="module")
def csv_fit(tmp_path_factory):
    """A table of IsoFLOP runs plus LR sweeps (with diverged runs), fitted once for the module."""
    tmp = tmp_path_factory.mktemp("table")
    iso = synthetic.isoflop_runs(seed=0).assign(lr=1e-3, status="done")
    sweep = synthetic.lr_sweep_runs(seed=1)
    path = tmp / "runs.csv"
    pd.concat([iso, sweep], ignore_index=True).rename(columns={"loss": "val_loss"}).to_csv(path, index=False)
    return tmp, path


def test_fit_csv_writes_report_and_plots(csv_fit, capsys):
    tmp, path = csv_fit
    assert main(["fit", str(path), "--loss-col", "val_loss", *FAST]) == 0
    out = capsys.readouterr().out
    assert "selected loss law" in out and "chinchilla" in out
    outdir = tmp / "runs_fit"  # default: <table stem>_fit beside the table
    report = json.loads((outdir / "fit.json").read_text())
    assert {"schema", "data", "laws", "selection", "holdout", "diagnostics", "plots", "options"} <= set(report)
    assert set(report["laws"]) >= {"chinchilla", "compute_only", "approach1", "approach2", "lr_opt", "batch_size_opt", "curves"}
    assert report["data"]["columns"]["loss"] == "val_loss" and report["data"]["n_diverged"] > 0
    chin = report["laws"]["chinchilla"]
    assert chin["status"] == "ok" and set(chin["params"]) == {"E", "A", "B", "alpha", "beta"}
    assert len(chin["samples"]) == 20 and all(lo <= hi for lo, hi in chin["intervals"].values())
    assert report["laws"]["approach2"]["status"] == "ok"
    assert report["laws"]["lr_opt"]["status"] == "ok"
    assert report["laws"]["curves"]["status"] == "not enough data"
    assert report["selection"]["loss_law"] in ("chinchilla", "chinchilla_fixed_e", "overtrain", "overtrain_fixed_e",
                                               "compute_only")
    assert report["selection"]["reliable"] and report["laws"][report["selection"]["loss_law"]]["reliable"]
    assert {"largest_size", "largest_compute"} == set(report["backtests"])
    assert "(backtest: mean |relative error| on held-out runs)" in out and "<- selected" in out  # one screen
    assert "rmse_log" in report["diagnostics"]["chinchilla"]["residuals"]
    assert "heldout" in report["diagnostics"]["chinchilla"]
    for png in ("loss_vs_compute.png", "isoflop.png", "lr_sweep.png", "fitted_vs_observed.png"):
        assert png in report["plots"] and (outdir / png).stat().st_size > 1000


def test_predict_json_after_fit(csv_fit, capsys):
    tmp, path = csv_fit
    outdir = tmp / "explicit"
    assert main(["fit", str(path), "--loss-col", "val_loss", "-o", str(outdir), "--no-plots", *FAST]) == 0
    capsys.readouterr()
    assert main(["predict", "--params", "7e9", "--tokens", "1.4T", "--fit", str(outdir / "fit.json"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert {"params", "tokens", "flops", "loss", "loss_lo", "loss_hi", "lr_opt", "law"} <= set(result)
    # issue 15: the law used, how far beyond the fitted compute, and its backtest error
    assert {"extrapolation_factor", "backtest_error", "reliable", "warnings"} <= set(result)
    largest = pd.read_csv(path)["flops"].max()
    assert result["extrapolation_factor"] == pytest.approx(result["flops"] / largest, rel=1e-6)
    assert 0 < result["backtest_error"] < 0.02 and result["reliable"] is True
    assert result["loss_lo"] < result["loss"] < result["loss_hi"]
    assert result["tokens"] == 1.4e12 and result["flops"] == pytest.approx(6 * 7e9 * 1.4e12)
    assert main(["predict", "--flops", "6e22", "--fit", str(outdir)]) == 0
    text = capsys.readouterr().out
    assert "N_opt" in text and "CI" in text and "PI" in text and "law" in text
    assert "; backtest mean |error|" in text and "x the largest fitted compute" in text


def _write_store(root, seed=0):
    """A small run store in the layout scaling_cli.store reads: 5 sizes x 2 schedules + odd runs."""
    from scaling_cli.fit import curve_laws
    from scaling_cli.store import RunStore

    store = RunStore(str(root))
    rng = np.random.default_rng(seed)
    batch = 20_000
    runs = [(n, s, steps) for n, steps in zip((2e6, 5e6, 1.2e7, 3e7, 8e7), (150, 200, 250, 300, 350))
            for s in ("cosine", "wsd")]
    for i, (n, sched, steps) in enumerate(runs + [(1e7, "cosine", 200), (1e7, "cosine", 200)]):
        run_id = f"run{i:02d}"
        lr = (curve_laws.cosine_schedule(steps, 1e-3, 20) if sched == "cosine"
              else curve_laws.wsd_schedule(steps, 1e-3, 20, 0.2))
        step = np.arange(1, steps + 1)
        tokens = step * batch
        # Tissue et al.'s law per size: the size sets the floor, the schedule the approach to it.
        s1, s2 = curve_laws.tissue_features(lr, 20)
        floor = laws.EPOCH_CHINCHILLA["E"] + laws.EPOCH_CHINCHILLA["A"] / n ** laws.EPOCH_CHINCHILLA["alpha"]
        loss = floor + curve_laws.tissue_loss((s1, s2), 0.0, 0.6, 0.5, 0.3) + rng.normal(0, 0.01, steps)
        flops = 6 * n * tokens
        store.write_json(run_id, "spec.json", {"run_id": run_id, "name": run_id, "sweep": "test", "params": n,
                                               "params_nonembed": 0.8 * n, "tokens": float(tokens[-1]),
                                               "flops": float(flops[-1]), "lr": 1e-3, "batch_size_tokens": batch,
                                               "schedule": sched, "warmup": 20, "seed": 0})
        store.write_table(run_id, "curve", pd.DataFrame({"step": step, "tokens": tokens, "flops": flops, "lr": lr,
                                                         "loss": loss, "grad_norm": 1.0, "tokens_per_s": 1e5}))
        ev = step[19::20]
        store.write_table(run_id, "evals", pd.DataFrame({"step": ev, "tokens": tokens[ev - 1], "flops": flops[ev - 1],
                                                         "task": "val", "metric": "loss", "value": loss[ev - 1]}))
        state = {len(runs): "diverged", len(runs) + 1: "pending"}.get(i, "done")
        store.set_status(run_id, state, step=steps)


def test_fit_a_run_store_with_curves(tmp_path, capsys):
    root = tmp_path / "runs"
    _write_store(root)
    assert main(["fit", str(root), *FAST, "--curve-groups", "1"]) == 0
    captured = capsys.readouterr()
    assert "1 pending" in captured.err
    report = json.loads((root / "_fit" / "fit.json").read_text())
    assert report["data"]["source"] == "store" and report["data"]["n_points"] == 10
    assert report["data"]["n_diverged"] == 1
    assert report["laws"]["approach1"]["points"] == "validation evals"
    curves = report["laws"]["curves"]
    assert curves["status"] == "ok" and len(curves["groups"]) == 1
    group = curves["groups"][0]
    assert group["schedules"] == ["cosine", "wsd"]
    assert group["laws"]["tissue"]["status"] == "ok"
    assert group["laws"]["tissue"]["heldout_mean_abs_rel_error"] < 0.01
    assert "curves.png" in report["plots"]
    assert main(["fit", str(root), "--params-kind", "nonembed", "-o", str(tmp_path / "ne"), "--no-plots",
                 "--curve-groups", "0", *FAST]) == 0
    report = json.loads((tmp_path / "ne" / "fit.json").read_text())
    assert report["data"]["params_kind"] == "nonembed" and report["data"]["columns"]["params"] == "params_nonembed"
    assert report["laws"]["curves"]["status"] == "skipped"


def test_bad_inputs_exit_2_with_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    synthetic.chinchilla_runs(10).drop(columns=["tokens"]).to_csv(bad, index=False)
    assert main(["fit", str(bad), *FAST]) == 2
    err = capsys.readouterr().err
    assert "tokens" in err and "--tokens-col" in err and err.count("\n") == 1
    assert main(["predict", "--params", "1e9", "--fit", str(tmp_path / "nope" / "fit.json")]) == 2
    assert "scaling-cli fit" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["predict", "--params", "lots"])
