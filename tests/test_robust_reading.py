"""Issue 18, "Reading files": unreadable files are one-line errors naming the file,
strings pandas would read as missing are text, ids are read as text and found however
they are typed, and every interaction matrix means one thing (duplicates counted once,
stored zeros as nothing, NaN and infinity refused) at every entry point.

Sections: reading, canonical inputs, ids.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from steercf.cli import main
from steercf.data import InteractionData, from_dataframe, load_dataset
from steercf.data.files import read_table
from steercf.data.rows import canonical_rows
from steercf.errors import InputError, UnknownIdError
from steercf.evaluation import evaluate, ndcg_at_k, recall_at_k, split_users
from steercf.models import EASE, Popularity
from steercf.models.base import as_user_rows
from steercf.text.documents import read_table as read_documents
from steercf.text.documents import texts_from_frame

LATIN1_DOCS = b"id,text\n1,Caf\xe9 culture\n"


def cli_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Run the CLI, assert exit 2 with one ``steercf: error:`` line, return that line."""
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("steercf: error: "), err
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err
    return err


def interactions_csv(path: Path, users: list, n_items: int = 6, rating: bool = False) -> Path:
    """A CSV where every user rated items 1..n_items (5 stars when ``rating``)."""
    rows = [(u, i) for u in users for i in range(1, n_items + 1)]
    frame = pd.DataFrame(rows, columns=["user", "item"])
    if rating:
        frame["rating"] = 5
    frame.to_csv(path, index=False)
    return path


