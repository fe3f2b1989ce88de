"""scaling_kernels: fused GPU kernels for scaling-cli, each with a PyTorch reference.

Installed under the import name ``scaling_kernels`` (the bare name ``kernels``
belongs to Hugging Face's package). Imports nothing from ``scaling_cli``.

    from scaling_kernels import linear_cross_entropy
    loss = linear_cross_entropy(h, lm_head.weight, targets, impl="auto")
    prepare_linear_cross_entropy([(1, tokens, d, vocab)])   # autotune before a measured step (GPU)
"""

if __name__ != "scaling_kernels":
    # The repository root on sys.path (python -m, python -c) makes this folder importable as `kernels`,
    # Hugging Face's package name, which transformers imports when that package is installed. Loading
    # it under a second name would register torch.ops.scaling_kernels.* again from a second copy of
    # every module (patches, caches and plan logs then diverge), so refuse before anything registers.
    raise ImportError(f"this folder is the scaling_kernels package (imported here as {__name__!r}); "
                      "import scaling_kernels, or run from outside the repository root")

from .linear_cross_entropy import (
    LinearCrossEntropy,
    linear_cross_entropy,
    linear_cross_entropy_heads,
    linear_cross_entropy_reference,
    prepare_linear_cross_entropy,
    triton_available,
)

__all__ = [
    "LinearCrossEntropy",
    "linear_cross_entropy",
    "linear_cross_entropy_heads",
    "linear_cross_entropy_reference",
    "prepare_linear_cross_entropy",
    "triton_available",
]
