"""Tests for scaling_kernels.linear_cross_entropy (Triton kernels and PyTorch reference).

    pytest tests/test_kernels.py            # CPU: Triton runs under TRITON_INTERPRET=1
    pytest tests/test_kernels.py -m gpu     # the CUDA-only checks

Oracle: plain fp32 PyTorch on the *same* (possibly bf16-rounded) inputs.
Rule (from apple/ml-cross-entropy): at each dtype, our max-abs error against the
oracle must be <= the error of plain PyTorch at that dtype + tol, where
tol = ATOL + RTOL * max|oracle| per dtype (see TOLS). Shapes are deliberately
not multiples of any tile size (interpreter tiles are 16 x 32 x 16).
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F

# Must happen before triton (and our Triton backend) is first imported.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from scaling_kernels import (  # noqa: E402
    LinearCrossEntropy,
    linear_cross_entropy,
    linear_cross_entropy_reference,
    triton_available,
)
from scaling_kernels import lce_plan, lce_reference  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
IGNORE = -100
# (ATOL, RTOL): fp32 is checked to fp32 rounding; bf16 allows one bf16 rounding (2^-8)
# of the oracle's scale on top of plain torch's own bf16 error.
TOLS = {torch.float32: (1e-6, 1e-5), torch.bfloat16: (1e-5, 2.0**-8)}


def _triton_usable() -> bool:
    if not triton_available():
        return False
    if torch.cuda.is_available():
        return True
    from scaling_kernels import lce_triton

    return lce_triton.INTERPRET  # False if imported before this module set the env var


needs_triton = pytest.mark.skipif(not _triton_usable(), reason="needs triton on CUDA or TRITON_INTERPRET=1")
gpu = pytest.mark.gpu
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


# ---------------------------------------------------------------- helpers (conftest-like)

def _make(T: int, d: int, V: int, dtype: torch.dtype, *, ignore_every: int = 4, seed: int = 0,
          device: str = DEVICE):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(T, d, generator=g)
    # scale so logits have std ~2-3: peaky enough to exercise the max-shift
    w = torch.randn(V, d, generator=g) * (2.5 / d**0.5)
    y = torch.randint(0, V, (T,), generator=g)
    if ignore_every:
        y[1::ignore_every] = IGNORE
    return h.to(device, dtype), w.to(device, dtype), y.to(device)


def _torch_loss(h, w, y, reduction, z_loss, softcap, compute_dtype):
    """Plain PyTorch at compute_dtype: logits matmul in that dtype, loss in fp32."""
    h = h.detach().to(compute_dtype).requires_grad_()
    w = w.detach().to(compute_dtype).requires_grad_()
    s = h @ w.T
    if softcap > 0:
        s = softcap * torch.tanh(s / softcap)
    s = s.float()
    valid = y != IGNORE
    lse = torch.logsumexp(s, dim=-1)
    tok = F.cross_entropy(s, y, ignore_index=IGNORE, reduction="none") + z_loss * lse * lse
    tok = torch.where(valid, tok, 0.0)
    if reduction == "none":
        loss = tok
    elif reduction == "sum":
        loss = tok.sum()
    else:
        loss = tok.sum() / valid.sum().clamp(min=1)
    (loss.sum() if reduction == "none" else loss).backward()
    return loss.detach(), h.grad.float(), w.grad.float()


def _ours(h, w, y, reduction, z_loss, softcap, impl, scheme="auto"):
    h = h.detach().clone().requires_grad_()
    w = w.detach().clone().requires_grad_()
    loss = linear_cross_entropy(h, w, y, reduction=reduction, z_loss=z_loss, softcap=softcap, impl=impl,
                                scheme=scheme)
    (loss.sum() if reduction == "none" else loss).backward()
    assert h.grad.dtype == h.dtype and w.grad.dtype == w.dtype
    return loss.detach().float(), h.grad.float(), w.grad.float()


def _check_against_oracle(h, w, y, reduction, z_loss, softcap, impl, scheme="auto"):
    """CCE rule for loss, dH and dW."""
    dtype = h.dtype
    oracle = _torch_loss(h, w, y, reduction, z_loss, softcap, torch.float32)
    plain = _torch_loss(h, w, y, reduction, z_loss, softcap, dtype)
    ours = _ours(h, w, y, reduction, z_loss, softcap, impl, scheme)
    atol, rtol = TOLS[dtype]
    for name, o, p, r in zip(("loss", "dH", "dW"), ours, plain, oracle):
        assert torch.isfinite(o).all(), name
        assert o.shape == r.shape, name
        err, err_plain = (o - r).abs().max().item(), (p - r).abs().max().item()
        tol = atol + rtol * r.abs().max().item()
        assert err <= err_plain + tol, f"{name}: err {err:.3g} > plain {err_plain:.3g} + tol {tol:.3g}"


# ----------------------------------------------------------------- reference

REF_CASES = [
    # T, d, V, reduction, z_loss, softcap
    (37, 24, 131, "mean", 0.0, 0.0),
    (1, 16, 67, "mean", 0.0, 0.0),
    (9, 40, 259, "sum", 0.0, 0.0),
    (37, 24, 131, "none", 0.0, 0.0),
    (37, 24, 131, "mean", 1e-3, 0.0),
    (9, 40, 259, "mean", 0.0, 3.0),
    (37, 24, 131, "sum", 1e-2, 5.0),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("case", REF_CASES, ids=lambda c: "-".join(map(str, c)))
def test_reference_matches_oracle(case, dtype):
    T, d, V, reduction, z_loss, softcap = case
    h, w, y = _make(T, d, V, dtype, ignore_every=0 if T == 1 else 4)
    _check_against_oracle(h, w, y, reduction, z_loss, softcap, impl="torch")


def test_reference_chunked_matches_unchunked(monkeypatch):
    h, w, y = _make(37, 24, 131, torch.float32)
    full = _ours(h, w, y, "mean", 1e-3, 4.0, "torch")
    monkeypatch.setattr(lce_reference, "CHUNK_BYTES", 8 * 131 * 4)  # 8-token chunks, ragged last
    chunked = _ours(h, w, y, "mean", 1e-3, 4.0, "torch")
    for a, b in zip(full, chunked):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_reference_midsize():
    h, w, y = _make(512, 64, 5000, torch.float32, ignore_every=7)
    _check_against_oracle(h, w, y, "mean", 1e-4, 0.0, impl="torch")


# ----------------------------------------------------------------- triton

TRITON_CASES = [
    (37, 24, 131, "mean", 0.0, 0.0),
    (1, 16, 67, "sum", 0.0, 0.0),  # a single (non-ignored) token
    (9, 40, 259, "none", 1e-3, 0.0),  # two vocab splits in the forward
    (37, 24, 131, "mean", 1e-3, 5.0),
    (9, 40, 259, "sum", 0.0, 3.0),
]


@needs_triton
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("case", TRITON_CASES, ids=lambda c: "-".join(map(str, c)))
def test_triton_matches_oracle(case, dtype):
    T, d, V, reduction, z_loss, softcap = case
    h, w, y = _make(T, d, V, dtype, ignore_every=0 if T == 1 else 4)
    _check_against_oracle(h, w, y, reduction, z_loss, softcap, impl="triton")


@needs_triton
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("scheme", ["owners", "supertile"])
def test_triton_backward_schemes_match_oracle(scheme, dtype):
    """The non-default backward schemes (the default, 'fused', runs in every other triton test).
    V = 259 gives two vocab splits in the forward and in the owners' dH kernel (fp32 atomics)."""
    h, w, y = _make(37, 24, 259, dtype)
    _check_against_oracle(h, w, y, "mean", 1e-3, 4.0, impl="triton", scheme=scheme)


