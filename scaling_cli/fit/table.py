"""Inputs of `scaling-cli fit`: a plain table of runs or a run store, validated into one frame.

This is the one fit module that reads files. Everything downstream receives `Prepared`: a runs
frame with canonical columns

    run, params, tokens, flops, loss, lr, batch_size, status, diverged   (+ schedule, warmup,
    parametrization, qk_layernorm, z_loss, d_model, vocab_size when present)

one row per run (loss NaN for diverged runs, which are kept: they are data for LR optima), the
optional per-step curves (run, step, flops, tokens, lr, loss) and validation losses
(run, step, flops, tokens, loss), and `meta`, which records what was used and how (columns,
filters, parameter-count kind, FLOPs source, dropped rows) for fit.json.

A table is CSV or Parquet with one row per run, or one row per (run, step) when it has both a
`run_id` and a `step` column (then the last step of each run is its final point and all rows
form its curve). Bad input raises UserError naming the column and the fix; rows with a missing
value are dropped with a DataWarning that counts them.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from scaling_cli import units
from scaling_cli.errors import UserError
from scaling_cli.fit.laws import FLOPS_PER_PARAM_TOKEN

TABLE_SUFFIXES = {".csv": "csv", ".tsv": "tsv", ".parquet": "parquet", ".pq": "parquet"}
REQUIRED = ("params", "tokens", "loss")
OPTIONAL = ("flops", "lr", "batch_size")
# Statuses of a store's runs that are data; pending/running/failed runs carry no final loss.
KEPT_STATUSES = ("done", "diverged")


class DataWarning(UserWarning):
    """Rows were dropped or values derived; the message counts them."""


@dataclass
class ColumnSpec:
    """Which input column plays which role, and which rows to use."""

    params: str = "params"
    tokens: str = "tokens"
    loss: str = "loss"
    flops: str | None = None       # None: use a 'flops' column if present, else 6*N*D
    lr: str | None = None          # None: 'lr' if present
    batch_size: str | None = None  # None: 'batch_size' if present
    where: list[str] = field(default_factory=list)
    params_kind: str = "total"     # 'total', 'nonembed', or 'auto' (whichever backtests better)
    params_alt: str | None = None  # the other count (backtest comparison); None: params_nonembed / params
    metrics: list[str] | None = None  # downstream metric columns ('COL' or 'COL:KIND'); None: auto-detect
    chance: float | None = None    # chance accuracy of every accuracy metric without a <task>_chance column
    loss_unit: str = "auto"        # 'auto' (scaling_cli.units: from tokenizer and vocab_size), or a unit

    def __post_init__(self) -> None:
        if self.params_kind not in ("total", "nonembed", "auto"):
            raise UserError(f"--params-kind must be 'total', 'nonembed' or 'auto', got {self.params_kind!r}")
        if self.loss_unit not in ("auto", *units.UNITS):
            raise UserError(f"--loss-unit must be auto, {' or '.join(units.UNITS)}, got {self.loss_unit!r}")


@dataclass
class Prepared:
    runs: "object"                 # pandas DataFrame, canonical columns
    curves: "object | None" = None
    evals: "object | None" = None
    meta: dict = field(default_factory=dict)
    validation: "object | None" = None
    """Validation targets (rows with role 'validation'), kept out of `runs` and so out of every fit:
    run, name, status, params, tokens, flops, loss (NaN unless done) and params_alt when known."""


def is_table(path: str) -> bool:
    return Path(str(path).split("?")[0]).suffix.lower() in TABLE_SUFFIXES


def read_table(path: str):
    """Read a CSV/TSV/Parquet table (local path or fsspec URL) into a DataFrame."""
    import pandas as pd

    kind = TABLE_SUFFIXES.get(Path(str(path)).suffix.lower())
    if kind is None:
        raise UserError(f"{path}: not a table (.csv, .tsv, .parquet) and not a run-store directory")
    if "://" not in str(path) and not Path(path).exists():
        raise UserError(f"{path}: no such file; pass a runs table (.csv/.parquet) or a run-store directory")
    try:
        if kind == "parquet":
            return pd.read_parquet(path)
        return pd.read_csv(path, sep="\t" if kind == "tsv" else ",")
    except (OSError, ValueError) as err:
        raise UserError(f"{path}: cannot read the table ({err}); check the file format") from err


def _numeric(df, col: str, role: str):
    import pandas as pd

    values = pd.to_numeric(df[col], errors="coerce")
    bad = values.isna() & df[col].notna()
    if bad.any():
        example = df[col][bad].iloc[0]
        raise UserError(f"column {col!r} ({role}) has {int(bad.sum())} non-numeric value(s), e.g. {example!r}; "
                        "fix the table or pick another column")
    return values.astype(float)


def _apply_filters(df, where: list[str]):
    for expr in where:
        try:
            out = df.query(expr)
        except Exception as err:  # pandas raises many types for a bad expression
            raise UserError(f"--where {expr!r}: {type(err).__name__}: {err}; use pandas query syntax on the "
                            f"table's columns ({', '.join(map(str, df.columns))}), e.g. \"params < 5e8\"") from err
        df = out
    return df


def _resolve(df, spec: ColumnSpec, role: str) -> str | None:
    explicit = getattr(spec, role)
    name = explicit if explicit is not None else role
    if name in df.columns:
        return name
    if role in REQUIRED or explicit is not None:
        flag = f"--{role.replace('_', '-')}-col"
        raise UserError(f"column {name!r} ({role}) not found; available: {', '.join(map(str, df.columns))}; "
                        f"name it with {flag} NAME")
    return None


def _metric_columns(df, spec: ColumnSpec, taken: set[str]) -> dict[str, dict]:
    """Downstream metric columns -> {"kind", "chance", "n_items", "scale"}: named with --metric-col or
    auto-detected by suffix (scaling_cli.fit.downstream.detect_metric_columns). Accuracies given in
    percent (any value > 1) are divided by 100. Chance and item counts come from the task's
    `<task>_chance` and `<task>_n` columns (written by the sweep's evals) or --chance."""
    import pandas as pd

    from scaling_cli.fit import downstream

    if spec.metrics:
        chosen = {}
        for item in spec.metrics:
            try:
                col, kind = downstream.parse_metric_spec(item, df.columns)
            except ValueError as err:
                raise UserError(str(err)) from err
            chosen[col] = kind
    else:
        chosen = {c: k for c, k in downstream.detect_metric_columns(df.columns, exclude=taken).items()
                  if pd.api.types.is_numeric_dtype(df[c])}
    out = {}
    for col, kind in chosen.items():
        task = downstream.task_of(col)
        info: dict = {"kind": kind, "chance": None, "n_items": None, "scale": 1.0}
        for key, column in (("chance", f"{task}_chance"), ("n_items", f"{task}_n")):
            if column in df.columns:
                values = pd.to_numeric(df[column], errors="coerce")
                if values.notna().any():
                    info[key] = float(values.median())
        if info["chance"] is None and kind in ("acc", "err") and spec.chance is not None:
            info["chance"] = float(spec.chance)
        if kind in ("acc", "err"):
            values = pd.to_numeric(df[col], errors="coerce")
            if values.max() > 1.0:  # percent
                info["scale"] = 0.01
        out[col] = info
    return out


def prepare_table(df, spec: ColumnSpec, source: str = "table", min_points: int = 5) -> Prepared:
    """Validate a runs table (already filtered or not) into canonical columns."""
    import pandas as pd

    n_input = len(df)
    df, targets = _split_validation(df)  # before --where: a filter describes the fit set, not the targets
    df = _apply_filters(df, spec.where)
    cols = {role: _resolve(df, spec, role) for role in (*REQUIRED, *OPTIONAL)}
    validation = _validation_rows(targets, cols, spec) if targets is not None else None
    long_format = "run_id" in df.columns and "step" in df.columns and df["run_id"].duplicated().any()
    curves = None
    if long_format:
        df = df.sort_values(["run_id", "step"])
        curve_cols = {"run": df["run_id"].astype(str), "step": _numeric(df, "step", "step"),
                      "tokens": _numeric(df, cols["tokens"], "tokens"), "loss": _numeric(df, cols["loss"], "loss")}
        curve_cols["flops"] = (_numeric(df, cols["flops"], "flops") if cols["flops"]
                               else FLOPS_PER_PARAM_TOKEN * _numeric(df, cols["params"], "params") * curve_cols["tokens"])
        if cols["lr"]:
            curve_cols["lr"] = _numeric(df, cols["lr"], "lr")
        curves = pd.DataFrame(curve_cols).reset_index(drop=True)
        df = df.groupby("run_id", sort=False).tail(1)
    out = pd.DataFrame(index=df.index)
    out["run"] = df["run_id"].astype(str) if "run_id" in df.columns else [f"row{i}" for i in range(len(df))]
    for role in (*REQUIRED, *OPTIONAL):
        if cols[role]:
            out[role] = _numeric(df, cols[role], role)
    metrics = _metric_columns(df, spec, set(c for c in cols.values() if c))
    for col, info in metrics.items():
        out[col] = _numeric(df, col, "downstream metric") * info["scale"]
    status = df["status"].astype(str) if "status" in df.columns else pd.Series("done", index=df.index)
    meta = {"source": source, "n_input_rows": int(n_input), "n_after_filters": int(len(df)),
            "filters": list(spec.where), "params_kind": spec.params_kind,
            "columns": {role: c for role, c in cols.items() if c}, "notes": [], "metrics": metrics,
            "loss_unit": _loss_unit(df, spec)}
    if validation is not None:
        meta["n_validation"] = int(len(validation))
        meta["notes"].append(f"kept {len(validation)} validation target(s) out of every fit; `fit` predicts them "
                             "from the other runs (fit.json validation)")
    unfinished = ~status.isin(KEPT_STATUSES)
    if unfinished.any():
        counts = status[unfinished].value_counts().to_dict()
        meta["skipped_unfinished"] = {str(k): int(v) for k, v in counts.items()}
        warnings.warn(f"skipped {int(unfinished.sum())} run(s) without a final loss: "
                      + ", ".join(f"{v} {k}" for k, v in counts.items()), DataWarning, stacklevel=2)
        out, status = out[~unfinished], status[~unfinished]
    diverged = (status == "diverged").to_numpy()
    if "diverged" in df.columns:
        diverged |= df.loc[out.index, "diverged"].astype(bool).to_numpy()
    out["status"] = np.where(diverged, "diverged", "done")
    out["diverged"] = diverged
    needed = list(REQUIRED) if not diverged.any() else ["params", "tokens"]
    missing = out[needed].isna().any(axis=1) | (out["loss"].isna() & ~out["diverged"])
    if missing.any():
        warnings.warn(f"dropped {int(missing.sum())} row(s) with a missing (NaN) value in "
                      f"{', '.join(cols[r] for r in REQUIRED)}", DataWarning, stacklevel=2)
        meta["n_dropped_nan"] = int(missing.sum())
        out = out[~missing]
    else:
        meta["n_dropped_nan"] = 0
    for role in ("params", "tokens", "loss", "flops", "lr", "batch_size"):
        if role in out.columns:
            bad = out[role].notna() & ~(out[role] > 0)
            if bad.any():
                raise UserError(f"column {cols[role]!r} ({role}) has {int(bad.sum())} non-positive value(s) "
                                f"(e.g. {out.loc[bad, role].iloc[0]!r}); every {role} must be > 0: fix or filter "
                                "those rows (--where)")
            # Laws are fitted in log space: a value whose log or square overflows cannot be fitted.
            bad = out[role].notna() & ~(np.isfinite(out[role]) & (out[role] < 1e150))
            if bad.any():
                raise UserError(f"column {cols[role]!r} ({role}) has {int(bad.sum())} infinite or absurdly large "
                                f"value(s) (e.g. {out.loc[bad, role].iloc[0]!r}); fix or filter those rows (--where)")
    if "flops" not in out.columns or out["flops"].isna().all():
        out["flops"] = FLOPS_PER_PARAM_TOKEN * out["params"] * out["tokens"]
        meta["flops_source"] = "6*N*D (no flops column)"
        meta["notes"].append("FLOPs estimated as C = 6*N*D: the table has no flops column")
    else:
        fill = out["flops"].isna()
        out.loc[fill, "flops"] = FLOPS_PER_PARAM_TOKEN * out["params"][fill] * out["tokens"][fill]
        meta["flops_source"] = f"column {cols['flops']!r}" + (f" ({int(fill.sum())} missing filled with 6*N*D)" if fill.any() else "")
    _add_params_alt(out, df, spec, cols["params"], meta)
    # Carried for LR sensitivity and μP transfer (fit/sensitivity.py) when the input has them.
    for extra in ("schedule", "warmup", "parametrization", "qk_layernorm", "z_loss", "d_model", "vocab_size"):
        if extra in df.columns:
            out[extra] = df.loc[out.index, extra].to_numpy()
    n_done = int((~out["diverged"] & out["loss"].notna()).sum())
    meta["n_points"] = n_done
    meta["n_diverged"] = int(out["diverged"].sum())
    if n_done < min_points:
        raise UserError(f"{n_done} run(s) with a finite loss after filtering; the parametric law L(N,D) has "
                        f"{min_points} parameters and needs at least {min_points} points: add runs or relax --where")
    out = out.reset_index(drop=True)
    if curves is not None:
        curves = curves[curves["run"].isin(set(out["run"]))].reset_index(drop=True)
    return Prepared(runs=out, curves=curves, evals=None, meta=meta, validation=validation)


def _split_validation(df):
    """(the rows a fit may see, the validation targets or None): a `role` column of 'validation'
    marks the targets (a run store's sweep.validate runs; a table may carry the column too)."""
    if "role" not in df.columns:
        return df, None
    target = df["role"].astype(str) == "validation"
    return (df[~target], df[target]) if target.any() else (df, None)


def _validation_rows(targets, cols: dict, spec: ColumnSpec):
    """The validation targets in the fit's canonical columns, one row per run (a long table's last
    step); their loss is NaN unless the run is done."""
    import pandas as pd

    if "run_id" in targets.columns and "step" in targets.columns:
        targets = targets.sort_values(["run_id", "step"]).groupby("run_id", sort=False).tail(1)
    run = targets["run_id"].astype(str) if "run_id" in targets.columns else pd.Series(
        [f"validation{i}" for i in range(len(targets))], index=targets.index)
    out = pd.DataFrame({"run": run, "name": targets["name"].astype(str) if "name" in targets.columns else run})
    out["status"] = targets["status"].astype(str) if "status" in targets.columns else "done"
    for role in REQUIRED:
        out[role] = _numeric(targets, cols[role], role)
    out.loc[out["status"] != "done", "loss"] = np.nan
    c = _numeric(targets, cols["flops"], "flops") if cols["flops"] else pd.Series(np.nan, index=targets.index)
    out["flops"] = c.fillna(FLOPS_PER_PARAM_TOKEN * out["params"] * out["tokens"])
    kind = "total" if spec.params_kind in ("total", "auto") else "nonembed"
    alt = spec.params_alt or ("params_nonembed" if kind == "total" else "params")
    if alt in targets.columns and alt != cols["params"]:
        out["params_alt"] = pd.to_numeric(targets[alt], errors="coerce").to_numpy(dtype=float)
    return out.reset_index(drop=True)


def _loss_unit(df, spec: ColumnSpec) -> str:
    """spec.loss_unit, or for 'auto' what the runs' tokenizer and vocabulary say (scaling_cli.units)."""
    if spec.loss_unit != "auto":
        return spec.loss_unit
    if not {"tokenizer", "vocab_size"} <= set(df.columns):
        return units.TOKEN
    return units.loss_unit(df["tokenizer"], df["vocab_size"])


def _add_params_alt(out, df, spec: ColumnSpec, params_col: str, meta: dict) -> None:
    """The other parameter count (non-embedding vs total) as `params_alt`, for the backtest
    comparison of the two accountings (Porian et al. 2024); absent when the input lacks it."""
    import pandas as pd

    kind = "total" if spec.params_kind in ("total", "auto") else "nonembed"
    other = "nonembed" if kind == "total" else "total"
    name = spec.params_alt or ("params_nonembed" if kind == "total" else "params")
    if name not in df.columns or name == params_col:
        if spec.params_alt:
            raise UserError(f"--alt-params-col {name!r} not found (or is the params column); available: "
                            f"{', '.join(map(str, df.columns))}")
        return
    values = pd.to_numeric(df.loc[out.index, name], errors="coerce")
    if not (np.isfinite(values) & (values > 0)).all():
        meta["notes"].append(f"column {name!r} has missing or non-positive values: no {other}-parameter comparison")
        return
    out["params_alt"] = values.to_numpy(dtype=float)
    meta["params_alt"] = {"column": name, "kind": other}


def load_store(root: str, spec: ColumnSpec) -> Prepared:
    """Load a run store through scaling_cli.store and validate it like a table."""
    import pandas as pd

    from scaling_cli import store

    runs = store.load_runs(root)
    if len(runs) == 0:
        raise UserError(f"{root}: no run folders found; pass a store written by `scaling-cli sweep` or a table")
    runs = runs.copy()
    stable = runs["wsd_role"] == "stable" if "wsd_role" in runs.columns else pd.Series(False, index=runs.index)
    runs = runs[~stable]  # unannealed WSD stable runs; their branches carry their curves
    if spec.params_kind == "nonembed" and spec.params == "params":
        spec = ColumnSpec(**{**spec.__dict__, "params": "params_nonembed"})
    prepared = prepare_table(runs, spec, source="store")
    if stable.any():
        prepared.meta["notes"].append(f"left out {int(stable.sum())} WSD stable run(s): not annealed, so not "
                                      "final points; their decay branches are")
    keep = set(prepared.runs["run"])

    params_of = dict(zip(prepared.runs["run"], prepared.runs["params"]))
    try:
        curves = store.load_curves(root)
    except (OSError, ValueError) as err:
        warnings.warn(f"could not read training curves ({err}); curve laws and approach 1 use final points only",
                      DataWarning, stacklevel=2)
        curves = pd.DataFrame()
    if len(curves):
        curves = curves.rename(columns={"run_id": "run"})
        curves = curves[curves["run"].isin(keep)].reset_index(drop=True)
        prepared.curves = curves[[c for c in ("run", "step", "tokens", "flops", "lr", "loss") if c in curves.columns]]
    try:
        evals = store.load_evals(root)
    except (OSError, ValueError):
        evals = pd.DataFrame()
    if len(evals):
        val = evals[(evals["task"] == "val") & (evals["metric"] == "loss") & evals["run_id"].isin(keep)]
        prepared.evals = val.rename(columns={"run_id": "run", "value": "loss"})[["run", "step", "tokens", "flops", "loss"]].reset_index(drop=True)
        prepared.evals["params"] = prepared.evals["run"].map(params_of)
    return prepared


def load_input(path: str, spec: ColumnSpec) -> Prepared:
    """A table path -> prepare_table; anything else (a directory, a store URL) -> load_store."""
    if is_table(path):
        return prepare_table(read_table(path), spec, source=f"table {path}")
    if "://" not in str(path) and not Path(path).exists():
        raise UserError(f"{path}: no such file or directory; pass a runs table (.csv/.parquet) or a run store")
    if "://" not in str(path) and Path(path).is_file():
        raise UserError(f"{path}: unknown table format; use .csv, .tsv or .parquet")
    return load_store(str(path), spec)
