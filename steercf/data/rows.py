"""Operations on (users x items) CSR interaction rows shared by models and analyses."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def one_hot_items(n_items: int) -> sp.csr_matrix:
    """(n_items, n_items) float32 CSR identity: each item's single-item history."""
    return sp.identity(n_items, format="csr", dtype=np.float32)


def thin_rows(
    rows: sp.csr_matrix, drop: float | np.ndarray, rng: np.random.Generator
) -> sp.csr_matrix:
    """Hide a random ``drop`` share of each row's entries, never emptying a row.

    Args:
        rows: (n, n_items) CSR interactions (empty rows stay empty).
        drop: one share for every row, or (n,) shares, one per row.

    Returns:
        (n, n_items) CSR with a subset of the entries of ``rows``.
    """
    counts = np.diff(rows.indptr)
    per_row = np.broadcast_to(np.asarray(drop, dtype=np.float64), (rows.shape[0],))
    keep = rng.random(rows.nnz) >= np.repeat(per_row, counts)
    starts = rows.indptr[:-1][counts > 0]
    if len(starts):
        lost = np.add.reduceat(keep.astype(np.int64), starts) == 0
        keep[starts[lost]] = True  # a row that lost everything keeps its first entry
    thinned = rows.copy()
    thinned.data = np.where(keep, rows.data, 0).astype(np.float32)
    thinned.eliminate_zeros()
    return thinned
