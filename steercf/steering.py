"""Steering: edit a user's sparse code toward or away from latents, decode, re-rank.

A *knob* is a set of latents with weights (a concept spread over its top-m latents, or a
single latent) and a strength. With ``e`` a user's code and ``s = sum(e)`` its total
activation, the rules are (``w`` sums to 1 over the knob's latents ``N``):

``convex`` (published): for positive strengths ``a_c`` (sum <= 1)
    ``e' = (1 - sum_c a_c) e + s sum_c a_c w_c``
    and for a negative strength ``-a`` on knob ``N``: ``e'_N = (1 - a) e_N - a s w_N``.
    At ``-1`` the knob's latents carry minus the user's whole activation: its decoder
    directions are subtracted, not merely switched off, which removes the concept
    even where other latents also hint at it.
``additive``
    ``e'_N = e_N + a s w_N`` for any finite ``a`` (negative pushes below zero); the rest
    of the code is untouched.

The user's own history always stays masked, and steering never changes the model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

from steercf.errors import InputError
from steercf.models.base import as_user_rows

RULES = ("convex", "additive")
MAX_ADDITIVE = 5.0  # "full strength": five times the user's total activation


@dataclass(frozen=True)
class Knob:
    """Latents to turn together and how hard.

    Attributes:
        latents: (m,) latent ids.
        weights: (m,) non-negative shares, normalised to sum to 1.
        strength: > 0 toward, < 0 away from; ``convex`` takes [-1, 1].
        name: what the knob stands for (a concept name or ``latent:N``).
    """

    latents: tuple[int, ...]
    weights: tuple[float, ...]
    strength: float
    name: str = ""

    @classmethod
    def of(
        cls,
        latents: Sequence[int] | int,
        strength: float,
        weights: Sequence[float] | None = None,
        name: str = "",
    ) -> Knob:
        latents = [int(latents)] if np.isscalar(latents) else [int(n) for n in latents]
        if not latents:
            raise InputError(f"knob {name!r} has no latents")
        if len(set(latents)) != len(latents):
            raise InputError(f"knob {name!r} lists a latent twice: {latents}")
        w = np.ones(len(latents)) if weights is None else np.asarray(weights, dtype=float)
        if w.shape != (len(latents),) or (w < 0).any() or w.sum() <= 0 or not np.isfinite(w).all():
            raise InputError(f"knob {name!r}: weights must be {len(latents)} non-negative numbers")
        if not np.isfinite(strength):
            raise InputError(f"knob {name!r}: strength must be finite, got {strength}")
        return cls(
            tuple(latents),
            tuple((w / w.sum()).tolist()),
            float(strength),
            name or f"latent:{latents[0]}",
        )


def check_knobs(knobs: Sequence[Knob], n_latents: int, rule: str) -> None:
    """Raise InputError for an unknown rule, a latent out of range or a strength outside
    the rule's range."""
    if rule not in RULES:
        raise InputError(f"unknown steering rule {rule!r}; choose one of {', '.join(RULES)}")
    for knob in knobs:
        bad = [n for n in knob.latents if not 0 <= n < n_latents]
        if bad:
            raise InputError(f"knob {knob.name!r}: latent(s) {bad} out of range [0, {n_latents})")
        if rule == "convex" and not -1.0 <= knob.strength <= 1.0:
            raise InputError(
                f"knob {knob.name!r}: convex strength must be in [-1, 1], got {knob.strength}"
            )
        if rule == "additive" and abs(knob.strength) > MAX_ADDITIVE:
            raise InputError(
                f"knob {knob.name!r}: additive strength must be in "
                f"[-{MAX_ADDITIVE}, {MAX_ADDITIVE}], got {knob.strength}"
            )
    if rule == "convex":
        total = sum(k.strength for k in knobs if k.strength > 0)
        if total > 1.0 + 1e-9:
            raise InputError(f"convex strengths toward concepts must sum to <= 1, got {total:.3f}")


def steer_codes(codes: torch.Tensor, knobs: Sequence[Knob], rule: str = "convex") -> torch.Tensor:
    """Apply knobs to a batch of codes (a new tensor; ``codes`` is not modified).

    Args:
        codes: (n_users, n_latents) SAE activations.
        knobs: what to turn; see the module docstring for the rules.
        rule: ``"convex"`` or ``"additive"``.

    Returns:
        (n_users, n_latents) steered codes.
    """
    check_knobs(knobs, codes.shape[1], rule)
    total = codes.sum(dim=1, keepdim=True)  # s, per user
    out = codes.clone()
    if rule == "convex":
        toward = [k for k in knobs if k.strength > 0]
        out.mul_(1.0 - sum(k.strength for k in toward))
        for knob in toward:
            _add(out, knob, knob.strength * total)
        for knob in (k for k in knobs if k.strength < 0):
            a = -knob.strength
            idx = torch.tensor(knob.latents)
            out[:, idx] *= 1.0 - a
            _add(out, knob, -a * total)
    else:
        for knob in knobs:
            _add(out, knob, knob.strength * total)
    return out


def _add(codes: torch.Tensor, knob: Knob, amount: torch.Tensor) -> None:
    """codes[:, N] += amount * w  (amount: (n, 1))."""
    idx = torch.tensor(knob.latents)
    w = torch.tensor(knob.weights, dtype=codes.dtype)
    codes[:, idx] += amount * w


