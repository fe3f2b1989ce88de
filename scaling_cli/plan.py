"""Expand a sweep into RunSpecs: a pure function from a composed config to a list of runs.

Each run is the base config with one point of the grid applied, validated against the typed
schema (unknown keys and wrong types fail here, before any training), and identified by a
hash of its resolved config: the same run always gets the same id, so re-running a sweep
finds the runs it already has.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import math
from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from scaling_cli.config import Config, ConfigError, validate
from scaling_cli.model.counting import count_params, flops_per_token

GROUP_KEYS = tuple(Config.__dataclass_fields__)
# Keys that do not change what a run computes, so they stay out of its id.
_ID_EXCLUDED = ("store", "sweep", "launcher")
_ID_EXCLUDED_TRAIN = ("device", "threads", "compile", "log_interval", "checkpoint_interval")


@dataclass
class RunSpec:
    run_id: str
    name: str
    sweep: str
    overrides: dict[str, Any]
    """The grid point that made this run (key -> value)."""
    config: dict = field(repr=False)
    """The resolved run config (no `sweep` or `store` sections)."""
    params: int
    params_nonembed: int
    steps: int
    tokens: int
    batch_size_tokens: int
    flops_per_token: float
    flops: float

    def summary(self) -> dict:
        """The flat record written to spec.json and read by load_runs."""
        model, optim, schedule, train = (self.config[k] for k in ("model", "optim", "schedule", "train"))
        return {
            "run_id": self.run_id, "name": self.name, "sweep": self.sweep, "overrides": self.overrides,
            "params": self.params, "params_nonembed": self.params_nonembed, "steps": self.steps,
            "tokens": self.tokens, "flops": self.flops, "flops_per_token": self.flops_per_token,
            "batch_size_tokens": self.batch_size_tokens, "lr": optim["lr"], "seq_len": model["seq_len"],
            "d_model": model["d_model"], "n_layer": model["n_layer"], "n_head": model["n_head"],
            "vocab_size": model["vocab_size"], "schedule": schedule["name"], "warmup": schedule["warmup"],
            "seed": train["seed"],
        }


def grid_points(sweep: DictConfig) -> list[dict[str, Any]]:
    """All grid points: the product of `grid` axes and `zip` groups (each group varies together)."""
    axes: list[list[dict[str, Any]]] = []
    for key, values in (sweep.grid or {}).items():
        values = _as_list(values, f"sweep.grid.{key}")
        axes.append([{key: v} for v in values])
    for i, group in enumerate(sweep.zip or []):
        lengths = {key: len(_as_list(values, f"sweep.zip[{i}].{key}")) for key, values in group.items()}
        if len(set(lengths.values())) > 1:
            raise ConfigError(f"sweep.zip[{i}]: zipped axes need equal lengths, got {lengths}")
        keys = list(group.keys())
        axes.append([dict(zip(keys, combo)) for combo in zip(*(group[k] for k in keys))])
    points = [dict(kv for part in combo for kv in part.items()) for combo in itertools.product(*axes)]
    if not points:
        raise ConfigError("sweep: the grid expands to no runs (an axis has an empty list); give every axis at least one value")
    return points


def _as_list(values: Any, field_name: str) -> list:
    if not OmegaConf.is_list(values) and not isinstance(values, list):
        raise ConfigError(f"{field_name}: expected a list of values, got {values!r}; write [{values}]")
    return list(values)


def expand(cfg: DictConfig) -> list[RunSpec]:
    """Every run of the sweep in `cfg`, validated. Raises ConfigError naming the bad field."""
    unknown = sorted(set(cfg.keys()) - set(GROUP_KEYS))
    if unknown:
        raise ConfigError(f"{unknown[0]}: unknown top-level config key; valid ones are {', '.join(GROUP_KEYS)}")
    points = grid_points(cfg.sweep)
    if len(points) > cfg.sweep.max_runs:
        raise ConfigError(f"sweep.max_runs: the grid expands to {len(points)} runs, more than "
                          f"sweep.max_runs={cfg.sweep.max_runs}; shrink the grid or raise the limit")
    specs, seen = [], set()
    for point in points:
        run_cfg = copy.deepcopy(cfg)
        for key, value in point.items():
            if key.split(".")[0] in _ID_EXCLUDED:
                raise ConfigError(f"sweep.grid: {key!r} cannot vary inside a sweep; set it outside the grid")
            if not _has_key(run_cfg, key):
                raise ConfigError(f"{key}: unknown config key in the sweep grid; check the spelling "
                                  "(`scaling-cli sweep --show-config` lists every key)")
            try:
                OmegaConf.update(run_cfg, key, value, merge=False)
            except OmegaConfBaseException as err:
                raise ConfigError(f"{key}: {str(err).splitlines()[0]} (value {value!r} in the sweep grid)") from err
        _check_complete(run_cfg)
        validate(run_cfg)
        spec = _spec(run_cfg, point, cfg.sweep.name)
        if spec.run_id not in seen:  # two grid points can resolve to one run (e.g. zipped duplicates)
            seen.add(spec.run_id)
            specs.append(spec)
    return specs


def _has_key(cfg: DictConfig, dotted: str) -> bool:
    """True for a key of the schema, also when its value is still required (???)."""
    parent_key, _, leaf = dotted.rpartition(".")
    parent = OmegaConf.select(cfg, parent_key) if parent_key else cfg
    return isinstance(parent, DictConfig) and leaf in parent.keys()


def _check_complete(run_cfg: DictConfig) -> None:
    missing = sorted(OmegaConf.missing_keys(run_cfg))
    if missing:
        raise ConfigError(f"{missing[0]}: required value is missing; set it in the model/sweep config or "
                          f"as an override ({missing[0]}=...)")


def _spec(run_cfg: DictConfig, point: dict[str, Any], sweep_name: str) -> RunSpec:
    resolved = OmegaConf.to_container(run_cfg, resolve=True)
    for key in _ID_EXCLUDED:
        resolved.pop(key)
    identity = json.loads(json.dumps(resolved))
    for key in _ID_EXCLUDED_TRAIN:
        identity["train"].pop(key, None)
    run_id = hashlib.sha1(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:12]
    model_cfg = OmegaConf.to_object(run_cfg.model)
    counts = count_params(model_cfg)
    batch_tokens = run_cfg.train.batch_size * run_cfg.model.seq_len
    steps = run_cfg.train.steps or math.ceil(run_cfg.train.tokens / batch_tokens)
    per_token = flops_per_token(model_cfg)
    tokens = steps * batch_tokens
    return RunSpec(
        run_id=run_id, name=_name(run_cfg, point, run_id), sweep=sweep_name, overrides=dict(point),
        config=resolved, params=counts.total, params_nonembed=counts.nonembed, steps=steps, tokens=tokens,
        batch_size_tokens=batch_tokens, flops_per_token=per_token, flops=per_token * tokens,
    )


def _name(run_cfg: DictConfig, point: dict[str, Any], run_id: str) -> str:
    """Human-readable name: the model shape plus the grid values that vary."""
    m = run_cfg.model
    parts = [f"d{m.d_model}L{m.n_layer}"]
    for key, value in point.items():
        if key not in ("model.d_model", "model.n_layer", "model.n_head"):
            parts.append(f"{key.rsplit('.', 1)[-1]}={_short(value)}")
    return "-".join(parts) + f"-{run_id[:6]}"


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def totals(specs: list[RunSpec]) -> dict[str, float]:
    return {
        "runs": len(specs),
        "tokens": float(sum(s.tokens for s in specs)),
        "flops": float(sum(s.flops for s in specs)),
    }
