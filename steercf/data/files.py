"""Reading tables from files: every CSV, TSV, ``.dat`` or Parquet file steercf opens
(interaction tables, MovieLens and RecBole files, document corpora) goes through
:func:`read_table`, so an unreadable file is always an :class:`InputError` that names the
file and the problem (empty, not valid text in its encoding, binary, a truncated
``.gz``, a malformed row, a value of the wrong type) rather than a parser traceback.

Only a truly empty cell is missing: the strings ``NA``, ``null``, ``None`` and ``nan``
that pandas would read as missing by default are real tags, words and ids.
"""

from __future__ import annotations

import bz2
import codecs
import gzip
import lzma
import os
import zipfile
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from steercf.errors import InputError

__all__ = ["DEFAULT_ENCODING", "check_encoding", "read_table", "typed_ids"]

DEFAULT_ENCODING = "utf-8"
_SNIFF_BYTES = 1 << 16  # how much of a file is looked at for NUL bytes
# control bytes other than tab, newlines and form feed: no text file has many of them,
# while random (binary) bytes are 11 % such bytes
_CONTROL_BYTES = [b for b in range(32) if b not in (9, 10, 12, 13)] + [127]
_MAX_CONTROL_SHARE = 0.02
_OPENERS = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}
# errors of a compressed stream that ends early or is not what its suffix says
_CORRUPT_STREAM = (EOFError, gzip.BadGzipFile, zlib.error, lzma.LZMAError, zipfile.BadZipFile)
_ENCODING_HINT = "pass --encoding (Python: encoding=) with the file's encoding, e.g. latin-1"


def check_encoding(encoding: str) -> str:
    """``encoding`` if Python knows it; InputError otherwise."""
    try:
        codecs.lookup(encoding)
    except (LookupError, TypeError) as err:
        raise InputError(f"unknown text encoding {encoding!r}") from err
    return encoding


