"""Plan from budgets instead of shapes: FLOP budgets (IsoFLOP) or target parameter counts.

Shape rule (one width-to-depth ratio for every size, as the OLMo ladder and Chinchilla's
tables do; Kaplan et al. 2020 find loss depends only weakly on shape at fixed N):
    d_model = aspect_ratio x n_layer, rounded to a multiple of 16 (at least 32)
    n_head  = d_model / head_dim, at least 2, adjusted down until it divides d_model with an
              even head dimension (RoPE rotates pairs)
For a target N we take the depth whose shape has the total parameter count closest to N
in log space.

Budgets: the expected compute-optimal size of a budget C comes from the Chinchilla
parametric law with Epoch AI's refit constants (Besiroglu et al. 2024: E=1.82, A=482.0,
B=2085.4, alpha=0.348, beta=0.366), N_opt = G (C/6)^(beta/(alpha+beta)),
G = (alpha A / (beta B))^(1/(alpha+beta)). The sizes of a budget are log-spaced over
[N_opt / spread, N_opt x spread], so the IsoFLOP parabola has points on both sides of its
minimum even if the prior is off by the spread; tokens are C / (training FLOPs per token of
that exact shape), counted as the planner counts them (output layer and attention included).
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import numpy as np

from scaling_cli.config import ConfigError, ModelConfig
from scaling_cli.model.counting import count_params, flops_per_token

EPOCH_CHINCHILLA = {"E": 1.82, "A": 482.0, "B": 2085.4, "alpha": 0.348, "beta": 0.366}
MAX_LAYERS = 96


def expected_optimal_params(flops: float) -> float:
    c = EPOCH_CHINCHILLA
    a, b = c["alpha"], c["beta"]
    g = (a * c["A"] / (b * c["B"])) ** (1 / (a + b))
    return g * (flops / 6) ** (b / (a + b))


def shape_for_layers(n_layer: int, aspect_ratio: int, head_dim: int) -> tuple[int, int, int]:
    d_model = max(32, 16 * round(aspect_ratio * n_layer / 16))
    n_head = max(2, d_model // head_dim)
    while n_head > 1 and (d_model % n_head or (d_model // n_head) % 2):
        n_head -= 1
    return d_model, n_layer, n_head


def shape_for_params(target: float, base: ModelConfig, aspect_ratio: int, head_dim: int) -> tuple[int, int, int]:
    """The rule's shape whose total parameter count is closest to `target` in log space."""
    best, best_gap = None, math.inf
    for n_layer in range(1, MAX_LAYERS + 1):
        d, L, h = shape_for_layers(n_layer, aspect_ratio, head_dim)
        total = count_params(replace(base, d_model=d, n_layer=L, n_head=h)).total
        gap = abs(math.log(total / target))
        if gap < best_gap:
            best, best_gap = (d, L, h), gap
    return best


def _shape_point(shape: tuple[int, int, int]) -> dict[str, Any]:
    d, L, h = shape
    return {"model.d_model": d, "model.n_layer": L, "model.n_head": h}


def budget_points(sweep, base: ModelConfig, batch_tokens: int) -> list[dict[str, Any]]:
    """Grid points (shape + tokens) for `sweep.budgets` and `sweep.target_params`."""
    points: list[dict[str, Any]] = []
    for flops in sweep.budgets:
        n_opt = expected_optimal_params(flops)
        targets = n_opt * np.geomspace(1 / sweep.size_spread, sweep.size_spread, sweep.sizes_per_budget)
        shapes = dict.fromkeys(shape_for_params(t, base, sweep.aspect_ratio, sweep.head_dim) for t in targets)
        for shape in shapes:
            model = replace(base, **{k.split(".")[1]: v for k, v in _shape_point(shape).items()})
            tokens = flops / flops_per_token(model)
            if tokens < batch_tokens:
                raise ConfigError(f"sweep.budgets: budget {flops:.3g} FLOPs is less than one step of the "
                                  f"d_model={shape[0]} proxy; raise the budget or lower train.batch_size")
            points.append({**_shape_point(shape), "train.tokens": float(tokens)})
    for target in sweep.target_params:
        shape = shape_for_params(target, base, sweep.aspect_ratio, sweep.head_dim)
        model = replace(base, **{k.split(".")[1]: v for k, v in _shape_point(shape).items()})
        points.append({**_shape_point(shape), "train.tokens": float(sweep.tokens_per_param * count_params(model).total)})
    return points
