"""The implicit-compatible wrapper: implicit's evaluation and splits run on it unchanged."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

pytest.importorskip("implicit")

from implicit.evaluation import (  # noqa: E402
    leave_k_out_split,
    precision_at_k,
    ranking_metrics_at_k,
    train_test_split,
)
from implicit.recommender_base import RecommenderBase  # noqa: E402

from steercf.data import load_ml100k  # noqa: E402
from steercf.errors import InputError, ModelFileError, UnknownIdError  # noqa: E402
from steercf.integrations.implicit import SteerCFImplicit, steercf_metrics_at_k  # noqa: E402
from steercf.models import EASE, ELSA, MultVAE, Popularity  # noqa: E402
from steercf.models.spliced import SplicedRecommender  # noqa: E402
from steercf.sae import TrainConfig  # noqa: E402
from steercf.steering import Knob, steer  # noqa: E402


@pytest.fixture(scope="module")
def matrix() -> sp.csr_matrix:
    torch.set_num_threads(1)
    return load_ml100k().matrix


@pytest.fixture(scope="module")
def loo(matrix):
    """implicit's leave-5-out split: every test user keeps a training history."""
    return leave_k_out_split(matrix, K=5, random_state=0)


@pytest.fixture(scope="module")
def ease(loo) -> SteerCFImplicit:
    return SteerCFImplicit(EASE(l2=300.0)).fit(loo[0], show_progress=False)


def small_elsa(seed: int = 0) -> ELSA:
    return ELSA(factors=32, lr=1e-2, batch_size=128, epochs=3, seed=seed, progress=False)


@pytest.fixture(scope="module")
def spliced(loo) -> SteerCFImplicit:
    model = SplicedRecommender(
        small_elsa(),
        {"k": 8, "expansion": 4},
        TrainConfig(max_epochs=5, patience=5, progress=False),
        augment=1,
    )
    return SteerCFImplicit(model).fit(loo[0], show_progress=False)


@pytest.mark.parametrize("which", ["ease", "spliced"])
def test_ranking_metrics_at_k_matches_steercfs_evaluator(which, loo, request) -> None:
    model = request.getfixturevalue(which)
    train, test = loo
    assert isinstance(model, RecommenderBase)
    theirs = ranking_metrics_at_k(model, train, test, K=10, show_progress=False)
    ours = steercf_metrics_at_k(model.model, train, test, K=10)
    assert ours["users"] == int((np.diff(test.indptr) > 0).sum())
    assert theirs["precision"] == pytest.approx(ours["precision"], abs=1e-9)
    assert theirs["ndcg"] == pytest.approx(ours["ndcg"], abs=1e-9)
    # Far above chance (10 random items of ~1.4k give precision ~0.004).
    assert theirs["precision"] > 0.1
    assert precision_at_k(model, train, test, K=10, show_progress=False) == theirs["precision"]


def test_train_test_split_and_users_with_no_training_items(matrix) -> None:
    train, test = train_test_split(matrix, train_percentage=0.8, random_state=1)
    model = SteerCFImplicit(small_elsa()).fit(train, show_progress=False)
    metrics = ranking_metrics_at_k(model, train, test, K=10, show_progress=False)
    assert 0.05 < metrics["precision"] < 1 and 0.05 < metrics["ndcg"] < 1
    # A user whose items all went to the test side gets the training popularity ranking.
    empty = sp.csr_matrix((1, matrix.shape[1]), dtype=np.float32)
    ids, _ = model.recommend(0, empty, recalculate_user=True)
    popular = np.argsort(-np.asarray(train.sum(axis=0)).ravel(), kind="stable")[:10]
    assert set(ids.tolist()) == set(popular.tolist())


def test_recommend_follows_implicits_conventions(ease, loo) -> None:
    train = loo[0]
    ids, scores = ease.recommend(3, train[3], N=7)
    assert ids.shape == scores.shape == (7,)
    assert ids.dtype == np.int32 and scores.dtype == np.float32
    assert np.all(np.diff(scores) <= 0)
    assert not set(ids) & set(train[3].indices)  # already-liked items filtered
    batch_ids, batch_scores = ease.recommend(np.arange(5), train[:5], N=7)
    assert batch_ids.shape == (5, 7)
    np.testing.assert_array_equal(batch_ids[3], ids)
    # Unfiltered: the user's own items may come back; filter_items removes others.
    liked, _ = ease.recommend(3, train[3], N=50, filter_already_liked_items=False)
    assert set(liked) & set(train[3].indices)
    blocked, _ = ease.recommend(3, train[3], N=7, filter_items=ids[:3])
    assert not set(blocked) & set(ids[:3])
    np.testing.assert_array_equal(blocked[:4], ids[3:])
    # items= ranks only that subset, in the model's order.
    subset = np.array([5, 17, 40, 99, 250])
    ranked, _ = ease.recommend(3, train[3], N=10, items=subset, filter_already_liked_items=False)
    assert sorted(ranked.tolist()) == sorted(subset.tolist())
    with pytest.raises(InputError):
        ease.recommend(3, train[3], items=subset, filter_items=[1])
    with pytest.raises(InputError, match="1 row for every user"):
        ease.recommend(np.arange(3), train[:2])
    with pytest.raises(UnknownIdError):
        ease.recommend(10**6, train[:1])


