"""Figures of a fit: drawn from the fit report and the runs it used, never from training code.

    from scaling_cli.plots import make_plots
    make_plots(report, prepared, "runs/_fit")   # -> list of PNG paths

- loss_vs_compute.png: runs, the parametric compute-optimal frontier with its confidence band,
  approach 1's envelope; compute beyond the largest run is shaded as extrapolation.
- isoflop.png: approach 2's IsoFLOP profiles, parabolas and minima.
- lr_sweep.png / batch_size_sweep.png: profiled loss vs LR (batch) per cell with fitted optima;
  diverged values drawn at the top edge.
- fitted_vs_observed.png: parametric prediction vs observed loss; the held-out size highlighted.
- curves.png: training curves of one model size with the Tissue and multi-power fits.
- downstream_<metric>.png: each downstream metric against loss (Err(L) fit) and against compute
  (the two-stage prediction along the compute-optimal frontier, or BLEU/CE(D_p) per model size),
  the extrapolation shaded; a metric without support shows its data and the reason.
- lr_sensitivity.png: LR sensitivity (Wortsman et al.) vs model size, one line per
  qk_layernorm / z_loss / parametrization setting.
- backtest.png (`scaling-cli backtest`): predicted vs observed loss of the held-out runs (largest
  size; largest compute), one marker per loss law, prediction intervals as bars.
- mup_transfer.png: loss vs LR per width, one panel per parametrization, best LR marked: under
  μP the optimum should stay put as width grows, under the standard parametrization it moves.
matplotlib with the Agg backend (no display needed).
"""

from __future__ import annotations

import io

import numpy as np

from scaling_cli.fit import artifact, curve_fit, downstream, family, intervals, laws, parametric
from scaling_cli.fit.bootstrap import percentile_interval
from scaling_cli.units import axis_label, unit_of

# Frontier drawn up to this multiple of the largest run's compute (the extrapolation region).
EXTRAPOLATE_FACTOR = 100.0


def _save(fig, outdir: str, name: str) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    path = artifact.join(outdir, name)
    artifact.write_bytes(path, buf.getvalue())
    return path


def _size_colors(params):
    import matplotlib.pyplot as plt

    logs = np.log(np.asarray(params, dtype=float))
    span = logs.max() - logs.min() or 1.0
    return plt.cm.viridis((logs - logs.min()) / span)


def plot_loss_vs_compute(report: dict, runs, outdir: str) -> str:
    import matplotlib.pyplot as plt

    done = runs[~runs["diverged"]]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    sc = ax.scatter(done["flops"], done["loss"], c=np.log10(done["params"]), cmap="viridis", s=18, label="runs")
    fig.colorbar(sc, ax=ax, label="log10 params")
    c_max = float(done["flops"].max())
    name = report.get("selection", {}).get("allocation_law") or "chinchilla"
    chin = report["laws"].get(name, {})
    if chin.get("status") == "ok":
        grid = np.geomspace(float(done["flops"].min()) / 2, c_max * EXTRAPOLATE_FACTOR, 200)
        p = family.entry_chinchilla(chin)
        n_opt, d_opt = laws.chinchilla_optimum(grid, *p)
        flag = "" if chin.get("reliable", True) else ", UNRELIABLE"
        ax.plot(grid, laws.chinchilla_loss((n_opt, d_opt), *p), "k-", label=f"compute-optimal frontier ({name}{flag})")
        s = family.entry_chinchilla(chin, use_samples=True)
        if s is not None and chin.get("reliable", True):
            cols = [s[:, i:i + 1] for i in range(5)]
            with np.errstate(all="ignore"):
                ns, ds = laws.chinchilla_optimum(grid[None, :], *cols)
                band = intervals.stretch_values(laws.chinchilla_loss((ns, ds), *cols),
                                                laws.chinchilla_loss((n_opt, d_opt), *p), family.entry_widening(chin))
            lo, hi = percentile_interval(band, report.get("level", 0.9))
            ax.fill_between(grid, lo, hi, color="k", alpha=0.15, label=f"{report.get('level', 0.9):.0%} CI")
    env = report["laws"].get("approach1", {})
    if env.get("status") == "ok":
        ax.plot(env["envelope"]["flops"], env["envelope"]["loss"], "r--", lw=1, label="approach 1 envelope")
    ax.axvspan(c_max, c_max * EXTRAPOLATE_FACTOR, color="orange", alpha=0.1, label="extrapolation")
    ax.set(xscale="log", xlabel="training FLOPs C", ylabel=axis_label(unit_of(report)), title="Loss vs compute")
    ax.legend(fontsize=8)
    return _save(fig, outdir, "loss_vs_compute.png")


