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

Each latent's candidate label is the concept a reader is most likely to find on its top
items: the highest *expected precision* ``(hits + a K / N) / (n + a)``, the precision
shrunk toward the concept's base rate by ``a`` pseudo-items (a Beta prior's posterior
mean), among the pairs above chance (``p_value <= 0.05`` and ``hits >= min_hits``). A
p-value ranks how *surprising* a pair is and favours rare concepts with a few hits
(Film-Noir on 3 of 10 films); expected precision ranks how many of the items a person
reads carry the label. The label is kept when its expected precision reaches a
threshold that :func:`choose_threshold` picks on held-out items: the loosest whose
labels reach a target precision@k on items the labeller did not see, read at the same
depth (:func:`judging_depth`). No concept takes more than 10 % of the labels unless it
covers more than 10 % of the items (:func:`capped_concepts`): past that share a latent
gets its next-best concept that clears the threshold, else none. Unlike the TF-IDF
mappings (kept for reproducing the published tables), a latent without such evidence
stays unlabelled and is shown by its top items.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp
from scipy.stats import hypergeom

from steercf.concepts.arrays import ItemActs, as_activations, top_items
from steercf.data import ItemTags
from steercf.errors import InputError

DEFAULT_TOP_K = 10
DEFAULT_MIN_HITS = 2
DEFAULT_TARGET_PRECISION = 0.6
# no concept takes more than this share of the labels unless it covers more than this
# share of the items (a rare tag, e.g. Film-Noir on 1 % of films, must not label 15 % of
# the latents just because TF-IDF or a small p-value favours rare tags)
MAX_CONCEPT_SHARE = 0.1
# pseudo-items at the concept's base rate added to a latent's top items: 3, 10 and 30
# gave the same held-out curves (ML-100K and ml-latest-small genres); with 10, a concept
# on 5 % of the items could not reach a threshold of 0.55 even with 10 of 10 top items
PRIOR_STRENGTH = 3.0
SIGNIFICANCE = 0.05  # the hypergeometric p-value a label's hits must beat (above chance)
THRESHOLDS = tuple(round(0.05 * i, 2) for i in range(2, 20))  # expected precision 0.1-0.95
LABELLING_OFF = 2.0  # a threshold no expected precision reaches: nothing is labelled
SHARES = tuple(round(0.05 * i, 2) for i in range(1, 21))  # labelled shares of ranked curves
CEILING_COVERAGES = (0.2, 0.3)  # where the label bars are set (share of live latents)


