"""Tokenizers in Hugging Face format.

`data.tokenizer: bpe` trains a byte-level BPE (the GPT-2 recipe: byte alphabet, so nothing is
ever out of vocabulary) with the `tokenizers` library on the training documents, to exactly
`model.vocab_size` entries, and wraps it as a `PreTrainedTokenizerFast`. Anything else is
handed to `transformers.AutoTokenizer` (hub name or local folder).
"""

from __future__ import annotations

from pathlib import Path

from scaling_cli.errors import UserError

EOS = "<|endoftext|>"


def train_bpe(texts: list[str], vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token=EOS)


def load_or_train(name: str, texts: list[str], vocab_size: int, cache: Path):
    """The tokenizer for `data.tokenizer`; a trained BPE is saved in `cache` and reused."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    if name == "bpe":
        if (cache / "tokenizer.json").exists():
            return PreTrainedTokenizerFast.from_pretrained(str(cache))
        tokenizer = train_bpe(texts, vocab_size)
        tmp = cache.with_name(cache.name + ".tmp")
        tokenizer.save_pretrained(str(tmp))
        tmp.replace(cache)
        return tokenizer
    try:
        tokenizer = AutoTokenizer.from_pretrained(name)
    except Exception as err:  # hub and filesystem errors alike
        raise UserError(f"data.tokenizer: could not load {name!r} ({type(err).__name__}); "
                        "use 'bpe' or a local tokenizer folder") from err
    if len(tokenizer) > vocab_size:
        raise UserError(f"model.vocab_size: {vocab_size} is smaller than tokenizer {name!r} "
                        f"({len(tokenizer)} tokens); set model.vocab_size={len(tokenizer)}")
    if tokenizer.eos_token_id is None:
        raise UserError(f"data.tokenizer: {name!r} has no EOS token to separate documents")
    return tokenizer