def plot_isoflop(report: dict, runs, outdir: str) -> str | None:
    import matplotlib.pyplot as plt

    a2 = report["laws"].get("approach2", {})
    if a2.get("status") != "ok":
        return None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    colors = plt.cm.plasma(np.linspace(0, 0.85, len(a2["buckets"])))
    for b, col in zip(a2["buckets"], colors):
        n, loss = np.array(b["points"]["params"]), np.array(b["points"]["loss"])
        ax.scatter(n, loss, color=col, s=16)
        xs = np.linspace(np.log(n.min()), np.log(n.max()), 100)
        ax.plot(np.exp(xs), np.polyval(b["parabola"], xs), color=col, lw=1, label=f"C = {b['flops']:.2g}")
        ax.plot(b["params_opt"], b["loss_min"], "x", color=col, ms=9)
    ax.set(xscale="log", xlabel="params N", ylabel=axis_label(unit_of(report)), title=f"IsoFLOP profiles (N_opt ∝ C^{a2['n_opt']['exponent']:.3f})")
    ax.legend(fontsize=7)
    return _save(fig, outdir, "isoflop.png")


def plot_hparam(report: dict, name: str, outdir: str) -> str | None:
    import matplotlib.pyplot as plt

    entry = report["laws"].get(f"{name}_opt", {})
    if entry.get("status") != "ok":
        return None
    cells = entry["cells"] + entry.get("skipped_cells", [])
    fig, ax = plt.subplots(figsize=(7, 4.5))
    colors = _size_colors([c["params"] for c in cells])
    top = max(v for c in cells for v in c["profile_loss"] if v is not None)
    for c, col in zip(cells, colors):
        vals, prof = np.array(c["values"]), c["profile_loss"]
        fin = np.array([v is not None for v in prof])
        ax.plot(vals[fin], [v for v in prof if v is not None], "o-", color=col, ms=3, lw=0.8,
                label=f"N={c['params']:.2g} D={c['tokens']:.2g}")
        if (~fin).any():
            ax.plot(vals[~fin], np.full((~fin).sum(), top), "x", color=col)
        if c.get("status") == "ok":
            xs = np.linspace(np.log(vals[fin]).min(), np.log(vals[fin]).max(), 100)
            ax.plot(np.exp(xs), np.polyval(c["parabola"], xs), ":", color=col, lw=1)
            ax.axvline(c["opt"], color=col, lw=0.6, alpha=0.6)
    label = "learning rate" if name == "lr" else "batch size (tokens)"
    ax.set(xscale="log", xlabel=label, ylabel=axis_label(unit_of(report)), title=f"Loss vs {label} (x: diverged)")
    ax.legend(fontsize=6, ncol=2)
    return _save(fig, outdir, f"{name}_sweep.png")


def plot_fitted_vs_observed(report: dict, runs, outdir: str) -> str | None:
    import matplotlib.pyplot as plt

    law = report.get("selection", {}).get("loss_law") or "chinchilla"
    entry = report["laws"].get(law, {})
    if entry.get("status") != "ok":
        return None
    done = runs[runs["run"].isin(report.get("loss_law_runs", runs["run"]))]
    pred = np.array([np.ravel(p)[0] if (p := parametric.entry_loss(entry, n, d, c)) is not None else np.nan
                     for n, d, c in zip(done["params"], done["tokens"], done["flops"])])
    fig, ax = plt.subplots(figsize=(5, 5))
    held = np.asarray((report.get("holdout", {}).get("runs") or {}).get("params", []), dtype=float)
    big = (np.isclose(done["params"].to_numpy(dtype=float)[:, None], held[None, :], rtol=1e-9).any(axis=1)
           if held.size else np.zeros(len(done), bool))
    ax.scatter(done["loss"][~big], pred[~big], s=14, c="C0", label="runs")
    ax.scatter(done["loss"][big], pred[big], s=22, c="C3", marker="s", label="largest size (held out in selection)")
    lims = [np.nanmin([done["loss"].min(), np.nanmin(pred)]), np.nanmax([done["loss"].max(), np.nanmax(pred)])]
    ax.plot(lims, lims, "k-", lw=0.8)
    ax.set(xlabel=axis_label(unit_of(report), "observed loss"), ylabel=f"fitted loss ({law})", title="Fitted vs observed")
    ax.legend(fontsize=8)
    return _save(fig, outdir, "fitted_vs_observed.png")


