"""Coverage study: how often the loss laws' nominal-90% intervals contain the truth.

    python -m scaling_cli.fit.coverage --reps 200            # the table in the README
    python -m scaling_cli.fit.coverage --reps 30 --methods pairs wild_size

Sweeps are simulated the way real ones come out (scaling_cli/fit/synthetic.py draws i.i.d.
noise; these do not): a grid of model sizes x token multipliers M = D/N, two seeds per cell
averaged (as `fit` averages seeds), multiplicative run noise that grows for shorter runs
(heteroscedastic: sigma_i = sigma * (D_min / D_i)^0.25), and a per-size offset shared by every run
of a size (cluster structure: an unlucky initialisation or shape moves all its runs). Each
scenario is drawn from the law being checked, so its parameters are the truth; the law is fitted
with its bootstrap and scored on (a) every parameter and (b) the loss at 10x and 100x the largest
fitted compute, at M = 20 and at the largest M of the design (the law itself, not a noisy run).
Coverage counts the fits `predict` shows intervals for: a fit flagged unreliable
(reliability.py) gets none, and the share of such fits is reported beside it ("flagged").

Pure numpy; the fits are the product's own (family.fit_member).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field

import numpy as np

from scaling_cli.fit import family, intervals, laws, parametric, reliability
from scaling_cli.fit.bootstrap import FitOptions, percentile_interval


@dataclass(frozen=True)
class Scenario:
    """A simulated sweep: the true law (Chinchilla form), the design and the noise."""

    name: str
    truth: tuple[float, float, float, float, float]   # E, A, B, alpha, beta
    sizes: tuple[float, ...]
    multipliers: tuple[float, ...]
    run_noise: float            # sigma of log L per run at the shortest run
    size_noise: float           # sigma of the per-size offset of log L
    seeds: int = 2
    members: tuple[str, ...] = field(default=("chinchilla", "chinchilla_fixed_e"))


# A CPU-proxy-like law (losses 3.5-6 nats at 0.1M-2M parameters) and Chinchilla's (Epoch's refit,
# 1.8-3 nats at 10M-1B); alpha = beta scenarios check the over-training law on its own truth.
_PROXY = (2.4, 40.0, 180.0, 0.32, 0.30)
_PROXY_TIED = (2.4, 40.0, 180.0, 0.31, 0.31)
_EPOCH_TIED = (1.82, 482.0, 2085.4, 0.36, 0.36)
SCENARIOS = (
    Scenario("proxy, 5 sizes x 5 M, 1% noise", _PROXY, tuple(np.geomspace(1e5, 1.6e6, 5)),
             (5, 10, 20, 40, 80), 0.01, 0.003),
    Scenario("proxy alpha=beta, 4 sizes x 4 M, 2% noise", _PROXY_TIED, tuple(np.geomspace(1e5, 8e5, 4)),
             (10, 20, 40, 80), 0.02, 0.005, members=("overtrain", "overtrain_fixed_e", "chinchilla")),
    Scenario("Chinchilla alpha=beta, 6 sizes x 4 M, 0.5% noise", _EPOCH_TIED, tuple(np.geomspace(1e7, 1e9, 6)),
             (5, 20, 80, 320), 0.005, 0.002, members=("overtrain", "overtrain_fixed_e", "chinchilla")),
)


def simulate(s: Scenario, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(N, D, L) of one simulated sweep, seeds averaged per cell."""
    n, m = (a.ravel() for a in np.meshgrid(np.asarray(s.sizes, float), np.asarray(s.multipliers, float)))
    d = n * m
    clean = laws.chinchilla_loss((n, d), *s.truth)
    offset = rng.normal(0.0, s.size_noise, len(s.sizes))
    size_of = np.searchsorted(np.asarray(s.sizes, float), n)
    sigma = s.run_noise * (d.min() / d) ** 0.25
    seeds = rng.normal(0.0, 1.0, (s.seeds, len(n))) * sigma
    loss = np.mean(clean * np.exp(offset[size_of] + seeds), axis=0)
    return n, d, loss


def _targets(s: Scenario) -> list[tuple[str, float, float]]:
    n, m = (a.ravel() for a in np.meshgrid(np.asarray(s.sizes, float), np.asarray(s.multipliers, float)))
    c_max = 6 * float(np.max(n * n * m))
    out = []
    for factor in (10, 100):
        for ratio in (20.0, float(max(s.multipliers))):
            n_t = np.sqrt(factor * c_max / (6 * ratio))
            out.append((f"L@{factor}x", n_t, ratio * n_t))
    return out


def needed_widening(point: float, lo: float | None, hi: float | None, truth: float) -> float:
    """The smallest factor k such that the interval widened k-fold around the point in log space,
    [p (lo/p)^k, p (hi/p)^k], contains the truth (inf when the interval is missing or empty)."""
    if lo is None or hi is None or not np.all(np.isfinite([point, lo, hi, truth])) or min(point, lo, hi, truth) <= 0:
        return float("inf")
    t, p = np.log(truth), np.log(point)
    side = np.log(hi) - p if t >= p else p - np.log(lo)
    gap = abs(t - p)
    if gap == 0:
        return 0.0
    return float(gap / side) if side > 0 else float("inf")


