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
matplotlib with the Agg backend (no display needed).
"""

from __future__ import annotations

import io

import numpy as np

from scaling_cli.fit import artifact, curve_fit, laws, parametric
from scaling_cli.fit.bootstrap import percentile_interval

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
    chin = report["laws"].get("chinchilla", {})
    if chin.get("status") == "ok":
        grid = np.geomspace(float(done["flops"].min()) / 2, c_max * EXTRAPOLATE_FACTOR, 200)
        p = chin["params"]
        n_opt, d_opt = laws.chinchilla_optimum(grid, p["E"], p["A"], p["B"], p["alpha"], p["beta"])
        ax.plot(grid, laws.chinchilla_loss((n_opt, d_opt), *p.values()), "k-", label="compute-optimal frontier (L(N,D))")
        s = np.asarray(chin.get("samples", []), dtype=float)
        if s.size:
            cols = [s[:, i:i + 1] for i in range(5)]
            with np.errstate(all="ignore"):
                ns, ds = laws.chinchilla_optimum(grid[None, :], *cols)
                band = laws.chinchilla_loss((ns, ds), *cols)
            lo, hi = percentile_interval(band, report.get("level", 0.9))
            ax.fill_between(grid, lo, hi, color="k", alpha=0.15, label=f"{report.get('level', 0.9):.0%} CI")
    env = report["laws"].get("approach1", {})
    if env.get("status") == "ok":
        ax.plot(env["envelope"]["flops"], env["envelope"]["loss"], "r--", lw=1, label="approach 1 envelope")
    ax.axvspan(c_max, c_max * EXTRAPOLATE_FACTOR, color="orange", alpha=0.1, label="extrapolation")
    ax.set(xscale="log", xlabel="training FLOPs C", ylabel="loss (nats/token)", title="Loss vs compute")
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
    ax.set(xscale="log", xlabel="params N", ylabel="loss", title=f"IsoFLOP profiles (N_opt ∝ C^{a2['n_opt']['exponent']:.3f})")
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
    ax.set(xscale="log", xlabel=label, ylabel="loss", title=f"Loss vs {label} (x: diverged)")
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
    heldout = report.get("holdout", {}).get("heldout_params")
    big = np.isclose(done["params"], heldout, rtol=0.1) if heldout else np.zeros(len(done), bool)
    ax.scatter(done["loss"][~big], pred[~big], s=14, c="C0", label="runs")
    ax.scatter(done["loss"][big], pred[big], s=22, c="C3", marker="s", label="largest size (held out in selection)")
    lims = [np.nanmin([done["loss"].min(), np.nanmin(pred)]), np.nanmax([done["loss"].max(), np.nanmax(pred)])]
    ax.plot(lims, lims, "k-", lw=0.8)
    ax.set(xlabel="observed loss", ylabel=f"fitted loss ({law})", title="Fitted vs observed")
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
    ax.set(xlabel="step", ylabel="train loss", title=f"Curve laws at N = {group['params']:.3g} (solid: Tissue, dashed: multi-power)")
    ax.legend(fontsize=7)
    return _save(fig, outdir, "curves.png")


def make_plots(report: dict, prepared, outdir: str) -> list[str]:
    """Draw every figure the report supports; returns the paths written."""
    import matplotlib

    matplotlib.use("Agg")
    runs = prepared.runs
    paths = [plot_loss_vs_compute(report, runs, outdir), plot_isoflop(report, runs, outdir),
             plot_hparam(report, "lr", outdir), plot_hparam(report, "batch_size", outdir),
             plot_fitted_vs_observed(report, runs, outdir), plot_curves(report, prepared.curves, outdir)]
    return [p for p in paths if p]
