"""Compilation for training steps, paid once: one compiled transformer block reused by every layer,
every pack and every run of an architecture, with compiled artifacts kept in the project's cache.

    compiler = StepCompiler("default", pack=True)          # train.compile=true, train.compile_mode
    with compiler.forward(packed):
        x = packed.trunk(inputs, compiler.run_block)       # each block through the compiled region
        losses = compiler.head(packed, x, targets)         # final norm + loss

Regional compilation (as torchtitan compiles each TransformerBlock): instead of the whole forward,
the function that runs one block is compiled. Dynamo treats a block's parameters as graph inputs and
guards on their shapes, not on which module they belong to, so the L blocks of a model, every pack
of that architecture and every later pack in the process run one graph; compile time is one
block's, not L blocks'. For packs the pack axis K is marked dynamic (on the activations and on the
parameters), so one graph serves packs of any size and a pack that shrinks as members finish; dynamo
still specialises K = 1, which gets a graph of its own the first time a run trains alone.

The output head (final norm + loss) is compiled as a second region when the loss is an opaque
custom op (`loss_in_graph`): then the loss is one op inside that graph with no host values, and the
members' z-loss is a device tensor (a buffer of the pack), so its values never recompile. With the
autograd.Function loss of older kernels the head runs eagerly.

A compile failure never stops training: `StepCompiler.step` runs a step, and when compilation
fails (the backend raises, inductor or Triton cannot build a kernel) it warns once, redoes the step
eagerly and keeps that architecture eager for the rest of the process (`eager_reason`, recorded in
each run's status.json as `compile_fallback`). Errors of the step itself (out of memory, a bad
value) are not compile failures and propagate as before.

Cache: `configure_cache()` points inductor's caches (FX graphs, AOTAutograd, autotuning) and
Triton's kernel cache at $SCALING_CLI_CACHE/compile (default ~/.cache/scaling-cli/compile) unless the
user set them, before anything compiles; worker processes, the next pack and the next sweep reuse
what is there. Backend and mode: `train.compile_mode` ('reduce-overhead' adds CUDA graphs; shapes
of a step are static within a pack size).
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Callable, Iterator

import torch
from torch import Tensor, nn

from scaling_cli.cache import cache_root

COMPILE_BACKEND: str | object = "inductor"
"""torch.compile backend of training steps (tests swap in a counting backend)."""

RECOMPILE_LIMIT = 256
"""Graphs dynamo may keep per compiled function. Every architecture of a sweep adds graphs of the same
block function (K >= 2 and K = 1), and past the default limit of 8 dynamo silently falls back to eager."""

REGIONS = ("block", "head")
"""Compiled functions per architecture: the transformer block (shared by every layer) and the output head."""

# Environment variables that place the compile caches, relative to the compile cache folder.
_CACHE_ENV = {"TORCHINDUCTOR_CACHE_DIR": "inductor", "TRITON_CACHE_DIR": "triton"}
# Switches of inductor's on-disk caches (on by default in recent torch; set in case they are not), and
# of Triton's autotuning results (the fused loss's tile configs, timed once per GPU and kept on disk).
_CACHE_SWITCHES = {"TORCHINDUCTOR_FX_GRAPH_CACHE": "1", "TORCHINDUCTOR_AUTOGRAD_CACHE": "1",
                   "TRITON_CACHE_AUTOTUNING": "1"}


def cache_folder() -> Path:
    """Where compiled artifacts live: <$SCALING_CLI_CACHE or ~/.cache/scaling-cli>/compile."""
    return cache_root() / "compile"


def configure_cache() -> Path:
    """Point the compile caches at `cache_folder()` unless already set; returns the folder. Inductor
    and Triton read these variables whenever they compile, so call this before any compilation (the
    sweep command and every worker do); a value the user exported wins. Importing torch._dynamo
    writes inductor's default (a temporary folder) into the environment, which is not a user's
    choice and is replaced."""
    folder = cache_folder()
    defaults = {}
    # Only an imported dynamo can have written its default; importing inductor to ask for it costs
    # ~1 s of start-up on every sweep, dry runs and CPU sweeps without compilation included.
    if "torch._dynamo" in sys.modules:
        from torch._inductor.runtime.cache_dir_utils import default_cache_dir

        defaults["TORCHINDUCTOR_CACHE_DIR"] = os.path.abspath(default_cache_dir())
    for name, sub in _CACHE_ENV.items():
        if os.environ.get(name) in (None, defaults.get(name)):
            os.environ[name] = str(folder / sub)
    for name, value in _CACHE_SWITCHES.items():
        os.environ.setdefault(name, value)
    return folder


def loss_in_graph() -> bool:
    """Whether the fused loss is an opaque custom op that a compiled region may contain."""
    return hasattr(torch.ops, "scaling_kernels") and hasattr(torch.ops.scaling_kernels, "lce_forward")


def _run_block(block: nn.Module, x: Tensor, *args) -> Tensor:
    """The compiled region: one transformer block (what every layer of every model of a shape shares)."""
    return block(x, *args)


def _run_head(model: nn.Module, x: Tensor, targets: Tensor) -> Tensor:
    """The second region: final norm + loss of a GPT (`head_loss`) or a pack (`head_losses`)."""
    from scaling_cli.model.packed_gpt import PackedGPT, head_losses

    return head_losses(model, x, targets) if isinstance(model, PackedGPT) else model.head_loss(x, targets)


@lru_cache(maxsize=None)
def _compiled(fn, mode: str, backend) -> object:
    return torch.compile(fn, mode=None if mode == "default" else mode, backend=backend)


def graphs_compiled() -> int:
    """Graphs dynamo has compiled in this process so far: a step that raises it spent time compiling."""
    return int(torch._dynamo.utils.counters["stats"]["unique_graphs"])


class CompileClock:
    """Seconds spent in training steps that compiled something (each such step timed to its end with
    one device sync; steps that compile nothing are never synced)."""

    def __init__(self, device: torch.device, enabled: bool = True) -> None:
        self.device, self.enabled, self.seconds = device, enabled, 0.0

    def start(self) -> None:
        if self.enabled:
            self._graphs, self._started = graphs_compiled(), time.perf_counter()

    def stop(self) -> None:
        if self.enabled and graphs_compiled() != self._graphs:
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            self.seconds += time.perf_counter() - self._started


_eager_architectures: dict[object, str] = {}  # architecture -> why compiling it failed, this process


def reset() -> None:
    """Forget every compiled region of this process (tests; dynamo's own caches included), and
    which architectures fell back to eager."""
    _compiled.cache_clear()
    _eager_architectures.clear()
    torch._dynamo.reset()


def is_compile_failure(err: BaseException) -> bool:
    """Whether `err` (or what caused it) comes from compiling: dynamo, AOTAutograd, inductor or
    Triton's compiler. Out-of-memory is never one: a pack that runs out of memory halves instead."""
    chain = _chain(err)
    if any(isinstance(e, torch.OutOfMemoryError) for e in chain):
        return False
    return any(isinstance(e, torch._dynamo.exc.TorchDynamoException)
               or type(e).__module__.startswith(("torch._inductor", "torch._dynamo", "triton.compiler"))
               for e in chain)


def _chain(err: BaseException) -> list[BaseException]:
    """`err` and what it wraps: causes, contexts and dynamo's `inner_exception` (BackendCompilerFailed
    is raised `from None`, holding the backend's own error there)."""
    chain: list[BaseException] = []
    seen: BaseException | None = err
    while seen is not None and len(chain) < 16 and seen not in chain:
        chain.append(seen)
        seen = getattr(seen, "inner_exception", None) or seen.__cause__ or seen.__context__
    return chain


def _one_line(err: BaseException) -> str:
    """The error and, when it wraps another (dynamo's BackendCompilerFailed does), its root cause."""
    root = _chain(err)[-1]
    text = str(root).strip().splitlines()
    described = f"{type(root).__name__}: {text[0][:300] if text else ''}"
    return described if root is err else f"{type(err).__name__} from {described}"


class StepCompiler:
    """The compiled regions of a training step, for one train.compile_mode. `pack`: K (dim 0 of the
    activations and parameters) is dynamic. `architecture`: a hashable key of the model's shape
    (one per architecture), so a compile failure sends only that architecture to eager."""

    def __init__(self, mode: str = "default", pack: bool = False, architecture: object = None) -> None:
        configure_cache()
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, RECOMPILE_LIMIT)
        self.pack, self.architecture = pack, architecture
        self._block = _compiled(_run_block, mode, COMPILE_BACKEND)
        self._head = _compiled(_run_head, mode, COMPILE_BACKEND) if loss_in_graph() else _run_head

    @property
    def eager_reason(self) -> str | None:
        """Why this architecture runs eagerly (its compilation failed in this process), or None."""
        return _eager_architectures.get(self.architecture)

    def run_block(self, block: nn.Module, x: Tensor, *args) -> Tensor:
        if self.eager_reason:
            return _run_block(block, x, *args)
        if self.pack:
            torch._dynamo.maybe_mark_dynamic(x, 0)
        return self._block(block, x, *args)

    def head(self, model: nn.Module, x: Tensor, targets: Tensor) -> Tensor:
        if self.eager_reason:
            return _run_head(model, x, targets)
        if self.pack:
            torch._dynamo.maybe_mark_dynamic(x, 0)
            torch._dynamo.maybe_mark_dynamic(targets, 0)
        return self._head(model, x, targets)

    def step(self, run: Callable[[], Tensor], reset_grads: Callable[[], None]) -> Tensor:
        """run() once (forward + backward through this compiler's regions). If compiling fails, this
        architecture falls back to eager (one warning per process), the partial gradients are reset
        and run() is redone eagerly; any other error propagates."""
        if self.eager_reason:
            return run()
        try:
            return run()
        except Exception as err:
            if not is_compile_failure(err):
                raise
            reason = f"compilation failed ({_one_line(err)}); this architecture trains eagerly"
        _eager_architectures[self.architecture] = reason
        warnings.warn(f"torch.compile: {reason} (train.compile=false skips compiling)")
        reset_grads()  # outside the except block, so the failed attempt's tensors are freed
        return run()

    @contextmanager
    def forward(self, model: nn.Module) -> Iterator[None]:
        """Dynamo settings for one training forward of `model`: for a pack, K dynamic on the
        parameters too (dynamo otherwise treats parameters as static)."""
        if not self.pack:
            yield
            return
        for param in model.parameters():
            torch._dynamo.maybe_mark_dynamic(param, 0)
        z_loss = getattr(model, "z_loss", None)  # the pack's per-member z-loss buffer [K], when it has one
        if isinstance(z_loss, Tensor):
            torch._dynamo.maybe_mark_dynamic(z_loss, 0)
        with torch._dynamo.config.patch(force_parameter_static_shapes=False):
            yield
