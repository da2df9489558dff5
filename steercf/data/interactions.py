"""Implicit-feedback interaction data: a binary user x item matrix plus item metadata and tags.

`from_dataframe` applies the binarisation protocol of the paper: ratings >= `min_rating`
become positives, duplicate (user, item) pairs collapse to one, users with fewer than
`min_user_positives` positives are dropped, then items left without a positive are dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from steercf.data.rows import canonical_rows
from steercf.data.tags import ItemTags, tags_from_pairs
from steercf.errors import InputError, UnknownIdError

__all__ = [
    "InteractionData",
    "ItemTags",
    "align_items",
    "from_dataframe",
    "sorted_unique_codes",
    "tags_from_pairs",
]

_MAX_IDS_SHOWN = 10


@dataclass(eq=False)  # fields are arrays: compare by identity rather than raise
class InteractionData:
    """Binary implicit feedback with the original ids and item metadata.

    Attributes:
        matrix: (n_users, n_items) float32 CSR; 1.0 marks a positive interaction. Indices are
            sorted, there are no explicit zeros and no duplicate entries.
        user_ids: (n_users,) original user ids, row index -> id.
        item_ids: (n_items,) original item ids, column index -> id.
        items: one row per column of `matrix`, same order, indexed by the original item id;
            has at least a "title" column (str).
        tags: named item tag sets, e.g. "genres", "tags", "kg", rows aligned to `item_ids`.
        tag_applications: raw user tag rows (columns user, item, tag; original ids) when the
            source has them, so that tag counts can later be recomputed on a training split.
        name: a short label for the data set.
        removed_user_ids: ids of the users the source had but the binarisation protocol
            dropped (fewer than `min_user_positives` positives), so that a lookup can say
            why such a user is not here.
        min_user_positives: the threshold that dropped them.
    """

    matrix: sp.csr_matrix
    user_ids: np.ndarray
    item_ids: np.ndarray
    items: pd.DataFrame
    tags: dict[str, ItemTags] = field(default_factory=dict)
    tag_applications: pd.DataFrame | None = None
    name: str = "interactions"
    removed_user_ids: np.ndarray | None = None
    min_user_positives: int | None = None

    def __post_init__(self) -> None:
        self.matrix = canonical_rows(self.matrix, "matrix")
        self.user_ids = np.asarray(self.user_ids)
        self.item_ids = np.asarray(self.item_ids)
        n_users, n_items = self.matrix.shape
        if len(self.user_ids) != n_users or len(self.item_ids) != n_items:
            raise InputError(
                f"matrix is {n_users} x {n_items} but there are {len(self.user_ids)} user ids "
                f"and {len(self.item_ids)} item ids"
            )
        if len(self.items) != n_items:
            raise InputError(f"items has {len(self.items)} rows, expected one per item ({n_items})")
        if "title" not in self.items.columns:
            raise InputError("items must have a 'title' column")
        for tag_name, tag_set in self.tags.items():
            if tag_set.matrix.shape[0] != n_items:
                raise InputError(
                    f"tags[{tag_name!r}] has {tag_set.matrix.shape[0]} rows, expected {n_items}"
                )

    @property
    def n_users(self) -> int:
        return int(self.matrix.shape[0])

    @property
    def n_items(self) -> int:
        return int(self.matrix.shape[1])

    def user_index(self, ids: Any) -> np.ndarray:
        """Original user id(s) -> row indices (int64, same shape as `ids`; 0-d for a scalar).

        The query is converted to the type of the stored ids ("196" finds 196, 196 finds
        "196", "1.5" finds 1.5). Raises UnknownIdError naming the unknown ids (up to 10 of
        them), or saying that a user was dropped by the minimum-positives filter.
        """
        try:
            return _lookup(self._user_lookup, ids, "user")
        except UnknownIdError as err:
            removed = self._removed_among(ids)
            if removed is None:
                raise
            if self.min_user_positives is not None and self.min_user_positives > 0:
                why = (
                    f"has fewer than {self.min_user_positives} positives and was removed by "
                    "--min-user-positives (Python: min_user_positives=)"
                )
            else:  # no threshold: the user had no rating >= min_rating at all
                why = "has no positive (no rating >= --min-rating) and was removed"
            raise UnknownIdError(f"user {removed!r} {why}") from err

    def item_index(self, ids: Any) -> np.ndarray:
        """Original item id(s) -> column indices (int64, same shape as `ids`; 0-d for a scalar).

        Raises UnknownIdError naming the unknown ids (up to 10 of them).
        """
        return _lookup(self._item_lookup, ids, "item")

    def titles(self, item_indices: Any) -> list[str]:
        """Titles of the items at the given column indices (a scalar gives a one-element list)."""
        indices = np.atleast_1d(np.asarray(item_indices)).ravel()
        if indices.size and (
            not np.issubdtype(indices.dtype, np.integer)
            or indices.min() < -self.n_items
            or indices.max() >= self.n_items
        ):
            raise InputError(f"item indices must be integers in [0, {self.n_items})")
        titles = self.items["title"].to_numpy()
        return [str(t) for t in titles[indices]]

    def _removed_among(self, ids: Any) -> Any:
        """The first of ``ids`` that the minimum-positives filter removed, else None."""
        if self.removed_user_ids is None or len(self.removed_user_ids) == 0:
            return None
        removed = pd.Index(self.removed_user_ids)
        flat = np.asarray(ids, dtype=object).ravel()
        for value in flat:
            if self._user_lookup.isin([value]).any():
                continue
            candidates = [value]
            converted = _coerce_like(np.array([value], dtype=object), removed)
            if converted is not None:
                candidates.extend(converted)
            if removed.isin(candidates).any():
                return _plain(value)
        return None

    @cached_property
    def _user_lookup(self) -> pd.Index:
        return pd.Index(self.user_ids)

    @cached_property
    def _item_lookup(self) -> pd.Index:
        return pd.Index(self.item_ids)


def _lookup(index: pd.Index, ids: Any, kind: str) -> np.ndarray:
    """Positions of `ids` in `index`, coercing "196" <-> 196 when the id types differ."""
    query = np.asarray(ids)
    flat = query.ravel()
    positions = index.get_indexer(flat)
    missing = positions < 0
    if missing.any():
        # ids typed on a command line arrive as strings; ids from a CSV may be ints
        coerced = _coerce_like(flat[missing], index)
        if coerced is not None:
            positions[missing] = index.get_indexer(coerced)
            missing = positions < 0
    if missing.any():
        unknown = pd.unique(flat[missing])
        shown = ", ".join(repr(_plain(u)) for u in unknown[:_MAX_IDS_SHOWN])
        more = (
            f" (and {len(unknown) - _MAX_IDS_SHOWN} more)" if len(unknown) > _MAX_IDS_SHOWN else ""
        )
        raise UnknownIdError(
            f"unknown {kind} id{'s' if len(unknown) > 1 else ''}: {shown}{more}; "
            f"the data set has {len(index)} {kind}s"
        )
    return positions.astype(np.int64).reshape(query.shape)


def _coerce_like(values: np.ndarray, index: pd.Index) -> np.ndarray | None:
    """`values` converted to the type of the index ids, or None when that is not possible.

    Integer indexes (int64, uint64 for ids of 2^63 and above) take exact whole numbers,
    float indexes numbers, text indexes the text of each value; an object index holding
    Python ints (ids past uint64) takes whole numbers too.
    """
    kind = index.dtype.kind
    try:
        if kind in "iu":
            whole = [_whole_number(v) for v in values]
            info = np.iinfo(index.dtype)
            if any(w is None or not info.min <= w <= info.max for w in whole):
                return None
            return np.array(whole, dtype=index.dtype)
        if kind == "f":
            return np.array([float(str(_plain(v))) for v in values], dtype=index.dtype)
        if kind == "O" or pd.api.types.is_string_dtype(index.dtype):
            if len(index) and all(isinstance(i, (int, np.integer)) for i in index[:100]):
                whole = [_whole_number(v) for v in values]
                return None if None in whole else np.array(whole, dtype=object)
            return np.array([str(_plain(v)) for v in values], dtype=object)
    except (TypeError, ValueError, OverflowError):
        return None
    return None


def _whole_number(value: Any) -> int | None:
    """``value`` as a Python int when it is one ("196", 196, 196.0), else None."""
    value = _plain(value)
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    text = str(value).strip()
    if text.lstrip("+-").isdigit():
        return int(text)
    try:
        number = float(text)
    except ValueError:
        return None
    return int(number) if number.is_integer() else None


def _plain(value: Any) -> Any:
    """A numpy scalar as the Python value, so messages print 5 rather than np.int64(5)."""
    return value.item() if isinstance(value, np.generic) else value


def sorted_unique_codes(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Factorise ids into codes of their sorted unique values.

    Numeric ids (or strings that all parse as numbers) sort numerically, others as strings,
    so that row and column order never depends on the input row order.

    Returns:
        codes: (len(values),) int64, position of each value in `uniques`.
        uniques: (n_unique,) the distinct ids in sorted order, original values and dtype.
    """
    codes, uniques = pd.factorize(values, sort=False)
    uniques = np.asarray(uniques)
    order = _sort_order(uniques)
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    return rank[codes], uniques[order]