@needs_triton
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_triton_backward_super_tiles(monkeypatch, dtype):
    """Force several token x vocab super-tiles and the bf16 in-place dW path."""
    from scaling_kernels import lce_plan

    monkeypatch.setattr(lce_plan, "CHUNK_ALIGN", 16)
    monkeypatch.setattr(lce_plan, "MAX_TOKEN_CHUNK", 16)  # 37 tokens -> 16 + 16 + 5
    monkeypatch.setattr(lce_plan, "SUPERTILE_G_BYTES", 16 * 48 * 4)  # 131 vocab -> 48 or 96 wide
    monkeypatch.setattr(lce_plan, "DW_FP32_ACC_BYTES", 0)
    h, w, y = _make(37, 24, 131, dtype)
    _check_against_oracle(h, w, y, "mean", 1e-3, 4.0, impl="triton", scheme="supertile")


@needs_triton
@pytest.mark.parametrize("fp32_dw", [True, False], ids=["fp32-dW-acc", "bf16-dW-acc"])
def test_triton_fused_token_chunks(monkeypatch, fp32_dw):
    """bf16 'fused' backward over several token chunks (its fp32 dH buffer is bounded): dW sums
    across chunks in an fp32 buffer, or in bf16 when that buffer would not fit."""
    from scaling_kernels import lce_plan

    monkeypatch.setattr(lce_plan, "CHUNK_ALIGN", 16)
    monkeypatch.setattr(lce_plan, "FUSED_DH_BYTES", 16 * 24 * 4)  # 37 tokens -> 16 + 16 + 5
    monkeypatch.setattr(lce_plan, "DW_FP32_ACC_BYTES", (1 << 20) if fp32_dw else 0)
    h, w, y = _make(37, 24, 131, torch.bfloat16)
    _check_against_oracle(h, w, y, "sum", 1e-3, 0.0, impl="triton", scheme="fused")