def plot_curves(report: dict, curves, outdir: str) -> str | None:
    import matplotlib.pyplot as plt

    entry = report["laws"].get("curves", {})
    if entry.get("status") != "ok" or curves is None:
        return None
    group = entry["groups"][0]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, run in enumerate(group["runs"]):
        rows = curves[curves["run"] == run]
        c = curve_fit.prepare_curve(run, rows["step"], rows["lr"], rows["loss"], group["params"])
        if c is None:
            continue
        sched = group.get("run_schedules", {}).get(run, "")
        ax.plot(c.steps, c.loss, ".", color=f"C{i}", ms=3, label=f"{run[:12]} {sched}".strip())
        ax.axvline(c.steps[0], color=f"C{i}", ls=":", lw=0.6)  # fitted points start here
        steps = np.unique(np.linspace(max(c.warmup, 1), len(c.lr), 200).astype(int))
        for law, style in (("tissue", "-"), ("multi_power", "--")):
            fit = group["laws"].get(law, {})
            if fit.get("status") == "ok":
                ax.plot(steps, curve_fit.predict_curve(fit, c.lr, steps, c.warmup), style, color=f"C{i}", lw=1)
    ax.set(xlabel="step", ylabel=axis_label(unit_of(report), "train loss"), title=f"Curve laws at N = {group['params']:.3g} (solid: Tissue, dashed: multi-power)")
    ax.legend(fontsize=7)
    return _save(fig, outdir, "curves.png")


def _band(ax, x, draws, level: float, color: str) -> None:
    draws = np.asarray(draws, dtype=float)
    ok = np.isfinite(draws).all(axis=1)
    if ok.sum() >= 2:
        lo, hi = percentile_interval(draws[ok], level)
        ax.fill_between(x, lo, hi, color=color, alpha=0.15, lw=0)