def read_table(
    path: str | os.PathLike,
    *,
    encoding: str = DEFAULT_ENCODING,
    sep: str | None = None,
    text_columns: Sequence[str] = (),
    dtype: Mapping[Any, Any] | type | None = None,
    na_values: Sequence[str] = ("",),
    **read_csv_kwargs: Any,
) -> pd.DataFrame:
    """Read a delimited text file (optionally ``.gz``/``.bz2``/``.xz``/``.zip``
    compressed) or a Parquet file into a frame.

    Args:
        path: the file; ``.parquet`` / ``.pq`` is Parquet, anything else delimited text.
        encoding: text encoding of a delimited file.
        sep: field separator; default tab for ``.tsv``, else comma.
        text_columns: columns read as text: never converted to numbers, and an empty
            cell (or a Parquet null) becomes ``""`` so the caller decides what an empty
            value means.
        dtype: pandas dtypes of other columns (e.g. ids read as ``str``).
        na_values: the cell texts that are missing values outside ``text_columns``;
            default only the empty cell.
        read_csv_kwargs: passed to :func:`pandas.read_csv` (``usecols``, ``header``...).

    Returns:
        The table, one row per record.

    Raises:
        InputError: no such file, an unknown encoding, or a file that cannot be read
            (the message names the file and what is wrong with it).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"no such file: {path}")
    suffixes = [s.lower() for s in path.suffixes]
    if ".parquet" in suffixes or ".pq" in suffixes:
        frame = _read_parquet(path)
    else:
        check_encoding(encoding)
        _refuse_binary(path, suffixes, encoding)
        dtypes: Any = dtype
        if text_columns:
            dtypes = {**(dtype if isinstance(dtype, Mapping) else {})}
            dtypes.update({column: str for column in text_columns})
        if sep is None:
            sep = "\t" if ".tsv" in suffixes else ","
        try:
            frame = pd.read_csv(
                path,
                sep=sep,
                encoding=encoding,
                dtype=dtypes,
                keep_default_na=False,
                na_values=list(na_values),
                **read_csv_kwargs,
            )
        except UnicodeDecodeError as err:
            raise InputError(
                f"{path} is not valid {encoding} text (it holds byte "
                f"0x{err.object[err.start]:02x}, which {encoding} cannot decode there); "
                f"{_ENCODING_HINT}"
            ) from err
        except pd.errors.EmptyDataError as err:
            raise InputError(f"{path} is empty: expected a header row and data rows") from err
        except pd.errors.ParserError as err:
            raise InputError(f"{path} is not a well-formed table: {_first_line(err)}") from err
        except _CORRUPT_STREAM as err:
            raise InputError(
                f"{path} is a truncated or corrupt compressed file ({_first_line(err)})"
            ) from err
        except (ValueError, TypeError, OverflowError) as err:
            # a value of the wrong type for its column (a non-integer id, an id too large
            # for int64) or columns that are not there (usecols)
            raise InputError(f"{path}: {_first_line(err)}") from err
        except OSError as err:
            raise InputError(f"cannot read {path}: {_first_line(err)}") from err
    for column in text_columns:
        if column in frame.columns:
            values = frame[column].astype(object)
            frame[column] = values.where(values.notna(), "").astype(str).astype(object)
    return frame


def typed_ids(*columns: pd.Series) -> list[pd.Series]:
    """Id columns read as text, typed as one: integers only when that loses nothing.

    Every file reader reads ids as text and passes them here, so `007` and `7` are never
    merged. The columns (e.g. the item ids of ratings, movies and tags files) get one
    common type so they still match each other:

    - int64 when every id is the canonical decimal form of an integer
      (``str(int(s)) == s``: no leading zero, no sign ``+``, no spaces) within int64;
    - uint64 when they are all canonical and some is 2^63 or more but none negative or
      2^64 or more;
    - otherwise text (object dtype), unchanged; non-text columns (Parquet) are unchanged.

    Returns:
        The columns, same order and index, converted to the common type.
    """
    if not columns or any(not _is_text(column) for column in columns):
        return list(columns)
    # one hash pass per column; the checks then run on the distinct ids only, so a
    # 25M-row ratings file costs a factorisation, not a Python loop over its rows
    factorized = [pd.factorize(column.to_numpy(dtype=object)) for column in columns]
    if any((codes < 0).any() for codes, _ in factorized):
        return list(columns)  # a missing id: from_dataframe names it
    numbers: dict[str, int] = {}
    for _, uniques in factorized:
        for text in uniques:
            if text in numbers:
                continue
            number = _canonical_int(text)
            if number is None:
                return list(columns)
            numbers[text] = number
    if not numbers:
        return list(columns)
    low, high = min(numbers.values()), max(numbers.values())
    if low >= np.iinfo(np.int64).min and high <= np.iinfo(np.int64).max:
        target: Any = np.int64
    elif low >= 0 and high <= np.iinfo(np.uint64).max:
        target = np.uint64
    else:
        return list(columns)  # beyond both: keep the exact text
    return [
        pd.Series(
            np.array([numbers[u] for u in uniques], dtype=target)[codes],
            index=column.index,
            name=column.name,
        )
        for column, (codes, uniques) in zip(columns, factorized, strict=True)
    ]


def _canonical_int(text: Any) -> int | None:
    """``int(text)`` when ``text`` is its canonical decimal form (``str(int(s)) == s``:
    no leading zero, ``+``, space or ``_``), else None."""
    if not isinstance(text, str):
        return None
    try:
        number = int(text)
    except ValueError:
        return None
    return number if str(number) == text else None


def _is_text(column: pd.Series) -> bool:
    return column.dtype == object or pd.api.types.is_string_dtype(column.dtype)


def _read_parquet(path: Path) -> pd.DataFrame:
    try:
        return pd.read_parquet(path)
    except ImportError as err:
        raise InputError(f"reading {path} needs pyarrow (pip install pyarrow)") from err
    except (OSError, ValueError, *_CORRUPT_STREAM, *_arrow_errors()) as err:
        raise InputError(f"{path} is not a readable Parquet file: {_first_line(err)}") from err


def _arrow_errors() -> tuple[type[BaseException], ...]:
    try:
        from pyarrow.lib import ArrowException
    except ImportError:
        return ()
    return (ArrowException,)


def _refuse_binary(path: Path, suffixes: list[str], encoding: str) -> None:
    """InputError when the first bytes hold a NUL, which no text in a single-byte or
    UTF-8 encoding has: a binary file (or a compressed one without its suffix)."""
    if codecs.lookup(encoding).name.startswith(("utf-16", "utf-32")):
        return  # NUL bytes are part of these encodings
    opener = _OPENERS.get(suffixes[-1] if suffixes else "", open)
    if suffixes and suffixes[-1] == ".zip":
        return  # pandas opens the archive; its errors are caught there
    try:
        with opener(path, "rb") as handle:
            head = handle.read(_SNIFF_BYTES)
    except _CORRUPT_STREAM as err:
        raise InputError(
            f"{path} is a truncated or corrupt compressed file ({_first_line(err)})"
        ) from err
    except OSError as err:  # e.g. gzip's "Not a gzipped file"
        raise InputError(f"cannot read {path}: {_first_line(err)}") from err
    control = sum(head.count(bytes([b])) for b in _CONTROL_BYTES)
    if b"\x00" in head or control > _MAX_CONTROL_SHARE * len(head):
        raise InputError(
            f"{path} looks like a binary file, not {encoding} text (it holds NUL or other "
            "control bytes); expected a CSV/TSV table (or Parquet with a .parquet suffix)"
        )


def _first_line(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0]
