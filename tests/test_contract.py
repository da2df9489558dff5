"""One contract every recommender kind passes (in the spirit of implicit's shared
``RecommenderBase`` test mixin).

Each kind subclasses :class:`RecommenderContract` and says how to build, fit, ask and
save it; the checks are written once:

* a returned item is never seen, filtered or padding; a user with fewer than N unseen
  items gets exactly those (the implicit wrapper pads to N with -1 / -inf, as implicit);
* scores come best first, shapes are (n_users, width);
* stored duplicates in a history count as that item (summed), stored zeros as nothing;
* a save / load round trip gives the same lists; two fits with one seed agree.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from steercf.errors import UnknownIdError
from steercf.models import (
    EASE,
    ELSA,
    MultVAE,
    Popularity,
    PrincipalSubspace,
    SplicedRecommender,
    TagSpaceAutoencoder,
    load_model,
)
from steercf.sae import TrainConfig

N_USERS, N_ITEMS = 40, 12


def interactions(seed: int = 0) -> sp.csr_matrix:
    """(40, 12) binary interactions; rows 0-4 have 10-11 items (fewer than 5 unseen),
    the others 2-5; every row non-empty."""
    rng = np.random.default_rng(seed)
    dense = np.zeros((N_USERS, N_ITEMS), dtype=np.float32)
    for user in range(N_USERS):
        size = 10 + user % 2 if user < 5 else rng.integers(2, 6)
        dense[user, rng.choice(N_ITEMS, size, replace=False)] = 1.0
    return sp.csr_matrix(dense)


def with_duplicates_and_zeros(rows: sp.csr_matrix) -> sp.csr_matrix:
    """The same interactions with every entry stored twice (0.5 + 0.5) plus a stored
    zero per row: a non-canonical CSR that must mean the same as ``rows``."""
    coo = rows.tocoo()
    dense = rows.toarray()
    zero_cols = np.array([np.flatnonzero(row == 0)[0] for row in dense])  # an unseen item
    data = np.concatenate([coo.data / 2, coo.data / 2, np.zeros(rows.shape[0])])
    users = np.concatenate([coo.row, coo.row, np.arange(rows.shape[0])])
    items = np.concatenate([coo.col, coo.col, zero_cols])
    # csr_matrix((data, (i, j))) would sum duplicates on conversion: build raw arrays
    order = np.lexsort((items, users))
    indptr = np.concatenate([[0], np.cumsum(np.bincount(users, minlength=rows.shape[0]))])
    out = sp.csr_matrix((data[order].astype(np.float32), items[order], indptr), shape=rows.shape)
    assert not out.has_canonical_format or (out.data == 0).any()
    return out


class RecommenderContract:
    """Subclasses set how to build and query one kind of recommender."""

    pads = False  # fixed-width lists padded with -1 / -inf (implicit's convention)

    def fitted(self, seed: int = 0):
        """A fitted model on :func:`interactions`."""
        raise NotImplementedError

    def recommend(self, model, users: np.ndarray, rows: sp.csr_matrix, N: int, **kw):
        """``(ids, scores)`` for ``users`` whose histories are ``rows``."""
        return model.recommend(rows, N=N, **kw)

    def reloaded(self, model, path):
        model.save(path)
        return load_model(path)

    # ---- the checks --------------------------------------------------------------------
    @pytest.fixture(scope="class")
    def model(self):
        torch.manual_seed(0)
        return self.fitted()

    def _ask(self, model, users, N, **kw):
        rows = interactions()[users]
        return rows, *self.recommend(model, users, rows, N, **kw)

    def test_never_returns_seen_filtered_or_padding(self, model):
        users = np.arange(N_USERS)
        rows, ids, scores = self._ask(model, users, 5, filter_items=[3])
        for user in users:
            listed = ids[user][ids[user] >= 0]
            assert not set(listed.tolist()) & set(rows[user].indices.tolist())
            assert 3 not in listed
            assert len(set(listed.tolist())) == len(listed)
            real = scores[user][ids[user] >= 0]
            assert np.isfinite(real).all() and (np.diff(real) <= 1e-6).all()
            assert np.isneginf(scores[user][ids[user] < 0]).all()

    def test_fewer_unseen_items_than_n_gives_exactly_those(self, model):
        for user in range(5):  # 10 or 11 of 12 items seen
            rows, ids, _ = self._ask(model, np.array([user]), 5)
            unseen = set(range(N_ITEMS)) - set(rows[0].indices.tolist())
            listed = ids[0][ids[0] >= 0]
            assert set(listed.tolist()) == unseen
            assert ids.shape == ((1, 5) if self.pads else (1, len(unseen)))

    def test_batch_width_is_the_longest_list(self, model):
        rows, ids, _ = self._ask(model, np.array([0, 1, 10]), 5)
        assert ids.shape == (3, 5)  # user 10 has at least 7 unseen items
        assert (ids[0] >= 0).sum() == N_ITEMS - rows[0].nnz  # the short row is padded

    def test_a_longer_list_starts_with_the_shorter_one(self, model):
        """Equal scores (popularity counts, say) are listed by item index, so the top 3
        never change order when N grows."""
        users = np.arange(5, N_USERS)
        _, short, _ = self._ask(model, users, 3)
        _, long, _ = self._ask(model, users, 7)
        np.testing.assert_array_equal(long[:, :3], short)

    def test_unknown_filter_item_is_refused(self, model):
        with pytest.raises(UnknownIdError):
            self._ask(model, np.array([10]), 5, filter_items=[N_ITEMS + 5])

    def test_duplicates_and_stored_zeros_mean_the_canonical_rows(self, model):
        users = np.arange(5, 15)
        _, ids, scores = self._ask(model, users, 5)
        messy = with_duplicates_and_zeros(interactions()[users])
        ids_messy, scores_messy = self.recommend(model, users, messy, 5)
        np.testing.assert_array_equal(ids_messy, ids)
        np.testing.assert_allclose(scores_messy, scores, rtol=1e-5, atol=1e-6)

    def test_save_load_round_trip(self, model, tmp_path):
        users = np.arange(N_USERS)
        _, ids, scores = self._ask(model, users, 5)
        loaded = self.reloaded(model, tmp_path / "model")
        ids_loaded, scores_loaded = self.recommend(loaded, users, interactions()[users], 5)
        np.testing.assert_array_equal(ids_loaded, ids)
        np.testing.assert_allclose(scores_loaded, scores, rtol=1e-5, atol=1e-6)

    def test_deterministic_given_a_seed(self, model):
        users = np.arange(N_USERS)
        _, ids, scores = self._ask(model, users, 5)
        again = self.fitted()
        ids_again, scores_again = self.recommend(again, users, interactions()[users], 5)
        np.testing.assert_array_equal(ids_again, ids)
        np.testing.assert_allclose(scores_again, scores, rtol=1e-5, atol=1e-6)


class TestPopularity(RecommenderContract):
    def fitted(self, seed: int = 0):
        return Popularity().fit(with_duplicates_and_zeros(interactions()))


class TestEASE(RecommenderContract):
    def fitted(self, seed: int = 0):
        return EASE(l2=1.0, seed=seed).fit(with_duplicates_and_zeros(interactions()))


class TestLowRankEASE(RecommenderContract):
    def fitted(self, seed: int = 0):
        return EASE(l2=1.0, rank=6, seed=seed).fit(interactions())


def small_elsa(seed: int = 0) -> ELSA:
    return ELSA(factors=8, lr=1e-2, batch_size=8, epochs=5, seed=seed, progress=False)


class TestELSA(RecommenderContract):
    def fitted(self, seed: int = 0):
        return small_elsa(seed).fit(with_duplicates_and_zeros(interactions()))


class TestMultVAE(RecommenderContract):
    def fitted(self, seed: int = 0):
        model = MultVAE(
            hidden_dims=(16,),
            latent_dim=4,
            batch_size=8,
            epochs=3,
            total_anneal_steps=10,
            seed=seed,
            progress=False,
        )
        return model.fit(with_duplicates_and_zeros(interactions()))


class TestTagSpace(RecommenderContract):
    def fitted(self, seed: int = 0):
        tags = sp.csr_matrix(np.random.default_rng(1).random((N_ITEMS, 3)) < 0.4)
        model = TagSpaceAutoencoder(epochs=20, seed=seed)
        return model.fit(with_duplicates_and_zeros(interactions()), item_tags=tags)


class TestPrincipalSubspace(RecommenderContract):
    def fitted(self, seed: int = 0):
        return PrincipalSubspace(small_elsa(seed), rank=4).fit(
            with_duplicates_and_zeros(interactions())
        )


class TestSplicedOnPrincipalSubspace(RecommenderContract):
    def fitted(self, seed: int = 0):
        train = TrainConfig(max_epochs=5, batch_size=16, seed=seed, progress=False)
        base = PrincipalSubspace(small_elsa(seed), rank=4)
        spliced = SplicedRecommender(base, {"k": 2, "expansion": 4}, train, augment=1, seed=seed)
        return spliced.fit(interactions())


class TestSpliced(RecommenderContract):
    def fitted(self, seed: int = 0):
        train = TrainConfig(max_epochs=5, batch_size=16, seed=seed, progress=False)
        spliced = SplicedRecommender(
            small_elsa(seed), {"k": 4, "expansion": 4}, train, augment=1, seed=seed
        )
        return spliced.fit(interactions())


class TestImplicitWrapper(RecommenderContract):
    pads = True

    def fitted(self, seed: int = 0):
        pytest.importorskip("implicit")
        from steercf.integrations.implicit import SteerCFImplicit

        model = SteerCFImplicit(EASE(l2=1.0, seed=seed))
        model.fit(interactions())
        return model

    def recommend(self, model, users, rows, N, **kw):
        return model.recommend(users, rows, N=N, **kw)

    def reloaded(self, model, path):
        from steercf.integrations.implicit import SteerCFImplicit

        model.save(path)
        return SteerCFImplicit.load(path)


class _RecBoleData:
    """The few parts of a RecBole ``Dataset`` a steercf RecBole model reads: user and
    item 0 are RecBole's padding, so the matrix gets an empty first row and column."""

    uid_field, iid_field = "user_id", "item_id"

    def __init__(self, rows: sp.csr_matrix) -> None:
        self.matrix = sp.csr_matrix(sp.block_diag([sp.csr_matrix((1, 1)), rows]))
        self.field2id_token = {
            "user_id": np.array(["[PAD]", *map(str, range(rows.shape[0]))]),
            "item_id": np.array(["[PAD]", *map(str, range(rows.shape[1]))]),
        }

    def num(self, field: str) -> int:
        return self.matrix.shape[0 if field == "user_id" else 1]

    def inter_matrix(self, form: str = "csr") -> sp.csr_matrix:
        return self.matrix


