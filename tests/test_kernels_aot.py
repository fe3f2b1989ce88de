"""Ahead-of-time checks of the fused loss's Triton kernels for an A100 (sm_80) and an H100 (sm_90),
on a CPU: each kernel is compiled with triton's bundled ptxas at every tile config lce_triton's
autotuner offers on that target, for the kernel variants lce_plan picks at the GPU default's
shapes and a 256k vocabulary under each backward scheme, and must compile without register
spills, within the target's shared memory per block, with every stride/length product in 64 bits.

    pytest -k aot -n 2        # these tests: ~140 CPU-seconds, so about 70 s on two free cores
    python benchmarks/compile_lce_sm90.py --target sm_80 --target sm_90 --softcap   # every form: ~410 CPU-s

Compilation runs in a subprocess without TRITON_INTERPRET (conftest sets it on a CPU, which turns
the kernels into interpreted functions). Skipped only where triton has no NVIDIA backend or ptxas.
The last test is the runtime side of the 64-bit offsets, under the interpreter: tensors whose
element offsets pass 2^31, kept small by strides over a sparse file.
"""

from __future__ import annotations

import os
import textwrap

import pytest
import torch

from scaling_kernels import lce_aot, lce_plan

MISSING = lce_aot.toolchain_missing()
needs_ptxas = pytest.mark.skipif(MISSING is not None, reason=f"cannot compile for NVIDIA GPUs here: {MISSING}")
SHAPES = lce_aot.GPU_DEFAULT_SHAPES + lce_aot.LARGE_VOCAB_SHAPES


def _demand(variant: lce_aot.Variant) -> tuple:
    """Orders the forms of one kernel and d class by the extra work their flags add (soft-cap math,
    column masks, a stored rather than atomically added dH, dW read back across token chunks)."""
    f = variant.constexprs()
    return (f["HAS_SOFTCAP"], not f["EVEN_D"], not f.get("ATOMIC", True), f.get("ACCUMULATE", False),
            not f.get("SINGLE_SPLIT", True))


def checked_cases(target: lce_aot.Target, kernel: str) -> list[lce_aot.Case]:
    """Every offered config of each (kernel, d class, scheme role) planned on ``target``, in that
    group's most demanding planned form: the d class and the tiles decide most of a kernel's
    registers and shared memory, its flags little. Little is not nothing: a config at the
    255-register edge can spill in one form only (64x64 did in sm_90's fused dW, at d = 192
    without soft-cap), which the benchmark's run over every form catches and this test does not."""
    groups: dict[tuple, lce_aot.Variant] = {}
    for variant in lce_aot.planned_variants(SHAPES, target, softcap=(False, True)):
        f = variant.constexprs()
        if variant.kernel != kernel:
            continue
        key = (f["BLOCK_D"], f.get("RESIDENT", True), f.get("ATOMIC_DH"))
        if key not in groups or _demand(variant) > _demand(groups[key]):
            groups[key] = variant
    return [lce_aot.Case(v, *cfg) for v in groups.values() for cfg in lce_aot.kept_configs(v, target)]


def _row(r: lce_aot.AotResult) -> str:
    return (f"{r.target} {r.case.variant.kernel} {r.case.variant.label} {r.case.config}: "
            + (r.error or f"{r.registers} regs, {r.spill_bytes} B spilled, {r.smem_bytes} B smem "
                          f"(limit {lce_aot.TARGETS[r.target].smem_per_block}), offsets {r.offsets}"))


def test_aot_plan_covers_every_kernel_and_scheme_on_both_targets():
    """The planned variants include the forward (resident at d <= 256, streamed above) and every
    kernel of the three backward schemes, each with configs to offer, on both targets."""
    for target in lce_aot.TARGETS.values():
        variants = lce_aot.planned_variants(SHAPES, target)
        labels = {(v.kernel, v.label) for v in variants}
        assert {k for k, _ in labels} == set(lce_aot.KERNELS), labels
        assert any(k == "fwd" and "resident" in lab for k, lab in labels)
        assert any(k == "fwd" and "stream" in lab for k, lab in labels)
        assert any(k == "dw" and "fused" in lab for k, lab in labels)
        assert any(k == "dw" and "owners" in lab for k, lab in labels)
        assert any(k == "dw" and "chunk+" in lab for k, lab in labels)  # T = 65536: dW summed over chunks
        assert all(lce_aot.kept_configs(v, target) for v in variants), target.name


