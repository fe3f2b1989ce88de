"""Measured plans: time the candidate backward schemes at one shape and keep the fastest in the
per-GPU plan cache (``lce_plan_cache``), which every later backward of that shape bucket follows.

    entry = tune_shape(8, 32768, 128, 8192, torch.bfloat16, "cuda", budget_s=5.0, by="sweep")
    entry["scheme"], entry["ms"]          # the fastest scheme, ms per scheme (fwd + bwd, median)

Candidates: the planner's default first (so a budget that runs out still measured what would run
anyway), then every other scheme that exists at this d (``owners`` and ``fused`` hold a [tile, d]
accumulator on chip: d <= MAX_RESIDENT_D). Block sizes: each scheme's first call runs Triton's
autotuner over that kernel's tile configs (lce_triton's tables) and the timing is of the configs
it picked; they are recorded with the entry (``configs``), and with TRITON_CACHE_AUTOTUNING=1
(set by scaling-cli's cache setup) Triton keeps its own timings on disk, so a later process
neither re-benchmarks the tiles nor re-times the schemes.

On a CPU under TRITON_INTERPRET=1 the same code runs the interpreter (a 'triton-interpreter'
device in the cache): it proves the plumbing, and its milliseconds describe the interpreter only.
"""

from __future__ import annotations

import math
import time

import torch

from . import lce_plan, lce_plan_cache
from .lce_bench import ours_fn, random_inputs, time_ms

__all__ = ["candidate_schemes", "tune_shape"]


def candidate_schemes(heads: int, tokens: int, dim: int, vocab: int, elt: int, sms: int) -> list[str]:
    """The default scheme first, then the others that exist at this d."""
    default = lce_plan.default_scheme(heads, dim, vocab, sms)
    usable = [s for s in lce_plan.SCHEMES if dim <= lce_plan.MAX_RESIDENT_D or s == "supertile"]
    return [default] + [s for s in usable if s != default]


def tune_shape(heads: int, tokens: int, dim: int, vocab: int, dtype: torch.dtype,
               device: torch.device | str = "cuda", budget_s: float | None = None, warmup: int = 1, rep: int = 5,
               by: str = "doctor", record: bool = True, known_ms: dict[str, float] | None = None) -> dict:
    """Time each candidate scheme (forward + backward, median of `rep` after `warmup`) at this shape
    and record the fastest for this GPU. `budget_s`: stop starting new schemes once this many
    seconds have gone (at least one is always timed); the entry then says complete=False, and a
    later call given its `known_ms` (an incomplete entry's timings, same GPU and shape) times only
    the schemes still missing. A scheme that fails (raises, runs out of memory) gets an infinite
    time and its error. Returns the plan-cache entry plus 'errors' and 'candidates' (no entry is
    written when nothing could be timed: then 'scheme' is None)."""
    from . import lce_triton

    device = torch.device(device)
    identity = lce_triton.device_identity(device)
    elt = dtype.itemsize
    candidates = candidate_schemes(heads, tokens, dim, vocab, elt, lce_triton._num_sms(device))
    started = time.perf_counter()
    h, w, y = random_inputs((heads, tokens, dim, vocab), dtype, device)
    ms: dict[str, float] = {s: float(t) for s, t in (known_ms or {}).items() if s in candidates}
    configs: dict[str, dict] = {}
    errors: dict[str, str] = {}
    timed_now = 0
    for scheme in (s for s in candidates if s not in ms):
        if budget_s is not None and timed_now and time.perf_counter() - started > budget_s:
            break
        timed_now += 1
        try:
            ms[scheme] = time_ms(ours_fn(scheme), h, w, y, warmup, rep)
            configs[scheme] = lce_triton.tuned_configs()
        except Exception as err:  # noqa: BLE001 - a scheme that cannot run is not a candidate
            ms[scheme] = math.inf
            errors[scheme] = f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"
            h.grad = w.grad = None
            if device.type == "cuda":
                torch.cuda.empty_cache()
    seconds = time.perf_counter() - started
    complete = len(ms) == len(candidates)
    summary = {"candidates": candidates, "errors": errors, "ms": ms, "complete": complete, "seconds": seconds,
               "scheme": None}
    if not any(math.isfinite(t) for t in ms.values()):
        return summary
    if not record:
        return {**summary, "scheme": min(ms, key=ms.get)}
    entry = lce_plan_cache.record_plan(identity, heads, tokens, dim, vocab, elt, ms, by=by, seconds=seconds,
                                       complete=complete, configs={k: v for k, v in configs.items() if v})
    return {**summary, **entry}
