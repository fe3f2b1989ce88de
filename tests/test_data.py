"""Tests for scaling_cli/data/: the shipped corpus, its builder's OSIS parsing, document sources,
tokenization with its cache, packing and the resumable batch order.

    pytest tests/test_data.py

prepare() runs on the embedded corpus at vocab 512 (the size TINY_OVERRIDES trains with), in the
session-wide cache from conftest.py, so the BPE is trained at most once per test session.
"""

from __future__ import annotations

import json
import time

import numpy as np
import pandas as pd
import pytest
import torch

from scaling_cli.config import DataConfig
from scaling_cli.data.build_corpus import HELD_OUT_SHARE, chapter_split, osis_to_text, parse_verses
from scaling_cli.data.packing import BatchOrder, PackedSequences
from scaling_cli.data.prepare import prepare
from scaling_cli.data.sources import EMBEDDED_CORPUS, load_documents
from scaling_cli.errors import UserError


@pytest.fixture(scope="module", autouse=True)
def _datasets_cache(tmp_path_factory):
    """Keep Hugging Face `datasets` caches out of the user's home (module scope, so that the
    module-scoped `prepared` fixture below reads the corpus with it too)."""
    import datasets

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path_factory.mktemp("hf-datasets")))
        yield


# ------------------------------------------------------------------ the shipped corpus

@pytest.fixture(scope="module")
def corpus() -> pd.DataFrame:
    return pd.read_parquet(EMBEDDED_CORPUS)


def test_corpus_shape_and_columns(corpus):
    assert len(corpus) >= 30000
    assert list(corpus.columns) == ["ref", "book", "book_index", "chapter", "verse", "split", "en", "es"]
    assert corpus["ref"].is_unique
    assert (corpus["ref"] == corpus["book"] + " " + corpus["chapter"].astype(str) + ":"
            + corpus["verse"].astype(str)).all()
    assert corpus["book"].nunique() == 66  # verses kept only where both translations have them


def test_corpus_has_no_empty_or_marked_up_text(corpus):
    for lang in ("en", "es"):
        text = corpus[lang]
        assert text.notna().all() and (text.str.strip() != "").all(), lang
        assert not text.str.contains("<", regex=False).any(), lang  # OSIS tags stripped
        assert not text.str.contains("  ", regex=False).any(), lang  # whitespace collapsed


def test_corpus_splits_are_by_chapter(corpus):
    assert set(corpus["split"]) == {"train", "validation", "test"}
    splits_per_chapter = corpus.groupby(["book", "chapter"])["split"].nunique()
    assert (splits_per_chapter == 1).all()  # no chapter leaks across splits
    # the split is the stable hash of (book, chapter), so a rebuild reproduces it
    expected = [chapter_split(b, c) for b, c in zip(corpus["book"], corpus["chapter"])]
    assert (corpus["split"] == expected).all()
    chapters = corpus.drop_duplicates(["book", "chapter"])["split"].value_counts(normalize=True)
    for split, share in HELD_OUT_SHARE.items():
        assert share / 2 < chapters[split] < share * 2, split


def test_corpus_words_are_not_glued(corpus):
    genesis = corpus.set_index("ref").loc["Genesis 1:1"]
    assert genesis["en"] == "In the beginning, God created the heavens and the earth."
    assert genesis["es"] == "EN el principio crió Dios los cielos y la tierra."
    assert corpus.set_index("ref").loc["John 3:16", "en"].startswith("For God so loved the world, that he gave "
                                                                      "his only born Son,")
    assert not corpus["en"].str.contains("Godcreated|bornSon", regex=True).any()
    # a word element glued to a capitalised neighbour shows up as a lower/upper-case pair
    assert not corpus["en"].str.contains(r"[a-z][A-Z]", regex=True).any()


def test_corpus_keeps_all_of_psalm_119(corpus):
    assert (corpus["book"] == "Psalms").sum() > 0
    psalm = corpus[(corpus["book"] == "Psalms") & (corpus["chapter"] == 119)]
    assert sorted(psalm["verse"]) == list(range(1, 177))


# ------------------------------------------------------------------ build_corpus parsing

