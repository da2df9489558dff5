"""The interface every steercf recommender shares.

A recommender is fitted on a (users x items) CSR matrix and scores batches of user rows.
Collaborative autoencoders (:class:`CFAE`) additionally expose ``encode`` (rows ->
embeddings) and ``decode`` (embeddings -> item scores): the seam where a sparse
autoencoder is spliced in.
"""

from __future__ import annotations

import os
import warnings
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp
import torch

from steercf.errors import InputError, ModelFileError
from steercf.io import load_model_dir, save_model_dir

# torch warns on every CSR tensor that the layout is "beta"; we rely only on sparse.mm.
warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")

UserRows = sp.spmatrix | np.ndarray | torch.Tensor


def as_user_rows(
    user_items: UserRows, n_items: int, allow_empty: bool = False, name: str = "user_items"
) -> sp.csr_matrix:
    """Validate user rows and return them as float32 CSR.

    Args:
        user_items: (n_users, n_items) interactions; a 1-D array is one user.
        n_items: the item count the model was fitted on.
        allow_empty: accept users with no interaction (else raise).

    Raises:
        InputError: wrong shape, NaN or infinite values, negative values, empty rows.
    """
    if isinstance(user_items, torch.Tensor):
        user_items = user_items.detach().cpu().numpy()
    if sp.issparse(user_items):
        rows = sp.csr_matrix(user_items, dtype=np.float32)
    else:
        array = np.asarray(user_items, dtype=np.float32)
        if array.ndim == 1:
            array = array[None, :]
        if array.ndim != 2:
            raise InputError(f"{name} must be 2-D (users x items), got {array.ndim} dimensions")
        rows = sp.csr_matrix(array)
    if rows.shape[1] != n_items:
        raise InputError(
            f"{name} has {rows.shape[1]} item columns but the model was fitted on {n_items} items"
        )
    if not np.isfinite(rows.data).all():
        raise InputError(f"{name} contains NaN or infinite values")
    if (rows.data < 0).any():
        raise InputError(f"{name} contains negative values; interactions must be >= 0")
    if rows.shape[0] == 0:
        raise InputError(f"{name} has no rows")
    rows.eliminate_zeros()
    if not allow_empty:
        empty = np.flatnonzero(np.diff(rows.indptr) == 0)
        if len(empty):
            raise InputError(
                f"{name} has {len(empty)} user row(s) with an empty history "
                f"(rows {empty[:10].tolist()}); a user needs at least one interaction"
            )
    return rows


def csr_to_torch(rows: sp.csr_matrix, device: str | torch.device = "cpu") -> torch.Tensor:
    """(n, m) scipy CSR -> torch sparse CSR float32 tensor."""
    rows = rows.tocsr()
    return torch.sparse_csr_tensor(
        torch.from_numpy(rows.indptr.astype(np.int64)),
        torch.from_numpy(rows.indices.astype(np.int64)),
        torch.from_numpy(rows.data.astype(np.float32)),
        size=rows.shape,
        device=device,
        check_invariants=False,
    )


