"""The evaluation protocol: split sizes, hold-out quotas, metric formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp

from steercf.errors import InputError
from steercf.evaluation import evaluate, ndcg_at_k, recall_at_k, split_users
from steercf.models import Popularity


def random_matrix(n_users=200, n_items=50, density=0.2, seed=0) -> sp.csr_matrix:
    m = sp.random(n_users, n_items, density=density, random_state=seed, format="csr")
    m.data[:] = 1
    return m.astype(np.float32)


def test_split_is_a_seeded_80_10_10_partition_with_ceil_20_percent_held_out():
    x = random_matrix()
    s = split_users(x, seed=3)
    users = np.concatenate([s.train_users, s.val_users, s.test_users])
    assert sorted(users.tolist()) == list(range(200))
    assert (len(s.train_users), len(s.val_users), len(s.test_users)) == (160, 20, 20)
    for rows, given, target in [
        (s.val_users, s.val_input, s.val_target),
        (s.test_users, s.test_input, s.test_target),
    ]:
        full = x[rows]
        # input and target partition each user's history
        assert (given + target - full).nnz == 0
        assert given.multiply(target).nnz == 0
        n = np.diff(full.indptr)
        expected = np.where(n >= 2, np.ceil(0.2 * n), 0)
        assert np.array_equal(np.diff(target.indptr), expected)
    again = split_users(x, seed=3)
    assert np.array_equal(again.test_users, s.test_users)
    assert (again.test_target != s.test_target).nnz == 0
    other = split_users(x, seed=4)
    assert not np.array_equal(other.test_users, s.test_users)


def test_recall_uses_min_k_and_target_count_and_ndcg_matches_hand_computation():
    target = sp.csr_matrix(np.array([[1, 1, 0, 0, 0, 1], [0, 0, 0, 0, 1, 0]], dtype=np.float32))
    ranked = np.array([[0, 3, 1], [4, 0, 1]])
    # user 0: hits at ranks 1 and 3 of 3 targets; user 1: hit at rank 1 of 1 target
    assert recall_at_k(ranked, target, 2).tolist() == [0.5, 1.0]
    assert recall_at_k(ranked, target, 3).tolist() == pytest.approx([2 / 3, 1.0])
    dcg = 1 + 1 / math.log2(4)
    idcg = 1 + 1 / math.log2(3) + 1 / math.log2(4)
    assert ndcg_at_k(ranked, target, 3).tolist() == pytest.approx([dcg / idcg, 1.0])


def test_evaluate_reports_mean_and_standard_error_and_skips_users_without_targets():
    x = random_matrix(n_users=400)
    s = split_users(x, seed=0)
    result = evaluate(Popularity().fit(s.train), s.test_input, s.test_target, ks=(5, 10))
    recall = result.per_user["recall@10"]
    with_targets = int((np.diff(s.test_target.indptr) > 0).sum())
    assert with_targets < s.test_input.shape[0]  # this random matrix has a user too small to split
    assert len(recall) == with_targets
    assert result.mean("recall@10") == pytest.approx(recall.mean())
    assert result.sem("recall@10") == pytest.approx(recall.std(ddof=1) / np.sqrt(len(recall)))
    assert result.mean("recall@10") >= result.mean("recall@5") - 1e-12


def test_split_rejects_bad_arguments():
    with pytest.raises(InputError, match="holdout"):
        split_users(random_matrix(), holdout=1.5)
    with pytest.raises(InputError, match="sum to 1"):
        split_users(random_matrix(), fractions=(0.5, 0.1, 0.1))
