"""What a spliced model's ``encode`` gives: the users' sparse codes."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from steercf.errors import InputError


@dataclass
class SparseCode:
    """The active latents of a batch of users, strongest first.

    Attributes:
        values: (n_users, m) activations, descending per row (0 pads rows with fewer).
        indices: (n_users, m) latent ids.
    """

    values: np.ndarray
    indices: np.ndarray

    def of(self, user: int) -> list[tuple[int, float]]:
        """``[(latent, activation), ...]`` of one row, active latents only."""
        return [
            (int(i), float(v))
            for i, v in zip(self.indices[user], self.values[user], strict=True)
            if v > 0
        ]


@dataclass(frozen=True)
class SparseEncoding:
    """What :meth:`SplicedRecommender.encode` gives and :meth:`SplicedRecommender.decode`
    takes: the users' SAE codes and the per-user standardisation the SAE undoes.

    Attributes:
        codes: (n_users, n_latents) non-negative activations (zero where inactive).
        mean: (n_users, 1) per-user embedding mean removed before encoding.
        std: (n_users, 1) per-user embedding scale divided out before encoding.
        residual: (n_users, d) the SAE's error term ``z - SAE(z)`` in the base's
            embedding space, kept through steering and added back by ``decode``; only
            in error-term mode (``SplicedRecommender(error_term=True)``), else None.
    """

    codes: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor
    residual: torch.Tensor | None = None

    def with_codes(self, codes: torch.Tensor) -> SparseEncoding:
        """The same users with edited (n_users, n_latents) codes (e.g. steered)."""
        if codes.shape != self.codes.shape:
            raise InputError(f"codes must be {tuple(self.codes.shape)}, got {tuple(codes.shape)}")
        return replace(self, codes=codes)

    def __getitem__(self, rows: int | slice) -> SparseEncoding:
        """The encoding of a subset of users (an int keeps the row dimension)."""
        index = slice(rows, rows + 1) if isinstance(rows, int) else rows
        residual = None if self.residual is None else self.residual[index]
        return SparseEncoding(self.codes[index], self.mean[index], self.std[index], residual)

    def __len__(self) -> int:
        return self.codes.shape[0]