def _sort_order(uniques: np.ndarray) -> np.ndarray:
    if uniques.dtype.kind in "iufb":
        return np.argsort(uniques, kind="stable")
    as_str = np.array([str(u) for u in uniques], dtype=object)
    numeric = pd.to_numeric(pd.Series(uniques, dtype=object), errors="coerce").to_numpy(float)
    if not np.isnan(numeric).any():
        # numeric-looking string ids: order by value, ties ("1" vs "01") by text
        return np.lexsort((as_str, numeric))
    return np.argsort(as_str, kind="stable")


def from_dataframe(
    df: pd.DataFrame,
    user_col: str = "user",
    item_col: str = "item",
    rating_col: str | None = None,
    min_rating: float = 4.0,
    min_user_positives: int = 5,
    items: pd.DataFrame | None = None,
    name: str = "dataframe",
) -> InteractionData:
    """Binarise a table of (user, item[, rating]) rows into InteractionData.

    Protocol: a row is positive when its rating is >= `min_rating` (every row when `rating_col`
    is None); duplicate (user, item) pairs count once; users with fewer than
    `min_user_positives` positives are dropped; items with no remaining positive are dropped.
    Users and items are sorted by id (numerically when the ids are numbers).

    Args:
        df: one row per interaction.
        items: optional item metadata indexed by item id; reindexed to the kept items. Items
            missing from it (or without a title) get their id as title.

    Returns:
        InteractionData with a (n_users, n_items) float32 binary CSR matrix; the users
        the filter dropped are in its `removed_user_ids`.

    Raises:
        InputError: missing columns, empty frame, NaN ids, NaN or infinite ratings,
            non-numeric ratings, or no user left after filtering.
    """
    _check_frame(df, user_col, item_col, rating_col, min_user_positives)
    users, item_values = _positive_rows(df, user_col, item_col, rating_col, min_rating)
    user_codes, user_ids = sorted_unique_codes(users)
    item_codes, item_ids = sorted_unique_codes(item_values)
    matrix, keep_user, item_used = _binary_matrix(
        user_codes, item_codes, len(user_ids), len(item_ids), min_user_positives
    )
    item_ids = item_ids[item_used]
    kept_users = user_ids[keep_user]
    every_user = pd.unique(df[user_col].to_numpy())
    return InteractionData(
        matrix=matrix,
        user_ids=kept_users,
        item_ids=item_ids,
        items=align_items(items, item_ids),
        name=name,
        # users with too few positives, including those with no rating >= min_rating
        removed_user_ids=every_user[~pd.Index(every_user).isin(kept_users)],
        min_user_positives=min_user_positives,
    )