def test_recalculate_user_scores_the_given_history(ease, loo) -> None:
    train = loo[0]
    other = train[7]
    # Stored history of user 3, but user 7's items filtered.
    stored, _ = ease.recommend(3, other, N=10)
    assert not set(stored) & set(other.indices)
    fresh, _ = ease.recommend(3, other, N=10, recalculate_user=True)
    as_seven, _ = ease.recommend(7, train[7], N=10)
    np.testing.assert_array_equal(fresh, as_seven)
    # A user unknown at fit time is served from their rows.
    new, _ = ease.recommend(10**6, other, N=10, recalculate_user=True)
    np.testing.assert_array_equal(new, as_seven)
    assert ease.recalculate_user(0, train[:1]).shape == (train.shape[1],)


def test_similar_items_and_users(ease, spliced) -> None:
    for model in (ease, spliced):
        ids, scores = model.similar_items(10, N=5)
        assert ids[0] == 10 and scores[0] == pytest.approx(1.0, abs=1e-5)
        assert np.all(np.diff(scores) <= 1e-6)
        batch, _ = model.similar_items(np.array([10, 20]), N=5)
        assert batch.shape == (2, 5) and batch[1, 0] == 20
        users, user_scores = model.similar_users(4, N=3)
        assert users[0] == 4 and user_scores[0] == pytest.approx(1.0, abs=1e-5)
        filtered, _ = model.similar_items(10, N=5, filter_items=[10])
        assert 10 not in filtered
    with pytest.raises(NotImplementedError):
        SteerCFImplicit(Popularity()).fit(sp.eye(4, format="csr")).similar_items(0)


def test_steering_arguments_on_recommend(spliced, loo) -> None:
    train = loo[0]
    users = np.arange(20)
    plain, _ = spliced.recommend(users, train[users], N=10)
    code = spliced.model.sparse_code(train[:1])
    latent = int(code.indices[0, 0])
    steered, _ = spliced.recommend(users, train[users], N=10, steer_latents={latent: 0.8})
    assert (steered != plain).any()
    expected, _ = steer(spliced.model, train[users], [Knob.of(latent, 0.8)], N=10)
    np.testing.assert_array_equal(steered, expected)
    via_knobs, _ = spliced.recommend(
        users, train[users], N=10, knobs=[Knob.of(latent, 0.5)], steer_rule="additive"
    )
    expected, _ = steer(spliced.model, train[users], [Knob.of(latent, 0.5)], "additive", N=10)
    np.testing.assert_array_equal(via_knobs, expected)
    with pytest.raises(InputError, match="SAE"):
        SteerCFImplicit(EASE(l2=300.0)).fit(train).recommend(0, train[:1], steer_latents={0: 1})
    with pytest.raises(InputError):
        spliced.recommend(0, train[:1], steer_latents={10**6: 0.5})


def test_save_and_load_round_trip(spliced, loo, tmp_path) -> None:
    train = loo[0]
    spliced.save(tmp_path / "model")
    loaded = SteerCFImplicit.load(str(tmp_path / "model"))
    users = np.arange(25)
    np.testing.assert_array_equal(
        loaded.recommend(users, train[users])[0], spliced.recommend(users, train[users])[0]
    )
    np.testing.assert_array_equal(loaded.similar_items(3)[0], spliced.similar_items(3)[0])
    with pytest.raises(ModelFileError):
        SteerCFImplicit.load(tmp_path)


def test_fit_checks_its_input() -> None:
    with pytest.raises(InputError):
        SteerCFImplicit().fit(sp.eye(3, format="csr"))
    with pytest.raises(InputError):
        SteerCFImplicit(EASE()).fit(np.eye(3))
    with pytest.raises(InputError, match="not fitted"):
        SteerCFImplicit(EASE()).recommend(0, sp.eye(3, format="csr")[:1])


def test_multvae_through_the_wrapper(loo, tmp_path) -> None:
    train, test = loo
    vae = MultVAE(
        hidden_dims=(64,),
        latent_dim=32,
        batch_size=128,
        epochs=8,
        total_anneal_steps=200,
        progress=False,
    )
    model = SteerCFImplicit(vae).fit(train, show_progress=False)
    theirs = ranking_metrics_at_k(model, train, test, K=10, show_progress=False)
    ours = steercf_metrics_at_k(model.model, train, test, K=10)
    assert theirs["precision"] == pytest.approx(ours["precision"], abs=1e-9)
    assert theirs["precision"] > 0.1  # 10 random items of ~1.4k: ~0.004
    ids, scores = model.recommend(3, train[3], N=7)
    assert ids.shape == (7,) and not set(ids) & set(train[3].indices)
    similar, _ = model.similar_items(10, N=5)
    assert similar[0] == 10
    model.save(tmp_path / "vae")
    loaded = SteerCFImplicit.load(str(tmp_path / "vae"))
    assert isinstance(loaded.model, MultVAE)
    np.testing.assert_array_equal(loaded.recommend(3, train[3], N=7)[0], ids)
