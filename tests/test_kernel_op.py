"""The fused loss as a torch.library custom op: schema, fake and autograd checks, and whole
models compiled around it (the solo GPT and a pack) matching eager, without graph breaks.

    pytest tests/test_kernel_op.py      # CPU: the Triton kernels run under TRITON_INTERPRET=1

Compiled models use the 'aot_eager' backend: dynamo plus AOT autograd with fake tensors is the
part that must see one opaque op (its fake implementations, its registered backward, no host
tensors), and it is seconds on a CPU where inductor's C++ compile of a whole GPT is a minute. One
test runs the loss through inductor itself, whose lowering was where the old backward crashed
(`NYI: aten._pin_memory.default`).
"""

from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():  # before triton is first imported (conftest does it too)
    os.environ.setdefault("TRITON_INTERPRET", "1")

from scaling_cli.config import ModelConfig  # noqa: E402
from scaling_cli.model.gpt import GPT  # noqa: E402
from scaling_cli.model.packed_gpt import PackedGPT  # noqa: E402
from scaling_kernels import linear_cross_entropy, linear_cross_entropy_heads, triton_available  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _triton_usable() -> bool:
    if not triton_available():
        return False
    from scaling_kernels import lce_triton

    return torch.cuda.is_available() or lce_triton.INTERPRET


IMPLS = ["torch", pytest.param("triton", marks=pytest.mark.skipif(not _triton_usable(), reason="needs triton"))]


def _heads_inputs(K=2, T=9, d=16, V=37, seed=0):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(K, T, d, generator=g).to(DEVICE)
    w = (torch.randn(K, V, d, generator=g) * 0.5).to(DEVICE)
    y = torch.randint(0, V, (K, T), generator=g).to(DEVICE)
    y[:, 1::4] = -100
    return h, w, y


@pytest.mark.parametrize("impl", IMPLS)
def test_opcheck_forward_and_backward(impl):
    """Schema, fake tensors, autograd registration and AOT dispatch with dynamic shapes."""
    h, w, y = _heads_inputs()
    ops = torch.ops.scaling_kernels
    torch.library.opcheck(ops.lce_forward.default,
                          (h.requires_grad_(), w.requires_grad_(), y, -100, 3.0, impl, "auto"))
    lse, tgt = ops.lce_forward(h.detach(), w.detach(), y, -100, 3.0, impl, "auto")
    valid = (y != -100).float()
    dlse, dtgt = valid * 0.3, valid * -0.5
    torch.library.opcheck(ops.lce_backward.default,
                          (h.detach(), w.detach(), y, lse, dlse, dtgt, -100, 3.0, impl, "auto"))


def _gpt_cfg(impl: str, **extra) -> ModelConfig:
    # vocab 96 and 32 tokens are not multiples of the interpreter's tiles
    fields = dict(d_model=32, n_layer=1, n_head=2, seq_len=16, vocab_size=96, loss_impl=impl, z_loss=1e-3,
                  logit_softcap=5.0)
    return ModelConfig(**{**fields, **extra})


def _train(step_fn, params, batches, lr=3e-3) -> list[float]:
    opt = torch.optim.AdamW(params, lr=lr)
    losses = []
    for inputs, targets in batches:
        loss = step_fn(inputs, targets)
        loss.sum().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.detach().clone())
    return losses


def _batches(shape, vocab, steps=3):
    g = torch.Generator().manual_seed(1)
    draw = lambda: torch.randint(0, vocab, shape, generator=g).to(DEVICE)  # noqa: E731
    return [(draw(), draw()) for _ in range(steps)]


