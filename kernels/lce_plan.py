"""How the Triton backend splits one fused linear + cross-entropy call: pure Python, no torch,
no triton, so every decision is unit-tested on a CPU (tests/test_kernels.py).

Shapes are (heads K, tokens T per head, hidden d, vocab V); K = 1 for a single loss.

Forward: token tiles stream the vocabulary with an online log-sum-exp. When d <= MAX_RESIDENT_D
the token tile's hidden states are loaded once and stay on chip for the whole vocabulary loop
("resident"); above it the tile streams d in slices. The vocabulary is cut into ``n_split``
ranges when there are too few token tiles to fill the GPU.

Backward schemes (``SCHEMES``), all recomputing the logits from the saved lse:

* ``supertile``: a Triton kernel writes the logit gradient G of a (tokens x vocab) super-tile into
  a bounded buffer and two cuBLAS GEMMs consume it (dH += G W, dW += G^T H). Four GEMMs of work
  plus G's round trip through memory (written once, read twice), which is cheap relative to the
  GEMMs only when d is large (each G element feeds 2d flops per GEMM).
* ``owners``: two Triton kernels and no G in memory. One owns a token tile, recomputes its
  logits against every vocab tile and keeps dH in registers; the other owns a vocab tile and keeps
  dW in registers. Deterministic, no partial sums, but the logits are recomputed twice (5 GEMMs
  of work counting the forward, 1.67x the 3-GEMM floor).
* ``fused``: one Triton kernel owns a vocab tile (dW in registers, as attention's backward owns
  K/V tiles) and adds each token tile's dH share into an fp32 buffer with atomics: four GEMMs of
  work (1.33x the floor) plus atomic traffic T*V*d*4/BLOCK_V bytes, mostly absorbed by L2 because
  all programs sweep the tokens in step. dH is summed in a run-dependent order (not bitwise
  deterministic). The fp32 buffer is bounded by FUSED_DH_BYTES: a pack runs a group of heads per
  launch (all their tokens, so dW is still written once); a head too long for the buffer runs in
  token chunks, dW then accumulating across chunks (in fp32 when that fits DW_FP32_ACC_BYTES, else
  in the gradient's own dtype, one rounding per chunk).

``owners`` and ``fused`` hold a [tile, d] accumulator in registers, so they exist for
d <= MAX_RESIDENT_D only; asked for at a larger d they fall back to ``supertile``.

Defaults are ASSUMPTIONS AWAITING AN H100 (nothing here has been timed): ``fused`` at
d <= MAX_RESIDENT_D (the G round trip dominates the supertile scheme there: at d = 128 reading G
costs more than the GEMM that reads it), ``supertile`` above it and for vocabularies too small to
give every SM a vocab tile. The SCALING_KERNELS_LCE_BWD
environment variable (or the ``scheme`` argument of linear_cross_entropy) overrides the choice,
so benchmarks/bench_linear_cross_entropy.py can time every scheme side by side.

Measured plans. ``plan_backward(..., measured=lookup)`` asks ``lookup(heads, tokens, dim, vocab,
elt)`` for the scheme that was timed fastest on this GPU at this shape bucket (``lce_plan_cache``
reads it from the per-GPU plan cache that ``lce_tune`` fills); the plan says where its scheme
came from in ``source``: 'requested' (the argument or the environment variable), 'measured', or
'default' (nothing measured: the assumption above). The lookup is injected, so this module stays
pure and its decisions testable without a cache or a GPU.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["SCHEMES", "SOURCES", "ForwardPlan", "BackwardPlan", "MeasuredLookup", "plan_forward", "plan_backward",
           "choose_scheme", "bucket", "scheme_override", "workspace_bytes", "MAX_RESIDENT_D"]

SCHEMES = ("supertile", "owners", "fused")
SOURCES = ("requested", "measured", "default")  # where a backward plan's scheme came from
ENV_SCHEME = "SCALING_KERNELS_LCE_BWD"
ENV_FORWARD = "SCALING_KERNELS_LCE_FWD"  # 'resident' (default where d allows) or 'stream'

# Largest d whose token (or vocab) tile and fp32 accumulator stay on chip: a [64, 256] fp32
# accumulator is 64 KiB of registers, half of what 8 warps hold. Assumption awaiting the H100.
MAX_RESIDENT_D = 256
# Tiles assumed when sizing splits (the autotuner may pick smaller ones).
PLAN_BLOCK_T = 128
PLAN_BLOCK_V = 128
# Resident programs wanted per SM (several, so one program's loads hide behind another's math).
PROGRAMS_PER_SM = 2
# A forward vocab split is a multiple of this (the largest BLOCK_V) and at least MIN_SPLIT_V long,
# so a split's partial (m, l) pair (8 bytes per token) stays small next to its work.
SPLIT_ALIGN = 256
MIN_SPLIT_V = 1024

# Workspace budgets (bytes); together they keep the backward's extra memory under 64 MiB.
FUSED_DH_BYTES = 32 << 20        # fp32 dH buffer of the fused scheme, all heads together
OWNERS_DH_SPLIT_BYTES = 16 << 20  # fp32 dH buffer that lets the owners' dH kernel split the vocab
DW_FP32_ACC_BYTES = 12 << 20     # fp32 dW accumulator across token chunks, all heads together
SUPERTILE_G_BYTES = 24 << 20     # the supertile scheme's G buffer, all heads together
SUPERTILE_DH_BYTES = 10 << 20    # its fp32 dH accumulator for one token chunk, all heads together
MAX_TOKEN_CHUNK = 4096           # supertile: tokens per chunk (more adds nothing to GEMM efficiency)
CHUNK_ALIGN = 128                # chunk edges on multiples of every BLOCK_T / BLOCK_V config


def bucket(n: int) -> int:
    """The power of two >= n: autotuning keys on buckets, so a new T (or V) within a bucket reuses
    the tuned config instead of benchmarking again."""
    return 1 << max(0, int(n) - 1).bit_length()


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _align_down(x: int, align: int) -> int:
    return max(align, x // align * align)


def resident(dim: int, env: dict | None = None) -> bool:
    """True when the forward keeps each token tile's hidden states on chip (d small enough and
    not overridden with SCALING_KERNELS_LCE_FWD=stream)."""
    env = os.environ if env is None else env
    return dim <= MAX_RESIDENT_D and env.get(ENV_FORWARD, "resident") != "stream"


@dataclass(frozen=True)
class ForwardPlan:
    n_split: int      # vocab ranges per token tile
    v_per_split: int  # vocab entries per range (a multiple of SPLIT_ALIGN)
    resident: bool
    tok_bucket: int   # autotune keys
    voc_bucket: int


def _vocab_splits(heads: int, tokens: int, vocab: int, sms: int, split_align: int, min_split_v: int,
                  one: bool = False) -> tuple[int, int]:
    """(splits, entries per split) of the vocabulary for programs that each own a token tile: enough
    programs for PROGRAMS_PER_SM per SM, no split shorter than min_split_v (`one`: a single split)."""
    token_tiles = heads * _cdiv(tokens, PLAN_BLOCK_T)
    wanted = _cdiv(PROGRAMS_PER_SM * sms, max(token_tiles, 1))
    n_split = 1 if one else max(1, min(wanted, vocab // min_split_v))
    v_per_split = _cdiv(_cdiv(vocab, n_split), split_align) * split_align
    return _cdiv(vocab, v_per_split), v_per_split  # alignment may leave fewer, never an empty split


def plan_forward(heads: int, tokens: int, dim: int, vocab: int, sms: int, env: dict | None = None,
                 split_align: int = SPLIT_ALIGN, min_split_v: int = MIN_SPLIT_V) -> ForwardPlan:
    """Vocab splits: enough programs for PROGRAMS_PER_SM per SM, none shorter than min_split_v.
    (The interpreter passes small split sizes so tiny test shapes still split.)"""
    n_split, v_per_split = _vocab_splits(heads, tokens, vocab, sms, split_align, min_split_v)
    return ForwardPlan(n_split, v_per_split, resident(dim, env), bucket(heads * tokens), bucket(vocab))


@dataclass(frozen=True)
class BackwardPlan:
    scheme: str
    token_chunk: int   # tokens per head per pass (fused: dH buffer; supertile: tc)
    head_group: int    # fused: heads per launch (their dH shares the fp32 buffer)
    vocab_chunk: int   # supertile: vocab per super-tile (vc); otherwise the whole vocabulary
    dh_splits: int     # owners: vocab ranges of the dH kernel (> 1 adds into an fp32 buffer)
    dh_v_per_split: int  # owners: vocab entries per range (a multiple of split_align)
    dw_fp32_acc: bool  # dW summed across token chunks in an fp32 buffer (else in its own dtype)
    tok_bucket: int
    voc_bucket: int
    source: str = "default"  # SOURCES: who chose the scheme


MeasuredLookup = Callable[[int, int, int, int, int], "str | None"]
"""(heads, tokens, dim, vocab, elt) -> the scheme measured fastest at that shape on this GPU, or None."""


def scheme_override(requested: str, env: dict | None = None) -> str:
    """'auto' defers to SCALING_KERNELS_LCE_BWD, then to the per-shape default."""
    env = os.environ if env is None else env
    if requested == "auto":
        requested = env.get(ENV_SCHEME, "auto") or "auto"
    if requested != "auto" and requested not in SCHEMES:
        raise ValueError(f"{ENV_SCHEME} / scheme must be 'auto' or one of {SCHEMES}, got {requested!r}")
    return requested


def default_scheme(heads: int, dim: int, vocab: int, sms: int) -> str:
    """Assumption awaiting the H100 (see the module docstring). The fused kernel's parallelism is
    its vocab tiles (K * V / 64 of them at most); with fewer than one per SM (a small vocabulary)
    the GPU would idle, and cuBLAS's token-parallel GEMMs serve better."""
    if dim > MAX_RESIDENT_D or heads * _cdiv(vocab, 64) < sms:
        return "supertile"
    return "fused"


