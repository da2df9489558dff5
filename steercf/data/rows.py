"""Operations on (users x items) CSR interaction rows shared by models and analyses."""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from steercf.errors import InputError

# The one rule of what an interaction matrix means (README "Use"): repeated (user, item)
# entries add up, a stored zero is no interaction, any positive total is one interaction.
# NaN, infinite and negative values are refused rather than guessed at.


def canonical_rows(matrix: Any, name: str = "user_items") -> sp.csr_matrix:
    """An interaction matrix in the one form every entry point works on.

    Repeated (user, item) entries are summed, explicit zeros dropped and every remaining
    (positive) value becomes 1.0, so a row that stores item 2 twice, or stores a 0
    beside it, means the same as the row that stores it once. The caller's matrix is
    never modified.

    Args:
        matrix: (n_users, n_items) scipy sparse matrix or dense array-like.
        name: what the message of an error calls the matrix.

    Returns:
        (n_users, n_items) float32 CSR with sorted unique indices and only 1.0 values.

    Raises:
        InputError: not 2-D, not numeric (e.g. strings), or a NaN, infinite or negative
            value.
    """
    # the dtype is checked before any conversion, whose own errors would not name `name`
    if sp.issparse(matrix):
        _check_numeric(matrix.dtype, name)
        rows = sp.csr_matrix(matrix)
    else:
        try:
            array = np.asarray(matrix)
        except ValueError as err:  # ragged nested lists
            raise InputError(f"{name} must be a 2-D (users x items) array: {err}") from err
        if array.ndim != 2:
            raise InputError(f"{name} must be 2-D (users x items), got {array.ndim} dimensions")
        _check_numeric(array.dtype, name)
        rows = sp.csr_matrix(array)
    data = rows.data
    if data.dtype.kind == "f" and not np.isfinite(data).all():
        raise InputError(
            f"{name} contains NaN or infinite values; an interaction is a finite number >= 0"
        )
    if (data < 0).any():
        raise InputError(f"{name} contains negative values; interactions must be >= 0")
    if rows.has_canonical_format and rows.dtype == np.float32 and (data == 1).all():
        return rows  # already canonical: no copy
    rows = sp.csr_matrix(rows, dtype=np.float64, copy=True)  # sum in float64, then binarise
    rows.sum_duplicates()
    rows.eliminate_zeros()
    rows.data = np.ones(rows.nnz, dtype=np.float64)
    out = sp.csr_matrix(rows, dtype=np.float32)
    out.has_sorted_indices = True
    return out


def _check_numeric(dtype: np.dtype, name: str) -> None:
    """InputError unless ``dtype`` holds numbers (bool, integer or float)."""
    if np.dtype(dtype).kind not in "biuf":
        raise InputError(
            f"{name} must hold numbers (bool, integer or float), got dtype {np.dtype(dtype)}"
        )


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
