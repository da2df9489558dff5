"""Labels with evidence: a latent is named by a concept only when its top items show it.

A person checks a latent by reading the items that activate it most. The evidence
labeller asks of each (latent, concept) pair what that person would: of the latent's
``k`` top items, how many carry the concept (``hits``), out of how many could by chance?
With ``N`` items, ``K`` of them carrying the concept and ``n`` top items (``n <= k``):

* ``precision = hits / n`` and ``recall = hits / K``;
* ``lift = precision / (K / N)``, precision over the concept's base rate;
* ``p_value = P(X >= hits)`` for ``X ~ Hypergeometric(N, K, n)``: the chance that ``n``
  random items hold at least as many of the concept's items. It accounts for how many
  items carry the concept, so a rare tag needs its hits to count and a frequent tag
  (Drama on 40 % of films) needs far more than its base rate.

Each latent's candidate label is its concept of smallest p-value (ties: higher
precision); it is kept when ``p_value <= threshold`` and ``hits >= min_hits``.
:func:`choose_threshold` picks the threshold on held-out items: the loosest one whose
labels still reach a target precision@k on items the labeller did not see. Unlike the
TF-IDF mappings (kept for reproducing the published tables), a latent without such
evidence stays unlabelled and is shown by its top items.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.stats import hypergeom

from steercf.concepts.arrays import ItemActs, as_activations, top_items
from steercf.data import ItemTags
from steercf.errors import InputError

DEFAULT_TOP_K = 10
DEFAULT_MIN_HITS = 2
DEFAULT_TARGET_PRECISION = 0.6
THRESHOLDS = tuple(10.0**-e for e in (1, 2, 3, 4, 5, 6, 8, 10, 12, 15, 20))


@dataclass
class Evidence:
    """How well each latent's best concept holds on some items (one entry per latent).

    Attributes:
        concept: (n_latents,) column of the best concept, -1 for a latent with no top item.
        hits: (n_latents,) top items carrying it.
        n_top: (n_latents,) top items considered (<= k; fewer for sparse latents).
        n_concept: (n_latents,) items carrying the concept.
        n_items: items the evidence was computed on.
        precision, recall, lift, p_value: (n_latents,) float64, as the module says.
    """

    concept: np.ndarray
    hits: np.ndarray
    n_top: np.ndarray
    n_concept: np.ndarray
    n_items: int
    precision: np.ndarray
    recall: np.ndarray
    lift: np.ndarray
    p_value: np.ndarray

    def labelled(self, threshold: float, min_hits: int = DEFAULT_MIN_HITS) -> np.ndarray:
        """(n_latents,) bool: latents whose evidence clears ``threshold``."""
        return (self.concept >= 0) & (self.hits >= min_hits) & (self.p_value <= threshold)


def _restrict(acts: np.ndarray, items: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    if items is None:
        return acts, np.arange(acts.shape[0])
    items = np.asarray(items, dtype=np.int64)
    return acts[items], items


def concept_evidence(
    item_acts: ItemActs,
    item_tags: ItemTags | sp.spmatrix,
    items: np.ndarray | None = None,
    k: int = DEFAULT_TOP_K,
) -> Evidence:
    """Each latent's best-supported concept among ``items``.

    Args:
        item_acts: (n_items, n_latents) non-negative activations of one-hot items.
        item_tags: (n_items, n_tags) tags (counts or 0/1).
        items: (m,) item indices to use (default all): fit on training items only.
        k: top items per latent.

    Returns:
        :class:`Evidence` over the ``m`` items.

    Raises:
        InputError: shapes disagree, or ``k < 1``.
    """
    acts = as_activations(item_acts)
    tags = item_tags.matrix if isinstance(item_tags, ItemTags) else sp.csr_matrix(item_tags)
    if tags.shape[0] != acts.shape[0]:
        raise InputError(f"{tags.shape[0]} tagged items for {acts.shape[0]} activation rows")
    if k < 1:
        raise InputError(f"k must be >= 1, got {k}")
    acts, rows = _restrict(acts, items)
    has = (sp.csr_matrix(tags)[rows] > 0).astype(np.float64).tocsr()
    n_items = acts.shape[0]
    n_concept = np.asarray(has.sum(axis=0)).ravel()  # (n_tags,)
    top = top_items(acts, k)  # (n_latents, k), -1 padded
    valid = top >= 0
    n_top = valid.sum(axis=1)
    latent_of = np.repeat(np.arange(top.shape[0]), n_top)
    select = sp.csr_matrix(
        (np.ones(len(latent_of)), (latent_of, top[valid])), shape=(top.shape[0], n_items)
    )
    hits = np.asarray((select @ has).todense())  # (n_latents, n_tags)
    # P(X >= hits) for every pair; pairs without a hit have p = 1
    p = np.ones_like(hits)
    where = hits > 0
    latent_idx, tag_idx = np.nonzero(where)
    p[where] = hypergeom.sf(hits[where] - 1, n_items, n_concept[tag_idx], n_top[latent_idx])
    best = np.full(top.shape[0], -1)
    if hits.shape[1]:
        score = p - 1e-12 * hits  # the smallest p-value; equal ones: more hits first
        best = np.where(n_top > 0, np.argmin(score, axis=1), -1)
    pick = np.maximum(best, 0)
    rows_ = np.arange(top.shape[0])
    chosen_hits = np.where(best >= 0, hits[rows_, pick], 0).astype(np.int64)
    chosen_n = np.where(best >= 0, n_concept[pick], 0).astype(np.int64)
    precision = np.divide(chosen_hits, n_top, out=np.zeros(len(best)), where=n_top > 0)
    recall = np.divide(chosen_hits, chosen_n, out=np.zeros(len(best)), where=chosen_n > 0)
    base_rate = chosen_n / max(n_items, 1)
    lift = np.divide(precision, base_rate, out=np.zeros(len(best)), where=base_rate > 0)
    p_value = np.where(best >= 0, p[rows_, pick], 1.0)
    return Evidence(
        concept=best.astype(np.int64),
        hits=chosen_hits,
        n_top=n_top.astype(np.int64),
        n_concept=chosen_n,
        n_items=n_items,
        precision=precision,
        recall=recall,
        lift=lift,
        p_value=p_value,
    )


def held_out_precision(
    item_acts: ItemActs,
    item_tags: ItemTags | sp.spmatrix,
    labels: np.ndarray,
    items: np.ndarray,
    k: int = DEFAULT_TOP_K,
) -> np.ndarray:
    """(n_latents,) share of each latent's top-``k`` among ``items`` carrying its label
    ``labels[n]`` (a tag column; -1 = unlabelled gives nan, as does a latent that fires on
    none of ``items``): the judge the labeller did not see."""
    acts = as_activations(item_acts)
    tags = item_tags.matrix if isinstance(item_tags, ItemTags) else sp.csr_matrix(item_tags)
    sub, rows = _restrict(acts, items)
    has = (sp.csr_matrix(tags)[rows] > 0).tocsc()
    top = top_items(sub, k)
    out = np.full(acts.shape[1], np.nan)
    for latent in np.flatnonzero(np.asarray(labels) >= 0):
        listed = top[latent][top[latent] >= 0]
        if len(listed):
            out[latent] = has[listed, int(labels[latent])].toarray().mean()
    return out


def split_items(n_items: int, seed: int = 0, shares: Sequence[float] = (0.6, 0.2, 0.2)):
    """Seeded (fit, validation, test) item index arrays in ``shares``."""
    if len(shares) != 3 or abs(sum(shares) - 1) > 1e-9 or min(shares) <= 0:
        raise InputError(f"shares must be three positive numbers summing to 1, got {shares}")
    order = np.random.default_rng(seed).permutation(n_items)
    a = int(round(shares[0] * n_items))
    b = a + int(round(shares[1] * n_items))
    return np.sort(order[:a]), np.sort(order[a:b]), np.sort(order[b:])


@dataclass
class ThresholdChoice:
    """The chosen p-value threshold and the validation curve behind it."""

    threshold: float
    curve: list[dict[str, float]]  # per threshold: precision@k, coverage, n_labelled


def labelling_curve(
    evidence: Evidence,
    item_acts: ItemActs,
    item_tags: ItemTags | sp.spmatrix,
    items: np.ndarray,
    live: np.ndarray,
    thresholds: Sequence[float] = THRESHOLDS,
    k: int = DEFAULT_TOP_K,
    min_hits: int = DEFAULT_MIN_HITS,
) -> list[dict[str, float]]:
    """Coverage and held-out precision@k of the labels at each threshold.

    Args:
        evidence: from the fitting items.
        items: the judging items (never the fitting ones).
        live: (n_latents,) bool, the latents that count for coverage (e.g. active for
            any user).

    Returns:
        per threshold: ``threshold``, ``precision@k`` (mean over labelled live latents
        that fire on a judging item), ``coverage`` (labelled share of ``live``),
        ``n_labelled``.
    """
    live = np.asarray(live, dtype=bool)
    precision = held_out_precision(
        item_acts, item_tags, np.where(live, evidence.concept, -1), items, k
    )
    curve = []
    for threshold in thresholds:
        labelled = evidence.labelled(threshold, min_hits) & live
        judged = precision[labelled]
        judged = judged[np.isfinite(judged)]
        curve.append(
            {
                "threshold": float(threshold),
                f"precision@{k}": float(judged.mean()) if len(judged) else float("nan"),
                "coverage": float(labelled.sum() / max(live.sum(), 1)),
                "n_labelled": int(labelled.sum()),
            }
        )
    return curve


def reaching_points(
    curve: list[dict[str, float]], target_precision: float, k: int = DEFAULT_TOP_K
) -> list[dict[str, float]]:
    """The points of a :func:`labelling_curve` whose precision@k reaches the target."""
    return [
        point
        for point in curve
        if np.isfinite(point[f"precision@{k}"]) and point[f"precision@{k}"] >= target_precision
    ]


def choose_threshold(
    curve: list[dict[str, float]],
    target_precision: float = DEFAULT_TARGET_PRECISION,
    k: int = DEFAULT_TOP_K,
) -> float:
    """The loosest threshold whose validation precision@k reaches ``target_precision``
    (the strictest one if none does)."""
    reaching = reaching_points(curve, target_precision, k)
    if not reaching:
        return min(point["threshold"] for point in curve)
    return max(point["threshold"] for point in reaching)


def held_out_labelling(
    item_acts: ItemActs,
    item_tags: ItemTags | sp.spmatrix,
    live: np.ndarray,
    seed: int = 0,
    target_precision: float = DEFAULT_TARGET_PRECISION,
    k: int = DEFAULT_TOP_K,
) -> dict[str, dict[str, float]]:
    """Label precision@k and coverage on test items, for two labellers fitted on the
    same training items (a seeded 60/20/20 split of the items):

    * ``evidence``: :func:`concept_evidence`, threshold chosen on the validation items
      (:func:`choose_threshold` at ``target_precision``);
    * ``best_characterizes``: every live unit gets its top TF-IDF concept (the published
      mapping; coverage 1).

    Returns:
        ``{labeller: {"precision@k", "coverage", "threshold", "n_labelled"}}``.
    """
    acts, tags, live, (fit, val, test) = _labelling_inputs(item_acts, item_tags, live, seed)
    evidence = concept_evidence(acts, tags, fit, k)
    threshold = choose_threshold(
        labelling_curve(evidence, acts, tags, val, live, k=k), target_precision, k
    )
    out = {
        "evidence": {
            **labelling_curve(evidence, acts, tags, test, live, [threshold], k)[0],
        }
    }
    out["best_characterizes"] = _tfidf_curve(acts, tags, live, fit, test, [1.0], k)[0]
    return out


def held_out_curves(
    item_acts: ItemActs,
    item_tags: ItemTags | sp.spmatrix,
    live: np.ndarray,
    seed: int = 0,
    k: int = DEFAULT_TOP_K,
) -> dict[str, list[dict[str, float]]]:
    """Coverage-precision curves on test items of the labellers of
    :func:`held_out_labelling` (same seeded 60/20/20 item split, labels fitted on the
    training items only), to compare labellers and models at equal coverage:

    * ``evidence``: one point per p-value threshold in :data:`THRESHOLDS`;
    * ``best_characterizes``: the live units ranked by their top TF-IDF score, the top
      5 %, 10 %, ..., 100 % labelled (the published mapping has no threshold of its own).

    Returns:
        ``{labeller: [{"threshold", "precision@k", "coverage", "n_labelled"}, ...]}``;
        for ``best_characterizes`` ``threshold`` is the labelled share of live units.
    """
    acts, tags, live, (fit, _, test) = _labelling_inputs(item_acts, item_tags, live, seed)
    evidence = concept_evidence(acts, tags, fit, k)
    shares = [round(0.05 * i, 2) for i in range(1, 21)]
    return {
        "evidence": labelling_curve(evidence, acts, tags, test, live, k=k),
        "best_characterizes": _tfidf_curve(acts, tags, live, fit, test, shares, k),
    }


def _labelling_inputs(item_acts, item_tags, live, seed: int):
    acts = as_activations(item_acts)
    tags = item_tags.matrix if isinstance(item_tags, ItemTags) else sp.csr_matrix(item_tags)
    return acts, tags, np.asarray(live, dtype=bool), split_items(acts.shape[0], seed)


def _tfidf_curve(
    acts: np.ndarray,
    tags: sp.csr_matrix,
    live: np.ndarray,
    fit: np.ndarray,
    test: np.ndarray,
    shares: Sequence[float],
    k: int,
) -> list[dict[str, float]]:
    """Test-item precision@k of the published TF-IDF labels (fitted on ``fit``) when only
    the ``share`` of live units with the highest top score is labelled."""
    from steercf.concepts.mapping import best_characterizes

    mapping = best_characterizes(acts[fit], sp.csr_matrix(tags)[fit])
    labels = np.where(live, mapping.top_concepts(), -1)
    precision = held_out_precision(acts, tags, labels, test, k)
    strength = np.where(labels >= 0, mapping.scores.max(axis=0), -np.inf)
    order = np.argsort(-strength, kind="stable")[: int((labels >= 0).sum())]
    curve = []
    for share in shares:
        chosen = order[: int(round(share * len(order)))]
        judged = precision[chosen]
        judged = judged[np.isfinite(judged)]
        curve.append(
            {
                "threshold": float(share),
                f"precision@{k}": float(judged.mean()) if len(judged) else float("nan"),
                "coverage": float(len(chosen) / max(live.sum(), 1)),
                "n_labelled": len(chosen),
            }
        )
    return curve