def replicate(s: Scenario, member: str, methods, seed: int, options: FitOptions) -> dict[str, dict[str, list[float]]]:
    """Fit and bootstrap with every method; per method, {quantity: [needed widening]} (<= 1: covered)."""
    rng = np.random.default_rng([seed, 7])
    n, d, loss = simulate(s, rng)
    law = laws.LAWS[member]
    if member in family.TIED:
        E, A, B, alpha, _ = s.truth
        eta = alpha / 2
        true_params = dict(zip(law.param_names, (E, A * 6**eta, B * 6**eta, eta)))
    else:
        true_params = dict(zip(law.param_names, s.truth))
    out = {}
    for method in methods:
        entry = family.fit_member(member, n, d, loss, FitOptions(**{**options.as_dict(), "seed": seed}), method=method)
        if entry.get("status") != "ok":
            continue
        # predict shows no bootstrap interval for a law flagged unreliable: such replicates are counted apart
        reliable, _ = reliability.assess(entry, float(loss.min()), float(6 * np.max(n * d)))
        if not reliable:
            out[method] = {"flagged": [1.0]}
            continue
        need = {k: [needed_widening(entry["params"][k], lo, hi, true_params[k])]
                for k, (lo, hi) in entry["intervals"].items()}
        need["flagged"] = [0.0]
        for label, n_t, d_t in _targets(s):
            true_l = laws.chinchilla_loss((n_t, d_t), *s.truth)
            with np.errstate(all="ignore"):  # the loss samples as predict uses them (widening included)
                pred = np.ravel(parametric.entry_loss(entry, n_t, d_t, 6 * n_t * d_t, use_samples=True))
            pred = pred[np.isfinite(pred)]
            lo, hi = percentile_interval(pred, options.level) if len(pred) >= 2 else (None, None)
            point = float(np.ravel(parametric.entry_loss(entry, n_t, d_t, 6 * n_t * d_t))[0])
            need.setdefault(label, []).append(needed_widening(point, lo, hi, true_l))
            if label == "L@100x":  # how wide the interval is, relative to the loss
                need.setdefault("width@100x", []).append(float(hi / lo - 1.0) if lo else float("inf"))
        out[method] = need
    return out


def study(reps: int = 30, methods=intervals.METHODS, scenarios=SCENARIOS, options: FitOptions | None = None,
          seed: int = 0, members: tuple[str, ...] | None = None) -> list[dict]:
    """Rows {scenario, member, method, quantity, coverage, needed_for_90, n} (and, per member and
    method, the share of fits flagged unreliable and the median width of the 100x interval).

    coverage: share of replicates whose interval (as `fit` reports it, widening included) contains
    the truth; needed_for_90: the further stretch that would have given 90% here."""
    options = options or FitOptions(n_boot=100, grid_size=3, boot_starts=2)
    rows = []
    for si, s in enumerate(scenarios):
        for member in (members or s.members):
            if member not in s.members:
                continue
            acc: dict[tuple[str, str], list[float]] = {}
            for r in range(reps):
                got = replicate(s, member, methods, seed * 100_000 + si * 1000 + r, options)
                for method, need in got.items():
                    for q, v in need.items():
                        acc.setdefault((method, q), []).extend(v)
            for (method, q), v in acc.items():
                v = np.asarray(v)
                if q in ("flagged", "width@100x"):
                    rows.append({"scenario": s.name, "member": member, "method": method, "quantity": q,
                                 "flagged" if q == "flagged" else "median_width": float(np.mean(v) if q == "flagged"
                                                                                        else np.median(v)),
                                 "n": len(v)})
                    continue
                rows.append({"scenario": s.name, "member": member, "method": method, "quantity": q,
                             "coverage": float(np.mean(v <= 1.0)), "needed_for_90": float(np.quantile(v, 0.9, method="higher")), "n": len(v)})
    return rows


def markdown(rows: list[dict]) -> str:
    """One line per (scenario, member, method): coverage of each parameter and prediction."""
    lines = []
    col = "coverage"
    order = list(dict.fromkeys(r["scenario"] for r in rows))
    keys = sorted({(r["scenario"], r["member"], r["method"]) for r in rows}, key=lambda k: (order.index(k[0]), k[1], k[2]))
    for key in keys:
        mine = [r for r in rows if (r["scenario"], r["member"], r["method"]) == key]
        sel = [r for r in mine if r["quantity"] not in ("flagged", "width@100x")]
        flagged = next((r["flagged"] for r in mine if r["quantity"] == "flagged"), 0.0)
        width = next((r["median_width"] for r in mine if r["quantity"] == "width@100x"), float("nan"))
        if not sel:
            lines.append(f"| {key[0]} | {key[1]} | {key[2]} | - | - | {flagged:.0%} | - | every fit flagged unreliable |")
            continue
        cells = ", ".join(f"{r['quantity']} {r[col]:.0%}" for r in sel)
        worst = min(r[col] for r in sel)
        need = max(r["needed_for_90"] for r in sel)
        lines.append(f"| {key[0]} | {key[1]} | {key[2]} | {worst:.0%} | {need:.2f} | {flagged:.0%} | {width:.1%} | {cells} |")
    head = ("| scenario | law | interval | worst | widening for 90% | flagged | width L@100x | coverage at nominal 90% |\n"
            "|---|---|---|---|---|---|---|---|")
    return head + "\n" + "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reps", type=int, default=30)
    p.add_argument("--methods", nargs="+", default=list(intervals.METHODS))
    p.add_argument("--members", nargs="+", default=None)
    p.add_argument("--n-boot", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    start = time.perf_counter()
    rows = study(args.reps, tuple(args.methods), options=FitOptions(n_boot=args.n_boot, grid_size=3, boot_starts=2),
                 seed=args.seed, members=tuple(args.members) if args.members else None)
    print(markdown(rows))
    print(f"\n{args.reps} replicates per row, n_boot {args.n_boot}, {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