def test_aot_offered_configs_follow_the_gpu_family_and_its_shared_memory(monkeypatch):
    """lce_triton's autotuner offers each GPU family its own configs, and only those whose tiles
    fit the device's shared memory (an sm_86 card opts in to 99 KiB per block, not 163)."""
    from scaling_kernels import lce_triton as lt

    # the autotuner's pruning hook asks the inputs' device, then decides as offered_configs does
    monkeypatch.setattr(lt, "_device_limits", lambda index: ("80", 166912))
    owned, table = lt.AUTOTUNED["dw"]
    h = torch.empty(1, dtype=torch.bfloat16)
    hook = lt._prune(owned, table)(lt._configs(table), {"D": 192, "h_ptr": h}, ATOMIC_DH=True, HAS_SOFTCAP=True)
    assert hook == lt.offered_configs(lt._configs(table), table, owned, 192, 2, "80", 166912, fused=True)
    assert [(c.kwargs["BLOCK_T"], c.kwargs["BLOCK_V"]) for c in hook] == [(16, 32), (32, 16), (16, 16)]

    assert [lt.config_family(m) for m in (8, 9, 10, 12)] == ["80", "90", "90", "80"]
    owned, table = lt.AUTOTUNED["dw"]
    offered = lambda family, smem=232448, fused=True: {  # noqa: E731
        (c.kwargs["BLOCK_T"], c.kwargs["BLOCK_V"], c.num_warps, c.num_stages)
        for c in lt.offered_configs(lt._configs(table), table, owned, 256, 2, family, smem, fused=fused)}
    hopper, ampere = offered("90"), offered("80")
    assert hopper and ampere and not hopper & ampere
    assert max(bt * bv for bt, bv, _, _ in ampere) <= 512  # the fused dW at d <= 256 on sm_80: small tiles
    assert offered("90", fused=False) != hopper  # the owners' dW kernel has its own
    owned, table = lt.AUTOTUNED["fwd"]
    fwd = lambda smem: {(c.kwargs["BLOCK_T"], c.num_stages)  # noqa: E731
                        for c in lt.offered_configs(lt._configs(table), table, owned, 256, 2, "80", smem)}
    assert (64, 4) in fwd(166912) and (64, 4) not in fwd(101376)  # [64 + 4 x 64, 256] bf16 = 160 KiB


@needs_ptxas
@pytest.mark.parametrize("kernel", sorted(lce_aot.KERNELS))
@pytest.mark.parametrize("target", sorted(lce_aot.TARGETS))
def test_aot_kernel_compiles_without_spills_within_shared_memory_with_64bit_offsets(target, kernel):
    cases = checked_cases(lce_aot.TARGETS[target], kernel)
    assert cases
    results = lce_aot.compile_isolated(cases, lce_aot.TARGETS[target])
    assert [r.case for r in results] == cases
    for r in results:
        print(_row(r))
    bad = [_row(r) for r in results if not r.ok]
    assert not bad, "\n".join(bad)
    # every stride and T product of every kernel is 64-bit: h and w rows, head offsets, [K, T] rows
    assert all({"stride_h", "stride_w", "stride_hk", "stride_wk"} <= dict(r.offsets.wide).keys() for r in results)


PROBES = '''
import triton
import triton.language as tl


@triton.jit
def narrow(x_ptr, out_ptr, T, stride_x, BLOCK: tl.constexpr):
    rows = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    x = tl.load(x_ptr + rows * stride_x, mask=rows < T)  # a 32-bit row offset
    tl.store(out_ptr + rows.to(tl.int64) * stride_x, x, mask=rows < T)


@triton.jit
def wide(x_ptr, out_ptr, T, stride_x, BLOCK: tl.constexpr):
    rows = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    x = tl.load(x_ptr + rows.to(tl.int64) * stride_x, mask=rows < T)
    tl.store(out_ptr + rows.to(tl.int64) * stride_x, x, mask=rows < T)


@triton.jit
def huge_tiles(x_ptr, out_ptr, T, stride_x, BLOCK_T: tl.constexpr, BLOCK_V: tl.constexpr):
    # a [128, 256] fp32 accumulator over 4 warps (256 registers a thread) and 5 pipeline stages of
    # [128, 64] + [64, 256] bf16 operands (48 KiB each): spills, and needs more shared memory per
    # block than either target allows
    rows = tl.arange(0, BLOCK_T).to(tl.int64)
    cols = tl.arange(0, 64)
    acc = tl.zeros((BLOCK_T, BLOCK_V), dtype=tl.float32)
    for k in range(0, T, 64):
        a = tl.load(x_ptr + rows[:, None] * stride_x + k + cols[None, :])
        b = tl.load(x_ptr + (k + cols.to(tl.int64))[:, None] * stride_x + tl.arange(0, BLOCK_V)[None, :])
        acc = tl.dot(a, b, acc)
    tl.store(out_ptr + rows[:, None] * stride_x + tl.arange(0, BLOCK_V)[None, :], acc)
'''


