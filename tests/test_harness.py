"""lm-evaluation-harness integration (scaling_cli/evals/harness.py, the `lm-eval` extra): the shipped
task YAMLs give the same accuracy as our own scorer on the same items, with no network, and
`eval.harness` tasks land in a sweep's evals table (end of run and eval intervals) where `fit`
finds them. Skipped without lm-eval.

    pytest tests/test_harness.py
"""

from __future__ import annotations

import socket

import pytest
import torch

pytest.importorskip("lm_eval")

from scaling_cli.cli import main  # noqa: E402
from scaling_cli.config import ModelConfig  # noqa: E402
from scaling_cli.data.tokenizer import train_bpe  # noqa: E402
from scaling_cli.evals import choice, harness  # noqa: E402
from scaling_cli.evals.config import EvalConfig  # noqa: E402
from scaling_cli.model.gpt import GPT  # noqa: E402
from scaling_cli.store import RunStore, load_runs  # noqa: E402

ITEMS = 24


def _no_network(*args, **kwargs):
    raise AssertionError(f"network access attempted: {args[1:] if len(args) > 1 else args}")


def test_lm_eval_accuracy_equals_our_scorer_on_the_shipped_tasks(monkeypatch):
    monkeypatch.setattr(socket.socket, "connect", _no_network)  # any download fails the test
    texts = [r["context"] for name in ("next_verse", "translation_choice")
             for r in choice._read_jsonl(choice.shipped_tasks()[name])[:200]]
    tokenizer = train_bpe(texts, 400)
    torch.manual_seed(0)
    # seq_len 512: every one of the first ITEMS items fits whole, so neither side cuts a context
    model = GPT(ModelConfig(d_model=32, n_layer=1, n_head=2, seq_len=512, vocab_size=400, init_std=0.3)).eval()
    assert harness.shipped_harness_tasks() == ["scaling_next_verse", "scaling_translation_choice"]
    cfg = EvalConfig(harness=harness.shipped_harness_tasks(), harness_limit=ITEMS, choice_items=ITEMS, batch_size=16)
    rows = harness.evaluate(model, tokenizer, cfg)
    theirs = {(r["task"], r["metric"]): r["value"] for r in rows}
    no_autocast = torch.autocast("cpu", enabled=False)
    for name in ("next_verse", "translation_choice"):
        ours = {r["metric"]: r["value"] for r in choice.evaluate(model, tokenizer, name, cfg, no_autocast)}
        kept = [item for item, _, _ in choice.usable_items(tokenizer, name, cfg, model.cfg.seq_len)]
        assert kept == choice.load_items(name, cfg)[:ITEMS]  # our items are lm-eval's first ITEMS documents
        task = f"scaling_{name}"
        assert theirs[(task, "n")] == ours["n"] == ITEMS
        assert theirs[(task, "chance")] == pytest.approx(ours["chance"])
        assert theirs[(task, "acc")] == pytest.approx(ours["acc"], abs=1e-12)
        assert theirs[(task, "acc_norm")] == pytest.approx(ours["acc_norm"], abs=1e-12)
    assert theirs[("harness", "seconds")] > 0


def test_shipped_tasks_under_the_stock_cli_keep_the_items_our_scorer_scores(tmp_path):
    """`lm-eval run --model_args pretrained=OUT` hands OUT to the tasks' dataset hook, which keeps
    only the items that fit the exported model's context, as our scorer does."""
    import importlib.util

    from scaling_cli.export.hf import save_hf

    texts = [r["context"] for r in choice._read_jsonl(choice.shipped_tasks()["next_verse"])[:200]]
    tokenizer = train_bpe(texts, 300)
    model = GPT(ModelConfig(d_model=32, n_layer=1, n_head=2, seq_len=64, vocab_size=300)).eval()
    save_hf(model, tokenizer, tmp_path / "hf")
    spec = importlib.util.spec_from_file_location("harness_utils", harness.HARNESS_TASKS_DIR / "utils.py")
    utils = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(utils)
    everything = utils.next_verse(version=1.0)["test"]
    fitting = utils.next_verse(pretrained=str(tmp_path / "hf"), version=1.0)["test"]
    cfg = EvalConfig(choice_items=10_000)
    ours = [item for item, _, _ in choice.usable_items(tokenizer, "next_verse", cfg, 64)]
    assert len(everything) == len(choice.load_items("next_verse", cfg)) > len(fitting) > 0
    assert [(d["context"], d["choices"], d["gold"]) for d in fitting] == [(i.context, i.choices, i.gold) for i in ours]


def test_sweep_runs_harness_tasks_into_the_evals_table(tiny_overrides, tmp_path):
    # Our scorer's next_verse beside lm-eval's: same items, so the same accuracy, in a real run.
    assert main(["sweep", "--no-progress", *tiny_overrides, "model.seq_len=64", "eval.interval=10",
                 "eval.tasks=[next_verse]", "eval.choice_items=6",
                 "eval.harness=[scaling_next_verse]", "eval.harness_limit=6"]) == 0
    store = RunStore(str(tmp_path / "runs"))
    (run_id,) = store.run_ids()
    evals = store.read_table(run_id, "evals")
    steps = int(store.read_json(run_id, "spec.json")["steps"])
    theirs = evals[evals["task"] == "scaling_next_verse"]
    assert sorted(theirs["step"].unique()) == [10, steps]  # at the eval interval and at the end
    for step in (10, steps):
        at = evals[evals["step"] == step]
        ours = at[at["task"] == "next_verse"].set_index("metric")["value"]
        lm = at[at["task"] == "scaling_next_verse"].set_index("metric")["value"]
        assert lm["n"] == ours["n"] >= 1 and lm["chance"] == pytest.approx(0.25)
        assert lm["acc"] == ours["acc"] and lm["acc_norm"] == ours["acc_norm"]
    runs = load_runs(str(tmp_path / "runs"))
    assert runs.loc[0, "scaling_next_verse_acc"] == lm["acc"]  # the columns fit reads
    assert runs.loc[0, "scaling_next_verse_chance"] == pytest.approx(0.25)


def test_harness_names_that_clash_with_our_tasks_are_refused(tmp_path, capsys):
    code = main(["sweep", "--dry-run", "eval.tasks=[next_verse]", "eval.harness=[next_verse]",
                 f"store.root={tmp_path}"])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert "eval.harness" in err and "also in eval.tasks" in err and "\n" not in err
