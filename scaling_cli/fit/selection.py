"""Choosing the loss law `predict` uses: the best backtest among the laws that are not degenerate.

Scaling laws are used to extrapolate, so in-sample residuals say little about which law to trust.
Every loss law is backtested twice (backtest.py: largest model size held out, largest compute
held out) and scored by its *combined error*, the mean over the two hold-outs of its mean
|relative error| on the held-out runs (both count equally: `predict` extrapolates in size and in
compute). The ranking, best first:

1. laws that are not flagged unreliable (reliability.py) before those that are;
2. lowest combined error (a law predicting < 80% of a hold-out's runs, i.e. compute_only at
   unfitted D/N, is not ranked);
3. each parameter beyond the simplest law's must buy a fitset.LAW_TIE (25%) lower error
   (`penalized`; a fixed-E member counts its profiled E, compute_only three per D/N group:
   `estimated_parameters`). Backtests reach 2-3x beyond the fitted compute; flexible laws win them by small margins
   and then drift far out (Gadre et al. 2024: fewer free parameters extrapolate further; measured on
   the synthetic grids of benchmarks/bench_fit_extrapolation.py).

Without any backtest (runs of < 3 sizes) the order is DEFAULT_ORDER, reliable laws first. The
allocation law (compute-optimal N and D) is the selected law when it is a member of the L(N, D)
family, else the best-ranked member. The same combined error compares the two parameter
accountings (total vs non-embedding; Porian et al. 2024): `compare_params_kinds`. The laws within
LAW_TIE of the best (`alike`) are averaged (geometric mean) for `predict`'s point only where that
average backtests better than the selected law on the same held-out runs (`averaging`).

numpy and scipy; no I/O.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike
from scipy.stats import gmean

from scaling_cli.fit import family
from scaling_cli.fit.backtest import LOSS_LAWS, combined_error
from scaling_cli.fit.fitset import LAW_TIE
from scaling_cli.fit.laws import FLOPS_PER_PARAM_TOKEN, LAWS

# Order without a backtest: fewer free parameters first among the laws fitted on every run.
DEFAULT_ORDER = ("overtrain", "chinchilla", "overtrain_fixed_e", "chinchilla_fixed_e", "chinchilla_beta_n",
                 "compute_only")

CRITERION = ("combined error = mean over the hold-outs (largest size, largest compute) of the mean |relative "
             "error| on the held-out runs; reliable laws first, then the lowest combined error charged "
             f"{LAW_TIE:.0%} per parameter beyond the simplest law's")


def estimated_parameters(name: str, entry: dict | None = None) -> int:
    """Parameters a law takes from the data: its free ones, plus E for the fixed-E members (their E
    is chosen by a held-out profile, an estimate like any other), and compute_only's three per
    fitted D/N group."""
    if name == "compute_only":
        return 3 * max(1, len((entry or {}).get("groups", [])))
    return LAWS[name].n_free + (name in family.FIXED_E) if name in LAWS else 99


def penalized(error: float, n_params: int, fewest: int) -> float:
    """A backtest error charged LAW_TIE per parameter beyond the simplest law's: each extra parameter
    must buy a LAW_TIE (25%) lower error. Backtests reach 2-3x beyond the data, where a flexible law
    wins by a little and then drifts further out."""
    return error * (1.0 + LAW_TIE) ** (n_params - fewest)


def ranking(entries: dict, backtests: dict) -> list[dict]:
    """Fitted loss laws, best first, each with its backtest errors and reliability."""
    rows = []
    for name in LOSS_LAWS:
        e = entries.get(name, {})
        if e.get("status") != "ok":
            continue
        per = {h: info.get("scores", {}).get(name, {}).get("mean_abs_rel_error") for h, info in backtests.items()}
        rows.append({"law": name, "combined_error": combined_error(backtests, name), **per,
                     "reliable": bool(e.get("reliable", True)), "n_free": estimated_parameters(name, e)})
    scored = any(r["combined_error"] is not None for r in rows)
    key = (lambda r: (not r["reliable"], r["combined_error"] is None, r["combined_error"] or 0.0, r["n_free"])) if scored \
        else (lambda r: (not r["reliable"], DEFAULT_ORDER.index(r["law"])))
    return sorted(rows, key=key)


def _tie_winner(ranked: list[dict]) -> tuple[dict, str, list[str]]:
    """(law, note, alike): among the laws of the first-ranked law's reliability, the lowest
    penalized error; `alike` are the laws whose error is within LAW_TIE of the best raw error
    (the runs cannot tell them apart)."""
    best = ranked[0]
    if best["combined_error"] is None:
        return best, "", [best["law"]]
    group = [r for r in ranked if r["reliable"] == best["reliable"] and r["combined_error"] is not None
             and not r.get("gated")] or [best]
    fewest = min(r["n_free"] for r in group)
    winner = min(group, key=lambda r: (penalized(r["combined_error"], r["n_free"], fewest), r["n_free"]))
    alike = [r["law"] for r in group if r["combined_error"] <= best["combined_error"] * (1 + LAW_TIE)]
    if winner["law"] not in alike:
        alike.append(winner["law"])
    if winner is best:
        return best, "", alike
    return winner, (f"; {best['law']} backtests best ({best['combined_error']:.2%}, {best['n_free']} parameters) but "
                    f"not by {LAW_TIE:.0%} per extra parameter, so the simpler {winner['law']} ({winner['n_free']}) "
                    "is selected"), alike


# Laws beyond the Chinchilla family, which change how the loss bends far out (beta_n.py): selected
# only when they beat the best family member by LAW_TIE on every hold-out, the longest included.
GATED = ("chinchilla_beta_n",)


def _gate(ranked: list[dict], backtests: dict, longer: dict | None) -> tuple[list[dict], list[str]]:
    """The ranking without the gated laws that do not clear their gate, and why each was held back."""
    family_rows = [r for r in ranked if r["law"] in family.MEMBERS and r["combined_error"] is not None]
    notes, keep = [], []
    every = dict(backtests) | dict(longer or {})
    for r in ranked:
        if r["law"] not in GATED or r["combined_error"] is None:
            keep.append(r)
            continue
        def err(law, h):
            return every[h].get("scores", {}).get(law, {}).get("mean_abs_rel_error")
        missing = [h for h in every if not every[h].get("reason") and err(r["law"], h) is None]
        beaten = []
        for h, info in every.items():
            if info.get("reason"):
                continue
            best_family = min((err(f["law"], h) for f in family_rows if err(f["law"], h) is not None), default=None)
            if best_family is not None and err(r["law"], h) is not None and \
                    err(r["law"], h) * (1 + LAW_TIE) > best_family:
                beaten.append(h)
        if beaten or missing:
            notes.append(f"{r['law']} not selected: it does not beat the best Chinchilla-family law by {LAW_TIE:.0%} "
                         f"on {', '.join(beaten + missing)}")
            r = dict(r, gated=True)
            keep.append(r)
            continue
        keep.append(r)
    return keep, notes


def select_loss_law(entries: dict, backtests: dict, longer: dict | None = None) -> dict:
    """The selection block of fit.json: the chosen law, why, and the full ranking. `longer`: more
    hold-outs (calibration.two_sizes_fold) that the gated laws must also win."""
    ranked, gate_notes = _gate(ranking(entries, backtests), backtests, longer)
    # the gate is worth a word only when it held back the law that backtested best
    gate_notes = gate_notes if ranked and ranked[0].get("gated") else []
    eligible = [r for r in ranked if not r.get("gated")]
    if eligible and ranked and ranked[0].get("gated"):
        ranked = eligible + [r for r in ranked if r.get("gated")]
    if not ranked:
        return {"loss_law": None, "reason": "no loss law could be fitted", "ranking": [], "criterion": CRITERION}
    best, tie_note, alike = _tie_winner(ranked)
    ranked = [best] + [r for r in ranked if r is not best]
    scored = [r for r in ranked if r["combined_error"] is not None]
    if best["combined_error"] is not None:
        peers = [r for r in scored[1:] if r["reliable"] == best["reliable"]][:3]
        flagged = [r for r in scored if not r["reliable"]] if best["reliable"] else []
        others = ", ".join(f"{r['law']} {r['combined_error']:.2%}" for r in peers)
        reason = (f"best backtest{' among reliable laws' if flagged else ''}: combined error {best['combined_error']:.2%}"
                  + (f" vs {others}" if others else "")
                  + (f"; flagged unreliable: " + ", ".join(f"{r['law']} {r['combined_error']:.2%}" for r in flagged)
                     if flagged else ""))
    elif scored:
        reason = (f"no reliable law could be backtested (the refits lack data; {', '.join(r['law'] for r in scored)} "
                  "could, but are flagged unreliable); default order " + " > ".join(DEFAULT_ORDER))
    else:
        why = "; ".join(f"{h}: {info['reason']}" for h, info in backtests.items() if info.get("reason")) or \
            "no law could be scored on the held-out runs"
        reason = f"no backtest ({why}); default order " + " > ".join(DEFAULT_ORDER)
    reason += tie_note + "".join(f"; {note}" for note in gate_notes)
    if not best["reliable"]:
        reason += "; every fitted law is flagged unreliable"
    alloc = next((r["law"] for r in ranked if r["law"] in family.MEMBERS), None)
    entry = entries[best["law"]]
    return {"loss_law": best["law"], "reason": reason, "criterion": CRITERION, "ranking": ranked,
            "backtest_error": best["combined_error"],
            "backtest": {h: best.get(h) for h in backtests},
            "allocation_law": alloc, "alike": alike, "average": averaging(alike, best, backtests),
            "reliable": bool(entry.get("reliable", True)), "reasons": list(entry.get("reasons", []))}


def alike_average(predictions: ArrayLike) -> np.ndarray:
    """The geometric mean over laws (axis 0) of their predicted losses: the point `predict` gives
    where `averaging` found that the average backtests better than the selected law."""
    with np.errstate(all="ignore"):
        return gmean(np.asarray(predictions, dtype=float), axis=0)


def averaged_error(backtests: dict, names: list[str]) -> float | None:
    """The combined backtest error of the geometric mean of these laws' held-out predictions (None
    when a hold-out scored some of them but not all)."""
    errs = []
    for info in backtests.values():
        scores = info.get("scores", {})
        if not scores:
            continue
        preds = [scores.get(law, {}).get("predicted") for law in names]  # present only where a law scored ok
        if any(p is None for p in preds):
            return None
        geo = alike_average(preds)
        observed = np.asarray(info["runs"]["loss"], dtype=float)
        ok = np.isfinite(geo) & np.isfinite(observed)
        if ok.mean() < 0.8:
            return None
        errs.append(float(np.mean(np.abs(geo[ok] / observed[ok] - 1.0))))
    return float(np.mean(errs)) if errs else None


def averaging(alike: list[str], best: dict, backtests: dict) -> dict:
    """Whether `predict`'s point is the geometric mean of the laws that backtest alike: only when
    that average, scored on the same held-out runs, backtests better than the selected law alone.

    The backtests cannot tell alike laws apart and picking one is a noisy choice far out, so their
    average is the natural point; but where they miss the held-out runs on the same side (as on the
    CPU default: every alike law over-predicts its validation target), the average is only a
    worse law. Measured on bench_fit_extrapolation's five synthetic grids (24 draws each, never on
    published run tables), mean |error| at 10-100x over the grids: the selected law alone 1.31%,
    this gated average 1.25% (lower on every grid at every distance), the average of alike laws
    without the gate 1.21%; on the CPU default's validation target the average was worse (+2.09% vs
    +0.78%). The README has the table."""
    out = {"laws": list(alike), "used": False, "combined_error": None,
           "selected_error": best.get("combined_error")}
    if len(alike) < 2 or best.get("combined_error") is None:
        out["note"] = ("no other law backtests within the law tie of the selected one" if len(alike) < 2
                       else "no backtest")
        return out
    err = averaged_error(backtests, alike)
    out["combined_error"] = err
    out["used"] = err is not None and err < best["combined_error"]
    out["note"] = (f"the geometric mean of {', '.join(alike)} backtests {err:.2%} vs {best['law']} alone "
                   f"{best['combined_error']:.2%}: " + ("the point is their average" if out["used"] else
                                                        "the point is the selected law's")) if err is not None \
        else "the average could not be backtested"
    return out


def compare_params_kinds(by_kind: dict[str, dict], fitted_kind: str) -> dict:
    """Which parameter accounting backtests better: {kinds: {kind: per-law errors, best}, selected}.

    `by_kind` maps 'total' / 'nonembed' to that accounting's backtests (all laws refitted with N
    counted that way). The accounting whose best law has the lower combined error is selected.
    """
    kinds = {}
    for kind, bt in by_kind.items():
        errs = {name: combined_error(bt, name) for name in LOSS_LAWS}
        errs = {k: v for k, v in errs.items() if v is not None}
        best = min(errs, key=errs.get) if errs else None
        kinds[kind] = {"combined_error": errs, "best_law": best, "best_error": errs.get(best),
                       "largest_size": {name: s.get("mean_abs_rel_error") for name, s in
                                        bt.get("largest_size", {}).get("scores", {}).items()}}
    scored = {k: v["best_error"] for k, v in kinds.items() if v["best_error"] is not None}
    selected = min(scored, key=scored.get) if scored else fitted_kind
    note = ("; ".join(f"{k}: best {v['best_law']} {v['best_error']:.2%}" for k, v in kinds.items() if v["best_error"] is not None)
            or "no backtest")
    return {"kinds": kinds, "selected": selected, "fitted": fitted_kind, "note": note}


# Where laws that backtest alike are compared, as multiples of the largest fitted compute, and the
# disagreement (relative) worth telling the user about.
FAR_DISTANCES = (10.0, 100.0)
DISAGREEMENT = 0.005


def far_agreement(entries: dict, chosen: dict, max_flops: float) -> dict:
    """What the laws say far beyond the data: each reliable L(N, D) law's loss at FAR_DISTANCES x
    the largest fitted compute (at the allocation law's compute-optimal D/N, else 20), and a note
    when the selected law differs by more than DISAGREEMENT from a law that backtests alike (or
    from the free Chinchilla fit): the held-out runs cannot tell them apart, the extrapolation can."""
    from scaling_cli.fit import parametric, reliability

    law = chosen.get("loss_law")
    if law is None or not max_flops:
        return {}
    alloc = entries.get(chosen.get("allocation_law") or "", {})
    ratio = 20.0
    if alloc.get("status") == "ok" and alloc.get("reliable", True):
        r = reliability.optimal_ratio(family.entry_chinchilla(alloc), max_flops)
        ratio = r if np.isfinite(r) and 1.0 <= r <= 1000.0 else ratio
    compare = [n for n in LOSS_LAWS if n != "compute_only" and entries.get(n, {}).get("status") == "ok"
               and entries[n].get("reliable", True)]
    points = []
    for f in FAR_DISTANCES:
        c = f * max_flops
        n_ = float(np.sqrt(c / (FLOPS_PER_PARAM_TOKEN * ratio)))
        preds = {}
        for name in set(compare) | {law}:
            v = parametric.entry_loss(entries[name], n_, ratio * n_, c)
            if v is not None and np.isfinite(np.ravel(v)[0]):
                preds[name] = float(np.ravel(v)[0])
        points.append({"distance": f, "tokens_per_param": ratio, "params": n_, "predictions": preds})
    far = points[-1]["predictions"]
    notes = []
    if law in far:
        alike = [a for a in chosen.get("alike", []) if a != law and a in far]
        off = {a: far[a] / far[law] - 1 for a in alike + (["chinchilla"] if "chinchilla" in far and law != "chinchilla" else [])}
        big = {a: v for a, v in off.items() if abs(v) > DISAGREEMENT}
        if big:
            notes.append(f"at {FAR_DISTANCES[-1]:g}x the largest fitted compute the selected {law} predicts "
                         f"{far[law]:.4g}; " + ", ".join(f"{a}{' (backtests alike)' if a in alike else ' (free fit)'} "
                                                      f"{far[a]:.4g} ({v:+.1%})" for a, v in big.items())
                         + ": the held-out runs cannot tell these apart, the extrapolation depends on the form; "
                           "predict's interval spans the laws that backtest alike")
            averaged = [a for a in (chosen.get("average") or {}).get("laws", []) if a in far]
            if (chosen.get("average") or {}).get("used") and len(averaged) > 1:
                mean = float(alike_average([far[a] for a in averaged]))
                notes[-1] += f", and its point is their geometric mean ({mean:.4g}: {', '.join(averaged)})"
    return {"points": points, "notes": notes}