@pytest.mark.parametrize("markup, text", [
    ("<w>God</w><w>created</w>", "God created"),
    ("only born<w>Son</w>", "only born Son"),
    ("<w>Son</w>word", "Son word"),
    ('<w lemma="strong:H0430">God</w><w lemma="strong:H0559">said</w>', "God said"),
    ("<w>In</w> <w>the</w> <w>beginning</w>, <w>God</w><w>created</w> <w>the</w> <w>heavens</w>."
     '<milestone type="line"/>', "In the beginning, God created the heavens."),
    ("<w>God’s</w> <w>Spirit</w>", "God’s Spirit"),
    ('light<note type="x-footnote">Or, <w>brightness</w>\nsee v. 3</note> shone', "light shone"),
    ('<w>the</w><note n="a">x</note><note n="b">y</note> <w>earth</w>', "the earth"),
    ("  <lg/> <w>a</w>   b  ", "a b"),
    ("<w>los perfectos</w> <w>de camino</w>;", "los perfectos de camino;"),
])
def test_osis_to_text(markup, text):
    assert osis_to_text(markup) == text


FAKE_DUMP = """\
Genesis 1:1: <w>In</w> <w>the</w> <w>beginning</w>, <w>God</w><w>created</w> <w>the</w> <w>heavens</w>.<milestone type="line"/>
Genesis 1:2: <w>The</w> <w>earth</w> <w>was</w> <w>formless</w>.
(engWEB2015eb)
A Psalm by David.  Psalms 3:1: <w>Yahweh</w>, how <w>my</w> adversaries <w>have</w> increased!
 <w>HE</w>   Psalms 119:33: <w>Teach</w> me, <w>Yahweh</w>.
A praise psalm by David.  Esther (Greek) 1:1: [In the second year of the reign]
I Samuel 2:3: <w>Talk</w> no more.
1 John 1:1: <w>That</w> which was from the beginning
Genesis 1:3: <note type="x">only a note</note>
Genesis 2:1: <w>The</w> <w>heavens</w>.
"""


def test_parse_verses_on_a_diatheke_dump():
    table = parse_verses(FAKE_DUMP)
    assert list(table.columns) == ["book", "book_index", "chapter", "verse", "text"]
    rows = list(table.itertuples(index=False, name=None))
    assert rows == [
        ("Genesis", 0, 1, 1, "In the beginning, God created the heavens."),
        ("Genesis", 0, 1, 2, "The earth was formless."),
        ("Psalms", 1, 3, 1, "Yahweh, how my adversaries have increased!"),
        ("Psalms", 1, 119, 33, "Teach me, Yahweh."),
        ("Esther (Greek)", 2, 1, 1, "[In the second year of the reign]"),
        ("I Samuel", 3, 2, 3, "Talk no more."),
        ("1 John", 4, 1, 1, "That which was from the beginning"),
        # Genesis 1:3 held only a note: dropped
        ("Genesis", 0, 2, 1, "The heavens."),
    ]


def test_parse_verses_heading_without_punctuation():
    table = parse_verses("ALEPH  Psalms 119:1: <w>Blessed</w> <w>are</w> <w>those</w>\n")
    assert list(table.itertuples(index=False, name=None)) == [("Psalms", 0, 119, 1, "Blessed are those")]


def test_chapter_split_is_stable_and_valid():
    assert chapter_split("Genesis", 1) == chapter_split("Genesis", 1) == "train"
    assert {chapter_split("Psalms", c) for c in range(1, 151)} == {"train", "validation", "test"}


# ------------------------------------------------------------------ sources

TEXTS = [f"document number {i} about {'things ' * (i % 5)}".strip() for i in range(40)]


def _check_documents(docs, expected):
    assert sorted(docs.train + docs.validation) == sorted(expected)
    assert docs.train and docs.validation
    assert not set(docs.train) & set(docs.validation)


def test_load_txt_one_document_per_line(tmp_path):
    path = tmp_path / "docs.txt"
    path.write_text("\n".join(TEXTS[:20]) + "\n\n   \n" + "\n".join(TEXTS[20:]) + "\n")  # blank lines dropped
    docs = load_documents(DataConfig(source=str(path)))
    _check_documents(docs, TEXTS)
    assert docs.identity.startswith("local:")
    # the split is a stable hash of the document index: the same on a second read
    again = load_documents(DataConfig(source=str(path)))
    assert (again.train, again.validation) == (docs.train, docs.validation)


