"""What the latent browser and the latent browser show alike: how a latent's activations
are spread, and which latents point the same way."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from steercf.errors import InputError, UnknownIdError

HISTOGRAM_BINS = 20


def unit_directions(w_dec: torch.Tensor) -> torch.Tensor:
    """(n_latents, d) decoder rows scaled to unit length, for cosine lookups."""
    with torch.no_grad():
        return torch.nn.functional.normalize(w_dec.detach().float(), dim=1)


def activation_histogram(fired: np.ndarray) -> dict:
    """``{"counts", "edges", "n_active"}`` of a latent's non-zero activations (m,):
    ``HISTOGRAM_BINS`` bins from 0 to the largest (empty bins over [0, 1] if none)."""
    if fired.size:
        counts, edges = np.histogram(fired, bins=HISTOGRAM_BINS, range=(0.0, float(fired.max())))
    else:
        counts, edges = np.zeros(HISTOGRAM_BINS, int), np.linspace(0, 1, HISTOGRAM_BINS + 1)
    return {
        "counts": counts.astype(int).tolist(),
        "edges": edges.tolist(),
        "n_active": int(fired.size),
    }


def nearest_latents(directions: torch.Tensor, latent: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``n`` latents whose unit decoder directions (n_latents, d) are closest to
    ``latent``'s, never itself: ``(order (n,), cosine (n_latents,))``, highest first."""
    cosine = (directions @ directions[latent]).numpy()
    cosine[latent] = -np.inf
    return np.argsort(-cosine, kind="stable")[:n], cosine


def latent_id(latent: Any, n_latents: int) -> int:
    """``latent`` as an int in ``[0, n_latents)``; InputError for a non-integer,
    UnknownIdError for one out of range."""
    if isinstance(latent, bool) or not isinstance(latent, (int, np.integer)):
        raise InputError(f"a latent is an integer id, got {latent!r}")
    if not 0 <= int(latent) < n_latents:
        raise UnknownIdError(
            f"unknown latent {latent}: the model has {n_latents} latents (0..{n_latents - 1})"
        )
    return int(latent)