@needs_ptxas
def test_aot_reports_32bit_offsets_spills_and_shared_memory_overflow(tmp_path):
    """The checks can fail: a 32-bit row offset is found and named by its source line, a kernel
    with far too large tiles is reported as spilling and over the shared-memory limit."""
    (tmp_path / "aot_probes.py").write_text(textwrap.dedent(PROBES))
    probe = lambda fn, bt=0, bv=0, warps=4, stages=3, **flags: lce_aot.Case(  # noqa: E731
        lce_aot.Variant(f"aot_probes:{fn}", fn, "bf16", tuple(flags.items())), bt, bv, warps, stages)
    cases = [probe("narrow", BLOCK=128), probe("wide", BLOCK=128), probe("huge_tiles", 128, 256, 4, 5)]
    for target in lce_aot.TARGETS.values():
        narrow, wide, huge = lce_aot.compile_isolated(cases, target, pythonpath=(str(tmp_path),))
        line = next(i for i, text in enumerate(textwrap.dedent(PROBES).splitlines(), 1) if "32-bit row offset" in text)
        assert narrow.error is None and narrow.offsets.narrow == (f"stride_x at aot_probes.py:{line}",)
        assert not narrow.offsets.ok and not narrow.ok
        # the load and the store share one 64-bit product (Triton merges the two)
        assert wide.offsets.ok and wide.offsets.wide == (("stride_x", 1),) and wide.ok, _row(wide)
        assert huge.error is None and huge.spill_bytes > 0 and huge.smem_bytes > target.smem_per_block, _row(huge)
        assert not huge.smem_ok and not huge.ok


# ------------------------------------------- the same offsets at run time (interpreter)

def _sparse(path, elements: int) -> torch.Tensor:
    """fp32 storage of ``elements`` backed by a sparse file: only the pages touched take memory."""
    return torch.from_file(str(path), shared=True, size=elements, dtype=torch.float32)


@pytest.mark.parametrize("scheme", lce_plan.SCHEMES)
def test_offsets_past_2_31_elements_address_the_right_rows_under_the_interpreter(tmp_path, scheme):
    """Three heads 2^30 elements apart (head 2 starts 2^31 elements in) and vocabulary rows 2^25
    apart (row 79 is 2.7e9 elements in), as strided views of sparse files: the kernels' loss and
    gradients match the PyTorch reference on compact copies. A 32-bit head or row offset would wrap
    and read another part of the file (each view starts 2^31 elements in, so a wrapped address
    stays mapped and the test fails on values instead of crashing)."""
    from scaling_kernels import lce_reference, lce_triton

    if not lce_triton.INTERPRET:
        pytest.skip("runs the kernels under TRITON_INTERPRET=1 (CPU); a GPU would need 16 GiB tensors")
    heads, tokens, dim, vocab = 3, 40, 16, 80
    start, head_stride, row_stride = 1 << 31, 1 << 30, 1 << 25
    h = _sparse(tmp_path / "h", start + (heads - 1) * head_stride + tokens * dim).as_strided(
        (heads, tokens, dim), (head_stride, dim, 1), storage_offset=start)
    w = _sparse(tmp_path / "w", start + vocab * row_stride).as_strided(  # one W shared by the heads
        (heads, vocab, dim), (0, row_stride, 1), storage_offset=start)
    assert h.storage_offset() + (heads - 1) * h.stride(0) >= 2**31 and (vocab - 1) * w.stride(1) >= 2**31
    gen = torch.Generator().manual_seed(0)
    h.copy_(torch.randn(heads, tokens, dim, generator=gen))
    w[0].copy_(torch.randn(vocab, dim, generator=gen) * 0.6)
    y = torch.randint(0, vocab, (heads, tokens), generator=gen)
    h_ref, w_ref = h.contiguous(), w.contiguous()

    lse, tgt = lce_triton.lse_forward(h, w, y, 0.0)
    lse_ref, tgt_ref = lce_reference.lse_forward(h_ref, w_ref, y, 0.0)
    dlse = torch.rand(heads, tokens, generator=gen)
    dtgt = -torch.rand(heads, tokens, generator=gen)
    dh, dw = lce_triton.grads(h, w, y, lse, dlse, dtgt, 0.0, scheme)
    dh_ref, dw_ref = lce_reference.grads(h_ref, w_ref, y, lse_ref, dlse, dtgt, 0.0)
    for got, want in ((lse, lse_ref), (tgt, tgt_ref), (dh, dh_ref), (dw, dw_ref)):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    # 16 GiB and 11 GiB files, of which only the touched pages are written
    assert all(os.stat(tmp_path / f).st_blocks * 512 < (64 << 20) for f in ("h", "w"))
