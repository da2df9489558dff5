"""MovieLens 100K files: RecBole atomic files (`*.inter`, `*.item`, `*.link`, `*.kg`) and
the GroupLens layout (`u.data`, `u.item`, `u.genre`).

The public entry point is :func:`steercf.data.movielens.load_ml100k`, which picks the
layout and the default folder; the readers here take a folder already chosen.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from steercf.data.files import read_table, typed_ids
from steercf.data.interactions import InteractionData, from_dataframe
from steercf.data.tags import ItemTags, tags_from_pairs
from steercf.errors import InputError

__all__ = ["ML100K_GENRES"]

# The 19 ML-100K genres in GroupLens's u.genre order (the order of u.item's genre flags).
ML100K_GENRES = (
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)

# Freebase relations whose subject is some other entity and whose object is the film, mapped to
# the name of the film-side relation they invert, so that e.g. (director, film.director.film,
# movie) and (movie, film.film.directed_by, director) yield the same tag "directed_by:<id>".
_INVERSE_RELATIONS = {
    "actor": "actor",
    "cinematographer": "cinematography",
    "content_rating": "rating",
    "director": "directed_by",
    "film_genre": "genre",
    "film_subject": "subjects",
    "producer": "produced_by",
    "production_company": "production_companies",
    "writer": "written_by",
}


def _load_recbole(
    directory: Path, min_rating: float, min_user_positives: int, encoding: str | None = None
) -> InteractionData:
    """RecBole atomic files: `<name>.inter` plus optional `.item`, `.link`, `.kg`."""
    encoding = encoding or "utf-8"
    inter_path = _single(directory, "*.inter")
    stem = inter_path.stem
    inter = _read_atomic(inter_path, encoding)
    rating_col = "rating" if "rating" in inter.columns else None
    items = None
    genre_rows: pd.DataFrame | None = None
    item_path = directory / f"{stem}.item"
    if item_path.is_file():
        meta = _read_atomic(item_path, encoding).drop_duplicates("item_id").set_index("item_id")
        title_col = next((c for c in ("movie_title", "title") if c in meta.columns), None)
        if title_col is not None:
            title = meta[title_col].astype(str)
            if "release_year" in meta.columns:
                year = meta["release_year"].astype("string").fillna("").str.strip()
                title = title.where(year == "", title + " (" + year + ")")
            items = pd.DataFrame({"title": title}, index=meta.index)
        if "class" in meta.columns:
            genre_rows = (
                meta["class"].astype("string").str.split().explode().dropna().rename("genre")
            ).reset_index()
            items = items if items is not None else pd.DataFrame(index=meta.index)
            items["genres"] = meta["class"].astype("string").str.split().str.join("|")

    data = from_dataframe(
        inter.rename(columns={"user_id": "user", "item_id": "item"}),
        rating_col=rating_col,
        min_rating=min_rating,
        min_user_positives=min_user_positives,
        items=items,
        name=stem,
    )
    if genre_rows is not None:
        present = set(genre_rows["genre"])
        # ML-100K has a fixed, ordered genre list; other RecBole sets get theirs sorted.
        names = ML100K_GENRES if present <= set(ML100K_GENRES) else sorted(present)
        data.tags["genres"] = tags_from_pairs(
            genre_rows["item_id"], genre_rows["genre"], data.item_ids, names=names, unique=True
        )
    link_path, kg_path = directory / f"{stem}.link", directory / f"{stem}.kg"
    if link_path.is_file() and kg_path.is_file():
        data.tags["kg"] = _kg_tags(
            _read_atomic(link_path, encoding), _read_atomic(kg_path, encoding), data.item_ids
        )
    return data


def _read_atomic(path: Path, encoding: str = "utf-8") -> pd.DataFrame:
    """A RecBole atomic file with the `:type` suffixes stripped from the column names.

    User and item ids are typed by `steercf.data.files.typed_ids` (int64 when every id
    is a canonical integer, so they sort numerically and match ids given as numbers;
    otherwise strings). No cell is missing: every token is text.
    """
    frame = read_table(path, encoding=encoding, sep="\t", dtype=str, na_values=(), quoting=3)
    types = {}
    for column in frame.columns:
        field_name, _, field_type = column.partition(":")
        types[field_name] = field_type
    frame.columns = list(types)
    for field_name, field_type in types.items():
        values = frame[field_name]
        if field_type == "float":
            frame[field_name] = pd.to_numeric(values, errors="coerce")
        elif field_name in ("user_id", "item_id"):
            (frame[field_name],) = typed_ids(values)
    return frame


def _kg_tags(link: pd.DataFrame, kg: pd.DataFrame, item_ids: np.ndarray) -> ItemTags:
    """One "relation:entity" tag per (movie, relation, other entity) triple, count 1 each.

    `film.film.<r>` triples have the film as head and are named `<r>`; inverse triples such as
    `film.director.film` have it as tail and take the name of the relation they invert.
    """
    entity_to_item = link[["entity_id", "item_id"]]
    relation = kg["relation_id"].astype(str)
    parts = relation.str.split(".", n=2, expand=True).reindex(columns=[0, 1, 2])
    film_is_head = parts[1] == "film"
    head_side = pd.DataFrame({"entity_id": kg["head_id"], "tag": parts[2] + ":" + kg["tail_id"]})[
        film_is_head
    ]
    inverse_name = parts[1].map(_INVERSE_RELATIONS).fillna(parts[1] + "_of")
    tail_side = pd.DataFrame(
        {"entity_id": kg["tail_id"], "tag": inverse_name + ":" + kg["head_id"]}
    )[~film_is_head]
    triples = pd.concat([head_side, tail_side]).merge(entity_to_item, on="entity_id")
    return tags_from_pairs(triples["item_id"], triples["tag"], item_ids, unique=True)


def _load_grouplens_100k(
    directory: Path, min_rating: float, min_user_positives: int, encoding: str | None = None
) -> InteractionData:
    """GroupLens ML-100K: tab-separated `u.data`, pipe-separated `u.item` and `u.genre`
    (latin-1, as GroupLens ships them, unless `encoding` says otherwise)."""
    meta_encoding = encoding or "latin-1"
    ratings = read_table(
        directory / "u.data",
        encoding=encoding or "utf-8",
        sep="\t",
        header=None,
        names=["user", "item", "rating", "timestamp"],
        usecols=["user", "item", "rating"],
        dtype={"user": str, "item": str, "rating": np.float32},
    )
    (ratings["user"],) = typed_ids(ratings["user"])
    genre_names = list(ML100K_GENRES)
    genre_file = directory / "u.genre"
    if genre_file.is_file():
        listed = read_table(genre_file, sep="|", header=None, encoding=meta_encoding).dropna()
        if len(listed) == len(ML100K_GENRES):
            genre_names = [str(g) for g in listed[0]]
    items = None
    genre_rows = None
    item_file = directory / "u.item"
    if item_file.is_file():
        meta = read_table(
            item_file,
            sep="|",
            header=None,
            encoding=meta_encoding,
            text_columns=("title",),
            names=["item", "title", "release_date", "video_release_date", "url", *genre_names],
            dtype={"item": str},
        )
        # one id type for both files, so the titles still match the ratings
        ratings["item"], meta["item"] = typed_ids(ratings["item"], meta["item"])
        meta = meta.set_index("item")
        flags = meta[genre_names].fillna(0).astype(bool)
        genres_text = flags.astype(int).dot(pd.Index(genre_names) + "|").str.rstrip("|")
        items = pd.DataFrame({"title": meta["title"], "genres": genres_text})
        rows, cols = np.nonzero(flags.to_numpy())
        genre_rows = (meta.index.to_numpy()[rows], np.asarray(genre_names)[cols])
    else:
        (ratings["item"],) = typed_ids(ratings["item"])
    data = from_dataframe(
        ratings,
        rating_col="rating",
        min_rating=min_rating,
        min_user_positives=min_user_positives,
        items=items,
        name="ml-100k",
    )
    if genre_rows is not None:
        data.tags["genres"] = tags_from_pairs(*genre_rows, data.item_ids, names=genre_names)
    return data


def _single(directory: Path, pattern: str) -> Path:
    matches = sorted(directory.glob(pattern))
    if len(matches) != 1:
        raise InputError(
            f"expected exactly one {pattern} file in {directory}, found {len(matches)}"
        )
    return matches[0]
