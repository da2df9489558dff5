"""Concept <-> unit mappings (:data:`MAPPINGS`) and their result, :class:`ConceptMapping`.

A mapping is a pure function of two arrays, the item activations ``S``
``(n_items, n_units)`` (non-negative) and the tag counts ``T`` ``(n_items, n_tags)``, that
returns a :class:`ConceptMapping`: one score per (concept, unit) read in both directions
(concept -> ranked units, unit -> ranked concepts). Mappings never look at a model, so
the dense-embedding and random-rotation controls of :mod:`steercf.concepts.report` go
through exactly the same code as the SAE.

The tag sources that build ``T`` live in :mod:`steercf.concepts.sources` and the shared
array helpers (``A``, ``tfidf``, top items) in :mod:`steercf.concepts.arrays`; both are
re-exported here, where they used to be defined.

Notation used in the docstrings (REFERENCE.md section 1, item 4):

* ``S[i, n]``: activation of unit ``n`` on the one-hot input of item ``i``.
* ``P``: ``T.T`` with each tag's row normalised to sum 1 (a tag's item distribution).
* ``A = P S`` ``(n_tags, n_units)``: the mean activation of unit ``n`` over the items of
  tag ``t`` (weighted by tag counts).
* ``tfidf(X)`` over a terms x documents matrix ``X``: ``tf = X / column sums``,
  ``idf = ln((N_docs + 1) / (df + 1)) + 1`` with ``df`` the number of non-zero entries
  in a term's row; ``tfidf = tf * idf[:, None]``.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from steercf.concepts.arrays import (
    TOP_ITEMS,
    ItemActs,
    as_activations,
    live_units,
    tag_inputs,
    tag_means,
    tag_unit_means,
    tfidf,
    top_items,
)
from steercf.concepts.sources import (
    DEFAULT_MIN_COUNT,
    PLACEHOLDER_GENRES,
    available_sources,
    concept_tags,
    tags_from_applications,
    tags_from_mapping,
)
from steercf.data import ItemTags
from steercf.errors import InputError, UnknownIdError

# A readable concept name may be given by its beginning, but not by a letter or two: "d"
# naming the one "director of ..." concept is an accident, not a choice.
MIN_NAME_START = 4

__all__ = [
    "DEFAULT_MIN_COUNT",
    "MAPPINGS",
    "PLACEHOLDER_GENRES",
    "TOP_ITEMS",
    "ConceptMapping",
    "ItemActs",
    "MappingFn",
    "activation_auc",
    "activation_correlation",
    "as_activations",
    "available_sources",
    "best_characterizes",
    "concept_tags",
    "get_mapping",
    "live_units",
    "map_concepts",
    "most_unique",
    "tag_unit_means",
    "tags_from_applications",
    "tags_from_mapping",
    "tfidf",
    "top_item_precision",
    "top_items",
    "unknown_concept_message",
]


# ----------------------------------------------------------------------------------------
# The result type
# ----------------------------------------------------------------------------------------
@dataclass(eq=False)  # holds arrays: compare by identity
class ConceptMapping:
    """Scores linking concepts to units, readable in both directions.

    Attributes:
        name: the mapping that produced it (a key of :data:`MAPPINGS`).
        scores: (n_concepts, n_units) float64; higher = stronger link.
        tag_names: (n_concepts,) concept names, the rows of ``scores``.
        live: (n_units,) bool, units active on at least one item. Dead units carry no
            evidence, so they are never returned by :meth:`latents_for` and have no
            concepts in :meth:`concepts_for`.
        display_names: (n_concepts,) names a person reads
            (:func:`steercf.concepts.sources.concept_display_names`, e.g. "director of
            Pulp Fiction (1994), ..." for ``directed_by:m.0bln8``), or None. A concept
            can then be named by either (:meth:`concept_index`).
    """

    name: str
    scores: np.ndarray
    tag_names: np.ndarray
    live: np.ndarray
    display_names: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.scores = np.asarray(self.scores, dtype=np.float64)
        self.tag_names = np.asarray(self.tag_names, dtype=str)
        self.live = np.asarray(self.live, dtype=bool)
        if self.scores.shape != (len(self.tag_names), len(self.live)):
            raise InputError(
                f"scores have shape {self.scores.shape}, expected "
                f"({len(self.tag_names)}, {len(self.live)})"
            )
        if self.display_names is not None:
            self.display_names = np.asarray(self.display_names, dtype=str)
            if self.display_names.shape != self.tag_names.shape:
                raise InputError(
                    f"{len(self.display_names)} display names for {len(self.tag_names)} concepts"
                )

    @property
    def n_concepts(self) -> int:
        return int(self.scores.shape[0])

    @property
    def n_units(self) -> int:
        return int(self.scores.shape[1])

    def concept_index(self, concept: str | int) -> int:
        """Row of ``concept``: an exact name, a unique case-insensitive match, an int, or
        (with ``display_names``) a readable name: whole, or a beginning of exactly one,
        at least :data:`MIN_NAME_START` characters long ("director of Pulp Fiction" for "director of Pulp Fiction (1994), Reservoir Dogs
        (1992)"), case-insensitive.

        Raises:
            UnknownIdError: no such concept (the message lists the closest names), or a
                readable name that fits several concepts (the message lists them with
                their ids).
        """
        if isinstance(concept, (int, np.integer)) and not isinstance(concept, bool):
            if not 0 <= int(concept) < self.n_concepts:
                raise UnknownIdError(f"concept index {concept} out of range [0, {self.n_concepts})")
            return int(concept)
        name = str(concept)
        exact = np.flatnonzero(self.tag_names == name)
        if exact.size:
            return int(exact[0])
        folded = np.flatnonzero(np.char.lower(self.tag_names) == name.lower())
        if folded.size == 1:
            return int(folded[0])
        if self.display_names is None:
            raise UnknownIdError(unknown_concept_message(name, self.tag_names))
        shown = np.char.lower(self.display_names)
        key = " ".join(name.lower().split())
        matches = np.flatnonzero(shown == key)
        if not matches.size and len(key) >= MIN_NAME_START:
            matches = np.flatnonzero(np.char.startswith(shown, key))
        if matches.size == 1:
            return int(matches[0])
        if matches.size > 1:
            listed = "; ".join(
                f"{self.display_names[i]!r} ({self.tag_names[i]})" for i in matches[:8]
            )
            more = f" and {matches.size - 8} more" if matches.size > 8 else ""
            raise UnknownIdError(
                f"concept {name!r} is ambiguous: it names {matches.size} concepts: "
                f"{listed}{more}; give more of the name or the id in brackets"
            )
        raise UnknownIdError(
            unknown_concept_message(
                name, [*self.tag_names, *self.display_names], total=self.n_concepts
            )
        )

    def _unit(self, unit: int) -> int:
        if isinstance(unit, bool) or not isinstance(unit, (int, np.integer)):
            raise InputError(f"a latent is an integer id, got {unit!r}")
        if not 0 <= int(unit) < self.n_units:
            raise InputError(
                f"latent {unit} out of range: the model has {self.n_units} (0..{self.n_units - 1})"
            )
        return int(unit)

    def latents_for(self, concept: str | int, top: int = 10) -> list[tuple[int, float]]:
        """The ``top`` live units most linked to ``concept``: ``[(unit, score), ...]``,
        best first (ties: lower unit id first)."""
        row = self.scores[self.concept_index(concept)]
        units = np.flatnonzero(self.live)
        order = units[np.lexsort((units, -row[units]))][: max(int(top), 0)]
        return [(int(u), float(row[u])) for u in order]

    def concepts_for(self, unit: int, top: int = 10) -> list[tuple[str, float]]:
        """The ``top`` concepts most linked to ``unit``: ``[(concept, score), ...]``,
        best first; empty for a dead unit."""
        unit = self._unit(unit)
        if not self.live[unit]:
            return []
        column = self.scores[:, unit]
        order = np.lexsort((np.arange(self.n_concepts), -column))[: max(int(top), 0)]
        return [(str(self.tag_names[c]), float(column[c])) for c in order]

    def best_latents(self) -> np.ndarray:
        """(n_concepts,) int: each concept's top live unit (-1 when no unit is live)."""
        if not self.live.any():
            return np.full(self.n_concepts, -1, dtype=np.int64)
        masked = np.where(self.live[None, :], self.scores, -np.inf)
        return masked.argmax(axis=1).astype(np.int64)

    def top_concepts(self) -> np.ndarray:
        """(n_units,) int: each unit's top concept (-1 for dead units)."""
        top = self.scores.argmax(axis=0).astype(np.int64)
        top[~self.live] = -1
        return top


def unknown_concept_message(name: str, names: Iterable[str], total: int | None = None) -> str:
    """``unknown concept 'x' (among N); close matches: ...`` using difflib, case-blind;
    ``total``: N when ``names`` holds several names per concept (ids and readable names)."""
    names = [str(n) for n in names]
    by_fold: dict[str, str] = {}
    for n in names:
        by_fold.setdefault(n.lower(), n)
    close = difflib.get_close_matches(name.lower(), list(by_fold), n=5, cutoff=0.6)
    if not close:  # e.g. "sci fi" vs "Sci-Fi": try substring containment as well
        close = [f for f in by_fold if name.lower() in f or (len(f) > 2 and f in name.lower())][:5]
    hint = (
        f"; close matches: {', '.join(repr(by_fold[c]) for c in close)}"
        if close
        else "; no close match"
    )
    return (
        f"unknown concept {name!r} (among {len(names) if total is None else total} concepts){hint}"
    )


# ----------------------------------------------------------------------------------------
# Mappings
# ----------------------------------------------------------------------------------------
def best_characterizes(
    item_acts: ItemActs,
    item_tags: ItemTags | sp.spmatrix,
    tag_names: Iterable[str] | None = None,
) -> ConceptMapping:
    """ "Best characterizes" (published): ``scores = tfidf(A^T)^T``.

    Units are the terms and concepts the documents: ``score[t, n] =
    A[t, n] / sum_n' A[t, n'] * idf[n]``, ``idf[n] = ln((T + 1) / (df[n] + 1)) + 1``,
    ``df[n] = #{t : A[t, n] > 0}``. A concept's best unit is where its activation mass
    concentrates, discounted for units that fire on every concept. A unit's top concept
    (the argmax over ``t`` of the same column) is its published latent -> tag label.

    Args:
        item_acts: (n_items, n_units) non-negative activations ``S``.
        item_tags: (n_items, n_tags) counts ``T`` (ItemTags or sparse).
        tag_names: overrides the names of ``item_tags``.
    """
    acts, counts, names = tag_inputs(item_acts, item_tags, tag_names)
    scores = tfidf(tag_means(acts, counts).T).T
    return ConceptMapping("best_characterizes", scores, names, (acts > 0).any(axis=0))


def most_unique(
    item_acts: ItemActs,
    item_tags: ItemTags | sp.spmatrix,
    tag_names: Iterable[str] | None = None,
) -> ConceptMapping:
    """ "Most unique" (published): ``scores = tfidf(A)``.

    Concepts are the terms and units the documents: ``score[t, n] =
    A[t, n] / sum_t' A[t', n] * idf[t]``, ``idf[t] = ln((U + 1) / (df[t] + 1)) + 1``,
    ``df[t] = #{n : A[t, n] > 0}``. A concept's best unit is the one whose activation is
    most exclusively about that concept (the concept's share of the unit's mass).

    Args: as :func:`best_characterizes`.
    """
    acts, counts, names = tag_inputs(item_acts, item_tags, tag_names)
    scores = tfidf(tag_means(acts, counts))
    return ConceptMapping("most_unique", scores, names, (acts > 0).any(axis=0))


def top_item_precision(
    item_acts: ItemActs,
    item_tags: ItemTags | sp.spmatrix,
    tag_names: Iterable[str] | None = None,
    k: int = TOP_ITEMS,
) -> ConceptMapping:
    """Precision of each unit's top-activating items for each concept.

    ``score[t, n] = |top_k(n) ∩ items(t)| / |top_k(n)|`` where ``top_k(n)`` are the
    ``min(k, #{i : S[i, n] > 0})`` items of largest activation (ties: lower item index)
    and ``items(t) = {i : T[i, t] > 0}``. This is what a person checking a latent by its
    top items sees; dead units score 0. Frequent concepts get high precision by chance:
    compare with the concept's base rate ``|items(t)| / n_items``.

    Args: as :func:`best_characterizes`; ``k`` items per unit.
    """
    if k < 1:
        raise InputError(f"k must be >= 1, got {k}")
    acts, counts, names = tag_inputs(item_acts, item_tags, tag_names)
    top = top_items(acts, k)  # (n_units, k), -1 padded
    has = (counts > 0).astype(np.float64).tocsr()
    valid = top >= 0
    n_top = valid.sum(axis=1)
    rows = np.repeat(np.arange(top.shape[0]), valid.sum(axis=1))
    weight = 1.0 / np.maximum(n_top, 1)
    select = sp.csr_matrix((weight[rows], (rows, top[valid])), shape=(top.shape[0], acts.shape[0]))
    scores = np.asarray((select @ has).todense()).T  # (n_tags, n_units)
    return ConceptMapping("top_item_precision", scores, names, n_top > 0)


def activation_auc(
    item_acts: ItemActs,
    item_tags: ItemTags | sp.spmatrix,
    tag_names: Iterable[str] | None = None,
) -> ConceptMapping:
    """ROC AUC of a unit's item activations for telling a concept's items from the rest.

    ``score[t, n] = P(S[i, n] > S[j, n]) + P(S[i, n] = S[j, n]) / 2`` for a random item
    ``i`` with the concept and ``j`` without, computed from mid-ranks (Mann-Whitney U):
    ``(R_t - n_t (n_t + 1) / 2) / (n_t (N - n_t))`` with ``R_t`` the rank sum of the
    concept's items. 0.5 = no information; a concept on every or no item scores 0.5.
    A sparse unit that fires on few items has an AUC near 0.5 even when all of them
    carry the concept: AUC rewards recall of the concept, precision does not.

    Args: as :func:`best_characterizes`.
    """
    from scipy.stats import rankdata

    acts, counts, names = tag_inputs(item_acts, item_tags, tag_names)
    has = (counts > 0).astype(np.float64).tocsc()
    n_items = acts.shape[0]
    ranks = rankdata(acts, axis=0)  # (n_items, n_units) mid-ranks, ties averaged
    rank_sums = np.asarray(has.T @ ranks)  # (n_tags, n_units)
    n_pos = np.asarray(has.sum(axis=0)).ravel()[:, None]
    n_neg = n_items - n_pos
    denominator = n_pos * n_neg
    scores = np.divide(
        rank_sums - n_pos * (n_pos + 1) / 2,
        denominator,
        out=np.full_like(rank_sums, 0.5),
        where=denominator > 0,
    )
    return ConceptMapping("activation_auc", scores, names, (acts > 0).any(axis=0))


def activation_correlation(
    item_acts: ItemActs,
    item_tags: ItemTags | sp.spmatrix,
    tag_names: Iterable[str] | None = None,
) -> ConceptMapping:
    """Pearson correlation between a unit's item activations and concept membership.

    ``score[t, n] = corr_i(S[i, n], 1[T[i, t] > 0])`` over all items (the point-biserial
    correlation); 0 where either side is constant. Unlike AUC it weighs how strongly the
    unit fires, and unlike top-item precision it also counts the concept's items the
    unit misses.

    Args: as :func:`best_characterizes`.
    """
    acts, counts, names = tag_inputs(item_acts, item_tags, tag_names)
    has = (counts > 0).astype(np.float64).tocsc()
    n_items = acts.shape[0]
    act_mean = acts.mean(axis=0)
    act_std = acts.std(axis=0)
    share = np.asarray(has.sum(axis=0)).ravel() / n_items
    tag_std = np.sqrt(share * (1 - share))
    covariance = np.asarray(has.T @ acts) / n_items - share[:, None] * act_mean[None, :]
    denominator = tag_std[:, None] * act_std[None, :]
    scores = np.divide(
        covariance, denominator, out=np.zeros_like(covariance), where=denominator > 1e-12
    )
    return ConceptMapping("activation_correlation", scores, names, (acts > 0).any(axis=0))


MappingFn = Callable[..., ConceptMapping]

MAPPINGS: dict[str, MappingFn] = {
    "best_characterizes": best_characterizes,
    "most_unique": most_unique,
    "top_item_precision": top_item_precision,
    "activation_auc": activation_auc,
    "activation_correlation": activation_correlation,
}


# Mappings that need the spliced model itself (steercf.steering.knobs), named here only to
# point a caller there: the concepts layer does not import the models.
MODEL_MAPPINGS = ("decoder_effect", "decoder_fit")


def get_mapping(name: str) -> MappingFn:
    """The mapping function called ``name``; UnknownIdError lists the known ones."""
    if name in MAPPINGS:
        return MAPPINGS[name]
    if name in MODEL_MAPPINGS:  # they read a model's decoder, not item activations
        raise UnknownIdError(
            f"{name!r} maps concepts from a spliced model's decoder, not from item "
            f"activations: call steercf.steering.{name}(model, item_tags, tag_names); "
            f"get_mapping knows {', '.join(MAPPINGS)}"
        )
    close = difflib.get_close_matches(name, list(MAPPINGS), n=3, cutoff=0.4)
    hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
    raise UnknownIdError(
        f"unknown concept mapping {name!r}; choose one of {', '.join(MAPPINGS)}{hint}"
    )


def map_concepts(
    item_acts: ItemActs,
    item_tags: ItemTags | sp.spmatrix,
    mapping: str = "best_characterizes",
    tag_names: Iterable[str] | None = None,
) -> ConceptMapping:
    """Run the mapping called ``mapping`` (a key of :data:`MAPPINGS`)."""
    return get_mapping(mapping)(item_acts, item_tags, tag_names)
