"""Most-popular baseline: every user gets the items most often interacted with."""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from steercf.io import require_tensors
from steercf.models.base import Recommender, as_user_rows


class Popularity(Recommender):
    """Scores each item by its interaction count in the training matrix."""

    kind = "Popularity"

    def fit(
        self, user_items: sp.csr_matrix, val_user_items: sp.csr_matrix | None = None
    ) -> Popularity:
        rows = as_user_rows(user_items, user_items.shape[1], allow_empty=True)
        self.counts_ = torch.from_numpy(np.asarray((rows > 0).sum(axis=0), dtype=np.float32)[0])
        self.n_items_ = rows.shape[1]
        return self

    def score(self, user_items: sp.csr_matrix) -> torch.Tensor:
        """(n_users, n_items): the same popularity row for every user."""
        return self.counts_.expand(user_items.shape[0], -1).clone()

    def _state(self) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        return {"n_items": self.n_items_}, {"counts": self.counts_}

    @classmethod
    def _from_state(
        cls, config: dict[str, Any], tensors: dict[str, torch.Tensor], path
    ) -> Popularity:
        require_tensors(tensors, {"counts": (config["n_items"],)}, path)
        model = cls()
        model.counts_, model.n_items_ = tensors["counts"], config["n_items"]
        return model
