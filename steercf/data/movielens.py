"""Loaders for the MovieLens family and a `load_dataset` entry point.

Supported layouts:
- RecBole atomic files (`*.inter`, `*.item`, `*.link`, `*.kg`): the MovieLens 100K copy that
  ships inside the recbole wheel is the embedded default data set.
- GroupLens ML-100K (`u.data`, `u.item`), ML-1M / ML-10M (`ratings.dat`, `movies.dat`) and
  ml-latest(-small) / ML-20M / ML-25M (`ratings.csv`, `movies.csv`, optional `tags.csv`).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd

from steercf.data.download import GROUPLENS_NAMES, default_cache_dir, download_movielens
from steercf.data.interactions import InteractionData, ItemTags, from_dataframe, tags_from_pairs
from steercf.errors import InputError

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

_NO_GENRES = "(no genres listed)"


def load_ml100k(
    path: str | Path | None = None, min_rating: float = 4.0, min_user_positives: int = 5
) -> InteractionData:
    """MovieLens 100K with genre and Freebase knowledge-graph tags.

    Args:
        path: a folder in RecBole layout (`ml-100k.inter`, ...) or GroupLens layout (`u.data`,
            `u.item`). Default: the copy inside the installed recbole wheel, else a copy
            previously downloaded with `download_movielens("ml-100k")`.

    Returns:
        InteractionData (n_users, n_items) with `tags["genres"]` (19 genres) and, for the
        RecBole layout, `tags["kg"]` with one "relation:entity" tag per Freebase triple.
    """
    directory = Path(path) if path is not None else _default_ml100k_dir()
    if (directory / "u.data").is_file():
        return _load_grouplens_100k(directory, min_rating, min_user_positives)
    if list(directory.glob("*.inter")):
        return _load_recbole(directory, min_rating, min_user_positives)
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


def _load_recbole(directory: Path, min_rating: float, min_user_positives: int) -> InteractionData:
    """RecBole atomic files: `<name>.inter` plus optional `.item`, `.link`, `.kg`."""
    inter_path = _single(directory, "*.inter")
    stem = inter_path.stem
    inter = _read_atomic(inter_path)
    rating_col = "rating" if "rating" in inter.columns else None
    items = None
    genre_rows: pd.DataFrame | None = None
    item_path = directory / f"{stem}.item"
    if item_path.is_file():
        meta = _read_atomic(item_path).drop_duplicates("item_id").set_index("item_id")
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
        data.tags["kg"] = _kg_tags(_read_atomic(link_path), _read_atomic(kg_path), data.item_ids)
    return data


def _read_atomic(path: Path) -> pd.DataFrame:
    """A RecBole atomic file with the `:type` suffixes stripped from the column names.

    User and item ids made only of digits are read as int64, so they sort numerically and
    match ids given as numbers; other tokens stay strings.
    """
    frame = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, quoting=3)
    types = {}
    for column in frame.columns:
        field_name, _, field_type = column.partition(":")
        types[field_name] = field_type
    frame.columns = list(types)
    for field_name, field_type in types.items():
        values = frame[field_name]
        if field_type == "float":
            frame[field_name] = pd.to_numeric(values, errors="coerce")
        elif field_name in ("user_id", "item_id") and _all_digits(values):
            frame[field_name] = values.astype(np.int64)
    return frame


def _all_digits(values: pd.Series) -> bool:
    # "007" would not survive the round trip through int, so leading zeros keep strings
    return bool(values.str.isdigit().all() and not values.str.match(r"0\d").any())


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
    directory: Path, min_rating: float, min_user_positives: int
) -> InteractionData:
    """GroupLens ML-100K: tab-separated `u.data`, pipe-separated latin-1 `u.item`."""
    ratings = pd.read_csv(
        directory / "u.data",
        sep="\t",
        header=None,
        names=["user", "item", "rating", "timestamp"],
        usecols=["user", "item", "rating"],
        dtype={"user": np.int64, "item": np.int64, "rating": np.float32},
    )
    genre_names = list(ML100K_GENRES)
    genre_file = directory / "u.genre"
    if genre_file.is_file():
        listed = pd.read_csv(genre_file, sep="|", header=None, encoding="latin-1").dropna()
        if len(listed) == len(ML100K_GENRES):
            genre_names = [str(g) for g in listed[0]]
    items = None
    genre_rows = None
    item_file = directory / "u.item"
    if item_file.is_file():
        meta = pd.read_csv(
            item_file,
            sep="|",
            header=None,
            encoding="latin-1",
            names=["item", "title", "release_date", "video_release_date", "url", *genre_names],
        ).set_index("item")
        flags = meta[genre_names].fillna(0).astype(bool)
        genres_text = flags.astype(int).dot(pd.Index(genre_names) + "|").str.rstrip("|")
        items = pd.DataFrame({"title": meta["title"], "genres": genres_text})
        rows, cols = np.nonzero(flags.to_numpy())
        genre_rows = (meta.index.to_numpy()[rows], np.asarray(genre_names)[cols])
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


def load_movielens_csv(
    directory: str | Path,
    min_rating: float = 4.0,
    min_user_positives: int = 5,
    min_tag_count: int = 1,
) -> InteractionData:
    """ml-latest(-small) / ML-20M / ML-25M: `ratings.csv`, `movies.csv`, optional `tags.csv`.

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
    ratings = pd.read_csv(
        ratings_path,
        usecols=["userId", "movieId", "rating"],
        dtype={"userId": np.int64, "movieId": np.int64, "rating": np.float32},
    )
    movies = None
    movies_path = directory / "movies.csv"
    if movies_path.is_file():
        movies = pd.read_csv(
            movies_path, dtype={"movieId": np.int64, "title": str, "genres": str}
        ).set_index("movieId")
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

    tags_path = directory / "tags.csv"
    if tags_path.is_file():
        applied = pd.read_csv(
            tags_path,
            usecols=["userId", "movieId", "tag"],
            dtype={"userId": np.int64, "movieId": np.int64, "tag": str},
        )
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
    directory: str | Path, min_rating: float = 4.0, min_user_positives: int = 5
) -> InteractionData:
    """ML-1M (and ML-10M) `::`-separated files: `ratings.dat`, optional `movies.dat`.

    Returns:
        InteractionData (n_users, n_items) with `tags["genres"]` when movies.dat exists.
    """
    directory = Path(directory)
    ratings_path = directory / "ratings.dat"
    if not ratings_path.is_file():
        raise InputError(f"{directory} has no ratings.dat (expected the ML-1M layout)")
    # "a::b::c::d" read with the fast C parser as ":"-separated fields a,,b,,c,,d
    ratings = pd.read_csv(
        ratings_path,
        sep=":",
        header=None,
        usecols=[0, 2, 4],
        names=["user", "item", "rating"],
        dtype={"user": np.int64, "item": np.int64, "rating": np.float32},
    )
    movies = None
    movies_path = directory / "movies.dat"
    if movies_path.is_file():
        # titles contain ":" so this small file needs the exact "::" separator
        movies = pd.read_csv(
            movies_path,
            sep="::",
            engine="python",
            header=None,
            names=["item", "title", "genres"],
            encoding="latin-1",
            dtype={"item": np.int64, "title": str, "genres": str},
        ).set_index("item")
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


