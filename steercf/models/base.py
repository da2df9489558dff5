"""The interface every steercf recommender shares.

A recommender is fitted on a (users x items) CSR matrix and scores batches of user rows.
Collaborative autoencoders (:class:`CFAE`) additionally expose ``encode`` (rows ->
embeddings) and ``decode`` (embeddings -> item scores): the seam where a sparse
autoencoder is spliced in.
"""

from __future__ import annotations

import inspect
import os
import warnings
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp
import torch

from steercf.data.rows import canonical_rows, one_hot_items
from steercf.errors import InputError
from steercf.io import read_model, save_model_dir, tensor_fingerprint
from steercf.ranking import check_n, top_n, whole_number

# torch warns on every CSR tensor that the layout is "beta"; we rely only on sparse.mm.
warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")

UserRows = sp.spmatrix | np.ndarray | torch.Tensor


def as_user_rows(
    user_items: UserRows, n_items: int, allow_empty: bool = False, name: str = "user_items"
) -> sp.csr_matrix:
    """Validate user rows and return them in canonical form (:func:`canonical_rows`:
    repeated entries summed, stored zeros dropped, every interaction 1.0).

    Args:
        user_items: (n_users, n_items) interactions; a 1-D array is one user.
        n_items: the item count the model was fitted on.
        allow_empty: accept users with no interaction (else raise).

    Returns:
        (n_users, n_items) float32 CSR.

    Raises:
        InputError: wrong shape, NaN or infinite values, negative values, empty rows.
    """
    if isinstance(user_items, torch.Tensor):
        user_items = user_items.detach().cpu().numpy()
    if not sp.issparse(user_items):
        try:
            user_items = np.asarray(user_items, dtype=np.float32)
        except (TypeError, ValueError) as err:
            raise InputError(f"{name} must hold numbers: {err}") from err
        if user_items.ndim == 1:
            user_items = user_items[None, :]
    rows = canonical_rows(user_items, name)
    if rows.shape[1] != n_items:
        raise InputError(
            f"{name} has {rows.shape[1]} item columns but the model was fitted on {n_items} items"
        )
    if rows.shape[0] == 0:
        raise InputError(f"{name} has no rows")
    if not allow_empty:
        # after canonicalisation: a row holding only stored zeros is empty here too
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


