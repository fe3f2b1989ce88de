"""Model selection by extrapolation: leave the largest model size out, refit, predict it.

Scaling laws are used to extrapolate, so in-sample residuals say little about which law to trust.
Each loss law is refitted on all runs but those of the largest size (sizes grouped within 10%),
then scored on the held-out runs: RMSE of log loss and mean absolute relative error. The law with
the lowest held-out RMSE among those that can predict at least 80% of the held-out runs is
selected; ties and missing scores fall back to the parametric L(N, D), which alone also answers
compute-optimal questions. Pure numpy; no I/O.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from scaling_cli.fit import parametric
from scaling_cli.fit.bootstrap import FitOptions
from scaling_cli.fit.grouping import cluster_log

# A law must predict at least this share of the held-out runs to be compared (compute_only cannot
# predict a run whose D/N matches none of its fitted groups).
MIN_COVERAGE = 0.8

# Preference order on ties or when nothing could be scored.
DEFAULT_ORDER = ("chinchilla", "compute_only")


def largest_size_mask(params: ArrayLike) -> np.ndarray:
    """True for runs in the largest size group."""
    labels = cluster_log(params)
    return labels == labels.max()


def _refit(name: str, n, d, c, loss, options: FitOptions) -> dict:
    quick = FitOptions(**{**options.as_dict(), "n_boot": 0})
    if name == "chinchilla":
        if len(loss) < 5:
            return parametric.not_enough(name, "too few runs below the largest size")
        x = np.column_stack([np.log(n), np.log(d)])
        starts = parametric.screened_starts(x, np.log(loss), options.grid_size, options.holdout_starts)
        return parametric.fit_chinchilla(n, d, loss, quick, starts=starts)
    return parametric.fit_compute_only(c, d, n, loss, quick)


def holdout_scores(params: ArrayLike, tokens: ArrayLike, flops: ArrayLike, loss: ArrayLike,
                   options: FitOptions | None = None,
                   laws: tuple[str, ...] = DEFAULT_ORDER) -> dict:
    """Per law: held-out RMSE of log loss and relative error on the largest size."""
    options = options or FitOptions()
    n, d, c, l_obs = (np.asarray(v, dtype=float) for v in (params, tokens, flops, loss))
    test = largest_size_mask(n)
    info = {"heldout_params": float(np.exp(np.mean(np.log(n[test])))), "n_test": int(test.sum()),
            "n_train": int((~test).sum()), "scores": {}}
    if (~test).sum() == 0 or len(np.unique(cluster_log(n))) < 3:
        info["reason"] = "needs runs of at least 3 model sizes"
        return info
    for name in laws:
        entry = _refit(name, n[~test], d[~test], c[~test], l_obs[~test], options)
        if entry.get("status") != "ok":
            info["scores"][name] = {"status": entry.get("status"), "reason": entry.get("reason")}
            continue
        preds = []
        for i in np.flatnonzero(test):
            p = parametric.entry_loss(entry, n[i], d[i], c[i])
            preds.append(np.nan if p is None else float(np.ravel(p)[0]))
        preds = np.array(preds)
        ok = np.isfinite(preds)
        score = {"status": "ok", "coverage": float(ok.mean())}
        if ok.any():
            r = np.log(preds[ok]) - np.log(l_obs[test][ok])
            score |= {"rmse_log": float(np.sqrt(np.mean(r * r))),
                      "mean_abs_rel_error": float(np.mean(np.abs(np.expm1(r)))),
                      "mean_rel_error": float(np.mean(np.expm1(r)))}
        info["scores"][name] = score
    return info


def select_loss_law(entries: dict, holdout: dict) -> dict:
    """Pick the loss law for predict: lowest held-out RMSE with enough coverage, else the default."""
    fitted = [n for n in DEFAULT_ORDER if entries.get(n, {}).get("status") == "ok"]
    if not fitted:
        return {"loss_law": None, "reason": "no loss law could be fitted"}
    scored = {n: s for n, s in holdout.get("scores", {}).items()
              if n in fitted and s.get("status") == "ok" and s.get("coverage", 0) >= MIN_COVERAGE and "rmse_log" in s}
    if not scored:
        why = holdout.get("reason") or "; ".join(f"{n}: {s.get('reason') or 'coverage too low'}"
                                                 for n, s in holdout.get("scores", {}).items()) or "no scores"
        return {"loss_law": fitted[0], "reason": f"no held-out score ({why}); default order " + " > ".join(DEFAULT_ORDER)}
    best = min(scored, key=lambda n: (scored[n]["rmse_log"], DEFAULT_ORDER.index(n)))
    others = ", ".join(f"{n} {s['rmse_log']:.4f}" for n, s in scored.items() if n != best)
    return {"loss_law": best, "reason": f"lowest held-out RMSE(log L) on the largest size: {best} "
            f"{scored[best]['rmse_log']:.4f}" + (f" vs {others}" if others else "")}
