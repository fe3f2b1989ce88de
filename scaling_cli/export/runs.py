"""A finished run, read back from the store: its model with the final weights, and its tokenizer.

    run = load_run("runs/3f2a9c1b")                # a run folder
    run = load_run("3f2a", store="runs")           # a run id, or a unique prefix of one

Reads spec.json, config.yaml and model.pt (written when the run finished); never imports the
trainer. The tokenizer is the one the run trained with: data preparation caches it by the data
config and vocabulary (scaling_cli/data/prepare.py), and retrains it the same deterministic way
where that cache is gone (another machine, a cleared cache).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import OmegaConf

from scaling_cli.config import DataConfig, ModelConfig
from scaling_cli.errors import UserError
from scaling_cli.model.gpt import GPT
from scaling_cli.store import RunStore


@dataclass
class LoadedRun:
    run_id: str
    store: RunStore
    model: GPT
    config: dict
    """The run's resolved config (model, data, optim, ... sections)."""

    def tokenizer(self):
        from scaling_cli.data.prepare import load_tokenizer

        return load_tokenizer(DataConfig(**self.config["data"]), self.model.cfg.vocab_size)


def resolve(run: str, store: str = "runs") -> tuple[RunStore, str]:
    """(store, run_id) for a run folder path, or for a run id or unique id prefix in `store`."""
    path = Path(run).expanduser()
    if (path / "spec.json").is_file():
        return RunStore(str(path.resolve().parent)), path.resolve().name
    runs = RunStore(store)
    ids = runs.run_ids()
    if run in ids:
        return runs, run
    matches = [i for i in ids if i.startswith(run)]
    if len(matches) == 1:
        return runs, matches[0]
    if not ids:
        raise UserError(f"RUN: {run!r} is neither a run folder (holding spec.json) nor a run in store {store!r}, "
                        "which has no runs; give a run folder or --store ROOT")
    if not matches:
        raise UserError(f"RUN: no run {run!r} in store {store!r} ({len(ids)} runs); "
                        "`scaling-cli status` lists their ids")
    raise UserError(f"RUN: {run!r} matches {len(matches)} runs in {store!r} ({', '.join(matches[:4])}"
                    f"{', ...' if len(matches) > 4 else ''}); give more of the id")


def load_run(run: str, store: str = "runs") -> LoadedRun:
    """The run's GPT with its final weights (fp32, CPU, eval mode)."""
    runs, run_id = resolve(run, store)
    state = runs.status(run_id).get("state", "unknown")
    if not runs.exists(run_id, "model.pt"):
        raise UserError(f"RUN: run {run_id} is {state}; only a finished run has final weights (model.pt) to export")
    config = OmegaConf.to_container(OmegaConf.create(runs.read_bytes(run_id, "config.yaml").decode()), resolve=True)
    model = GPT(ModelConfig(**config["model"]))
    with runs.fs.open(runs.run_path(run_id, "model.pt"), "rb") as f:
        weights = torch.load(f, map_location="cpu", weights_only=True)
    model.load_state_dict(weights)
    return LoadedRun(run_id=run_id, store=runs, model=model.eval(), config=config)
