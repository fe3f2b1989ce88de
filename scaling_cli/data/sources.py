"""Read documents from the configured source through Hugging Face `datasets`.

Sources (`data.source`):
- 'embedded': the English-Spanish Bible table shipped in scaling_cli/data/corpus/ (no
  network). A document is one chapter in one language; its split is the table's
  (held-out chapters).
- a local file or folder: .txt (one document per line), .jsonl/.json, .parquet, .csv,
  read with the matching `datasets` builder; `data.text_column` names the text.
- anything else: a hub dataset name, loaded with `datasets.load_dataset(name, hub_config)`.

Sources without their own validation split are split by a stable hash of the document
index, so the split does not change between runs or machines.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from scaling_cli.config import DataConfig
from scaling_cli.errors import UserError

EMBEDDED_CORPUS = Path(__file__).parent / "corpus" / "bible_en_es.parquet"
LANGUAGES = ("en", "es")
_BUILDERS = {".txt": "text", ".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}
_VALIDATION_SPLITS = ("validation", "valid", "val", "test")


@dataclass
class Documents:
    train: list[str]
    validation: list[str]
    identity: str
    """A string that changes whenever the documents may change (cache key material)."""


def load_documents(cfg: DataConfig) -> Documents:
    if cfg.source == "embedded":
        return _embedded(cfg)
    path = Path(cfg.source).expanduser()
    if path.exists():
        return _local(cfg, path)
    if _looks_like_path(cfg.source):
        raise UserError(f"data.source: {cfg.source!r} does not exist; give an existing file or folder, "
                        "a hub dataset name, or 'embedded'")
    return _hub(cfg)


def _looks_like_path(source: str) -> bool:
    return source.startswith((".", "/", "~")) or Path(source).suffix.lower() in _BUILDERS


def _embedded(cfg: DataConfig) -> Documents:
    import datasets

    unknown = [lang for lang in cfg.languages if lang not in LANGUAGES]
    if unknown:
        raise UserError(f"data.languages: {unknown} not in the embedded corpus; choose from {list(LANGUAGES)}")
    table = datasets.load_dataset("parquet", data_files=str(EMBEDDED_CORPUS), split="train").to_pandas()
    docs: dict[str, list[str]] = {"train": [], "validation": []}
    for (split, _, _), chapter in table.groupby(["split", "book_index", "chapter"], sort=True):
        if split not in docs:
            continue  # the test split is kept for downstream evaluation
        for lang in cfg.languages:
            docs[split].append(" ".join(chapter[lang]))
    return Documents(_cap(docs["train"], cfg), docs["validation"], embedded_identity(cfg))


def embedded_identity(cfg: DataConfig) -> str:
    """Cache key material for the embedded corpus, computable without reading it."""
    return f"embedded:{_file_digest(EMBEDDED_CORPUS)}:{','.join(cfg.languages)}:{cfg.max_documents}"


def _local(cfg: DataConfig, path: Path) -> Documents:
    import datasets

    files = sorted(p for p in path.rglob("*") if p.suffix.lower() in _BUILDERS) if path.is_dir() else [path]
    if not files:
        raise UserError(f"data.source: no .txt/.jsonl/.json/.parquet/.csv files under {path}")
    suffixes = {p.suffix.lower() for p in files}
    builders = {_BUILDERS.get(s) for s in suffixes}
    if None in builders or len(builders) != 1:
        raise UserError(f"data.source: {path} mixes or holds unsupported file types {sorted(suffixes)}; "
                        "use one of .txt, .jsonl/.json, .parquet, .csv")
    builder = builders.pop()
    data = datasets.load_dataset(builder, data_files=[str(p) for p in files], split="train")
    text_column = "text" if builder == "text" else cfg.text_column
    texts = _column(data, text_column, str(path))
    digest = hashlib.sha1("".join(f"{p}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files).encode())
    return _split(cfg, texts, f"local:{digest.hexdigest()}:{text_column}")


def _hub(cfg: DataConfig) -> Documents:
    import datasets

    try:
        loaded = datasets.load_dataset(cfg.source, cfg.hub_config)
    except Exception as err:  # the hub raises many types; all mean the same thing to the user
        raise UserError(f"data.source: could not load {cfg.source!r} from the Hugging Face hub "
                        f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); "
                        "check the name and network, or point data.source at local files") from err
    train = _column(loaded["train"], cfg.text_column, cfg.source) if "train" in loaded else None
    if train is None:
        raise UserError(f"data.source: {cfg.source!r} has no 'train' split (splits: {list(loaded)})")
    identity = f"hub:{cfg.source}:{cfg.hub_config}:{cfg.text_column}"
    for name in _VALIDATION_SPLITS:
        if name in loaded:
            validation = _column(loaded[name], cfg.text_column, cfg.source)
            return Documents(_cap(train, cfg), _cap(validation, cfg), identity)
    return _split(cfg, train, identity)


def _column(data, column: str, where: str) -> list[str]:
    if column not in data.column_names:
        raise UserError(f"data.text_column: {where} has no column {column!r} "
                        f"(columns: {data.column_names}); set data.text_column")
    return [t for t in data[column] if isinstance(t, str) and t.strip()]


def _cap(texts: list[str], cfg: DataConfig) -> list[str]:
    return texts if cfg.max_documents is None else texts[: cfg.max_documents]


def _split(cfg: DataConfig, texts: list[str], identity: str) -> Documents:
    texts = _cap(texts, cfg)
    train, validation = [], []
    for i, text in enumerate(texts):
        u = int.from_bytes(hashlib.sha1(str(i).encode()).digest()[:8], "big") / 2**64
        (validation if u < cfg.val_fraction else train).append(text)
    if not train or not validation:
        raise UserError(f"data.source: {len(texts)} documents are too few to hold out "
                        f"data.val_fraction={cfg.val_fraction} for validation; add data")
    return Documents(train, validation, f"{identity}:{cfg.val_fraction}:{cfg.max_documents}")


def _file_digest(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()[:16]
