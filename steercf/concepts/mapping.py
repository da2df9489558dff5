"""Concepts (item tags) and their mapping to units (SAE latents or any other item features).

Two halves:

* **Tag sources** turn item metadata into an ``ItemTags`` count matrix
  ``(n_items, n_tags)``: MovieLens genres, ML-100K knowledge-graph relations
  (``directed_by:m.xxx``, ``actor:m.xxx``, ...), ml-latest user tags counted from
  *training users only*, or any user-supplied ``item -> tags`` mapping or frame.
* **Mappings** are pure functions of two arrays, the item activations ``S``
  ``(n_items, n_units)`` (non-negative) and the tag counts ``T`` ``(n_items, n_tags)``,
  that return a :class:`ConceptMapping`: one score per (concept, unit) read in both
  directions (concept -> ranked units, unit -> ranked concepts). They never look at a
  model, so the dense-embedding and random-rotation controls of
  :mod:`steercf.concepts.report` go through exactly the same code as the SAE.

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
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from steercf.data import InteractionData, ItemTags
from steercf.data.interactions import tags_from_pairs
from steercf.errors import InputError, UnknownIdError

# Default minimum number of items (kg) / applications (user tags) a concept needs: rarer
# ones give TF-IDF scores from one or two items, which is noise rather than a concept.
DEFAULT_MIN_COUNT = {"genres": 1, "kg": 10, "tags": 5}
TOP_ITEMS = 10  # K of the top-item precision mapping and of label precision@K
# genre placeholders of the MovieLens files: "no information", not a concept
PLACEHOLDER_GENRES = ("unknown", "(no genres listed)")

ItemActs = np.ndarray | torch.Tensor


# ----------------------------------------------------------------------------------------
# Tag sources
# ----------------------------------------------------------------------------------------
def tags_from_applications(
    frame: pd.DataFrame,
    item_ids: np.ndarray,
    users: Iterable[Any] | None = None,
    min_count: int = 1,
    lowercase: bool = True,
    item_col: str = "item",
    tag_col: str = "tag",
    user_col: str = "user",
) -> ItemTags:
    """Item x tag counts from raw ``(user, item, tag)`` application rows.

    Args:
        frame: one row per tag application; ``user_col`` is needed only with ``users``.
        item_ids: (n_items,) original item ids, the rows of the result.
        users: keep only applications by these (original) user ids, e.g. the training
            users of a split, so that no held-out user's tags leak into the concepts.
            None keeps every row.
        min_count: drop tags with fewer kept applications than this (counted after the
            user filter and on ``item_ids`` only).
        lowercase: strip and lower-case tags, so "Sci-Fi" and "sci-fi " are one concept.

    Returns:
        ItemTags with an (n_items, n_tags) float32 count matrix; tags sorted by name.
    """
    missing = [c for c in (item_col, tag_col) if c not in frame.columns]
    if users is not None and user_col not in frame.columns:
        missing.append(user_col)
    if missing:
        raise InputError(
            f"tag frame lacks column(s) {', '.join(map(repr, missing))}; "
            f"it has {list(map(str, frame.columns))}"
        )
    if min_count < 1:
        raise InputError(f"min_count must be >= 1, got {min_count}")
    rows = frame
    if users is not None:
        rows = rows[rows[user_col].isin(pd.Index(list(users)))]
    tags = rows[tag_col].astype("string")
    if lowercase:
        tags = tags.str.strip().str.lower()
    keep = tags.notna() & (tags != "")
    return tags_from_pairs(
        rows[item_col].to_numpy()[keep.to_numpy()],
        tags[keep].astype(str).to_numpy(),
        item_ids,
    ).filter(min_count)


def tags_from_mapping(
    mapping: Mapping[Any, Any] | pd.DataFrame,
    item_ids: np.ndarray,
    min_count: int = 1,
    lowercase: bool = False,
    users: Iterable[Any] | None = None,
) -> ItemTags:
    """User-supplied concepts: a dict ``item id -> tag or tags`` or a frame of rows.

    Args:
        mapping: ``{item_id: "tag" | ["tag", ...] | {"tag": count}}``, or a DataFrame
            with columns ``item``, ``tag`` (and ``user`` when ``users`` is given).
        item_ids: (n_items,) original item ids; unknown items are ignored.
        min_count: drop tags counted fewer times in total.
        lowercase: lower-case and strip tag names.
        users: for a frame with a ``user`` column: keep only rows of these users.

    Returns:
        ItemTags (n_items, n_tags) with counts (a dict value repeated or given as counts
        adds up).
    """
    if isinstance(mapping, pd.DataFrame):
        return tags_from_applications(
            mapping, item_ids, users=users, min_count=min_count, lowercase=lowercase
        )
    if not isinstance(mapping, Mapping):
        raise InputError(
            f"concepts must be a dict item -> tags or a DataFrame, got {type(mapping).__name__}"
        )
    items: list[Any] = []
    tags: list[str] = []
    for item, value in mapping.items():
        if isinstance(value, str):
            pairs: Iterable[tuple[Any, int]] = [(value, 1)]
        elif isinstance(value, Mapping):
            pairs = value.items()
        elif isinstance(value, Iterable):
            pairs = [(v, 1) for v in value]
        else:
            raise InputError(f"tags of item {item!r} must be a str, list or dict, got {value!r}")
        for tag, count in pairs:
            n = int(count)
            items.extend([item] * n)
            tags.extend([str(tag)] * n)
    frame = pd.DataFrame({"item": items, "tag": tags})
    return tags_from_applications(frame, item_ids, min_count=min_count, lowercase=lowercase)


def concept_tags(
    data: InteractionData,
    source: str,
    train_users: np.ndarray | None = None,
    min_count: int | None = None,
) -> ItemTags:
    """The item x concept counts of a named tag source of ``data``.

    Args:
        data: a loaded data set.
        source: ``"genres"``, ``"kg"`` (ML-100K knowledge-graph relations) or ``"tags"``
            (ml-latest user tags); any other key of ``data.tags`` is used as it is.
        train_users: row indices into ``data.matrix`` of the training users
            (``Split.train_users``). User tags are then recounted from these users'
            applications only: a held-out user's tags describe exactly the items they
            hide, so counting them would leak. Genres and knowledge-graph relations are
            item metadata, not user data, and ignore it.
        min_count: minimum total count of a concept (items for kg, applications for user
            tags); default ``DEFAULT_MIN_COUNT`` (1 for an unlisted source).

    Returns:
        ItemTags (n_items, n_concepts). The genre placeholders "unknown" (ML-100K) and
        "(no genres listed)" (ml-latest) are dropped: they mark missing data.

    Raises:
        UnknownIdError: ``data`` has no such source (the message lists the ones it has).
    """
    threshold = DEFAULT_MIN_COUNT.get(source, 1) if min_count is None else int(min_count)
    if source == "tags" and data.tag_applications is not None:
        users = None if train_users is None else data.user_ids[np.asarray(train_users)]
        # applications are already lower-cased by the loader; lowercase again for frames
        # assembled by hand
        return tags_from_applications(
            data.tag_applications, data.item_ids, users=users, min_count=threshold
        )
    if source not in data.tags:
        close = difflib.get_close_matches(source, list(data.tags), n=3, cutoff=0.4)
        hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
        raise UnknownIdError(
            f"{data.name} has no tag source {source!r} (it has "
            f"{', '.join(map(repr, data.tags)) or 'none'}){hint}"
        )
    tags = data.tags[source].filter(threshold)
    if source == "genres":
        keep = np.flatnonzero(~np.isin(np.char.lower(tags.names), PLACEHOLDER_GENRES))
        tags = ItemTags(tags.matrix[:, keep].tocsr(), tags.names[keep])
    return tags


def available_sources(data: InteractionData) -> list[str]:
    """Tag sources of ``data`` that :func:`concept_tags` can build, in a fixed order."""
    return [s for s in ("genres", "kg", "tags") if s in data.tags] + sorted(
        s for s in data.tags if s not in ("genres", "kg", "tags")
    )


# ----------------------------------------------------------------------------------------
# Arrays shared by the mappings
# ----------------------------------------------------------------------------------------
def as_activations(item_acts: ItemActs) -> np.ndarray:
    """(n_items, n_units) float64 numpy copy; rejects NaN and negative activations."""
    acts = item_acts.detach().cpu().numpy() if torch.is_tensor(item_acts) else item_acts
    acts = np.asarray(acts, dtype=np.float64)
    if acts.ndim != 2:
        raise InputError(f"item activations must be 2-D (items x units), got shape {acts.shape}")
    if not np.isfinite(acts).all():
        raise InputError("item activations hold NaN or infinite values")
    if (acts < 0).any():
        raise InputError(
            "item activations must be non-negative; pass signed features through "
            "steercf.concepts.report.signed_split first"
        )
    return acts


def _tag_inputs(
    item_acts: ItemActs, item_tags: ItemTags | sp.spmatrix, tag_names: Iterable[str] | None
) -> tuple[np.ndarray, sp.csr_matrix, np.ndarray]:
    acts = as_activations(item_acts)
    if isinstance(item_tags, ItemTags):
        counts, names = item_tags.matrix, item_tags.names
    else:
        counts = sp.csr_matrix(item_tags)
        names = np.array([f"tag{i}" for i in range(counts.shape[1])], dtype=str)
    if tag_names is not None:
        names = np.asarray(list(tag_names), dtype=str)
    counts = sp.csr_matrix(counts, dtype=np.float64)
    if counts.shape[0] != acts.shape[0]:
        raise InputError(
            f"{acts.shape[0]} item activation rows but {counts.shape[0]} item tag rows"
        )
    if counts.shape[1] != len(names):
        raise InputError(f"{counts.shape[1]} tag columns but {len(names)} tag names")
    if counts.nnz and counts.data.min() < 0:
        raise InputError("tag counts must be non-negative")
    return acts, counts, names


def tag_unit_means(item_acts: ItemActs, item_tags: ItemTags | sp.spmatrix) -> np.ndarray:
    """``A = P S``: (n_tags, n_units) mean activation of each unit over each tag's items.

    ``P[t, i] = T[i, t] / sum_j T[j, t]`` (tag rows normalised to sum 1; an untagged
    concept gets a zero row).
    """
    acts, counts, _ = _tag_inputs(item_acts, item_tags, None)
    return _tag_means(acts, counts)


def _tag_means(acts: np.ndarray, counts: sp.csr_matrix) -> np.ndarray:
    per_tag = np.asarray(counts.sum(axis=0)).ravel()
    p = sp.diags(np.divide(1.0, per_tag, out=np.zeros_like(per_tag), where=per_tag > 0))
    return np.asarray((p @ counts.T.tocsr()) @ acts)


def tfidf(x: np.ndarray) -> np.ndarray:
    """TF-IDF of a (terms x documents) matrix, as in the reference.

    ``tf[a, b] = x[a, b] / sum_a' x[a', b]`` (each document normalised; an all-zero
    document stays zero), ``idf[a] = ln((N + 1) / (df[a] + 1)) + 1`` with ``N`` the number
    of documents and ``df[a] = #{b : x[a, b] != 0}``; returns ``tf * idf[:, None]``.
    """
    x = np.asarray(x, dtype=np.float64)
    column = x.sum(axis=0, keepdims=True)
    tf = np.divide(x, column, out=np.zeros_like(x), where=column > 0)
    df = (x != 0).sum(axis=1)
    idf = np.log((x.shape[1] + 1) / (df + 1)) + 1.0
    return tf * idf[:, None]


def live_units(item_acts: ItemActs, min_items: int = 1) -> np.ndarray:
    """(n_units,) bool: units active (> 0) on at least ``min_items`` items."""
    return (as_activations(item_acts) > 0).sum(axis=0) >= min_items


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
    """

    name: str
    scores: np.ndarray
    tag_names: np.ndarray
    live: np.ndarray

    def __post_init__(self) -> None:
        self.scores = np.asarray(self.scores, dtype=np.float64)
        self.tag_names = np.asarray(self.tag_names, dtype=str)
        self.live = np.asarray(self.live, dtype=bool)
        if self.scores.shape != (len(self.tag_names), len(self.live)):
            raise InputError(
                f"scores have shape {self.scores.shape}, expected "
                f"({len(self.tag_names)}, {len(self.live)})"
            )

    @property
    def n_concepts(self) -> int:
        return int(self.scores.shape[0])

    @property
    def n_units(self) -> int:
        return int(self.scores.shape[1])

    def concept_index(self, concept: str | int) -> int:
        """Row of ``concept``: an exact name, a unique case-insensitive match, or an int.

        Raises:
            UnknownIdError: no such concept; the message lists the closest names.
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
        raise UnknownIdError(unknown_concept_message(name, self.tag_names))

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


def unknown_concept_message(name: str, names: Iterable[str]) -> str:
    """``unknown concept 'x' (among N); close matches: ...`` using difflib, case-blind."""
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
    return f"unknown concept {name!r} (among {len(names)} concepts){hint}"


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
    acts, counts, names = _tag_inputs(item_acts, item_tags, tag_names)
    scores = tfidf(_tag_means(acts, counts).T).T
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
    acts, counts, names = _tag_inputs(item_acts, item_tags, tag_names)
    scores = tfidf(_tag_means(acts, counts))
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
    acts, counts, names = _tag_inputs(item_acts, item_tags, tag_names)
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

    acts, counts, names = _tag_inputs(item_acts, item_tags, tag_names)
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
    acts, counts, names = _tag_inputs(item_acts, item_tags, tag_names)
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


def top_items(item_acts: ItemActs, k: int) -> np.ndarray:
    """(n_units, k) int64: each unit's ``k`` most active items, strongest first (ties:
    lower item index); ``-1`` pads units active on fewer than ``k`` items."""
    acts = as_activations(item_acts)
    k = int(min(k, acts.shape[0]))
    # a stable sort of -acts along items gives "strongest first, lower index on ties"
    order = np.argsort(-acts, axis=0, kind="stable")[:k].T
    active = np.take_along_axis(acts.T, order, axis=1) > 0
    return np.where(active, order, -1).astype(np.int64)


MappingFn = Callable[..., ConceptMapping]

MAPPINGS: dict[str, MappingFn] = {
    "best_characterizes": best_characterizes,
    "most_unique": most_unique,
    "top_item_precision": top_item_precision,
    "activation_auc": activation_auc,
    "activation_correlation": activation_correlation,
}


def get_mapping(name: str) -> MappingFn:
    """The mapping function called ``name``; UnknownIdError lists the known ones."""
    if name in MAPPINGS:
        return MAPPINGS[name]
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
