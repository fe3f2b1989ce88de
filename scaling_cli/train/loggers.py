"""Stream a run's curve, evals and config to experiment trackers: `train.loggers=[tensorboard,wandb]`.

    loggers = RunLoggers(spec, store, names, curve_rows, eval_rows)   # opens, replays history
    loggers.log_curve(rows); loggers.log_evals(rows); loggers.flush(); loggers.close()

RunRecorder (scaling_cli/train/trainer.py) owns one per run, so solo and packed runs log alike.
Tags: `train/<curve column>` for every curve row (every step), `eval/<task>/<metric>` for every
eval row, both at the run's optimizer step; the resolved config and plan go in as text (TensorBoard)
or as the run config (W&B).

- tensorboard: event files in `<run folder>/tensorboard/` (a remote store gets them copied in at
  every checkpoint and at the end), read by `tensorboard --logdir <store>`.
- wandb: one W&B run per proxy (id = run_id, name = run name, group = sweep name), offline
  unless WANDB_MODE says otherwise, under `<run folder>/wandb/` (or WANDB_DIR); project
  WANDB_PROJECT or 'scaling-cli'. `wandb sync <run folder>/wandb/offline-run-*` uploads it.

Resume: the store's curve is the truth, and an event file cannot be cut back to a checkpoint, so
on every start a run's tracker output is removed and rebuilt from the curve and evals the store
restored; TensorBoard would otherwise show the steps between the last checkpoint and the crash
twice (EventAccumulator keeps both copies of a repeated step). Failure: a tracker that raises is
dropped for the rest of the run with one warning, and the run trains on; the error is kept in
`errors` for status.json.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import warnings
from typing import Iterable

from scaling_cli.plan import RunSpec
from scaling_cli.store import RunStore

# A NaN here means "not measured at this step" (the stability diagnostics run every
# train.diagnostics_interval steps), except for these, where a non-finite value is the divergence.
_ALWAYS_LOGGED = ("loss", "grad_norm")


class LoggerWarning(UserWarning):
    """A tracker failed; the run trains on without it."""


def curve_metrics(row: dict) -> dict[str, float]:
    """Tracker scalars of one curve row (`train/<column>`), leaving out what was not measured."""
    out = {}
    for key, value in row.items():
        if key == "step" or value is None:
            continue
        value = float(value)
        if math.isnan(value) and key not in _ALWAYS_LOGGED:
            continue
        out[f"train/{key}"] = value
    return out


def eval_metrics(rows: Iterable[dict]) -> dict[int, dict[str, float]]:
    """step -> {`eval/<task>/<metric>`: value} of eval rows."""
    out: dict[int, dict[str, float]] = {}
    for row in rows:
        out.setdefault(int(row["step"]), {})[f"eval/{row['task']}/{row['metric']}"] = float(row["value"])
    return out


def _is_local(store: RunStore) -> bool:
    protocol = store.fs.protocol
    return "file" in (protocol if isinstance(protocol, (tuple, list)) else (protocol,))


def _config_text(spec: RunSpec) -> str:
    from omegaconf import OmegaConf

    return OmegaConf.to_yaml(OmegaConf.create({"plan": spec.summary(), **spec.config}))


class TensorBoardLogger:
    """Event files of one run, written through torch.utils.tensorboard."""

    name = "tensorboard"

    def __init__(self, spec: RunSpec, store: RunStore) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.store, self.run_id = store, spec.run_id
        if _is_local(store):
            self.folder, self.staging = store.run_path(spec.run_id, "tensorboard"), False
        else:  # event files are appended to; an object store is written whole, at checkpoints
            self.folder, self.staging = tempfile.mkdtemp(prefix=f"tb-{spec.run_id}-"), True
            if store.exists(spec.run_id, "tensorboard"):
                store.fs.rm(store.run_path(spec.run_id, "tensorboard"), recursive=True)
        if os.path.isdir(self.folder):
            shutil.rmtree(self.folder)
        self.writer = SummaryWriter(log_dir=self.folder, max_queue=1000, flush_secs=30)
        # four-space indent: TensorBoard renders text summaries as markdown
        self.writer.add_text("config", "    " + _config_text(spec).replace("\n", "\n    "), 0)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        for tag, value in metrics.items():
            self.writer.add_scalar(tag, value, step)

    def flush(self) -> None:
        self.writer.flush()
        if self.staging:
            for name in sorted(os.listdir(self.folder)):
                with open(os.path.join(self.folder, name), "rb") as f:
                    self.store.write_bytes(self.run_id, f"tensorboard/{name}", f.read())

    def close(self) -> None:
        self.writer.close()
        self.flush()
        if self.staging:
            shutil.rmtree(self.folder, ignore_errors=True)


class WandbLogger:
    """One W&B run per proxy, offline by default."""

    name = "wandb"

    def __init__(self, spec: RunSpec, store: RunStore) -> None:
        import wandb

        folder = os.environ.get("WANDB_DIR") or (store.run_path(spec.run_id) if _is_local(store) else None)
        if folder:
            # an earlier attempt's offline run of this proxy holds steps past the checkpoint we resume from
            for old in _offline_runs(folder, spec.run_id):
                shutil.rmtree(old, ignore_errors=True)
        from omegaconf import OmegaConf

        config = {"plan": spec.summary(), **OmegaConf.to_container(OmegaConf.create(spec.config))}
        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT", "scaling-cli"), id=spec.run_id, name=spec.name,
            group=spec.sweep, config=config, dir=folder, mode=os.environ.get("WANDB_MODE", "offline"),
            resume="allow", reinit="create_new",  # a pack trains several runs in one process
            settings=_wandb_settings(wandb))

    def log(self, step: int, metrics: dict[str, float]) -> None:
        self.run.log(metrics, step=step)

    def flush(self) -> None:
        pass  # the W&B service writes as it receives

    def close(self) -> None:
        self.run.finish()


# No console capture (a pack's runs share one stdout), no system-metrics sampler thread per run, no
# pip freeze per run (spec.json has the version and git SHA). Private (x_) settings come and go
# between wandb releases, so only those this wandb knows are passed.
_WANDB_SETTINGS = {"console": "off", "silent": True, "x_disable_stats": True, "x_save_requirements": False}


def _wandb_settings(wandb):
    known = getattr(wandb.Settings, "model_fields", None) or _WANDB_SETTINGS
    return wandb.Settings(**{k: v for k, v in _WANDB_SETTINGS.items() if k in known})


def _offline_runs(folder: str, run_id: str) -> list[str]:
    wandb_dir = os.path.join(folder, "wandb")
    if not os.path.isdir(wandb_dir):
        return []
    return [os.path.join(wandb_dir, d) for d in os.listdir(wandb_dir)
            if d.startswith(("offline-run-", "run-")) and d.endswith(f"-{run_id}")]


BACKENDS = {"tensorboard": TensorBoardLogger, "wandb": WandbLogger}
"""train.loggers name -> tracker class (the names scaling_cli.config.validate accepts)."""


class RunLoggers:
    """The trackers of one run, fed together; one that fails warns once and is dropped."""

    def __init__(self, spec: RunSpec, store: RunStore, names: Iterable[str],
                 curve: list[dict] = (), evals: list[dict] = ()) -> None:
        self.spec = spec
        self.errors: dict[str, str] = {}
        self.backends = []
        for name in names:
            backend = self._guard(name, lambda name=name: BACKENDS[name](spec, store))
            if backend is not _FAILED:
                self.backends.append(backend)
        self._replay(curve, evals)

    def _replay(self, curve: list[dict], evals: list[dict]) -> None:
        """Log the history the store restored, in step order (W&B needs steps that never go back)."""
        if not self.backends or not (curve or evals):
            return
        by_step = eval_metrics(evals)
        events = [(int(row["step"]), 0, curve_metrics(row)) for row in curve]
        events += [(step, 1, metrics) for step, metrics in by_step.items()]
        for step, _, metrics in sorted(events, key=lambda e: (e[0], e[1])):
            self._each("log", step, metrics)
        self.flush()

    def log_curve(self, rows: list[dict]) -> None:
        for row in rows:
            self._each("log", int(row["step"]), curve_metrics(row))

    def log_evals(self, rows: list[dict]) -> None:
        for step, metrics in eval_metrics(rows).items():
            self._each("log", step, metrics)

    def flush(self) -> None:
        self._each("flush")

    def close(self) -> None:
        self._each("close")
        self.backends = []

    def _each(self, method: str, *args) -> None:
        for backend in list(self.backends):
            if self._guard(backend.name, lambda: getattr(backend, method)(*args)) is _FAILED:
                self.backends.remove(backend)

    def _guard(self, name: str, call):
        """call(), or _FAILED after one warning: a tracker must never stop or lose the run."""
        try:
            return call()
        except Exception as err:  # trackers raise anything: OSError, ImportError, their own errors
            message = f"{type(err).__name__}: {err}".strip()
            self.errors[name] = message
            warnings.warn(f"run {self.spec.run_id}: the {name} logger failed ({message}); the run trains on "
                          f"without it, and its curve and evals are complete in the store", LoggerWarning,
                          stacklevel=2)
            return _FAILED


_FAILED = object()