class TestRecBoleWrapper(RecommenderContract):
    def fitted(self, seed: int = 0):
        pytest.importorskip("recbole")
        from steercf.integrations.recbole import SteerCFEASE

        config = {
            "USER_ID_FIELD": "user_id",
            "ITEM_ID_FIELD": "item_id",
            "NEG_PREFIX": "neg_",
            "device": torch.device("cpu"),
            "seed": seed,
            "reg_weight": 1.0,
        }
        return SteerCFEASE(config, _RecBoleData(interactions()))

    def recommend(self, model, users, rows, N, filter_items=None):
        # RecBole ids: user u is row u + 1; histories come from the training matrix,
        # so a messy copy is swapped in to check it means the same
        original = model.interaction_matrix
        model.interaction_matrix = sp.csr_matrix(sp.block_diag([sp.csr_matrix((1, 1)), rows]))
        shifted = None if filter_items is None else np.asarray(filter_items) + 1
        try:
            ids, scores = model.recommend(np.arange(1, len(users) + 1), N=N, filter_items=shifted)
        finally:
            model.interaction_matrix = original
        assert (ids != 0).all()  # RecBole's padding item is never recommended
        return np.where(ids > 0, ids - 1, -1), scores

    def reloaded(self, model, path):
        model.steercf_model.save(path)
        clone = self.fitted()
        clone.steercf_model = load_model(path)
        return clone


def test_ease_on_the_reported_matrix_returns_only_unseen_items():
    """The case from issue 14: four of six items seen, N=4 -> the two unseen ones."""
    x = sp.csr_matrix(
        np.array(
            [[1, 1, 1, 1, 0, 0], [1, 0, 1, 0, 1, 0], [0, 1, 1, 0, 0, 1], [1, 1, 0, 1, 1, 0]],
            dtype=np.float32,
        )
    )
    ids, scores = EASE(l2=1.0).fit(x).recommend(x[:1], N=4)
    assert sorted(ids[0].tolist()) == [4, 5] and np.isfinite(scores).all()
