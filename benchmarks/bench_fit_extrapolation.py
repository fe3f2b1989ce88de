"""How far out can the fitter be trusted? Synthetic grids with known truth, predicted 10-100x out.

    python benchmarks/bench_fit_extrapolation.py                      # every grid, 4 seeds, the product's choice
    python benchmarks/bench_fit_extrapolation.py --grids overtrain --seeds 8
    python benchmarks/bench_fit_extrapolation.py --candidates          # also every (fit set, law) forced
    python benchmarks/bench_fit_extrapolation.py --fit-set all         # the product without fit-set selection

Grids (scaling_cli/fit/synthetic.py BENCHMARK_GRIDS): published designs' shapes drawn from known laws
with what real sweeps add (seed scatter, under-trained short runs, a capacity deficit and a
sub-power-law regime at small N, missing cells); each seed draws every pathology at 0-2x its
strength. Nothing here reads a published run table: a private hold-out of those checks the result.

Each draw goes through the product: `pipeline.fit_all` on the runs table, then `predict` at
targets 10x, 30x and 100x the largest fitted compute (at D/N = 20 and at the design's largest D/N)
and at the design's named targets (e.g. 1.4B at 20-640 tokens/param and 6.9B at 20 for the
over-training grid). Printed per grid: mean and max |relative error| against the clean law at each
distance and on the named targets, the share of targets inside the 90% prediction interval, and
what the fit chose (fit set, law, and whether predict averaged the laws that backtest alike).
With --candidates, every fit set is also forced and every law of it scored on the same draws (the
per-candidate table). This is a benchmark, not a test: it
prints numbers, it asserts nothing. CPU only; about 15 s per draw on a 2-core box.
"""

from __future__ import annotations

import argparse
import platform
import time
import warnings
from collections import Counter, defaultdict

import numpy as np

from scaling_cli.fit import fitset, parametric, pipeline, synthetic, table
from scaling_cli.fit.bootstrap import FitOptions
from scaling_cli.predict import predict

DISTANCES = (10.0, 30.0, 100.0)


def targets(spec: synthetic.GridSpec, max_flops: float) -> list[tuple[str, float, float]]:
    """(label, N, D) of the distance targets and the design's named ones."""
    big_m = max(m for _, m in spec.cells)
    out = []
    for f in DISTANCES:
        for m in sorted({20.0, big_m}):
            n = float(np.sqrt(f * max_flops / (6.0 * m)))
            out.append((f"{f:g}x", n, m * n))
    out += [("named", float(n), float(n * m)) for n, m in spec.targets]
    return out


