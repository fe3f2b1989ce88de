"""Schema of the Hydra `eval` group: which downstream tasks run, how big, how often, and the
pretrain-then-finetune protocol (Isik et al. 2024) applied before them.

    eval=none        validation loss only
    eval=default     translation BLEU/chrF + two multiple-choice tasks at CPU-proxy sizes
    eval=full        the same at GPU-proxy sizes
    eval.harness=[scaling_next_verse]   lm-evaluation-harness tasks, beside or instead of those

`tasks` names what runs: 'translation' (greedy decoding scored with sacrebleu) and any number of
multiple-choice tasks, each either shipped in scaling_cli/data/corpus/<name>.jsonl or declared in
`choice_tasks` (a local JSONL or a Hugging Face hub dataset). `validate_eval` checks what types
cannot; the trainer builds `EvalConfig(**resolved_dict)`, so nested dicts are coerced back into
their dataclasses in `__post_init__`, which also validates.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from scaling_cli.errors import UserError

# Language codes of the shipped corpus and the names the prompt template uses for them.
LANGUAGE_NAMES = {"en": "English", "es": "Spanish"}

TRANSLATION_TASK = "translation"


@dataclass
class TranslationConfig:
    """Translation of the held-out test split, scored with sacrebleu (corpus BLEU and chrF)."""

    direction: str = "en-es"
    """'en-es' or 'es-en': source and target language of the shipped corpus."""
    prompt: str = "{src_lang}: {src}\n{tgt_lang}:"
    """Prompt template; {src} is the source verse, {src_lang}/{tgt_lang} the language names. The
    reference is scored (and the finetuning target written) as ' ' + target after the prompt."""
    n_examples: int = 32
    """Test verses translated (the first that fit the context, in a fixed hashed order)."""
    max_new_tokens: int = 48
    """Greedy decoding budget per verse (also capped by the model's context length)."""
    source: str = "embedded"
    """'embedded' (the shipped Bible table) or a .parquet/.csv/.jsonl with split, en, es columns."""


@dataclass
class ChoiceTaskConfig:
    """Where a multiple-choice task's items come from (layout: context, choices, gold index)."""

    source: str = ""
    """A local .jsonl/.json file (read with datasets' json builder) or a hub dataset name."""
    hub_config: Optional[str] = None
    """Dataset configuration name, for hub sources."""
    split: str = "train"
    """Split to read (a local JSONL has only 'train'; hub tasks usually 'validation' or 'test')."""
    delimiter: str = " "
    """Inserted between the context and every choice (lm-evaluation-harness' target_delimiter)."""


@dataclass
class EvalConfig:
    tasks: List[str] = field(default_factory=list)
    """Downstream tasks to run at the end of every run (and every `interval` steps): 'translation'
    and/or multiple-choice task names (shipped: next_verse, translation_choice)."""
    interval: int = 0
    """Also run them every this many steps (0: only at the end of the run)."""
    finetune_steps: int = 0
    """Pretrain-then-finetune (Isik et al.): optimizer steps on translation pairs of the train split,
    on a copy of the model, before the downstream evals (0: evaluate the pretrained model)."""
    finetune_lr: float = 1e-3
    """Constant learning rate of the finetuning AdamW (no weight decay), after a 10% warmup."""
    finetune_batch_size: int = 16
    """Translation pairs per finetuning step."""
    translation: TranslationConfig = field(default_factory=TranslationConfig)
    choice_items: int = 100
    """Items per multiple-choice task (a fixed prefix of the task file, whose order is shuffled)."""
    choice_tasks: Dict[str, Any] = field(default_factory=dict)
    """Extra multiple-choice tasks: name -> {source, hub_config, split, delimiter} (ChoiceTaskConfig;
    typed Any so that `+eval.choice_tasks.NAME={source:...}` can add one on the command line)."""
    harness: List[str] = field(default_factory=list)
    """lm-evaluation-harness task names (needs the `lm-eval` extra), run through lm-eval on the model
    converted to its transformers twin at the same steps as `tasks` (after finetuning, if any); rows
    land in the evals table as <task>_<metric> (scaling_cli/evals/harness.py). Shipped, offline:
    scaling_next_verse, scaling_translation_choice; any lm-eval task name also works."""
    harness_limit: int = 100
    """Documents per lm-eval task (the first N: lm-eval's `limit`); 0 scores every document."""
    batch_size: int = 32
    """Sequences per forward pass when scoring and decoding."""
    seed: int = 0
    """Seeds the finetuning data order (evaluation itself is deterministic)."""

    def __post_init__(self) -> None:
        if isinstance(self.translation, dict):
            self.translation = TranslationConfig(**self.translation)
        tasks = {}
        for name, spec in dict(self.choice_tasks or {}).items():
            if isinstance(spec, str):
                spec = {"source": spec}
            if isinstance(spec, dict):
                unknown = set(spec) - set(ChoiceTaskConfig.__dataclass_fields__)
                if unknown:
                    raise UserError(f"eval.choice_tasks.{name}: unknown key(s) {sorted(unknown)}; use "
                                    f"{', '.join(ChoiceTaskConfig.__dataclass_fields__)}")
                spec = ChoiceTaskConfig(**spec)
            tasks[name] = spec
        self.choice_tasks = tasks
        self.tasks = list(self.tasks)
        self.harness = list(self.harness)
        # The trainer builds this dataclass before its first step, so a bad eval config fails the
        # run then, not after training (plan-time validation needs config.validate to call this).
        validate_eval(self)


def _require(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise UserError(f"eval.{key}: {message}")


def validate_eval(cfg) -> None:
    """Checks types cannot express; raises UserError naming the field. Accepts the dataclass or a
    DictConfig of the `eval` group."""
    from scaling_cli.evals.choice import shipped_tasks

    shipped = shipped_tasks()
    declared = set(cfg.choice_tasks or {})
    for name in cfg.tasks:
        _require(name == TRANSLATION_TASK or name in shipped or name in declared, "tasks",
                 f"unknown task {name!r}; use 'translation', a shipped task ({', '.join(sorted(shipped))}) "
                 "or declare it under eval.choice_tasks")
    _require(len(set(cfg.tasks)) == len(cfg.tasks), "tasks", f"a task is listed twice in {list(cfg.tasks)}")
    harness = list(cfg.harness or [])
    _require(len(set(harness)) == len(harness), "harness", f"a task is listed twice in {harness}")
    both = sorted(set(harness) & set(cfg.tasks))
    _require(not both, "harness", f"{both} also in eval.tasks: their rows would share names; keep one")
    _require(cfg.harness_limit >= 0, "harness_limit", f"must be >= 0 (0: every document), got {cfg.harness_limit}")
    if harness:
        import importlib.util

        _require(importlib.util.find_spec("lm_eval") is not None, "harness",
                 "lm-evaluation-harness is not installed; pip install 'scaling-cli[lm-eval]'")
    _require(cfg.interval >= 0, "interval", f"must be >= 0 (0: end of run only), got {cfg.interval}")
    _require(cfg.finetune_steps >= 0, "finetune_steps", f"must be >= 0, got {cfg.finetune_steps}")
    _require(cfg.finetune_lr > 0, "finetune_lr", f"must be > 0, got {cfg.finetune_lr}")
    _require(cfg.finetune_batch_size > 0, "finetune_batch_size", f"must be > 0, got {cfg.finetune_batch_size}")
    _require(cfg.choice_items > 0, "choice_items", f"must be > 0, got {cfg.choice_items}")
    _require(cfg.batch_size > 0, "batch_size", f"must be > 0, got {cfg.batch_size}")
    t = cfg.translation
    pair = str(t.direction).split("-")
    _require(len(pair) == 2 and pair[0] != pair[1] and all(p in LANGUAGE_NAMES for p in pair),
             "translation.direction", f"got {t.direction!r}; use 'en-es' or 'es-en'")
    _require("{src}" in t.prompt, "translation.prompt", f"must contain {{src}}, got {t.prompt!r}")
    _require(t.n_examples > 0, "translation.n_examples", f"must be > 0, got {t.n_examples}")
    _require(t.max_new_tokens > 0, "translation.max_new_tokens", f"must be > 0, got {t.max_new_tokens}")
    for name, spec in (cfg.choice_tasks or {}).items():
        _require(bool(spec.source), f"choice_tasks.{name}.source", "name a local .jsonl file or a hub dataset")