def choose_scheme(heads: int, tokens: int, dim: int, vocab: int, elt: int, sms: int, scheme: str = "auto",
                  env: dict | None = None, measured: MeasuredLookup | None = None) -> tuple[str, str]:
    """(scheme, source): a requested scheme, else the measured one, else the default. A measured
    answer that is not a scheme (a damaged cache) counts as nothing measured."""
    scheme = scheme_override(scheme, env)
    if scheme != "auto":
        chosen, source = scheme, "requested"
    else:
        found = measured(heads, tokens, dim, vocab, elt) if measured is not None else None
        chosen, source = (found, "measured") if found in SCHEMES else (default_scheme(heads, dim, vocab, sms), "default")
    if chosen in ("owners", "fused") and dim > MAX_RESIDENT_D:
        chosen = "supertile"
    return chosen, source


def plan_backward(heads: int, tokens: int, dim: int, vocab: int, elt: int, sms: int, scheme: str = "auto",
                  env: dict | None = None, split_align: int = SPLIT_ALIGN,
                  min_split_v: int = MIN_SPLIT_V, measured: MeasuredLookup | None = None) -> BackwardPlan:
    """elt: bytes per element of the inputs (2 for bf16, 4 for fp32). fp32 inputs accumulate
    straight into their fp32 gradients, so they need no fp32 buffers and no chunks. ``measured``:
    the plan cache's lookup (module docstring), consulted only when no scheme is requested."""
    scheme, source = choose_scheme(heads, tokens, dim, vocab, elt, sms, scheme, env, measured)
    low_precision = elt < 4
    keys = dict(tok_bucket=bucket(heads * tokens), voc_bucket=bucket(vocab), source=source)
    if scheme == "fused":
        group, chunk = heads, tokens
        head_bytes = tokens * dim * 4
        if low_precision and heads * head_bytes > FUSED_DH_BYTES:
            if head_bytes <= FUSED_DH_BYTES:
                group = FUSED_DH_BYTES // head_bytes
            else:
                group, chunk = 1, min(tokens, _align_down(FUSED_DH_BYTES // (4 * dim), CHUNK_ALIGN))
        fp32_acc = chunk < tokens and heads * vocab * dim * 4 <= DW_FP32_ACC_BYTES
        return BackwardPlan("fused", chunk, group, vocab, 1, vocab, fp32_acc, **keys)
    if scheme == "owners":
        # several splits add into an fp32 dH; past OWNERS_DH_SPLIT_BYTES that buffer costs too much
        one = low_precision and heads * tokens * dim * 4 > OWNERS_DH_SPLIT_BYTES
        splits, v_per_split = _vocab_splits(heads, tokens, vocab, sms, split_align, min_split_v, one)
        return BackwardPlan("owners", tokens, heads, vocab, splits, v_per_split, False, **keys)
    tc = min(tokens, MAX_TOKEN_CHUNK)
    if low_precision:
        tc = min(tc, _align_down(SUPERTILE_DH_BYTES // (4 * dim * heads), CHUNK_ALIGN))
    vc = min(vocab, _align_down(SUPERTILE_G_BYTES // (tc * elt * heads), CHUNK_ALIGN))
    fp32_acc = low_precision and heads * vocab * dim * 4 <= DW_FP32_ACC_BYTES
    return BackwardPlan("supertile", tc, heads, vc, 1, vocab, fp32_acc, **keys)


def workspace_bytes(fwd: ForwardPlan, bwd: BackwardPlan, heads: int, tokens: int, dim: int, vocab: int,
                    elt: int) -> int:
    """Peak bytes the Triton backend allocates beyond its inputs, its outputs (lse, target logit,
    dH, dW) and the autograd tensors [K, T] around it: the larger of the forward's split partials
    and the backward's buffers. The memory test and the benchmark compare this with measurement."""
    forward = 2 * 4 * fwd.n_split * heads * tokens if fwd.n_split > 1 else 0
    low_precision = elt < 4
    dw_acc = heads * vocab * dim * 4 if bwd.dw_fp32_acc else 0
    if bwd.scheme == "fused":
        backward = (bwd.head_group * bwd.token_chunk * dim * 4 if low_precision else 0) + dw_acc
    elif bwd.scheme == "owners":
        backward = heads * tokens * dim * 4 if bwd.dh_splits > 1 and low_precision else 0
    else:
        g_buf = heads * bwd.token_chunk * bwd.vocab_chunk * elt
        dh_acc = heads * bwd.token_chunk * dim * 4 if low_precision else 0
        backward = g_buf + dh_acc + dw_acc
    return max(forward, backward)