def one_draw(spec: synthetic.GridSpec, seed: int, options: FitOptions, laws: bool) -> dict:
    runs = synthetic.pathological_runs(spec, seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = pipeline.fit_all(table.prepare_table(runs, table.ColumnSpec()), options)
    tg = targets(spec, float(runs["flops"].max()))
    truth = np.array([synthetic.grid_truth(spec, n, d) for _, n, d in tg])
    rows = []
    for (label, n, d), true in zip(tg, truth):
        r = predict(report, params=n, tokens=d)
        row = {"label": label, "error": r["loss"] / true - 1}
        # the interval predict prints, and the two it is the union of (bootstrap, backtest-calibrated)
        for key, (lo, hi) in (("", (r["loss_lo"], r["loss_hi"])), ("boot_", r.get("loss_pi_bootstrap") or (None, None)),
                              ("bt_", r.get("loss_pi_backtest") or (None, None))):
            row |= {f"{key}has_interval": lo is not None, f"{key}inside": lo is not None and lo <= true <= hi,
                    f"{key}half_width": None if lo is None else float(np.log(hi / lo) / 2)}
        rows.append(row)
    per_law = {}
    if laws:
        for name, entry in report["laws"].items():
            if name in ("approach1", "approach2", "lr_opt", "batch_size_opt", "curves", "curve_points", "compute_only"):
                continue
            pred = parametric.entry_loss(entry, np.array([n for _, n, _ in tg]), np.array([d for *_, d in tg]),
                                         6.0 * np.array([n * d for _, n, d in tg]))
            if pred is not None:
                per_law[name] = np.ravel(pred) / truth - 1
    return {"rows": rows, "fit_set": report.get("fit_set", {}).get("name", "all"),
            "averaged": bool((report["selection"].get("average") or {}).get("used")),
            "law": report["selection"]["loss_law"], "per_law": per_law, "labels": [t[0] for t in tg]}


def summarize(draws: list[dict]) -> dict:
    by = defaultdict(list)
    for d in draws:
        for r in d["rows"]:
            by[r["label"]].append(r)
    out = {}
    for label, rows in by.items():
        err = np.abs([r["error"] for r in rows])
        out[label] = {"mean": float(err.mean()), "max": float(err.max())}
        for key in ("", "boot_", "bt_"):
            widths = [r.get(f"{key}half_width") for r in rows]
            out[label] |= {f"{key}coverage": float(np.mean([r.get(f"{key}inside", False) for r in rows])),
                           f"{key}with_interval": float(np.mean([r.get(f"{key}has_interval", False) for r in rows])),
                           f"{key}half_width": float(np.nanmean([np.nan if w is None else w for w in widths]))
                           if any(w is not None for w in widths) else float("nan")}
    return out


def print_grid(name: str, draws: list[dict], elapsed: float) -> None:
    s = summarize(draws)
    labels = [f"{f:g}x" for f in DISTANCES] + (["named"] if "named" in s else [])
    print(f"{name:<11} " + "  ".join(f"{lab:>6}: {s[lab]['mean']:.2%} (max {s[lab]['max']:.2%}) in-PI {s[lab]['coverage']:.0%}"
                                     f" ±{s[lab]['half_width']:.1%}" for lab in labels)
          + f"   [{len(draws)} draws, {elapsed / len(draws):.0f} s each]")
    print(f"{'':<11} parts: " + "  ".join(
        f"{lab:>6}: bootstrap in {s[lab]['boot_coverage']:.0%} ±{s[lab]['boot_half_width']:.1%}, backtest in "
        f"{s[lab]['bt_coverage']:.0%} ±{s[lab]['bt_half_width']:.1%}" for lab in labels))
    chose = Counter((d["fit_set"], d["law"]) for d in draws)
    print(f"{'':<11} chose: " + ", ".join(f"{fs}/{law} x{k}" for (fs, law), k in chose.most_common())
          + f"; the alike laws averaged in {sum(d['averaged'] for d in draws)} of {len(draws)} draws")


def print_candidates(name: str, by_set: dict[str, list[dict]]) -> None:
    print(f"  per candidate on {name} (mean |error| at {', '.join(f'{f:g}x' for f in DISTANCES)}; named):")
    for fs, draws in by_set.items():
        labels = draws[0]["labels"]
        dist = [i for i, lab in enumerate(labels) if lab != "named"]
        named = [i for i, lab in enumerate(labels) if lab == "named"]
        for law in sorted({k for d in draws for k in d["per_law"]}):
            errs = [np.abs(d["per_law"][law]) for d in draws if law in d["per_law"]]
            if not errs:
                continue
            e = np.array(errs)
            print(f"    {fs:<18} {law:<19} {e[:, dist].mean():.2%} (max {e[:, dist].max():.2%})"
                  + (f"; named {e[:, named].mean():.2%}" if named else ""))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--grids", nargs="+", default=list(synthetic.BENCHMARK_GRIDS), choices=list(synthetic.BENCHMARK_GRIDS))
    p.add_argument("--seeds", type=int, default=4)
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--n-boot", type=int, default=100)
    p.add_argument("--fit-set", default="auto", help="auto (the product's choice) or a fit set to force")
    p.add_argument("--candidates", action="store_true", help="also force every fit set and score every law")
    args = p.parse_args()
    print(f"bench_fit_extrapolation on {platform.node()} ({platform.processor() or platform.machine()}), "
          f"{args.seeds} draws per grid from seed {args.first_seed}, n_boot {args.n_boot}, fit set {args.fit_set}")
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    for name in args.grids:
        spec = synthetic.BENCHMARK_GRIDS[name]
        start = time.perf_counter()
        options = FitOptions(n_boot=args.n_boot, curve_groups=0, fit_set=args.fit_set)
        draws = [one_draw(spec, s, options, laws=False) for s in seeds]
        print_grid(name, draws, time.perf_counter() - start)
        if args.candidates:
            by_set = {}
            for fs in fitset.FIT_SETS:
                forced = FitOptions(n_boot=0, curve_groups=0, fit_set=fs)
                try:
                    by_set[fs] = [one_draw(spec, s, forced, laws=True) for s in seeds]
                except Exception as err:  # a set that does not apply to this design
                    print(f"    {fs}: {err}")
            print_candidates(name, by_set)


if __name__ == "__main__":
    main()
