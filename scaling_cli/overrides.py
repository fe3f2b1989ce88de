"""Command-line overrides never vanish: each one either takes effect or stops the command.

Two ways an override used to be dropped without a word:

- A key set twice (`optim.lr=1e-3 optim.lr=3e-3`): Hydra keeps the last, silently. The last
  still wins (scripts that append to a base list of overrides keep working), and a note names
  both, whatever the spelling (`+sweep=` and `sweep=` are one key; each axis inside a
  `sweep.grid={...}` override counts as `sweep.grid.<axis>`).
- A key the sweep varies (`model.d_model=256` while the sweep's grid or zip sets
  `model.d_model`): the grid point overwrote it. Now:
  * a `sweep.grid` axis is replaced by the single value (one note says so);
  * a `sweep.zip` group is replaced only when every key of the group is overridden (the group
    is one axis, and its keys have to agree: width, depth and heads); overriding some of them
    is an error naming the group and the override that replaces or removes it;
  * a key the budget planner sets (`sweep.budgets`, `sweep.target_params`) is an error;
  * an axis the command line itself added (`'sweep.grid={optim.lr:[...]}' optim.lr=1e-3`) is
    an error: the two settings contradict each other whatever their order.

    notes = reconcile_axes(cfg, overrides)   # cfg: the composed config; edits cfg.sweep in place
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from omegaconf import DictConfig, OmegaConf

from scaling_cli.errors import UserError

# Keys the budget planner writes into every grid point (scaling_cli/budget.py).
_PLANNED_KEYS = ("model.d_model", "model.n_layer", "model.n_head", "train.tokens")


@dataclass(frozen=True)
class _Setting:
    key: str
    """The config key (or group name) this override sets."""
    text: str
    """The override as typed."""


def _settings(overrides: Sequence[str]) -> tuple[list[_Setting], list[_Setting]]:
    """(plain key settings, grid-axis settings from `sweep.grid=...` overrides) of the command line."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import OverrideType

    plain, axes = [], []
    for parsed in OverridesParser.create().parse_overrides(list(overrides)):
        if parsed.type == OverrideType.DEL:
            continue
        key = parsed.key_or_group
        if key == "sweep.grid" and not parsed.is_sweep_override() and isinstance(parsed.value(), dict):
            axes += [_Setting(str(axis), parsed.input_line) for axis in parsed.value()]
        else:
            plain.append(_Setting(key, parsed.input_line))
    return plain, axes


def duplicate_notes(overrides: Sequence[str]) -> list[str]:
    """One note per key set more than once on the command line: the last setting wins, as in Hydra,
    but never unannounced. A plain key that the command line also made a grid axis is an error
    (the axis would overwrite it whatever the order)."""
    plain, axes = _settings(overrides)
    settings: dict[str, list[str]] = {}
    for key, text in [(s.key, s.text) for s in plain] + [(f"sweep.grid.{s.key}", s.text) for s in axes]:
        settings.setdefault(key, []).append(text)
    notes = []
    for key, texts in settings.items():
        if len(texts) > 1:
            times = "twice" if len(texts) == 2 else f"{len(texts)} times"
            notes.append(f"{key} is set {times} on the command line; the last, {texts[-1]!r}, wins over "
                         + ", ".join(repr(t) for t in texts[:-1]))
    grid_texts = {s.key: s.text for s in axes}
    for s in plain:
        if s.key in grid_texts:
            raise UserError(f"{s.key}: set twice on the command line, as {s.text!r} and as a grid axis in "
                            f"{grid_texts[s.key]!r}; keep one")
    return notes


def reconcile_axes(cfg: DictConfig, overrides: Sequence[str]) -> list[str]:
    """Apply the rules of the module docstring to the composed `cfg` (its sweep section is edited
    so that replaced axes are gone). Returns one note per replaced axis; raises UserError."""
    notes = duplicate_notes(overrides)
    plain, _ = _settings(overrides)
    keys = {s.key: s.text for s in plain if not s.key.startswith("sweep.") and "." in s.key}
    if not keys:
        return notes
    sweep = cfg.sweep
    name = sweep.name
    planner = "sweep.budgets" if sweep.budgets else ("sweep.target_params" if sweep.target_params else None)
    if planner:
        for key in _PLANNED_KEYS:
            if key in keys:
                raise UserError(f"{key}: {planner} plans every run's model shape and train.tokens, so "
                                f"{keys[key]!r} would be overwritten; drop the override, or drop the planner "
                                f"with {planner}=[] and give the axes yourself")
    zip_groups = list(sweep.zip or [])
    kept = []
    for i, group in enumerate(zip_groups):
        members = list(group.keys())
        hit = [k for k in members if k in keys]
        if not hit:
            kept.append(group)
            continue
        if len(hit) < len(members):
            rest = [g for j, g in enumerate(zip_groups) if j != i]
            others = [k for k in members if k not in hit]
            template = _literal([{k: "[...]" for k in members}])
            raise UserError(
                f"{hit[0]}: sweep '{name}' varies it together with {', '.join(others)} (sweep.zip[{i}]), so "
                f"{keys[hit[0]]!r} cannot replace that axis alone; set all of {', '.join(members)} to run one "
                f"point of it, remove the group with {_zip_override(rest)!r}, or give it new values with "
                f"'sweep.zip={template}'")
        notes.append(f"{' '.join(keys[k] for k in members)} replace{'s' if len(members) == 1 else ''} the zipped "
                     f"axis sweep.zip[{i}] of sweep '{name}' ({_show_group(group)})")
    if len(kept) != len(zip_groups):
        sweep.zip = kept
    for key in [k for k in list((sweep.grid or {}).keys()) if k in keys]:
        values = OmegaConf.to_container(sweep.grid[key]) if OmegaConf.is_config(sweep.grid[key]) else sweep.grid[key]
        notes.append(f"{keys[key]} replaces the grid axis {key}: {values} of sweep '{name}'")
        del sweep.grid[key]
    return notes


def _show_group(group: Any) -> str:
    plain = OmegaConf.to_container(group) if OmegaConf.is_config(group) else group
    return ", ".join(f"{k}: {v}" for k, v in plain.items())


def _literal(value: Any) -> str:
    """Hydra's override syntax for a value (lists, dicts, numbers, plain strings)."""
    if OmegaConf.is_config(value):
        value = OmegaConf.to_container(value)
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{_literal(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_literal(v) for v in value) + "]"
    return str(value)


def _zip_override(groups: list) -> str:
    return f"sweep.zip={_literal(list(groups))}"
