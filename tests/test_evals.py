"""Downstream evals (scaling_cli/evals/): sacrebleu wrapper, log-likelihood scoring against a
hand computation, KV-cache greedy decoding against full recompute, multiple-choice accuracy,
finetuning on a copy, the eval config, the shipped tasks, and one tiny end-to-end sweep.

    pytest tests/test_evals.py
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from conftest import TINY_OVERRIDES
from scaling_cli.config import ModelConfig
from scaling_cli.errors import UserError
from scaling_cli.evals import choice, downstream_evals, finetune
from scaling_cli.evals.config import EvalConfig, validate_eval
from scaling_cli.evals.generate import greedy_generate, greedy_generate_nocache, score_continuations
from scaling_cli.evals.translation import corpus_scores
from scaling_cli.model.gpt import GPT

VOCAB = 300


def _model(seed: int = 0, seq_len: int = 24, **kwargs) -> GPT:
    torch.manual_seed(seed)
    cfg = dict(d_model=32, n_layer=2, n_head=2, seq_len=seq_len, vocab_size=VOCAB, init_std=0.2)
    cfg.update(kwargs)
    return GPT(ModelConfig(**cfg)).eval()


class CharTokenizer:
    """A byte-level stand-in for a Hugging Face tokenizer: one id per UTF-8 byte, EOS = 256."""

    eos_token_id = 256

    def __call__(self, texts, add_special_tokens=False):
        return {"input_ids": [list(t.encode("utf-8")) for t in texts]}

    def __len__(self) -> int:
        return 257

    def decode(self, ids) -> str:
        return bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")

    def batch_decode(self, rows):
        return [self.decode(r) for r in rows]


# ---------------------------------------------------------------------------------- BLEU / chrF

def test_bleu_and_chrf_equal_sacrebleu_on_fixed_strings():
    import sacrebleu

    hyps = ["Y dijo Dios: Sea la luz: y fué la luz.", "En el principio creó Dios los cielos", "la tierra"]
    refs = ["Y dijo Dios: Sea la luz: y fué la luz.", "EN el principio crió Dios los cielos y la tierra.",
            "Y la tierra estaba desordenada y vacía"]
    got = corpus_scores(hyps, refs)
    assert got["bleu"] == sacrebleu.corpus_bleu(hyps, [refs]).score
    assert got["chrf"] == sacrebleu.corpus_chrf(hyps, [refs]).score
    assert 0 < got["bleu"] < 100 and 0 < got["chrf"] < 100
    assert corpus_scores(refs, refs)["bleu"] == pytest.approx(100.0)


# ------------------------------------------------------------------------- log-likelihood scoring

@pytest.mark.parametrize("kwargs", [{}, {"logit_softcap": 5.0}])
def test_scoring_matches_log_softmax_of_model_logits_by_hand(kwargs):
    model = _model(**kwargs)
    ctx, cont = [5, 17, 42, 7], [99, 3, 250]
    logp = torch.log_softmax(model.logits(torch.tensor([ctx + cont])).double(), dim=-1)[0]
    by_hand = sum(float(logp[len(ctx) - 1 + i, tok]) for i, tok in enumerate(cont))
    greedy = all(int(logp[len(ctx) - 1 + i].argmax()) == tok for i, tok in enumerate(cont))
    pairs = [(ctx, cont), ([1, 2], [3]), (list(range(10, 30)), [8, 9])]  # the last one is cut from the left
    (lp, n, is_greedy), (lp1, n1, _), (lp2, _, _) = score_continuations(model, pairs, batch_size=2)
    assert lp == pytest.approx(by_hand, abs=1e-4) and n == 3 and is_greedy == greedy
    one = torch.log_softmax(model.logits(torch.tensor([[1, 2]])).double(), dim=-1)[0, -1, 3]
    assert lp1 == pytest.approx(float(one), abs=1e-4) and n1 == 1
    seq = list(range(10, 30))[-(24 + 1 - 2):] + [8, 9]   # seq_len + 1 tokens kept
    logp2 = torch.log_softmax(model.logits(torch.tensor([seq[:-1]])).double(), dim=-1)[0]
    assert lp2 == pytest.approx(float(logp2[-2, 8] + logp2[-1, 9]), abs=1e-4)


def test_multiple_choice_accuracy_and_companions_by_hand(tmp_path):
    model = _model(seq_len=64)
    tok = CharTokenizer()
    items = [{"query": "ab", "endings": ["cd", "xyz", "q"], "label": "B"},
             {"context": "hello", "choices": ["world", "there"], "gold": 0},
             {"ctx": "one two", "options": {"text": ["three", "four"]}, "answer": "1"}]
    path = tmp_path / "task.jsonl"
    path.write_text("".join(json.dumps(i) + "\n" for i in items))
    cfg = EvalConfig(tasks=["mine"], choice_items=10, choice_tasks={"mine": {"source": str(path)}})
    validate_eval(cfg)
    rows = {r["metric"]: r["value"] for r in choice.evaluate(model, tok, "mine", cfg, torch.autocast("cpu", enabled=False))}
    golds = [1, 0, 1]
    correct = correct_norm = 0
    nats = tokens = nbytes = 0.0
    for item, gold in zip(choice.load_items("mine", cfg), golds):
        ctx = list(item.context.encode())
        lps = []
        for c in item.choices:
            cont = list((" " + c).encode())
            logp = torch.log_softmax(model.logits(torch.tensor([ctx + cont])).double(), dim=-1)[0]
            lps.append(sum(float(logp[len(ctx) - 1 + i, t]) for i, t in enumerate(cont)))
        correct += max(range(len(lps)), key=lps.__getitem__) == gold
        correct_norm += max(range(len(lps)), key=lambda j: lps[j] / len(item.choices[j])) == gold
        nats -= lps[gold]
        tokens += len((" " + item.choices[gold]).encode())
        nbytes += len((" " + item.choices[gold]).encode())
    assert rows["n"] == 3 and rows["chance"] == pytest.approx((1 / 3 + 1 / 2 + 1 / 2) / 3)
    assert rows["acc"] == pytest.approx(correct / 3) and rows["acc_norm"] == pytest.approx(correct_norm / 3)
    assert rows["ce"] == pytest.approx(nats / tokens, rel=1e-5)
    assert rows["bpb"] == pytest.approx(nats / tokens / 0.6931471805599453, rel=1e-5)  # 1 byte per token


def test_choice_items_reject_malformed_records():
    with pytest.raises(UserError, match="gold"):
        choice.to_item({"context": "a", "choices": ["b", "c"], "gold": 5}, "x")
    with pytest.raises(UserError, match="needs context"):
        choice.to_item({"text": "a"}, "x")


# -------------------------------------------------------------------------- KV-cache decoding

@pytest.mark.parametrize("kwargs", [{}, {"qk_layernorm": True, "mlp": "swiglu", "logit_softcap": 3.0}])
def test_kv_cache_greedy_equals_full_recompute(kwargs):
    model = _model(seed=3, **kwargs)
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(0, VOCAB, (n,), generator=g).tolist() for n in (1, 5, 9, 20, 23)]
    eos = 299
    reference = [greedy_generate_nocache(model, p, 12, eos) for p in prompts]
    assert greedy_generate(model, prompts, 12, eos) == reference
    assert [len(r) for r in reference][-2:] == [4, 1]  # budgets capped by seq_len = 24
    # Stopping tokens end a row early, the other rows go on.
    stop = reference[2][3]
    with_stop = [greedy_generate_nocache(model, p, 12, eos, stop_ids=[stop]) for p in prompts]
    assert greedy_generate(model, prompts, 12, eos, stop_ids=[stop]) == with_stop
    assert len(with_stop[2]) <= 3 and stop not in with_stop[2]
    # Per-row budgets.
    assert greedy_generate(model, prompts, [0, 1, 2, 3, 4], eos) == [r[:b] for r, b in zip(reference, [0, 1, 2, 3, 4])]


def test_kv_cache_rejects_prompts_that_fill_the_context():
    with pytest.raises(ValueError, match="prompt lengths"):
        greedy_generate(_model(), [list(range(24))], 4, 299)


# ---------------------------------------------------------------------------- finetune protocol

@pytest.fixture(scope="module")
def bpe():
    from scaling_cli.data.sources import EMBEDDED_CORPUS
    from scaling_cli.data.tokenizer import train_bpe

    table = pd.read_parquet(EMBEDDED_CORPUS)
    return train_bpe(table["en"].head(400).tolist() + table["es"].head(400).tolist(), 300)


def test_finetune_trains_a_copy_and_leaves_the_model_untouched(bpe):
    model = _model(seq_len=96)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = EvalConfig(tasks=["translation"], finetune_steps=4, finetune_batch_size=4, finetune_lr=1e-2)
    tuned, info = finetune.finetune(model, bpe, cfg, torch.device("cpu"), torch.autocast("cpu", enabled=False))
    assert tuned is not model and info["steps"] == 4 and info["loss"] > 0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
    assert any(not torch.equal(before[k], v) for k, v in tuned.state_dict().items())
    again, _ = finetune.finetune(model, bpe, cfg, torch.device("cpu"), torch.autocast("cpu", enabled=False))
    assert all(torch.equal(a, b) for a, b in zip(tuned.state_dict().values(), again.state_dict().values()))  # seeded


def test_downstream_evals_rows_and_translation_metrics(bpe):
    model = _model(seq_len=96)
    cfg = EvalConfig(tasks=["translation", "translation_choice"], finetune_steps=2, finetune_batch_size=2,
                     translation={"n_examples": 3, "max_new_tokens": 5}, choice_items=4)
    rows = downstream_evals(model, bpe, cfg, torch.device("cpu"), torch.autocast("cpu", enabled=False))
    got = {(r["task"], r["metric"]): r["value"] for r in rows}
    assert got[("translation", "n")] == 3 and got[("translation_choice", "n")] == 4
    for key in [("translation", m) for m in ("bleu", "chrf", "ce", "bpb")] + [("translation_choice", "acc"),
                                                                             ("translation_choice", "ce"),
                                                                             ("finetune", "loss")]:
        assert key in got and got[key] >= 0
    assert downstream_evals(model, bpe, EvalConfig(), torch.device("cpu"), None) == []


# --------------------------------------------------------------------------------------- config

def test_eval_config_coerces_nested_dicts_and_validates():
    cfg = EvalConfig(**{"tasks": ["translation"], "translation": {"direction": "es-en"},
                        "choice_tasks": {"x": {"source": "a.jsonl"}}})
    assert cfg.translation.direction == "es-en" and cfg.choice_tasks["x"].split == "train"
    validate_eval(cfg)
    for bad, field in ((dict(tasks=["nope"]), "eval.tasks"), (dict(translation={"direction": "en-fr"}), "direction"),
                       (dict(finetune_steps=-1), "finetune_steps"), (dict(tasks=["translation", "translation"]), "twice")):
        with pytest.raises(UserError, match=field):
            validate_eval(EvalConfig(**bad))


def test_default_eval_group_is_on_and_none_turns_it_off():
    from scaling_cli.compose import compose

    cfg = compose()
    assert list(cfg.eval.tasks) == ["translation", "next_verse", "translation_choice"]
    assert cfg.eval.translation.n_examples == 32 and cfg.eval.translation.max_new_tokens == 48
    assert cfg.eval.choice_items == 100 and cfg.eval.finetune_steps > 0
    assert list(compose(["eval=none"]).eval.tasks) == []
    assert compose(["eval=full"]).eval.choice_items > 100


def test_shipped_tasks_are_rebuilt_byte_for_byte(tmp_path):
    from scaling_cli.data import build_tasks
    from scaling_cli.data.sources import EMBEDDED_CORPUS

    tasks = build_tasks.build(pd.read_parquet(EMBEDDED_CORPUS))
    for path in build_tasks.write(tasks, tmp_path):
        assert path.read_bytes() == (build_tasks.CORPUS_DIR / path.name).read_bytes()
    test_refs = set(pd.read_parquet(EMBEDDED_CORPUS).query("split == 'test'")["ref"])
    for name in ("next_verse", "translation_choice"):
        items = choice.load_items(name, EvalConfig())
        assert len(items) == build_tasks.MAX_ITEMS and all(len(i.choices) == 4 for i in items)
        assert {i["ref"] for i in tasks[name]} <= test_refs  # held-out chapters only


# ------------------------------------------------------------------------------- end to end

def test_tiny_sweep_records_bleu_chrf_and_accuracy(tmp_path):
    from scaling_cli.cli import main
    from scaling_cli.store import RunStore, load_runs

    root = tmp_path / "runs"
    overrides = ["sweep=single", *TINY_OVERRIDES, "model.seq_len=128", f"store.root={root}", "eval=default",
                 "eval.translation.n_examples=4", "eval.translation.max_new_tokens=8", "eval.choice_items=8",
                 "eval.finetune_steps=2", "eval.finetune_batch_size=4"]
    assert main(["sweep", "--no-progress", *overrides]) == 0
    (run_id,) = RunStore(str(root)).run_ids()
    evals = pd.read_parquet(Path(root) / run_id / "evals.parquet")
    final = evals[evals["step"] == evals["step"].max()]
    metrics = set(zip(final["task"], final["metric"]))
    assert {("translation", "bleu"), ("translation", "chrf"), ("translation", "ce"), ("next_verse", "acc"),
            ("translation_choice", "acc"), ("next_verse", "ce"), ("val", "loss")} <= metrics
    assert set(evals.loc[evals["step"] < evals["step"].max(), "task"]) == {"val"}  # downstream at the end only
    status = RunStore(str(root)).status(run_id)
    assert 0 < status["downstream_eval_s"] < status["elapsed_s"]
    runs = load_runs(str(root))
    assert {"translation_bleu", "translation_chrf", "next_verse_acc", "translation_choice_acc_norm"} <= set(runs.columns)
