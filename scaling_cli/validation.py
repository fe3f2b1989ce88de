"""Predict, then verify: each validation target of a sweep (sweep.validate) predicted from the fit.

    from scaling_cli.validation import validate_targets, format_validation
    report["validation"] = validate_targets(report, prepared.validation)   # `fit` and `backtest` do this
    print("\n".join(format_validation(report["validation"], unit)))

The fit never sees a target (fit/table.py keeps rows with role 'validation' out of every law); this
module sits downstream of both fit and predict and asks `scaling_cli.predict.predict` about each
target's N and D exactly as a user would. One record per target:

    run_id, name, status, params, tokens, flops, loss      what the run is and showed (loss: null
                                                           until it is done)
    predicted, lo, hi, level                               the predicted loss and its prediction
                                                           interval (null when predict gives none,
                                                           as for a law flagged unreliable)
    error                                                  predicted / loss - 1
    inside                                                 lo <= loss <= hi (null without both)
    law, reliable, distance                                the law used, its flag, and the target's
                                                           compute over the largest fitted compute
                                                           (both the store's FLOP count)
    averaged_over                                          the laws whose geometric mean is the
                                                           prediction (fit/selection.py averaging; [] when
                                                           the law alone answers)
    note                                                   what is missing and why, or null
"""

from __future__ import annotations

import math

from scaling_cli.errors import UserError
from scaling_cli.units import human, with_bits


def _finite(value) -> float | None:
    return float(value) if value is not None and math.isfinite(float(value)) else None


def validate_targets(report: dict, targets) -> list[dict]:
    """One record per row of `targets` (Prepared.validation), predicted with the fit in `report`
    (a JSON-ready fit report, as written to fit.json); [] without targets."""
    from scaling_cli.predict import predict

    if targets is None or len(targets) == 0:
        return []
    data = report.get("data") or {}
    # --params-kind auto may have fitted non-embedding counts; the targets carry both counts
    swapped = data.get("params_kind_requested") == "auto" and data.get("params_kind") == "nonembed"
    largest = _finite(((data.get("ranges") or {}).get("flops") or [None, None])[1])
    records = []
    for row in targets.to_dict("records"):
        params = _finite(row.get("params_alt")) if swapped else _finite(row["params"])
        loss = _finite(row["loss"])
        record = {"run_id": row["run"], "name": row.get("name", row["run"]), "status": row.get("status", "done"),
                  "params": params, "tokens": float(row["tokens"]), "flops": float(row["flops"]), "loss": loss,
                  "predicted": None, "lo": None, "hi": None, "level": report.get("level"), "error": None,
                  "inside": None, "law": None, "reliable": None,
                  "distance": float(row["flops"]) / largest if largest else None, "note": None}
        if params is None:
            record["note"] = f"no {data.get('params_kind')} parameter count for this run; cannot predict it"
            records.append(record)
            continue
        try:
            got = predict(report, params=params, tokens=float(row["tokens"]))
        except UserError as err:
            record["note"] = f"not predicted: {err}"
            records.append(record)
            continue
        record |= {"predicted": _finite(got["loss"]), "lo": _finite(got["loss_lo"]), "hi": _finite(got["loss_hi"]),
                   "level": got["level"], "law": got["law"], "reliable": got.get("reliable"),
                   "averaged_over": got.get("averaged_over") or []}
        notes = []
        if record["lo"] is None and record["predicted"] is not None:
            notes.append(f"no interval: predict gives none for {got['law']}"
                         + (" (flagged unreliable)" if not got.get("reliable", True) else ""))
        if loss is None:
            notes.append(f"the run is {record['status']}: no actual loss yet; re-run fit once it is done")
        if loss is not None and record["predicted"] is not None:
            record["error"] = record["predicted"] / loss - 1
        if loss is not None and record["lo"] is not None and record["hi"] is not None:
            record["inside"] = bool(record["lo"] <= loss <= record["hi"])
        record["note"] = "; ".join(notes) or None
        records.append(record)
    return records


def format_validation(records: list[dict], unit: str) -> list[str]:
    """Two lines per target: what it is and how far it is, then actual vs predicted with the interval
    and the error. Nothing when the sweep declared no target."""
    lines = []
    for r in records:
        far = "" if r["distance"] is None else f" = {r['distance']:.3g}x the largest fitted compute"
        size = "N ?" if r["params"] is None else f"N {human(r['params'])}"
        lines.append(f"validation {r['name']}: {size}, D {human(r['tokens'])}, C {human(r['flops'], 'FLOP')}{far}; "
                     "never fitted")
        parts = [f"actual {with_bits(r['loss'], unit)}" if r["loss"] is not None
                 else f"actual: none yet (the run is {r['status']}; re-run fit once it is done)"]
        if r["predicted"] is None:
            parts.append(r["note"] or "not predicted")
        elif r["lo"] is None:
            flagged = "flagged unreliable, " if r.get("reliable") is False else ""
            parts.append(f"predicted {r['predicted']:.4f}, no interval ({r['law']}: {flagged}predict gives none)")
        else:
            law = r["law"] if not r.get("averaged_over") else \
                f"{r['law']}, averaged with {', '.join(x for x in r['averaged_over'] if x != r['law'])}"
            parts.append(f"predicted {r['predicted']:.4f}, {r['level']:.0%} PI [{r['lo']:.4f}, {r['hi']:.4f}] ({law})")
        if r["error"] is not None:
            where = "" if r["inside"] is None else (", inside the interval" if r["inside"] else ", OUTSIDE the interval")
            parts.append(f"error {r['error']:+.2%}{where}")
        lines.append("  " + "; ".join(parts))
    return lines
