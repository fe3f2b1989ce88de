"""Compose the run configuration from conf/, sweeps/ and command-line overrides with Hydra.

We use Hydra's compose API rather than `@hydra.main` so that the CLI owns error handling
(one-line messages, exit codes) and nothing changes the working directory.

The ready-made sweeps in `sweeps/*.yaml` are registered as options of the `sweep` group at
the global package, so a sweep file can set both the grid and any other key
(`train.tokens`, `model.seq_len`...). A user can add a folder of their own sweeps with
`--sweeps-dir`.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Iterable, Sequence

from omegaconf import DictConfig, OmegaConf

from scaling_cli.config import ConfigError, register_configs
from scaling_cli.errors import UserError
from scaling_cli.overrides import reconcile_axes


def sweep_files(extra_dir: str | None = None) -> dict[str, Path]:
    """Sweep name -> YAML file; a user's folder shadows the shipped sweeps of the same name."""
    files = {Path(str(p)).stem: Path(str(p)) for p in resources.files("scaling_cli_sweeps").iterdir()
             if str(p).endswith(".yaml")}
    if extra_dir:
        folder = Path(extra_dir).expanduser()
        if not folder.is_dir():
            raise UserError(f"--sweeps-dir: {folder} is not a folder")
        files.update({p.stem: p for p in folder.glob("*.yaml")})
    return files


def _register_sweeps(files: dict[str, Path]) -> None:
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    for name, path in files.items():
        try:
            node = OmegaConf.load(path)
        except Exception as err:  # yaml.YAMLError and friends
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise UserError(f"sweep={name}: {path} is not valid YAML ({first}); fix the file") from err
        store.store(group="sweep", name=name, node=node, package="_global_")


GPU_DEFAULT_SWEEP = "small"
"""The sweep `scaling-cli sweep` trains when CUDA is present and no sweep= is given (sweeps/small.yaml);
without CUDA it is conf/config.yaml's default, `tiny`."""


def hardware_default_sweep(overrides: Sequence[str]) -> str | None:
    """GPU_DEFAULT_SWEEP when no sweep was named and torch sees a CUDA device, else None (the
    config's own default). Only the sweep command asks: `compose` itself stays hardware-blind."""
    if any(o.startswith(("sweep=", "+sweep=")) for o in overrides):
        return None
    import torch

    return GPU_DEFAULT_SWEEP if torch.cuda.is_available() else None


def normalise_overrides(overrides: Iterable[str]) -> list[str]:
    """Accept `+sweep=NAME` (the DESIGN.md spelling) for the `sweep` group, which has a default."""
    return [o[1:] if o.startswith("+sweep=") else o for o in overrides]


def compose(overrides: Sequence[str] = (), sweeps_dir: str | None = None, notes: list[str] | None = None) -> DictConfig:
    """The composed, typed config. Raises UserError with a one-line message on any problem.

    An override of a key the sweep varies replaces that axis or fails, and a key set twice fails
    (scaling_cli/overrides.py); each replaced axis adds a line to `notes` when a list is given."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    register_configs()
    files = sweep_files(sweeps_dir)
    _register_sweeps(files)
    overrides = normalise_overrides(overrides)
    for o in overrides:
        if o.startswith("sweep=") and o.split("=", 1)[1] not in files:
            raise UserError(f"sweep: no sweep named {o.split('=', 1)[1]!r}; choose one of {sorted(files)}")
    GlobalHydra.instance().clear()
    try:
        with initialize_config_module(config_module="scaling_cli_conf", version_base="1.3"):
            cfg = hydra_compose(config_name="config", overrides=list(overrides))
    except Exception as err:
        raise UserError(one_line(err)) from err
    finally:
        GlobalHydra.instance().clear()
    replaced = reconcile_axes(cfg, overrides)
    if notes is not None:
        notes.extend(replaced)
    return cfg


def one_line(err: BaseException) -> str:
    """Hydra and OmegaConf errors span several lines and wrap each other; find the field and the cause."""
    from omegaconf.errors import OmegaConfBaseException

    chain, seen = [], set()
    e: BaseException | None = err
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        chain.append(e)
        e = e.__cause__ or e.__context__
    for e in chain:
        override = getattr(e, "override", None)
        if isinstance(override, str):  # hydra's OverrideParseException: name the override itself
            lines = [line.strip() for line in str(e).strip().splitlines()]
            details = [line for line in lines if line and not line.startswith(("See http", "Error parsing"))]
            reason = details[0] if details else "invalid syntax"
            return f"{override.split('=', 1)[0]}: cannot parse the override {override!r} ({reason}); check its syntax"
    for e in chain:  # outermost first: inner OmegaConf errors hold unformatted templates
        key = getattr(e, "full_key", None)
        if isinstance(e, OmegaConfBaseException) and key:
            cause = str(e).strip().splitlines()[0]
            if "not in" in cause:
                cause += "; check the spelling (`scaling-cli sweep --show-config` lists every key)"
            return f"{key}: {cause}"
    lines = [line.strip() for line in str(chain[-1] if isinstance(err, ConfigError) else err).splitlines()]
    lines = [line for line in lines if line and not line.startswith(("Config search path", "provider=", "See http"))]
    if len(lines) > 1 and lines[1].startswith("Available options"):
        return f"{lines[0]}; {lines[1]} {', '.join(o for o in lines[2:] if not o.startswith('base_'))}"
    return "; ".join(lines) or type(err).__name__
