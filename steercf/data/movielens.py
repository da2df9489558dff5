"""Loaders for the MovieLens family and a `load_dataset` entry point.

Supported layouts:
- RecBole atomic files (`*.inter`, `*.item`, `*.link`, `*.kg`): the MovieLens 100K copy that
  ships inside the recbole wheel is the embedded default data set.
- GroupLens ML-100K (`u.data`, `u.item`), ML-1M / ML-10M (`ratings.dat`, `movies.dat`) and
  ml-latest(-small) / ML-20M / ML-25M (`ratings.csv`, `movies.csv`, optional `tags.csv`).

The file readers live in `steercf.data.ml100k` and `steercf.data.ml_ratings`; this module
picks the loader (`load_ml100k`, `load_dataset`) and re-exports the public ones.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from steercf.data.download import GROUPLENS_NAMES, default_cache_dir, download_movielens
from steercf.data.files import check_encoding, read_table, typed_ids
from steercf.data.interactions import InteractionData, from_dataframe
from steercf.data.ml100k import ML100K_GENRES, _load_grouplens_100k, _load_recbole
from steercf.data.ml_ratings import load_ml1m, load_movielens_csv
from steercf.errors import InputError

__all__ = ["ML100K_GENRES", "load_dataset", "load_ml1m", "load_ml100k", "load_movielens_csv"]


def load_ml100k(
    path: str | Path | None = None,
    min_rating: float = 4.0,
    min_user_positives: int = 5,
    encoding: str | None = None,
) -> InteractionData:
    """MovieLens 100K with genre and Freebase knowledge-graph tags.

    Args:
        path: a folder in RecBole layout (`ml-100k.inter`, ...) or GroupLens layout (`u.data`,
            `u.item`). Default: the copy inside the installed recbole wheel, else a copy
            previously downloaded with `download_movielens("ml-100k")`.
        encoding: text encoding of the files; default utf-8 for RecBole files and
            latin-1 for GroupLens's `u.item` / `u.genre` (as GroupLens ships them).

    Returns:
        InteractionData (n_users, n_items) with `tags["genres"]` (19 genres) and, for the
        RecBole layout, `tags["kg"]` with one "relation:entity" tag per Freebase triple.
    """
    directory = Path(path) if path is not None else _default_ml100k_dir()
    if (directory / "u.data").is_file():
        return _load_grouplens_100k(directory, min_rating, min_user_positives, encoding)
    if list(directory.glob("*.inter")):
        return _load_recbole(directory, min_rating, min_user_positives, encoding)
    raise InputError(f"{directory} holds neither ML-100K in RecBole layout (*.inter) nor u.data")


def _recbole_ml100k_dir() -> Path | None:
    """The ml-100k folder of the installed recbole wheel, found without importing recbole."""
    spec = importlib.util.find_spec("recbole")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "dataset_example" / "ml-100k"
        if (candidate / "ml-100k.inter").is_file():
            return candidate
    return None


def _default_ml100k_dir() -> Path:
    embedded = _recbole_ml100k_dir()
    if embedded is not None:
        return embedded
    cached = default_cache_dir() / "ml-100k"
    if (cached / "u.data").is_file():
        return cached
    raise InputError(
        "MovieLens 100K is not available offline: install recbole (it ships a copy), pass "
        "path= a folder holding u.data/u.item or ml-100k.inter, or download it once with "
        "steercf.data.download_movielens('ml-100k') (or load_dataset('ml-100k'))"
    )


def load_dataset(
    spec: str,
    data_dir: str | Path | None = None,
    min_rating: float = 4.0,
    min_user_positives: int = 5,
    min_tag_count: int = 1,
    encoding: str | None = None,
) -> InteractionData:
    """Load a data set by name or path.

    Args:
        spec: "ml-100k" (embedded copy, downloaded when recbole is missing); a GroupLens name
            (ml-latest-small, ml-1m, ml-20m, ml-25m), downloaded once into the cache; a folder
            in any supported layout; or a .csv / .tsv / .parquet file with columns
            user,item[,rating] or userId,movieId[,rating].
        data_dir: download cache for GroupLens names (default `default_cache_dir()`).
        encoding: text encoding of the files (default utf-8; latin-1 for the GroupLens
            ML-100K / ML-1M files that come in it).

    Ids of every file are read as text and typed by `steercf.data.files.typed_ids`:
    integers only when every id of the column is the canonical decimal form of one
    (uint64 from 2^63), else text, so `007` and `7` are two users and a float id is
    text; pass your own frame to `from_dataframe` to type them otherwise. Every file is read by `steercf.data.files.read_table`: an unreadable
    one is an InputError naming the file.

    Returns:
        InteractionData after the binarisation protocol (see `from_dataframe`).
    """
    spec = str(spec)
    if encoding is not None:
        check_encoding(encoding)
    if spec == "ml-100k" and _recbole_ml100k_dir() is not None:
        return load_ml100k(None, min_rating, min_user_positives, encoding)
    path = Path(spec).expanduser()
    if path.is_dir():
        return _load_directory(path, min_rating, min_user_positives, min_tag_count, encoding)
    if path.is_file():
        return _load_table(path, min_rating, min_user_positives, encoding)
    if spec in GROUPLENS_NAMES:
        directory = download_movielens(spec, cache_dir=data_dir)
        return _load_directory(directory, min_rating, min_user_positives, min_tag_count, encoding)
    raise InputError(
        f"unknown data set {spec!r}: expected 'ml-100k', a GroupLens name "
        f"({', '.join(n for n in GROUPLENS_NAMES if n != 'ml-100k')}), a folder holding "
        "ratings.csv, ratings.dat, u.data or *.inter, or a .csv/.tsv/.parquet file with "
        "columns user,item[,rating] or userId,movieId[,rating]"
    )


def _load_directory(
    directory: Path,
    min_rating: float,
    min_user_positives: int,
    min_tag_count: int,
    encoding: str | None,
) -> InteractionData:
    if (directory / "ratings.csv").is_file():
        return load_movielens_csv(
            directory, min_rating, min_user_positives, min_tag_count, encoding or "utf-8"
        )
    if (directory / "ratings.dat").is_file():
        return load_ml1m(directory, min_rating, min_user_positives, encoding)
    if (directory / "u.data").is_file() or list(directory.glob("*.inter")):
        return load_ml100k(directory, min_rating, min_user_positives, encoding)
    raise InputError(
        f"{directory} has no recognised layout: expected ratings.csv (ml-latest, ML-20M/25M), "
        "ratings.dat (ML-1M), u.data (ML-100K) or a RecBole *.inter file"
    )


def _load_table(
    path: Path, min_rating: float, min_user_positives: int, encoding: str | None
) -> InteractionData:
    """A single .csv / .tsv / .parquet file of (user, item[, rating]) rows, ids as text."""
    suffixes = "".join(path.suffixes[-2:]).lower()
    if not suffixes.endswith((".parquet", ".csv", ".csv.gz", ".tsv", ".tsv.gz")):
        raise InputError(f"{path}: expected a .csv, .tsv or .parquet file of interactions")
    id_columns = ("user", "item", "userId", "movieId", "user_id", "item_id")
    frame = read_table(path, encoding=encoding or "utf-8", dtype=dict.fromkeys(id_columns, str))
    for user_col, item_col in (("user", "item"), ("userId", "movieId"), ("user_id", "item_id")):
        if user_col in frame.columns and item_col in frame.columns:
            break
    else:
        raise InputError(
            f"{path} needs columns user,item[,rating] or userId,movieId[,rating]; "
            f"it has {list(frame.columns)}"
        )
    frame[user_col], frame[item_col] = typed_ids(frame[user_col]) + typed_ids(frame[item_col])
    try:
        return from_dataframe(
            frame,
            user_col=user_col,
            item_col=item_col,
            rating_col="rating" if "rating" in frame.columns else None,
            min_rating=min_rating,
            min_user_positives=min_user_positives,
            name=path.name.split(".")[0],
        )
    except InputError as err:
        raise InputError(f"{path}: {err}") from err
