"""A global picture of steering: users before and after, with a concept's anchor items,
on one 2-D map.

Users and items are placed in the base CFAE's embedding space, where a user's scores
are a product with the item vectors: the (reconstructed) user embedding before
steering, the embedding its steered code decodes to, and the anchor items' vectors,
each L2-normalised so that position reads as direction (what ranking depends on).
The projection is fitted on the unsteered users and the anchors only, so the steered
users are placed on the same axes: UMAP (McInnes et al. 2018) when ``umap-learn`` is
installed, otherwise PCA.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from steercf.errors import InputError
from steercf.models.base import as_user_rows
from steercf.models.spliced import SplicedRecommender
from steercf.sae.steer import Knob
from steercf.steering.core import require_steerable, steer_encoding
from steercf.steering.defaults import DEFAULT_RULE

PROJECTIONS = ("auto", "pca", "umap")


@dataclass
class SteeringMap:
    """2-D positions of users before / after steering and of anchor items.

    Attributes:
        before: (n_users, 2) unsteered users.
        after: (n_users, 2) the same users steered.
        anchors: (m, 2) anchor items.
        anchor_items: (m,) their item indices.
        projection: ``"pca"`` or ``"umap"``.
        toward_anchors: (n_users,) what steering added to the anchors' mean score
            over the mean item's (the user's move in the embedding space, not the map,
            times the anchors' mean vector minus the mean item vector): > 0 means
            steering moved the user toward the concept.
    """

    before: np.ndarray
    after: np.ndarray
    anchors: np.ndarray
    anchor_items: np.ndarray
    projection: str
    toward_anchors: np.ndarray

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready lists (rounded to 4 decimals)."""
        return {
            "projection": self.projection,
            "before": np.round(self.before, 4).tolist(),
            "after": np.round(self.after, 4).tolist(),
            "anchors": np.round(self.anchors, 4).tolist(),
            "anchor_items": self.anchor_items.tolist(),
            "toward_anchors": np.round(self.toward_anchors, 4).tolist(),
        }


def concept_anchor_items(
    item_tags: sp.spmatrix, concept: int, popularity: np.ndarray, n: int = 20
) -> np.ndarray:
    """The ``n`` most popular items carrying ``concept`` (a column of the (n_items, n_tags)
    ``item_tags``); ``popularity`` (n_items,) e.g. training interaction counts."""
    carriers = sp.csc_matrix(item_tags)[:, concept].nonzero()[0]
    if len(carriers) == 0:
        raise InputError(f"concept {concept} is carried by no item")
    order = np.argsort(-np.asarray(popularity)[carriers], kind="stable")
    return carriers[order[:n]]


def _unit(x: torch.Tensor) -> np.ndarray:
    x = x.double()
    return (x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)).numpy()


def _fit_projection(fit_rows: np.ndarray, projection: str, seed: int):
    """``(name, transform)``: a 2-D projection fitted on ``fit_rows`` (n, d)."""
    if projection in ("auto", "umap"):
        try:
            import umap  # type: ignore[import-not-found]
        except ImportError:
            if projection == "umap":
                raise InputError(
                    "projection='umap' needs umap-learn (pip install umap-learn)"
                ) from None
        else:
            reducer = umap.UMAP(n_components=2, random_state=seed).fit(fit_rows)
            return "umap", reducer.transform
    mean = fit_rows.mean(0)
    _, _, vh = np.linalg.svd(fit_rows - mean, full_matrices=False)
    axes = vh[:2].T
    # a sign convention, so the same data always gives the same picture
    axes *= np.where(axes[np.abs(axes).argmax(0), [0, 1]] < 0, -1.0, 1.0)
    return "pca", lambda rows: (rows - mean) @ axes


def steering_map(
    model: SplicedRecommender,
    user_items: Any,
    knobs: Sequence[Knob],
    anchor_items: np.ndarray,
    rule: str = DEFAULT_RULE,
    projection: str = "auto",
    seed: int = 0,
) -> SteeringMap:
    """Users before and after steering by ``knobs``, and ``anchor_items``, on one map.

    Args:
        model: a fitted spliced recommender.
        user_items: (n_users, n_items) histories (n_users >= 2).
        knobs: the steering, applied to every user.
        anchor_items: (m,) item indices shown with the users (e.g.
            :func:`concept_anchor_items`).
        rule: the steering rule.
        projection: ``"auto"`` (UMAP if installed, else PCA), ``"pca"`` or ``"umap"``.
        seed: seeds UMAP.

    Returns:
        :class:`SteeringMap`.

    Raises:
        InputError: not steerable, fewer than 2 users, bad anchors or projection.
    """
    require_steerable(model, knobs, rule)
    if projection not in PROJECTIONS:
        raise InputError(f"projection must be one of {PROJECTIONS}, got {projection!r}")
    rows = as_user_rows(user_items, model.n_items_)
    if rows.shape[0] < 2:
        raise InputError("a map needs at least 2 users")
    anchors = np.asarray(anchor_items, dtype=np.int64).ravel()
    if len(anchors) == 0 or anchors.min() < 0 or anchors.max() >= model.n_items_:
        raise InputError(f"anchor_items must be item indices in [0, {model.n_items_})")
    with torch.no_grad():
        encoding = model.encode(rows)
        steered = steer_encoding(encoding, knobs, rule)
        sae = model.sae_
        raw_before = sae.decode(encoding.codes, encoding.mean, encoding.std)
        raw_after = sae.decode(steered.codes, steered.mean, steered.std)
        item_vectors = model.base.item_vectors()
    before, after, all_items = _unit(raw_before), _unit(raw_after), _unit(item_vectors)
    items = all_items[anchors]
    name, transform = _fit_projection(np.vstack([before, items]), projection, seed)
    # what the move adds to the anchors' scores over the average item's
    vectors = item_vectors.double().numpy()
    direction = vectors[anchors].mean(0) - vectors.mean(0)
    moved = (raw_after - raw_before).double().numpy()
    return SteeringMap(
        before=np.asarray(transform(before)),
        after=np.asarray(transform(after)),
        anchors=np.asarray(transform(items)),
        anchor_items=anchors,
        projection=name,
        toward_anchors=moved @ direction,
    )


def plot_steering_map(
    atlas: SteeringMap, path: str | Path, title: str = "", anchor_names: Sequence[str] = ()
) -> None:
    """Save the map as a PNG: grey users before, arrows to the steered users (blue),
    anchor items as red stars (labelled with the first ``anchor_names``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 6))
    ax.scatter(*atlas.before.T, s=8, c="0.6", label="users before")
    ax.scatter(*atlas.after.T, s=8, c="tab:blue", label="users after")
    for start, end in zip(atlas.before, atlas.after, strict=True):
        ax.annotate(
            "", end, start, arrowprops={"arrowstyle": "-", "color": "tab:blue", "alpha": 0.15}
        )
    ax.scatter(*atlas.anchors.T, s=60, marker="*", c="tab:red", label="anchor items")
    for point, name in zip(atlas.anchors, anchor_names[:8], strict=False):
        ax.annotate(name[:28], point, fontsize=6, color="tab:red")
    moved = float(np.mean(atlas.toward_anchors > 0))
    ax.set(
        title=title or "steering map",
        xlabel=f"{atlas.projection.upper()} 1 ({moved:.0%} of users moved toward the anchors)",
        ylabel=f"{atlas.projection.upper()} 2",
    )
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
