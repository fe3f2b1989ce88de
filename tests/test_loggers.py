"""train.loggers (scaling_cli/train/loggers.py): TensorBoard events and offline W&B runs hold exactly
what the run store holds, for runs trained alone and in packs, after a crash and resume too; a
tracker that fails warns once and the run still finishes.

The TensorBoard tests read the events back with TensorBoard's own EventAccumulator (with orphan
purging off, so a repeated step would show); the W&B test reads the offline run file's records with
wandb's own protobuf classes. Each skips where its optional extra is not installed."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from scaling_cli.cli import main
from scaling_cli.compose import compose
from scaling_cli.plan import expand
from scaling_cli.store import RunStore

SEEDS = "sweep.grid={train.seed:[0,1]}"


def sweep(*overrides: str) -> int:
    return main(["sweep", "--no-progress", *overrides])


def tensorboard_scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """tag -> [(step, value)] of every scalar event under `folder`, in file order."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing import event_accumulator as ea

    acc = ea.EventAccumulator(str(folder), size_guidance={ea.SCALARS: 0, ea.TENSORS: 0}, purge_orphaned_data=False)
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def assert_events_equal_store(run: Path) -> None:
    """Every curve column and eval of the run's Parquet tables is in its events, once per step."""
    scalars = tensorboard_scalars(run / "tensorboard")
    curve = pd.read_parquet(run / "curve.parquet")
    for column in curve.columns.drop("step"):
        measured = curve[curve[column].notna()]
        logged = scalars.get(f"train/{column}", [])
        assert [s for s, _ in logged] == measured["step"].tolist(), column
        np.testing.assert_allclose([v for _, v in logged], measured[column].to_numpy(dtype=float), rtol=1e-6,
                                   err_msg=column)  # events store float32
    assert len(scalars["train/attn_logit_max"]) < len(curve)  # diagnostics: only the steps that measured them
    evals = pd.read_parquet(run / "evals.parquet")
    for (task, metric), rows in evals.groupby(["task", "metric"]):
        logged = scalars[f"eval/{task}/{metric}"]
        assert [s for s, _ in logged] == rows["step"].tolist()
        np.testing.assert_allclose([v for _, v in logged], rows["value"], rtol=1e-6)


def run_folders(root: Path) -> list[Path]:
    return [root / run_id for run_id in RunStore(str(root)).run_ids()]


def test_tensorboard_events_equal_the_curve_and_evals(tiny_overrides, tmp_path):
    pytest.importorskip("tensorboard")
    assert sweep(*tiny_overrides, "train.loggers=[tensorboard]") == 0
    (run,) = run_folders(tmp_path / "runs")
    assert_events_equal_store(run)
    assert len(list((run / "tensorboard").iterdir())) == 1  # one event file
    from tensorboard.backend.event_processing import event_accumulator as ea

    acc = ea.EventAccumulator(str(run / "tensorboard"))
    acc.Reload()
    (config,) = acc.Tensors("config/text_summary")
    text = config.tensor_proto.string_val[0].decode()
    assert f"run_id: {run.name}" in text and "d_model: 32" in text


def test_resume_rebuilds_the_events_without_repeated_steps(tiny_overrides, tmp_path, monkeypatch):
    pytest.importorskip("tensorboard")
    import scaling_cli.train.trainer as trainer

    real_train_run = trainer.train_run

    def interrupted(spec, store, data, progress=None):
        def hook(done, total, metrics):
            if done >= 15:  # after the checkpoint at step 10: steps 11-15 are logged, then lost
                raise KeyboardInterrupt
        return real_train_run(spec, store, data, progress=hook)

    monkeypatch.setattr(trainer, "train_run", interrupted)
    overrides = [*tiny_overrides, "train.loggers=[tensorboard]"]
    assert sweep(*overrides) == 130
    (run,) = run_folders(tmp_path / "runs")
    assert [s for s, _ in tensorboard_scalars(run / "tensorboard")["train/loss"]] == list(range(1, 16))

    monkeypatch.setattr(trainer, "train_run", real_train_run)
    assert sweep(*overrides) == 0
    # Appending would log steps 11-15 twice (EventAccumulator keeps both); the rebuilt events match the store.
    scalars = tensorboard_scalars(run / "tensorboard")
    assert [s for s, _ in scalars["train/loss"]] == list(range(1, 31))
    assert [s for s, _ in scalars["eval/val/loss"]] == [0, 10, 20, 30]
    assert_events_equal_store(run)


