"""Activations of an SAE and of its two controls, all ``(n_items, n_units)`` non-negative.

* ``sae``: SAE codes of each item's one-hot row (:func:`sae_item_activations`).
* ``dense``: the CFAE embedding of each one-hot item, ``d`` signed dimensions made
  non-negative by :func:`signed_split` into ``2d`` units (the positive and the negative
  half of each dimension: a direction and its opposite are different features).
* ``random_rotation``: the SAE item codes times a random orthogonal matrix, then the
  same :func:`signed_split` (``2 * n_latents`` units). It holds exactly the SAE's
  information, so whatever it loses is due to the basis, not the content.

Because all three are plain activation matrices, the mappings and the monosemanticity
report measure them with the very same code.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from steercf.concepts.arrays import ItemActs
from steercf.data.rows import one_hot_items

# the models of a full report, in report order: the SAE, then its controls
MODELS = ("sae", "dense", "random_rotation")
CONTROLS = ("dense", "random_rotation")


def sae_item_activations(model: Any) -> np.ndarray:
    """``S``: (n_items, n_latents) SAE codes of every one-hot item row of a
    :class:`~steercf.models.spliced.SplicedRecommender`."""
    return model.item_codes().numpy()


def dense_item_embeddings(model: Any) -> np.ndarray:
    """(n_items, d) signed CFAE embeddings of every one-hot item row (of a spliced
    model's base, or of a CFAE itself)."""
    return model.user_vectors(one_hot_items(model.n_items_)).numpy()


def signed_split(features: ItemActs) -> np.ndarray:
    """(n, d) signed -> (n, 2d) non-negative: ``[max(x, 0), max(-x, 0)]``.

    Unit ``j`` is the positive half of dimension ``j`` and unit ``d + j`` its negative
    half; the pair is lossless (``x = pos - neg``), unlike ``abs``, which would merge a
    direction with its opposite.
    """
    x = features.detach().cpu().numpy() if torch.is_tensor(features) else np.asarray(features)
    x = x.astype(np.float32)
    return np.concatenate([np.maximum(x, 0), np.maximum(-x, 0)], axis=1)


def random_orthogonal(n: int, seed: int = 0) -> np.ndarray:
    """(n, n) Haar-random orthogonal matrix (QR of a Gaussian, signs fixed)."""
    rng = np.random.default_rng(seed)
    q, r = np.linalg.qr(rng.standard_normal((n, n)))
    return q * np.sign(np.diag(r))[None, :]


def random_rotation(item_acts: ItemActs, seed: int = 0) -> np.ndarray:
    """The random-rotation control: ``signed_split(S Q)`` with ``Q`` random orthogonal.

    Args:
        item_acts: (n_items, n_units) SAE codes.

    Returns:
        (n_items, 2 * n_units) non-negative.
    """
    acts = item_acts.detach().cpu().numpy() if torch.is_tensor(item_acts) else item_acts
    acts = np.asarray(acts, dtype=np.float32)
    return signed_split(acts @ random_orthogonal(acts.shape[1], seed).astype(np.float32))


def model_activations(model: Any, seed: int = 0) -> dict[str, np.ndarray]:
    """``{"sae", "dense", "random_rotation"}`` -> (n_items, n_units) activations of a
    spliced model and its two controls."""
    sae = sae_item_activations(model)
    return {
        "sae": sae,
        "dense": signed_split(dense_item_embeddings(model)),
        "random_rotation": random_rotation(sae, seed),
    }
