"""Explanations: a user's concepts and the latents behind each recommended item."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from steercf.models.spliced import SparseEncoding, SplicedRecommender
from steercf.sae.steer import Knob
from steercf.steering.core import steer_encoding
from steercf.steering.defaults import DEFAULT_RULE


def user_concepts(model, user_items, mapping, top: int = 5) -> list[tuple[str, float]]:
    """A user's top concepts: each active latent votes for its best concepts (mapping
    scores rescaled to sum 1 per latent) with its activation.

    Args:
        user_items: (1, n_items) one user's history.
        mapping: a :class:`steercf.concepts.ConceptMapping` of the model's latents.

    Returns:
        ``[(concept, weight), ...]`` strongest first; weights sum to at most 1.
    """
    code = model.sparse_code(user_items)
    votes: dict[str, float] = {}
    total = float(code.values[0].sum()) or 1.0
    for latent, activation in code.of(0):
        ranked = [(c, s) for c, s in mapping.concepts_for(latent, top=3) if s > 0]
        mass = sum(s for _, s in ranked)
        for concept, score in ranked:
            votes[concept] = votes.get(concept, 0.0) + activation / total * score / mass
    return sorted(votes.items(), key=lambda kv: -kv[1])[:top]


def _steered_user(
    model: SplicedRecommender,
    user_items: Any,
    knobs: Sequence[Knob],
    rule: str,
    encoding: SparseEncoding | None,
) -> SparseEncoding:
    """The first user's encoding (``encoding`` if given, else encoded from
    ``user_items``) with ``knobs`` applied: what an explanation reads."""
    if encoding is None:
        encoding = model.encode(user_items)
    return steer_encoding(encoding[0], knobs, rule)


def explain_items(
    model: SplicedRecommender,
    user_items: Any,
    items: Sequence[int],
    knobs: Sequence[Knob] = (),
    rule: str = DEFAULT_RULE,
    top: int = 3,
    encoding: SparseEncoding | None = None,
    shares: bool = False,
) -> list[list[tuple[int, float]]] | list[list[tuple[int, float, float]]]:
    """For each listed item, the latents that add most to its score for this user
    (after applying ``knobs``, so a steered list is explained by the steered code).

    Args:
        user_items: (1, n_items) the user's history (ignored when ``encoding`` is given).
        items: (m,) item indices to explain.
        encoding: the user's encoding from ``model.encode``, to skip encoding the history
            again (an app re-ranking on every slider move keeps it).
        shares: also give each reason's share of what all the user's latents add to the
            item's score (the sum of the positive contributions; the decoder bias and
            the user's mean are left out). In error-term mode the error term's positive
            part counts in that sum too (:func:`score_parts` gives the signed parts of
            the score itself).

    Returns:
        per item, ``[(latent, contribution), ...]`` largest first (positive ones only),
        or ``[(latent, contribution, share), ...]`` with ``shares``.
    """
    encoding = _steered_user(model, user_items, knobs, rule, encoding)
    contributions = model.latent_contributions(encoding, np.asarray(items))
    values, latents = torch.topk(contributions, min(top, contributions.shape[0]), dim=0)
    if shares:
        residual = model.residual_contributions(encoding, np.asarray(items))[0]
        totals = (contributions.clamp_min(0).sum(0) + residual.clamp_min(0)).clamp_min(1e-12)
    return [
        [
            (int(n), float(v), float(v / totals[j])) if shares else (int(n), float(v))
            for n, v in zip(latents[:, j], values[:, j], strict=True)
            if v > 0
        ]
        for j in range(contributions.shape[1])
    ]


def score_parts(
    model: SplicedRecommender,
    user_items: Any,
    items: Sequence[int],
    knobs: Sequence[Knob] = (),
    rule: str = DEFAULT_RULE,
    encoding: SparseEncoding | None = None,
) -> dict[str, np.ndarray]:
    """Each listed item's score split into what the user's latents add, what the error
    term adds (error-term mode only) and the rest (the SAE's decoder bias and the user's
    embedding mean; for a nonlinear decoder such as Mult-VAE's also the nonlinearity).
    The parts add up to the score.

    Args: as :func:`explain_items`.

    Returns:
        ``{"score", "latents", "error_term", "rest"}``, each (m,) float, signed, and
        ``"latents_added"`` / ``"latents_taken"``: the sums of the latents' positive and
        negative contributions (``latents = latents_added + latents_taken``).
    """
    encoding = _steered_user(model, user_items, knobs, rule, encoding)
    items = np.asarray(items)
    with torch.no_grad():
        score = model.decode(encoding)[0, torch.as_tensor(items, dtype=torch.long)]
    contributions = model.latent_contributions(encoding, items)  # (n_latents, m)
    added = contributions.clamp_min(0).sum(0)
    taken = contributions.clamp_max(0).sum(0)
    error_term = model.residual_contributions(encoding, items)[0]
    return {
        "score": score.numpy(),
        "latents": (added + taken).numpy(),
        "latents_added": added.numpy(),
        "latents_taken": taken.numpy(),
        "error_term": error_term.numpy(),
        "rest": (score - added - taken - error_term).numpy(),
    }


def error_term_shares(
    model: SplicedRecommender,
    user_items: Any,
    items: Sequence[int],
    knobs: Sequence[Knob] = (),
    rule: str = DEFAULT_RULE,
    encoding: SparseEncoding | None = None,
) -> np.ndarray:
    """What the error term adds to each listed item's score, as a signed share of the
    score (:func:`score_parts`; negative: it lowers the score): how much of a
    recommendation the sparse code does *not* explain. All zeros for a pure splice
    (``error_term=False``).

    Args: as :func:`explain_items`.

    Returns:
        (m,) float.
    """
    parts = score_parts(model, user_items, items, knobs, rule, encoding)
    return parts["error_term"] / np.maximum(np.abs(parts["score"]), 1e-12)