@dataclass
class Evidence:
    """How well each latent's best concept holds on some items (one entry per latent).

    Attributes:
        concept: (n_latents,) column of the best concept, -1 for a latent with no top item.
        hits: (n_latents,) top items carrying it.
        n_top: (n_latents,) top items considered (<= k; fewer for sparse latents).
        n_concept: (n_latents,) items carrying the concept.
        n_items: items the evidence was computed on.
        precision, recall, lift, p_value, expected_precision: (n_latents,) float64, as
            the module says.
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
    expected_precision: np.ndarray

    def labelled(self, threshold: float, min_hits: int = DEFAULT_MIN_HITS) -> np.ndarray:
        """(n_latents,) bool: latents above chance whose expected precision reaches
        ``threshold``."""
        above = _above_chance(self.p_value, self.hits, min_hits)
        return (self.concept >= 0) & above & (self.expected_precision >= threshold)


def _above_chance(p_value: np.ndarray, hits: np.ndarray, min_hits: int) -> np.ndarray:
    """Whether hits beat chance: ``p_value <= SIGNIFICANCE`` with ``min_hits`` hits."""
    return (p_value <= SIGNIFICANCE) & (hits >= min_hits)


def _restrict(acts: np.ndarray, items: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    if items is None:
        return acts, np.arange(acts.shape[0])
    items = np.asarray(items, dtype=np.int64)
    return acts[items], items


@dataclass
class PairEvidence:
    """The evidence of every (latent, concept) pair on some items.

    Attributes:
        hits: (n_latents, n_tags) int32, top items of the latent carrying the concept.
        p_value: (n_latents, n_tags) hypergeometric ``P(X >= hits)`` (1 without a hit).
        n_top: (n_latents,) top items considered (<= k; fewer for sparse latents).
        n_concept: (n_tags,) items carrying each concept.
        n_items: items the evidence was computed on.
    """

    hits: np.ndarray
    p_value: np.ndarray
    n_top: np.ndarray
    n_concept: np.ndarray
    n_items: int
    # derived (n_latents, n_tags) matrices, computed once: a labeller reads them per latent
    _derived: dict[Any, np.ndarray] = field(default_factory=dict, repr=False, compare=False)

    def expected_precision(self, prior_strength: float = PRIOR_STRENGTH) -> np.ndarray:
        """(n_latents, n_tags) ``(hits + a * K / N) / (n + a)`` with ``a = prior_strength``:
        the precision of each latent's top items shrunk toward the concept's base rate."""
        key = ("expected_precision", prior_strength)
        if key not in self._derived:
            base_rate = self.n_concept / max(self.n_items, 1)  # (n_tags,)
            self._derived[key] = (self.hits + prior_strength * base_rate[None, :]) / (
                self.n_top[:, None] + prior_strength
            )
        return self._derived[key]

    def above_chance(self, min_hits: int = DEFAULT_MIN_HITS) -> np.ndarray:
        """(n_latents, n_tags) bool: ``p_value <= SIGNIFICANCE`` with ``min_hits`` hits."""
        return _above_chance(self.p_value, self.hits, min_hits)

    def best(self) -> np.ndarray:
        """(n_latents,) each latent's concept of highest expected precision among its pairs
        above chance; without one, its concept of smallest p-value (the most over-
        represented, never a concept it has less of than chance, such as a film's
        language on 85 % of the items); -1 for a latent without top items."""
        if not self.hits.shape[1]:
            return np.full(self.hits.shape[0], -1, dtype=np.int64)
        best = np.argmin(self.strength_order(), axis=1)
        return np.where(self.n_top > 0, best, -1).astype(np.int64)

    def evidence(self, concept: np.ndarray) -> Evidence:
        """:class:`Evidence` of the given concept of each latent ((n_latents,), -1: none)."""
        best = np.asarray(concept, dtype=np.int64)
        rows = np.arange(len(best))
        n_top = self.n_top
        # a column to read for every latent (none at all without concepts)
        hits = self.hits if self.hits.shape[1] else np.zeros((len(best), 1), np.int64)
        p_value = self.p_value if self.hits.shape[1] else np.ones((len(best), 1))
        expected = self.expected_precision() if self.hits.shape[1] else np.zeros((len(best), 1))
        n_concept = self.n_concept if self.hits.shape[1] else np.zeros(1)
        pick = np.maximum(best, 0)
        chosen_hits = np.where(best >= 0, hits[rows, pick], 0).astype(np.int64)
        chosen_n = np.where(best >= 0, n_concept[pick], 0).astype(np.int64)
        precision = np.divide(chosen_hits, n_top, out=np.zeros(len(best)), where=n_top > 0)
        recall = np.divide(chosen_hits, chosen_n, out=np.zeros(len(best)), where=chosen_n > 0)
        base_rate = chosen_n / max(self.n_items, 1)
        lift = np.divide(precision, base_rate, out=np.zeros(len(best)), where=base_rate > 0)
        return Evidence(
            concept=best,
            hits=chosen_hits,
            n_top=n_top.astype(np.int64),
            n_concept=chosen_n,
            n_items=self.n_items,
            precision=precision,
            recall=recall,
            lift=lift,
            p_value=np.where(best >= 0, p_value[rows, pick], 1.0),
            expected_precision=np.where(best >= 0, expected[rows, pick], 0.0),
        )

    def eligible(
        self, threshold: float | None = None, min_hits: int = DEFAULT_MIN_HITS
    ) -> np.ndarray:
        """(n_latents, n_tags) bool: the pairs that may label a latent, those above chance
        whose expected precision reaches ``threshold``; ``threshold=None``: every pair
        with a hit (the best guess, labelled or not)."""
        if threshold is None:
            return (self.hits > 0) & (self.n_top > 0)[:, None]
        return self.above_chance(min_hits) & (self.expected_precision() >= threshold)

    def item_share(self) -> np.ndarray:
        """(n_tags,) share of the items carrying each concept."""
        return self.n_concept / max(self.n_items, 1)

    def capped(
        self,
        threshold: float | None = None,
        min_hits: int = DEFAULT_MIN_HITS,
        live: np.ndarray | None = None,
        max_share: float = MAX_CONCEPT_SHARE,
    ) -> np.ndarray:
        """(n_latents,) each latent's label under the concept cap (:func:`capped_concepts`)
        among its :meth:`eligible` pairs, -1 unlabelled; ``live``: (n_latents,) bool, only
        these latents are labelled (and counted)."""
        eligible = self.eligible(threshold, min_hits)
        if live is not None:
            eligible &= np.asarray(live, dtype=bool)[:, None]
        return capped_concepts(self.strength_order(), eligible, self.item_share(), max_share)

    def strength_order(self) -> np.ndarray:
        """(n_latents, n_tags) lower is stronger, the order of :meth:`best`: pairs above
        chance by expected precision (-1..0), then the rest by p-value (1..2)."""
        if "strength_order" not in self._derived:
            fallback = 1.0 + self.p_value_order()
            self._derived["strength_order"] = np.where(
                self.above_chance(), -self.expected_precision(), fallback
            )
        return self._derived["strength_order"]

    def p_value_order(self) -> np.ndarray:
        """(n_latents, n_tags) the p-values, equal ones broken by more hits (lower is
        stronger): the former labeller's order, and the fallback of :meth:`strength_order`."""
        return self.p_value - 1e-12 * self.hits


