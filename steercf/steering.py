"""Steering: edit a user's sparse code toward or away from latents, decode, re-rank.

The knobs and their rules (``convex``, ``additive``) live in the sparse core
(:mod:`steercf.sae.steer`, re-exported here); this module applies them to a spliced
recommender, maps concepts to knobs and explains scores. The user's own history always
stays masked, and steering never changes the model.

:func:`score_rows` and :func:`recommend_rows` are the one path from user rows to
(optionally steered) scores and top-N lists: the models' own ``recommend``, batch
scoring, the implicit and RecBole wrappers, the explorer and the CLI all go through them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from scipy.optimize import nnls

from steercf.concepts import ConceptMapping, concept_tags, map_concepts
from steercf.data import ItemTags
from steercf.errors import InputError
from steercf.models.base import CFAE, Recommender, as_user_rows
from steercf.models.spliced import SparseEncoding, SplicedRecommender
from steercf.ranking import top_n
from steercf.sae.steer import MAX_ADDITIVE, RULES, Knob, check_knobs, steer_codes

__all__ = [
    "MAX_ADDITIVE",
    "RULES",
    "ConceptKnobs",
    "Knob",
    "SteeredRecommendations",
    "check_knobs",
    "compare",
    "decoder_effect",
    "decoder_fit",
    "explain_items",
    "latent_contributions",
    "recommend_rows",
    "score_rows",
    "steer",
    "steer_codes",
    "steer_encoding",
    "user_concepts",
]

SCORE_PRECISIONS = ("fp32", "bf16")

DECODER_EFFECT = "decoder_effect"
DECODER_FIT = "decoder_fit"
STEERING_MAPPINGS = (DECODER_EFFECT, DECODER_FIT)  # mappings by what a latent does to scores
# The defaults of every steering entry point (Python, CLI, explorer): the steering-side
# mapping (what a latent does to scores) with a concept spread over 8 latents, which
# steers more smoothly than one.
DEFAULT_MAPPING = DECODER_EFFECT
DEFAULT_TOP_LATENTS = 8
DEFAULT_STRENGTH = 0.3  # a bare "+Concept": 0.3 of the user's total activation


def require_steerable(model: Recommender, knobs: Sequence[Knob], rule: str) -> None:
    """Raise InputError unless ``model`` has latents the ``knobs`` can turn under ``rule``."""
    if not isinstance(model, SplicedRecommender):
        raise InputError(
            "steering needs a model with an SAE spliced in (SplicedRecommender), "
            f"got {type(model).__name__}"
        )
    check_knobs(knobs, model.n_latents, rule)


def steer_encoding(
    encoding: SparseEncoding, knobs: Sequence[Knob], rule: str = "convex"
) -> SparseEncoding:
    """The encoding with ``knobs`` applied to its codes (unchanged without knobs)."""
    if not knobs:
        return encoding
    return encoding.with_codes(steer_codes(encoding.codes, knobs, rule))


def score_rows(
    model: Recommender,
    rows: Any,
    knobs: Sequence[Knob] = (),
    rule: str = "convex",
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
                device = next(iter(model._tensors().values())).device
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
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
    rule: str = "convex",
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
    rule: str = "convex",
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
    rule: str = "convex",
    N: int = 20,
    filter_items: np.ndarray | None = None,
) -> SteeredRecommendations:
    """Plain and steered lists side by side (one encode, two decodes)."""
    require_steerable(model, knobs, rule)
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


# ---- concepts as knobs ------------------------------------------------------------------


def decoder_effect(model, item_tags, tag_names=None):
    """Concept <-> latent mapping by what a latent *does* to recommendations.

    The input-side mappings (:data:`steercf.concepts.MAPPINGS`) ask which items make a
    latent fire. Steering needs the output side: turning latent ``n`` up adds
    ``u_n = dec(W_dec[n])`` to every item's score (both decoders are linear). The score
    of concept ``t`` for latent ``n`` is the correlation over items between ``u_n`` and
    membership in ``t``: high when the latent lifts the concept's items above the rest.

    Args:
        model: a fitted spliced recommender.
        item_tags: ItemTags (n_items, n_tags) or a CSR matrix with ``tag_names``.

    Returns:
        a :class:`steercf.concepts.ConceptMapping` named ``"decoder_effect"``; units are
        live when they fire on some single-item history (as for the other mappings).
    """
    return _decoder_effect_parts(model, item_tags, tag_names)[0]


def _decoder_effect_parts(model, item_tags, tag_names=None):
    """:func:`decoder_effect` and what it is computed from: ``(mapping, effects
    (n_latents, n_items) float64, has (n_items, n_tags) CSC 0/1 membership)``."""
    if isinstance(item_tags, ItemTags):
        counts, names = item_tags.matrix, item_tags.names
    else:
        counts = sp.csr_matrix(item_tags)
        names = np.asarray(
            tag_names if tag_names is not None else [f"tag{i}" for i in range(counts.shape[1])]
        )
    if counts.shape[0] != model.n_items_:
        raise InputError(
            f"{counts.shape[0]} item tag rows but the model scores {model.n_items_} items"
        )
    effects = model.latent_item_effects().double().numpy()  # (n_latents, n_items)
    has = (counts > 0).astype(np.float64).tocsc()
    n_items = effects.shape[1]
    share = np.asarray(has.sum(axis=0)).ravel() / n_items  # (n_tags,)
    mean, std = effects.mean(axis=1), effects.std(axis=1)  # (n_latents,)
    covariance = np.asarray(has.T @ effects.T) / n_items - share[:, None] * mean[None, :]
    denominator = np.sqrt(share * (1 - share))[:, None] * std[None, :]
    scores = np.divide(
        covariance, denominator, out=np.zeros_like(covariance), where=denominator > 1e-12
    )
    live = (model.item_codes() > 0).any(dim=0).numpy()
    mapping = ConceptMapping(DECODER_EFFECT, scores, np.asarray(names, dtype=str), live)
    return mapping, effects, has


def decoder_fit(model, item_tags, tag_names=None, candidates: int = 128):
    """Concept <-> latent mapping by the mix of latents that best lifts a concept's items.

    :func:`decoder_effect` scores each latent alone. A knob turns several at once, so
    this mapping fits the mix: for concept ``t``, non-negative weights ``c`` over its
    ``candidates`` best :func:`decoder_effect` latents minimising
    ``|| sum_n c_n (u_n - mean u_n) - (m_t - mean m_t) ||`` over items, where ``u_n`` is
    latent ``n``'s effect on every item's score and ``m_t`` the concept's membership
    indicator (scipy's NNLS). The score of (t, n) is ``c_n`` (0 outside the fit), so a
    knob over the top-m latents steers along the fitted mix.

    Args:
        model: a fitted spliced recommender.
        item_tags: ItemTags (n_items, n_tags) or a CSR matrix with ``tag_names``.
        candidates: latents per concept entering the fit (bounds its cost).

    Returns:
        a :class:`steercf.concepts.ConceptMapping` named ``"decoder_fit"``.
    """
    if candidates < 1:
        raise InputError(f"candidates must be >= 1, got {candidates}")
    effect, effects, has = _decoder_effect_parts(model, item_tags, tag_names)
    effects = effects - effects.mean(axis=1, keepdims=True)
    scores = np.zeros_like(effect.scores)
    live = np.flatnonzero(effect.live)
    for t in range(scores.shape[0]):
        member = has[:, t].toarray().ravel()
        if member.min() == member.max() or not len(live):
            continue  # a concept on every item or on none has nothing to separate
        row = effect.scores[t, live]
        top = live[np.lexsort((live, -row))][:candidates]
        top = top[effect.scores[t, top] > 0]
        if len(top):
            scores[t, top], _ = nnls(effects[top].T, member - member.mean())
    return ConceptMapping(DECODER_FIT, scores, effect.tag_names, effect.live)


class ConceptKnobs:
    """Turns concept names into knobs through a concept -> latent mapping.

    Args:
        mapping: a :class:`steercf.concepts.ConceptMapping` of the model's latents.
        top_latents: spread each concept over its best ``m`` latents, weighted by their
            (positive) mapping scores; 1 is the published single-latent steering.
    """

    def __init__(self, mapping, top_latents: int = DEFAULT_TOP_LATENTS) -> None:
        if top_latents < 1:
            raise InputError(f"top_latents must be >= 1, got {top_latents}")
        self.mapping = mapping
        self.top_latents = top_latents

    @classmethod
    def for_model(
        cls,
        model,
        data,
        source: str = "genres",
        mapping: str = DEFAULT_MAPPING,
        train_users: np.ndarray | None = None,
        top_latents: int = DEFAULT_TOP_LATENTS,
    ) -> ConceptKnobs:
        """Build the mapping of ``model``'s latents to the ``source`` tags of ``data``."""
        tags = concept_tags(data, source, train_users)
        if mapping == DECODER_EFFECT:
            return cls(decoder_effect(model, tags), top_latents)
        if mapping == DECODER_FIT:
            return cls(decoder_fit(model, tags), top_latents)
        return cls(map_concepts(model.item_codes().numpy(), tags, mapping), top_latents)

    def knob(self, concept: str | int, strength: float) -> Knob:
        """The knob of one concept (UnknownIdError with close matches if unknown)."""
        ranked = self.mapping.latents_for(concept, top=self.top_latents)
        # Only units that lift the concept belong to its knob: with a wide spread, units
        # with a zero or negative link would otherwise be zeroed by a convex "away" too.
        ranked = [(n, score) for n, score in ranked if score > 0] or ranked[:1]
        if not ranked:
            raise InputError(f"concept {concept!r} has no live latent to steer")
        latents = [n for n, _ in ranked]
        scores = np.array([max(score, 0.0) for _, score in ranked])
        weights = scores if scores.sum() > 0 else None
        name = str(self.mapping.tag_names[self.mapping.concept_index(concept)])
        return Knob.of(latents, strength, weights, name=name)

    def parse(self, spec: str, default_strength: float = DEFAULT_STRENGTH) -> Knob:
        """Parse a knob spec: ``+Horror`` (toward, default strength), ``-Comedy`` (away,
        full removal), ``+Horror:0.2``, ``-Comedy:0.5``; ``latent:N`` instead of a
        concept name steers one latent."""
        spec = spec.strip()
        if not spec or spec[0] not in "+-":
            raise InputError(f"knob {spec!r} must start with + (toward) or - (away)")
        sign = 1.0 if spec[0] == "+" else -1.0
        body = spec[1:]
        strength = default_strength if sign > 0 else 1.0
        head, _, tail = body.rpartition(":")
        if head and _is_number(tail):
            body, strength = head, float(tail)
        if strength < 0:
            raise InputError(f"knob {spec!r}: give the direction with +/- and a positive strength")
        if body.startswith("latent:"):
            latent = body.split(":", 1)[1]
            if not latent.isdigit():
                raise InputError(f"knob {spec!r}: latent id must be an integer")
            return Knob.of(int(latent), sign * strength, name=body)
        return self.knob(body, sign * strength)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


# ---- explanations -------------------------------------------------------------------------


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


def explain_items(
    model: SplicedRecommender,
    user_items: Any,
    items: Sequence[int],
    knobs: Sequence[Knob] = (),
    rule: str = "convex",
    top: int = 3,
    encoding: SparseEncoding | None = None,
) -> list[list[tuple[int, float]]]:
    """For each listed item, the latents that add most to its score for this user
    (after applying ``knobs``, so a steered list is explained by the steered code).

    Args:
        user_items: (1, n_items) the user's history (ignored when ``encoding`` is given).
        items: (m,) item indices to explain.
        encoding: the user's encoding from ``model.encode``, to skip encoding the history
            again (an app re-ranking on every slider move keeps it).

    Returns:
        per item, ``[(latent, contribution), ...]`` largest first (positive ones only).
    """
    if encoding is None:
        encoding = model.encode(user_items)
    encoding = steer_encoding(encoding[0], knobs, rule)
    contributions = model.latent_contributions(encoding, np.asarray(items))
    values, latents = torch.topk(contributions, min(top, contributions.shape[0]), dim=0)
    return [
        [(int(n), float(v)) for n, v in zip(latents[:, j], values[:, j], strict=True) if v > 0]
        for j in range(contributions.shape[1])
    ]