@needs_triton
def test_triton_large_d_path(monkeypatch):
    """Above MAX_RESIDENT_D the forward streams d in slices and the backward falls back to the
    supertile scheme even when 'fused' is asked for."""
    from scaling_kernels import lce_plan, lce_triton

    monkeypatch.setattr(lce_plan, "MAX_RESIDENT_D", 16)
    h, w, y = _make(37, 40, 131, torch.bfloat16)  # d = 40: three 16-wide slices, the last ragged
    assert lce_triton.backward_plan(h[None], w[None], "fused").scheme == "supertile"
    _check_against_oracle(h, w, y, "mean", 1e-3, 4.0, impl="triton", scheme="fused")


@needs_triton
def test_triton_matches_reference_none_and_lse():
    h, w, y = _make(37, 24, 131, torch.float32)
    a, lse_a = linear_cross_entropy(h, w, y, reduction="none", softcap=4.0, impl="triton", return_lse=True)
    b, lse_b = linear_cross_entropy(h, w, y, reduction="none", softcap=4.0, impl="torch", return_lse=True)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(lse_a, lse_b, rtol=1e-5, atol=1e-5)
    s = 4.0 * torch.tanh(h.float() @ w.float().T / 4.0)
    torch.testing.assert_close(lse_a, torch.logsumexp(s, -1), rtol=1e-5, atol=1e-5)


# ----------------------------------------------------- semantics, both backends

IMPLS = ["torch", pytest.param("triton", marks=needs_triton)]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_all_ignored_gives_zero_not_nan(impl, reduction):
    h, w, _ = _make(9, 16, 67, torch.float32)
    y = torch.full((9,), IGNORE, device=DEVICE)
    h.requires_grad_()
    w.requires_grad_()
    loss = linear_cross_entropy(h, w, y, reduction=reduction, z_loss=1e-3, impl=impl)
    (loss.sum() if reduction == "none" else loss).backward()
    assert torch.all(loss == 0)
    assert torch.all(h.grad == 0) and torch.all(w.grad == 0)


@pytest.mark.parametrize("impl", IMPLS)
def test_none_reduction_shape_and_ignored_zeros(impl):
    h, w, y = _make(12, 16, 67, torch.float32)
    h3, y3 = h.reshape(3, 4, 16), y.reshape(3, 4)
    loss = linear_cross_entropy(h3, w, y3, reduction="none", impl=impl)
    assert loss.shape == (3, 4) and loss.dtype == torch.float32
    assert torch.all(loss[y3 == IGNORE] == 0) and torch.all(loss[y3 != IGNORE] > 0)
    mean = linear_cross_entropy(h3, w, y3, impl=impl)
    torch.testing.assert_close(mean, loss.sum() / (y3 != IGNORE).sum())


