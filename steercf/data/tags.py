"""Item tags: a bag of named tags per item (:class:`ItemTags`), built from (item, tag) rows
with :func:`tags_from_pairs`. Also importable from :mod:`steercf.data.interactions`."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from steercf.errors import InputError, UnknownIdError

__all__ = ["ItemTags", "tags_from_pairs"]


@dataclass(eq=False)  # fields are arrays: compare by identity rather than raise
class ItemTags:
    """A bag of tags per item.

    Attributes:
        matrix: (n_items, n_tags) float32 CSR counts; rows aligned to `InteractionData.item_ids`.
        names: (n_tags,) tag names (str), column order of `matrix`.
    """

    matrix: sp.csr_matrix
    names: np.ndarray

    def __post_init__(self) -> None:
        self.matrix = sp.csr_matrix(self.matrix, dtype=np.float32)
        self.names = np.asarray(self.names, dtype=str)
        if self.matrix.shape[1] != len(self.names):
            raise InputError(
                f"tag matrix has {self.matrix.shape[1]} columns but {len(self.names)} tag names"
            )

    @property
    def n_tags(self) -> int:
        return len(self.names)

    def filter(self, min_count: int = 1) -> ItemTags:
        """Keep only tags applied at least `min_count` times in total (column sum).

        Returns a new ItemTags with the same rows and a subset of the columns, in the same order.
        """
        totals = np.asarray(self.matrix.sum(axis=0)).ravel()
        keep = np.flatnonzero(totals >= min_count)
        return ItemTags(matrix=self.matrix[:, keep].tocsr(), names=self.names[keep])

    def index(self, name: str) -> int:
        """Column of tag `name`.

        An exact match wins; otherwise a unique case-insensitive match is accepted.
        Raises UnknownIdError listing the closest tag names when there is none.
        """
        position = self._positions.get(name)
        if position is not None:
            return position
        folded = self._folded_positions.get(str(name).casefold())
        if folded is not None and len(folded) == 1:
            return folded[0]
        close = difflib.get_close_matches(str(name), list(self._positions), n=5, cutoff=0.6)
        hint = f"; close matches: {', '.join(repr(c) for c in close)}" if close else ""
        raise UnknownIdError(f"unknown tag {name!r} (among {self.n_tags} tags){hint}")

    def items_with(self, name: str) -> np.ndarray:
        """Sorted item indices (rows) that carry tag `name` at least once: (n,) int64."""
        column = self.matrix[:, self.index(name)]
        return np.sort(column.nonzero()[0]).astype(np.int64)

    def tags_of(self, item_index: int) -> list[str]:
        """Names of the tags an item carries, in column order."""
        row = self.matrix[int(item_index)]
        return [str(n) for n in self.names[np.sort(row.indices[row.data > 0])]]

    @cached_property
    def _positions(self) -> dict[str, int]:
        return {str(n): i for i, n in enumerate(self.names)}

    @cached_property
    def _folded_positions(self) -> dict[str, list[int]]:
        folded: dict[str, list[int]] = {}
        for i, n in enumerate(self.names):
            folded.setdefault(str(n).casefold(), []).append(i)
        return folded


def tags_from_pairs(
    pair_items: Iterable[Any] | np.ndarray,
    pair_tags: Iterable[Any] | np.ndarray,
    item_ids: np.ndarray,
    names: Iterable[str] | None = None,
    unique: bool = False,
) -> ItemTags:
    """Build ItemTags from parallel arrays of (item id, tag name) rows.

    Each row adds one to the (item, tag) count; with `unique=True` repeated rows count once.
    Rows whose item is not in `item_ids`, or whose tag is not in `names`, are ignored.

    Args:
        pair_items: (n_rows,) original item ids.
        pair_tags: (n_rows,) tag names.
        item_ids: (n_items,) the matrix columns the rows of the result align to.
        names: tag vocabulary in column order; default: sorted distinct tags of kept rows.

    Returns:
        ItemTags with an (n_items, n_tags) float32 count matrix.
    """
    pairs = pd.DataFrame(
        {"item": np.asarray(pair_items), "tag": np.asarray(pair_tags, dtype=object)}
    )
    pairs["row"] = pd.Index(item_ids).get_indexer(pairs["item"])
    pairs = pairs[(pairs["row"] >= 0) & pairs["tag"].notna()]
    if unique:
        pairs = pairs.drop_duplicates(["row", "tag"])
    if names is None:
        vocabulary = np.sort(pairs["tag"].astype(str).unique())
    else:
        vocabulary = np.asarray(list(names), dtype=str)
    columns = pd.Index(vocabulary).get_indexer(pairs["tag"].astype(str))
    in_vocabulary = columns >= 0
    matrix = sp.csr_matrix(
        (
            np.ones(int(in_vocabulary.sum()), dtype=np.float32),
            (pairs["row"].to_numpy()[in_vocabulary], columns[in_vocabulary]),
        ),
        shape=(len(item_ids), len(vocabulary)),
    )
    matrix.sum_duplicates()  # duplicates become counts
    return ItemTags(matrix=matrix, names=vocabulary)
