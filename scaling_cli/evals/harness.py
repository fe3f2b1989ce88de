"""lm-evaluation-harness tasks on a proxy during the sweep (`eval.harness`; the `lm-eval` extra).

    rows = evaluate(model, tokenizer, cfg, autocast)   # [{"task", "metric", "value"}, ...]

The proxy is converted in memory to its transformers twin (scaling_cli/export/hf.py, checked
against our logits) and handed with its tokenizer to lm-eval's own `HFLM`, so the numbers are
exactly what `lm-eval run --model hf` gives for the exported checkpoint. Each task's metrics
become evals rows like our own tasks' (task = the lm-eval task name, metric = 'acc', 'acc_norm',
... with a non-default filter appended as '<metric>_<filter>'), plus 'n' (documents scored) and
'chance' (mean 1/choices, multiple-choice tasks), so `fit` sees `<task>_acc` and its chance level
like any other downstream metric; one row (task 'harness', metric 'seconds') times the whole call.

Shipped tasks (harness_tasks/, registered through TaskManager's include_path): scaling_next_verse
and scaling_translation_choice, our two multiple-choice tasks over the JSONL files in the package.
When only shipped tasks are named, lm-eval's ~15k built-in task configs are not indexed (about 20 s
saved per process) and nothing can reach the network: the data come from the package, the model
and tokenizer are objects in memory. Built-in tasks (hellaswag, ...) load their datasets through
`datasets` as lm-eval always does.
"""

from __future__ import annotations

import contextlib
import io
import logging
import time
from functools import lru_cache
from pathlib import Path
from typing import Any

from scaling_cli.errors import UserError

HARNESS_TASKS_DIR = Path(__file__).resolve().parent / "harness_tasks"
INSTALL_HINT = "pip install 'scaling-cli[lm-eval]'"


def shipped_harness_tasks() -> list[str]:
    """Names of the lm-eval tasks shipped in harness_tasks/ (file name = task name)."""
    return sorted(p.stem for p in HARNESS_TASKS_DIR.glob("*.yaml"))


def require_lm_eval() -> None:
    try:
        import lm_eval  # noqa: F401
    except ImportError as err:
        raise UserError(f"eval.harness: lm-evaluation-harness is not installed; {INSTALL_HINT}") from err


@lru_cache(maxsize=2)
def task_manager(include_defaults: bool):
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=str(HARNESS_TASKS_DIR), include_defaults=include_defaults)


def _manager_for(names) -> Any:
    shipped = set(shipped_harness_tasks())
    return task_manager(include_defaults=any(name not in shipped for name in names))


def check_tasks(names) -> None:
    """UserError unless lm-eval is installed and knows every task name (run before training, so a
    typo fails the sweep at once rather than each run at its first harness eval)."""
    names = list(names)
    if not names:
        return
    require_lm_eval()
    known = set(_manager_for(names).all_tasks)
    unknown = [name for name in names if name not in known]
    if unknown:
        raise UserError(f"eval.harness: unknown lm-eval task(s) {unknown}; use a shipped task "
                        f"({', '.join(shipped_harness_tasks())}) or a name from `lm-eval ls tasks`")


def _load_tasks(names: list[str]) -> dict:
    manager = _manager_for(names)
    if hasattr(manager, "load"):  # lm-eval >= 0.4.10; get_task_dict before (deprecated since)
        return manager.load(names)
    from lm_eval.tasks import get_task_dict

    return get_task_dict(names, manager)


def _leaf_tasks(task_dict: Any) -> list:
    """Every Task object in what _load_tasks returned (a flat, grouped or {'tasks', 'groups'} dict)."""
    from lm_eval.api.task import Task

    if isinstance(task_dict, Task):
        return [task_dict]
    if isinstance(task_dict, dict):
        return [t for value in task_dict.values() for t in _leaf_tasks(value)]
    return []


