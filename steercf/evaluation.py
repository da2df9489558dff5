"""The evaluation protocol of the steerable-CF study (REFERENCE.md section 1).

Strong generalisation: users, not interactions, are split 80/10/10 with a seeded
permutation. Validation and test users show part of their history (the *input*) and
hide the rest (the *targets*: 20 % of their interactions, rounded up). A model never
sees validation or test users while fitting.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import scipy.sparse as sp
from tqdm.auto import tqdm

from steercf.data.rows import canonical_rows
from steercf.errors import InputError
from steercf.ranking import check_n, top_n, whole_number


@dataclass
class Split:
    """Rows of one interaction matrix divided by the protocol.

    Every matrix keeps all item columns, so models fitted on ``train`` score the same
    item space for validation and test users.
    """

    train: sp.csr_matrix  # (n_train, n_items) full histories of training users
    val_input: sp.csr_matrix  # (n_val, n_items) what a validation user shows
    val_target: sp.csr_matrix  # (n_val, n_items) what they hide
    test_input: sp.csr_matrix  # (n_test, n_items)
    test_target: sp.csr_matrix  # (n_test, n_items)
    train_users: np.ndarray  # (n_train,) row indices into the original matrix
    val_users: np.ndarray  # (n_val,)
    test_users: np.ndarray  # (n_test,)
    seed: int = 0

    @property
    def val_full(self) -> sp.csr_matrix:
        """(n_val, n_items) whole histories of validation users (for validation losses)."""
        return (self.val_input + self.val_target).tocsr()


def split_users(
    matrix: sp.csr_matrix,
    seed: int = 0,
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
    holdout: float = 0.2,
) -> Split:
    """Split users 80/10/10 and hold out ``ceil(holdout * n)`` interactions of each
    validation and test user.

    Args:
        matrix: (n_users, n_items) interactions, read by :func:`canonical_rows`.
        seed: seeds both the user permutation and the held-out draw.
        fractions: train / validation / test shares of users.
        holdout: share of a validation or test user's interactions hidden as targets.
    """
    matrix = canonical_rows(matrix, "matrix")
    n_users = matrix.shape[0]
    if not math.isclose(sum(fractions), 1.0) or min(fractions) < 0:
        raise InputError(f"fractions must be non-negative and sum to 1, got {fractions}")
    if not 0.0 < holdout < 1.0:
        raise InputError(f"holdout must be in (0, 1), got {holdout}")
    if n_users < 3:
        raise InputError(f"need at least 3 users to split, got {n_users}")
    rng = np.random.default_rng(seed)
    order = rng.permutation(n_users)
    n_train = int(round(fractions[0] * n_users))
    n_val = int(round(fractions[1] * n_users))
    train_users = np.sort(order[:n_train])
    val_users = np.sort(order[n_train : n_train + n_val])
    test_users = np.sort(order[n_train + n_val :])
    val_input, val_target = _hold_out(matrix[val_users], holdout, rng)
    test_input, test_target = _hold_out(matrix[test_users], holdout, rng)
    return Split(
        train=matrix[train_users],
        val_input=val_input,
        val_target=val_target,
        test_input=test_input,
        test_target=test_target,
        train_users=train_users,
        val_users=val_users,
        test_users=test_users,
        seed=seed,
    )


def check_cutoffs(ks: Any, n_items: int) -> tuple[int, ...]:
    """The cut-offs ``K`` of Recall@K / nDCG@K as distinct ints in ``[1, n_items]``.

    ``ks`` is one int or a sequence of them. A cut-off beyond the catalogue is refused,
    not clamped: its list would hold every item, so Recall@K would be 1 by construction
    and the metric would be reported under a K that was never ranked.

    Raises:
        InputError: no cut-off, one that is not a whole number, or one outside
            ``[1, n_items]``.
    """
    ks = (ks,) if isinstance(ks, numbers.Integral) else ks
    try:
        ks = tuple(dict.fromkeys(check_n(k, "k") for k in ks))  # distinct, in order
    except TypeError:
        raise InputError(f"ks must be a whole number or a sequence of them, got {ks!r}") from None
    if not ks:
        raise InputError("ks is empty: give at least one cut-off K for Recall@K and nDCG@K")
    too_large = [k for k in ks if k > n_items]
    if too_large:
        raise InputError(
            f"cut-off k={too_large[0]} is larger than the {n_items} items a list can hold; "
            f"choose k <= {n_items}"
        )
    return ks


def parse_monitor(monitor: str) -> tuple[str, int]:
    """An early-stopping criterion: ``"loss"`` -> ("loss", 0); ``"recall@20"`` ->
    ("recall", 20); ``"ndcg@K"`` likewise. Raises InputError for anything else."""
    if monitor == "loss":
        return "loss", 0
    name, _, k = monitor.partition("@")
    if name in ("recall", "ndcg") and k.isdigit() and int(k) >= 1:
        return name, int(k)
    raise InputError(f"monitor must be 'loss', 'recall@K' or 'ndcg@K', got {monitor!r}")


def monitor_hold_out(
    rows: sp.csr_matrix, monitor: str, seed: int
) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """A fixed hold-out of (n, n_items) validation rows for early stopping on a ranking
    ``monitor``: the protocol's 20 % of each user's items (rounded up) become targets,
    drawn once from ``seed`` so every epoch is judged on the same targets.

    Returns:
        ``(given, target)``, each (m, n_items): the users with items on both sides.
    """
    given, target = _hold_out(rows, 0.2, np.random.default_rng([seed, 1]))
    keep = (np.diff(given.indptr) > 0) & (np.diff(target.indptr) > 0)
    if not keep.any():
        raise InputError(f"monitor={monitor!r} needs validation users with at least 2 interactions")
    return given[keep], target[keep]


class ValidationMonitor:
    """Per-epoch validation of an iteratively trained model (ELSA, Mult-VAE): its loss
    on the validation users' full rows and, when ``monitor`` is a ranking metric, that
    metric on a fixed :func:`monitor_hold_out` of their items (so every epoch is judged
    on the same targets).

    Args:
        rows: (n_val, n_items) CSR validation rows without empty rows.
        monitor: ``"loss"``, ``"recall@K"`` or ``"ndcg@K"``.
        batch_size: users scored at once.
        seed: draws the hold-out.
    """

    def __init__(self, rows: sp.csr_matrix, monitor: str, batch_size: int, seed: int) -> None:
        self.rows = rows
        self.metric, self.k = parse_monitor(monitor)
        self.batch_size = batch_size
        if self.metric != "loss":
            self.given, self.target = monitor_hold_out(rows, monitor, seed)

    def record(
        self,
        batch_loss: Callable[[sp.csr_matrix], float],
        batch_scores: Callable[[sp.csr_matrix], Any],
    ) -> dict[str, float]:
        """``{"val_loss": ..., ["val_recall@K": ...]}``.

        Args:
            batch_loss: the model's mean loss over a (b, n_items) batch of rows.
            batch_scores: the model's (b, n_items) torch scores of a batch of given rows.
        """
        total = 0.0
        for start in range(0, self.rows.shape[0], self.batch_size):
            batch = self.rows[start : start + self.batch_size]
            total += batch_loss(batch) * batch.shape[0]
        record = {"val_loss": total / self.rows.shape[0]}
        if self.metric != "loss":
            measure = recall_at_k if self.metric == "recall" else ndcg_at_k
            per_user = []
            for start in range(0, self.given.shape[0], self.batch_size):
                given = self.given[start : start + self.batch_size]
                ranked, _ = top_n(batch_scores(given), given, self.k)
                per_user.append(
                    measure(ranked, self.target[start : start + self.batch_size], self.k)
                )
            record[f"val_{self.metric}@{self.k}"] = float(np.mean(np.concatenate(per_user)))
        return record

    def score(self, record: dict[str, float]) -> float:
        """Higher is better: minus the loss, or the ranking metric."""
        if self.metric == "loss":
            return -record["val_loss"]
        return record[f"val_{self.metric}@{self.k}"]


def _hold_out(
    rows: sp.csr_matrix, share: float, rng: np.random.Generator
) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """Hide ``ceil(share * n)`` random interactions of every row (users with a single
    interaction keep it as input and get no target)."""
    rows = rows.tocsr()
    counts = np.diff(rows.indptr)
    row_of = np.repeat(np.arange(rows.shape[0]), counts)
    # Rank the entries of each row by a random key: entries ranked below the row's quota
    # become targets. lexsort sorts by row first, then by the key within the row.
    order = np.lexsort((rng.random(rows.nnz), row_of))
    rank = np.empty(rows.nnz, dtype=np.int64)
    rank[order] = np.arange(rows.nnz) - np.repeat(rows.indptr[:-1], counts)
    quota = np.ceil(share * counts - 1e-9).astype(np.int64)
    quota[counts < 2] = 0
    is_target = rank < quota[row_of]
    target = rows.copy()
    target.data = np.where(is_target, rows.data, 0).astype(np.float32)
    given = rows.copy()
    given.data = np.where(is_target, 0, rows.data).astype(np.float32)
    target.eliminate_zeros()
    given.eliminate_zeros()
    return given, target


def recall_at_k(ranked: np.ndarray, target: sp.csr_matrix, k: int) -> np.ndarray:
    """Recall@K = hits in the top K / min(K, number of targets), per user.

    Args:
        ranked: (n_users, >= k) item indices, best first.
        target: (n_users, n_items) held-out items.

    Returns:
        (n_users,) recall; NaN for users without targets.
    """
    target = canonical_rows(target, "target")  # a target stored twice is one target
    hits = _hits(ranked, target, k)
    n_target = np.diff(target.indptr)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n_target > 0, hits.sum(1) / np.minimum(k, n_target), np.nan)


def ndcg_at_k(ranked: np.ndarray, target: sp.csr_matrix, k: int) -> np.ndarray:
    """nDCG@K with binary gains, per user; the ideal DCG places min(K, |targets|) hits first.

    Args:
        ranked: (n_users, >= k) item indices, best first.
        target: (n_users, n_items) held-out items.

    Returns:
        (n_users,) nDCG; NaN for users without targets.
    """
    target = canonical_rows(target, "target")
    hits = _hits(ranked, target, k)
    discount = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = hits @ discount
    n_target = np.diff(target.indptr)
    ideal = np.concatenate([[0.0], np.cumsum(discount)])[np.minimum(k, n_target)]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n_target > 0, dcg / ideal, np.nan)


def _hits(ranked: np.ndarray, target: sp.csr_matrix, k: int) -> np.ndarray:
    """(n_users, k) float 1.0 where the ranked item is a target; an empty slot (id -1,
    or a list shorter than k: :func:`steercf.ranking.top_n`) is never a hit."""
    if ranked.shape[0] != target.shape[0]:
        raise InputError(
            f"ranked lists for {ranked.shape[0]} users but targets for {target.shape[0]}"
        )
    ranked = np.asarray(ranked)[:, :k]
    filled = ranked >= 0
    target = target.tocsr()
    rows = np.repeat(np.arange(ranked.shape[0]), ranked.shape[1])
    found = np.asarray(target[rows, np.where(filled, ranked, 0).ravel()]).reshape(ranked.shape)
    hits = np.zeros((ranked.shape[0], k))
    hits[:, : ranked.shape[1]] = (found > 0) & filled
    return hits


class _Ranker(Protocol):
    def recommend(
        self, user_items: sp.csr_matrix, N: int = 20, filter_seen: bool = True
    ) -> tuple[np.ndarray, np.ndarray]: ...


@dataclass
class EvalResult:
    """Per-user metric values with their mean and standard error."""

    per_user: dict[str, np.ndarray] = field(default_factory=dict)

    def mean(self, metric: str) -> float:
        return float(np.nanmean(self.per_user[metric]))

    def sem(self, metric: str) -> float:
        values = self.per_user[metric]
        values = values[~np.isnan(values)]
        return float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else float("nan")

    def summary(self) -> dict[str, float]:
        """``{metric: mean, metric_sem: standard error}``."""
        out: dict[str, float] = {}
        for name in self.per_user:
            out[name] = self.mean(name)
            out[f"{name}_sem"] = self.sem(name)
        return out


def evaluate(
    model: _Ranker,
    user_input: sp.csr_matrix,
    target: sp.csr_matrix,
    ks: tuple[int, ...] = (20,),
    batch_size: int = 1024,
    progress: bool = False,
) -> EvalResult:
    """Rank all items for each user from ``user_input`` (seen items filtered) and score
    the lists against ``target``. Users without targets are skipped.

    Args:
        model: anything with ``recommend(user_items, N, filter_seen) -> (ids, scores)``.
        user_input: (n_users, n_items) the history each user shows.
        target: (n_users, n_items) their held-out items.
        ks: cut-offs, each in ``[1, n_items]`` (:func:`check_cutoffs`); Recall@K and
            nDCG@K are reported for each.

    Both matrices are read by :func:`canonical_rows` first: an item stored twice is one
    item, a stored zero none, so a row holding only zeros has no input (or no target).

    Raises:
        InputError: mismatched shapes, a bad cut-off, a ``batch_size`` that is not a
            whole number >= 1, non-numeric, NaN or infinite values, or no user with both
            a history and a target.
    """
    batch_size = whole_number(batch_size, "batch_size", minimum=1)
    user_input = canonical_rows(user_input, "user_input")
    target = canonical_rows(target, "target")
    if user_input.shape != target.shape:
        raise InputError(f"input shape {user_input.shape} != target shape {target.shape}")
    ks = check_cutoffs(ks, user_input.shape[1])
    keep = (np.diff(target.indptr) > 0) & (np.diff(user_input.indptr) > 0)
    if not keep.any():
        raise InputError(
            f"nothing to evaluate: none of the {target.shape[0]} users has both a history "
            "(user_input) and held-out items (target)"
        )
    user_input, target = user_input[keep], target[keep]
    n_max = max(ks)
    per_user: dict[str, list[np.ndarray]] = {f"{m}@{k}": [] for k in ks for m in ("recall", "ndcg")}
    starts = range(0, user_input.shape[0], batch_size)
    for start in tqdm(starts, desc="evaluate", disable=not progress, leave=False):
        batch = slice(start, start + batch_size)
        ranked, _ = model.recommend(user_input[batch], N=n_max, filter_seen=True)
        for k in ks:
            per_user[f"recall@{k}"].append(recall_at_k(ranked, target[batch], k))
            per_user[f"ndcg@{k}"].append(ndcg_at_k(ranked, target[batch], k))
    return EvalResult({name: np.concatenate(parts) for name, parts in per_user.items()})
