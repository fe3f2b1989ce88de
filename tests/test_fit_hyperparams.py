"""LR / batch-size optima: parabola vertex per cell, diverged runs as loss above range, power laws."""

import numpy as np
import pandas as pd
import pytest

from scaling_cli.fit import hyperparams, laws, synthetic
from scaling_cli.fit.bootstrap import FitOptions


def test_parabola_vertex_is_exact_for_a_quadratic():
    lr = np.geomspace(1e-4, 1e-2, 7)
    loss = 3.0 + 0.1 * np.log(lr / 1.3e-3) ** 2
    cell = hyperparams.cell_optimum(lr, loss, level=0.9)
    assert cell["status"] == "ok"
    assert cell["opt"] == pytest.approx(1.3e-3, rel=1e-6)
    assert cell["interval"][0] <= 1.3e-3 <= cell["interval"][1]


def test_edges_and_diverged_neighbours():
    lr = np.geomspace(1e-4, 1e-2, 5)
    rising = 3.0 + np.log(lr / 1e-5) ** 2 * 0.01
    assert hyperparams.cell_optimum(lr, rising, 0.9)["status"] == "edge"  # best is the smallest LR
    # The best finite LR is the largest finite one, but a diverged run above bounds the optimum:
    # the vertex may lie between them and the cell is usable.
    loss = 3.0 + 0.05 * np.log(lr / 4e-3) ** 2
    loss[-1] = np.inf
    cell = hyperparams.cell_optimum(lr, loss, 0.9)
    assert cell["status"] == "ok" and cell["n_diverged"] == 1
    assert cell["opt"] == pytest.approx(4e-3, rel=1e-6)
    assert hyperparams.cell_optimum(lr[:2], loss[:2], 0.9)["status"] == "skipped"


def test_lr_power_law_recovers_step_law_exponents():
    df = synthetic.lr_sweep_runs(sizes=(1e7, 3e7, 1e8, 3e8, 1e9), tokens_per_param=(5.0, 20.0, 80.0),
                                 n_lr=9, seed=0, noise=0.002)
    entry = hyperparams.fit_optimal("lr", df["params"], df["tokens"], df["flops"], df["lr"], df["loss"],
                                    df["status"] == "diverged", options=FitOptions(n_boot=200, level=0.95))
    assert entry["status"] == "ok" and len(entry["cells"]) == 15
    a, b, c = laws.STEP_LAW["lr"]
    for cell in entry["cells"]:  # each cell's optimum near the Step Law value it was drawn around
        true = a * cell["params"] ** b * cell["tokens"] ** c
        assert cell["opt"] == pytest.approx(true, rel=0.15)
    form = entry["forms"]["step_law"]
    assert entry["preferred"] == "step_law"
    for true, got, (lo, hi) in zip((b, c), form["exponents"], form["exponent_intervals"]):
        assert lo <= true <= hi
        assert got == pytest.approx(true, abs=0.05)
    assert form["coef_interval"][0] <= a <= form["coef_interval"][1]
    assert entry["forms"]["compute"]["status"] == "ok"
    got = hyperparams.predict_optimum(entry, 1e10, 2e11, 6 * 1e10 * 2e11, 0.9)
    assert got["value"] == pytest.approx(a * 1e10**b * 2e11**c, rel=0.3)
    assert got["interval"][0] < got["value"] < got["interval"][1]


def test_batch_size_optimum_uses_tokens_and_profiles_out_lr():
    """Two LRs per batch size: the worse one must not shift the batch optimum."""
    rng = np.random.default_rng(0)
    rows = []
    for n in (1e7, 1e8):
        for d in (1e9, 4e9, 1.6e10):
            b_opt = 0.58 * d**0.571  # Step Law B_opt(D), tokens
            for bs in b_opt * np.geomspace(1 / 8, 8, 7):
                for lr in (1e-3, 2e-3):  # the LR sweep inside each cell is profiled out
                    loss = 3 + 0.03 * np.log(bs / b_opt) ** 2 + (0.01 if lr == 2e-3 else 0) + rng.normal(0, 0.001)
                    rows.append((n, d, 6 * n * d, bs, lr, loss))
    n, d, c, bs, lr, loss = (np.array(v) for v in zip(*rows))
    entry = hyperparams.fit_optimal("batch_size", n, d, c, bs, loss, np.zeros(len(n), bool), options=FitOptions(n_boot=100))
    assert entry["status"] == "ok" and entry["preferred"] == "step_law"
    form = entry["forms"]["step_law"]
    assert form["inputs"] == ["tokens"]
    assert form["exponents"][0] == pytest.approx(0.571, abs=0.03)


def test_no_sweep_means_not_enough_data():
    df = synthetic.lr_sweep_runs(sizes=(1e7,), tokens_per_param=(20.0,), n_lr=2)
    entry = hyperparams.fit_optimal("lr", df["params"], df["tokens"], df["flops"], df["lr"], df["loss"],
                                    df["status"] == "diverged", options=FitOptions(n_boot=10))
    assert entry["status"] == "not enough data"


def test_mup_and_standard_runs_sharing_cells_get_their_own_optima():
    """Standard runs follow the Step Law; μP runs of the same (N, D) have one optimum at every size
    and a lower loss, so a mixed cell would have taken the μP optimum for both."""
    std = synthetic.lr_sweep_runs(sizes=(1e7, 3e7, 1e8, 3e8), tokens_per_param=(10.0, 40.0), n_lr=7, seed=0, noise=0.001)
    std["parametrization"] = "standard"
    mup = std.copy()
    mup["parametrization"] = "mup"
    mup["lr"] = 4e-3 * np.geomspace(1 / 8, 8, 7)[np.arange(len(mup)) % 7]
    base = std.groupby(["params", "tokens"])["loss"].transform("min")  # each cell's standard minimum
    mup["loss"] = (base - 0.05) + 0.08 * np.log(mup["lr"] / 4e-3) ** 2
    mup["status"] = "done"
    df = pd.concat([std, mup], ignore_index=True)
    entry = hyperparams.fit_optimal("lr", df["params"], df["tokens"], df["flops"], df["lr"], df["loss"],
                                    df["status"] == "diverged", options=FitOptions(n_boot=50),
                                    parametrization=df["parametrization"])
    assert entry["status"] == "ok" and entry["parametrization"] == "standard"
    by_label = {p: [c for c in entry["cells"] if c["parametrization"] == p] for p in ("standard", "mup")}
    assert len(by_label["standard"]) == len(by_label["mup"]) == 8
    a, b, c = laws.STEP_LAW["lr"]
    for cell in by_label["standard"]:
        assert cell["opt"] == pytest.approx(a * cell["params"] ** b * cell["tokens"] ** c, rel=0.15)
    for cell in by_label["mup"]:
        assert cell["opt"] == pytest.approx(4e-3, rel=0.02)
    assert entry["forms"]["step_law"]["exponents"][0] == pytest.approx(b, abs=0.05)
    mup_law = entry["by_parametrization"]["mup"]["forms"]["step_law"]
    assert abs(mup_law["exponents"][0]) < 0.02 and abs(mup_law["exponents"][1]) < 0.02
    # Without the labels each cell mixes both sweeps: some lose their parabola, others move.
    mixed = hyperparams.fit_optimal("lr", df["params"], df["tokens"], df["flops"], df["lr"], df["loss"],
                                    df["status"] == "diverged", options=FitOptions(n_boot=0))
    wrong = [cell for cell in mixed["cells"] if abs(np.log(cell["opt"] / (a * cell["params"] ** b * cell["tokens"] ** c))) > 0.3]
    assert len(mixed["cells"]) < 8 and wrong