def top_n(
    scores: torch.Tensor,
    seen: sp.csr_matrix | None,
    N: int,
    filter_items: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-N item indices per row with seen and filtered items excluded.

    Args:
        scores: (n_users, n_items) float scores; modified in place.
        seen: (n_users, n_items) items to exclude per user, or None.
        N: list length (capped at the item count).
        filter_items: (m,) item indices excluded for every user.

    Returns:
        ``(ids, scores)``, both (n_users, N), best first.
    """
    if N < 1:
        raise InputError(f"N must be >= 1, got {N}")
    if seen is not None and seen.nnz:
        rows = np.repeat(np.arange(seen.shape[0]), np.diff(seen.indptr))
        scores[torch.from_numpy(rows), torch.from_numpy(seen.indices.astype(np.int64))] = -torch.inf
    if filter_items is not None and len(filter_items):
        scores[:, torch.as_tensor(np.asarray(filter_items, dtype=np.int64))] = -torch.inf
    values, ids = torch.topk(scores, min(N, scores.shape[1]), dim=1)
    return ids.cpu().numpy(), values.cpu().numpy()


class Recommender(ABC):
    """Base recommender: fit on a CSR matrix, score and recommend for batches of rows.

    Subclasses set ``n_items_`` in ``fit`` and implement :meth:`score`,
    :meth:`_state` and :meth:`_from_state`.
    """

    kind: ClassVar[str]
    n_items_: int

    @abstractmethod
    def fit(self, user_items: sp.csr_matrix, val_user_items: sp.csr_matrix | None = None):
        """Learn from (n_users, n_items) interactions; returns ``self``."""

    @abstractmethod
    def score(self, user_items: sp.csr_matrix) -> torch.Tensor:
        """(n_users, n_items) float32 item scores for already-validated CSR rows."""

    def _check_fitted(self) -> None:
        if not hasattr(self, "n_items_"):
            raise InputError(f"{type(self).__name__} is not fitted yet; call fit() first")

    def recommend(
        self,
        user_items: UserRows,
        N: int = 20,
        filter_seen: bool = True,
        filter_items: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-N items for each user row.

        Args:
            user_items: (n_users, n_items) histories; seen items are never recommended
                unless ``filter_seen`` is False.
            N: list length.
            filter_items: item indices never recommended.

        Returns:
            ``(ids, scores)``, each (n_users, N), best first.
        """
        self._check_fitted()
        rows = as_user_rows(user_items, self.n_items_)
        with torch.no_grad():
            scores = self.score(rows)
        return top_n(scores, rows if filter_seen else None, N, filter_items)

    def to(self, device: str | torch.device) -> Recommender:
        """Move the fitted state to ``device`` (in place; returns ``self``).

        Moves every tensor attribute, nested modules (a spliced model's SAE) and nested
        recommenders (its base), and sets a ``device`` hyperparameter so that encoding
        and refitting use the same device."""
        device = torch.device(device)
        for name, value in list(vars(self).items()):
            if isinstance(value, torch.Tensor):
                setattr(self, name, value.to(device))
            elif isinstance(value, (torch.nn.Module, Recommender)):
                value.to(device)
        if isinstance(getattr(self, "device", None), str):
            self.device = str(device)
        return self

    # ---- persistence -------------------------------------------------------------
    # Single-directory models implement these two; composite models (a spliced CFAE +
    # SAE) override save/load instead.
    def _state(self) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        """(config, tensors) that fully describe the fitted model."""
        raise NotImplementedError(f"{type(self).__name__} overrides save() instead")

    @classmethod
    def _from_state(cls, config: dict[str, Any], tensors: dict[str, torch.Tensor], path):
        """Rebuild a fitted model; validate shapes against ``config``."""
        raise NotImplementedError(f"{cls.__name__} overrides load() instead")

    def save(self, path: str | os.PathLike, metadata: dict[str, Any] | None = None) -> None:
        """Write the fitted model as a directory of safetensors + JSON (atomically).

        Args:
            metadata: JSON-serialisable facts stored alongside (the CLI records the data
                set and split seed here); defaults to ``self.metadata_`` if set.
        """
        self._check_fitted()
        config, tensors = self._state()
        config["metadata"] = metadata if metadata is not None else getattr(self, "metadata_", {})
        save_model_dir(path, self.kind, config, tensors)

    @classmethod
    def load(cls, path: str | os.PathLike):
        """Read a model saved by :meth:`save`; raises ModelFileError on a bad file."""
        _, config, tensors = load_model_dir(path, cls.kind)
        return _restore(cls, config, tensors, path)


class CFAE(Recommender):
    """A collaborative autoencoder: ``score(x) = decode(encode(x))``."""

    d_: int  # embedding width

    @abstractmethod
    def encode(self, user_items: UserRows) -> torch.Tensor:
        """(n_users, n_items) rows -> (n_users, d_) float32 embeddings."""

    @abstractmethod
    def decode(self, embeddings: torch.Tensor) -> torch.Tensor:
        """(n_users, d_) embeddings -> (n_users, n_items) float32 item scores."""

    def score(self, user_items: sp.csr_matrix) -> torch.Tensor:
        return self.decode(self.encode(user_items))


def load_model(path: str | os.PathLike) -> Recommender:
    """Load any steercf recommender from its directory, dispatching on the stored kind."""
    from steercf.models import MODEL_KINDS  # late import: the registry imports the models

    kind, config, tensors = load_model_dir(path, (*MODEL_KINDS, "Spliced"))
    if kind == "Spliced":
        from steercf.spliced import SplicedRecommender  # builds on the models, not vice versa

        return SplicedRecommender._from_parts(config, path)
    return _restore(MODEL_KINDS[kind], config, tensors, path)


def _restore(cls, config: dict[str, Any], tensors: dict[str, torch.Tensor], path) -> Recommender:
    try:
        model = cls._from_state(config, tensors, path)
    except (KeyError, TypeError) as err:
        raise ModelFileError(f"{path}: model config is incomplete or malformed ({err})") from err
    model.metadata_ = config.get("metadata", {})
    return model
