"""An ``implicit`` (0.7) compatible wrapper around any steercf recommender.

:class:`SteerCFImplicit` subclasses ``implicit.recommender_base.RecommenderBase``:
``fit`` on a (users x items) CSR matrix, ``recommend`` for one user or a batch,
``similar_items``, ``similar_users``, ``save`` / ``load``. implicit's
``evaluation.ranking_metrics_at_k``, ``train_test_split`` and ``leave_k_out_split`` work
on it unchanged::

    from implicit.evaluation import ranking_metrics_at_k, train_test_split
    from steercf.integrations.implicit import SteerCFImplicit
    from steercf.models import ELSA

    train, test = train_test_split(user_items, 0.8, random_state=0)
    model = SteerCFImplicit(ELSA(factors=256, epochs=20)).fit(train)
    ranking_metrics_at_k(model, train, test, K=10)

steercf models are autoencoders: a user *is* their history, so scores always come from
interactions. ``recalculate_user=False`` (implicit's default) scores a user id from the
history stored at ``fit`` (like implicit's stored user factors); ``recalculate_user=True``
scores the rows passed in ``user_items``, so users unseen at fit time can be served.
Users without any interaction get the training popularity ranking.

With an SAE spliced in (:class:`~steercf.models.spliced.SplicedRecommender`), ``recommend``
also steers: ``steer_latents={latent: strength}`` and/or ``knobs=[Knob, ...]`` with
``steer_rule`` (see :mod:`steercf.steering`).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from implicit.recommender_base import RecommenderBase

from steercf.data.rows import canonical_rows
from steercf.errors import InputError, ModelFileError, UnknownIdError
from steercf.evaluation import evaluate
from steercf.integrations import build_knobs
from steercf.models import CFAE, Recommender, load_model
from steercf.ranking import top_n, whole_number
from steercf.steering import DEFAULT_RULE, Knob, recommend_rows, score_rows

__all__ = ["SteerCFImplicit", "steercf_metrics_at_k"]

_MODEL_DIR = "model"
_USER_ITEMS_FILE = "user_items.npz"
_META_FILE = "implicit.json"


class SteerCFImplicit(RecommenderBase):
    """implicit's recommender interface over a steercf model.

    Args:
        model: an unfitted (or fitted) steercf recommender: ELSA, EASE, MultVAE,
            Popularity or a SplicedRecommender (which also steers).
        batch_size: users scored at once in ``recommend`` / ``similar_users``.

    Attributes (after :meth:`fit`):
        model: the fitted steercf model.
        user_items: (n_users, n_items) float32 CSR training interactions; user ids are
            its row indices and item ids its column indices, as in implicit.
        fit_seconds: wall time of ``model.fit``.
    """

    def __init__(self, model: Recommender | None = None, batch_size: int = 1024) -> None:
        self.model = model
        self.batch_size = whole_number(batch_size, "batch_size", minimum=1)

    # ---- training -------------------------------------------------------------------
    def fit(
        self,
        user_items: sp.spmatrix,
        show_progress: bool = True,
        callback: Callable[..., Any] | None = None,
        val_user_items: sp.spmatrix | None = None,
    ) -> SteerCFImplicit:
        """Fit the wrapped model on (n_users, n_items) interactions.

        Args:
            user_items: CSR (any sparse matrix is converted); values > 0 are interactions.
            show_progress: passed to the model's ``progress`` setting where it has one.
            callback: called once after fitting as ``callback(0, seconds)`` (steercf
                models do not expose per-epoch hooks).
            val_user_items: validation users' rows for models that stop early (steercf's
                ``fit(train, val)``); not implicit API.
        """
        if self.model is None:
            raise InputError("SteerCFImplicit needs a steercf model, e.g. SteerCFImplicit(ELSA())")
        if not sp.issparse(user_items):
            raise InputError("user_items must be a scipy sparse (users x items) matrix")
        rows = canonical_rows(user_items, "user_items")
        for target in (self.model, getattr(self.model, "base", None)):
            if target is not None and hasattr(target, "progress"):
                target.progress = bool(show_progress)
        start = time.perf_counter()
        self.model.fit(rows, val_user_items)
        self.fit_seconds = time.perf_counter() - start
        self._set_training_rows(rows)
        if callback is not None:
            callback(0, self.fit_seconds)
        return self

    def _set_training_rows(self, rows: sp.csr_matrix) -> None:
        self.user_items = rows
        # Popularity ranking for users with no interaction (a deterministic fallback;
        # an autoencoder scores an empty history as all zeros).
        counts = np.asarray((rows > 0).sum(axis=0), dtype=np.float32).ravel()
        self._popularity = torch.from_numpy(counts / max(counts.max(), 1.0))
        self._item_vectors: torch.Tensor | None = None
        self._user_vectors: torch.Tensor | None = None

    def _check_fitted(self) -> None:
        if not hasattr(self, "user_items"):
            raise InputError("SteerCFImplicit is not fitted yet; call fit() first")

    @property
    def n_users(self) -> int:
        self._check_fitted()
        return self.user_items.shape[0]

    @property
    def n_items(self) -> int:
        self._check_fitted()
        return self.user_items.shape[1]

    # ---- recommendations ---------------------------------------------------------------
    def recommend(
        self,
        userid: int | np.ndarray | Sequence[int],
        user_items: sp.spmatrix | None = None,
        N: int = 10,
        filter_already_liked_items: bool = True,
        filter_items: np.ndarray | Sequence[int] | None = None,
        recalculate_user: bool = False,
        items: np.ndarray | Sequence[int] | None = None,
        *,
        steer_latents: Mapping[int, float] | None = None,
        knobs: Sequence[Knob] | None = None,
        steer_rule: str = DEFAULT_RULE,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-N items for one user id or a batch (implicit's semantics).

        Args:
            userid: a user id or (n,) user ids (rows of the training matrix).
            user_items: (n, n_items) CSR, one row per user id: the items to filter
                and, with ``recalculate_user``, the history to score. None: the stored
                training rows.
            N: list length (capped at the number of candidate items).
            filter_already_liked_items: never return an item of the user's row.
            filter_items: item ids never returned.
            recalculate_user: score ``user_items`` instead of the stored history (any
                user id, even one unseen at fit time, is then accepted).
            items: rank only these item ids (not with ``filter_items``).
            steer_latents: ``{latent: strength}``, one knob each (spliced models).
            knobs: further :class:`~steercf.steering.Knob` objects.
            steer_rule: ``"convex"`` or ``"additive"``.

        Returns:
            ``(ids, scores)``: int32 / float32 arrays, (N,) for one user id, (n, N) for a
            batch; filtered items never appear (a row with fewer candidates than N is
            padded with id -1 and score -inf).
        """
        self._check_fitted()
        single = np.isscalar(userid) or np.ndim(userid) == 0
        users, given, history = self._recommend_inputs(userid, user_items, recalculate_user)
        if items is not None and filter_items is not None and len(filter_items):
            raise InputError("Can't set both items and filter_items in recommend call")
        # filter what the caller passed when there is something, else the scored history
        seen = (given if given is not None else history) if filter_already_liked_items else None
        knob_list = build_knobs(steer_latents, knobs)
        ids_out, scores_out = [], []
        for start in range(0, len(users), self.batch_size):
            part = slice(start, start + self.batch_size)
            ids, values = recommend_rows(
                self.model,
                history[part],
                N,
                knob_list,
                steer_rule,
                filter_seen=False,
                filter_items=filter_items,
                items=items,
                pad=True,  # implicit's fixed-width lists: -1 / -inf where none is left
                empty_scores=self._popularity,
                seen=None if seen is None else seen[part],
            )
            ids_out.append(ids)
            scores_out.append(values)
        ids = np.concatenate(ids_out).astype(np.int32)
        scores = np.concatenate(scores_out).astype(np.float32)
        return (ids[0], scores[0]) if single else (ids, scores)

    def _recommend_inputs(
        self, userid: Any, user_items: sp.spmatrix | None, recalculate_user: bool
    ) -> tuple[np.ndarray, sp.csr_matrix | None, sp.csr_matrix]:
        """Checked inputs of :meth:`recommend`: ``(users, given, history)`` with (n,) int64
        user ids, the (n, n_items) float32 CSR ``user_items`` (None when not passed) and
        the (n, n_items) rows to score (``given`` with ``recalculate_user``, else the
        stored training rows of ``users``)."""
        users = np.atleast_1d(np.asarray(userid)).astype(np.int64, copy=False)
        if users.ndim != 1:
            raise InputError("userid must be an int or a 1-D array of ints")
        given = None if user_items is None else self._given_rows(user_items, len(users))
        if given is None and recalculate_user:
            raise InputError("recalculate_user=True needs user_items")
        history = given if recalculate_user else self.user_items[self._known_users(users)]
        return users, given, history

    def _given_rows(self, user_items: sp.spmatrix, n_users: int) -> sp.csr_matrix:
        """``user_items`` as (n_users, n_items) float32 CSR, or InputError."""
        if not sp.issparse(user_items):
            raise InputError("user_items must be a CSR sparse matrix")
        given = sp.csr_matrix(user_items, dtype=np.float32)
        if given.shape[0] != n_users:
            raise InputError(
                f"user_items must contain 1 row for every user in userid: "
                f"{given.shape[0]} rows for {n_users} user(s)"
            )
        if given.shape[1] != self.n_items:
            raise InputError(
                f"user_items has {given.shape[1]} item columns, the model {self.n_items}"
            )
        return given

    def recalculate_user(self, userid: Any, user_items: sp.spmatrix) -> torch.Tensor:
        """The model's representation of ``user_items`` rows (implicit API): the
        embedding for CFAEs (spliced: the SAE code), the scores otherwise.

        Returns:
            (d,) for one row, (n, d) for several.
        """
        self._check_fitted()
        rows = sp.csr_matrix(user_items, dtype=np.float32)
        with torch.no_grad():
            if isinstance(self.model, CFAE):
                encoding = self.model.encode(rows)
                out = getattr(encoding, "codes", encoding)  # a spliced model: the SAE code
            else:
                out = score_rows(self.model, rows, empty_scores=self._popularity)
        return out[0] if np.isscalar(userid) else out

    # ---- similarities ------------------------------------------------------------------
    def similar_items(
        self,
        itemid: int | np.ndarray | Sequence[int],
        N: int = 10,
        recalculate_item: bool = False,
        item_users: sp.spmatrix | None = None,
        filter_items: np.ndarray | Sequence[int] | None = None,
        items: np.ndarray | Sequence[int] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Items most similar to each item id: cosine between item vectors, the item
        itself first (score 1), as in implicit's factor models.

        Item vectors: the CFAE embedding of the item's one-hot row (ELSA's item factors;
        a low-rank EASE's encoder rows; a spliced model's base CFAE), or for a full-rank
        EASE the item's row of the item-item weight matrix B.
        """
        if recalculate_item:
            raise NotImplementedError("recalculate_item is not supported by steercf models")
        vectors = self._items_normalised()
        query = np.atleast_1d(np.asarray(itemid)).astype(np.int64)
        _check_ids(query, vectors.shape[0], "item")
        return self._nearest(vectors, query, np.isscalar(itemid), N, filter_items, items)

    def similar_users(
        self,
        userid: int | np.ndarray | Sequence[int],
        N: int = 10,
        filter_users: np.ndarray | Sequence[int] | None = None,
        users: np.ndarray | Sequence[int] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Training users most similar to each user id: cosine between the users'
        embeddings (the model's encoder of their training history; a full-rank EASE
        compares the histories themselves). The user itself comes first."""
        vectors = self._users_normalised()
        query = np.atleast_1d(np.asarray(userid)).astype(np.int64)
        _check_ids(query, vectors.shape[0], "user")
        return self._nearest(vectors, query, np.isscalar(userid), N, filter_users, users)

    def _nearest(
        self,
        vectors: torch.Tensor,
        query: np.ndarray,
        single: bool,
        N: int,
        exclude: Any,
        only: Any,
    ) -> tuple[np.ndarray, np.ndarray]:
        if only is not None and exclude is not None and len(exclude):
            raise InputError("Can't set both a candidate list and a filter list")
        with torch.no_grad():
            sims = vectors[torch.from_numpy(query)] @ vectors.T
        ids, scores = top_n(sims, None, N, filter_items=exclude, items=only, pad=True)
        ids, scores = ids.astype(np.int32), scores.astype(np.float32)
        return (ids[0], scores[0]) if single else (ids, scores)

    def _items_normalised(self) -> torch.Tensor:
        self._check_fitted()
        if self._item_vectors is None:
            if not isinstance(self.model, CFAE):
                raise NotImplementedError(
                    f"similar_items needs item embeddings; {type(self.model).__name__} has none"
                )
            vectors = self.model.item_vectors()
            self._item_vectors = torch.nn.functional.normalize(vectors.float(), dim=1)
        return self._item_vectors

    def _users_normalised(self) -> torch.Tensor:
        self._check_fitted()
        if self._user_vectors is None:
            if not isinstance(self.model, CFAE):
                raise NotImplementedError(
                    f"similar_users needs user embeddings; {type(self.model).__name__} has none"
                )
            self._user_vectors = torch.nn.functional.normalize(
                self.model.user_vectors(self.user_items), dim=1
            )
        return self._user_vectors

    # ---- persistence -------------------------------------------------------------------
    def save(self, file: str | os.PathLike) -> None:
        """Write a directory: the steercf model (safetensors + JSON, no pickle) and the
        training interactions (``user_items.npz``). implicit's ``.npz`` single-file
        format cannot hold a steercf model, and file objects are not accepted."""
        self._check_fitted()
        if not isinstance(file, (str, os.PathLike)):
            raise InputError("SteerCFImplicit.save takes a directory path, not a file object")
        path = Path(file)
        path.mkdir(parents=True, exist_ok=True)
        self.model.save(path / _MODEL_DIR)
        sp.save_npz(path / _USER_ITEMS_FILE, self.user_items)
        (path / _META_FILE).write_text(
            json.dumps({"format": "steercf-implicit", "version": 1, "batch_size": self.batch_size})
        )

    @classmethod
    def load(cls, fileobj_or_path: str | os.PathLike) -> SteerCFImplicit:
        """Read a directory written by :meth:`save`; raises ModelFileError if it is not
        one."""
        path = Path(fileobj_or_path)
        meta_file = path / _META_FILE
        if not meta_file.is_file():
            raise ModelFileError(f"{path} is not a SteerCFImplicit directory (no {_META_FILE})")
        try:
            meta = json.loads(meta_file.read_text())
            user_items = sp.load_npz(path / _USER_ITEMS_FILE).tocsr().astype(np.float32)
        except (OSError, ValueError) as err:
            raise ModelFileError(f"{path}: cannot read the saved interactions ({err})") from err
        if meta.get("format") != "steercf-implicit":
            raise ModelFileError(f"{path}: {_META_FILE} is not a steercf-implicit file")
        model = load_model(path / _MODEL_DIR)
        if model.n_items_ != user_items.shape[1]:
            raise ModelFileError(
                f"{path}: the model has {model.n_items_} items, the interactions "
                f"{user_items.shape[1]}"
            )
        out = cls(model, batch_size=int(meta.get("batch_size", 1024)))
        out._set_training_rows(user_items)
        return out

    def _known_users(self, users: np.ndarray) -> np.ndarray:
        _check_ids(users, self.n_users, "user")
        return users