class Recommender(ABC):
    """Base recommender: fit on a CSR matrix, score and recommend for batches of rows.

    Subclasses set ``n_items_`` in ``fit`` and implement :meth:`score`,
    :meth:`_state` and :meth:`_from_state`.
    """

    kind: ClassVar[str]
    n_items_: int
    # settings that say where and how verbosely to run, not what the model is: never
    # written to a model file
    RUNTIME_PARAMS: ClassVar[tuple[str, ...]] = ("device", "progress")

    @classmethod
    def param_names(cls) -> list[str]:
        """The ``__init__`` parameters, in order (scikit-learn's ``get_params`` idea:
        one list of a model's settings, read off its signature)."""
        signature = inspect.signature(cls.__init__)
        return [
            name
            for name, p in signature.parameters.items()
            if name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        ]

    @classmethod
    def param_defaults(cls) -> dict[str, Any]:
        """``{parameter: default}`` of ``__init__`` (parameters without a default left out)."""
        signature = inspect.signature(cls.__init__)
        return {
            name: signature.parameters[name].default
            for name in cls.param_names()
            if signature.parameters[name].default is not inspect.Parameter.empty
        }

    def get_params(self) -> dict[str, Any]:
        """``{parameter: value}`` of every ``__init__`` parameter."""
        return {name: getattr(self, name) for name in self.param_names()}

    def saved_params(self) -> dict[str, Any]:
        """:meth:`get_params` without the runtime settings, JSON-ready (tuples as lists)."""
        return {
            name: list(value) if isinstance(value, tuple) else value
            for name, value in self.get_params().items()
            if name not in self.RUNTIME_PARAMS
        }

    @classmethod
    def from_saved_params(cls, config: dict[str, Any]) -> Recommender:
        """An unfitted model from a saved config: known parameters taken, the rest (and
        parameters that an older file lacks) left at their defaults."""
        return cls(**{name: config[name] for name in cls.param_names() if name in config})

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
            ``(ids, scores)``, each (n_users, width), best first: ``width`` is N, or fewer
            when no user has N unseen candidates; a row with fewer candidates than the
            others ends in id -1 / score -inf (:func:`steercf.ranking.top_n`).
        """
        self._check_fitted()
        N = check_n(N)  # before scoring: a bad length fails at once
        rows = as_user_rows(user_items, self.n_items_)
        with torch.no_grad():
            scores = self.score(rows)
        return top_n(scores, rows if filter_seen else None, N, filter_items)

    def describe(self) -> str:
        """What the model is, for people: its kind (a wrapper says what it wraps)."""
        return self.kind

    def fingerprint(self) -> str:
        """``kind:hash`` of the fitted tensors: two models with equal fingerprints score
        alike (a scoring run checks it before resuming)."""
        self._check_fitted()
        return f"{self.kind}:{tensor_fingerprint(self._tensors())}"

    def _tensors(self) -> dict[str, torch.Tensor]:
        """Every fitted tensor by name (what :meth:`fingerprint` hashes)."""
        return self._state()[1]

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

    def save(
        self,
        path: str | os.PathLike,
        metadata: dict[str, Any] | None = None,
        *,
        extra_json: dict[str, Any] | None = None,
        force: bool = False,
    ) -> None:
        """Write the fitted model as a directory of safetensors + JSON (atomically: a
        reader sees the previous model or this one, never a mix; :mod:`steercf.io`).

        Args:
            metadata: JSON-serialisable facts stored alongside (the CLI records the data
                set and split seed here); defaults to ``self.metadata_`` if set.
            extra_json: more JSON files saved in the same step, ``name -> value``.
            force: write into a non-empty directory that is not a steercf model.
        """
        self._check_fitted()
        config, tensors = self._state()
        config["metadata"] = metadata if metadata is not None else getattr(self, "metadata_", {})
        save_model_dir(path, self.kind, config, tensors, extra_json=extra_json, force=force)

    @classmethod
    def load(cls, path: str | os.PathLike):
        """Read a model saved by :meth:`save`; raises ModelFileError on a bad file."""
        return read_model(
            path,
            cls.kind,
            lambda root, _kind, config, tensors: _restore(cls, config, tensors, root),
        )


class CFAE(Recommender):
    """A collaborative autoencoder: ``score(x) = decode(encode(x))``.

    ``encode`` returns one object per batch and ``decode`` takes exactly that object: a
    (n_users, d_) tensor for the dense models, a
    :class:`~steercf.models.spliced.SparseEncoding` for a spliced one.
    """

    d_: int  # embedding width (for a spliced model: its number of latents)

    @abstractmethod
    def encode(self, user_items: UserRows) -> Any:
        """(n_users, n_items) rows -> the users' encoding ((n_users, d_) embeddings)."""

    @abstractmethod
    def decode(self, encoding: Any) -> torch.Tensor:
        """What :meth:`encode` returned -> (n_users, n_items) float32 item scores."""

    def score(self, user_items: sp.csr_matrix) -> torch.Tensor:
        return self.decode(self.encode(user_items))

    def _check_embeddings(self, embeddings: torch.Tensor) -> None:
        """What a dense ``decode`` checks first: the model is fitted and ``embeddings``
        is (n, d_) (InputError otherwise)."""
        self._check_fitted()
        if embeddings.ndim != 2 or embeddings.shape[1] != self.d_:
            raise InputError(f"embeddings must be (n, {self.d_}), got {tuple(embeddings.shape)}")

    def user_vectors(self, user_items: UserRows, batch_size: int = 4096) -> torch.Tensor:
        """(n, d) dense float32 embeddings of user rows, empty rows included (zeros);
        what user-user similarity compares."""
        batch_size = whole_number(batch_size, "batch_size", minimum=1)
        self._check_fitted()
        rows = as_user_rows(user_items, self.n_items_, allow_empty=True)
        with torch.no_grad():
            parts = [
                self.encode(rows[s : s + batch_size]) for s in range(0, rows.shape[0], batch_size)
            ]
        return torch.cat(parts).float()

    def item_vectors(self) -> torch.Tensor:
        """(n_items, d) float32 item vectors (the embedding of each item's one-hot row);
        what item-item similarity compares."""
        return self.user_vectors(one_hot_items(self.n_items_))


def load_model(path: str | os.PathLike) -> Recommender:
    """Load any steercf recommender from its directory, dispatching on the stored kind."""
    from steercf.models import MODEL_KINDS  # late import: the registry imports the models

    return read_model(
        path,
        tuple(MODEL_KINDS),
        lambda root, kind, config, tensors: _restore(MODEL_KINDS[kind], config, tensors, root),
    )


def _restore(cls, config: dict[str, Any], tensors: dict[str, torch.Tensor], path) -> Recommender:
    # a malformed config (missing key, wrong type) becomes a ModelFileError in read_model
    model = cls._from_state(config, tensors, path)
    model.metadata_ = config.get("metadata", {})
    return model