def test_load_jsonl_with_a_custom_text_column(tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_text("\n".join(json.dumps({"id": i, "body": t}) for i, t in enumerate(TEXTS)) + "\n")
    _check_documents(load_documents(DataConfig(source=str(path), text_column="body")), TEXTS)


def test_load_parquet_and_max_documents(tmp_path):
    path = tmp_path / "docs.parquet"
    pd.DataFrame({"text": TEXTS + ["", None], "n": range(42)}).to_parquet(path)
    _check_documents(load_documents(DataConfig(source=str(path))), TEXTS)  # empty and null rows dropped
    capped = load_documents(DataConfig(source=str(path), max_documents=30))
    _check_documents(capped, TEXTS[:30])


def test_load_a_folder_of_text_files(tmp_path):
    (tmp_path / "a.txt").write_text("\n".join(TEXTS[:25]))
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.txt").write_text("\n".join(TEXTS[25:]))
    _check_documents(load_documents(DataConfig(source=str(tmp_path))), TEXTS)


def test_missing_text_column_names_the_setting(tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_text("\n".join(json.dumps({"body": t}) for t in TEXTS))
    with pytest.raises(UserError, match=r"^data\.text_column: .*no column 'text'.*\['body'\]"):
        load_documents(DataConfig(source=str(path)))


@pytest.mark.parametrize("source", ["./no/such/folder", "missing.parquet", "/definitely/not/here.txt"])
def test_missing_path_names_data_source(tmp_path, monkeypatch, source):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match=r"^data\.source: .* does not exist"):
        load_documents(DataConfig(source=source))


def test_too_few_documents_is_a_user_error(tmp_path):
    path = tmp_path / "one.txt"
    path.write_text("a single document\n")
    with pytest.raises(UserError, match=r"^data\.source: 1 documents are too few .*data\.val_fraction"):
        load_documents(DataConfig(source=str(path)))


def test_mixed_or_no_files_in_a_folder(tmp_path):
    with pytest.raises(UserError, match=r"^data\.source: no \.txt"):
        load_documents(DataConfig(source=str(tmp_path)))
    (tmp_path / "a.txt").write_text("x\n")
    (tmp_path / "b.csv").write_text("text\ny\n")
    with pytest.raises(UserError, match=r"^data\.source: .* mixes"):
        load_documents(DataConfig(source=str(tmp_path)))


def test_embedded_unknown_language():
    with pytest.raises(UserError, match=r"^data\.languages: \['fr'\]"):
        load_documents(DataConfig(source="embedded", languages=["en", "fr"]))


def test_embedded_documents_are_chapters_without_the_test_split(corpus):
    docs = load_documents(DataConfig(source="embedded", languages=["en"]))
    chapters = corpus.drop_duplicates(["book", "chapter"])["split"].value_counts()
    assert len(docs.train) == chapters["train"] and len(docs.validation) == chapters["validation"]
    assert docs.train[0].startswith("In the beginning, God created the heavens and the earth. The earth was")
    ordered = corpus.sort_values(["book_index", "chapter", "verse"])
    chapter_text = {split: [" ".join(ch["en"]) for _, ch in part.groupby(["book_index", "chapter"], sort=True)]
                    for split, part in ordered.groupby("split")}
    assert docs.validation == chapter_text["validation"]
    assert docs.train == chapter_text["train"]


# ------------------------------------------------------------------ prepare (tokenizer + cache)

@pytest.fixture(scope="module")
def prepared(data_cache):
    return prepare(DataConfig(source="embedded"), vocab_size=512, seq_len=32)


def test_tokenizer_has_exactly_the_vocab_size(prepared):
    tok = prepared.tokenizer
    assert len(tok) == 512
    assert tok.eos_token == "<|endoftext|>" and tok.eos_token_id is not None
    for split in (prepared.train, prepared.validation):
        assert int(np.max(split.stream)) < 512 and split.stream.dtype == np.uint16


@pytest.mark.parametrize("text", [
    "In the beginning, God created the heavens and the earth.",
    "Y dijo Dios: Sea la luz: y fué la luz. ¿Qué? ¡Señor!",
    "unseen: 你好 🙂 tab\there  two  spaces\nnewline",
])
def test_decode_encode_round_trips(prepared, text):
    ids = prepared.tokenizer.encode(text, add_special_tokens=False)
    assert max(ids) < 512
    assert prepared.tokenizer.decode(ids) == text


def test_streams_hold_documents_separated_by_eos(prepared, corpus):
    eos = prepared.tokenizer.eos_token_id
    stream = np.asarray(prepared.validation.stream)
    held_out = corpus[corpus["split"] == "validation"].sort_values(["book_index", "chapter", "verse"])
    chapters = list(held_out.groupby(["book_index", "chapter"], sort=True))
    # one document per (chapter, language), each followed by one EOS
    assert (stream == eos).sum() == 2 * len(chapters)
    assert stream[-1] == eos
    first_doc = stream[: int(np.argmax(stream == eos))].tolist()
    assert prepared.tokenizer.decode(first_doc) == " ".join(chapters[0][1]["en"])


def test_second_prepare_is_a_cache_hit(prepared):
    tokenizer_file = prepared.cache / "tokenizer" / "tokenizer.json"
    mtimes = {p: p.stat().st_mtime_ns for p in (tokenizer_file, prepared.cache / "train.npy")}
    start = time.perf_counter()
    again = prepare(DataConfig(source="embedded"), vocab_size=512, seq_len=32)
    elapsed = time.perf_counter() - start
    assert elapsed < 3.0  # building takes ~15 s; a hit only memory-maps two arrays
    assert again.cache == prepared.cache
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes  # nothing rewritten
    np.testing.assert_array_equal(again.train.stream, prepared.train.stream)
    np.testing.assert_array_equal(again.validation.stream, prepared.validation.stream)
    assert again.tokenizer.get_vocab() == prepared.tokenizer.get_vocab()


def test_prepared_sequences_shift_targets_by_one(prepared):
    seqs = prepared.train
    assert seqs.count == (len(seqs.stream) - 1) // 32
    inputs, targets = seqs.sequences(np.array([0, 5, seqs.count - 1]))
    assert inputs.shape == targets.shape == (3, 32)
    assert inputs.dtype == targets.dtype == torch.int64
    assert (targets[:, :-1] == inputs[:, 1:]).all()
    stream = np.asarray(seqs.stream, dtype=np.int64)
    assert inputs[1].tolist() == stream[5 * 32: 6 * 32].tolist()
    assert targets[1].tolist() == stream[5 * 32 + 1: 6 * 32 + 1].tolist()


def test_seq_len_longer_than_the_data_names_model_seq_len(prepared):
    too_long = len(prepared.validation.stream)  # one token short of a single sequence
    with pytest.raises(UserError, match=r"^model\.seq_len: .* longer than the validation data"):
        prepare(DataConfig(source="embedded"), vocab_size=512, seq_len=too_long)


# ------------------------------------------------------------------ packing

def test_packed_sequences_overlap_by_one_token():
    stream = np.arange(100, dtype=np.uint16)
    packed = PackedSequences(stream, 8, "training")
    assert packed.count == 12  # (100 - 1) // 8
    inputs, targets = packed.sequences(np.array([0, 3, 11]))
    assert inputs.tolist()[1] == list(range(24, 32)) and targets.tolist()[1] == list(range(25, 33))
    assert targets.tolist()[2][-1] == 96
    assert (targets[:, :-1] == inputs[:, 1:]).all()


def test_packed_sequences_need_seq_len_plus_one_tokens():
    assert PackedSequences(np.arange(9, dtype=np.uint16), 8, "training").count == 1
    with pytest.raises(UserError, match=r"^model\.seq_len: 8 is longer than the training data \(8 tokens\)"):
        PackedSequences(np.arange(8, dtype=np.uint16), 8, "training")


def test_batch_order_is_deterministic_and_seeded():
    a, b, c = BatchOrder(50, 7, seed=0), BatchOrder(50, 7, seed=0), BatchOrder(50, 7, seed=1)
    for step in (0, 3, 20):
        np.testing.assert_array_equal(a.indices(step), b.indices(step))
    assert any((a.indices(s) != c.indices(s)).any() for s in range(5))
    assert a.indices(0).shape == (7,)


@pytest.mark.parametrize("num, batch", [(10, 4), (12, 3), (7, 10)])
def test_each_epoch_is_a_permutation(num, batch):
    order = BatchOrder(num, batch, seed=3)
    epochs = 4
    steps = -(-epochs * num // batch)  # enough steps to cover 4 epochs
    flat = np.concatenate([order.indices(s) for s in range(steps)])[: epochs * num]
    per_epoch = flat.reshape(epochs, num)
    for e in range(epochs):
        assert sorted(per_epoch[e].tolist()) == list(range(num)), e  # every sequence exactly once
    assert any((per_epoch[0] != per_epoch[e]).any() for e in range(1, epochs))  # reshuffled per epoch
    assert order.epochs(steps) == pytest.approx(steps * batch / num)


def test_batch_order_is_resume_safe():
    sequential = BatchOrder(23, 5, seed=7)
    expected = {s: sequential.indices(s) for s in range(30)}
    resumed = BatchOrder(23, 5, seed=7)
    for s in [17, 3, 29, 0, 17, 11, 28, 4]:  # any call order, repeated calls
        np.testing.assert_array_equal(resumed.indices(s), expected[s])
