"""The explorer's view of a spliced recommender: users, steered lists, explanations and
the latent browser, as JSON-ready dicts (the web layer only validates and serialises).

Everything that does not depend on a request is computed once when the explorer is
built (item activations, the users' sparse codes for the histograms, unit decoder
directions, title search keys), so a steering request is one user's encode, two
decodes and the explanations.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from steercf.concepts import (
    LatentLabels,
    audience_activations,
    available_sources,
    concept_display_names,
    concept_tags,
    label_model,
    load_labels,
)
from steercf.concepts.mapping import MAPPINGS
from steercf.data import InteractionData, ItemTags
from steercf.errors import InputError, UnknownIdError
from steercf.evaluation import split_users
from steercf.explorer.cache import BuildCache
from steercf.explorer.latent_browser import LatentBrowser
from steercf.explorer.latents import latent_id
from steercf.models import SparseEncoding, SplicedRecommender, load_model
from steercf.ranking import check_n, top_n
from steercf.runs import resolve_data
from steercf.steering import (
    DEFAULT_MAPPING,
    DEFAULT_RULE,
    DEFAULT_TOP_LATENTS,
    RULES,
    STEERING_MAPPINGS,
    ConceptKnobs,
    Knob,
    SteeredRecommendations,
    concept_anchor_items,
    explain_items,
    steer_encoding,
    steering_map,
    user_concepts,
)

MAX_HISTORY_SHOWN = 40
MAX_PROFILE_ITEMS = 2000
MAX_N = 100
PLAIN_CACHE = 64  # users / profiles whose unsteered answer is kept
# concept mappings kept besides the default one (each about 1 MB on MovieLens 100K, more
# for larger catalogues and tag sets; a dropped one is rebuilt when asked for again)
KNOB_CACHE = 8


@dataclass(frozen=True)
class _Plain:
    """One history's unsteered answer: its encoding (from ``model.encode``), the plain
    list ``ids``/``scores`` (1, n), its explanations and the JSON summary (history,
    concepts, active latents)."""

    encoding: SparseEncoding
    ids: np.ndarray
    scores: np.ndarray
    why: list
    summary: dict


@dataclass(frozen=True)
class KnobSpec:
    """One slider: a concept (by name) or a latent (by id) and a signed strength."""

    strength: float
    concept: str | None = None
    latent: int | None = None


class RecommenderExplorer(LatentBrowser):
    """Read, steer and explain a spliced recommender for the web app.

    Args:
        model: a fitted :class:`~steercf.models.spliced.SplicedRecommender`.
        data: the data set it was trained on (titles, tags, user histories).
        labels: latent labels (default: computed from ``data``).
        seed: the split seed the model was trained under (user tags come from its
            training users only).
        source, mapping, top_latents: defaults of the concept sliders.
    """

    kind = "recommender"

    def __init__(
        self,
        model: SplicedRecommender,
        data: InteractionData,
        labels: LatentLabels | None = None,
        seed: int = 0,
        source: str | None = None,
        mapping: str = DEFAULT_MAPPING,
        top_latents: int = DEFAULT_TOP_LATENTS,
    ) -> None:
        if not isinstance(model, SplicedRecommender):
            raise InputError(
                f"the explorer needs a spliced model, got {type(model).__name__} "
                "(make one with `steercf train-sae`)"
            )
        data = resolve_data(model, data)
        self.model, self.data = model, data
        self.split = split_users(data.matrix, seed=seed)
        self.sources = available_sources(data)
        if not self.sources:
            raise InputError(f"data set {data.name!r} has no concept source (genres, kg, tags)")
        self.source = source or self.sources[0]
        self._check_options(self.source, mapping, top_latents)
        self.mapping, self.top_latents = mapping, top_latents
        # each item's mean code over its training users: the top items of the labels and
        # of the latent browser, computed once for both
        audience = audience_activations(model, data.matrix[self.split.train_users])
        self.labels = labels or label_model(
            model, data, train_users=self.split.train_users, audience=audience
        )
        if self.labels.n_latents != model.n_latents:
            raise InputError(
                f"labels describe {self.labels.n_latents} latents, the model has {model.n_latents}"
            )
        self._titles = np.asarray(data.titles(np.arange(data.n_items)), dtype=object)
        self._folded_titles = [t.casefold() for t in self._titles]
        self._popularity = np.asarray(data.matrix.sum(axis=0)).ravel()
        genres = data.tags.get("genres")
        # per-item display tags and id lookups, once: slicing CSR rows per listed item
        # and pandas look-ups per request cost more than the steering itself
        self._display_tags = [
            genres.tags_of(i) if genres is not None else [] for i in range(data.n_items)
        ]
        self._user_keys = np.array([str(u) for u in data.user_ids], dtype=object)
        self._user_rows = {key: row for row, key in enumerate(self._user_keys)}
        self._item_columns = {str(item): col for col, item in enumerate(data.item_ids)}
        self._history_sizes = np.diff(data.matrix.indptr)
        # concept mappings by (source, mapping, top_latents): the default settings stay,
        # KNOB_CACHE others are kept; each is built outside the others' way
        self._knobs: BuildCache[ConceptKnobs] = BuildCache(
            KNOB_CACHE, pinned=((self.source, self.mapping, int(self.top_latents)),)
        )
        # per source: its (n_items, n_tags) training-user tags and readable concept names
        self._sources: BuildCache[tuple[ItemTags, list[str]]] = BuildCache(len(self.sources))
        self._plain_cache: BuildCache[_Plain] = BuildCache(PLAIN_CACHE)
        self._precompute(audience)
        self.knobs_for(self.source, self.mapping, self.top_latents)  # fail early, warm cache

    # ---- construction ----------------------------------------------------------------
    @classmethod
    def from_dir(
        cls,
        model_dir: str | Path,
        data: InteractionData | str | Path | None = None,
        **options: Any,
    ) -> RecommenderExplorer:
        """Load a spliced model directory, its data set and its stored labels."""
        model = load_model(model_dir)
        if not isinstance(model, SplicedRecommender):
            raise InputError(
                f"{model_dir} holds a {model.kind} model; the explorer needs a spliced model "
                "(make one with `steercf train-sae`) or a text model (`steercf text train`)"
            )
        data = resolve_data(model, data)
        labels = load_labels(model_dir, missing_ok=True)
        seed = int((getattr(model, "metadata_", {}) or {}).get("seed", 0))
        return cls(model, data, labels=labels, seed=options.pop("seed", seed), **options)

    def _check_options(self, source: str, mapping: str, top_latents: int) -> None:
        if source not in self.sources:
            raise UnknownIdError(
                f"unknown concept source {source!r}; this data set has {', '.join(self.sources)}"
            )
        if mapping not in (*MAPPINGS, *STEERING_MAPPINGS):
            raise UnknownIdError(
                f"unknown mapping {mapping!r}; choose one of "
                f"{', '.join((*MAPPINGS, *STEERING_MAPPINGS))}"
            )
        if not 1 <= int(top_latents) <= 64:
            raise InputError(f"latents per concept must be in [1, 64], got {top_latents}")

    def knobs_for(self, source: str, mapping: str, top_latents: int) -> ConceptKnobs:
        """The concept -> latents resolution for these settings (built once, cached)."""
        self._check_options(source, mapping, top_latents)
        top_latents = int(top_latents)
        return self._knobs.get(
            (source, mapping, top_latents),
            lambda: ConceptKnobs.for_model(
                self.model, self.data, source, mapping, self.split.train_users, top_latents
            ),
        )

    # ---- small helpers -----------------------------------------------------------------
    def _item(self, index: int, **extra: Any) -> dict[str, Any]:
        return {
            "index": int(index),
            "id": str(self.data.item_ids[index]),
            "title": str(self._titles[index]),
            "tags": self._display_tags[index],
            **extra,
        }

    def _label(self, latent: int) -> str:
        return self.labels[int(latent)].text

    def _latent_index(self, latent: Any) -> int:
        return latent_id(latent, self.model.n_latents)

    def history(self, user: str | None = None, items: Sequence[Any] | None = None) -> sp.csr_matrix:
        """(1, n_items) history of a data set user, or a profile built from item ids.

        Raises:
            UnknownIdError: unknown user or item id; InputError: neither or both given,
                or an empty / oversized profile.
        """
        if (user is None) == (items is None):
            raise InputError("give either a user id or a list of item ids (a profile)")
        if user is not None:
            row = self._user_rows.get(str(user))
            if row is None:  # the data set's own look-up names the problem
                row = int(np.atleast_1d(self.data.user_index(np.asarray([user], dtype=object)))[0])
            return self.data.matrix[row]
        if not items:
            raise InputError("the profile is empty: add at least one item")
        if len(items) > MAX_PROFILE_ITEMS:
            raise InputError(f"a profile holds at most {MAX_PROFILE_ITEMS} items, got {len(items)}")
        known = [self._item_columns.get(str(item)) for item in items]
        unknown = [item for item, column in zip(items, known, strict=True) if column is None]
        if unknown:  # the data set's own look-up raises, naming them
            self.data.item_index(np.asarray(unknown, dtype=object))
        columns = np.unique(np.asarray(known, dtype=np.int64))
        return sp.csr_matrix(
            (np.ones(len(columns), np.float32), (np.zeros(len(columns), int), columns)),
            shape=(1, self.data.n_items),
        )

    def make_knobs(
        self, specs: Sequence[KnobSpec], source: str, mapping: str, top_latents: int, rule: str
    ) -> list[Knob]:
        """Knobs of the non-zero sliders (a concept twice or a latent twice is an error)."""
        if rule not in RULES:
            raise InputError(f"unknown steering rule {rule!r}; choose one of {', '.join(RULES)}")
        resolver = None
        knobs, names = [], set()
        for spec in specs:
            if (spec.concept is None) == (spec.latent is None):
                raise InputError("each knob names either a concept or a latent")
            if not np.isfinite(spec.strength):
                raise InputError("knob strengths must be finite numbers")
            if spec.strength == 0:
                continue  # a slider at rest
            if spec.latent is not None:
                latent = self._latent_index(spec.latent)
                knob = Knob.of(latent, spec.strength, name=f"latent:{latent}")
            else:
                resolver = resolver or self.knobs_for(source, mapping, top_latents)
                knob = resolver.knob(spec.concept, spec.strength)
            if knob.name in names:
                raise InputError(f"knob {knob.name!r} is given twice")
            names.add(knob.name)
            knobs.append(knob)
        return knobs

    # ---- the API -------------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        """What the page needs to draw itself."""
        test_users = self.data.user_ids[self.split.test_users[:12]]
        return {
            "kind": self.kind,
            "dataset": self.data.name,
            "model": f"{self.model.base.describe()} + SAE",
            "n_users": self.data.n_users,
            "n_items": self.data.n_items,
            "n_latents": self.model.n_latents,
            "n_live": len(self.labels.live()),
            "sources": self.sources,
            "mappings": [*MAPPINGS, *STEERING_MAPPINGS],
            "rules": list(RULES),
            "defaults": {
                "source": self.source,
                "mapping": self.mapping,
                "top_latents": self.top_latents,
                "rule": DEFAULT_RULE,
                "n": 20,
                "user": str(test_users[0]),
            },
            "example_users": [str(u) for u in test_users],
            "strength_range": {"convex": [-1.0, 1.0], "additive": [-5.0, 5.0]},
        }

    def concepts(self, source: str, query: str = "", limit: int = 50) -> dict[str, Any]:
        """Concept names of a source (matching ``query``, case-blind), most items first."""
        resolver = self.knobs_for(source, self.mapping, self.top_latents)
        names = resolver.mapping.tag_names
        # a concept is a slider only when some live latent is linked to it
        usable = (resolver.mapping.scores[:, resolver.mapping.live] > 0).any(axis=1)
        _, display = self._source(source)
        folded = query.casefold()
        chosen = [
            i
            for i, (n, ok) in enumerate(zip(names, usable, strict=True))
            if ok and (folded in n.casefold() or folded in display[i].casefold())
        ]
        return {
            "source": source,
            "total": len(chosen),
            "concepts": [str(names[i]) for i in chosen[:limit]],
            # what a person reads ("director of Pulp Fiction (1994), ..."), same order
            "display": [display[i] for i in chosen[:limit]],
        }

    def users(self, query: str = "", limit: int = 20) -> dict[str, Any]:
        """User ids starting with ``query`` (all users when empty), in data set order."""
        hits = [i for i, key in enumerate(self._user_keys) if key.startswith(query)]
        return {
            "total": len(hits),
            "users": [
                {"id": str(self._user_keys[i]), "n_items": int(self._history_sizes[i])}
                for i in hits[:limit]
            ],
        }

    def search_items(self, query: str, limit: int = 20) -> dict[str, Any]:
        """Items whose title contains ``query`` (case-blind), most popular first."""
        folded = query.casefold().strip()
        if not folded:
            raise InputError("type part of a title to search for")
        hits = np.array([i for i, t in enumerate(self._folded_titles) if folded in t], dtype=int)
        hits = hits[np.argsort(-self._popularity[hits], kind="stable")] if hits.size else hits
        return {
            "total": int(hits.size),
            "items": [self._item(i, popularity=int(self._popularity[i])) for i in hits[:limit]],
        }

    def recommend(
        self,
        user: str | None = None,
        items: Sequence[Any] | None = None,
        knobs: Sequence[KnobSpec] = (),
        rule: str = DEFAULT_RULE,
        n: int = 20,
        source: str | None = None,
        mapping: str | None = None,
        top_latents: int | None = None,
        explain: bool = True,
    ) -> dict[str, Any]:
        """Plain and steered top-``n`` of one user (or profile), with explanations.

        Returns:
            ``history``, ``concepts`` (the user's top concepts), ``latents`` (active
            latents with labels), ``knobs`` (what was turned, resolved to latents),
            ``before`` / ``after`` (items with scores, ranks and, with ``explain``, the
            latents adding most to each score), ``entered`` / ``left`` (item indices).
        """
        n = check_n(n, "n")  # the one rule for list lengths: 2.5, True or "5" is refused
        if n > MAX_N:
            raise InputError(f"n must be in [1, {MAX_N}], got {n}")
        source = source or self.source
        mapping = mapping or self.mapping
        top_latents = top_latents or self.top_latents
        history = self.history(user, items)
        resolved = self.make_knobs(knobs, source, mapping, top_latents, rule)
        plain = self._plain(history, n, (source, mapping, top_latents), explain)
        if resolved:  # the same steps as steering.compare, on the cached code
            steered = steer_encoding(plain.encoding, resolved, rule)
            after_ids, after_scores = top_n(self.model.decode(steered), history, n)
            why_after = (
                explain_items(
                    self.model,
                    history,
                    after_ids[0],
                    resolved,
                    rule,
                    encoding=plain.encoding,
                    shares=True,
                )
                if explain
                else [[] for _ in after_ids[0]]
            )
        else:
            after_ids, after_scores, why_after = plain.ids, plain.scores, plain.why
        result = SteeredRecommendations(
            plain.ids, plain.scores, after_ids, after_scores, tuple(resolved), rule
        )
        return {
            "user": user,
            **plain.summary,
            "knobs": [
                {"name": k.name, "strength": k.strength, "latents": list(k.latents)}
                for k in resolved
            ],
            "rule": rule,
            **self._lists(result, plain.why, why_after),
        }

    def steering_map(
        self,
        knobs: Sequence[KnobSpec],
        rule: str = DEFAULT_RULE,
        source: str | None = None,
        mapping: str | None = None,
        top_latents: int | None = None,
        anchors_per_knob: int = 12,
    ) -> dict[str, Any]:
        """The test users before and after steering by ``knobs``, with anchor items, on
        one 2-D map (:func:`steercf.steering.steering_map`).

        Anchors: a concept knob's most popular items carrying the concept; a latent
        knob's items it lifts most. Returns the map's lists (``before``, ``after``,
        ``anchors``, ``toward_anchors``, ``projection``), ``items`` (the anchors) and
        ``moved_toward`` (share of users steering moved toward the anchors).

        Raises:
            InputError: no knob turned.
        """
        source = source or self.source
        mapping = mapping or self.mapping
        top_latents = top_latents or self.top_latents
        resolved = self.make_knobs(knobs, source, mapping, top_latents, rule)
        if not resolved:
            raise InputError("turn at least one knob to map where it moves the users")
        anchors = []
        for spec in knobs:
            if spec.strength == 0:
                continue
            if spec.concept is not None:
                tags, _ = self._source(source)
                resolver = self.knobs_for(source, mapping, top_latents)
                column = resolver.mapping.concept_index(spec.concept)
                anchors.append(
                    concept_anchor_items(tags.matrix, column, self._popularity, anchors_per_knob)
                )
            else:
                effects = self.model.latent_item_effects(
                    np.array([self._latent_index(spec.latent)])
                )
                anchors.append(effects[0].topk(anchors_per_knob).indices.numpy())
        items = np.unique(np.concatenate(anchors))
        rows = self.data.matrix[self.split.test_users]
        rows = rows[np.diff(rows.indptr) > 0]
        atlas = steering_map(self.model, rows, resolved, items, rule)
        return {
            **atlas.to_dict(),
            "items": [self._item(i) for i in items],
            "moved_toward": float(np.mean(atlas.toward_anchors > 0)),
            "n_users": int(rows.shape[0]),
        }

    def _source(self, source: str) -> tuple[ItemTags, list[str]]:
        """``(tags, names)`` of ``source``: its (n_items, n_tags) tags from the training
        users (the columns of the steering mappings) and the concepts' readable names
        (built once, cached)."""

        def build() -> tuple[ItemTags, list[str]]:
            tags = concept_tags(self.data, source, self.split.train_users)
            return tags, list(concept_display_names(self.data, source, tags))

        return self._sources.get(source, build)

    def _lists(
        self, result: SteeredRecommendations, why_before: list, why_after: list
    ) -> dict[str, Any]:
        """``before`` / ``after`` items (rank, score, the other list's rank, reasons) and
        what ``entered`` / ``left`` the list, for one user."""
        before, after = result.before_ids[0], result.after_ids[0]
        rank_in = {
            "before": {int(i): r + 1 for r, i in enumerate(before)},
            "after": {int(i): r + 1 for r, i in enumerate(after)},
        }

        def listed(ids, scores, why, other: str) -> list[dict[str, Any]]:
            return [
                self._item(
                    i,
                    rank=r + 1,
                    score=float(v),
                    **{f"{other}_rank": rank_in[other].get(int(i))},
                    why=self._why(w),
                )
                for r, (i, v, w) in enumerate(zip(ids, scores, why, strict=True))
            ]

        return {
            "before": listed(before, result.before_scores[0], why_before, "after"),
            "after": listed(after, result.after_scores[0], why_after, "before"),
            "entered": result.entered(0),
            "left": result.left(0),
        }

    def _plain(
        self, history: sp.csr_matrix, n: int, concepts_by: tuple[str, str, int], explain: bool
    ) -> _Plain:
        """The unsteered part of an answer, cached: while a slider moves, only the
        steered list changes, so the user's code, plain list, concepts and explanations
        are computed once per (history, settings) instead of on every request."""
        key = (history.indices.tobytes(), n, concepts_by, explain)
        return self._plain_cache.get(
            key, lambda: self._build_plain(history, n, concepts_by, explain)
        )

    def _build_plain(
        self, history: sp.csr_matrix, n: int, concepts_by: tuple[str, str, int], explain: bool
    ) -> _Plain:
        encoding = self.model.encode(history)
        ids, scores = top_n(self.model.decode(encoding), history, n)
        why = (
            explain_items(self.model, history, ids[0], encoding=encoding, shares=True)
            if explain
            else [[] for _ in ids[0]]
        )
        codes = encoding.codes
        concept_map = self.knobs_for(*concepts_by).mapping
        values, latents = codes[0].topk(min(12, codes.shape[1]))
        seen = history.indices[np.argsort(-self._popularity[history.indices], kind="stable")]
        summary = {
            "history": {
                "n": int(history.nnz),
                "items": [self._item(i) for i in seen[:MAX_HISTORY_SHOWN]],
            },
            "concepts": [
                {"concept": c, "weight": w}
                for c, w in user_concepts(self.model, history, concept_map, top=8)
            ],
            "latents": [
                {"latent": int(nid), "activation": float(value), "label": self._label(int(nid))}
                for nid, value in zip(latents.tolist(), values.tolist(), strict=True)
                if value > 0
            ],
        }
        return _Plain(encoding, ids, scores, why, summary)

    def _why(self, reasons: Sequence[tuple[int, float, float]]) -> list[dict[str, Any]]:
        """The reasons of one item: latent, contribution, its share of what the user's
        latents add to the score, and the latent's label."""
        return [
            {"latent": nid, "contribution": value, "share": share, "label": self._label(nid)}
            for nid, value, share in reasons
        ]
