"""Datasets of the shipped lm-eval tasks: scaling-cli's own multiple-choice JSONL files, read from
the installed package (lm-eval's `custom_dataset` hook, so no path in the YAML and no hub)."""

from __future__ import annotations


def _items(name: str):
    import datasets

    from scaling_cli.evals.choice import _read_jsonl, shipped_tasks, to_item

    path = shipped_tasks()[name]
    items = [to_item(r, f"{path} item {i}") for i, r in enumerate(_read_jsonl(path))]
    rows = [{"context": it.context, "choices": it.choices, "gold": it.gold} for it in items]
    return {"test": datasets.Dataset.from_list(rows)}


def next_verse(**kwargs):
    return _items("next_verse")


def translation_choice(**kwargs):
    return _items("translation_choice")
