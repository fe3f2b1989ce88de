"""Datasets of the shipped lm-eval tasks: scaling-cli's own multiple-choice JSONL files, read from
the installed package (lm-eval's `custom_dataset` hook: no path in the YAML, no hub).

Run by the stock CLI (`lm-eval run --model hf --model_args pretrained=OUT ...`), lm-eval passes the
model arguments here as metadata: with `pretrained`, only the items whose choices fit that model's
context window are kept (scaling_cli.evals.choice.fits, our scorer's rule), since lm-eval stops
with an assertion on a choice longer than the window, and proxies have short ones. Inside a sweep
(eval.harness) no metadata comes and scaling_cli/evals/harness.py selects the same items itself.
"""

from __future__ import annotations


def _items(name: str, pretrained: str | None = None, max_length: int | None = None, **_):
    import datasets

    from scaling_cli.evals.choice import _read_jsonl, fits, shipped_tasks, to_item
    from scaling_cli.evals.tokens import encode

    path = shipped_tasks()[name]
    items = [to_item(r, f"{path} item {i}") for i, r in enumerate(_read_jsonl(path))]
    if pretrained:
        from transformers import AutoConfig, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(pretrained)
        window = int(max_length or AutoConfig.from_pretrained(pretrained).max_position_embeddings)
        contexts = encode(tokenizer, [it.context for it in items])
        items = [it for it, ctx in zip(items, contexts)
                 if fits(ctx, encode(tokenizer, [" " + c for c in it.choices]), window)]
    rows = [{"context": it.context, "choices": it.choices, "gold": it.gold} for it in items]
    return {"test": datasets.Dataset.from_list(rows)}


def next_verse(**metadata):
    return _items("next_verse", **metadata)


def translation_choice(**metadata):
    return _items("translation_choice", **metadata)
