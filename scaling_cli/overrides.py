"""Command-line overrides never vanish: each one either takes effect or stops the command, and
when one gives way to another a note says so.

Two ways an override used to be dropped without a word:

- A key set twice (`optim.lr=1e-3 optim.lr=3e-3`): Hydra keeps the last, silently. The last still
  wins (scripts that append to a base list of overrides keep working), and a note names both,
  whatever the spelling (`+sweep=` and `sweep=` are one key; each axis inside a `sweep.grid={...}`
  override counts as `sweep.grid.<axis>`).
- A key the sweep varies (`model.d_model=256` while the sweep's grid or zip sets `model.d_model`):
  the grid point overwrote it. Now a plain override of such a key
  * replaces a `sweep.grid` axis with its single value (a note says so);
  * replaces a `sweep.zip` group only when every key of the group is overridden (the group is
    one axis, and its keys have to agree: width, depth and heads); overriding some of them is an
    error naming the group and the override that replaces or removes it;
  * is an error for a key the budget planner sets (`sweep.budgets`, `sweep.target_params`).
  * applies to the fitted runs only, for a key that a validation target (`sweep.validate`) sets: the
    target is a run of its own and keeps its value (a note says so).
  An axis or planner written on the command line after the plain value is the later setting of
  that key, so it wins, with a note (`train.tokens=7680 'sweep.grid={train.tokens:[1e4,2e4]}'`
  sweeps the tokens); written before it, the rules above apply.

    notes = reconcile_axes(cfg, overrides)   # cfg: the composed config; edits cfg.sweep in place
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from omegaconf import DictConfig, OmegaConf

from scaling_cli.config import LENGTH_KEYS
from scaling_cli.errors import UserError

# Keys the budget planner writes into every grid point (scaling_cli/budget.py).
_PLANNED_KEYS = ("model.d_model", "model.n_layer", "model.n_head", "train.tokens")
_PLANNERS = ("sweep.budgets", "sweep.target_params")


@dataclass(frozen=True)
class _Setting:
    key: str
    """The config key (or group name) this override sets; for an axis, the key it varies."""
    text: str
    """The override as typed."""
    position: int
    """Where it stands on the command line (later settings win)."""


@dataclass
class _CommandLine:
    plain: list[_Setting]
    """Every `key=value` (and group choice), sweep.* keys included."""
    axes: list[_Setting]
    """One per key varied by a `sweep.grid={...}` or `sweep.zip=[...]` override."""
    planned: list[_Setting]
    """One per key a `sweep.budgets=`/`sweep.target_params=` override makes the planner set."""


def _parse(overrides: Sequence[str]) -> _CommandLine:
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import OverrideType

    line = _CommandLine([], [], [])
    for i, parsed in enumerate(OverridesParser.create().parse_overrides(list(overrides))):
        if parsed.type == OverrideType.DEL:
            continue
        key, text = parsed.key_or_group, parsed.input_line
        value = None if parsed.is_sweep_override() else parsed.value()
        if key == "sweep.grid" and isinstance(value, dict):
            line.axes += [_Setting(str(axis), text, i) for axis in value]
            continue
        line.plain.append(_Setting(key, text, i))
        if key == "sweep.zip" and isinstance(value, list):
            line.axes += [_Setting(str(k), text, i) for group in value if isinstance(group, dict) for k in group]
        if key in _PLANNERS and value:
            line.planned += [_Setting(k, text, i) for k in _PLANNED_KEYS]
    return line


def duplicate_notes(overrides: Sequence[str]) -> list[str]:
    """One note per key set more than once on the command line: the last setting wins, as in Hydra,
    but never unannounced."""
    line = _parse(overrides)
    grid_axes = [s for s in line.axes if s.text.lstrip("+").startswith("sweep.grid")]
    settings: dict[str, list[str]] = {}
    for key, text in [(s.key, s.text) for s in line.plain] + [(f"sweep.grid.{s.key}", s.text) for s in grid_axes]:
        settings.setdefault(key, []).append(text)
    notes = []
    for key, texts in settings.items():
        if len(texts) > 1:
            times = "twice" if len(texts) == 2 else f"{len(texts)} times"
            notes.append(f"{key} is set {times} on the command line; the last, {texts[-1]!r}, wins over "
                         + ", ".join(repr(t) for t in texts[:-1]))
    return notes


def reconcile_axes(cfg: DictConfig, overrides: Sequence[str]) -> list[str]:
    """Apply the rules of the module docstring to the composed `cfg` (its sweep section is edited
    so that replaced axes are gone). Returns one note per override that replaced or gave way to
    an axis, or was set twice; raises UserError where no single reading is right."""
    notes = duplicate_notes(overrides)
    line = _parse(overrides)
    keys: dict[str, str] = {}
    for s in line.plain:  # the last plain setting of each config key
        if "." in s.key and not s.key.startswith("sweep."):
            keys[s.key] = s
    for key, s in list(keys.items()):
        later = [a for a in line.axes + line.planned if a.key == key and a.position > s.position]
        if later:
            notes.append(f"{s.text} gives way to {later[-1].text!r}, later on the command line, which varies {key}")
            del keys[key]
    keys = {k: s.text for k, s in keys.items()}
    if not keys:
        return notes
    sweep = cfg.sweep
    name = sweep.name
    planner = next((p for p in _PLANNERS if OmegaConf.select(cfg, p)), None)
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
    _check_extra_blocks(cfg, keys)
    return notes + _target_notes(cfg, keys)


def _target_notes(cfg: DictConfig, keys: dict[str, str]) -> list[str]:
    """A plain override of a key that a validation target (sweep.validate) sets applies to every
    fitted run; the target keeps its own value (it is a run of its own shape or length), and a note
    says so. A target that sets its length by one of LENGTH_KEYS sets all three."""
    notes = []
    for i, entry in enumerate(cfg.sweep.get("validate") or []):
        if not isinstance(entry, DictConfig):
            continue  # the planner names a malformed entry
        entry_keys = [str(k) for k in entry.keys()]
        if any(k in LENGTH_KEYS for k in entry_keys):
            entry_keys += [k for k in LENGTH_KEYS if k not in entry_keys]
        hit = [k for k in entry_keys if k in keys]
        if hit:
            notes.append(f"{' '.join(keys[k] for k in hit)} appl{'ies' if len(hit) == 1 else 'y'} to the fitted runs; "
                         f"the validation target sweep.validate[{i}] keeps its own {', '.join(hit)}")
    return notes


def _check_extra_blocks(cfg: DictConfig, keys: dict[str, str]) -> None:
    """Plain overrides that an extra block's points or train.tokens_per_param would overwrite: errors.
    A block is a grid of its own, so no single axis of it can be replaced by one value."""
    sweep = cfg.sweep
    varied: dict[str, int] = {}
    for i, block in enumerate(sweep.get("extra") or []):
        for key in list((block.get("grid") or {}).keys()) + [k for g in block.get("zip") or [] for k in g.keys()]:
            varied.setdefault(str(key), i)
    for key, i in varied.items():
        if key in keys:
            raise UserError(f"{key}: sweep '{sweep.name}' varies it in sweep.extra[{i}], a block of runs of its own, so "
                            f"{keys[key]!r} would be overwritten there; drop the override, or drop the blocks with "
                            "'sweep.extra=[]'")
    axes = [*(sweep.grid or {}).keys(), *(k for g in sweep.zip or [] for k in g.keys()), *varied]
    if OmegaConf.select(cfg, "train.tokens_per_param") is not None or "train.tokens_per_param" in axes:
        for key in ("train.tokens", "train.steps"):
            if key in keys:
                raise UserError(f"{key}: sweep '{sweep.name}' sets every run's tokens by train.tokens_per_param "
                                f"(D = M x N), so {keys[key]!r} would be overwritten; drop it, or set "
                                "train.tokens_per_param=null and 'sweep.extra=[]' to give the tokens yourself")


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