@pytest.mark.parametrize("impl", IMPLS)
def test_compiled_gpt_trains_like_eager_without_graph_breaks(impl):
    cfg = _gpt_cfg(impl)
    torch.manual_seed(0)
    eager = GPT(cfg).to(DEVICE)
    compiled = GPT(cfg).to(DEVICE)
    compiled.load_state_dict(eager.state_dict())
    batches = _batches((2, 16), cfg.vocab_size)
    explained = torch._dynamo.explain(compiled)(*batches[0])
    assert explained.graph_break_count == 0, explained.break_reasons
    torch._dynamo.reset()
    counter = torch._dynamo.testing.CompileCounterWithBackend("aot_eager")
    step = torch.compile(compiled, backend=counter)
    want = _train(eager, eager.parameters(), batches)
    got = _train(step, compiled.parameters(), batches)
    assert counter.frame_count == 1
    torch.testing.assert_close(torch.stack(got), torch.stack(want), rtol=1e-5, atol=1e-6)
    for (name, a), b in zip(compiled.named_parameters(), eager.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize("impl", IMPLS)
def test_compiled_pack_trains_like_eager_and_z_loss_values_never_recompile(impl):
    """The whole pack step (hidden states and the K-head loss with per-member z-loss) compiled as
    one graph; new z-loss values (a device buffer) reuse it."""
    cfgs = [_gpt_cfg(impl, z_loss=z, init_std=s) for z, s in ((0.0, 0.02), (1e-2, 0.03), (1e-3, 0.02))]
    states = []
    for k, cfg in enumerate(cfgs):
        torch.manual_seed(k)
        states.append(GPT(cfg).state_dict())
    with torch.device(DEVICE):
        eager = PackedGPT.from_states(cfgs, states)
        packed = PackedGPT.from_states(cfgs, states)
    batches = _batches((3, 2, 16), cfgs[0].vocab_size)
    explained = torch._dynamo.explain(packed)(*batches[0])
    assert explained.graph_break_count == 0, explained.break_reasons
    torch._dynamo.reset()
    counter = torch._dynamo.testing.CompileCounterWithBackend("aot_eager")
    step = torch.compile(packed, backend=counter)
    want = _train(eager, eager.parameters(), batches)
    got = _train(step, packed.parameters(), batches)
    torch.testing.assert_close(torch.stack(got), torch.stack(want), rtol=1e-5, atol=1e-6)
    for (name, a), b in zip(packed.named_parameters(), eager.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
    for pack in (packed, eager):
        pack.z_loss.copy_(torch.tensor([5e-2, 0.0, 2e-2]))
    torch.testing.assert_close(step(*batches[0]), eager(*batches[0]), rtol=1e-5, atol=1e-6)  # grad mode as before
    assert counter.frame_count == 1


@pytest.mark.skipif(not _triton_usable(), reason="needs triton")
def test_inductor_compiles_the_loss_forward_and_backward():
    """Inductor lowers the forward and the backward graph around the ops (the old backward's
    host-side pinned tensor made it fail), and the result matches eager."""
    h, w, y = _heads_inputs(K=3, T=12)
    z = torch.tensor([0.0, 1e-3, 1e-2], device=DEVICE)

    def loss_fn(h, w, y, z):
        return linear_cross_entropy_heads(h, w, y, z_loss=z, softcap=4.0, impl="triton").sum()

    def run(fn):
        hh, ww = h.clone().requires_grad_(), w.clone().requires_grad_()
        loss = fn(hh, ww, y, z)
        loss.backward()
        return loss.detach(), hh.grad, ww.grad

    torch._dynamo.reset()
    for got, want in zip(run(torch.compile(loss_fn, backend="inductor")), run(loss_fn)):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_no_graph_break_in_either_entry_point():
    h, w, y = _heads_inputs()

    def solo(h, w, y):
        return linear_cross_entropy(h[0], w[0], y[0], z_loss=1e-4, softcap=3.0, impl="torch", return_lse=True)

    def heads(h, w, y, z):
        return linear_cross_entropy_heads(h, w, y, z_loss=z, reduction="none", impl="torch")

    for fn, args in ((solo, (h, w, y)), (heads, (h, w, y, torch.tensor([1e-3, 0.0], device=DEVICE)))):
        explained = torch._dynamo.explain(fn)(*args)
        assert explained.graph_break_count == 0 and explained.graph_count == 1, explained.break_reasons


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_inductor_compiles_solo_and_pack_steps_with_triton_loss():
    """The issue's defect: a compiled solo step through the Triton loss failed in inductor's
    backward. Both a solo GPT and a pack, forward + loss + backward compiled whole, now run in
    bf16 and track eager."""
    cfg = ModelConfig(d_model=128, n_layer=2, n_head=2, seq_len=128, vocab_size=4096, loss_impl="triton",
                      z_loss=1e-4)
    torch.manual_seed(0)
    solo_state = GPT(cfg).state_dict()
    cfgs = [cfg, ModelConfig(**{**cfg.__dict__, "z_loss": 1e-3})]
    pack_states = [GPT(c).state_dict() for c in cfgs]

    def fresh(kind):
        if kind == "solo":
            model = GPT(cfg)
            model.load_state_dict(solo_state)
            return model.cuda()
        with torch.device("cuda"):
            return PackedGPT.from_states(cfgs, pack_states)

    for kind, shape in (("solo", (4, 128)), ("pack", (2, 4, 128))):
        eager, twin = fresh(kind), fresh(kind)
        torch._dynamo.reset()
        compiled = torch.compile(twin)
        batches = _batches(shape, cfg.vocab_size)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            want = _train(eager, eager.parameters(), batches)
            got = _train(compiled, twin.parameters(), batches)
        torch.testing.assert_close(torch.stack(got), torch.stack(want), rtol=2e-2, atol=2e-2, msg=kind)