def plot_downstream_metric(report: dict, col: str, entry: dict, outdir: str) -> str:
    """Metric vs loss and vs compute (see the module docstring)."""
    import textwrap

    import matplotlib.pyplot as plt

    level = report.get("level", 0.9)
    kind = entry["kind"]
    to_metric = lambda e: downstream.metric_of_error(kind, e)
    fig, (ax_l, ax_c) = plt.subplots(1, 2, figsize=(11, 4.5))
    if entry.get("driver") == "loss":
        pts = entry["points"]
        loss, value, flops = (np.asarray(pts[k], dtype=float) for k in ("loss", "value", "flops"))
        ax_l.scatter(loss, value, s=16, c="C0", label="runs")
        ax_c.scatter(flops, value, s=16, c="C0", label="runs")
        if entry.get("status") == "ok":
            p, s = entry["params"], np.asarray(entry.get("samples", []), dtype=float)
            lo_l, hi_l = entry["loss_range"]
            grid = np.linspace(lo_l - 0.5 * (hi_l - lo_l), hi_l, 150)
            ax_l.plot(grid, to_metric(downstream.error_of_loss(grid, p["eps"], p["k"], p["gamma"])), "k-", label=entry["form"])
            if s.size:
                with np.errstate(all="ignore"):
                    _band(ax_l, grid, to_metric(downstream.error_of_loss(grid[None, :], s[:, :1], s[:, 1:2], s[:, 2:3])), level, "k")
            ax_l.axvspan(grid[0], lo_l, color="orange", alpha=0.1, label="extrapolation")
            chin = report["laws"].get("chinchilla", {})
            if chin.get("status") == "ok" and len(flops):
                c_max = float(np.nanmax(flops))
                cg = np.geomspace(float(np.nanmin(flops)) / 2, c_max * EXTRAPOLATE_FACTOR, 150)
                q = chin["params"]
                n_opt, d_opt = laws.chinchilla_optimum(cg, q["E"], q["A"], q["B"], q["alpha"], q["beta"])
                lf = laws.chinchilla_loss((n_opt, d_opt), *q.values())
                ax_c.plot(cg, to_metric(downstream.error_of_loss(lf, p["eps"], p["k"], p["gamma"])), "k-",
                          label="compute -> L(N,D) frontier -> metric")
                cs = np.asarray(chin.get("samples", []), dtype=float)
                m = min(len(cs), len(s))
                if m >= 2:  # stage-1 sample i with stage-2 sample i (independent bootstraps)
                    with np.errstate(all="ignore"):
                        cols = [cs[:m, i:i + 1] for i in range(5)]
                        ln, ld = laws.chinchilla_optimum(cg[None, :], *cols)
                        lb = laws.chinchilla_loss((ln, ld), *cols)
                        _band(ax_c, cg, to_metric(downstream.error_of_loss(lb, s[:m, :1], s[:m, 1:2], s[:m, 2:3])), level, "k")
                ax_c.axvspan(c_max, c_max * EXTRAPOLATE_FACTOR, color="orange", alpha=0.1, label="extrapolation")
    else:
        colors = iter(plt.cm.viridis(np.linspace(0, 0.9, max(1, len(entry["groups"]) + len(entry["skipped_groups"])))))
        for g in entry["groups"] + entry["skipped_groups"]:
            color = next(colors)
            pts = g["points"]
            d, value, flops, loss = (np.asarray(pts[k], dtype=float) for k in ("tokens", "value", "flops", "loss"))
            label = f"N≈{g['model_params']:.3g}" + ("" if g.get("reliable", True) else ", UNRELIABLE")
            ax_l.scatter(loss, value, s=16, color=color, label=label)
            ax_c.scatter(flops, value, s=16, color=color, label=label)
            if g.get("status") != "ok":
                continue
            law = laws.LAWS[entry["law"]]
            n = float(np.median(flops / (laws.FLOPS_PER_PARAM_TOKEN * d)))  # realised 6N, includes attention FLOPs
            dg = np.geomspace(d.min() / 2, d.max() * EXTRAPOLATE_FACTOR, 150)
            q = g["params"]
            inside = dg <= d.max()
            ax_c.plot(laws.FLOPS_PER_PARAM_TOKEN * n * dg[inside], law.func(dg[inside], *(q[k] for k in law.param_names)),
                      "-", color=color)
            s = np.asarray(g.get("samples", []), dtype=float)
            if s.size:
                with np.errstate(all="ignore"):
                    _band(ax_c, laws.FLOPS_PER_PARAM_TOKEN * n * dg, law.func(dg[None, :], s[:, :1], s[:, 1:2], s[:, 2:3]), level, color)
            ax_c.plot(laws.FLOPS_PER_PARAM_TOKEN * n * dg[dg > d.max()],
                      law.func(dg[dg > d.max()], *(q[k] for k in law.param_names)), "--", color=color)
        all_flops = [f for g in entry["groups"] for f in g["points"]["flops"]]
        if all_flops:
            c_max = float(np.nanmax(all_flops))
            ax_c.axvspan(c_max, c_max * EXTRAPOLATE_FACTOR, color="orange", alpha=0.1, label="extrapolation")
    flag = "" if entry.get("reliable", True) else " (UNRELIABLE: see fit.json reasons)"
    title = f"{col}: {entry.get('form', '')}{flag}" if entry.get("status") == "ok" else \
        f"{col}: {entry.get('status')} - " + textwrap.shorten(str(entry.get("reason", "")), 110)
    fig.suptitle("\n".join(textwrap.wrap(title, 110)), fontsize=9)
    ax_l.set(xlabel=axis_label(unit_of(report), "validation loss"), ylabel=col, title="vs loss")
    ax_c.set(xscale="log", xlabel="training FLOPs C", ylabel=col, title="vs compute (shaded / dashed: extrapolation)")
    for ax in (ax_l, ax_c):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    return _save(fig, outdir, f"downstream_{col}.png")