def steercf_metrics_at_k(
    model: Recommender, train_user_items: sp.spmatrix, test_user_items: sp.spmatrix, K: int = 10
) -> dict[str, float]:
    """implicit's precision@K and nDCG@K computed by steercf's own evaluator.

    :func:`steercf.evaluation.evaluate` ranks each user's items from their training row
    (seen items filtered) with the steercf model's own ``recommend`` and gives per-user
    Recall@K = hits / min(K, |test|) and nDCG@K (ideal DCG over min(K, |test|) hits, as
    implicit). implicit's precision is *pooled* over users, sum(hits) / sum(min(K,
    |test|)), so it is rebuilt from the per-user recall. Users with test items but an
    empty training row are skipped by steercf's evaluator (implicit ranks them; use a
    split that leaves none, e.g. ``leave_k_out_split``, to compare the two).

    Args:
        model: a fitted steercf recommender (e.g. ``SteerCFImplicit.model``).
        train_user_items, test_user_items: (n_users, n_items) the split.

    Returns:
        ``{"precision": ..., "ndcg": ..., "users": n}``.
    """
    train = canonical_rows(train_user_items, "train_user_items")
    test = canonical_rows(test_user_items, "test_user_items")
    result = evaluate(model, train, test, ks=(K,))
    kept = (np.diff(test.indptr) > 0) & (np.diff(train.indptr) > 0)
    quota = np.minimum(K, np.diff(test.indptr)[kept])
    hits = result.per_user[f"recall@{K}"] * quota
    return {
        "precision": float(hits.sum() / quota.sum()),
        "ndcg": result.mean(f"ndcg@{K}"),
        "users": int(kept.sum()),
    }


def _check_ids(ids: np.ndarray, n: int, kind: str) -> None:
    """Raise UnknownIdError for an id outside ``[0, n)``."""
    bad = ids[(ids < 0) | (ids >= n)]
    if len(bad):
        raise UnknownIdError(
            f"unknown {kind} id(s) {bad[:10].tolist()}: the model knows {kind}s 0..{n - 1}"
        )