def pair_evidence(
    item_acts: ItemActs,
    item_tags: ItemTags | sp.spmatrix,
    items: np.ndarray | None = None,
    k: int = DEFAULT_TOP_K,
) -> PairEvidence:
    """The evidence of every (latent, concept) pair among ``items``.

    Args:
        item_acts: (n_items, n_latents) non-negative activations of one-hot items.
        item_tags: (n_items, n_tags) tags (counts or 0/1).
        items: (m,) item indices to use (default all): fit on training items only.
        k: top items per latent.

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
    return PairEvidence(hits.astype(np.int32), p, n_top.astype(np.int64), n_concept, n_items)


def concept_evidence(
    item_acts: ItemActs,
    item_tags: ItemTags | sp.spmatrix,
    items: np.ndarray | None = None,
    k: int = DEFAULT_TOP_K,
) -> Evidence:
    """Each latent's best-supported concept among ``items`` (:meth:`PairEvidence.best`).

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
    pairs = pair_evidence(item_acts, item_tags, items, k)
    return pairs.evidence(pairs.best())


def capped_concepts(
    score: np.ndarray,
    eligible: np.ndarray,
    item_share: np.ndarray,
    max_share: float = MAX_CONCEPT_SHARE,
) -> np.ndarray:
    """Labels under the concept cap: no concept takes more than ``max_share`` of the
    labels unless it covers more than ``max_share`` of the items.

    Latents are served strongest evidence first (smallest ``score`` among their eligible
    pairs; ties: lower latent id), each taking its best eligible concept that is under
    its cap, else its next best, else none. The cap is ``max_share`` of the labels handed
    out (at least 1, so a small model still gets labels); as unlabelled latents shrink
    that count, the cap is lowered and the labels handed out again until it holds.

    Args:
        score: (n_latents, n_tags) lower is stronger (:meth:`PairEvidence.strength_order`).
        eligible: (n_latents, n_tags) bool, the pairs that may label a latent.
        item_share: (n_tags,) share of the items carrying each concept.
        max_share: the cap, a share in (0, 1].

    Returns:
        (n_latents,) int64, each latent's concept column or -1 (unlabelled).
    """
    if not 0 < max_share <= 1:
        raise InputError(f"max_share must lie in (0, 1], got {max_share}")
    score = np.where(eligible, score, np.inf)
    n_latents, n_tags = score.shape
    chosen = np.full(n_latents, -1, dtype=np.int64)
    wanting = np.flatnonzero(eligible.any(axis=1)) if n_tags else np.array([], np.int64)
    if not len(wanting):
        return chosen
    exempt = np.asarray(item_share) > max_share
    strongest = score[wanting].min(axis=1)
    wanting = wanting[np.lexsort((wanting, strongest))]
    # each latent's eligible concepts, best first (ties: lower column)
    ranked = {}
    for n in wanting:
        columns = np.flatnonzero(eligible[n])  # ascending, so ties keep the lower column
        ranked[int(n)] = columns[np.argsort(score[n, columns], kind="stable")].tolist()

    def limit(n_labels: int) -> int:
        return max(1, int(np.floor(max_share * n_labels + 1e-9)))

    cap = limit(len(wanting))
    while True:
        chosen[:] = -1
        counts = np.zeros(n_tags, dtype=np.int64)
        for n in wanting:
            for c in ranked[int(n)]:
                if exempt[c] or counts[c] < cap:
                    chosen[n] = c
                    counts[c] += 1
                    break
        held = limit(int((chosen >= 0).sum()))
        if counts[~exempt].max(initial=0) <= held:
            return chosen
        cap = min(cap - 1, held)  # fewer labels than assumed: a lower cap, again


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


