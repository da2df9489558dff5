"""Documents in: checking a corpus, reading it from a table, splitting long documents
into overlapping word windows (chunks) for the sentence embedder.

The sentence embedders truncate at a few hundred tokens, so a document longer than
``chunk_words`` words is split into overlapping windows; otherwise the tail of a long
article would be lost.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from steercf.errors import InputError


def check_texts(texts: Any, name: str = "texts") -> list[str]:
    """Return ``texts`` as a list of non-empty strings, or raise :class:`InputError`.

    Accepts any sequence (list, tuple, pandas Series, numpy array). Rejects an empty
    corpus, non-string values (numbers, NaN from an empty CSV cell, None) and documents
    that are empty or only whitespace, naming the first offending positions.
    """
    if isinstance(texts, str):
        raise InputError(f"{name} must be a sequence of documents, got one string")
    if isinstance(texts, pd.Series):
        values = texts.tolist()
    else:
        try:
            values = list(texts)
        except TypeError as err:
            raise InputError(f"{name} must be a sequence of strings: {err}") from err
    if not values:
        raise InputError(f"{name} is empty: no documents to embed")
    bad = [i for i, t in enumerate(values) if not isinstance(t, str)]
    if bad:
        kinds = sorted({type(values[i]).__name__ for i in bad})
        raise InputError(
            f"{name} holds {len(bad)} non-text value(s) ({', '.join(kinds)}) at position(s) "
            f"{_first(bad)}; every document must be a string"
        )
    empty = [i for i, t in enumerate(values) if not t.strip()]
    if empty:
        raise InputError(
            f"{name} holds {len(empty)} empty document(s) at position(s) {_first(empty)}"
        )
    return values


def _first(positions: Sequence[int], n: int = 5) -> str:
    shown = ", ".join(map(str, positions[:n]))
    return shown + (", ..." if len(positions) > n else "")


def read_table(path: str | os.PathLike) -> pd.DataFrame:
    """Read a CSV (optionally compressed, e.g. ``.csv.gz``) or Parquet file.

    Raises:
        InputError: missing file or an unknown extension.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"no such file: {path}")
    suffixes = [s.lower() for s in path.suffixes]
    if ".parquet" in suffixes or ".pq" in suffixes:
        return pd.read_parquet(path)
    if ".csv" in suffixes or ".tsv" in suffixes or ".txt" in suffixes:
        sep = "\t" if ".tsv" in suffixes else ","
        return pd.read_csv(path, sep=sep)
    raise InputError(f"{path}: expected a .csv, .csv.gz, .tsv or .parquet file")


def texts_from_frame(frame: pd.DataFrame, column: str, source: str = "table") -> list[str]:
    """The documents in ``frame[column]``, checked by :func:`check_texts`.

    Raises:
        InputError: the column is missing (the message lists the columns there are),
            the table is empty, or it holds non-text values.
    """
    if column not in frame.columns:
        raise InputError(
            f"{source} has no text column {column!r}; its columns are: "
            f"{', '.join(map(str, frame.columns))}"
        )
    return check_texts(frame[column], name=f"column {column!r} of {source}")


def split_words(text: str, chunk_words: int, overlap: int, max_chunks: int | None) -> list[str]:
    """Overlapping windows of ``chunk_words`` whitespace-separated words.

    Windows start every ``chunk_words - overlap`` words; a document of at most
    ``chunk_words`` words is one chunk. ``max_chunks`` keeps only the first windows.
    """
    words = text.split()
    if len(words) <= chunk_words:
        return [" ".join(words)]
    stride = chunk_words - overlap
    starts = list(range(0, len(words) - overlap, stride))
    # a last window shorter than the overlap would only repeat its predecessor's tail
    chunks = [" ".join(words[s : s + chunk_words]) for s in starts]
    return chunks[:max_chunks] if max_chunks else chunks
