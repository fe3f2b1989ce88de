"""Fuzz: randomly mutated configs (to `sweep --dry-run`) and tables (to `fit`) either work or
fail with a clean one-line error (exit 2), never a traceback."""

from __future__ import annotations

import random

import numpy as np
import pandas as pd
import pytest

from scaling_cli.cli import main
from scaling_cli.config import Config

JUNK = ["-1", "0", "abc", "1e99", "[]", "[1,2]", "{a:1}", "null", "''", "1.5", "true", "nan", "inf", "-inf",
        "7", "1e-9", "' '", "[[]]", "{}", "3000000000"]
STRUCTURAL = [
    "sweep.grid={model.d_model:[0]}", "sweep.grid={model.nope:[1]}", "sweep.grid={optim.lr:[]}",
    "sweep.grid={optim.lr:abc}", "sweep.zip=[{model.d_model:[64,128],model.n_layer:[1]}]", "sweep.zip=[]",
    "sweep.grid={train.tokens:[-5]}", "sweep.grid={store.root:[x]}", "+foo=1", "model=nope", "sweep=nope",
    "sweep.max_runs=0", "model.n_head=5", "model.seq_len=-3", "train.tokens=null", "train.steps=10",
    "schedule.name=sawtooth", "launcher.name=kubernetes", "data.languages=[fr]",
]


def leaf_keys() -> list[str]:
    from omegaconf import OmegaConf

    flat = []

    def walk(node: dict, prefix: str) -> None:
        for key, value in node.items():
            if isinstance(value, dict) and key != "grid":
                walk(value, f"{prefix}{key}.")
            elif key not in ("grid", "zip"):
                flat.append(f"{prefix}{key}")

    walk(OmegaConf.to_container(OmegaConf.structured(Config), throw_on_missing=False), "")
    return flat


def test_leaf_keys_cover_the_schema():
    keys = leaf_keys()
    assert {"model.d_model", "optim.lr", "train.tokens", "launcher.name", "eval.tasks"} <= set(keys)


@pytest.mark.parametrize("seed", range(40))
def test_mutated_sweep_configs_fail_clean(seed, tmp_path, capsys):
    rng = random.Random(seed)
    keys = leaf_keys()
    overrides = [f"{rng.choice(keys)}={rng.choice(JUNK)}" for _ in range(rng.randint(1, 3))]
    if rng.random() < 0.5:
        overrides.append(rng.choice(STRUCTURAL))
    capsys.readouterr()
    code = main(["sweep", "--dry-run", f"store.root={tmp_path / 'runs'}", *overrides])
    err = capsys.readouterr().err.strip()
    assert code in (0, 2), (overrides, code, err)
    if code == 2:
        assert len(err.splitlines()) == 1 and err.startswith("scaling-cli sweep: error:"), (overrides, err)
    assert not (tmp_path / "runs").exists()  # a dry run writes nothing


def base_table(rng: np.random.Generator) -> pd.DataFrame:
    n = rng.uniform(1e6, 1e9, 40)
    d = rng.uniform(1e8, 1e11, 40)
    loss = 1.82 + 482.0 / n**0.348 + 2085.4 / d**0.366
    return pd.DataFrame({"params": n, "tokens": d, "loss": loss * np.exp(rng.normal(0, 0.01, 40)),
                         "lr": rng.choice([1e-3, 3e-3, 1e-2], 40)})


def mutate(table: pd.DataFrame, rng: random.Random) -> pd.DataFrame:
    table = table.copy()
    column = rng.choice(list(table.columns))
    kind = rng.choice(["drop", "nan", "negative", "zero", "string", "inf", "few", "empty", "dupes", "huge"])
    if kind == "drop":
        table = table.drop(columns=[column])
    elif kind == "nan":
        table.loc[table.sample(frac=0.3, random_state=1).index, column] = np.nan
    elif kind == "negative":
        table.loc[table.index[:5], column] = -1.0
    elif kind == "zero":
        table[column] = 0.0
    elif kind == "string":
        table[column] = table[column].astype(object)
        table.loc[table.index[:3], column] = "n/a"
    elif kind == "inf":
        table.loc[table.index[:3], column] = np.inf
    elif kind == "few":
        table = table.iloc[:2]
    elif kind == "empty":
        table = table.iloc[:0]
    elif kind == "dupes":
        table = pd.concat([table.iloc[:1]] * 40, ignore_index=True)
    elif kind == "huge":
        table[column] = 1e300
    return table


@pytest.mark.parametrize("seed", range(20))
def test_mutated_fit_tables_fail_clean(seed, tmp_path, capsys):
    rng = random.Random(seed)
    table = base_table(np.random.default_rng(seed))
    for _ in range(rng.randint(1, 2)):
        table = mutate(table, rng)
    path = tmp_path / "runs.csv"
    table.to_csv(path, index=False)
    capsys.readouterr()
    code = main(["fit", str(path), "-o", str(tmp_path / "out"), "--n-boot", "4", "--grid-size", "2", "--no-plots"])
    err = capsys.readouterr().err.strip()
    assert code in (0, 2), (code, err)
    if code == 2:
        errors = [line for line in err.splitlines() if "error:" in line]
        assert len(errors) == 1 and "Traceback" not in err, err
