"""Rebuild the embedded English-Spanish corpus from Debian's SWORD Bible modules.

    apt-get install diatheke sword-text-web sword-text-sparv
    python -m scaling_cli.data.build_corpus            # writes scaling_cli/data/corpus/bible_en_es.parquet

Sources (both public domain): the World English Bible with deuterocanon (`engWEB2015eb`)
and the Reina-Valera 1909 (`spaRV1909eb`). Verses are aligned by reference and only
verses present in both are kept. The split is by chapter (a stable hash of book and
chapter), so validation and test text is never seen in training, not even as a
neighbouring verse.

diatheke's `plain` filter glues adjacent word elements together ("Godcreated"), so we
export OSIS markup and strip it with a space-aware rule instead.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd

MODULES = {"en": "engWEB2015eb", "es": "spaRV1909eb"}
DEFAULT_OUTPUT = Path(__file__).parent / "corpus" / "bible_en_es.parquet"
# Share of chapters held out for each of validation and test.
HELD_OUT_SHARE = {"validation": 0.05, "test": 0.05}

# One verse per line: an optional heading that diatheke carries over ("A Psalm by David.  "),
# then "Book C:V: text". Book names may hold digits, spaces and parentheses ("Esther (Greek)").
# Words of a book name are joined by single spaces, so a heading such as "ALEPH" that precedes the
# book after two spaces is never taken as part of the name.
_VERSE = re.compile(r"(?:^|\s{2})((?:[1-4] )?[A-Z][A-Za-z()]*(?: [A-Za-z()]+)*) (\d+):(\d+): (.*)$")
# A word element that touches a word or another element on either side needs a space there.
_GLUED_BEFORE = re.compile(r"(?<=\w)(?=<w[ >])")
_GLUED_AFTER = re.compile(r"</w>(?=<w[ >]|\w)")
_NOTE = re.compile(r"<note\b.*?</note>", re.S)
_TAG = re.compile(r"<[^>]+>")
_SPACE = re.compile(r"\s+")


def osis_to_text(markup: str) -> str:
    """Strip OSIS tags, inserting a space where two word elements touch."""
    markup = _NOTE.sub(" ", markup)
    markup = _GLUED_BEFORE.sub(" ", markup)
    markup = _GLUED_AFTER.sub("</w> ", markup)
    markup = _TAG.sub("", markup)
    return _SPACE.sub(" ", markup).strip()


def parse_verses(osis_dump: str) -> pd.DataFrame:
    """Parse `diatheke -f OSIS` output into rows (book, chapter, verse, text)."""
    rows = []
    books: dict[str, int] = {}
    for line in osis_dump.splitlines():
        match = _VERSE.search(line)
        if not match:
            continue
        book, chapter, verse, body = match.groups()
        text = osis_to_text(body)
        if text:
            books.setdefault(book, len(books))
            rows.append((book, books[book], int(chapter), int(verse), text))
    return pd.DataFrame(rows, columns=["book", "book_index", "chapter", "verse", "text"])


def read_module(module: str) -> pd.DataFrame:
    """Dump one SWORD module with diatheke (a few seconds) and parse it."""
    if shutil.which("diatheke") is None:
        raise SystemExit("diatheke not found: apt-get install diatheke sword-text-web sword-text-sparv")
    out = subprocess.run(
        ["diatheke", "-b", module, "-f", "OSIS", "-k", "Gen-Rev"],
        check=True, capture_output=True, text=True,
    ).stdout
    table = parse_verses(out)
    if table.empty:
        raise SystemExit(f"diatheke printed no verses for {module}; is the sword-text package installed?")
    return table


def chapter_split(book: str, chapter: int) -> str:
    """Stable split of a chapter: the same chapter lands in the same split on every rebuild."""
    digest = hashlib.sha1(f"{book}|{chapter}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    if u < HELD_OUT_SHARE["validation"]:
        return "validation"
    if u < HELD_OUT_SHARE["validation"] + HELD_OUT_SHARE["test"]:
        return "test"
    return "train"


def build(output: Path = DEFAULT_OUTPUT) -> pd.DataFrame:
    en = read_module(MODULES["en"]).rename(columns={"text": "en"})
    es = read_module(MODULES["es"]).rename(columns={"text": "es"})
    table = en.merge(es[["book", "chapter", "verse", "es"]], on=["book", "chapter", "verse"], how="inner")
    table = table.sort_values(["book_index", "chapter", "verse"], kind="stable").reset_index(drop=True)
    table["split"] = [chapter_split(b, c) for b, c in zip(table["book"], table["chapter"])]
    table["ref"] = table["book"] + " " + table["chapter"].astype(str) + ":" + table["verse"].astype(str)
    table = table[["ref", "book", "book_index", "chapter", "verse", "split", "en", "es"]]
    output.parent.mkdir(parents=True, exist_ok=True)
    table.to_parquet(output, compression="zstd", compression_level=19, index=False)
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="Parquet file to write")
    args = parser.parse_args()
    table = build(args.output)
    counts = table["split"].value_counts().to_dict()
    size_mb = args.output.stat().st_size / 2**20
    print(f"wrote {args.output} ({size_mb:.1f} MiB): {len(table)} aligned verses, splits {counts}")


if __name__ == "__main__":
    main()
