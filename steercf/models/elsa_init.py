"""EASE warm starts for ELSA: item rows whose Gram matrix ``A A^T`` approximates EASE's
item-item matrix, so that ELSA's fine-tuning starts where EASE already ranks well
(why: "Small data sets" in the :class:`steercf.models.elsa.ELSA` docstring).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from steercf.errors import InputError


def ease_spectral_init(
    rows: sp.csr_matrix, factors: int, l2: float, scale: float, fallback: torch.Tensor
) -> torch.Tensor:
    """Item rows whose Gram matrix approximates EASE's, as an ELSA warm start.

    ELSA scores unseen items with ``A A^T - I`` restricted off the diagonal: a symmetric
    matrix with unit diagonal. EASE's ``B`` symmetrised, ``S = (B + B^T) / 2``, ranks as
    well as ``B`` on MovieLens 100K, so ``A`` is taken from the top-``factors``
    eigenpairs of ``I + scale * S`` (``scale`` trades the identity's weight against the
    item-item part, which the rank cut and the unit-norm rows then distort less), with
    rows renormalised by the caller.

    Args:
        rows: (n_users, n_items) training interactions.
        factors: d, at most n_items.
        l2: EASE's ridge penalty.
        scale: weight of the symmetrised EASE matrix against the identity.
        fallback: (n_items, factors) rows used for items the spectrum leaves at zero.

    Returns:
        (n_items, factors) float32 rows (not yet unit-norm).
    """
    n_items = rows.shape[1]
    if factors > n_items:
        raise InputError(f"init='ease' needs factors <= n_items ({n_items}), got {factors}")
    target = _ease_plus_transpose(rows, l2, torch.float64).mul_(scale / 2)
    target.diagonal().add_(1.0)
    values, vectors = torch.linalg.eigh(target)  # ascending
    del target
    top = vectors[:, -factors:] * values[-factors:].clamp_min(0).sqrt()
    # eigh's vectors are column-major and a column slice keeps that layout; the fused
    # Adam kernel pairs parameter and gradient elements by memory position, so a
    # non-contiguous parameter with a contiguous gradient silently gets wrong updates.
    start = top.float().contiguous()
    empty = torch.linalg.vector_norm(start, dim=1) < 1e-8
    start[empty] = fallback[empty]
    return start


def ease_padded_init(
    rows: sp.csr_matrix,
    factors: int,
    l2: float,
    rank: int,
    quantile: float,
    generator: torch.Generator,
) -> torch.Tensor:
    """Unit-norm item rows: a rank-``rank`` factor of EASE's item-item matrix, each row
    filled up to unit norm along its own random direction in the other columns.

    ELSA ranks an unseen item by the off-diagonal of ``A A^T`` only; the unit diagonal is
    a constraint, not a signal. With ``S = (B + B^T) / 2`` (EASE's ``B`` symmetrised) and
    ``L`` its top-``rank`` positive eigenpairs (``V sqrt(lambda)``), ``L L^T`` ranks about
    as well as ``S`` even at rank 128 on latest-small (val Recall@20 0.306 vs 0.312), but
    the rows of rare items are short and renormalising them inflates their scores
    (val 0.19). Here ``L`` is scaled so that the ``quantile`` of its row norms is 1 (the
    few longer rows are shrunk to 1) and every row gets the missing length
    ``sqrt(1 - |l_i|^2)`` along a random direction in the remaining
    ``factors - rank`` columns. Random directions in many columns are nearly
    orthogonal, so the filler adds little to off-diagonal scores.

    Args:
        rows: (n_users, n_items) training interactions.
        factors: d, the total width; must exceed ``rank``.
        l2: EASE's ridge penalty.
        rank: number of eigenpairs of ``S`` carrying the item-item signal.
        quantile: share of items whose signal row fits inside the unit ball unshrunk.
        generator: draws the filler directions.

    Returns:
        (n_items, factors) float32 rows of unit norm.
    """
    n_items = rows.shape[1]
    _check_init_rank(rank, factors)
    if rank > n_items:
        raise InputError(f"init_rank must be <= n_items ({n_items}), got {rank}")
    symmetric = _ease_plus_transpose(rows, l2, torch.float32).mul_(0.5)
    values, vectors = top_eigenpairs(symmetric, rank)
    del symmetric
    signal = vectors * values.clamp_min(0).sqrt()  # (n_items, rank)
    lengths = torch.linalg.vector_norm(signal, dim=1)
    unit = torch.quantile(lengths.double(), quantile).item()
    if unit <= 0:
        raise InputError("EASE's item-item matrix has no positive eigenvalue to start from")
    signal.div_(unit)
    signal.div_(torch.linalg.vector_norm(signal, dim=1, keepdim=True).clamp_min(1.0))
    missing = (1 - signal.square().sum(1)).clamp_min(0).sqrt()  # (n_items,)
    filler = torch.randn(n_items, factors - rank, generator=generator)
    filler.mul_((missing / torch.linalg.vector_norm(filler, dim=1).clamp_min(1e-12))[:, None])
    return torch.cat([signal.float(), filler], dim=1).contiguous()


# Below this share of the spectrum a Lanczos solver (ARPACK) beats the full
# decomposition: on ml-latest-small (9k items, 64 pairs) 10 s against 58 s, same
# subspace (cosine 0.999996); near the full spectrum it is slower and less robust.
PARTIAL_EIGEN_MAX_SHARE = 0.2


def top_eigenpairs(symmetric: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``rank`` largest (algebraic) eigenpairs of a dense symmetric matrix.

    A partial solver (``scipy.sparse.linalg.eigsh``, deterministic start vector) when
    ``rank`` is a small share of the size, the full ``torch.linalg.eigh`` otherwise.
    Eigenvectors are defined up to sign; callers use them only through products that
    a column sign flip leaves equivalent.

    Args:
        symmetric: (n, n) float tensor.
        rank: number of pairs, 1 <= rank <= n.

    Returns:
        values (rank,) ascending and vectors (n, rank), in ``symmetric``'s dtype.
    """
    n = symmetric.shape[0]
    if rank > PARTIAL_EIGEN_MAX_SHARE * n:
        values, vectors = torch.linalg.eigh(symmetric)  # ascending
        return values[-rank:], vectors[:, -rank:]
    from scipy.sparse.linalg import eigsh

    matrix = symmetric.double().numpy()
    start = np.random.default_rng(0).standard_normal(n)  # fixed: deterministic result
    values, vectors = eigsh(matrix, k=rank, which="LA", v0=start)
    order = np.argsort(values)  # ascending, as eigh
    return (
        torch.from_numpy(values[order]).to(symmetric.dtype),
        torch.from_numpy(np.ascontiguousarray(vectors[:, order])).to(symmetric.dtype),
    )


def _check_init_rank(rank: int, factors: int) -> None:
    """A padded warm start needs its factor narrower than the rows (spare columns)."""
    if not 0 < rank < factors:
        raise InputError(f"init_rank must be in [1, factors), got {rank} with factors={factors}")


def _ease_plus_transpose(rows: sp.csr_matrix, l2: float, dtype: torch.dtype) -> torch.Tensor:
    """(n_items, n_items) ``B + B^T`` of EASE fitted on ``rows``: what both warm starts
    decompose."""
    from steercf.models.ease import EASE  # the closed form ELSA starts from

    weights = EASE(l2=l2).fit(rows).weights_.to(dtype)
    return weights.add_(weights.T.clone())
