"""MovieLens releases whose ratings sit in `ratings.csv` (ml-latest(-small), ML-20M,
ML-25M, with `movies.csv` and optional `tags.csv`) or `ratings.dat` (ML-1M / ML-10M, with
`movies.dat`). Also importable from :mod:`steercf.data.movielens`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from steercf.data.files import read_table, typed_ids
from steercf.data.interactions import InteractionData, from_dataframe
from steercf.data.tags import ItemTags, tags_from_pairs
from steercf.errors import InputError

__all__ = ["load_ml1m", "load_movielens_csv"]

_NO_GENRES = "(no genres listed)"


def load_movielens_csv(
    directory: str | Path,
    min_rating: float = 4.0,
    min_user_positives: int = 5,
    min_tag_count: int = 1,
    encoding: str = "utf-8",
) -> InteractionData:
    """ml-latest(-small) / ML-20M / ML-25M: `ratings.csv`, `movies.csv`, optional `tags.csv`.

    Ids are read as text and typed by `steercf.data.files.typed_ids` (int64 for
    GroupLens's files; `007` keeps every id of its kind text); titles, genres and tags are read as text, so a
    user tag `NA` or `null` is a tag. Every file is read with `encoding`.

    Returns:
        InteractionData (n_users, n_items) with `tags["genres"]`, and when tags.csv exists
        `tags["tags"]` (lower-cased, stripped user tags counted per application, restricted to
        matrix items, tags applied fewer than `min_tag_count` times dropped) and
        `tag_applications` (columns user, item, tag; raw rows on matrix items).
    """
    directory = Path(directory)
    ratings_path = directory / "ratings.csv"
    if not ratings_path.is_file():
        raise InputError(f"{directory} has no ratings.csv (expected the ml-latest / ML-25M layout)")
    ratings = read_table(
        ratings_path,
        encoding=encoding,
        usecols=["userId", "movieId", "rating"],
        dtype={"userId": str, "movieId": str, "rating": np.float32},
    )
    movies = None
    movies_path = directory / "movies.csv"
    if movies_path.is_file():
        movies = read_table(
            movies_path,
            encoding=encoding,
            text_columns=("title", "genres"),
            dtype={"movieId": str},
        )
    applied = None
    tags_path = directory / "tags.csv"
    if tags_path.is_file():
        applied = read_table(
            tags_path,
            encoding=encoding,
            usecols=["userId", "movieId", "tag"],
            text_columns=("tag",),
            dtype={"userId": str, "movieId": str},
        )
    # one id type per kind across the files, so the movies and tags still match
    users = [ratings] + ([applied] if applied is not None else [])
    items = users + ([movies] if movies is not None else [])
    for frames, column in ((users, "userId"), (items, "movieId")):
        for frame, typed in zip(frames, typed_ids(*(f[column] for f in frames)), strict=True):
            frame[column] = typed
    if movies is not None:
        movies = movies.set_index("movieId")
    data = from_dataframe(
        ratings,
        user_col="userId",
        item_col="movieId",
        rating_col="rating",
        min_rating=min_rating,
        min_user_positives=min_user_positives,
        items=movies,
        name=directory.name,
    )
    if movies is not None:
        data.tags["genres"] = _pipe_genres(movies["genres"], data.item_ids)

    if applied is not None:
        applied = pd.DataFrame(
            {
                "user": applied["userId"],
                "item": applied["movieId"],
                "tag": applied["tag"].str.strip().str.lower(),
            }
        )
        applied = applied[
            applied["tag"].notna() & (applied["tag"] != "") & applied["item"].isin(data.item_ids)
        ].reset_index(drop=True)
        data.tag_applications = applied
        data.tags["tags"] = tags_from_pairs(applied["item"], applied["tag"], data.item_ids).filter(
            min_tag_count
        )
    return data


def load_ml1m(
    directory: str | Path,
    min_rating: float = 4.0,
    min_user_positives: int = 5,
    encoding: str | None = None,
) -> InteractionData:
    """ML-1M (and ML-10M) `::`-separated files: `ratings.dat`, optional `movies.dat`
    (read as latin-1, as GroupLens ships it, unless `encoding` says otherwise).

    Returns:
        InteractionData (n_users, n_items) with `tags["genres"]` when movies.dat exists.
    """
    directory = Path(directory)
    ratings_path = directory / "ratings.dat"
    if not ratings_path.is_file():
        raise InputError(f"{directory} has no ratings.dat (expected the ML-1M layout)")
    # "a::b::c::d" read with the fast C parser as ":"-separated fields a,,b,,c,,d
    ratings = read_table(
        ratings_path,
        encoding=encoding or "utf-8",
        sep=":",
        header=None,
        usecols=[0, 2, 4],
        names=["user", "item", "rating"],
        dtype={"user": str, "item": str, "rating": np.float32},
    )
    (ratings["user"],) = typed_ids(ratings["user"])
    movies = None
    movies_path = directory / "movies.dat"
    if movies_path.is_file():
        # titles contain ":" so this small file needs the exact "::" separator
        movies = read_table(
            movies_path,
            sep="::",
            engine="python",
            header=None,
            names=["item", "title", "genres"],
            encoding=encoding or "latin-1",
            text_columns=("title", "genres"),
            dtype={"item": str},
        )
    if movies is None:
        (ratings["item"],) = typed_ids(ratings["item"])
    else:
        ratings["item"], movies["item"] = typed_ids(ratings["item"], movies["item"])
        movies = movies.set_index("item")
    data = from_dataframe(
        ratings,
        rating_col="rating",
        min_rating=min_rating,
        min_user_positives=min_user_positives,
        items=movies,
        name=directory.name,
    )
    if movies is not None:
        data.tags["genres"] = _pipe_genres(movies["genres"], data.item_ids)
    return data


def _pipe_genres(genres: pd.Series, item_ids: np.ndarray) -> ItemTags:
    """Genre tags from "A|B|C" strings indexed by item id; "(no genres listed)" is none."""
    exploded = genres.dropna().str.split("|").explode()
    exploded = exploded[(exploded != _NO_GENRES) & (exploded != "")]
    kept = exploded[exploded.index.isin(item_ids)]
    return tags_from_pairs(kept.index.to_numpy(), kept.to_numpy(), item_ids, unique=True)
