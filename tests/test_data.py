"""Data loading: binarisation protocol, MovieLens layouts, tags, id look-ups, offline download."""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from steercf.data import (
    DownloadError,
    InteractionData,
    ItemTags,
    default_cache_dir,
    download_movielens,
    from_dataframe,
    load_dataset,
    load_ml1m,
    load_ml100k,
    load_movielens_csv,
)
from steercf.data import download as download_module
from steercf.data import movielens as movielens_module
from steercf.errors import InputError, UnknownIdError


def _recbole_dir() -> Path:
    directory = movielens_module._recbole_ml100k_dir()
    if directory is None:
        pytest.skip("recbole (and its embedded ML-100K copy) is not installed")
    return directory


def _expected_counts(
    frame: pd.DataFrame, user: str, item: str, rating: str, min_rating: float, min_pos: int
) -> tuple[int, int, int]:
    """(n_users, n_items, nnz) of the protocol, computed the plain pandas way."""
    positives = frame[frame[rating] >= min_rating][[user, item]].drop_duplicates()
    per_user = positives.groupby(user)[item].size()
    kept = positives[positives[user].isin(per_user[per_user >= min_pos].index)]
    return kept[user].nunique(), kept[item].nunique(), len(kept)


def _assert_binary_canonical(data: InteractionData) -> None:
    m = data.matrix
    assert sp.isspmatrix_csr(m) and m.dtype == np.float32
    assert np.all(m.data == 1.0)
    assert m.has_sorted_indices
    deduped = m.copy()
    deduped.sum_duplicates()
    assert deduped.nnz == m.nnz
    # every kept user and item has at least one positive
    assert np.all(np.diff(m.indptr) > 0)
    assert np.all(np.bincount(m.indices, minlength=m.shape[1]) > 0)
    assert len(data.items) == data.n_items and list(data.items.index) == list(data.item_ids)


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(url: str):
        raise AssertionError(f"a test tried to reach the network: {url}")

    monkeypatch.setattr(download_module, "_fetch", refuse)


@pytest.fixture(scope="module")
def ml100k() -> InteractionData:
    _recbole_dir()
    return load_ml100k(min_rating=4.0, min_user_positives=5)


@pytest.fixture(scope="module")
def ml_small(shared_data: Path) -> InteractionData:
    return load_movielens_csv(shared_data / "ml-latest-small", min_tag_count=1)


# ---------------------------------------------------------------- ML-100K (recbole copy)


def test_ml100k_matches_independent_count(ml100k: InteractionData) -> None:
    raw = pd.read_csv(_recbole_dir() / "ml-100k.inter", sep="\t")
    raw.columns = ["user", "item", "rating", "timestamp"]
    assert (ml100k.n_users, ml100k.n_items, ml100k.matrix.nnz) == _expected_counts(
        raw, "user", "item", "rating", 4.0, 5
    )
    _assert_binary_canonical(ml100k)
    assert np.all(np.diff(ml100k.user_ids) > 0) and np.all(np.diff(ml100k.item_ids) > 0)
    for i in (0, 17, ml100k.n_users - 1):
        assert ml100k.user_index(ml100k.user_ids[i]) == i
    for j in (0, 99, ml100k.n_items - 1):
        assert ml100k.item_index(ml100k.item_ids[j]) == j
    np.testing.assert_array_equal(
        ml100k.item_index(ml100k.item_ids[[5, 2, 7]]), np.array([5, 2, 7])
    )
    # user 196 rated item 242 with 3 (not a positive) and item 251 with 3 too; 257 with 2.
    positives_196 = raw[(raw.user == 196) & (raw.rating >= 4)]["item"]
    row = ml100k.matrix[ml100k.user_index(196)]
    assert sorted(ml100k.item_ids[row.indices]) == sorted(positives_196)


def test_ml100k_genres_and_titles(ml100k: InteractionData) -> None:
    genres = ml100k.tags["genres"]
    assert genres.matrix.shape == (ml100k.n_items, 19)
    toy_story = int(ml100k.item_index(1))
    assert ml100k.titles([toy_story]) == ["Toy Story (1995)"]
    assert set(genres.tags_of(toy_story)) == {"Animation", "Children's", "Comedy"}
    assert toy_story in genres.items_with("Animation")
    assert toy_story not in genres.items_with("Drama")
    assert set(genres.matrix.data) == {1.0}


