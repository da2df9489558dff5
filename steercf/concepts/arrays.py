"""Arrays shared by the concept mappings and the monosemanticity report.

Everything here is a pure function of the item activations ``S`` ``(n_items, n_units)``
(non-negative) and the tag counts ``T`` ``(n_items, n_tags)``; the notation is that of
:mod:`steercf.concepts.mapping`:

* ``A = P S`` ``(n_tags, n_units)``: the mean activation of each unit over each tag's
  items (:func:`tag_unit_means`), ``P`` being ``T.T`` with each tag's row normalised.
* ``tfidf(X)`` over a terms x documents matrix (:func:`tfidf`), the weighting behind the
  published "best characterizes" and "most unique" mappings.
* each unit's top-activating items (:func:`top_items`).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import scipy.sparse as sp
import torch

from steercf.data import ItemTags
from steercf.errors import InputError

TOP_ITEMS = 10  # K of the top-item precision mapping and of label precision@K

ItemActs = np.ndarray | torch.Tensor


def as_activations(item_acts: ItemActs) -> np.ndarray:
    """(n_items, n_units) float64 numpy copy; rejects NaN and negative activations."""
    acts = item_acts.detach().cpu().numpy() if torch.is_tensor(item_acts) else item_acts
    acts = np.asarray(acts, dtype=np.float64)
    if acts.ndim != 2:
        raise InputError(f"item activations must be 2-D (items x units), got shape {acts.shape}")
    if not np.isfinite(acts).all():
        raise InputError("item activations hold NaN or infinite values")
    if (acts < 0).any():
        raise InputError(
            "item activations must be non-negative; pass signed features through "
            "steercf.concepts.report.signed_split first"
        )
    return acts


def tag_inputs(
    item_acts: ItemActs, item_tags: ItemTags | sp.spmatrix, tag_names: Iterable[str] | None
) -> tuple[np.ndarray, sp.csr_matrix, np.ndarray]:
    """Validate and align the two inputs of every mapping.

    Args:
        item_acts: (n_items, n_units) non-negative activations ``S``.
        item_tags: (n_items, n_tags) counts ``T`` (ItemTags, or sparse with generated
            names ``tag0, tag1, ...``).
        tag_names: overrides the names of ``item_tags``.

    Returns:
        ``(acts, counts, names)``: (n_items, n_units) float64, (n_items, n_tags) float64
        CSR and (n_tags,) str.
    """
    acts = as_activations(item_acts)
    if isinstance(item_tags, ItemTags):
        counts, names = item_tags.matrix, item_tags.names
    else:
        counts = sp.csr_matrix(item_tags)
        names = np.array([f"tag{i}" for i in range(counts.shape[1])], dtype=str)
    if tag_names is not None:
        names = np.asarray(list(tag_names), dtype=str)
    counts = sp.csr_matrix(counts, dtype=np.float64)
    if counts.shape[0] != acts.shape[0]:
        raise InputError(
            f"{acts.shape[0]} item activation rows but {counts.shape[0]} item tag rows"
        )
    if counts.shape[1] != len(names):
        raise InputError(f"{counts.shape[1]} tag columns but {len(names)} tag names")
    if counts.nnz and counts.data.min() < 0:
        raise InputError("tag counts must be non-negative")
    return acts, counts, names


def tag_unit_means(item_acts: ItemActs, item_tags: ItemTags | sp.spmatrix) -> np.ndarray:
    """``A = P S``: (n_tags, n_units) mean activation of each unit over each tag's items.

    ``P[t, i] = T[i, t] / sum_j T[j, t]`` (tag rows normalised to sum 1; an untagged
    concept gets a zero row).
    """
    acts, counts, _ = tag_inputs(item_acts, item_tags, None)
    return tag_means(acts, counts)


def tag_means(acts: np.ndarray, counts: sp.csr_matrix) -> np.ndarray:
    """:func:`tag_unit_means` of inputs already checked by :func:`tag_inputs`:
    (n_items, n_units) ``acts`` and (n_items, n_tags) ``counts`` -> (n_tags, n_units)."""
    per_tag = np.asarray(counts.sum(axis=0)).ravel()
    p = sp.diags(np.divide(1.0, per_tag, out=np.zeros_like(per_tag), where=per_tag > 0))
    return np.asarray((p @ counts.T.tocsr()) @ acts)


def tfidf(x: np.ndarray) -> np.ndarray:
    """TF-IDF of a (terms x documents) matrix, as in the reference.

    ``tf[a, b] = x[a, b] / sum_a' x[a', b]`` (each document normalised; an all-zero
    document stays zero), ``idf[a] = ln((N + 1) / (df[a] + 1)) + 1`` with ``N`` the number
    of documents and ``df[a] = #{b : x[a, b] != 0}``; returns ``tf * idf[:, None]``.
    """
    x = np.asarray(x, dtype=np.float64)
    column = x.sum(axis=0, keepdims=True)
    tf = np.divide(x, column, out=np.zeros_like(x), where=column > 0)
    df = (x != 0).sum(axis=1)
    idf = np.log((x.shape[1] + 1) / (df + 1)) + 1.0
    return tf * idf[:, None]


def live_units(item_acts: ItemActs, min_items: int = 1) -> np.ndarray:
    """(n_units,) bool: units active (> 0) on at least ``min_items`` items."""
    return (as_activations(item_acts) > 0).sum(axis=0) >= min_items


def top_items(item_acts: ItemActs, k: int) -> np.ndarray:
    """(n_units, k) int64: each unit's ``k`` most active items, strongest first (ties:
    lower item index); ``-1`` pads units active on fewer than ``k`` items."""
    acts = as_activations(item_acts)
    k = int(min(k, acts.shape[0]))
    # a stable sort of -acts along items gives "strongest first, lower index on ties"
    order = np.argsort(-acts, axis=0, kind="stable")[:k].T
    active = np.take_along_axis(acts.T, order, axis=1) > 0
    return np.where(active, order, -1).astype(np.int64)
