"""Fitting scaling laws to collected runs: pure, torch-free, no I/O in the law/fitting modules.

Modules (each one job):

    laws.py         law forms f(x, *theta), published reference constants, the registry
    robust.py       Huber loss on log-loss, log-sum-exp power laws, multi-start (batched) BFGS
    bootstrap.py    resampling over runs and percentile intervals
    intervals.py    the loss laws' resampling schemes (size-clustered bootstrap) and their widening
    coverage.py     simulation study of interval coverage (python -m scaling_cli.fit.coverage)
    entries.py      pieces every fit.json law entry shares (not enough data, summaries, residuals)
    family.py       the L(N,D) family: Chinchilla, the over-training law (alpha = beta), fixed-E members
    parametric.py   Chinchilla approach 3 entry point, the compute-only law L(C) per M = D/N, entry_loss
    approaches.py   Chinchilla approaches 1 (loss envelope) and 2 (IsoFLOP parabolas)
    curve_laws.py   schedule-aware curve forms: Tissue et al. (S1, S2) and the multi-power law
    curve_fit.py    fitting those forms to whole training curves, predicting other schedules
    hyperparams.py  optimal learning rate and batch size per cell, then power laws of the optima
    backtest.py     hold out the largest size / largest compute, refit every loss law, score it
    reliability.py  flags for degenerate fits (bounds, unidentified E, implausible allocation)
    downstream_reliability.py  the same for the downstream laws (box bounds, unidentified parameters, E, eps)
    selection.py    the choice of loss law by backtest, and total vs non-embedding parameter counts
    loss_laws.py    every loss law on the final points: fit, flag, backtest, select
    grouping.py     grouping runs by compute, D/N or (N, D) up to rounding
    table.py        input tables and run stores: column roles, filters, validation (reads files)
    pipeline.py     runs every law on one prepared input and returns the fit report (a dict)
    artifact.py     fit.json: write and read the report (writes files)
    synthetic.py    runs drawn from known laws plus noise (tests, demos)

`scaling-cli fit` (scaling_cli/commands/fit.py) calls `pipeline.fit_all`; `scaling-cli predict`
reads fit.json through `scaling_cli.predict`. Nothing here imports torch or scaling_cli.train.
"""

from __future__ import annotations

__all__ = ["FIT_SCHEMA"]

# Version tag of fit.json; predict refuses files written with another schema (re-run fit).
FIT_SCHEMA = "scaling-cli/fit/v1"