def test_ml100k_kg_tags(ml100k: InteractionData) -> None:
    kg = ml100k.tags["kg"]
    assert kg.matrix.shape[0] == ml100k.n_items and set(kg.matrix.data) == {1.0}
    relations = {name.split(":", 1)[0] for name in kg.names}
    assert {"directed_by", "actor", "written_by", "produced_by", "genre", "language"} <= relations
    assert not any(r.startswith("film.") for r in relations)

    # Independent check: Toy Story's directors straight from the triples.
    directory = _recbole_dir()
    link = pd.read_csv(directory / "ml-100k.link", sep="\t", dtype=str)
    triples = pd.read_csv(directory / "ml-100k.kg", sep="\t", dtype=str)
    triples.columns = ["head", "relation", "tail"]
    entity = link.set_index("item_id:token").loc["1", "entity_id:token"]
    directors = triples[(triples.relation == "film.film.directed_by") & (triples["head"] == entity)]
    expected = {f"directed_by:{t}" for t in directors["tail"]}
    assert expected == {"directed_by:m.04jspq"}  # John Lasseter
    toy_story_tags = set(kg.tags_of(int(ml100k.item_index(1))))
    assert {t for t in toy_story_tags if t.startswith("directed_by:")} == expected
    # film.producer.film has the film as tail: it must land on the same "produced_by" tags
    producers = triples[(triples.relation == "film.producer.film") & (triples["tail"] == entity)]
    assert len(producers) > 0
    assert {f"produced_by:{h}" for h in producers["head"]} <= toy_story_tags
    assert len(kg.items_with("directed_by:m.04jspq")) >= 1


