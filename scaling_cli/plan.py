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

from scaling_cli.config import LENGTH_KEYS, Config, ConfigError, validate
from scaling_cli.model.counting import count_params, flops_per_token

GROUP_KEYS = tuple(Config.__dataclass_fields__)
# Keys that do not change what a run computes, so they stay out of its id.
_ID_EXCLUDED = ("store", "sweep", "launcher")
_ID_EXCLUDED_TRAIN = ("device", "threads", "compile", "compile_mode", "log_interval", "checkpoint_interval",
                      "diagnostics_interval", "loggers",  # diagnostics and trackers only observe
                      "kernel_tune_s",  # how long to time kernels, not what they compute
                      "tokens_per_param")  # always resolved into train.tokens by then


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
    parent: dict | None = None
    """For a WSD decay branch: {'run_id': stable run, 'step': where the branch leaves it}."""
    branch_points: list[int] = field(default_factory=list)
    """For a stable WSD run: steps at which it keeps a checkpoint for its branches."""
    role: str = "fit"
    """'fit' (a run the laws are fitted on) or 'validation' (a sweep.validate target: trained like any
    run, never fitted; `fit` predicts it and records the error)."""

    @property
    def flops_to_train(self) -> float:
        """Compute this run costs in this sweep: a branch only pays for its own decay."""
        start = self.parent["step"] if self.parent else 0
        return self.flops * (self.steps - start) / self.steps

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
            "seed": train["seed"], "parent": self.parent, "branch_points": self.branch_points,
            "parametrization": model.get("parametrization", "standard"),
            "qk_layernorm": model.get("qk_layernorm", False), "z_loss": model.get("z_loss", 0.0),
            "role": self.role, "tokenizer": self.config.get("data", {}).get("tokenizer"),
        }


