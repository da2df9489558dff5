"""The one path from user rows to (optionally steered) scores and top-N lists.

:func:`score_rows` and :func:`recommend_rows` serve the models' own ``recommend``,
batch scoring, the implicit and RecBole wrappers, the explorer and the CLI; :func:`steer`
and :func:`compare` are the steering API on a spliced recommender. The user's own
history always stays masked, and steering never changes the model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from steercf.errors import InputError
from steercf.models.base import CFAE, Recommender, as_user_rows
from steercf.models.spliced import SparseEncoding, SplicedRecommender
from steercf.ranking import check_n, top_n, whole_number
from steercf.sae.steer import Knob, check_knobs, steer_codes
from steercf.steering.defaults import DEFAULT_RULE

SCORE_PRECISIONS = ("fp32", "bf16")


def require_steerable(model: Recommender, knobs: Sequence[Knob], rule: str) -> None:
    """Raise InputError unless ``model`` has latents the ``knobs`` can turn under ``rule``."""
    if not isinstance(model, SplicedRecommender):
        raise InputError(
            "steering needs a model with an SAE spliced in (SplicedRecommender), "
            f"got {type(model).__name__}"
        )
    check_knobs(knobs, model.n_latents, rule)


def steer_encoding(
    encoding: SparseEncoding, knobs: Sequence[Knob], rule: str = DEFAULT_RULE
) -> SparseEncoding:
    """The encoding with ``knobs`` applied to its codes (unchanged without knobs)."""
    if not knobs:
        return encoding
    return encoding.with_codes(steer_codes(encoding.codes, knobs, rule))


def score_rows(
    model: Recommender,
    rows: Any,
    knobs: Sequence[Knob] = (),
    rule: str = DEFAULT_RULE,
    empty_scores: torch.Tensor | None = None,
    batch_size: int = 1024,
    precision: str = "fp32",
) -> torch.Tensor:
    """Item scores of user rows, optionally steered: the one scoring path.

    Args:
        model: a fitted recommender (steering needs a :class:`SplicedRecommender`).
        rows: (n, n_items) interactions.
        knobs: steering knobs (empty: the model's plain scores).
        rule: ``"convex"`` or ``"additive"`` (:mod:`steercf.sae.steer`).
        empty_scores: (n_items,) scores for rows without any interaction (RecBole's
            padding user, implicit users whose items all went to the test side); when
            None such rows are refused with InputError.
        batch_size: rows scored at once (bounds the (batch, n_items) buffers).
        precision: ``"fp32"``, or ``"bf16"``: the decoder's (users x items) product runs
            in bfloat16 under autocast (codes and embeddings stay float32).

    Returns:
        (n, n_items) float32 CPU scores.
    """
    batch_size = whole_number(batch_size, "batch_size", minimum=1)
    model._check_fitted()
    rows = as_user_rows(rows, model.n_items_, allow_empty=empty_scores is not None)
    if knobs:
        require_steerable(model, knobs, rule)
    if precision not in SCORE_PRECISIONS:
        raise InputError(
            f"precision must be one of {', '.join(SCORE_PRECISIONS)}, got {precision!r}"
        )
    if precision == "bf16" and not isinstance(model, CFAE):
        raise InputError(f"bf16 scoring needs an autoencoder model, got a {model.kind}")
    out = torch.zeros(rows.shape[0], model.n_items_)
    if empty_scores is not None:
        out[:] = empty_scores
    filled = np.flatnonzero(np.diff(rows.indptr) > 0)
    with torch.no_grad():
        for start in range(0, len(filled), batch_size):
            index = filled[start : start + batch_size]
            batch = rows[index]
            if isinstance(model, CFAE):
                encoding = model.encode(batch)
                if knobs:
                    encoding = steer_encoding(encoding, knobs, rule)
                codes = getattr(encoding, "codes", encoding)  # a spliced model's codes
                bf16 = precision == "bf16"
                with torch.autocast(codes.device.type, dtype=torch.bfloat16, enabled=bf16):
                    scores = model.decode(encoding)
            else:
                scores = model.score(batch)
            out[torch.from_numpy(index)] = scores.float().cpu()
    return out


def recommend_rows(
    model: Recommender,
    rows: Any,
    N: int = 20,
    knobs: Sequence[Knob] = (),
    rule: str = DEFAULT_RULE,
    filter_seen: bool = True,
    filter_items: Any = None,
    items: Any = None,
    pad: bool = False,
    empty_scores: torch.Tensor | None = None,
    precision: str = "fp32",
    seen: Any = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-N of :func:`score_rows` through :func:`steercf.ranking.top_n`.

    Args:
        rows: (n, n_items) histories; with ``filter_seen`` never recommended.
        seen: (n, n_items) items to mask instead of ``rows`` (implicit's ``user_items``
            when the scored history is another one).
        filter_items, items, pad: see :func:`~steercf.ranking.top_n`.
        others: see :func:`score_rows`.

    Returns:
        ``(ids, scores)``, each (n, width), best first; ``-1`` / ``-inf`` mark empty
        slots of rows with fewer than N candidates.
    """
    N = check_n(N)  # before scoring: a bad length fails at once, not after the whole batch
    rows = as_user_rows(rows, model.n_items_, allow_empty=empty_scores is not None)
    scores = score_rows(model, rows, knobs, rule, empty_scores, precision=precision)
    mask = seen if seen is not None else (rows if filter_seen else None)
    return top_n(scores, mask, N, filter_items, items, pad)


@dataclass
class SteeredRecommendations:
    """Unsteered and steered top-N lists of a batch of users.

    Attributes:
        before_ids, before_scores: (n_users, N) the plain recommendations.
        after_ids, after_scores: (n_users, N) with the knobs applied.
        knobs: what was turned; rule: how.
    """

    before_ids: np.ndarray
    before_scores: np.ndarray
    after_ids: np.ndarray
    after_scores: np.ndarray
    knobs: tuple[Knob, ...]
    rule: str

    def entered(self, user: int) -> list[int]:
        """Items in the steered list that were not in the plain one, in steered order."""
        before = set(self.before_ids[user].tolist())
        return [int(i) for i in self.after_ids[user] if i not in before]

    def left(self, user: int) -> list[int]:
        """Items of the plain list that steering pushed out."""
        after = set(self.after_ids[user].tolist())
        return [int(i) for i in self.before_ids[user] if i not in after]


def steer(
    model: SplicedRecommender,
    user_items: Any,
    knobs: Sequence[Knob],
    rule: str = DEFAULT_RULE,
    N: int = 20,
    filter_items: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Steered top-N for a batch of users of a :class:`SplicedRecommender`.

    Args:
        model: a fitted spliced recommender (never modified).
        user_items: (n_users, n_items) histories; they stay masked.
        knobs: latents to turn (see :class:`Knob`, :func:`steer_codes`).

    Returns:
        ``(ids, scores)``, each (n_users, width) as :func:`recommend_rows`.
    """
    require_steerable(model, knobs, rule)
    return recommend_rows(model, user_items, N, knobs, rule, filter_items=filter_items)


def compare(
    model: SplicedRecommender,
    user_items: Any,
    knobs: Sequence[Knob],
    rule: str = DEFAULT_RULE,
    N: int = 20,
    filter_items: np.ndarray | None = None,
) -> SteeredRecommendations:
    """Plain and steered lists side by side (one encode, two decodes)."""
    require_steerable(model, knobs, rule)
    N = check_n(N)
    rows = as_user_rows(user_items, model.n_items_)
    encoding = model.encode(rows)
    before = top_n(model.decode(encoding), rows, N, filter_items)
    after = top_n(model.decode(steer_encoding(encoding, knobs, rule)), rows, N, filter_items)
    return SteeredRecommendations(*before, *after, tuple(knobs), rule)


def latent_contributions(
    model: SplicedRecommender, encoding: SparseEncoding, items: np.ndarray
) -> torch.Tensor:
    """(n_latents, m) what each latent adds to each listed item's score for one user:
    :meth:`SplicedRecommender.latent_contributions`."""
    return model.latent_contributions(encoding, items)
