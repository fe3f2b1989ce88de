"""Build the shipped multiple-choice tasks from the held-out test split of the embedded corpus.

    python -m scaling_cli.data.build_tasks            # rewrites scaling_cli/data/corpus/*.jsonl

Both tasks use only `split == "test"` chapters (never seen in pretraining nor in finetuning) and
the lm-evaluation-harness-like layout, one JSON object per line:

    {"id": ..., "context": ..., "choices": [4 strings], "gold": index, ...}

- next_verse.jsonl: the context is one verse; the choices are the verse that follows it and 3
  other verses of the same chapter, all in the same language (alternately English and Spanish).
- translation_choice.jsonl: the context is the translation prompt "English: <verse>\\nSpanish:";
  the choices are the verse's Reina-Valera translation and those of 3 other verses of the chapter.

Distractors come from the same chapter so that topic words do not give the answer away. The
output is deterministic: a fixed seed (SEED) orders items and places the gold answer, and the
files are written with sorted keys, so rebuilding gives identical bytes.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

CORPUS_DIR = Path(__file__).parent / "corpus"

# Seed of every random choice below (distractors, gold position, item order).
SEED = 20240206

# Choices per item (4, as in most lm-evaluation-harness multiple-choice tasks).
N_CHOICES = 4

# Items kept per task file: enough for any eval size used in practice (eval.choice_items, 100 by
# default) while keeping each shipped file well under 1 MB.
MAX_ITEMS = 1000

# Prompt of translation_choice; matches the default eval.translation.prompt for en-es.
TRANSLATION_PROMPT = "English: {src}\nSpanish:"


def _items_for_chapter(verses, rng: np.random.Generator, make) -> list[dict]:
    """One item per verse position `make` accepts, with distractors from the same chapter."""
    out = []
    n = len(verses)
    for i in range(n):
        built = make(i)
        if built is None:
            continue
        context, gold_index, extra = built
        pool = [j for j in range(n) if j not in (i, gold_index)]
        if len(pool) < N_CHOICES - 1:
            continue
        distractors = list(rng.choice(pool, size=N_CHOICES - 1, replace=False))
        order = [gold_index, *distractors]
        rng.shuffle(order)
        out.append({"context": context, "order": [int(j) for j in order], "gold": order.index(gold_index), **extra})
    return out


def build(table) -> dict[str, list[dict]]:
    """Task name -> items, from the corpus table (columns ref, book_index, chapter, verse, split, en, es)."""
    rng = np.random.default_rng(SEED)
    test = table[table["split"] == "test"].sort_values(["book_index", "chapter", "verse"])
    tasks: dict[str, list[dict]] = {"next_verse": [], "translation_choice": []}
    for k, (_, chapter) in enumerate(test.groupby(["book_index", "chapter"], sort=True)):
        refs, en, es = chapter["ref"].tolist(), chapter["en"].tolist(), chapter["es"].tolist()
        for item in _items_for_chapter(refs, rng, lambda i: None if i + 1 >= len(refs) else (None, i + 1, {})):
            lang = ("en", "es")[(k + len(tasks["next_verse"])) % 2]  # alternate languages
            texts = en if lang == "en" else es
            i = item["order"][item["gold"]] - 1
            tasks["next_verse"].append({"id": f"next_verse/{refs[i]}", "ref": refs[i], "lang": lang,
                                        "context": texts[i], "choices": [texts[j] for j in item["order"]],
                                        "gold": item["gold"]})
        for item in _items_for_chapter(refs, rng, lambda i: (None, i, {})):
            i = item["order"][item["gold"]]
            tasks["translation_choice"].append({"id": f"translation_choice/{refs[i]}", "ref": refs[i], "lang": "en-es",
                                                "context": TRANSLATION_PROMPT.format(src=en[i]),
                                                "choices": [es[j] for j in item["order"]], "gold": item["gold"]})
    for name, items in tasks.items():
        order = rng.permutation(len(items))  # a prefix of the file is a random sample of the test split
        tasks[name] = [items[j] for j in order[:MAX_ITEMS]]
    return tasks


def write(tasks: dict[str, list[dict]], folder: Path = CORPUS_DIR) -> list[Path]:
    paths = []
    for name, items in tasks.items():
        path = folder / f"{name}.jsonl"
        text = "".join(json.dumps(item, ensure_ascii=False, sort_keys=True) + "\n" for item in items)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
        paths.append(path)
    return paths


def main() -> None:
    import pandas as pd

    from scaling_cli.data.sources import EMBEDDED_CORPUS

    tasks = build(pd.read_parquet(EMBEDDED_CORPUS))
    for path in write(tasks):
        print(f"wrote {path} ({sum(1 for _ in path.open(encoding='utf-8'))} items)")


if __name__ == "__main__":
    main()
