"""Activations of an SAE and of its two controls, all ``(n_items, n_units)`` non-negative.

* ``sae``: SAE codes of each item's one-hot row (:func:`sae_item_activations`).
* ``dense``: the CFAE embedding of each one-hot item, ``d`` signed dimensions made
  non-negative by :func:`signed_split` into ``2d`` units (the positive and the negative
  half of each dimension: a direction and its opposite are different features).
* ``random_rotation``: the SAE item codes times a random orthogonal matrix, then the
  same :func:`signed_split` (``2 * n_latents`` units). It holds exactly the SAE's
  information, so whatever it loses is due to the basis, not the content.

Those are the published item activations: what a unit does for a one-item history, an
input no real user has. :func:`audience_activations` reads the units where users meet
them instead: an item's activation is the mean over its *audience* (the users who
interacted with it), shrunk toward the mean over all users. The evidence labeller reads
those (:func:`model_activations` with ``user_items``); the published mappings and the
monosemanticity report keep the one-hot codes.

Because all three are plain activation matrices, the mappings and the monosemanticity
report measure them with the very same code.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from steercf.concepts.arrays import ItemActs
from steercf.data.rows import one_hot_items
from steercf.errors import InputError

# the models of a full report, in report order: the SAE, then its controls
MODELS = ("sae", "dense", "random_rotation")
CONTROLS = ("dense", "random_rotation")
# pseudo-users at the all-user mean added to each item's audience, so that an item two
# users hold is not read as sure evidence. Chosen on validation items (SAE label
# precision@10 at 30 % coverage, seeds 0-2, scratch script of the twelfth session):
# prior 0 / 5 / 20 / 50 gave 0.529 / 0.553 / 0.574 / 0.581 on ML-100K genres and
# 0.643 / 0.646 / 0.650 / 0.651 on ml-latest-small genres (one-hot codes: 0.36 / 0.59
# on test items at 30 % coverage).
AUDIENCE_PRIOR = 50.0
AUDIENCE_BATCH = 1024  # users encoded at once


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


def audience_means(
    user_acts: Callable[[sp.csr_matrix], np.ndarray],
    user_items: sp.csr_matrix,
    prior_users: float = AUDIENCE_PRIOR,
    batch_size: int = AUDIENCE_BATCH,
) -> np.ndarray:
    """Each item's mean activation over its audience, shrunk toward the all-user mean.

    With ``X`` the 0/1 ``user_items``, ``U`` the users' activations, ``c_i`` item ``i``'s
    audience size and ``m`` the mean row of ``U``:
    ``(X.T U + a m) / (c + a)`` with ``a = prior_users`` (an item nobody holds gets ``m``).

    Args:
        user_acts: (b, n_items) CSR block of users -> (b, n_units) non-negative activations.
        user_items: (n_users, n_items) interactions (any positive entry counts once).
        prior_users: ``a``, pseudo-users at the mean (>= 0).
        batch_size: users per call of ``user_acts``.

    Returns:
        (n_items, n_units) float64.

    Raises:
        InputError: no user, or a negative or non-finite ``prior_users``.
    """
    if not np.isfinite(prior_users) or prior_users < 0:
        raise InputError(f"prior_users must be a finite number >= 0, got {prior_users}")
    held = (sp.csr_matrix(user_items) > 0).astype(np.float64).tocsr()
    if held.shape[0] == 0:
        raise InputError("audience activations need at least one user")
    totals: Any = 0.0  # (n_items, n_units) after the first block
    unit_sums: Any = 0.0  # (n_units,)
    for start in range(0, held.shape[0], batch_size):
        block = held[start : start + batch_size]
        acts = np.asarray(user_acts(block), dtype=np.float64)
        totals = totals + np.asarray(block.T @ acts)
        unit_sums = unit_sums + acts.sum(axis=0)
    audience = np.asarray(held.sum(axis=0)).ravel()
    mean = unit_sums / held.shape[0]
    out = totals + prior_users * mean[None, :]
    denominator = audience + prior_users
    held_by_none = denominator == 0  # only without a prior: such an item gets the mean
    out[~held_by_none] /= denominator[~held_by_none, None]
    out[held_by_none] = mean
    return out


def audience_activations(
    model: Any, user_items: Any, prior_users: float = AUDIENCE_PRIOR
) -> np.ndarray:
    """(n_items, n_latents) each item's mean SAE code over the users of ``user_items``
    who hold it, shrunk toward the mean code by ``prior_users`` (:func:`audience_means`).

    Args:
        model: a fitted :class:`~steercf.models.spliced.SplicedRecommender`.
        user_items: (n_users, n_items) interactions, e.g. the training users' rows.
        prior_users: pseudo-users at the mean code (>= 0; default chosen on validation
            items, :data:`AUDIENCE_PRIOR`).

    Returns:
        (n_items, n_latents) float64, non-negative; zero columns for latents no user of
        ``user_items`` activates.

    Raises:
        InputError: shape or values of ``user_items`` (as ``model.encode``).
    """
    return audience_means(lambda block: model.encode(block).codes.numpy(), user_items, prior_users)


def model_activations(
    model: Any, seed: int = 0, user_items: Any = None, prior_users: float = AUDIENCE_PRIOR
) -> dict[str, np.ndarray]:
    """``{"sae", "dense", "random_rotation"}`` -> (n_items, n_units) activations of a
    spliced model and its two controls.

    Without ``user_items``: of one-hot item rows (the published ``S``). With the
    (n_users, n_items) ``user_items``: audience activations (:func:`audience_means`) of
    the SAE codes, of the signed-split dense user embeddings and of the signed-split
    randomly rotated SAE codes, every model through the same averaging.
    """
    if user_items is not None:
        n_latents = model.n_latents
        rotation = random_orthogonal(n_latents, seed).astype(np.float32)

        def all_units(block: sp.csr_matrix) -> np.ndarray:  # each user encoded once
            codes = model.encode(block).codes.numpy()
            dense = signed_split(model.user_vectors(block))
            return np.concatenate([codes, dense, signed_split(codes @ rotation)], axis=1)

        means = audience_means(all_units, user_items, prior_users)
        # columns: n_latents SAE codes, 2d dense halves, 2 * n_latents rotated halves
        n_dense = means.shape[1] - 3 * n_latents
        return {
            "sae": means[:, :n_latents],
            "dense": means[:, n_latents : n_latents + n_dense],
            "random_rotation": means[:, n_latents + n_dense :],
        }
    sae = sae_item_activations(model)
    return {
        "sae": sae,
        "dense": signed_split(dense_item_embeddings(model)),
        "random_rotation": random_rotation(sae, seed),
    }