@pytest.fixture()
def bad_files(tmp_path: Path, shared_data: Path) -> dict[str, Path]:
    """One file of each unreadable kind."""
    files = {
        "empty": tmp_path / "empty.csv",
        "latin1": tmp_path / "latin1.csv",
        "binary": tmp_path / "binary.csv",
        "truncated": tmp_path / "truncated.csv.gz",
        "parquet": tmp_path / "broken.parquet",
    }
    files["parquet"].write_bytes(b"PAR1 not really")
    files["empty"].write_bytes(b"")
    files["latin1"].write_bytes(LATIN1_DOCS)
    files["binary"].write_bytes(bytes(np.random.default_rng(0).integers(0, 256, 4096).tolist()))
    whole = gzip.compress((shared_data / "ml-latest-small" / "ratings.csv").read_bytes())
    files["truncated"].write_bytes(whole[: len(whole) // 2])
    return files


EXPECTED = {
    "empty": "is empty",
    "latin1": "not valid utf-8 text .*--encoding",
    "binary": "binary file",
    "truncated": "truncated or corrupt compressed file",
    "parquet": "not a readable Parquet file",
}


# =============================================================================== reading


@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_unreadable_file_is_an_input_error_naming_it(bad_files, kind):
    path = bad_files[kind]
    with pytest.raises(InputError, match=f"{path.name}.*{EXPECTED[kind]}"):
        read_table(path)
    with pytest.raises(InputError, match=f"{path.name}.*{EXPECTED[kind]}"):
        load_dataset(str(path))
    with pytest.raises(InputError, match=f"{path.name}.*{EXPECTED[kind]}"):
        read_documents(path, text_columns=("text",))


@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_cli_data_on_an_unreadable_file_is_one_line_exit_2(bad_files, kind, tmp_path, capsys):
    path = bad_files[kind]
    argv = ["train", "--model", "popularity", "--data", str(path), "--out", str(tmp_path / "m")]
    assert path.name in cli_error([*argv, "--quiet"], capsys)


@pytest.mark.parametrize("command", ["embed", "train"])
@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_cli_text_commands_on_an_unreadable_file_are_one_line_exit_2(
    bad_files, kind, command, tmp_path, capsys
):
    path = bad_files[kind]
    err = cli_error(["text", command, str(path), "--out", str(tmp_path / "o"), "--quiet"], capsys)
    assert path.name in err


def test_encoding_option_reads_a_latin1_csv(tmp_path, capsys):
    documents = tmp_path / "docs.csv"
    documents.write_bytes(LATIN1_DOCS)
    frame = read_documents(documents, encoding="latin-1", text_columns=("text",))
    assert texts_from_frame(frame, "text") == ["Café culture"]

    ratings = tmp_path / "ratings.csv"
    ratings.write_bytes(
        b"user,item\n"
        + b"".join(f"u{i},Caf\xe9 {j}\n".encode("latin-1") for i in range(3) for j in range(5))
    )
    with pytest.raises(InputError, match="ratings.csv.*--encoding"):
        load_dataset(str(ratings))
    data = load_dataset(str(ratings), encoding="latin-1")
    assert "Café 0" in data.item_ids.tolist()

    # the CLI: --encoding on train is recorded, so recommend reads the file alike
    model = tmp_path / "pop"
    argv = ["train", "--model", "popularity", "--data", str(ratings), "--out", str(model)]
    assert main([*argv, "--encoding", "latin-1", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["recommend", str(model), "--user", "u1", "--quiet"]) == 0
    assert "user u1" in capsys.readouterr().out
    err = cli_error([*argv, "--encoding", "no-such-codec", "--quiet"], capsys)
    assert "unknown text encoding 'no-such-codec'" in err


def test_latin1_movies_csv_inside_a_data_directory(tmp_path, shared_data, capsys):
    directory = tmp_path / "ml"
    directory.mkdir()
    ratings = pd.read_csv(shared_data / "ml-latest-small" / "ratings.csv", nrows=3000)
    ratings.to_csv(directory / "ratings.csv", index=False)
    movie = int(ratings["movieId"].iloc[0])
    (directory / "movies.csv").write_bytes(
        f"movieId,title,genres\n{movie},Caf\xe9 (1999),Drama\n".encode("latin-1")
    )
    with pytest.raises(InputError, match="movies.csv.*not valid utf-8.*--encoding"):
        load_dataset(str(directory))
    err = cli_error(
        ["train", "--model", "popularity", "--data", str(directory), "--out", str(tmp_path / "m")],
        capsys,
    )
    assert "movies.csv" in err
    data = load_dataset(str(directory), encoding="latin-1")
    assert data.titles(data.item_index([movie])) == ["Café (1999)"]


def test_user_tags_na_null_none_are_tags(tmp_path, shared_data):
    directory = tmp_path / "ml"
    directory.mkdir()
    ratings = pd.read_csv(shared_data / "ml-latest-small" / "ratings.csv", nrows=3000)
    ratings.to_csv(directory / "ratings.csv", index=False)
    movie = int(ratings["movieId"].iloc[0])
    (directory / "tags.csv").write_text(
        "userId,movieId,tag,timestamp\n"
        + "".join(f"1,{movie},{tag},0\n" for tag in ("NA", "null", "None", "space", "", "nan"))
    )
    data = load_dataset(str(directory))
    tags = data.tags["tags"]
    assert tags.tags_of(int(data.item_index(movie))) == ["na", "nan", "none", "null", "space"]
    assert "" not in data.tag_applications["tag"].tolist()  # a truly empty cell is no tag


def test_a_document_whose_text_is_nan_is_text(tmp_path):
    path = tmp_path / "docs.csv"
    path.write_text("id,text\n1,nan\n2,NA\n3,null\n4,42\n")
    frame = read_documents(path, text_columns=("text",))
    assert texts_from_frame(frame, "text") == ["nan", "NA", "null", "42"]
    path.write_text("id,text\n1,nan\n2,\n")  # a real empty cell is still refused, by position
    frame = read_documents(path, text_columns=("text",))
    with pytest.raises(InputError, match="1 empty document.*position.*1"):
        texts_from_frame(frame, "text")


# ====================================================================== canonical inputs


class RankedList:
    """A ranker that always lists items 5, 6, 7, 8, 9, 2, 0, 1, 3, 4 (item 2 sixth)."""

    order = np.array([5, 6, 7, 8, 9, 2, 0, 1, 3, 4])

    def recommend(self, user_items, N=20, filter_seen=True):
        n = user_items.shape[0]
        return np.tile(self.order[:N], (n, 1)), np.zeros((n, min(N, 10)))


def _row(entries: list[tuple[int, float]], n_items: int = 10) -> sp.csr_matrix:
    """One CSR row storing exactly ``entries`` (duplicates and zeros kept as stored)."""
    cols = np.array([c for c, _ in entries], dtype=np.int32)
    data = np.array([v for _, v in entries], dtype=np.float32)
    return sp.csr_matrix((data, cols, np.array([0, len(entries)])), shape=(1, n_items))


@pytest.mark.parametrize(
    "stored", [[(2, 1.0), (2, 1.0)], [(2, 1.0), (4, 0.0)]], ids=["item-twice", "stored-zero"]
)
def test_evaluate_counts_a_target_stored_twice_or_beside_a_zero_once(stored):
    given = _row([(0, 1.0)])
    result = evaluate(RankedList(), given, _row(stored), ks=(8,))
    assert result.mean("recall@8") == pytest.approx(1.0)
    assert result.mean("ndcg@8") == pytest.approx(1 / np.log2(7))  # 0.356, not 0.218
    ranked = RankedList.order[None, :8]
    assert recall_at_k(ranked, _row(stored), 8)[0] == pytest.approx(1.0)
    assert ndcg_at_k(ranked, _row(stored), 8)[0] == pytest.approx(1 / np.log2(7))


def test_a_row_of_only_a_stored_zero_is_empty_everywhere():
    zero = _row([(3, 0.0)])
    assert canonical_rows(zero).nnz == 0
    with pytest.raises(InputError, match="empty history"):
        as_user_rows(zero, 10)
    model = Popularity().fit(sp.csr_matrix(np.eye(10, dtype=np.float32)))
    with pytest.raises(InputError, match="empty history"):
        model.recommend(zero)
    # evaluate skips the user (no input) rather than ranking an "empty" history
    inputs = sp.vstack([zero, _row([(0, 1.0)])]).tocsr()
    targets = sp.vstack([_row([(2, 1.0)]), _row([(2, 1.0)])]).tocsr()
    assert len(evaluate(model, inputs, targets, ks=(8,)).per_user["recall@8"]) == 1
    # and as a target: no target, so the user is skipped too
    assert len(evaluate(model, targets, inputs, ks=(8,)).per_user["recall@8"]) == 1


def test_non_finite_values_are_refused_everywhere():
    with pytest.raises(InputError, match="infinite rating"):
        from_dataframe(
            pd.DataFrame({"user": [1, 1], "item": [1, 2], "rating": [np.inf, 5.0]}),
            rating_col="rating",
            min_user_positives=1,
        )
    for value in (np.inf, np.nan):
        bad = _row([(1, value), (2, 1.0)])
        with pytest.raises(InputError, match="NaN or infinite"):
            canonical_rows(bad)
        with pytest.raises(InputError, match="NaN or infinite"):
            Popularity().fit(sp.vstack([bad, _row([(3, 1.0)])]).tocsr())
        with pytest.raises(InputError, match="NaN or infinite"):
            evaluate(RankedList(), _row([(0, 1.0)]), bad, ks=(8,))


def test_fit_recommend_and_encode_read_the_canonical_rows():
    rng = np.random.default_rng(0)
    dense = (rng.random((30, 10)) < 0.4).astype(np.float32)
    dense[np.arange(30), rng.integers(0, 10, 30)] = 1.0  # no empty row
    binary = sp.csr_matrix(dense)
    messy = binary.tocoo()
    # every entry stored twice, as 3.0 and 0.5, plus a stored zero: still "an interaction"
    rows = np.concatenate([messy.row, messy.row, [0]])
    cols = np.concatenate(
        [messy.col, messy.col, [int(np.flatnonzero(binary[0].toarray() == 0)[0])]]
    )
    data = np.concatenate([np.full(messy.nnz, 3.0), np.full(messy.nnz, 0.5), [0.0]])
    order = np.lexsort((cols, rows))
    indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=30))])
    weird = sp.csr_matrix((data[order].astype(np.float32), cols[order], indptr), shape=binary.shape)
    clean = EASE(l2=1.0, rank=4).fit(binary)
    noisy = EASE(l2=1.0, rank=4).fit(weird)
    np.testing.assert_allclose(noisy.encode(weird), clean.encode(binary), rtol=1e-4, atol=1e-5)
    ids_noisy, _ = noisy.recommend(weird, N=3)
    ids_clean, _ = clean.recommend(binary, N=3)
    np.testing.assert_array_equal(ids_noisy, ids_clean)
    assert split_users(weird, seed=1).train.nnz == split_users(binary, seed=1).train.nnz
    assert (
        InteractionData(
            weird, np.arange(30), np.arange(10), pd.DataFrame({"title": list("abcdefghij")})
        ).matrix.nnz
        == binary.nnz
    )