def grid_points(sweep: DictConfig, planned: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """All grid points: the product of `grid` axes, `zip` groups (each group varies together) and
    the `planned` points from budgets (shape + tokens, one axis), then the points of each `extra`
    block (a grid and zip groups of its own). With extra blocks, a main grid without axes adds
    nothing (rather than one run of the bare config)."""
    extra = sweep.get("extra") or []
    points = _block_points(sweep.get("grid"), sweep.get("zip"), planned, "sweep.")
    if extra and not (planned or sweep.get("grid") or sweep.get("zip")):
        points = []
    for i, block in enumerate(extra):
        where = f"sweep.extra[{i}]"
        if not isinstance(block, (dict, DictConfig)) or set(block.keys()) - {"grid", "zip"}:
            raise ConfigError(f"{where}: a block is {{grid: {{key: [values]}}, zip: [{{key: [values]}}]}}, got {block!r}")
        points += _block_points(block.get("grid"), block.get("zip"), None, f"{where}.")
    if not points:
        raise ConfigError("sweep: the grid expands to no runs (an axis has an empty list); give every axis at least one value")
    return points


def _block_points(grid, zips, planned: list[dict[str, Any]] | None, prefix: str) -> list[dict[str, Any]]:
    """The points of one block: the product of its grid axes, zip groups and planned points."""
    axes: list[list[dict[str, Any]]] = [planned] if planned else []
    for key, values in (grid or {}).items():
        values = _as_list(values, f"{prefix}grid.{key}")
        axes.append([{key: v} for v in values])
    for i, group in enumerate(zips or []):
        lengths = {key: len(_as_list(values, f"{prefix}zip[{i}].{key}")) for key, values in group.items()}
        if len(set(lengths.values())) > 1:
            raise ConfigError(f"{prefix}zip[{i}]: zipped axes need equal lengths, got {lengths}")
        keys = list(group.keys())
        axes.append([dict(zip(keys, combo)) for combo in zip(*(group[k] for k in keys))])
    return [dict(kv for part in combo for kv in part.items()) for combo in itertools.product(*axes)]


def _as_list(values: Any, field_name: str) -> list:
    if not OmegaConf.is_list(values) and not isinstance(values, list):
        raise ConfigError(f"{field_name}: expected a list of values, got {values!r}; write [{values}]")
    return list(values)


def expand(cfg: DictConfig) -> list[RunSpec]:
    """Every run of the sweep in `cfg`, validated. Raises ConfigError naming the bad field."""
    unknown = sorted(set(cfg.keys()) - set(GROUP_KEYS))
    if unknown:
        raise ConfigError(f"{unknown[0]}: unknown top-level config key; valid ones are {', '.join(GROUP_KEYS)}")
    points = grid_points(cfg.sweep, _budget_axis(cfg))
    per_point = len(set(cfg.sweep.wsd_branches)) + 1 if cfg.sweep.wsd_branches else 1  # a stable run + its branches
    if len(points) * per_point > cfg.sweep.max_runs:
        raise ConfigError(f"sweep.max_runs: the grid expands to {len(points) * per_point} runs, more than "
                          f"sweep.max_runs={cfg.sweep.max_runs}; shrink the grid or raise the limit")
    specs, seen = [], set()
    for point in points:
        run_cfg = copy.deepcopy(cfg)
        _apply_point(run_cfg, point, "sweep.grid", "the sweep grid")
        _check_complete(run_cfg)
        _resolve_tokens_per_param(run_cfg)
        validate(run_cfg)
        family = _wsd_family(run_cfg, point) if cfg.sweep.wsd_branches else [_spec(run_cfg, point, cfg.sweep.name)]
        for spec in family:
            if spec.run_id not in seen:  # two grid points can resolve to one run (e.g. zipped duplicates)
                seen.add(spec.run_id)
                specs.append(spec)
    return specs + _validation_specs(cfg, seen, len(specs))


def _apply_point(run_cfg: DictConfig, point: dict[str, Any], where: str, what: str) -> None:
    """Set a grid point's (or a validation entry's) keys; unknown keys and wrong types fail naming them."""
    for key, value in point.items():
        if key.split(".")[0] in _ID_EXCLUDED:
            raise ConfigError(f"{where}: {key!r} cannot vary inside a sweep; set it outside {what}")
        if not _has_key(run_cfg, key):
            raise ConfigError(f"{key}: unknown config key in {what}; check the spelling "
                              "(`scaling-cli sweep --show-config` lists every key)")
        try:
            OmegaConf.update(run_cfg, key, value, merge=False)
        except OmegaConfBaseException as err:
            raise ConfigError(f"{key}: {str(err).splitlines()[0]} (value {value!r} in {what})") from err


def _validation_specs(cfg: DictConfig, fitted_ids: set[str], n_fitted: int) -> list[RunSpec]:
    """The sweep's validation targets (sweep.validate): each the base config with its entry's keys
    set, planned as one run of its own length (never a WSD branch), with role "validation".

    The id is salted with the role, so a target never shares a folder (and a spec.json saying "fit")
    with a run of another sweep; a target equal to one of this sweep's fitted runs is an error, since
    the fit would have seen it."""
    entries = list(cfg.sweep.get("validate") or [])
    if n_fitted + len(entries) > cfg.sweep.max_runs:
        raise ConfigError(f"sweep.max_runs: the grid and sweep.validate expand to {n_fitted + len(entries)} runs, "
                          f"more than sweep.max_runs={cfg.sweep.max_runs}; shrink the grid or raise the limit")
    specs = []
    for i, entry in enumerate(entries):
        where = f"sweep.validate[{i}]"
        if not isinstance(entry, (dict, DictConfig)) or not entry:
            raise ConfigError(f"{where}: a validation target is {{key: value, ...}} (e.g. {{model.d_model: 128, "
                              f"train.tokens: 6.8e6}}), got {entry!r}")
        point = {str(k): (OmegaConf.to_container(v) if OmegaConf.is_config(v) else v) for k, v in entry.items()}
        run_cfg = copy.deepcopy(cfg)
        length = [k for k in LENGTH_KEYS if k in point]
        if len(length) > 1:
            raise ConfigError(f"{where}: sets {' and '.join(length)}; a run's length is one of {', '.join(LENGTH_KEYS)}")
        for key in LENGTH_KEYS if length else ():
            OmegaConf.update(run_cfg, key, None, merge=False)
        try:
            _apply_point(run_cfg, point, where, "the validation target")
            _check_complete(run_cfg)
            _resolve_tokens_per_param(run_cfg)
            validate(run_cfg)
        except ConfigError as err:
            raise ConfigError(str(err) if str(err).startswith(where) else f"{where}: {err}") from err
        if _spec(run_cfg, point, cfg.sweep.name).run_id in fitted_ids:
            raise ConfigError(f"{where}: is one of the sweep's fitted runs ({_short_point(point)}), so the fit would "
                              "see it; a validation target is a run the grid does not train (a bigger shape or a "
                              "longer budget)")
        spec = _spec(run_cfg, point, cfg.sweep.name, salt={"role": "validation"})
        spec.role = "validation"
        spec.name = f"val-{spec.name}"
        specs.append(spec)
    return specs


def _short_point(point: dict[str, Any]) -> str:
    return ", ".join(f"{k}={_short(v)}" for k, v in point.items())


def _resolve_tokens_per_param(run_cfg: DictConfig) -> None:
    """train.tokens_per_param = M becomes train.tokens = M x N (N: this run's total parameters), so
    the run is the same run, with the same id, as one planned with those tokens directly."""
    multiple = run_cfg.train.tokens_per_param
    if multiple is None:
        return
    if not multiple > 0:
        raise ConfigError(f"train.tokens_per_param: must be > 0, got {multiple}")
    params = count_params(OmegaConf.to_object(run_cfg.model)).total
    run_cfg.train.tokens = float(multiple * params)
    run_cfg.train.steps = None
    run_cfg.train.tokens_per_param = None


def _budget_axis(cfg: DictConfig) -> list[dict[str, Any]] | None:
    if not (cfg.sweep.budgets or cfg.sweep.target_params):
        return None
    if cfg.train.tokens_per_param is not None:
        raise ConfigError("train.tokens_per_param: sweep.budgets and sweep.target_params plan the tokens themselves; "
                          "drop one of them")
    from scaling_cli.budget import budget_points
    from scaling_cli.config import ModelConfig

    fields = OmegaConf.to_container(cfg.model, throw_on_missing=False)
    # the shape is what the planner chooses; placeholders keep the schema complete meanwhile
    fields.update(d_model=64, n_layer=1, n_head=2)
    return budget_points(cfg.sweep, ModelConfig(**fields), cfg.train.batch_size * cfg.model.seq_len)


def _wsd_family(run_cfg: DictConfig, point: dict[str, Any]) -> list[RunSpec]:
    """One stable run plus a decay branch per fraction of train.tokens (Hagele et al. 2024).

    Each branch is exactly the WSD run of fraction x tokens that one would train alone (same
    data order, same learning rate at every step), so it is stored and fitted as such; it just
    starts from the stable run's checkpoint where its decay begins. Warmup becomes a step
    count shared by the family, so every member's stable phase is the same."""
    from scaling_cli.config import ScheduleConfig
    from scaling_cli.schedule import decay_start, length_in_steps

    sweep = run_cfg.sweep
    batch_tokens = run_cfg.train.batch_size * run_cfg.model.seq_len
    if run_cfg.train.tokens is None:
        raise ConfigError("sweep.wsd_branches: branches are fractions of train.tokens; set train.tokens, not train.steps")
    longest = math.ceil(max(sweep.wsd_branches) * run_cfg.train.tokens / batch_tokens)
    warmup = max(1, length_in_steps(run_cfg.schedule.warmup, longest))
    branches = []
    for fraction in sorted(set(sweep.wsd_branches)):
        branch_cfg = copy.deepcopy(run_cfg)
        branch_cfg.train.tokens = fraction * run_cfg.train.tokens
        branch_cfg.schedule.warmup = float(warmup)
        spec = _spec(branch_cfg, {**point, "wsd_fraction": fraction}, sweep.name)
        start = decay_start(spec.steps, ScheduleConfig(**spec.config["schedule"]))
        if start < warmup:
            raise ConfigError(f"sweep.wsd_branches: the {fraction} branch decays from step {start}, inside the "
                              f"{warmup}-step warmup; use larger fractions or more train.tokens")
        branches.append((spec, start))
    stable_cfg = copy.deepcopy(run_cfg)
    stable_cfg.schedule.name = "constant"
    stable_cfg.schedule.warmup = float(warmup)
    stable_cfg.train.tokens = float(max(start for _, start in branches) * batch_tokens)
    points = sorted({start for _, start in branches})
    stable = _spec(stable_cfg, {**point, "wsd_stable": True}, sweep.name, salt={"branch_points": points})
    stable.branch_points = points
    for spec, start in branches:
        spec.parent = {"run_id": stable.run_id, "step": start}
    return [stable, *(spec for spec, _ in branches)]


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


def _spec(run_cfg: DictConfig, point: dict[str, Any], sweep_name: str, salt: dict | None = None) -> RunSpec:
    resolved = OmegaConf.to_container(run_cfg, resolve=True)
    for key in _ID_EXCLUDED:
        resolved.pop(key)
    identity = {**json.loads(json.dumps(resolved)), **(salt or {})}
    for key in _ID_EXCLUDED_TRAIN:
        identity["train"].pop(key, None)
    if identity["model"].get("parametrization") == "standard":
        # μP's keys came after stores existed: the standard parametrization (which ignores
        # mup_base_width) leaves them out of the id, so runs planned before keep their ids.
        for key in ("parametrization", "mup_base_width"):
            identity["model"].pop(key, None)
    if not identity.get("eval", {}).get("harness"):
        # The same for eval.harness (lm-eval tasks): runs without any keep the ids they had.
        for key in ("harness", "harness_limit"):
            identity["eval"].pop(key, None)
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
        "flops": float(sum(s.flops_to_train for s in specs)),
        "flops_unbranched": float(sum(s.flops for s in specs if not s.branch_points)),
    }