def plot_downstream(report: dict, outdir: str) -> list[str]:
    metrics = (report.get("downstream") or {}).get("metrics") or {}
    return [plot_downstream_metric(report, col, entry, outdir) for col, entry in metrics.items()
            if entry.get("points") or entry.get("groups") or entry.get("skipped_groups")]


def make_plots(report: dict, prepared, outdir: str) -> list[str]:
    """Draw every figure the report supports; returns the paths written."""
    import matplotlib

    matplotlib.use("Agg")
    runs = prepared.runs
    paths = [plot_loss_vs_compute(report, runs, outdir), plot_isoflop(report, runs, outdir),
             plot_hparam(report, "lr", outdir), plot_hparam(report, "batch_size", outdir),
             plot_fitted_vs_observed(report, runs, outdir), plot_curves(report, prepared.curves, outdir)]
    paths += plot_downstream(report, outdir)
    paths += [plot_lr_sensitivity(report, outdir), plot_mup_transfer(report, runs, outdir)]
    return [p for p in paths if p]


def plot_backtest(result: dict, outdir: str) -> str | None:
    """Predicted vs observed loss of the held-out runs, one panel per hold-out, one marker per law;
    bars: each law's prediction interval (when the backtest bootstrapped)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(h, info) for h, info in result["backtests"].items() if not info.get("reason")]
    if not panels:
        return None
    markers = dict(zip(("chinchilla", "chinchilla_fixed_e", "overtrain", "overtrain_fixed_e", "chinchilla_beta_n",
                        "compute_only"), "osD^Pv"))
    selected = result.get("selection", {}).get("loss_law")
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 5), squeeze=False)
    for ax, (holdout, info) in zip(axes[0], panels):
        observed = np.asarray(info["runs"]["loss"], dtype=float)
        lo_all, hi_all = [observed.min()], [observed.max()]
        span = float(np.ptp(observed)) or float(observed.mean()) * 0.01
        for i, (law, sc) in enumerate(info["scores"].items()):
            if sc.get("status") != "ok" or "mean_abs_rel_error" not in sc:
                continue
            obs = observed + (i - 2) * 0.006 * span  # side by side, so the laws' bars do not hide each other
            pred = np.asarray(sc["predicted"], dtype=float)
            label = f"{law} {sc['mean_abs_rel_error']:.2%}" + (" (selected)" if law == selected else "")
            ax.scatter(obs, pred, marker=markers.get(law, "o"), s=40 if law == selected else 22, color=f"C{i}",
                       label=label, zorder=3, edgecolors="k" if law == selected else "none")
            if "intervals" in sc:
                iv = np.asarray(sc["intervals"], dtype=float)
                ok = np.isfinite(iv).all(axis=1)
                ax.vlines(obs[ok], iv[ok, 0], iv[ok, 1], color=f"C{i}", alpha=0.5, lw=1)
                lo_all.append(np.nanmin(iv[ok, 0]) if ok.any() else observed.min())
                hi_all.append(np.nanmax(iv[ok, 1]) if ok.any() else observed.max())
            lo_all.append(np.nanmin(pred))
            hi_all.append(np.nanmax(pred))
        lims = [min(lo_all), max(hi_all)]
        ax.plot(lims, lims, "k-", lw=0.8)
        ax.set(xlabel=axis_label(unit_of(result), "observed loss, held out"), ylabel="predicted loss (refit without them)",
               title=f"held out: {info['heldout']} ({info['n_test']} runs, {info['extrapolation_factor']:.3g}x compute)")
        ax.legend(fontsize=7, title="law, mean |error|", title_fontsize=7)
    fig.suptitle("Backtest: predicted vs observed loss of held-out runs (bars: prediction intervals)", fontsize=10)
    return _save(fig, outdir, "backtest.png")


def _setting_label(row: dict, keys) -> str:
    return ", ".join(f"{k}={row[k]}" for k in keys) or "all runs"


def plot_lr_sensitivity(report: dict, outdir: str) -> str | None:
    """LR sensitivity vs params, one line per stability setting (fit/sensitivity.py)."""
    import matplotlib.pyplot as plt

    entry = (report.get("stability") or {}).get("lr_sensitivity", {})
    if entry.get("status") != "ok":
        return None
    keys = [k for k in entry.get("split_by", []) if len({str(g.get(k)) for g in entry["groups"]}) > 1]
    settings: dict[str, list[dict]] = {}
    for g in entry["groups"]:
        settings.setdefault(_setting_label(g, keys), []).append(g)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, (label, groups) in enumerate(sorted(settings.items())):
        groups = sorted(groups, key=lambda g: g["params"])
        ax.plot([g["params"] for g in groups], [g["sensitivity"] for g in groups], "o-", color=f"C{i}", label=label)
    ax.set(xscale="log", xlabel="params N", ylabel="mean over LR of min(L, L_init) - L*  (nats)",
           title="LR sensitivity (Wortsman et al.; lower is more stable)")
    ax.legend(fontsize=8)
    return _save(fig, outdir, "lr_sensitivity.png")


def plot_mup_transfer(report: dict, runs, outdir: str) -> str | None:
    """Loss vs LR per width, a panel per parametrization (needs parametrization and d_model columns)."""
    import matplotlib.pyplot as plt

    entry = (report.get("stability") or {}).get("lr_transfer", {})
    if entry.get("status") != "ok" or not {"parametrization", "d_model", "lr"} <= set(runs.columns):
        return None
    params = sorted(runs["parametrization"].dropna().unique(), key=lambda p: (p != "standard", str(p)))
    widths = sorted(runs["d_model"].dropna().unique())
    colors = dict(zip(widths, plt.cm.viridis(np.linspace(0, 0.9, len(widths)))))
    best = {(w["parametrization"], w["d_model"]): w for w in entry["widths"]}
    spread = entry.get("lr_best_spread_octaves", {})
    fig, axes = plt.subplots(1, len(params), figsize=(5.5 * len(params), 4.5), sharey=True, squeeze=False)
    top = float(np.nanmax(runs["loss"])) if np.isfinite(runs["loss"]).any() else 1.0
    for ax, param in zip(axes[0], params):
        sub = runs[runs["parametrization"] == param]
        for width in widths:
            rows = sub[sub["d_model"] == width]
            if rows.empty:
                continue
            per_lr = rows.groupby("lr")["loss"].mean().sort_index()
            fin = np.isfinite(per_lr.to_numpy())
            ax.plot(per_lr.index[fin], per_lr.to_numpy()[fin], "o-", ms=3, color=colors[width], label=f"d_model={width}")
            if (~fin).any():  # diverged at this LR
                ax.plot(per_lr.index[~fin], np.full((~fin).sum(), top), "x", color=colors[width])
            b = best.get((param, int(width)))
            if b:
                ax.plot(b["lr_best"], b["loss_best"], "*", ms=12, color=colors[width], mec="k", mew=0.5)
        title = f"{param}" + (f" (best LR spread {spread[param]:.2f} octaves)" if param in spread else "")
        ax.set(xscale="log", xlabel="learning rate (optim.lr)", title=title)
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel(axis_label(unit_of(report), "final validation loss"))
    fig.suptitle("LR transfer across width (star: best LR; x: diverged)", fontsize=10)
    return _save(fig, outdir, "mup_transfer.png")


def plot_schedule_prediction(result: dict, path: str) -> str:
    """`predict --schedule --plot FILE`: the predicted train-loss curve with its band, and the LR schedule."""
    import matplotlib.pyplot as plt

    curve, lr = result["curve"], result["lr"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot(curve["step"], curve["loss"], "-", color="C0", label=f"{result['law']} prediction")
    lo = np.array([np.nan if v is None else v for v in curve["loss_lo"]], dtype=float)
    hi = np.array([np.nan if v is None else v for v in curve["loss_hi"]], dtype=float)
    if np.isfinite(lo).any():
        ax.fill_between(curve["step"], lo, hi, color="C0", alpha=0.2, lw=0, label=f"{result['level']:.0%} CI")
    ax.set(xlabel="step", ylabel=result.get("loss_kind", "train loss"),
           title=f"{result['schedule']['text']} at N = {result['params']:.3g}: final {result['loss']:.3f}")
    twin = ax.twinx()
    twin.plot(lr["step"], lr["lr"], ":", color="C1", lw=1)
    twin.set_ylabel("learning rate", color="C1")
    ax.legend(fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    artifact.write_bytes(path, buffer.getvalue())
    return path