def _check_frame(
    df: pd.DataFrame,
    user_col: str,
    item_col: str,
    rating_col: str | None,
    min_user_positives: int,
) -> None:
    """InputError for a non-frame, missing columns, no rows, a negative threshold or NaN ids."""
    if not isinstance(df, pd.DataFrame):
        raise InputError(f"expected a pandas DataFrame, got {type(df).__name__}")
    wanted = [user_col, item_col] + ([rating_col] if rating_col is not None else [])
    missing = [c for c in wanted if c not in df.columns]
    if missing:
        raise InputError(
            f"missing column{'s' if len(missing) > 1 else ''} {', '.join(map(repr, missing))}; "
            f"the frame has columns {list(map(str, df.columns))}"
        )
    if len(df) == 0:
        raise InputError("the interaction frame is empty")
    if min_user_positives < 0:
        raise InputError(f"min_user_positives must be >= 0, got {min_user_positives}")

    for col in (user_col, item_col):
        n_nan = int(df[col].isna().sum())
        if n_nan:
            raise InputError(f"column {col!r} has {n_nan} missing (NaN) id(s)")


def _positive_rows(
    df: pd.DataFrame, user_col: str, item_col: str, rating_col: str | None, min_rating: float
) -> tuple[np.ndarray, np.ndarray]:
    """(n_positive,) user and item ids of the rows rated >= `min_rating` (all rows when
    there is no rating column)."""
    users = df[user_col].to_numpy()
    item_values = df[item_col].to_numpy()
    if rating_col is not None:
        ratings = _numeric_ratings(df[rating_col], rating_col)
        positive = ratings >= min_rating
        if not positive.any():
            raise InputError(
                f"no rating is >= min_rating={min_rating} (ratings range from "
                f"{np.min(ratings):g} to {np.max(ratings):g}); no user is left"
            )
        users, item_values = users[positive], item_values[positive]
    return users, item_values