def judging_depth(k: int, n_fit: int, n_judge: int) -> int:
    """Top items to read on ``n_fit`` fitting items so they cover the same share of the
    items as a judge's top ``k`` of ``n_judge`` (30 of 60 % for 10 of 20 %): the fitting
    evidence then describes the items the judge reads, not only the very top ones."""
    return max(k, int(round(k * n_fit / max(n_judge, 1))))


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
        evidence: from the fitting items (at :func:`judging_depth`).
        items: the judging items (never the fitting ones).
        live: (n_latents,) bool, the latents that count for coverage (e.g. active for
            any user).
        thresholds: expected-precision thresholds (:meth:`Evidence.labelled`).

    Returns:
        per threshold: ``threshold``, ``precision@k`` (mean over labelled live latents
        that fire on a judging item), ``coverage`` (labelled share of ``live``),
        ``n_labelled``.
    """
    live = np.asarray(live, dtype=bool)
    precision = held_out_precision(
        item_acts, item_tags, np.where(live, evidence.concept, -1), items, k
    )
    return [
        _curve_point(threshold, evidence.labelled(threshold, min_hits) & live, precision, live, k)
        for threshold in thresholds
    ]


def _curve_point(
    threshold: float, labelled: np.ndarray, precision: np.ndarray, live: np.ndarray, k: int
) -> dict[str, float]:
    judged = precision[labelled]
    judged = judged[np.isfinite(judged)]
    return {
        "threshold": float(threshold),
        f"precision@{k}": float(judged.mean()) if len(judged) else float("nan"),
        "coverage": float(labelled.sum() / max(live.sum(), 1)),
        "n_labelled": int(labelled.sum()),
    }


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
    """The loosest (lowest) expected-precision threshold whose validation precision@k
    reaches ``target_precision`` (the strictest one if none does)."""
    reaching = reaching_points(curve, target_precision, k)
    if not reaching:
        return max(point["threshold"] for point in curve)
    return min(point["threshold"] for point in reaching)


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

    * ``evidence``: :func:`concept_evidence` at the judges' depth
      (:func:`judging_depth`), threshold chosen on the validation items
      (:func:`choose_threshold` at ``target_precision``), labels under the concept cap
      (:meth:`PairEvidence.capped`);
    * ``best_characterizes``: every live unit gets its top TF-IDF concept (the published
      mapping; coverage 1).

    Returns:
        ``{labeller: {"precision@k", "coverage", "threshold", "n_labelled"}}``.
    """
    acts, tags, live, (fit, val, test) = _labelling_inputs(item_acts, item_tags, live, seed)
    pairs = pair_evidence(acts, tags, fit, judging_depth(k, len(fit), len(val)))
    evidence = pairs.evidence(pairs.best())
    threshold = choose_threshold(
        labelling_curve(evidence, acts, tags, val, live, k=k), target_precision, k
    )
    # the labels the default labeller hands out: under the concept cap
    capped = pairs.capped(threshold, live=live)
    precision = held_out_precision(acts, tags, capped, test, k)
    out = {"evidence": _curve_point(threshold, capped >= 0, precision, live, k)}
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

    * ``evidence``: one point per expected-precision threshold in :data:`THRESHOLDS`
      (before the concept cap, like the threshold choice);
    * ``evidence_pvalue``: the former rule, each latent's concept of smallest p-value
      with the latents ranked by it, the top 5 %, 10 %, ..., 100 % labelled;
    * ``best_characterizes``: the live units ranked by their top TF-IDF score, the top
      5 %, 10 %, ..., 100 % labelled (the published mapping has no threshold of its own).

    Returns:
        ``{labeller: [{"threshold", "precision@k", "coverage", "n_labelled"}, ...]}``;
        for the ranked labellers ``threshold`` is the labelled share of live units.
    """
    acts, tags, live, (fit, _, test) = _labelling_inputs(item_acts, item_tags, live, seed)
    pairs = pair_evidence(acts, tags, fit, judging_depth(k, len(fit), len(test)))
    evidence = pairs.evidence(pairs.best())  # uncapped, as the threshold choice
    # the former p-value rule, read at the same depth
    if tags.shape[1]:
        p_score = pairs.p_value_order()
        p_labels = np.where(pairs.n_top > 0, np.argmin(p_score, axis=1), -1)
        p_strength = -np.log(np.maximum(p_score.min(axis=1), 1e-300))
    else:  # no concept: nothing to label
        p_labels, p_strength = np.full(acts.shape[1], -1), np.zeros(acts.shape[1])
    return {
        "evidence": labelling_curve(evidence, acts, tags, test, live, k=k),
        "evidence_pvalue": _ranked_curve(acts, tags, live, test, p_labels, p_strength, k),
        "best_characterizes": _tfidf_curve(acts, tags, live, fit, test, SHARES, k),
    }


def precision_ceiling(
    item_acts: ItemActs,
    item_tags: ItemTags | sp.spmatrix,
    live: np.ndarray,
    seed: int = 0,
    coverages: Sequence[float] = CEILING_COVERAGES,
    k: int = DEFAULT_TOP_K,
) -> dict[float, float]:
    """The held-out precision@k that no labeller can beat at each coverage.

    Every live latent is labelled by the concept that holds best on its own top-``k``
    test items (the judge's items, which a real labeller never sees), and the latents
    where that holds best are kept: the mean of their precisions bounds
    :func:`held_out_labelling`'s precision@k at that coverage, on the same seeded
    60/20/20 item split. The judge counts a labelled live latent that fires on no test
    item toward coverage but not toward precision, so of ``m = coverage * n_live``
    labels, those ``n_silent`` latents may take up to ``n_silent`` and the ceiling is the
    mean of the best ``max(1, m - n_silent)``. It ignores the concept cap, which can
    only lower it. Where the ceiling is below a target, no labeller reading these
    activations reaches the target at that coverage.

    Args:
        item_acts: (n_items, n_latents) non-negative item activations.
        item_tags: (n_items, n_tags) tags (counts or 0/1).
        live: (n_latents,) bool, the latents that count for coverage.
        seed: the item split's seed (:func:`split_items`).
        coverages: shares of the live latents, each in (0, 1].
        k: top items per latent.

    Returns:
        ``{coverage: ceiling}``; nan when no live latent fires on a test item.

    Raises:
        InputError: shapes disagree, ``k < 1``, or a coverage outside (0, 1].
    """
    if any(not 0 < c <= 1 for c in coverages):
        raise InputError(f"coverages must lie in (0, 1], got {list(coverages)}")
    acts, tags, live, (_, _, test) = _labelling_inputs(item_acts, item_tags, live, seed)
    pairs = pair_evidence(acts, tags, test, k)
    if tags.shape[1]:
        best = (pairs.hits / np.maximum(pairs.n_top, 1)[:, None]).max(axis=1)
    else:
        best = np.zeros(acts.shape[1])
    judged = live & (pairs.n_top > 0)
    best = np.sort(best[judged])[::-1]
    n_silent = int(live.sum() - judged.sum())
    out = {}
    for coverage in coverages:
        m = max(1, int(round(coverage * live.sum())) - n_silent)
        out[coverage] = float(best[:m].mean()) if len(best) else float("nan")
    return out


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
    strength = mapping.scores.max(axis=0)
    return _ranked_curve(acts, tags, live, test, mapping.top_concepts(), strength, k, shares)


def _ranked_curve(
    acts: np.ndarray,
    tags: sp.csr_matrix,
    live: np.ndarray,
    test: np.ndarray,
    labels: np.ndarray,
    strength: np.ndarray,
    k: int,
    shares: Sequence[float] = SHARES,
) -> list[dict[str, float]]:
    """Test-item precision@k when only the ``share`` of labelled live units with the
    largest ``strength`` (n_latents,) keep their ``labels`` (n_latents,)."""
    labels = np.where(live, labels, -1)
    precision = held_out_precision(acts, tags, labels, test, k)
    strength = np.where(labels >= 0, strength, -np.inf)
    order = np.argsort(-strength, kind="stable")[: int((labels >= 0).sum())]
    curve = []
    for share in shares:
        labelled = np.zeros(len(labels), bool)
        labelled[order[: int(round(share * len(order)))]] = True
        curve.append(_curve_point(share, labelled, precision, live, k))
    return curve