def test_a_string_matrix_is_an_input_error_naming_the_argument_and_dtype():
    """A string matrix given to evaluate raised scipy's dtype error: canonical_rows
    converted to CSR before checking the dtype."""
    strings = np.array([["1", "0"], ["0", "1"]])
    with pytest.raises(InputError, match=r"^user_input must hold numbers .*got dtype <U1"):
        evaluate(Popularity().fit(sp.identity(2, format="csr")), strings, sp.identity(2))
    with pytest.raises(InputError, match=r"^target must hold numbers .*got dtype object"):
        evaluate(
            Popularity().fit(sp.identity(2, format="csr")), sp.identity(2), strings.astype(object)
        )
    with pytest.raises(InputError, match=r"^m must be a 2-D"):
        canonical_rows([[1, 0], [1]], "m")


# =================================================================================== ids


def test_ids_007_and_7_are_two_users(tmp_path):
    path = interactions_csv(tmp_path / "r.csv", ["007", "7", "8"])
    data = load_dataset(str(path))
    assert sorted(data.user_ids.tolist()) == ["007", "7", "8"]
    assert data.user_index("007") != data.user_index("7")
    assert int(data.user_index(7)) == int(data.user_index("7"))  # a number finds its text


def test_huge_and_float_ids_are_found_by_recommend(tmp_path, capsys):
    huge = str(2**63 + 5)
    path = interactions_csv(tmp_path / "r.csv", [huge, "1.5", "3", "4", "5", "6"])
    model = tmp_path / "pop"
    assert main(["train", "--model", "popularity", "--data", str(path), "--out", str(model),
                 "--min-user-positives", "1", "--quiet"]) == 0  # fmt: skip
    for user in (huge, "1.5"):
        capsys.readouterr()
        assert main(["recommend", str(model), "--user", user, "--quiet"]) == 0
        assert f"user {user}" in capsys.readouterr().out


