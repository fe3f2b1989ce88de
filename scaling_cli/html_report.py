"""One self-contained HTML page of a sweep and its fit, to open offline or paste into a doc.

    from scaling_cli.html_report import Target, render_report
    html = render_report("runs", "runs/_fit", Target(params=7e9, tokens=1.4e12))

Sections: the sweep's plan and status (a store) or its rows (a table), training curves, every law
in fit.json with its parameters, intervals, and the reason when it was not fitted, the backtest, the
validation targets (predicted vs actual, with the interval and the distance), and every other fit.json section (rendered generically, so keys added later show up too), predictions
at a target (scaling_cli.predict) with the downstream extrapolations, and every PNG in the fit
folder. Images are embedded as base64 data: URIs and the CSS is inline (templates/report.html.j2),
so the file needs nothing else. Reads the store and fit.json only (downstream of fit and predict).
"""

from __future__ import annotations

import base64
import datetime as _dt
import io
import math
from collections import Counter
from dataclasses import dataclass
from typing import Any

from scaling_cli import __version__
from scaling_cli.errors import UserError
from scaling_cli import units
from scaling_cli.units import human

# fit.json keys shown in the header or the laws section rather than as blocks of their own.
_HEADER_KEYS = {"schema", "created", "scaling_cli_version", "elapsed_s", "plots", "laws", "selection", "level",
                "validation"}  # validation: a section of its own (validation_section)
# Blocks shown right after the laws (how far to trust them); the others follow the predictions.
_BACKTEST_KEYS = ("holdout", "diagnostics", "n_opt_exponent_by_approach")
# Titles (and order) of the fit.json sections we know; any other key follows under its own name.
_BLOCK_TITLES = {
    "holdout": ("Backtest", "each loss law refitted without the largest model size, then scored on it"),
    "diagnostics": ("Fit diagnostics", "in-sample residuals and the held-out score per law"),
    "n_opt_exponent_by_approach": ("Compute-optimal exponent by approach", "N_opt ∝ C^a; the approaches disagree in practice"),
    "downstream": ("Downstream laws", "metric laws fitted to the runs; predictions at a target are under Predictions"),
    "stability": ("Stability", None),
    "data": ("Data the fit used", None),
    "options": ("Fit options", None),
}
_LAW_HEADER = ("law", "status", "form", "reference", "reason", "params", "intervals", "param_names", "samples")
MAX_ROWS = 60
"""Rows shown of a long list of records (cells, buckets); the rest are counted."""


@dataclass
class Target:
    """Where to predict: the same choices as `scaling-cli predict`."""

    params: float | None = None
    tokens: float | None = None
    flops: float | None = None
    level: float | None = None

    def given(self) -> bool:
        return self.params is not None or self.flops is not None


# ----------------------------------------------------------------------------- generic rendering