def test_custom_ignore_index_and_module():
    h, w, y = _make(20, 16, 67, torch.float32, ignore_every=0)
    y[::3] = 5
    ref = F.cross_entropy(h @ w.T, y, ignore_index=5)
    torch.testing.assert_close(linear_cross_entropy(h, w, y, ignore_index=5), ref)
    module = LinearCrossEntropy(ignore_index=5, impl="torch")
    torch.testing.assert_close(module(h, w, y), ref)
    torch.testing.assert_close(linear_cross_entropy_reference(h, w, y, ignore_index=5), ref)


def test_autocast_casts_and_grads_reach_fp32_weight():
    h, w, y = _make(37, 24, 131, torch.float32)
    h.requires_grad_()
    w.requires_grad_()
    with torch.autocast(device_type=DEVICE, dtype=torch.bfloat16):
        loss = linear_cross_entropy(h, w, y)
    loss.backward()
    assert loss.dtype == torch.float32
    assert w.grad.dtype == torch.float32 and h.grad.dtype == torch.float32
    oracle = _torch_loss(h.bfloat16(), w.bfloat16(), y, "mean", 0.0, 0.0, torch.float32)
    torch.testing.assert_close(loss.detach(), oracle[0], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(w.grad, oracle[2], rtol=2e-2, atol=2e-4)


def test_impl_auto_on_cpu_is_reference():
    h, w, y = _make(9, 16, 67, torch.float32, device="cpu")
    torch.testing.assert_close(linear_cross_entropy(h, w, y, impl="auto"),
                               linear_cross_entropy(h, w, y, impl="torch"), rtol=0, atol=0)


@pytest.mark.parametrize("kwargs, match", [
    (dict(reduction="avg"), "reduction"),
    (dict(impl="cuda"), "impl"),
    (dict(z_loss=-1.0), "z_loss"),
    (dict(softcap=float("nan")), "softcap"),
])
def test_bad_options(kwargs, match):
    h, w, y = _make(4, 8, 11, torch.float32, device="cpu")
    with pytest.raises(ValueError, match=match):
        linear_cross_entropy(h, w, y, **kwargs)


def test_bad_shapes_and_dtypes():
    h, w, y = _make(4, 8, 11, torch.float32, device="cpu")
    with pytest.raises(ValueError, match="hidden"):
        linear_cross_entropy(h[:, :7], w, y)
    with pytest.raises(ValueError, match="targets shape"):
        linear_cross_entropy(h, w, y[:3])
    with pytest.raises(ValueError, match="weight"):
        linear_cross_entropy(h, w[None], y)
    with pytest.raises(ValueError, match="integer"):
        linear_cross_entropy(h, w, y.float())
    with pytest.raises(ValueError, match="dtype"):
        linear_cross_entropy(h.half(), w.half(), y)
    with pytest.raises(ValueError, match=r"\[0, 11\)"):
        linear_cross_entropy(h, w, torch.tensor([0, 1, 11, 2]))
    with pytest.raises(ValueError, match="reduction"):
        LinearCrossEntropy(reduction="avg")


# ----------------------------------------------------------------- GPU only

@gpu
@needs_cuda
@pytest.mark.parametrize("shape", [(4097, 256, 50304), (1000, 768, 32003)])
def test_gpu_bf16_large_vocab(shape):
    T, d, V = shape
    h, w, y = _make(T, d, V, torch.bfloat16, device="cuda", ignore_every=9)
    for impl in ("triton", "torch"):
        _check_against_oracle(h, w, y, "mean", 1e-4, 30.0, impl=impl)


@gpu
@needs_cuda
def test_gpu_fp32_matches_oracle():
    h, w, y = _make(777, 128, 5003, torch.float32, device="cuda")
    _check_against_oracle(h, w, y, "sum", 1e-3, 0.0, impl="triton")


@gpu
@needs_cuda
@pytest.mark.parametrize("scheme", lce_plan.SCHEMES)
def test_gpu_schemes_match_oracle(scheme):
    h, w, y = _make(3000, 128, 20011, torch.bfloat16, device="cuda", ignore_every=9)
    _check_against_oracle(h, w, y, "mean", 1e-4, 30.0, impl="triton", scheme=scheme)


@gpu
@needs_cuda
@pytest.mark.parametrize("shape", [(16384, 512, 50304), (16384, 128, 32768)])
def test_gpu_extra_memory_is_bounded(shape):
    """Peak beyond inputs and gradients stays under the issue's 64 MiB target, measured after
    prepare() has autotuned (outside the step, as a trainer does before the step it measures)."""
    from scaling_kernels import prepare_linear_cross_entropy

    T, d, V = shape
    h, w, y = _make(T, d, V, torch.bfloat16, device="cuda", ignore_every=0)
    h.requires_grad_()
    w.requires_grad_()
    assert prepare_linear_cross_entropy([(1, T, d, V)]) == 1
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    linear_cross_entropy(h, w, y, impl="triton").backward()
    torch.cuda.synchronize()
    grads = h.grad.nbytes + w.grad.nbytes
    extra = torch.cuda.max_memory_allocated() - base - grads
    assert extra <= 64 << 20, f"extra {extra / 2**20:.1f} MiB"


# ------------------------------------------------------------- planning (pure Python, any machine)

# The four shapes, the pack shape (16 heads) and a d = 128 single head: (K, T, d, V)
PLAN_SHAPES = [(1, 16384, 256, 32768), (1, 16384, 512, 50304), (1, 32768, 768, 50304), (1, 8192, 2304, 256000),
               (16, 16384, 128, 32768), (1, 16384, 128, 32768)]
H100_SMS = 132


def test_plan_buckets_key_autotuning_not_every_length():
    assert [lce_plan.bucket(n) for n in (1, 2, 3, 1000, 1024, 1025, 50304)] == [1, 2, 4, 1024, 1024, 2048, 65536]
    keys = set()
    for tokens in (9000, 12000, 16384):  # sequence lengths / batch sizes of one bucket
        fwd = lce_plan.plan_forward(1, tokens, 128, 32768, H100_SMS)
        bwd = lce_plan.plan_backward(1, tokens, 128, 32768, 2, H100_SMS)
        keys |= {(fwd.tok_bucket, fwd.voc_bucket), (bwd.tok_bucket, bwd.voc_bucket)}
    assert keys == {(16384, 32768)}
    # a pack keys on its total tokens: 16 heads x 1024 tune like one head of 16384
    assert lce_plan.plan_forward(16, 1024, 128, 32768, H100_SMS).tok_bucket == 16384


def test_plan_forward_splits_fill_the_gpu_only_when_tokens_do_not():
    few = lce_plan.plan_forward(1, 4096, 128, 32768, H100_SMS)  # 32 token tiles
    assert few.n_split * 32 >= 2 * H100_SMS and few.v_per_split % lce_plan.SPLIT_ALIGN == 0
    assert (few.n_split - 1) * few.v_per_split < 32768 <= few.n_split * few.v_per_split  # no empty split
    fewer = lce_plan.plan_forward(1, 1024, 128, 32768, H100_SMS)  # 8 tiles: splits stop at MIN_SPLIT_V long
    assert fewer.n_split == 32768 // lce_plan.MIN_SPLIT_V and fewer.v_per_split == lce_plan.MIN_SPLIT_V
    assert lce_plan.plan_forward(16, 16384, 128, 32768, H100_SMS).n_split == 1  # a pack fills it alone
    assert lce_plan.plan_forward(1, 100, 64, 2000, H100_SMS).n_split == 1  # too small a vocab to split
    assert lce_plan.plan_forward(1, 4096, 256, 32768, H100_SMS).resident
    assert not lce_plan.plan_forward(1, 4096, 768, 50304, H100_SMS).resident
    assert not lce_plan.plan_forward(1, 4096, 128, 32768, H100_SMS, env={lce_plan.ENV_FORWARD: "stream"}).resident


def test_plan_backward_scheme_choice_override_and_fallback():
    auto = {d: lce_plan.plan_backward(1, 16384, d, 50304, 2, H100_SMS).scheme for d in (128, 256, 512, 768, 2304)}
    assert auto == {128: "fused", 256: "fused", 512: "supertile", 768: "supertile", 2304: "supertile"}
    assert lce_plan.plan_backward(1, 16384, 128, 2048, 2, H100_SMS).scheme == "supertile"  # 32 vocab tiles
    assert lce_plan.plan_backward(8, 16384, 128, 2048, 2, H100_SMS).scheme == "fused"  # a pack has K x 32
    env = {lce_plan.ENV_SCHEME: "owners"}
    assert lce_plan.plan_backward(1, 16384, 128, 32768, 2, H100_SMS, env=env).scheme == "owners"
    assert lce_plan.plan_backward(1, 16384, 128, 32768, 2, H100_SMS, "supertile", env=env).scheme == "supertile"
    assert lce_plan.plan_backward(1, 16384, 768, 50304, 2, H100_SMS, "owners").scheme == "supertile"
    with pytest.raises(ValueError, match="SCALING_KERNELS_LCE_BWD"):
        lce_plan.plan_backward(1, 16, 128, 512, 2, H100_SMS, env={lce_plan.ENV_SCHEME: "fast"})
    pack = lce_plan.plan_backward(16, 16384, 128, 32768, 2, H100_SMS)  # fused: 4 heads' tokens per launch
    assert (pack.head_group, pack.token_chunk, pack.dw_fp32_acc) == (4, 16384, False)
    long = lce_plan.plan_backward(1, 1 << 17, 128, 32768, 2, H100_SMS)  # one head too long for the buffer
    assert long.head_group == 1 and long.token_chunk < 1 << 17
    owners = lce_plan.plan_backward(1, 16384, 128, 32768, 2, H100_SMS, "owners")  # 128 token tiles < 2 per SM
    assert owners.dh_splits > 1 and (owners.dh_splits - 1) * owners.dh_v_per_split < 32768
    assert lce_plan.plan_backward(16, 16384, 128, 32768, 2, H100_SMS, "owners").dh_splits == 1


@pytest.mark.parametrize("shape", PLAN_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("scheme", lce_plan.SCHEMES)
def test_plan_workspace_stays_under_64_mib(shape, scheme):
    heads, tokens, dim, vocab = shape
    for elt in (2, 4):
        fwd = lce_plan.plan_forward(heads, tokens, dim, vocab, H100_SMS)
        bwd = lce_plan.plan_backward(heads, tokens, dim, vocab, elt, H100_SMS, scheme)
        assert lce_plan.workspace_bytes(fwd, bwd, heads, tokens, dim, vocab, elt) <= 64 << 20
        assert 0 < bwd.token_chunk <= tokens and 0 < bwd.vocab_chunk <= vocab


# ----------------------------------------------------- heads (a pack's K losses in one call)

def _make_heads(K: int, T: int, d: int, V: int, dtype: torch.dtype):
    parts = [_make(T, d, V, dtype, seed=k) for k in range(K)]
    return tuple(torch.stack(p) for p in zip(*parts))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("impl", IMPLS)
def test_heads_equal_one_call_per_head(monkeypatch, impl, dtype, reduction):
    """Head k of linear_cross_entropy_heads is linear_cross_entropy(hidden[k], weight[k], targets[k])
    with its own z-loss: same loss and gradients, also when the backward runs the heads in groups."""
    from scaling_kernels import lce_plan, linear_cross_entropy_heads

    monkeypatch.setattr(lce_plan, "FUSED_DH_BYTES", 2 * 37 * 24 * 4)  # fused: heads 0-1, then head 2
    z_loss, softcap = [0.0, 1e-2, 1e-3], 4.0
    h, w, y = _make_heads(3, 37, 24, 131, dtype)
    h, w = h.requires_grad_(), w.requires_grad_()
    losses, lse = linear_cross_entropy_heads(h, w, y, reduction=reduction, z_loss=z_loss, softcap=softcap,
                                             impl=impl, return_lse=True)
    assert losses.shape == ((3, 37) if reduction == "none" else (3,)) and lse.shape == (3, 37)
    losses.sum().backward()
    atol, rtol = (1e-6, 1e-5) if dtype == torch.float32 else (1e-3, 2.0**-7)
    for k in range(3):
        hk, wk = h[k].detach().clone().requires_grad_(), w[k].detach().clone().requires_grad_()
        alone, lse_k = linear_cross_entropy(hk, wk, y[k], reduction=reduction, z_loss=z_loss[k], softcap=softcap,
                                            impl=impl, return_lse=True)
        alone.sum().backward()
        torch.testing.assert_close(losses[k], alone.detach(), atol=atol, rtol=rtol)
        torch.testing.assert_close(lse[k], lse_k, atol=atol, rtol=rtol)
        torch.testing.assert_close(h.grad[k].float(), hk.grad.float(), atol=atol, rtol=rtol)
        torch.testing.assert_close(w.grad[k].float(), wk.grad.float(), atol=atol, rtol=rtol)


@needs_triton
@pytest.mark.parametrize("scheme", ["owners", "supertile"])
def test_heads_other_schemes_match_reference(scheme):
    """The head axis of the owners and supertile kernels (the default 'fused' is covered above):
    per-head z-loss and soft-capping, against the reference."""
    from scaling_kernels import linear_cross_entropy_heads

    h, w, y = _make_heads(3, 37, 24, 259, torch.float32)
    grads = []
    for impl in ("triton", "torch"):
        hh, ww = h.clone().requires_grad_(), w.clone().requires_grad_()
        loss = linear_cross_entropy_heads(hh, ww, y, z_loss=[0.0, 1e-2, 1e-3], softcap=4.0, impl=impl, scheme=scheme)
        loss.sum().backward()
        grads.append((loss.detach(), hh.grad, ww.grad))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@needs_triton
def test_heads_triton_matches_reference_with_one_shared_z():
    from scaling_kernels import linear_cross_entropy_heads

    h, w, y = _make_heads(4, 37, 24, 131, torch.float32)
    a = linear_cross_entropy_heads(h, w, y, z_loss=1e-3, impl="triton")
    b = linear_cross_entropy_heads(h, w, y, z_loss=[1e-3] * 4, impl="torch")
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("args, match", [
    (((2, 5, 8), (3, 11, 8), (2, 5)), "must share K"),
    (((2, 5, 8), (11, 8), (2, 5)), "must share K"),
    (((2, 5, 8), (2, 11, 8), (2, 5)), None),
])
def test_heads_shape_errors(args, match):
    from scaling_kernels import linear_cross_entropy_heads

    h, w, y = torch.randn(args[0]), torch.randn(args[1]), torch.randint(0, 11, args[2])
    if match is None:
        with pytest.raises(ValueError, match="z_loss"):
            linear_cross_entropy_heads(h, w, y, z_loss=[0.0, 0.0, 0.0])
        with pytest.raises(ValueError, match="z_loss"):
            linear_cross_entropy_heads(h, w, y, z_loss=[0.0, -1.0])
    else:
        with pytest.raises(ValueError, match=match):
            linear_cross_entropy_heads(h, w, y)


# ----------------------------------------------------------------- the benchmark's command line

def test_benchmark_cli_parses_shapes_and_needs_no_gpu_for_help(capsys):
    import argparse
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_linear_cross_entropy.py"
    spec = importlib.util.spec_from_file_location("bench_linear_cross_entropy", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    with pytest.raises(SystemExit) as exited:
        bench.main(["--help"])
    assert exited.value.code == 0 and "KxTxDxV" in capsys.readouterr().out
    assert bench.parse_shape("16x16384x128x32768") == (16, 16384, 128, 32768)
    assert bench.parse_shape("16384x512x50304") == (1, 16384, 512, 50304)
    assert (16, 16384, 128, 32768) in bench.DEFAULT_SHAPES and (1, 16384, 128, 32768) in bench.DEFAULT_SHAPES
    with pytest.raises(argparse.ArgumentTypeError, match="16384x512x50304"):
        bench.parse_shape("16384x512")
    if not torch.cuda.is_available():
        assert bench.main(["--shapes", "8x16x32"]) == 2
