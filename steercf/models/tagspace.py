"""A tag-space autoencoder: a recommender whose bottleneck dimensions are the item tags.

TEASER-style (the steering baseline of "From Knots to Knobs"; REFERENCE.md section 5):
an item x tag encoder ``E`` is learned, the decoder is fixed to the item x tag matrix
``T``. A user's profile ``p = x E`` has one value per tag, so steering toward a tag
means raising that one entry; scores are ``p T^T``. Training removes each seen item's
own contribution (``x * diag(E T^T)``), so an item cannot recommend itself through the
tags it carries, and penalises the off-diagonal mass of ``E T^T`` and the size of ``E``.

Beyond the published model, a learned item bias ``b`` is added to the scores: without
it every item with the same tag set scores the same (a genre bottleneck cannot rank
within a genre), which would make the baseline a straw man.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from tqdm.auto import tqdm

from steercf.errors import InputError
from steercf.io import require_tensors
from steercf.models.base import CFAE, UserRows, as_user_rows, csr_to_torch


class TagSpaceAutoencoder(CFAE):
    """Linear autoencoder through tag space.

    ``encode(x) = x E`` (n, n_tags), ``decode(p) = p T^T + b`` (n, n_items), with ``T``
    the binarised (n_items, n_tags) tags given to :meth:`fit` and ``b`` an item bias.

    Loss (full batch, Adam): ``mean((x - (x E T^T + b - x * diag(E T^T)))^2)`` + ``offdiag *
    ||E T^T - diag||_F^2 / n_items^2`` + ``l2 * mean(E^2)``.

    Args:
        l2: weight of the mean squared encoder entry.
        offdiag: weight of the squared off-diagonal Frobenius norm of ``E T^T``.
        lr: Adam step size.
        epochs: full-batch steps.
        seed: seeds the encoder's initialisation.
        progress: show a tqdm bar.
    """

    kind = "TagSpace"

    def __init__(
        self,
        l2: float = 1e-3,
        offdiag: float = 1.0,
        lr: float = 1e-2,
        epochs: int = 100,
        seed: int = 0,
        progress: bool = False,
        device: str = "cpu",
    ) -> None:
        self.l2 = l2
        self.offdiag = offdiag
        self.lr = lr
        self.epochs = epochs
        self.seed = seed
        self.progress = progress
        self.device = device

    def fit(
        self,
        user_items: sp.csr_matrix,
        val_user_items: sp.csr_matrix | None = None,
        item_tags: sp.spmatrix | np.ndarray | None = None,
    ) -> TagSpaceAutoencoder:
        """Learn ``E`` from (n_users, n_items) interactions and (n_items, n_tags) tags.

        ``val_user_items`` is unused (fixed schedule), accepted for a uniform interface.

        Raises:
            InputError: no tags, tags of the wrong number of items, or an empty tag set.
        """
        rows = as_user_rows(user_items, user_items.shape[1], allow_empty=True)
        n_items = rows.shape[1]
        if item_tags is None:
            raise InputError("TagSpaceAutoencoder.fit needs item_tags (n_items, n_tags)")
        tags = sp.csr_matrix(item_tags)
        if tags.shape[0] != n_items:
            raise InputError(f"item_tags has {tags.shape[0]} rows, interactions {n_items} items")
        if tags.shape[1] == 0 or tags.nnz == 0:
            raise InputError("item_tags holds no tag")
        if self.epochs < 1 or self.lr <= 0 or self.l2 < 0 or self.offdiag < 0:
            raise InputError("epochs >= 1, lr > 0, l2 >= 0 and offdiag >= 0 are required")
        t = torch.from_numpy((tags > 0).toarray().astype(np.float32)).to(self.device)
        x = csr_to_torch(rows, self.device).to_dense()
        generator = torch.Generator().manual_seed(self.seed)
        encoder = torch.nn.Parameter(
            (0.01 * torch.randn(t.shape, generator=generator)).to(self.device)
        )
        bias = torch.nn.Parameter(torch.zeros(n_items, device=self.device))
        optimizer = torch.optim.Adam([encoder, bias], lr=self.lr)
        gram_t = t.T @ t  # (n_tags, n_tags)
        for _ in tqdm(range(self.epochs), desc="TagSpace", disable=not self.progress):
            own = (encoder * t).sum(1)  # (n_items,) diag(E T^T)
            scores = (x @ encoder) @ t.T + bias - x * own
            frobenius = ((encoder.T @ encoder) * gram_t).sum()  # ||E T^T||_F^2
            loss = (
                (scores - x).square().mean()
                + self.offdiag * (frobenius - own.square().sum()) / n_items**2
                + self.l2 * encoder.square().mean()
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        self.encoder_ = encoder.detach()
        self.bias_ = bias.detach()
        self.tags_ = t
        self.n_items_ = n_items
        self.d_ = t.shape[1]
        return self

    def encode(self, user_items: UserRows) -> torch.Tensor:
        """(n, n_items) rows -> (n, n_tags) tag profiles."""
        self._check_fitted()
        rows = as_user_rows(user_items, self.n_items_, allow_empty=True)
        return torch.sparse.mm(csr_to_torch(rows, self.device), self.encoder_)

    def decode(self, profiles: torch.Tensor) -> torch.Tensor:
        """(n, n_tags) profiles -> (n, n_items) scores."""
        self._check_fitted()
        if profiles.ndim != 2 or profiles.shape[1] != self.d_:
            raise InputError(f"profiles must be (n, {self.d_}), got {tuple(profiles.shape)}")
        return profiles @ self.tags_.T + self.bias_

    def _state(self) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        config = {**self.saved_params(), "n_items": self.n_items_, "n_tags": self.d_}
        return config, {"encoder": self.encoder_, "tags": self.tags_, "bias": self.bias_}

    @classmethod
    def _from_state(
        cls, config: dict[str, Any], tensors: dict[str, torch.Tensor], path
    ) -> TagSpaceAutoencoder:
        model = cls.from_saved_params(config)
        shape = (config["n_items"], config["n_tags"])
        require_tensors(
            tensors, {"encoder": shape, "tags": shape, "bias": (config["n_items"],)}, path
        )
        model.encoder_, model.tags_ = tensors["encoder"].float(), tensors["tags"].float()
        model.bias_ = tensors["bias"].float()
        model.n_items_, model.d_ = shape
        return model