# ---- the steering API on a spliced recommender ---------------------------------------


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
    model,
    user_items,
    knobs: Sequence[Knob],
    rule: str = "convex",
    N: int = 20,
    filter_items: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Steered top-N for a batch of users of a :class:`~steercf.spliced.SplicedRecommender`.

    Args:
        model: a fitted spliced recommender (never modified).
        user_items: (n_users, n_items) histories; they stay masked.
        knobs: latents to turn (see :class:`Knob`, :func:`steer_codes`).

    Returns:
        ``(ids, scores)``, each (n_users, N).
    """
    rows = as_user_rows(user_items, model.n_items_)
    codes, mean, std = model.encode(rows)
    steered = steer_codes(codes, knobs, rule)
    return model.recommend_from_codes(steered, mean, std, rows, N, filter_items)


def compare(
    model,
    user_items,
    knobs: Sequence[Knob],
    rule: str = "convex",
    N: int = 20,
    filter_items: np.ndarray | None = None,
) -> SteeredRecommendations:
    """Plain and steered lists side by side (one encode, two decodes)."""
    rows = as_user_rows(user_items, model.n_items_)
    codes, mean, std = model.encode(rows)
    before = model.recommend_from_codes(codes, mean, std, rows, N, filter_items)
    after = model.recommend_from_codes(
        steer_codes(codes, knobs, rule), mean, std, rows, N, filter_items
    )
    return SteeredRecommendations(*before, *after, tuple(knobs), rule)


def latent_contributions(
    model, codes: torch.Tensor, std: torch.Tensor, items: np.ndarray
) -> torch.Tensor:
    """How much each latent adds to each listed item's score, for one user.

    The SAE decoder and the CFAE decoders are linear, so an item's score splits exactly
    into one term per active latent, ``e_n * std * dec(W_dec[n])_i``, plus a bias term
    from the SAE's decoder bias and the user's embedding mean.

    Args:
        codes: (n_latents,) the user's (possibly steered) code.
        std: (1,) or scalar: the user's standardisation scale from ``model.encode``.
        items: (m,) item indices.

    Returns:
        (n_latents, m) contributions; zero rows for inactive latents.
    """
    active = torch.nonzero(codes).flatten()
    out = torch.zeros(codes.shape[0], len(items))
    if len(active) == 0:
        return out
    directions = model.sae_.W_dec[active] * (codes[active, None] * std.reshape(1, 1))
    with torch.no_grad():
        per_item = model.base.decode(directions)  # (n_active, n_items)
    out[active] = per_item[:, torch.as_tensor(np.asarray(items, dtype=np.int64))]
    return out


# ---- concepts as knobs ------------------------------------------------------------------


DECODER_EFFECT = "decoder_effect"
DECODER_FIT = "decoder_fit"
STEERING_MAPPINGS = (DECODER_EFFECT, DECODER_FIT)  # mappings by what a latent does to scores


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
    from steercf.concepts import ConceptMapping
    from steercf.concepts.report import sae_item_activations
    from steercf.data import ItemTags

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
    with torch.no_grad():
        effects = model.base.decode(model.sae_.W_dec).double().numpy()  # (n_latents, n_items)
    has = (counts > 0).astype(np.float64).tocsc()
    n_items = effects.shape[1]
    share = np.asarray(has.sum(axis=0)).ravel() / n_items  # (n_tags,)
    mean, std = effects.mean(axis=1), effects.std(axis=1)  # (n_latents,)
    covariance = np.asarray(has.T @ effects.T) / n_items - share[:, None] * mean[None, :]
    denominator = np.sqrt(share * (1 - share))[:, None] * std[None, :]
    scores = np.divide(
        covariance, denominator, out=np.zeros_like(covariance), where=denominator > 1e-12
    )
    live = (sae_item_activations(model) > 0).any(axis=0)
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
    from scipy.optimize import nnls

    from steercf.concepts import ConceptMapping

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

    def __init__(self, mapping, top_latents: int = 1) -> None:
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
        mapping: str = "best_characterizes",
        train_users: np.ndarray | None = None,
        top_latents: int = 1,
    ) -> ConceptKnobs:
        """Build the mapping of ``model``'s latents to the ``source`` tags of ``data``."""
        from steercf.concepts import concept_tags, map_concepts
        from steercf.concepts.report import sae_item_activations

        tags = concept_tags(data, source, train_users)
        if mapping == DECODER_EFFECT:
            return cls(decoder_effect(model, tags), top_latents)
        if mapping == DECODER_FIT:
            return cls(decoder_fit(model, tags), top_latents)
        return cls(map_concepts(sae_item_activations(model), tags, mapping), top_latents)

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

    def parse(self, spec: str, default_strength: float = 0.3) -> Knob:
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
    model,
    user_items,
    items: Sequence[int],
    knobs: Sequence[Knob] = (),
    rule: str = "convex",
    top: int = 3,
    codes: torch.Tensor | None = None,
    std: torch.Tensor | None = None,
) -> list[list[tuple[int, float]]]:
    """For each listed item, the latents that add most to its score for this user
    (after applying ``knobs``, so a steered list is explained by the steered code).

    Args:
        user_items: (1, n_items) the user's history (ignored when ``codes`` is given).
        items: (m,) item indices to explain.
        codes, std: (1, n_latents) and (1, 1) from ``model.encode``, to skip encoding the
            history again (an app re-ranking on every slider move keeps them).

    Returns:
        per item, ``[(latent, contribution), ...]`` largest first (positive ones only).
    """
    if codes is None or std is None:
        codes, _, std = model.encode(user_items)
    if knobs:
        codes = steer_codes(codes, knobs, rule)
    contributions = latent_contributions(model, codes[0], std[0], np.asarray(items))
    values, latents = torch.topk(contributions, min(top, contributions.shape[0]), dim=0)
    return [
        [(int(n), float(v)) for n, v in zip(latents[:, j], values[:, j], strict=True) if v > 0]
        for j in range(contributions.shape[1])
    ]