def load_dataset(
    spec: str,
    data_dir: str | Path | None = None,
    min_rating: float = 4.0,
    min_user_positives: int = 5,
    min_tag_count: int = 1,
) -> InteractionData:
    """Load a data set by name or path.

    Args:
        spec: "ml-100k" (embedded copy, downloaded when recbole is missing); a GroupLens name
            (ml-latest-small, ml-1m, ml-20m, ml-25m), downloaded once into the cache; a folder
            in any supported layout; or a .csv / .tsv / .parquet file with columns
            user,item[,rating] or userId,movieId[,rating].
        data_dir: download cache for GroupLens names (default `default_cache_dir()`).

    Returns:
        InteractionData after the binarisation protocol (see `from_dataframe`).
    """
    spec = str(spec)
    if spec == "ml-100k" and _recbole_ml100k_dir() is not None:
        return load_ml100k(None, min_rating, min_user_positives)
    path = Path(spec).expanduser()
    if path.is_dir():
        return _load_directory(path, min_rating, min_user_positives, min_tag_count)
    if path.is_file():
        return _load_table(path, min_rating, min_user_positives)
    if spec in GROUPLENS_NAMES:
        directory = download_movielens(spec, cache_dir=data_dir)
        return _load_directory(directory, min_rating, min_user_positives, min_tag_count)
    raise InputError(
        f"unknown data set {spec!r}: expected 'ml-100k', a GroupLens name "
        f"({', '.join(n for n in GROUPLENS_NAMES if n != 'ml-100k')}), a folder holding "
        "ratings.csv, ratings.dat, u.data or *.inter, or a .csv/.tsv/.parquet file with "
        "columns user,item[,rating] or userId,movieId[,rating]"
    )


def _load_directory(
    directory: Path, min_rating: float, min_user_positives: int, min_tag_count: int
) -> InteractionData:
    if (directory / "ratings.csv").is_file():
        return load_movielens_csv(directory, min_rating, min_user_positives, min_tag_count)
    if (directory / "ratings.dat").is_file():
        return load_ml1m(directory, min_rating, min_user_positives)
    if (directory / "u.data").is_file() or list(directory.glob("*.inter")):
        return load_ml100k(directory, min_rating, min_user_positives)
    raise InputError(
        f"{directory} has no recognised layout: expected ratings.csv (ml-latest, ML-20M/25M), "
        "ratings.dat (ML-1M), u.data (ML-100K) or a RecBole *.inter file"
    )


def _load_table(path: Path, min_rating: float, min_user_positives: int) -> InteractionData:
    """A single .csv / .tsv / .parquet file of (user, item[, rating]) rows."""
    suffixes = "".join(path.suffixes[-2:]).lower()
    if suffixes.endswith(".parquet"):
        frame = pd.read_parquet(path)
    elif suffixes.endswith((".csv", ".csv.gz")):
        frame = pd.read_csv(path)
    elif suffixes.endswith((".tsv", ".tsv.gz")):
        frame = pd.read_csv(path, sep="\t")
    else:
        raise InputError(f"{path}: expected a .csv, .tsv or .parquet file of interactions")
    for user_col, item_col in (("user", "item"), ("userId", "movieId"), ("user_id", "item_id")):
        if user_col in frame.columns and item_col in frame.columns:
            break
    else:
        raise InputError(
            f"{path} needs columns user,item[,rating] or userId,movieId[,rating]; "
            f"it has {list(frame.columns)}"
        )
    return from_dataframe(
        frame,
        user_col=user_col,
        item_col=item_col,
        rating_col="rating" if "rating" in frame.columns else None,
        min_rating=min_rating,
        min_user_positives=min_user_positives,
        name=path.name.split(".")[0],
    )


def _single(directory: Path, pattern: str) -> Path:
    matches = sorted(directory.glob(pattern))
    if len(matches) != 1:
        raise InputError(
            f"expected exactly one {pattern} file in {directory}, found {len(matches)}"
        )
    return matches[0]