@contextlib.contextmanager
def _quiet():
    """lm-eval logs every request batch and draws tqdm bars on stderr, and transformers warns about
    texts longer than the proxy's context (lm-eval cuts them); keep errors only."""
    loggers = [logging.getLogger(name) for name in ("lm_eval", "transformers")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def _is_multiple_choice(task: Any) -> bool:
    return getattr(task, "OUTPUT_TYPE", None) == "multiple_choice"


def _fits(task: Any, doc: Any, tokenizer: Any, max_length: int) -> bool:
    """Our scorer's rule (choice.fits) for one lm-eval document. lm-eval itself cannot score a
    choice longer than the window (it stops with an assertion) and would score a nearly
    context-free one."""
    from scaling_cli.evals.choice import MIN_CONTEXT_TOKENS, fits
    from scaling_cli.evals.tokens import encode

    delimiter = task.config.target_delimiter
    continuations = encode(tokenizer, [delimiter + str(c) for c in task.doc_to_choice(doc)])
    text = task.doc_to_text(doc)
    context = encode(tokenizer, [text])[0] if isinstance(text, str) else [0] * MIN_CONTEXT_TOKENS
    return fits(context, continuations, max_length)


def select_documents(tasks: list, tokenizer: Any, max_length: int, limit: int | None) -> dict[str, list[int]]:
    """Indices of the documents each task scores (lm-eval's `samples`): the first `limit` (all when
    None) in the task's order; for multiple-choice tasks the first `limit` that fit the model's
    context (`_fits`), so both scorers see the same items and a short proxy never trips lm-eval."""
    chosen = {}
    for task in tasks:
        docs = task.eval_docs
        if not _is_multiple_choice(task):
            chosen[task.config.task] = list(range(len(docs) if limit is None else min(limit, len(docs))))
            continue
        keep = []
        for i, doc in enumerate(docs):
            if limit is not None and len(keep) == limit:
                break
            if _fits(task, doc, tokenizer, max_length):
                keep.append(i)
        chosen[task.config.task] = keep
    return chosen


def _chance(task: Any, indices: list[int]) -> float | None:
    """Mean 1/len(choices) over the documents scored, for multiple-choice tasks."""
    if not _is_multiple_choice(task) or not indices:
        return None
    docs = task.eval_docs
    return sum(1.0 / len(task.doc_to_choice(docs[i])) for i in indices) / len(indices)


def result_rows(results: dict, samples: dict[str, list[int]], chances: dict[str, float | None]) -> list[dict]:
    """lm-eval's results dict -> evals rows, with n = documents scored (from `samples`: lm-eval's
    own 'n-samples' ignores them before 0.4.13). Keys are 'metric,filter'; stderr values that were
    not computed ('N/A': bootstrap_iters=0) and non-metric keys (alias, name, sample_len) are skipped."""
    rows = []
    for task, metrics in results.get("results", {}).items():
        for key, value in metrics.items():
            if "," not in key or not isinstance(value, (int, float)) or isinstance(value, bool):
                continue
            metric, _, filter_name = key.partition(",")
            name = metric if filter_name in ("", "none") else f"{metric}_{filter_name}"
            rows.append({"task": task, "metric": name, "value": float(value)})
        if task in samples:
            rows.append({"task": task, "metric": "n", "value": float(len(samples[task]))})
        if chances.get(task) is not None:
            rows.append({"task": task, "metric": "chance", "value": float(chances[task])})
    return rows


def evaluate(model: Any, tokenizer: Any, cfg: Any, autocast: Any = None) -> list[dict]:
    """Run cfg.harness through lm-eval on `model` (a GPT); evals rows. The model is not modified."""
    names = list(cfg.harness)
    if not names:
        return []
    require_lm_eval()
    from lm_eval.evaluator import evaluate as lm_evaluate
    from lm_eval.models.huggingface import HFLM

    from scaling_cli.export.hf import hf_tokenizer, special_ids, to_hf

    started = time.perf_counter()
    tok = hf_tokenizer(tokenizer, model.cfg.seq_len)
    hf_model = to_hf(model, special_ids(tok))
    seq_len = model.cfg.seq_len
    with _quiet():
        lm = HFLM(pretrained=hf_model, tokenizer=tok, batch_size=cfg.batch_size, max_length=seq_len)
        tasks = _load_tasks(names)
        leaves = _leaf_tasks(tasks)
        for task in leaves:  # what lm-eval's simple_evaluate does for tasks without a default
            if task.get_config("num_fewshot") is None:
                task.set_config(key="num_fewshot", value=0)
        samples = select_documents(leaves, tok, seq_len, cfg.harness_limit or None)
        # lm-eval's evaluate, not simple_evaluate: the latter reseeds the global RNGs mid-training
        # and collects environment info (seconds of subprocesses) on every call.
        with autocast if autocast is not None else contextlib.nullcontext():
            results = lm_evaluate(lm=lm, task_dict=tasks, samples=samples, bootstrap_iters=0, log_samples=False)
        chances = {task.config.task: _chance(task, samples[task.config.task]) for task in leaves}
    rows = result_rows(results or {}, samples, chances)
    return rows + [{"task": "harness", "metric": "seconds", "value": time.perf_counter() - started}]