def test_lookups_convert_the_query_to_the_index_type():
    items = pd.DataFrame({"title": ["a", "b"]}, index=[10, 11])
    frame = pd.DataFrame(
        {
            "user": np.array([2**63 + 1, 2**63 + 1, 5, 5], dtype=np.uint64),
            "item": [10, 11, 10, 11],
        }
    )
    data = from_dataframe(frame, min_user_positives=1, items=items)
    assert int(data.user_index(str(2**63 + 1))) == int(data.user_index(2**63 + 1))
    floats = from_dataframe(
        pd.DataFrame({"user": [1.5, 1.5, 2.0], "item": [10, 11, 10]}), min_user_positives=1
    )
    assert int(floats.user_index("1.5")) == int(floats.user_index(1.5))
    assert int(floats.user_index("2")) == int(floats.user_index(2.0))
    with pytest.raises(UnknownIdError, match="unknown user id: 'x'"):
        floats.user_index("x")


def test_a_user_dropped_by_min_user_positives_is_reported_as_such(tmp_path, capsys):
    data = from_dataframe(
        pd.DataFrame({"user": [1] * 5 + [2] * 2, "item": list(range(5)) + [0, 1]}),
        min_user_positives=5,
    )
    with pytest.raises(UnknownIdError, match="user 2 has fewer than 5 positives and was removed"):
        data.user_index(2)
    with pytest.raises(UnknownIdError, match="unknown user id: 3"):
        data.user_index(3)

    path = interactions_csv(tmp_path / "r.csv", ["a", "b", "c"])
    with path.open("a") as f:
        f.write("few,1\nfew,2\n")
    model = tmp_path / "pop"
    assert main(["train", "--model", "popularity", "--data", str(path), "--out", str(model),
                 "--quiet"]) == 0  # fmt: skip
    err = cli_error(["recommend", str(model), "--user", "few", "--quiet"], capsys)
    assert "user 'few' has fewer than 5 positives and was removed by --min-user-positives" in err


def test_a_user_without_any_positive_is_reported_as_such():
    data = from_dataframe(
        pd.DataFrame({"user": [1, 1, 2], "item": [0, 1, 0], "rating": [5.0, 4.0, 1.0]}),
        rating_col="rating",
        min_user_positives=0,
    )
    with pytest.raises(UnknownIdError, match="user '2' has no positive .*min-rating"):
        data.user_index("2")


def ratings_dir(path: Path, users: list, items: list | None = None) -> Path:
    """An ml-latest-style folder: ratings.csv where every user rated every item 5 stars."""
    path.mkdir()
    items = items or ["1", "2", "3", "4", "5"]
    rows = [f"{u},{i},5.0,0" for u in users for i in items]
    (path / "ratings.csv").write_text("userId,movieId,rating,timestamp\n" + "\n".join(rows) + "\n")
    return path


def test_ids_007_and_7_in_a_data_directory_are_two_users(tmp_path):
    data = load_dataset(str(ratings_dir(tmp_path / "d", ["007", "7", "8"])))
    assert sorted(data.user_ids.tolist()) == ["007", "7", "8"]  # 007 keeps the column text
    assert data.user_index("007") != data.user_index("7")
    assert data.item_ids.dtype == np.int64  # canonical item ids are still integers


def test_a_float_id_in_a_data_directory_is_read_as_text(tmp_path):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no leaked pandas RuntimeWarning
        data = load_dataset(str(ratings_dir(tmp_path / "d", ["1.5", "2"])))
    assert sorted(data.user_ids.tolist()) == ["1.5", "2"]
    assert int(data.user_index(1.5)) == int(data.user_index("1.5"))


def test_ids_past_int64_in_a_data_directory_are_uint64(tmp_path):
    huge = str(2**63 + 5)
    data = load_dataset(str(ratings_dir(tmp_path / "d", [huge, "3"])))
    assert data.user_ids.dtype == np.uint64
    assert data.user_ids.tolist() == [3, 2**63 + 5]


def test_grouplens_ids_are_still_int64(shared_data):
    data = load_dataset(str(shared_data / "ml-latest-small"))
    assert data.user_ids.dtype == np.int64 and data.item_ids.dtype == np.int64
    assert data.matrix.shape == (603, 6298)
    assert (np.diff(data.user_ids) > 0).all() and (np.diff(data.item_ids) > 0).all()
    assert data.items.loc[1, "title"] == "Toy Story (1995)"
    assert data.tags["tags"].matrix.shape[0] == data.n_items
