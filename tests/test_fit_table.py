"""Input validation: column roles, filters, bad values, NaN rows, FLOPs fallback, stores."""

import numpy as np
import pandas as pd
import pytest

from scaling_cli.errors import UserError
from scaling_cli.fit import synthetic
from scaling_cli.fit.table import ColumnSpec, DataWarning, load_input, prepare_table


def _table(n=12):
    return synthetic.chinchilla_runs(n, seed=0).drop(columns=["flops"])


def test_missing_column_names_the_flag():
    df = _table().rename(columns={"loss": "val_loss"})
    with pytest.raises(UserError, match=r"'loss'.*--loss-col"):
        prepare_table(df, ColumnSpec())
    ok = prepare_table(df, ColumnSpec(loss="val_loss"))
    assert ok.meta["columns"]["loss"] == "val_loss"
    with pytest.raises(UserError, match="--flops-col"):
        prepare_table(df, ColumnSpec(loss="val_loss", flops="C"))


@pytest.mark.parametrize("col", ["params", "tokens", "loss"])
def test_non_positive_values_are_rejected(col):
    df = _table()
    df.loc[3, col] = 0.0 if col != "loss" else -1.0
    with pytest.raises(UserError, match=rf"{col}.*non-positive"):
        prepare_table(df, ColumnSpec())


def test_non_numeric_values_are_rejected():
    df = _table().astype({"params": object})
    df.loc[2, "params"] = "big"
    with pytest.raises(UserError, match="non-numeric"):
        prepare_table(df, ColumnSpec())


def test_too_few_points():
    with pytest.raises(UserError, match="at least 5"):
        prepare_table(_table(4), ColumnSpec())


def test_nan_rows_dropped_with_a_counting_warning():
    df = _table(12)
    df.loc[[1, 5, 7], "loss"] = np.nan
    with pytest.warns(DataWarning, match="dropped 3 row"):
        prep = prepare_table(df, ColumnSpec())
    assert len(prep.runs) == 9 and prep.meta["n_dropped_nan"] == 3


def test_filters_flops_fallback_and_params_kind():
    df = _table(20)
    prep = prepare_table(df, ColumnSpec(where=["params < 1e9"], params_kind="nonembed"))
    assert (prep.runs["params"] < 1e9).all() and prep.meta["filters"] == ["params < 1e9"]
    assert prep.meta["params_kind"] == "nonembed"
    assert "6*N*D" in prep.meta["flops_source"]
    np.testing.assert_allclose(prep.runs["flops"], 6 * prep.runs["params"] * prep.runs["tokens"])
    with pytest.raises(UserError, match="--where"):
        prepare_table(df, ColumnSpec(where=["params <<< 3"]))
    with pytest.raises(UserError, match="--where"):
        prepare_table(df, ColumnSpec(where=["no_such_column > 3"]))
    with pytest.raises(UserError, match="params-kind"):
        ColumnSpec(params_kind="embedding")


def test_diverged_runs_are_kept_and_unfinished_runs_skipped():
    df = synthetic.lr_sweep_runs(sizes=(1e7, 1e8), tokens_per_param=(20.0,), n_lr=7)
    df.loc[0, "status"] = "running"
    with pytest.warns(DataWarning, match="1 running"):
        prep = prepare_table(df, ColumnSpec())
    assert prep.meta["n_diverged"] == int((df["status"] == "diverged").sum())
    assert prep.runs["diverged"].sum() == prep.meta["n_diverged"]
    assert prep.runs.loc[prep.runs["diverged"], "loss"].isna().all()


def test_long_format_table_gives_final_points_and_curves(tmp_path):
    rows = []
    for r, n in enumerate((1e7, 3e7, 1e8, 3e8, 1e9, 3e9)):
        for step in range(1, 11):
            d = 1e8 * step
            rows.append({"run_id": f"r{r}", "step": step, "params": n, "tokens": d,
                         "loss": 2 + 400 / n**0.34 + 400 / d**0.28, "lr": 1e-3})
    path = tmp_path / "long.parquet"
    pd.DataFrame(rows).to_parquet(path)
    prep = load_input(str(path), ColumnSpec())
    assert len(prep.runs) == 6 and (prep.runs["tokens"] == 1e9).all()
    assert len(prep.curves) == 60 and set(prep.curves.columns) >= {"run", "step", "flops", "loss", "lr"}


def test_paths_that_are_neither_table_nor_store(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        load_input(str(tmp_path / "missing.csv"), ColumnSpec())
    odd = tmp_path / "runs.xlsx"
    odd.write_text("x")
    with pytest.raises(UserError, match="format"):
        load_input(str(odd), ColumnSpec())
    with pytest.raises(UserError, match="no run folders"):
        load_input(str(tmp_path), ColumnSpec())
