"""Specificity of a distribution: entropy, relative entropy decrease and KL from the mean.

For a non-negative row ``r`` over ``m`` outcomes, ``p = r / sum(r)``, and ``p̄`` the mean
of the rows' ``p`` (the background distribution); natural logs, nats:

* entropy ``H(p) = -sum p log p``;
* relative entropy decrease ``(H(p̄) - H(p)) / H(p̄)``: 0 for a row like the background,
  1 for a row on a single outcome. The reference measures the decrease from "the mean";
  against the *mean of the entropies* the average decrease would be 0 by construction,
  so we measure it against the entropy of the mean distribution (then
  ``mean KL = H(p̄) - mean H``, the Jensen-Shannon identity);
* ``KL(p || p̄) = sum p log(p / p̄)``.

:mod:`steercf.concepts.monosemanticity` applies these to the TF-IDF rows of units and
of concepts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(eq=False)
class Specificity:
    """Specificity of the rows of a non-negative matrix (see the module docstring).

    Attributes:
        entropy: (n_rows,) ``H(p_r)`` in nats; NaN for an all-zero row.
        decrease: (n_rows,) ``(H(p̄) - H(p_r)) / H(p̄)``; NaN for an all-zero row.
        kl: (n_rows,) ``KL(p_r || p̄)`` in nats; NaN for an all-zero row.
        background_entropy: ``H(p̄)``, ``p̄`` the mean of the non-zero rows' ``p_r``.
        n_outcomes: ``m``, the row length.
    """

    entropy: np.ndarray
    decrease: np.ndarray
    kl: np.ndarray
    background_entropy: float
    n_outcomes: int

    @property
    def kl_normalised(self) -> np.ndarray:
        """``KL / ln m``: comparable between distributions over different numbers of
        outcomes (0 when ``m`` = 1)."""
        return self.kl / math.log(self.n_outcomes) if self.n_outcomes > 1 else self.kl * 0


def specificity(rows: np.ndarray) -> Specificity:
    """Entropy, relative entropy decrease and KL from the mean of each row of ``rows``.

    Args:
        rows: (n_rows, m) non-negative; each non-zero row is normalised to sum 1.
    """
    rows = np.asarray(rows, dtype=np.float64)
    total = rows.sum(axis=1, keepdims=True)
    valid = total[:, 0] > 0
    p = np.divide(rows, total, out=np.zeros_like(rows), where=total > 0)
    nan = np.full(rows.shape[0], np.nan)
    if not valid.any():
        return Specificity(nan, nan.copy(), nan.copy(), float("nan"), rows.shape[1])
    background = p[valid].mean(axis=0)
    entropy = -_xlogy(p).sum(axis=1)
    h_background = float(-_xlogy(background[None, :]).sum())
    # KL only sums over p > 0, where p̄ > 0 too (p̄ averages the rows)
    log_ratio = np.log(np.divide(p, background, out=np.ones_like(p), where=p > 0))
    kl = (p * log_ratio).sum(axis=1)
    decrease = (
        (h_background - entropy) / h_background if h_background > 0 else np.zeros_like(entropy)
    )
    return Specificity(
        np.where(valid, entropy, np.nan),
        np.where(valid, decrease, np.nan),
        np.where(valid, kl, np.nan),
        h_background,
        rows.shape[1],
    )


def _xlogy(p: np.ndarray) -> np.ndarray:
    # 0 log 0 = 0, the entropy convention (log of 1 instead of log of 0)
    return p * np.log(np.where(p > 0, p, 1.0))
