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

import numpy as np
import pandas as pd

from steercf.data.files import DEFAULT_ENCODING
from steercf.data.files import read_table as read_data_table
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


DEFAULT_ID_COLUMN = "id"  # identifies documents in results when the input has it


def doc_ids(frame: pd.DataFrame, column: str | None = None, source: str = "") -> np.ndarray | None:
    """(n_docs,) the ids of a table's documents, one per row: its ``column``, by default
    the ``id`` column when it has one; None (results then name documents by position,
    from 0) when the default column is absent.

    Raises:
        InputError: a named column the table lacks, or ids that are missing or repeated
            (a result naming them would not say which document it means).
    """
    name = DEFAULT_ID_COLUMN if column is None else column
    where = f" of {source}" if source else ""
    if name not in frame.columns:
        if column is None:
            return None
        raise InputError(
            f"no id column {name!r}{where}; it has {', '.join(map(repr, map(str, frame.columns)))}"
        )
    values = frame[name]
    missing = np.flatnonzero(values.isna().to_numpy()).tolist()
    if missing:
        raise InputError(f"id column {name!r}{where} is empty at row(s) {_first(missing)}")
    repeated = values[values.duplicated()].astype(str).unique().tolist()
    if repeated:
        raise InputError(
            f"id column {name!r}{where} repeats {len(repeated)} id(s), e.g. "
            f"{', '.join(map(repr, repeated[:3]))}; name a unique column with --id-column"
        )
    return values.to_numpy(dtype=object)


def with_doc_ids(frame: pd.DataFrame, ids: np.ndarray | None, column: str = "doc") -> pd.DataFrame:
    """``frame`` with an ``id`` column, right after the position column ``column``,
    holding ``ids[position]``; ``frame`` itself when ``ids`` is None (or it has one)."""
    if ids is None or column not in frame.columns or "id" in frame.columns:
        return frame  # no ids, no positions, or ids already there
    out = frame.copy()
    out.insert(out.columns.get_loc(column) + 1, "id", ids[out[column].to_numpy(dtype=np.int64)])
    return out


def _first(positions: Sequence[int], n: int = 5) -> str:
    shown = ", ".join(map(str, positions[:n]))
    return shown + (", ..." if len(positions) > n else "")


def read_table(
    path: str | os.PathLike, encoding: str = DEFAULT_ENCODING, text_columns: Sequence[str] = ()
) -> pd.DataFrame:
    """Read a CSV / TSV (optionally compressed, e.g. ``.csv.gz``) or Parquet file.

    Args:
        encoding: text encoding of a CSV / TSV file.
        text_columns: columns read as text whatever they hold: a document ``nan``,
            ``NA`` or ``123`` is that string; an empty cell is ``""`` (an empty
            document, which :func:`check_texts` refuses by position).

    Raises:
        InputError: missing file, an unknown extension, or a file that cannot be read
            (empty, not valid text in ``encoding``, binary, a truncated ``.gz``).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"no such file: {path}")
    suffixes = [s.lower() for s in path.suffixes]
    if not {".parquet", ".pq", ".csv", ".tsv", ".txt"} & set(suffixes):
        raise InputError(f"{path}: expected a .csv, .csv.gz, .tsv or .parquet file")
    return read_data_table(path, encoding=encoding, text_columns=text_columns)


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
