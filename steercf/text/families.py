"""Feature families (O'Neill et al. 2024): general latents with more specific children.

Co-occurrence of binarised document codes ``C = B^T B``, normalised as
``C[i, j] / min(count_i, count_j)`` (the share of the rarer latent's documents that also
carry the other), small entries dropped; a maximum spanning tree over it; each edge
directed from the more frequent (parent, more general) latent to the less frequent one.
A family is a parent with at least ``min_children`` children. The roots (parents) are
then removed and the tree rebuilt to find families further down, ``rounds`` times.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import sparse
from scipy.sparse.csgraph import minimum_spanning_tree

from steercf.errors import InputError


def cooccurrence(binary: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(normalised co-occurrence (m, m) with zero diagonal, counts (m,))`` of a binary
    matrix (n_docs, m)."""
    x = np.asarray(binary, dtype=np.float32)
    joint = x.T @ x
    counts = np.diag(joint).copy()
    with np.errstate(invalid="ignore", divide="ignore"):
        norm = joint / np.minimum(counts[:, None], counts[None, :])
    norm = np.nan_to_num(norm, nan=0.0, posinf=0.0)
    np.fill_diagonal(norm, 0.0)
    return norm, counts


def feature_families(
    codes: Any,
    labels: Sequence[str] | None = None,
    min_count: int = 5,
    min_cooccurrence: float = 0.2,
    min_children: int = 2,
    rounds: int = 3,
) -> pd.DataFrame:
    """Parent -> children families of latents.

    Args:
        codes: (n_docs, n_latents) document codes (binarised at > 0).
        labels: (n_latents,) labels for the output.
        min_count: latents firing on fewer documents are left out.
        min_cooccurrence: normalised co-occurrence below this is no edge.
        min_children: children a parent needs to make a family.
        rounds: times the tree is rebuilt after removing the previous roots.

    Returns:
        DataFrame sorted by round, then family size: ``round, parent, parent_label,
        parent_count, children`` (list, strongest edge first), ``child_labels``,
        ``weights`` (normalised co-occurrence of each edge).
    """
    codes = np.asarray(codes)
    if codes.ndim != 2 or codes.shape[0] == 0:
        raise InputError(f"codes must be a non-empty (n_docs, n_latents) array, got {codes.shape}")
    binary = codes > 0
    active = np.flatnonzero(binary.sum(0) >= min_count)
    columns = [
        "round",
        "parent",
        "parent_label",
        "parent_count",
        "children",
        "child_labels",
        "weights",
    ]
    rows: list[dict[str, Any]] = []
    norm_all, counts_all = cooccurrence(binary[:, active])
    remaining = np.arange(active.size)
    for r in range(rounds):
        if remaining.size < 2:
            break
        weights = norm_all[np.ix_(remaining, remaining)].copy()
        weights[weights < min_cooccurrence] = 0.0
        # scipy finds a minimum spanning tree over non-zero entries: negate for maximum
        tree = minimum_spanning_tree(sparse.csr_matrix(-weights)).tocoo()
        children: dict[int, list[tuple[int, float]]] = {}
        counts = counts_all[remaining]
        for i, j, w in zip(tree.row, tree.col, -tree.data, strict=True):
            parent, child = (i, j) if counts[i] >= counts[j] else (j, i)
            children.setdefault(int(parent), []).append((int(child), float(w)))
        roots = []
        for parent, kids in children.items():
            if len(kids) < min_children:
                continue
            kids.sort(key=lambda kw: -kw[1])
            p = int(active[remaining[parent]])
            ids = [int(active[remaining[c]]) for c, _ in kids]
            rows.append(
                {
                    "round": r + 1,
                    "parent": p,
                    "parent_label": "" if labels is None else labels[p],
                    "parent_count": int(counts[parent]),
                    "children": ids,
                    "child_labels": [] if labels is None else [labels[c] for c in ids],
                    "weights": [round(w, 3) for _, w in kids],
                }
            )
            roots.append(parent)
        if not roots:
            break
        remaining = np.delete(remaining, roots)
    frame = pd.DataFrame(rows, columns=columns)
    if len(frame):
        frame["_size"] = frame["children"].map(len)
        frame = frame.sort_values(["round", "_size"], ascending=[True, False], kind="stable")
        frame = frame.drop(columns="_size").reset_index(drop=True)
    return frame