def fmt(value: Any) -> str:
    """A number or value as a reader wants it: 4 significant digits, thousands for counts."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}" if abs(value) < 1e7 else f"{value:.4g}"
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        return f"{value:.4g}"
    if _is_pair(value):
        return f"[{fmt(value[0])}, {fmt(value[1])}]"
    if isinstance(value, list) and all(_is_scalar(v) for v in value):
        if not value:
            return "—"
        if len(value) <= 8:
            return ", ".join(fmt(v) for v in value)
        numbers = [v for v in value if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if len(numbers) == len(value):
            return f"{len(value)} values, {fmt(min(numbers))} … {fmt(max(numbers))}"
        return f"{len(value)} values: " + ", ".join(fmt(v) for v in value[:6]) + ", …"
    return str(value)


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def _is_pair(value: Any) -> bool:
    """An interval [lo, hi] (what fit.json writes for every interval)."""
    return isinstance(value, list) and len(value) == 2 and all(
        v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)) for v in value)


def _is_cell(value: Any) -> bool:
    """What fits in a table cell: a scalar, an interval or a short list of scalars."""
    return _is_scalar(value) or (isinstance(value, list) and all(_is_scalar(v) for v in value) and len(value) <= 8)


def text(value: Any) -> dict:
    return {"kind": "text", "text": fmt(value)}


def table(columns: list[str], rows: list[list[str]], more: int = 0, align: str = "right", text_columns: int = 1) -> dict:
    """A table node; the first `text_columns` columns are left-aligned text, the rest numbers."""
    return {"kind": "table", "columns": columns, "rows": rows, "more": more, "align": align, "text_columns": text_columns}


def node(value: Any, depth: int = 0) -> dict:
    """A tree the template renders: fields (key: child), tables (lists of records, dicts of
    records, parameter/interval pairs) or text. Long numeric arrays (bootstrap draws, envelopes)
    are summarised, never dumped."""
    if isinstance(value, dict):
        if not value:
            return text("—")
        if isinstance(value.get("params"), dict) and isinstance(value.get("intervals"), dict):
            rest = {k: v for k, v in value.items() if k not in ("params", "intervals", "samples", "param_names")}
            items = [("parameters", param_table(value["params"], value["intervals"]))]
            if "samples" in value:
                items.append(("bootstrap", text(_array_shape(value["samples"]))))
            if rest:
                rest_node = node(rest, depth + 1)
                items += rest_node["items"] if rest_node["kind"] == "fields" else [("details", rest_node)]
            return {"kind": "fields", "items": items}
        records = list(value.values())
        if len(records) > 1 and all(isinstance(r, dict) and r and all(_is_cell(v) for v in r.values()) for r in records):
            return records_table([{"": k, **r} for k, r in value.items()])
        return {"kind": "fields", "items": [(str(k), node(v, depth + 1)) for k, v in value.items()]}
    if isinstance(value, list):
        if value and all(isinstance(v, dict) for v in value):
            return records_table(value)
        if value and all(isinstance(v, list) for v in value):
            return text(_array_shape(value))
        return text(value)
    return text(value)


def _array_shape(rows: list) -> str:
    width = max((len(r) for r in rows if isinstance(r, list)), default=0)
    return f"{len(rows)} × {width} values (bootstrap draws)" if width else f"{len(rows)} values"


def _flat(record: dict) -> dict:
    """One level of nesting folded into dotted columns: {'params': {'E': 1}} -> {'params.E': 1}."""
    out = {}
    for key, value in record.items():
        if isinstance(value, dict) and all(_is_cell(v) for v in value.values()):
            out.update({f"{key}.{k}": v for k, v in value.items()})
        elif _is_cell(value):
            out[key] = value
        elif isinstance(value, list) and value and all(isinstance(v, list) for v in value):
            out[key] = _array_shape(value)
        elif isinstance(value, (list, dict)):
            out[key] = f"{len(value)} entries"
    return out


def records_table(records: list[dict]) -> dict:
    flat = [_flat(r) for r in records]
    columns: list[str] = []
    for r in flat:
        columns += [c for c in r if c not in columns]
    rows = [[fmt(r.get(c)) if c in r else "" for c in columns] for r in flat[:MAX_ROWS]]
    return table(columns, rows, more=max(0, len(flat) - MAX_ROWS))


def param_table(params: dict, intervals: dict) -> dict:
    rows = [[name, fmt(value), fmt(intervals.get(name))] for name, value in params.items()]
    return table(["parameter", "value", "interval"], rows)


# ----------------------------------------------------------------------------- page sections

def image_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def sweep_section(source: str) -> dict:
    """Plan and status of a run store: one row per run (size, tokens, steps, state, loss)."""
    from scaling_cli.store import RunStore, load_runs

    runs = load_runs(source)
    if runs.empty:
        raise UserError(f"{source}: no runs in this store; check the path or run `scaling-cli sweep store.root={source}`")
    planned = {spec["run_id"]: spec for spec in RunStore(source).iter_specs()}
    rows = []
    for r in runs.sort_values(["params", "tokens", "run_id"]).to_dict("records"):
        spec = planned.get(r["run_id"], {})
        step = r.get("step")
        steps = spec.get("steps")
        progress = f"{int(step)}/{steps}" if step is not None and step == step and steps else (f"0/{steps}" if steps else "")
        rows.append([r["name"], r["run_id"], r["status"], human(r["params"]), human(r["params_nonembed"]),
                     human(r["tokens"]), fmt(r["tokens"] / r["params"]), human(r["flops"]), fmt(r.get("lr")),
                     progress, fmt(r["loss"]) if r["loss"] == r["loss"] else ""])
    columns = ["name", "run_id", "status", "params", "non-emb", "tokens", "tokens/param", "FLOPs", "lr", "steps", "val loss"]
    counts = sorted(Counter(runs["status"]).items())
    sweeps = sorted({str(s) for s in runs["sweep"].dropna()})
    summary = (f"{len(runs)} runs of sweep{'s' if len(sweeps) > 1 else ''} {', '.join(sweeps)}: "
               f"{human(runs['flops'].sum())}FLOP planned in all.")
    return {"title": "Sweep plan and status", "summary": summary, "counts": counts,
            "table": table(columns, rows, text_columns=3),
            "n_done": int((runs["status"] == "done").sum()),
            # what a fit reads: finished runs, not WSD stable runs (never annealed) nor validation targets
            "n_fittable": int((runs["status"].isin(("done", "diverged")) & (runs.get("wsd_role", "") != "stable")
                               & (runs.get("role", "fit") != "validation")).sum())}


def table_section(source: str) -> dict:
    """A table of runs given to `fit` directly: its rows, as read."""
    from scaling_cli.fit.table import read_table

    frame = read_table(source)
    shown = frame.head(MAX_ROWS)
    rows = [[fmt(v.item() if hasattr(v, "item") else v) for v in row] for row in shown.itertuples(index=False)]
    return {"title": "Runs (table)", "summary": f"{len(frame)} rows of {source}.", "counts": [],
            "table": table([str(c) for c in frame.columns], rows, more=max(0, len(frame) - MAX_ROWS)), "n_done": None}


def curves_figure(source: str) -> str | None:
    """Training and validation loss against tokens, one colour per model size, as a data: URI."""
    from scaling_cli.store import load_curves, load_evals, load_runs

    curves = load_curves(source)
    if curves.empty:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    runs = load_runs(source).set_index("run_id")
    evals = load_evals(source)
    val = evals[(evals["task"] == "val") & (evals["metric"] == "loss") & (evals["tokens"] > 0)]
    sizes = np.log(runs["params"].astype(float))
    span = (sizes.max() - sizes.min()) or 1.0
    fig, ax = plt.subplots(figsize=(8, 4.6))
    for run_id, curve in curves.groupby("run_id"):
        color = plt.cm.viridis(0.9 * (sizes[run_id] - sizes.min()) / span)
        curve = curve[curve["tokens"] > 0]
        ax.plot(curve["tokens"], curve["loss"], color=color, lw=0.9, alpha=0.7)
        points = val[val["run_id"] == run_id]
        ax.plot(points["tokens"], points["value"], "o", color=color, ms=3.5)
    for params in sorted(set(runs["params"])):
        ax.plot([], [], color=plt.cm.viridis(0.9 * (math.log(params) - sizes.min()) / span), label=f"N = {fmt(float(params))}")
    ax.set_xscale("log")
    ax.set_xlabel("tokens")
    unit = (units.loss_unit(runs["tokenizer"], runs["vocab_size"]) if {"tokenizer", "vocab_size"} <= set(runs.columns)
            else units.TOKEN)
    ax.set_ylabel(units.axis_label(unit))
    if runs["params"].nunique() <= 12:
        ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return image_uri(buffer.getvalue())


def law_entries(report: dict) -> list[dict]:
    out = []
    for name, entry in (report.get("laws") or {}).items():
        if not isinstance(entry, dict):
            out.append({"name": name, "status": "?", "rest": node(entry)})
            continue
        rest = {k: v for k, v in entry.items() if k not in _LAW_HEADER}
        params = entry.get("params")
        reference = entry.get("reference")
        if isinstance(reference, dict):  # e.g. published constants per form
            reference = "; ".join(f"{k}: {fmt(v)}" for k, v in reference.items())
        out.append({
            "name": name, "status": entry.get("status", "?"), "form": entry.get("form"),
            "reference": reference, "reason": entry.get("reason"),
            "params": param_table(params, entry.get("intervals") or {}) if isinstance(params, dict) else None,
            "rest": node(rest) if rest else None,
        })
    return out


def fit_blocks(report: dict) -> list[dict]:
    """Every fit.json section but the laws, known ones first with their titles, then the rest."""
    keys = [k for k in _BLOCK_TITLES if k in report] + sorted(k for k in report if k not in _BLOCK_TITLES)
    blocks = []
    for key in keys:
        if key in _HEADER_KEYS:
            continue
        title, intro = _BLOCK_TITLES.get(key, (key.replace("_", " ").capitalize(), None))
        blocks.append({"key": key, "anchor": f"fit-{key}", "title": title, "intro": intro, "node": node(report[key])})
    return blocks


def fit_figures(fit_dir: str, report: dict) -> list[dict]:
    """Every PNG in the fit folder, in the order fit.json lists them, then any others by name."""
    import fsspec

    fs, path = fsspec.core.url_to_fs(str(fit_dir))
    names = sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in fs.glob(f"{path.rstrip('/')}/*.png"))
    listed = [n for n in report.get("plots") or [] if n in names]
    figures = []
    for name in listed + [n for n in names if n not in listed]:
        with fs.open(f"{path.rstrip('/')}/{name}", "rb") as f:
            figures.append({"name": name, "uri": image_uri(f.read())})
    return figures


def validation_section(report: dict) -> dict | None:
    """fit.json "validation": each target the sweep trained but no fit saw, predicted vs actual."""
    records = report.get("validation") or []
    if not records:
        return None
    unit = units.unit_of(report)
    level = next((r["level"] for r in records if r.get("level")), report.get("level", 0.9))
    rows = []
    for r in records:
        inside = "—" if r.get("inside") is None else ("yes" if r["inside"] else "NO")
        error = "—" if r.get("error") is None else f"{r['error']:+.2%}"
        distance = "—" if r.get("distance") is None else f"{r['distance']:.3g}×"
        rows.append([r["name"], r["run_id"], human(r["params"]) if r.get("params") else "—", human(r["tokens"]),
                     human(r["flops"]), distance, fmt(r.get("loss")), fmt(r.get("predicted")),
                     fmt([r.get("lo"), r.get("hi")]) if r.get("lo") is not None else "—", error, inside,
                     r.get("law") or "—", r.get("note") or ""])
    columns = ["target", "run_id", "params", "tokens", "FLOPs", "distance", f"actual ({unit})", "predicted",
               f"{level:.0%} PI", "error", "inside", "law", "note"]
    intro = ("Runs the sweep trained but no fit saw (sweep.validate), predicted from the other runs with "
             "`scaling-cli predict` and compared with what they showed. Distance: the target's compute over the "
             "largest fitted compute; error: predicted / actual − 1.")
    return {"intro": intro, "table": table(columns, rows, text_columns=2)}


def prediction_section(report: dict, target: Target) -> dict:
    from scaling_cli.predict import format_prediction, predict

    r = predict(report, params=target.params, tokens=target.tokens, flops=target.flops, level=target.level)
    pct = f"{r['level']:.0%}"
    rows = [
        ["target", f"N = {fmt(r['params'])} ({r['params_kind']}), D = {fmt(r['tokens'])}, C = {fmt(r['flops'])} FLOPs"],
        [f"loss ({r.get('loss_unit', units.TOKEN)})", fmt(r["loss"])],
        [f"{pct} confidence interval", fmt(r["loss_ci"])],
        [f"{pct} prediction interval", fmt(r["loss_pi"])],
        ["law", f"{r['law']} ({r['law_reason']})"],
    ]
    if r.get("averaged_over"):
        rows.append(["averaged over", f"{', '.join(r['averaged_over'])} (they backtest alike; the loss is the geometric "
                     f"mean of their predictions; {r['law']} alone: {fmt(r['loss_selected_law'])})"])
    if r.get("extrapolation_factor_flops"):
        rows.append(["extrapolation", f"{fmt(r['extrapolation_factor_flops'])}× the largest fitted compute"])
    opt = r.get("compute_optimal")
    if opt and opt.get("withheld"):  # a law flagged unreliable, or an implausible allocation: no numbers
        rows.append(["compute-optimal N, D", f"withheld: {opt['withheld']}"])
    elif opt:
        rows.append(["compute-optimal N", f"{fmt(opt['params_opt'])} {fmt(opt.get('params_opt_interval'))}"])
        rows.append(["compute-optimal D", f"{fmt(opt['tokens_opt'])} {fmt(opt.get('tokens_opt_interval'))}"])
    for name in ("lr", "batch_size"):
        if f"{name}_opt" in r:
            rows.append([f"optimal {name}", f"{fmt(r[f'{name}_opt'])} {fmt(r[f'{name}_opt_interval'])} ({r[f'{name}_opt_form']} fit)"])
    downstream = None
    if r.get("downstream"):
        drows = []
        for col, got in r["downstream"].items():
            how = got.get("stages") or got.get("form") or ""
            note = f"{got.get('status')}: {got.get('reason')}" if got.get("value") is None else (
                "extrapolated" if got.get("extrapolation") else "")
            drows.append([col, fmt(got.get("value")), fmt(got.get("interval")), str(how), note])
        downstream = table(["metric", "value", f"{pct} interval", "how", "note"], drows)
    return {"table": table(["", "value"], rows, align="left"), "downstream": downstream, "text": format_prediction(r)}


# ----------------------------------------------------------------------------- the page

def render_report(source: str, fit_dir: str, target: Target | None = None, fit_error: str | None = None) -> str:
    """The HTML page of `source` (a store or a table) and the fit in `fit_dir`."""
    from jinja2 import Environment, PackageLoader, select_autoescape

    from scaling_cli.fit.artifact import FIT_FILENAME, join, read_report
    from scaling_cli.fit.table import is_table

    sweep = table_section(source) if is_table(source) else sweep_section(source)
    curves = None if is_table(source) else curves_figure(source)
    report, notes = {}, []
    if fit_error is None:
        try:
            report = read_report(fit_dir)
        except UserError as err:
            fit_error = str(err)
    if report:
        fitted = report.get("data", {}).get("n_runs")
        if sweep["n_done"] is not None and fitted is not None and fitted != sweep["n_fittable"]:
            notes.append(f"The fit read {fitted} runs; the store now has {sweep['n_fittable']} finished runs to fit "
                         f"({len(sweep['table']['rows'])} in all, {sweep['n_done']} done). Re-run "
                         f"`scaling-cli fit {source}` to fit them all.")
        notes += [f"Note from the fit: {n}" for n in report.get("data", {}).get("notes", [])]
    prediction, prediction_error = None, None
    if target is not None and target.given() and report:
        try:
            prediction = prediction_section(report, target)
        except UserError as err:
            prediction_error = str(err)
    selection = report.get("selection") or {}
    blocks = fit_blocks(report) if report else []
    backtest = [b for b in blocks if b["key"] in _BACKTEST_KEYS]
    blocks = [b for b in blocks if b["key"] not in _BACKTEST_KEYS]
    validation = validation_section(report) if report else None
    toc = [("sweep", "Runs"), *([("curves", "Curves")] if curves else []), ("laws", "Laws"),
           *[(b["anchor"], b["title"]) for b in backtest], *([("validation", "Validation")] if validation else []),
           ("figures", "Figures"), ("predictions", "Predictions"), *[(b["anchor"], b["title"]) for b in blocks]]
    env = Environment(loader=PackageLoader("scaling_cli", "templates"), autoescape=select_autoescape(["html", "j2"]),
                      trim_blocks=True, lstrip_blocks=True)
    return env.get_template("report.html.j2").render(
        title=f"scaling-cli report: {source}",
        subtitle=(f"fit {report.get('created', '')} from {report.get('data', {}).get('source', source)}"
                  if report else "no fit"),
        toc=toc, sweep=sweep, curves=curves, fit_notes=notes, fit_error=fit_error,
        selection=f"{selection.get('loss_law')} ({selection.get('reason')})" if selection.get("loss_law") else None,
        laws=law_entries(report), backtest=backtest, validation=validation, blocks=blocks, prediction=prediction,
        prediction_error=prediction_error,
        figures=fit_figures(fit_dir, report) if report else [], version=__version__,
        generated=_dt.datetime.now().astimezone().isoformat(timespec="seconds"), fit_path=join(fit_dir, FIT_FILENAME))