def test_ml100k_grouplens_layout_when_recbole_is_missing(
    ml100k: InteractionData, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Rewrite the recbole copy in the GroupLens layout, as download_movielens would cache it.
    cached = tmp_path / "ml-100k"
    cached.mkdir()
    directory = _recbole_dir()
    inter = pd.read_csv(directory / "ml-100k.inter", sep="\t")
    inter.to_csv(cached / "u.data", sep="\t", header=False, index=False)
    meta = pd.read_csv(directory / "ml-100k.item", sep="\t", dtype=str)
    lines = []
    for item, title, year, genres in meta.itertuples(index=False):
        flags = "|".join(str(int(g in genres.split())) for g in movielens_module.ML100K_GENRES)
        lines.append(f"{item}|{title} ({year})|01-Jan-{year}||http://imdb|{flags}\n")
    (cached / "u.item").write_text("".join(lines), encoding="latin-1", errors="replace")

    monkeypatch.setattr(movielens_module, "_recbole_ml100k_dir", lambda: None)
    monkeypatch.setenv("STEERCF_CACHE", str(tmp_path))
    grouplens = load_dataset("ml-100k")  # the cache hit means no network
    assert (grouplens.matrix != ml100k.matrix).nnz == 0
    np.testing.assert_array_equal(grouplens.item_ids, ml100k.item_ids)
    assert grouplens.titles([0, 1]) == ml100k.titles([0, 1])
    assert list(grouplens.tags["genres"].names) == list(ml100k.tags["genres"].names)
    assert (grouplens.tags["genres"].matrix != ml100k.tags["genres"].matrix).nnz == 0


def test_ml100k_without_recbole_explains_options(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(movielens_module, "_recbole_ml100k_dir", lambda: None)
    monkeypatch.setenv("STEERCF_CACHE", str(tmp_path))
    assert default_cache_dir() == tmp_path
    with pytest.raises(InputError, match="recbole.*download_movielens"):
        load_ml100k()


# ---------------------------------------------------------------- ml-latest-small


def test_ml_latest_small_matches_independent_count(
    ml_small: InteractionData, shared_data: Path
) -> None:
    raw = pd.read_csv(shared_data / "ml-latest-small" / "ratings.csv")
    assert (ml_small.n_users, ml_small.n_items, ml_small.matrix.nnz) == _expected_counts(
        raw, "userId", "movieId", "rating", 4.0, 5
    )
    _assert_binary_canonical(ml_small)
    genres = ml_small.tags["genres"]
    assert "(no genres listed)" not in set(genres.names)
    toy_story = int(ml_small.item_index(1))
    assert ml_small.titles(toy_story) == ["Toy Story (1995)"]
    assert set(genres.tags_of(toy_story)) == {
        "Adventure",
        "Animation",
        "Children",
        "Comedy",
        "Fantasy",
    }


def test_ml_latest_small_user_tags(ml_small: InteractionData, shared_data: Path) -> None:
    tags = ml_small.tags["tags"]
    assert all(n == n.lower().strip() and n for n in tags.names)
    applications = ml_small.tag_applications
    assert applications is not None and list(applications.columns) == ["user", "item", "tag"]
    assert applications["item"].isin(ml_small.item_ids).all()
    assert applications["tag"].str.lower().eq(applications["tag"]).all()
    # counts are per application: compare one tag with a direct count on the raw file
    raw = pd.read_csv(shared_data / "ml-latest-small" / "tags.csv")
    raw = raw[raw.movieId.isin(ml_small.item_ids)]
    raw_tag = raw.tag.str.strip().str.lower()
    expected = raw[raw_tag == "pixar"].groupby("movieId").size()
    column = tags.matrix[:, tags.index("pixar")].toarray().ravel()
    got = pd.Series(column, index=ml_small.item_ids)
    assert got[got > 0].to_dict() == expected.astype(float).to_dict()
    assert tags.index("Pixar") == tags.index("pixar")  # unique case-insensitive match

    filtered = load_movielens_csv(shared_data / "ml-latest-small", min_tag_count=3)
    totals = np.asarray(filtered.tags["tags"].matrix.sum(axis=0)).ravel()
    assert totals.min() >= 3 and 0 < len(totals) < tags.n_tags
    full_totals = np.asarray(tags.matrix.sum(axis=0)).ravel()
    assert set(filtered.tags["tags"].names) == set(tags.names[full_totals >= 3])
    assert filtered.tags["tags"].filter(1000).n_tags == 0


# ---------------------------------------------------------------- ML-1M layout


def test_ml1m_layout(tmp_path: Path) -> None:
    ratings = [(u, i, r) for u in (1, 2, 10) for i, r in ((1, 5), (2, 4), (3, 4), (4, 2))]
    ratings.append((3, 1, 5))  # a single positive: user 3 is dropped
    (tmp_path / "ratings.dat").write_text(
        "".join(f"{u}::{i}::{r}::97830{u}{i}\n" for u, i, r in ratings)
    )
    (tmp_path / "movies.dat").write_bytes(
        "1::Star Wars: Episode IV (1977)::Action|Sci-Fi\n"
        "2::Amélie (2001)::Comedy|Romance\n"
        "3::Heat (1995)::Action|Crime|Thriller\n"
        "4::Babe (1995)::Children's|Comedy\n".encode("latin-1")
    )
    data = load_ml1m(tmp_path, min_user_positives=2)
    assert data.matrix.shape == (3, 3) and data.matrix.nnz == 9
    np.testing.assert_array_equal(data.user_ids, [1, 2, 10])
    np.testing.assert_array_equal(data.item_ids, [1, 2, 3])  # item 4 has no positive
    assert data.titles([0, 1]) == ["Star Wars: Episode IV (1977)", "Amélie (2001)"]
    genres = data.tags["genres"]
    assert set(genres.tags_of(0)) == {"Action", "Sci-Fi"}
    assert list(genres.items_with("Action")) == [0, 2]
    assert load_dataset(str(tmp_path), min_user_positives=2).matrix.nnz == 9


# ---------------------------------------------------------------- from_dataframe


def test_from_dataframe_protocol_with_string_ids() -> None:
    df = pd.DataFrame(
        {
            "user": ["b", "a", "a", "a", "b", "b", "c"],
            "item": ["10", "9", "9", "10", "9", "x", "9"],
            "rating": [5, 4, 4.5, 3, 4, 1, 5],
        }
    )
    data = from_dataframe(df, rating_col="rating", min_user_positives=2)
    # a: 9 (duplicate collapses) -> 1 positive, dropped; b: 10, 9 -> kept; c: 1 positive, dropped
    assert list(data.user_ids) == ["b"]
    assert list(data.item_ids) == ["9", "10"]  # numeric-looking strings sort by value
    assert data.matrix.toarray().tolist() == [[1.0, 1.0]]
    assert data.titles([0, 1]) == ["9", "10"]
    assert data.item_index(10) == 1  # ints are matched against string ids
    no_ratings = from_dataframe(df, min_user_positives=1)  # every row positive
    assert no_ratings.matrix.nnz == df[["user", "item"]].drop_duplicates().shape[0]


def test_from_dataframe_items_metadata_and_numeric_sort() -> None:
    df = pd.DataFrame({"user": [2, 2, 1, 1], "item": [100, 20, 3, 100]})
    items = pd.DataFrame({"title": ["Hundred", "Three"]}, index=[100, 3])
    data = from_dataframe(df, min_user_positives=1, items=items)
    np.testing.assert_array_equal(data.user_ids, [1, 2])
    np.testing.assert_array_equal(data.item_ids, [3, 20, 100])
    assert data.titles([0, 1, 2]) == ["Three", "20", "Hundred"]
    assert data.matrix.toarray().tolist() == [[1, 0, 1], [0, 1, 1]]


@pytest.mark.parametrize(
    ("frame", "kwargs", "message"),
    [
        (pd.DataFrame({"user": [1]}), {}, "missing column 'item'"),
        (pd.DataFrame({"u": [1], "i": [2]}), {"rating_col": "r"}, "'user', 'item', 'r'"),
        (pd.DataFrame({"user": [], "item": []}), {}, "empty"),
        (pd.DataFrame({"user": [1, None], "item": [1, 2]}), {}, "'user' has 1 missing"),
        (
            pd.DataFrame({"user": [1, 2], "item": [1, 2], "r": [4.0, np.nan]}),
            {"rating_col": "r"},
            "'r' has 1 missing",
        ),
        (
            pd.DataFrame({"user": [1, 2], "item": [1, 2], "r": ["5", "great"]}),
            {"rating_col": "r"},
            "non-numeric values: 'great'",
        ),
        (
            pd.DataFrame({"user": [1, 2], "item": [1, 2], "r": [1, 3]}),
            {"rating_col": "r"},
            "no rating is >= min_rating=4",
        ),
        (
            pd.DataFrame({"user": [1, 1, 2], "item": [1, 1, 2]}),
            {"min_user_positives": 2},
            "min_user_positives=2.*most any user has is 1",
        ),
    ],
)
def test_from_dataframe_errors(frame: pd.DataFrame, kwargs: dict, message: str) -> None:
    with pytest.raises(InputError, match=message):
        from_dataframe(frame, **kwargs)


# ---------------------------------------------------------------- unknown ids and tags


def test_unknown_ids_are_named(ml100k: InteractionData) -> None:
    with pytest.raises(UnknownIdError, match="unknown user id: 99999"):
        ml100k.user_index(99999)
    with pytest.raises(UnknownIdError) as caught:
        ml100k.item_index(list(range(100000, 100015)) + [1])
    text = str(caught.value)
    assert "100000" in text and "100009" in text and "100010" not in text and "5 more" in text
    assert isinstance(caught.value, KeyError)
    assert ml100k.user_index("196") == ml100k.user_index(196)
    with pytest.raises(UnknownIdError, match="'abc'"):
        ml100k.user_index("abc")


def test_item_tags_unknown_lists_close_matches() -> None:
    tags = ItemTags(
        matrix=sp.csr_matrix(np.array([[2, 0, 2], [0, 1, 1]], dtype=np.float32)),
        names=np.array(["Comedy", "Drama", "Crime"]),
    )
    with pytest.raises(UnknownIdError, match="'Comedi'.*close matches: 'Comedy'"):
        tags.index("Comedi")
    with pytest.raises(UnknownIdError, match="unknown tag 'zzz'"):
        tags.index("zzz")
    assert tags.index("drama") == 1
    np.testing.assert_array_equal(tags.items_with("Crime"), [0, 1])
    kept = tags.filter(2)
    assert list(kept.names) == ["Comedy", "Crime"] and kept.matrix.shape == (2, 2)


# ---------------------------------------------------------------- load_dataset


def test_load_dataset_specs(shared_data: Path, tmp_path: Path, ml_small: InteractionData) -> None:
    by_dir = load_dataset(str(shared_data / "ml-latest-small"))
    assert by_dir.matrix.nnz == ml_small.matrix.nnz and "tags" in by_dir.tags
    ratings = pd.read_csv(shared_data / "ml-latest-small" / "ratings.csv")
    ratings.head(5000).to_csv(tmp_path / "few.csv", index=False)
    from_file = load_dataset(str(tmp_path / "few.csv"))
    assert (
        from_file.n_users
        == _expected_counts(ratings.head(5000), "userId", "movieId", "rating", 4.0, 5)[0]
    )
    with pytest.raises(InputError, match="ml-latest-small.*ratings.csv"):
        load_dataset("no-such-data-set")


# ---------------------------------------------------------------- download (offline)


@pytest.fixture()
def served_zip(shared_data: Path, tmp_path: Path) -> dict[str, bytes]:
    """ml-latest-small as GroupLens serves it: a zip with one top folder, plus its .md5 file."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for name in ("ratings.csv", "movies.csv", "tags.csv"):
            zf.write(shared_data / "ml-latest-small" / name, f"ml-latest-small/{name}")
    payload = buffer.getvalue()
    md5 = hashlib.md5(payload).hexdigest()
    return {
        "ml-latest-small.zip": payload,
        "ml-latest-small.zip.md5": f"MD5 (ml-latest-small.zip) = {md5}\n".encode(),
    }


def _serve(monkeypatch: pytest.MonkeyPatch, files: dict[str, bytes], sizes=None) -> list[str]:
    """Replace the network with `files`; return the list of URLs requested."""
    requested: list[str] = []

    def fake_fetch(url: str):
        requested.append(url)
        body = files[url.rsplit("/", 1)[-1]]
        size = (sizes or {}).get(url.rsplit("/", 1)[-1], len(body))
        return io.BytesIO(body), size

    monkeypatch.setattr(download_module, "_fetch", fake_fetch)
    return requested


def test_download_extracts_and_caches(
    served_zip: dict[str, bytes], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    requested = _serve(monkeypatch, served_zip)
    directory = download_movielens("ml-latest-small", cache_dir=cache, progress=False)
    assert directory == cache / "ml-latest-small"
    assert (directory / "ratings.csv").is_file() and (directory / "tags.csv").is_file()
    assert requested == [
        "https://files.grouplens.org/datasets/movielens/ml-latest-small.zip.md5",
        "https://files.grouplens.org/datasets/movielens/ml-latest-small.zip",
    ]
    assert sorted(p.name for p in cache.iterdir()) == ["ml-latest-small"]  # no temp leftovers

    monkeypatch.setattr(download_module, "_fetch", lambda url: pytest.fail("network on cache hit"))
    assert download_movielens("ml-latest-small", cache_dir=cache) == directory
    data = load_dataset("ml-latest-small", data_dir=cache)
    assert data.n_users > 0 and "tags" in data.tags


def test_download_rejects_bad_checksum(
    served_zip: dict[str, bytes], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    served_zip["ml-latest-small.zip.md5"] = b"0123456789abcdef0123456789abcdef  ml-latest-small.zip"
    _serve(monkeypatch, served_zip)
    with pytest.raises(DownloadError, match="checksum mismatch"):
        download_movielens("ml-latest-small", cache_dir=tmp_path, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_download_rejects_size_mismatch(
    served_zip: dict[str, bytes], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    size = len(served_zip["ml-latest-small.zip"]) + 10
    _serve(monkeypatch, served_zip, sizes={"ml-latest-small.zip": size})
    with pytest.raises(DownloadError, match="truncated"):
        download_movielens("ml-latest-small", cache_dir=tmp_path, progress=False)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("member", ["../evil.txt", "/tmp/evil.txt", "ml-1m/../../evil.txt"])
def test_download_rejects_zip_slip(
    member: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("ml-1m/ratings.dat", "1::1::5::0\n")
        zf.writestr(member, "pwned")
    payload = buffer.getvalue()
    md5 = hashlib.md5(payload).hexdigest()
    _serve(monkeypatch, {"ml-1m.zip": payload, "ml-1m.zip.md5": md5.encode()})
    cache = tmp_path / "cache"
    with pytest.raises(DownloadError, match="unsafe archive member"):
        download_movielens("ml-1m", cache_dir=cache, progress=False)
    assert not (tmp_path / "evil.txt").exists()
    assert list(cache.iterdir()) == []


def test_download_unknown_name(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="ml-25m"):
        download_movielens("ml-7m", cache_dir=tmp_path)


def test_offline_download_says_how_to_use_a_local_copy(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def offline(url: str):
        raise OSError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(download_module, "_fetch", offline)
    with pytest.raises(DownloadError, match="name resolution.*pass the folder of an unpacked copy"):
        download_movielens("ml-latest-small", cache_dir=tmp_path, progress=False)