def test_packed_runs_each_get_their_own_events(tiny_overrides, tmp_path):
    pytest.importorskip("tensorboard")
    assert sweep(*tiny_overrides, SEEDS, "launcher.pack_size=2", "train.loggers=[tensorboard]") == 0
    runs = run_folders(tmp_path / "runs")
    assert len(runs) == 2
    for run in runs:
        assert json.loads((run / "status.json").read_text())["pack_size"] == 2
        assert_events_equal_store(run)
    losses = [tensorboard_scalars(run / "tensorboard")["train/loss"] for run in runs]
    assert losses[0] != losses[1]  # two seeds: each run's own curve, not its neighbour's


def wandb_records(path: Path) -> list:
    """The records of an offline W&B run file, parsed with wandb's own protobuf classes.

    The file is a LevelDB-style log (wandb's 'transaction log'): a 7-byte header (':W&B', magic,
    version), then 32 KiB blocks of chunks, each with a 7-byte header (crc32, length, type: 1 full,
    2 first, 3 middle, 4 last); a block's tail shorter than a chunk header is padding."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    block, pos, pending, records = 32768, 7, b"", []
    while pos + 7 <= len(data):
        if block - pos % block < 7:
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0:
            break
        pending += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def test_a_remote_store_gets_the_event_files_copied_in(tiny_overrides, tmp_path):
    """An fsspec store (memory:// here, s3:// in life): events are written locally, then copied into
    the run folder at checkpoints and at the end."""
    pytest.importorskip("tensorboard")
    import fsspec

    root = f"memory://{tmp_path.name}/runs"
    overrides = [o for o in tiny_overrides if not o.startswith("store.root=")]
    assert sweep(*overrides, f"store.root={root}", "train.loggers=[tensorboard]") == 0
    store = RunStore(root)
    (run_id,) = store.run_ids()
    local = tmp_path / "copy" / run_id
    fsspec.filesystem("memory").get(store.run_path(run_id), str(local), recursive=True)
    assert_events_equal_store(local)


def history(records: list) -> dict[int, dict[str, float]]:
    """step -> {key: value} of the run's history rows, in logged order; a step whose training loss
    is logged twice fails here (W&B would keep one copy and drop the other when synced)."""
    rows: dict[int, dict[str, float]] = {}
    for r in records:
        if r.WhichOneof("record_type") == "history":
            items = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item}
            step = int(items["_step"])
            assert not ("train/loss" in items and "train/loss" in rows.get(step, {})), f"step {step} logged twice"
            rows.setdefault(step, {}).update(items)
    return rows


def loss_steps(rows: dict[int, dict[str, float]]) -> list[int]:
    return [step for step, items in rows.items() if "train/loss" in items]


def test_wandb_offline_runs_of_a_resumed_pack_hold_each_runs_curve_once(tiny_overrides, tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    import scaling_cli.train.pack_trainer as pack_trainer

    for name in ("WANDB_DIR", "WANDB_PROJECT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    for name in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):  # nothing lands in the home folder
        monkeypatch.setenv(name, str(tmp_path / name.lower()))
    real_train_pack = pack_trainer.train_pack

    def interrupted(specs, store, data, progress=None):
        def hook(done, total, metrics):
            if done >= 15:  # after the checkpoint at step 10: steps 11-15 reach W&B, then the pack dies
                raise KeyboardInterrupt
        return real_train_pack(specs, store, data, hook)

    overrides = [*tiny_overrides, SEEDS, "launcher.pack_size=2", "train.loggers=[wandb]"]
    monkeypatch.setattr(pack_trainer, "train_pack", interrupted)
    assert sweep(*overrides) == 130
    for run in run_folders(tmp_path / "runs"):
        (offline,) = (run / "wandb").glob(f"offline-run-*-{run.name}")
        assert loss_steps(history(wandb_records(offline / f"run-{run.name}.wandb"))) == list(range(1, 16))
    monkeypatch.setattr(pack_trainer, "train_pack", real_train_pack)
    assert sweep(*overrides) == 0
    runs = run_folders(tmp_path / "runs")
    assert len(runs) == 2
    for run in runs:
        # one offline run per proxy: the interrupted attempt's, which ran past the checkpoint, is gone
        (offline,) = (run / "wandb").glob(f"offline-run-*-{run.name}")
        records = wandb_records(offline / f"run-{run.name}.wandb")
        (info,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
        spec = json.loads((run / "spec.json").read_text())
        assert (info.run_id, info.display_name, info.run_group, info.project) == (
            run.name, spec["name"], "single", "scaling-cli")
        config = {item.key: json.loads(item.value_json) for item in info.config.update}
        assert config["model"]["d_model"] == 32 and config["plan"]["run_id"] == run.name
        rows = history(records)
        curve = pd.read_parquet(run / "curve.parquet")
        assert loss_steps(rows) == curve["step"].tolist() == list(range(1, 31))  # each step once, in order
        np.testing.assert_allclose([rows[s]["train/loss"] for s in curve["step"]], curve["loss"], rtol=1e-12)
        evals = pd.read_parquet(run / "evals.parquet")
        val = evals[evals["task"] == "val"]
        assert [rows[s]["eval/val/loss"] for s in val["step"]] == pytest.approx(val["value"].tolist(), rel=1e-12)
        assert any(r.WhichOneof("record_type") == "exit" for r in records)  # the run was finished


def test_a_failing_logger_warns_once_and_the_run_finishes(tiny_overrides, tmp_path):
    pytest.importorskip("tensorboard")
    from scaling_cli.train.loggers import LoggerWarning

    overrides = [*tiny_overrides, "train.loggers=[tensorboard]"]
    (spec,) = expand(compose(overrides))
    # A file where the event folder goes: TensorBoard cannot create its folder (a real OSError).
    blocker = tmp_path / "runs" / spec.run_id / "tensorboard"
    blocker.parent.mkdir(parents=True)
    blocker.write_text("not a folder")
    with pytest.warns(LoggerWarning, match="tensorboard logger failed") as caught:
        assert sweep(*overrides) == 0
    assert len([w for w in caught if issubclass(w.category, LoggerWarning)]) == 1
    status = json.loads((blocker.parent / "status.json").read_text())
    assert status["state"] == "done" and "tensorboard" in status["logger_errors"]
    assert pd.read_parquet(blocker.parent / "curve.parquet")["step"].tolist() == list(range(1, 31))


def test_unknown_or_missing_logger_fails_before_training(tiny_overrides, tmp_path, capsys, monkeypatch):
    assert sweep(*tiny_overrides, "train.loggers=[tensorbord]") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "train.loggers: unknown logger 'tensorbord'" in err
    from scaling_cli import config

    monkeypatch.setitem(config.LOGGER_PACKAGES, "wandb", "scaling_cli_no_such_package")
    assert sweep(*tiny_overrides, "train.loggers=[wandb]") == 2
    err = capsys.readouterr().err.strip()
    assert "train.loggers: wandb is not installed; pip install 'scaling-cli[wandb]'" in err
    assert RunStore(str(tmp_path / "runs")).run_ids() == []


def test_loggers_leave_the_run_id_alone(tiny_overrides):
    (plain,) = expand(compose(tiny_overrides))
    (logged,) = expand(compose([*tiny_overrides, "train.loggers=[tensorboard,wandb]"]))
    assert plain.run_id == logged.run_id
