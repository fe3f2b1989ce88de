"""Tests for scaling_cli/fit/sensitivity.py (LR sensitivity per size, LR transfer across width) on
synthetic runs with hand-computed values, and the plots and fit-table plumbing that carry them.

    pytest tests/test_fit_sensitivity.py
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from scaling_cli.fit import sensitivity
from scaling_cli.fit.table import ColumnSpec, prepare_table

LRS = [1e-3, 2e-3, 4e-3, 8e-3]
NAN = float("nan")


def _runs(prefix: str, params: float, losses: list[float], **extra) -> list[dict]:
    """One run per LR; a NaN loss is a diverged run."""
    return [{"run": f"{prefix}{i}", "params": params, "tokens": 1e7, "lr": lr, "loss": loss,
             "diverged": math.isnan(loss), "vocab_size": 512, "qk_layernorm": False, "z_loss": 0.0, **extra}
            for i, (lr, loss) in enumerate(zip(LRS, losses))]


@pytest.fixture
def runs() -> pd.DataFrame:
    return pd.DataFrame(
        _runs("a", 1e6, [4.0, 3.5, 3.8, NAN])                          # L_init from evals: 6.0
        + _runs("b", 1e6, [4.1, 3.6, 3.5, 3.9], qk_layernorm=True)     # L_init from evals: 6.0
        + _runs("c", 4e6, [3.2, 3.0, 7.0, NAN])                        # no evals: ln(512)
        + _runs("z", 4e6, [3.3, 3.1, 3.4, 3.6], z_loss=1e-4))          # no evals: ln(512)


@pytest.fixture
def evals() -> pd.DataFrame:
    rows = [{"run": f"{p}{i}", "step": 0, "loss": 6.0} for p in "ab" for i in range(4)]
    rows += [{"run": "a1", "step": 100, "loss": 3.9}]  # later evals are not the initial loss
    return pd.DataFrame(rows)


def test_initial_losses_are_the_step_zero_validation_losses(evals):
    init = sensitivity.initial_losses(evals)
    assert init.to_dict() == {f"{p}{i}": 6.0 for p in "ab" for i in range(4)}
    assert sensitivity.initial_losses(pd.DataFrame()).empty


def test_lr_sensitivity_hand_computed(runs, evals):
    table = sensitivity.lr_sensitivity(runs, sensitivity.initial_losses(evals))
    table = table.assign(params=table["params"].round()).set_index(["params", "qk_layernorm", "z_loss"])
    assert len(table) == 4
    # a: min(L, 6.0) = [4.0, 3.5, 3.8, 6.0 (diverged)], L* = 3.5 -> mean(0.5, 0, 0.3, 2.5) = 0.825
    a = table.loc[(1e6, False, 0.0)]
    assert a["sensitivity"] == pytest.approx(0.825)
    assert (a["loss_best"], a["lr_best"], a["loss_init"], a["n_diverged"], a["n_lr"]) == (3.5, 2e-3, 6.0, 1, 4)
    # b (qk-layernorm): L* = 3.5 -> mean(0.6, 0.1, 0, 0.4) = 0.275
    assert table.loc[(1e6, True, 0.0), "sensitivity"] == pytest.approx(0.275)
    # c: L_init = ln 512; 7.0 (worse than at init) and the diverged run both count as ln 512; L* = 3.0
    c = table.loc[(4e6, False, 0.0)]
    assert c["loss_init"] == pytest.approx(math.log(512))
    assert c["sensitivity"] == pytest.approx((0.2 + 0 + 2 * (math.log(512) - 3.0)) / 4)
    # z (z-loss 1e-4): L* = 3.1 -> mean(0.2, 0, 0.3, 0.5) = 0.25
    assert table.loc[(4e6, False, 1e-4), "sensitivity"] == pytest.approx(0.25)
    assert (table["lr_min"] == 1e-3).all() and (table["lr_max"] == 8e-3).all()


def test_seeds_at_one_lr_are_averaged_first(runs, evals):
    seed = pd.DataFrame(_runs("s", 1e6, [NAN, 3.7, NAN, NAN])).iloc[[1]]  # a second seed at lr 2e-3
    table = sensitivity.lr_sensitivity(pd.concat([runs[runs.run.str.startswith("a")], seed]),
                                       sensitivity.initial_losses(evals).to_dict() | {"s1": 6.0})
    row = table.iloc[0]
    # lr 2e-3: mean(3.5, 3.7) = 3.6 = L* -> mean(0.4, 0, 0.2, 2.4) = 0.75
    assert (row["n_runs"], row["n_lr"], row["loss_best"]) == (5, 4, pytest.approx(3.6))
    assert row["sensitivity"] == pytest.approx(0.75)


def test_groups_without_two_lrs_or_an_initial_loss_are_skipped(runs):
    one_lr = runs[runs["lr"] == 1e-3]
    assert sensitivity.lr_sensitivity(one_lr).empty
    no_vocab = runs[runs.run.str.startswith("a")].drop(columns="vocab_size")
    assert sensitivity.lr_sensitivity(no_vocab).empty  # a diverged run with no known L_init
    report = sensitivity.report(one_lr)
    assert report["lr_sensitivity"]["status"] == "not enough data"
    assert report["lr_transfer"]["status"] == "not enough data"


def _transfer_runs() -> pd.DataFrame:
    """Standard: the best LR halves per width doubling; μP: it stays at 4e-3."""
    rows = []
    for param, best_of in (("standard", {32: 8e-3, 64: 4e-3, 128: 2e-3}), ("mup", {32: 4e-3, 64: 4e-3, 128: 4e-3})):
        for width, best in best_of.items():
            for lr in [1e-3, 2e-3, 4e-3, 8e-3, 1.6e-2]:
                loss = 3.0 + 0.1 * math.log2(lr / best) ** 2 - 0.1 * math.log2(width)
                diverged = param == "standard" and width == 128 and lr == 1.6e-2
                rows.append({"run": f"{param}{width}-{lr}", "params": width ** 2 * 100, "tokens": 1e7, "lr": lr,
                             "loss": NAN if diverged else loss, "diverged": diverged, "d_model": width,
                             "parametrization": param, "vocab_size": 512, "qk_layernorm": False, "z_loss": 0.0})
    return pd.DataFrame(rows)


def test_lr_transfer_finds_the_best_lr_per_width_and_its_spread():
    runs = _transfer_runs()
    table = sensitivity.lr_transfer(runs).set_index(["parametrization", "d_model"])
    assert table.loc[("standard", 32), "lr_best"] == 8e-3 and table.loc[("standard", 128), "lr_best"] == 2e-3
    assert (table.loc["mup", "lr_best"] == 4e-3).all() and not table["lr_edge"].any()
    assert table.loc[("standard", 128), "n_lr"] == 4  # the diverged LR has no loss
    report = sensitivity.report(runs)
    assert report["lr_transfer"]["lr_best_spread_octaves"] == {"mup": 0.0, "standard": pytest.approx(2.0)}
    split = report["lr_sensitivity"]["split_by"]
    assert split == ["qk_layernorm", "z_loss", "parametrization"]
    assert {g["parametrization"] for g in report["lr_sensitivity"]["groups"]} == {"standard", "mup"}


def test_plots_draw_sensitivity_and_transfer(tmp_path):
    import matplotlib

    from scaling_cli import plots

    matplotlib.use("Agg")
    runs = _transfer_runs()
    report = {"stability": sensitivity.report(runs)}
    paths = [plots.plot_lr_sensitivity(report, str(tmp_path)), plots.plot_mup_transfer(report, runs, str(tmp_path))]
    assert [p.rsplit("/", 1)[-1] for p in paths] == ["lr_sensitivity.png", "mup_transfer.png"]
    assert all((tmp_path / p.rsplit("/", 1)[-1]).stat().st_size > 1000 for p in paths)
    assert plots.plot_mup_transfer({"stability": sensitivity.report(runs.iloc[:1])}, runs, str(tmp_path)) is None


def test_fit_tables_carry_the_stability_columns():
    runs = _transfer_runs().rename(columns={"run": "run_id"})
    runs["status"] = np.where(runs["diverged"], "diverged", "done")
    prepared = prepare_table(runs.drop(columns="diverged"), ColumnSpec())
    for column in ("parametrization", "d_model", "vocab_size", "qk_layernorm", "z_loss"):
        assert column in prepared.runs.columns
    assert sensitivity.report(prepared.runs)["lr_transfer"]["status"] == "ok"
