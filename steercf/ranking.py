"""Top-N: the one function that turns item scores into ranked lists.

Every entry point (models, steering, batch scoring, the implicit and RecBole wrappers,
the explorer, the CLI) ranks through :func:`top_n`, so they share one contract:

* a returned item is never one the user has seen, a filtered item or outside the
  candidate set;
* a row with fewer than ``N`` candidates gets fewer items. Results are rectangular
  (n_users, width) arrays, so such a row is padded with id ``-1`` and score ``-inf``;
  ``width`` is the longest list in the batch (``N`` with ``pad=True``, implicit's
  fixed-width convention). For one user the result is exactly the candidates left.
"""

from __future__ import annotations

import operator
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from steercf.errors import InputError, UnknownIdError

NO_ITEM = -1  # id of an empty slot in a row with fewer than N candidates


def whole_number(value: Any, name: str, minimum: int | None = None) -> int:
    """``value`` as an int: the one rule for list lengths, cut-offs and latent ids.

    An int, a NumPy integer or an integer 0-d tensor is accepted; a bool (``True`` is not
    1 here), a float (even ``3.0``: a length or an id is never measured) or a string
    (``"5"``: parse it first) raises InputError naming ``name``, as does a value below
    ``minimum``.
    """
    wanted = "a whole number" + ("" if minimum is None else f" >= {minimum}")
    if isinstance(value, bool | np.bool_):
        raise InputError(f"{name} must be {wanted}, got the bool {value!r}")
    try:
        number = operator.index(value)  # ints of any kind; never a float or a string
    except TypeError:
        raise InputError(f"{name} must be {wanted}, got {value!r}") from None
    if minimum is not None and number < minimum:
        raise InputError(f"{name} must be {wanted}, got {number}")
    return number


def check_n(N: Any, name: str = "N") -> int:
    """``N`` as an int >= 1 (:func:`whole_number`); every top-N path checks its length here.

    A larger ``N`` than there are candidates is not an error: a list holds what is left
    (see the module docstring)."""
    return whole_number(N, name, minimum=1)


def item_index(ids: Any, n_items: int, name: str = "filter_items") -> np.ndarray:
    """(m,) int64 item indices, each checked to lie in ``[0, n_items)``.

    Raises:
        UnknownIdError: an index is negative or too large (``-1`` is not "the last item").
    """
    index = np.asarray(ids).reshape(-1)
    if index.size and not np.issubdtype(index.dtype, np.integer):
        raise InputError(f"{name} must hold integer item indices, got {index.dtype}")
    index = index.astype(np.int64)
    bad = index[(index < 0) | (index >= n_items)]
    if len(bad):
        raise UnknownIdError(
            f"{name}: unknown item index(es) {bad[:10].tolist()}; the model has items "
            f"0..{n_items - 1}"
        )
    return index


def top_n(
    scores: torch.Tensor,
    seen: sp.spmatrix | None,
    N: int,
    filter_items: Any = None,
    items: Any = None,
    pad: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-N item indices per row with seen and filtered items excluded.

    Args:
        scores: (n_users, n_items) float scores; overwritten with ``-inf`` where excluded.
        seen: (n_users, n_items) items to exclude per user (their history), or None.
        N: list length, >= 1.
        filter_items: (m,) item indices excluded for every user.
        items: (c,) the only item indices that may be returned (a candidate set).
        pad: always return N columns (at most the number of candidate items), padding
            with ``-1`` / ``-inf``.

    Returns:
        ``(ids, scores)``, both (n_users, width), best first, equal scores by item index;
        ``width`` is N capped at the largest number of candidates of any row (see the
        module docstring).

    Raises:
        InputError: bad N or a ``seen`` matrix of another shape; UnknownIdError: an item
            index outside ``[0, n_items)`` in ``filter_items`` or ``items``.
    """
    N = check_n(N)
    n_users, n_items = scores.shape
    if torch.isnan(scores).any():
        raise InputError("the scores hold NaN values; the model's output is broken")
    allowed = torch.ones(n_users, n_items, dtype=torch.bool, device=scores.device)
    columns = n_items  # items that could ever be listed (the padded width's cap)
    if items is not None:
        allowed[:] = False
        listed = np.unique(item_index(items, n_items, "items"))
        allowed[:, torch.from_numpy(listed)] = True
        columns = len(listed)
    if filter_items is not None:
        allowed[:, torch.from_numpy(item_index(filter_items, n_items))] = False
    if seen is not None:
        seen = sp.csr_matrix(seen)
        if seen.shape != (n_users, n_items):
            raise InputError(f"seen items are {seen.shape}, scores {(n_users, n_items)}")
        seen.eliminate_zeros()
        rows = np.repeat(np.arange(n_users), np.diff(seen.indptr))
        allowed[torch.from_numpy(rows), torch.from_numpy(seen.indices.astype(np.int64))] = False
    candidates = allowed.sum(dim=1)  # (n_users,)
    width = min(N, columns) if pad else min(N, int(candidates.max()) if n_users else 0)
    scores.masked_fill_(~allowed, -torch.inf)
    values, ids = _top_by_score_then_index(scores, width)
    empty = torch.arange(width, device=scores.device)[None, :] >= candidates[:, None]
    ids = ids.masked_fill(empty, NO_ITEM)
    values = values.masked_fill(empty, -torch.inf)
    return ids.cpu().numpy(), values.cpu().numpy()


def _top_by_score_then_index(scores: torch.Tensor, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``width`` best entries of each row of (n, m) ``scores``, equal scores taken and
    listed by item index: ``(values, ids)``, both (n, width).

    ``torch.topk`` alone picks and orders tied entries by chance (the choice depends on
    k), so a list of 10 would not start with the list of 3."""
    if width == 0:
        return torch.topk(scores, 0, dim=1)
    cutoff = torch.topk(scores, width, dim=1).values[:, -1:]  # (n, 1) the width-th best
    above = scores > cutoff
    tied = scores == cutoff
    wanted = width - above.sum(dim=1, keepdim=True)  # tied entries still needed per row
    chosen = above | (tied & (tied.cumsum(dim=1) <= wanted))  # exactly width per row
    ids = chosen.nonzero()[:, 1].view(scores.shape[0], width)  # ascending item index
    values, order = scores.gather(1, ids).sort(dim=1, descending=True, stable=True)
    return values, ids.gather(1, order)
