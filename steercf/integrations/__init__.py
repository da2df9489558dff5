"""Integrations with other recommender libraries.

* :mod:`steercf.integrations.recbole`: steercf models as RecBole 1.2.1 general
  recommenders and a runner that needs neither ``recbole.quick_start`` nor ray.
* :mod:`steercf.integrations.implicit`: an ``implicit.recommender_base.RecommenderBase``
  wrapper (``fit`` / ``recommend`` / ``similar_items`` / ``similar_users`` / save /
  load) that ``implicit.evaluation.ranking_metrics_at_k`` evaluates unchanged.

Importing this package imports neither RecBole nor implicit; only the submodules do. The
helpers below are shared by both integrations.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import scipy.sparse as sp
import torch

from steercf.errors import InputError
from steercf.models.base import Recommender, as_user_rows
from steercf.spliced import SplicedRecommender
from steercf.steering import Knob, check_knobs, steer_codes

__all__ = ["build_knobs", "is_steerable", "score_rows"]


def is_steerable(model: Recommender) -> bool:
    """True for models with sparse codes to steer (a :class:`SplicedRecommender`)."""
    return isinstance(model, SplicedRecommender)


def build_knobs(
    steer_latents: Mapping[int, float] | None = None,
    knobs: Sequence[Knob] | None = None,
) -> list[Knob]:
    """One knob per ``{latent: strength}`` entry, followed by the given knobs."""
    out = [Knob.of(int(n), float(s)) for n, s in (steer_latents or {}).items()]
    return out + list(knobs or [])


def score_rows(
    model: Recommender,
    rows: sp.csr_matrix,
    knobs: Sequence[Knob] = (),
    rule: str = "convex",
    empty_scores: torch.Tensor | None = None,
    batch_size: int = 1024,
) -> torch.Tensor:
    """Item scores of a fitted steercf model for user rows, optionally steered.

    Other libraries hand over users without any interaction (RecBole padding user 0,
    implicit's ``train_test_split`` users whose every item went to the test side); the
    steercf models refuse empty rows, so those rows get ``empty_scores`` instead.

    Args:
        model: a fitted steercf recommender.
        rows: (n, n_items) CSR interactions (validated by the model).
        knobs: steering knobs; need a spliced model (empty = plain scores).
        rule: steering rule (``"convex"`` or ``"additive"``).
        empty_scores: (n_items,) scores for empty rows; zeros when None.
        batch_size: rows scored at once (bounds the (batch, n_items) buffers).

    Returns:
        (n, n_items) float32 CPU scores.
    """
    rows = sp.csr_matrix(rows, dtype=np.float32)
    n_items = model.n_items_
    if rows.shape[1] != n_items:
        raise InputError(
            f"user_items has {rows.shape[1]} item columns but the model was fitted on {n_items}"
        )
    if knobs:
        if not is_steerable(model):
            raise InputError(
                f"steering needs a model with an SAE spliced in (SplicedRecommender), "
                f"got {type(model).__name__}"
            )
        check_knobs(knobs, model.n_latents, rule)
    out = torch.zeros(rows.shape[0], n_items)
    if empty_scores is not None:
        out[:] = empty_scores
    filled = np.flatnonzero(np.diff(rows.indptr) > 0)
    with torch.no_grad():
        for start in range(0, len(filled), batch_size):
            index = filled[start : start + batch_size]
            batch = rows[index]
            if knobs:
                codes, mean, std = model.encode(batch)
                scores = model.decode(steer_codes(codes, knobs, rule), mean, std)
            else:
                scores = model.score(as_user_rows(batch, n_items))
            out[torch.from_numpy(index)] = scores.float().cpu()
    return out