def _binary_matrix(
    user_codes: np.ndarray,
    item_codes: np.ndarray,
    n_all_users: int,
    n_all_items: int,
    min_user_positives: int,
) -> tuple[sp.csr_matrix, np.ndarray, np.ndarray]:
    """The binary CSR matrix of (user code, item code) pairs after the protocol's filters.

    Args:
        user_codes, item_codes: (n_pairs,) codes into the sorted unique user / item ids.
        n_all_users, n_all_items: how many distinct users / items the codes range over.

    Returns:
        matrix: (n_users, n_items) float32 CSR with sorted indices, one 1.0 per distinct pair.
        keep_user: (n_all_users,) bool, users with >= `min_user_positives` positives.
        item_used: (n_all_items,) bool, items with a positive from a kept user.
    """
    # One int64 key per (user, item): np.unique both removes duplicates and sorts by user, then
    # item, which is exactly CSR order.
    keys = np.unique(user_codes * n_all_items + item_codes)
    user_codes, item_codes = keys // n_all_items, keys % n_all_items

    per_user = np.bincount(user_codes, minlength=n_all_users)
    keep_user = per_user >= min_user_positives
    if not keep_user.any():
        raise InputError(
            f"no user has at least min_user_positives={min_user_positives} positives "
            f"(the most any user has is {per_user.max()}); lower min_user_positives"
        )
    kept = keep_user[user_codes]
    user_codes, item_codes = user_codes[kept], item_codes[kept]

    # Renumber densely; both maps are monotonic so the CSR order is preserved.
    user_map = np.cumsum(keep_user) - 1
    item_used = np.zeros(n_all_items, dtype=bool)
    item_used[item_codes] = True
    item_map = np.cumsum(item_used) - 1
    rows, cols = user_map[user_codes], item_map[item_codes]
    n_users, n_items = int(keep_user.sum()), int(item_used.sum())

    indptr = np.zeros(n_users + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=n_users), out=indptr[1:])
    matrix = sp.csr_matrix(
        (np.ones(len(cols), dtype=np.float32), cols.astype(np.int32), indptr),
        shape=(n_users, n_items),
    )
    matrix.has_sorted_indices = True
    return matrix, keep_user, item_used


def _numeric_ratings(column: pd.Series, name: str) -> np.ndarray:
    """The rating column as float64, with InputErrors for non-numbers and NaN."""
    if not pd.api.types.is_numeric_dtype(column.dtype) or pd.api.types.is_bool_dtype(column.dtype):
        converted = pd.to_numeric(column, errors="coerce")
        bad = converted.isna() & column.notna()
        if bad.any():
            examples = ", ".join(repr(v) for v in pd.unique(column[bad])[:5])
            raise InputError(f"rating column {name!r} has non-numeric values: {examples}")
        column = converted
    values = column.to_numpy(dtype=np.float64, na_value=np.nan)
    n_nan = int(np.isnan(values).sum())
    if n_nan:
        raise InputError(f"rating column {name!r} has {n_nan} missing (NaN) rating(s)")
    n_inf = int(np.isinf(values).sum())
    if n_inf:  # inf >= min_rating would make it a positive
        raise InputError(f"rating column {name!r} has {n_inf} infinite rating(s)")
    return values


def align_items(items: pd.DataFrame | None, item_ids: np.ndarray) -> pd.DataFrame:
    """Item metadata reindexed to `item_ids`, with a str "title" (the id when unknown).

    Returns a frame with one row per id, in the order of `item_ids`, indexed by the ids.
    """
    index = pd.Index(item_ids, name="item")
    if items is None:
        frame = pd.DataFrame(index=index)
    else:
        frame = items[~items.index.duplicated(keep="first")].reindex(index)
        frame.index.name = "item"
    fallback = pd.Series([str(_plain(i)) for i in item_ids], index=index)
    if "title" in frame.columns:
        frame["title"] = frame["title"].where(frame["title"].notna(), fallback).astype(str)
    else:
        frame.insert(0, "title", fallback)
    return frame
