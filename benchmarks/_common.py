"""Helpers shared by the benchmark scripts: seeded synthetic interaction data."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def synthetic_interactions(
    n_users: int = 100_000,
    n_items: int = 20_000,
    n_interactions: int = 5_000_000,
    item_exponent: float = 1.0,
    user_sigma: float = 1.0,
    seed: int = 0,
) -> sp.csr_matrix:
    """A binary (n_users, n_items) float32 CSR matrix shaped like implicit-feedback data.

    Item popularity follows a power law (Zipf): the item of popularity rank ``r`` is drawn
    with probability proportional to ``(r + 1) ** -item_exponent``; ranks are shuffled
    over item ids so that popular items are not the first columns. User activity is
    log-normal (``sigma = user_sigma``) with every user holding at least one item. A user's
    items are drawn without replacement, so the matrix has about ``n_interactions``
    non-zeros (exactly, unless a user would need more items than exist).

    Args:
        seed: the only source of randomness; the same arguments give the same matrix.

    Returns:
        (n_users, n_items) CSR with sorted, unique column indices and values 1.
    """
    if min(n_users, n_items, n_interactions) < 1 or n_interactions < n_users:
        raise ValueError("need n_users, n_items >= 1 and n_interactions >= n_users")
    rng = np.random.default_rng(seed)
    popularity = (np.arange(n_items) + 1.0) ** -item_exponent
    popularity = popularity[rng.permutation(n_items)]
    popularity /= popularity.sum()
    # Per-user counts: log-normal shares scaled to the budget, at least one each.
    share = rng.lognormal(0.0, user_sigma, n_users)
    counts = np.maximum(1, np.floor(share / share.sum() * n_interactions)).astype(np.int64)
    counts = np.minimum(counts, n_items)
    deficit = n_interactions - counts.sum()
    if deficit > 0:  # hand out the rounding remainder to random users with room left
        room = np.flatnonzero(counts < n_items)
        np.add.at(counts, rng.choice(room, deficit), 1)
        counts = np.minimum(counts, n_items)
    # Draw with replacement, then top up each user's duplicates until the row is full.
    rows = np.repeat(np.arange(n_users, dtype=np.int64), counts)
    cols = rng.choice(n_items, size=len(rows), p=popularity)
    matrix = _binary_csr(rows, cols, n_users, n_items)
    for _ in range(50):
        missing = counts - np.diff(matrix.indptr)
        if not missing.any():
            break
        extra_rows = np.repeat(np.arange(n_users, dtype=np.int64), missing)
        extra_cols = rng.choice(n_items, size=len(extra_rows), p=popularity)
        coo = matrix.tocoo()
        matrix = _binary_csr(
            np.concatenate([coo.row, extra_rows]),
            np.concatenate([coo.col, extra_cols]),
            n_users,
            n_items,
        )
    return matrix


def _binary_csr(rows: np.ndarray, cols: np.ndarray, n_users: int, n_items: int) -> sp.csr_matrix:
    """Canonical CSR with a 1 wherever (row, col) occurs at least once."""
    matrix = sp.csr_matrix(
        (np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(n_users, n_items)
    )
    matrix.sum_duplicates()
    matrix.data[:] = 1.0
    return matrix
