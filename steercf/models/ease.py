"""EASE (Steck 2019): a closed-form item-item linear autoencoder, with a low-rank form.

``B = I - P diag(1/diag(P))`` with ``P = (X^T X + l2 I)^-1`` and a zero diagonal;
scores are ``x B``. EASE has no bottleneck, so for splicing a sparse autoencoder in, a
rank-r factorisation ``B ~ E D^T`` (from the SVD of B) gives an encoder ``x E`` and a
decoder ``z D^T``.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from steercf.errors import InputError
from steercf.io import require_tensors
from steercf.models.base import CFAE, UserRows, as_user_rows, csr_to_torch

# The dense solve holds the Gram matrix, its inverse and B at once: about this many bytes
# per item pair.
_BYTES_PER_ITEM_PAIR = 8 + 8 + 4


def available_memory_bytes() -> int:
    """Memory the OS reports as available (falls back to total physical memory)."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


class EASE(CFAE):
    """Embarrassingly shallow autoencoder.

    Args:
        l2: ridge penalty lambda added to the Gram matrix diagonal.
        rank: if set, keep a rank-``rank`` factorisation of B as encoder/decoder
            (``d_ = rank``); otherwise the "embedding" is the input row itself
            (``d_ = n_items``) and ``decode`` multiplies by B.
        max_memory_bytes: refuse (with a clear error) a solve needing more than this;
            defaults to 80 % of the memory available at fit time.
        seed: seeds the randomised SVD used for large item counts.
    """

    kind = "EASE"

    def __init__(
        self,
        l2: float = 500.0,
        rank: int | None = None,
        max_memory_bytes: int | None = None,
        seed: int = 0,
        device: str = "cpu",
    ) -> None:
        self.l2 = l2
        self.rank = rank
        self.max_memory_bytes = max_memory_bytes
        self.seed = seed
        self.device = device

    def fit(self, user_items: sp.csr_matrix, val_user_items: sp.csr_matrix | None = None) -> EASE:
        """Solve for B from (n_users, n_items) interactions. ``val_user_items`` is unused
        (closed form) and accepted for a uniform interface."""
        rows = as_user_rows(user_items, user_items.shape[1], allow_empty=True)
        n_items = rows.shape[1]
        if self.l2 <= 0:
            raise InputError(f"l2 must be > 0, got {self.l2}")
        if self.rank is not None and not 1 <= self.rank <= n_items:
            raise InputError(f"rank must be in [1, {n_items}], got {self.rank}")
        needed = _BYTES_PER_ITEM_PAIR * n_items**2
        budget = self.max_memory_bytes or int(0.8 * available_memory_bytes())
        if needed > budget:
            raise InputError(
                f"EASE needs a dense {n_items:,} x {n_items:,} solve (~{needed / 2**30:.1f} GiB) "
                f"but only {budget / 2**30:.1f} GiB may be used; drop rare items "
                f"(min item interactions) or use ELSA, which never forms an item x item matrix"
            )
        gram = torch.from_numpy((rows.T @ rows).toarray().astype(np.float64)).to(self.device)
        gram.diagonal().add_(self.l2)
        # The Gram matrix plus a ridge is symmetric positive definite: Cholesky is the
        # cheapest stable inverse.
        precision = torch.cholesky_inverse(torch.linalg.cholesky(gram))
        del gram
        weights = precision / (-precision.diagonal())
        weights.diagonal().zero_()
        self.weights_ = weights.float()
        self.n_items_ = n_items
        self.d_ = n_items
        if self.rank is not None:
            self._factorise()
        return self

    def _factorise(self) -> None:
        rank = self.rank
        assert rank is not None
        if self.n_items_ <= 4000:
            u, s, vh = torch.linalg.svd(self.weights_.double(), full_matrices=False)
            u, s, v = u[:, :rank], s[:rank], vh[:rank].T
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.seed)
                u, s, v = torch.svd_lowrank(self.weights_, q=min(rank + 20, self.n_items_), niter=6)
            u, s, v = u[:, :rank], s[:rank], v[:, :rank]
        root = s.sqrt()
        self.encoder_ = (u * root).float()  # (n_items, rank)
        self.decoder_ = (v * root).float()  # (n_items, rank)
        self.d_ = rank
        del self.weights_  # the factors replace B

    def encode(self, user_items: UserRows) -> torch.Tensor:
        self._check_fitted()
        rows = as_user_rows(user_items, self.n_items_, allow_empty=True)
        x = csr_to_torch(rows, self.device)
        if self.rank is None:
            return x.to_dense()
        return torch.sparse.mm(x, self.encoder_)

    def decode(self, embeddings: torch.Tensor) -> torch.Tensor:
        self._check_embeddings(embeddings)
        if self.rank is None:
            return embeddings @ self.weights_
        return embeddings @ self.decoder_.T

    def item_vectors(self) -> torch.Tensor:
        """(n_items, d) item vectors: the low-rank encoder's rows, or for full rank each
        item's row of B (its one-hot embedding would be the identity)."""
        self._check_fitted()
        return (self.weights_ if self.rank is None else self.encoder_).float()

    def _state(self) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        config = {**self.saved_params(), "n_items": self.n_items_}
        if self.rank is None:
            return config, {"weights": self.weights_}
        return config, {"encoder": self.encoder_, "decoder": self.decoder_}

    @classmethod
    def _from_state(cls, config: dict[str, Any], tensors: dict[str, torch.Tensor], path) -> EASE:
        model = cls.from_saved_params(config)
        n, rank = config["n_items"], config["rank"]
        if rank is None:
            require_tensors(tensors, {"weights": (n, n)}, path)
            model.weights_ = tensors["weights"].float()
            model.d_ = n
        else:
            require_tensors(tensors, {"encoder": (n, rank), "decoder": (n, rank)}, path)
            model.encoder_, model.decoder_ = tensors["encoder"].float(), tensors["decoder"].float()
            model.d_ = rank
        model.n_items_ = n
        return model
