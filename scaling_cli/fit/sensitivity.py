"""How the final loss depends on the learning rate, per model size: LR sensitivity and LR transfer.

LR sensitivity (Wortsman et al. 2023, "Small-scale proxies for large-scale Transformer training
instabilities", Sec. 2): for one model size and setting, over the learning rates swept,

    sensitivity = mean_eta [ min(L(eta), L_init) - L* ],     L* = min_eta L(eta)

where L_init is the loss at initialisation, so a diverged run (or one that ends worse than it
started) costs exactly L_init - L*. L_init is each run's validation loss at step 0 (the evals
table), else ln(vocab_size) (the loss of uniform predictions), else unknown (the group is skipped
if a diverged run needs it). Lower is better: a flat LR basin scores near 0. Runs that share a
learning rate (seeds) are averaged first. The mean runs over each group's own LR grid
(lr_min..lr_max are reported): compare groups swept over the same grid.

Groups are model size (params, clustered in log space), token budget, batch size, and the
stability switches the sensitivity is meant to compare: qk_layernorm, z_loss and parametrization.

LR transfer (Yang et al. 2022, Tensor Programs V, Fig. 1): the best learning rate per width
(d_model) for each parametrization; under μP it should stay put as width grows, under the
standard parametrization it moves. `lr_transfer` reports it and the spread in octaves.

Pure pandas in and out; no I/O.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from scaling_cli.fit.grouping import cluster_log, group_centers

# The switches the sensitivity is split by (Wortsman et al. compare runs with and without them).
SPLIT_COLUMNS = ("qk_layernorm", "z_loss", "parametrization")
# Learning rates equal to this relative precision are one point of the LR axis (seeds share it).
_LR_DECIMALS = 6


def initial_losses(evals: pd.DataFrame) -> pd.Series:
    """run -> validation loss at step 0, from an evals frame with columns run, step, loss."""
    if evals is None or len(evals) == 0 or not {"run", "step", "loss"} <= set(evals.columns):
        return pd.Series(dtype=float)
    first = evals[(evals["step"] == 0) & np.isfinite(evals["loss"])]
    return first.groupby("run")["loss"].mean()


def _init_loss_per_run(runs: pd.DataFrame, init_loss: Mapping | pd.Series | None) -> np.ndarray:
    given = pd.Series(init_loss if init_loss is not None else {}, dtype=float)
    values = runs["run"].map(given).to_numpy(dtype=float) if "run" in runs else np.full(len(runs), np.nan)
    if "vocab_size" in runs:
        uniform = np.log(pd.to_numeric(runs["vocab_size"], errors="coerce").to_numpy(dtype=float))
        values = np.where(np.isfinite(values), values, uniform)
    return values


def _group_keys(runs: pd.DataFrame, split: Sequence[str]) -> list[str]:
    frame_keys = ["_size", "_tokens"]
    if "batch_size" in runs and runs["batch_size"].nunique() > 1:
        frame_keys.append("batch_size")
    return frame_keys + [c for c in split if c in runs.columns]


def lr_sensitivity(runs: pd.DataFrame, init_loss: Mapping | pd.Series | None = None,
                   split: Sequence[str] = SPLIT_COLUMNS) -> pd.DataFrame:
    """One row per (size, tokens, [batch size], split switches) group with >= 2 learning rates.

    runs: run, params, lr, loss, diverged (+ tokens, batch_size, vocab_size and the split columns
    when present); loss may be NaN for diverged runs. init_loss: run -> loss at initialisation.
    Columns: params (group's geometric mean), tokens, the split columns, n_runs, n_lr, n_diverged,
    lr_min, lr_max, lr_best, loss_best (L*), loss_init (mean L_init), sensitivity.
    """
    stats = ["n_runs", "n_lr", "n_diverged", "lr_min", "lr_max", "lr_best", "loss_best", "loss_init", "sensitivity"]
    if len(runs) == 0 or not {"params", "lr", "loss"} <= set(runs.columns):
        return pd.DataFrame(columns=["params", "tokens", *stats])
    f = runs.copy()
    f["diverged"] = f["diverged"].astype(bool) if "diverged" in f else False
    f["_init"] = _init_loss_per_run(f, init_loss)
    loss = f["loss"].to_numpy(dtype=float)
    bad = f["diverged"].to_numpy() | ~np.isfinite(loss)
    # min(L, L_init): a diverged run costs L_init; fmin keeps L when L_init is unknown.
    f["_eff"] = np.where(bad, f["_init"], np.fmin(loss, f["_init"]))
    f = f[np.isfinite(f["lr"].astype(float)) & (f["lr"].astype(float) > 0)]
    f["_size"] = cluster_log(f["params"])
    f["_tokens"] = cluster_log(f["tokens"]) if "tokens" in f else 0
    f["_lr"] = np.round(np.log(f["lr"].astype(float)), _LR_DECIMALS)
    keys = _group_keys(f, split)
    out_cols = ["params", "tokens", *(c for c in keys if not c.startswith("_")), *stats]
    sizes = group_centers(f["params"], f["_size"].to_numpy())
    rows = []
    for key, g in f.groupby(keys, dropna=False, sort=True):
        per_lr = g.groupby("_lr").agg(lr=("lr", "first"), eff=("_eff", "mean"))
        if len(per_lr) < 2 or not np.isfinite(per_lr["eff"]).all():
            continue
        best = per_lr["eff"].idxmin()
        l_star = float(per_lr.loc[best, "eff"])
        key = dict(zip(keys, key if isinstance(key, tuple) else (key,)))
        rows.append({
            "params": sizes.get(int(key["_size"]), float("nan")),
            "tokens": float(np.exp(np.mean(np.log(g["tokens"].astype(float))))) if "tokens" in g else float("nan"),
            **{c: key[c] for c in keys if not c.startswith("_")},
            "n_runs": int(len(g)), "n_lr": int(len(per_lr)), "n_diverged": int(g["diverged"].sum()),
            "lr_min": float(per_lr["lr"].min()), "lr_max": float(per_lr["lr"].max()),
            "lr_best": float(per_lr.loc[best, "lr"]), "loss_best": l_star,
            "loss_init": float(g["_init"].mean()),
            "sensitivity": float((per_lr["eff"] - l_star).mean()),
        })
    return pd.DataFrame(rows, columns=out_cols)


def lr_transfer(runs: pd.DataFrame) -> pd.DataFrame:
    """Best learning rate per (parametrization, d_model, token budget) over finished runs.

    Columns: parametrization, d_model, tokens, n_lr, lr_best, loss_best, lr_edge (True when the best
    LR is the smallest or largest swept: the optimum may lie outside the grid)."""
    cols = ["parametrization", "d_model", "tokens", "n_lr", "lr_best", "loss_best", "lr_edge"]
    if len(runs) == 0 or not {"parametrization", "d_model", "lr", "loss"} <= set(runs.columns):
        return pd.DataFrame(columns=cols)
    f = runs[np.isfinite(runs["loss"].astype(float)) & runs["parametrization"].notna()].copy()
    if "diverged" in f:
        f = f[~f["diverged"].astype(bool)]
    if f.empty:
        return pd.DataFrame(columns=cols)
    f["_tokens"] = cluster_log(f["tokens"]) if "tokens" in f else 0
    f["_lr"] = np.round(np.log(f["lr"].astype(float)), _LR_DECIMALS)
    all_lrs = runs.assign(_lr=np.round(np.log(runs["lr"].astype(float)), _LR_DECIMALS))
    rows = []
    for (param, width, _), g in f.groupby(["parametrization", "d_model", "_tokens"], sort=True):
        per_lr = g.groupby("_lr").agg(lr=("lr", "first"), loss=("loss", "mean"))
        if len(per_lr) < 2:
            continue
        best = per_lr["loss"].idxmin()
        swept = all_lrs[(all_lrs["parametrization"] == param) & (all_lrs["d_model"] == width)]["_lr"]
        rows.append({"parametrization": param, "d_model": int(width),
                     "tokens": float(np.exp(np.mean(np.log(g["tokens"].astype(float))))) if "tokens" in g else math.nan,
                     "n_lr": int(len(per_lr)), "lr_best": float(per_lr.loc[best, "lr"]),
                     "loss_best": float(per_lr.loc[best, "loss"]),
                     "lr_edge": bool(best in (swept.min(), swept.max()))})
    return pd.DataFrame(rows, columns=cols)


def report(runs: pd.DataFrame, evals: pd.DataFrame | None = None) -> dict:
    """The fit.json entries: {"lr_sensitivity": ..., "lr_transfer": ...}, each with a status."""
    table = lr_sensitivity(runs, initial_losses(evals) if evals is not None else None)
    sens = ({"law": "lr_sensitivity", "status": "ok", "split_by": [c for c in SPLIT_COLUMNS if c in runs.columns],
             "definition": "mean over swept LRs of min(L(lr), L_init) - L*, L* = best loss of the group "
                           "(Wortsman et al. 2023); L_init = step-0 validation loss, else ln(vocab)",
             "groups": table.to_dict("records")} if len(table) else
            {"law": "lr_sensitivity", "status": "not enough data",
             "reason": "no group (size, tokens, qk_layernorm, z_loss, parametrization) has >= 2 learning "
                       "rates with a known loss at initialisation for its diverged runs"})
    transfer = lr_transfer(runs)
    if len(transfer):
        spread = {}
        for param, g in transfer.groupby("parametrization"):
            if len(g) >= 2:
                spread[str(param)] = float(np.log2(g["lr_best"].max() / g["lr_best"].min()))
        trans = {"law": "lr_transfer", "status": "ok", "widths": transfer.to_dict("records"),
                 "lr_best_spread_octaves": spread,
                 "note": "spread = log2(max/min best LR across widths); μP should keep it near 0 "
                         "(Tensor Programs V), the standard parametrization shifts the optimum with width"}
    else:
        trans = {"law": "lr_transfer", "status": "not enough data",
                 "reason": "no parametrization/d_model columns or no width with >= 2 learning rates"}
    return {"lr_sensitivity": sens, "lr_transfer": trans}
