"""Task 2, correlations: pairs of latents that co-occur in documents more than chance,
by normalised PMI, keeping (by default) only pairs whose labels are unrelated.

Takes document codes ``(n_docs, n_latents)`` from :meth:`steercf.text.TextSAE.doc_codes`,
binarised at a per-latent floor (:meth:`steercf.text.TextSAE.firing_floor`: half the
latent's typical strong activation) or at > 0. With k = 32 of 384 latents every latent
fires weakly on 8 - 12 % of documents of every class; counted as co-occurrences, those
weak firings bury a planted pair under chance ones (``benchmarks/text.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from steercf.errors import InputError
from steercf.text.common import check_codes, label_words

CORRELATION_COLUMNS = [
    "latent_x",
    "latent_y",
    "npmi",
    "count_x",
    "count_y",
    "count_xy",
    "label_x",
    "label_y",
]


def npmi(binary: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Normalised PMI between the columns of a binary matrix (n_docs, m).

    ``npmi(x, y) = log(P(x,y) / (P(x) P(y))) / -log P(x,y)``: 1 for latents that always
    co-occur, 0 for independent ones, -1 for pairs that never co-occur.

    Returns:
        ``(npmi (m, m), joint counts (m, m))``; the diagonal is set to 1.
    """
    x = np.asarray(binary, dtype=np.float32)
    n = x.shape[0]
    joint = x.T @ x  # (m, m) co-occurrence counts
    p = np.diag(joint) / n
    pxy = joint / n
    with np.errstate(divide="ignore", invalid="ignore"):
        pmi = np.log(pxy) - np.log(p)[:, None] - np.log(p)[None, :]
        out = pmi / -np.log(pxy)
    out[joint == 0] = -1.0
    out[pxy >= 1] = 1.0  # both always on: perfectly co-occurring
    np.fill_diagonal(out, 1.0)
    return out, joint


def firing(codes: np.ndarray, floor: float | np.ndarray | None = None) -> np.ndarray:
    """Bool (n_docs, n_latents): where codes (n_docs, n_latents) reach ``floor`` (a
    scalar or (n_latents,); None: > 0). A floor of 0 still needs a positive code.

    Raises:
        InputError: ``floor`` is negative, not finite, or has the wrong length.
    """
    if floor is None:
        return codes > 0
    floor = np.asarray(floor, np.float64)
    if floor.ndim > 1 or (floor.ndim == 1 and floor.shape[0] != codes.shape[1]):
        raise InputError(
            f"floor must be a number or one value per latent ({codes.shape[1]}), "
            f"got shape {floor.shape}"
        )
    if not np.isfinite(floor).all() or (floor < 0).any():
        raise InputError("floor must be finite and >= 0")
    return (codes > 0) & (codes >= floor)


def labels_related(terms_x: Sequence[str], terms_y: Sequence[str]) -> bool:
    """Two latents' labels are related when their term lists share a word (stemmed)."""
    return bool(label_words(terms_x) & label_words(terms_y))


def default_relatedness(
    terms: Sequence[Sequence[str]] | None,
    centroids: np.ndarray | None,
    related_cosine: float,
) -> Callable[[int, int], bool] | None:
    """The default ``related(x, y)`` test of :func:`latent_correlations`: the latents'
    centroids (n_latents, d) have cosine >= ``related_cosine``, or their ``terms``
    (n_latents lists) share a stemmed word. None when neither is given."""
    if terms is None and centroids is None:
        return None
    word_sets: dict[int, set[str]] = {}

    def related(x: int, y: int) -> bool:
        if centroids is not None and float(centroids[x] @ centroids[y]) >= related_cosine:
            return True
        if terms is None:
            return False
        for j in (x, y):
            if j not in word_sets:
                word_sets[j] = label_words(terms[j])
        return bool(word_sets[x] & word_sets[y])

    return related


def latent_correlations(
    codes: Any,
    labels: Sequence[str] | None = None,
    terms: Sequence[Sequence[str]] | None = None,
    min_count: int = 5,
    min_npmi: float = 0.0,
    top: int | None = 50,
    unrelated: bool = True,
    related: Callable[[int, int], bool] | None = None,
    centroids: np.ndarray | None = None,
    related_cosine: float = 0.5,
    floor: float | np.ndarray | None = None,
    model: Any = None,
) -> pd.DataFrame:
    """Pairs of latents that co-occur in documents more than chance, by NPMI.

    Args:
        codes: (n_docs, n_latents) document codes, binarised at ``floor``.
        labels: latent labels (for the output); terms: per-latent term lists used by
            the default relatedness test (default: the labels split on commas).
        min_count: ignore latents firing on fewer documents, and pairs co-occurring
            in fewer (NPMI of rare events is noisy).
        min_npmi: keep pairs with NPMI at least this.
        unrelated: keep only pairs whose labels are unrelated (the interesting,
            non-obvious correlations); ``related(x, y) -> bool`` overrides the default
            test: the terms share a word (:func:`labels_related`) or, when
            ``centroids`` (n_latents, d) are given (``TextSAE.centroids``), the two
            latents' centroids have cosine >= ``related_cosine`` (same topic in
            different words, e.g. "football" and "tennis").
        floor: a latent is on in a document when its code is at least this: a scalar
            or one value per latent (n_latents,); None: any activation > 0 (the
            toolkit's rule), or with ``model`` its :meth:`TextSAE.firing_floor`.
        model: the :class:`steercf.text.TextSAE` that made ``codes``: fills
            ``labels``, ``terms``, ``centroids`` and ``floor`` left as None from it,
            as ``steercf text correlate`` does (pass ``floor=0`` for any activation).

    Returns:
        DataFrame sorted by NPMI: ``latent_x, latent_y, npmi, count_x, count_y,
        count_xy, label_x, label_y`` (``latent_x < latent_y``).

    Raises:
        InputError: ``floor`` is not finite and non-negative, or not one per latent.
    """
    if model is not None:
        labels = model.labels if labels is None else labels
        terms = model.terms if terms is None else terms
        centroids = model.centroids if centroids is None else centroids
        floor = model.firing_floor() if floor is None else floor
    binary = firing(check_codes(codes), floor)
    counts = binary.sum(0)
    alive = np.flatnonzero(counts >= min_count)
    if alive.size < 2:
        return pd.DataFrame(columns=CORRELATION_COLUMNS)
    scores, joint = npmi(binary[:, alive])
    iu, ju = np.triu_indices(alive.size, k=1)
    keep = (joint[iu, ju] >= min_count) & (scores[iu, ju] >= min_npmi)
    iu, ju = iu[keep], ju[keep]
    order = np.argsort(-scores[iu, ju], kind="stable")
    if terms is None and labels is not None:
        terms = [str(label).split(",") for label in labels]
    if related is None:
        related = default_relatedness(terms, centroids, related_cosine)
    rows = []
    for o in order:
        x, y = int(alive[iu[o]]), int(alive[ju[o]])
        if unrelated and related is not None and related(x, y):
            continue
        rows.append(
            {
                "latent_x": x,
                "latent_y": y,
                "npmi": float(scores[iu[o], ju[o]]),
                "count_x": int(counts[x]),
                "count_y": int(counts[y]),
                "count_xy": int(joint[iu[o], ju[o]]),
                "label_x": "" if labels is None else labels[x],
                "label_y": "" if labels is None else labels[y],
            }
        )
        if top is not None and len(rows) >= top:
            break
    return pd.DataFrame(rows, columns=CORRELATION_COLUMNS)
