"""Concepts as knobs: map a concept to the latents that steer toward it.

``decoder_effect`` and ``decoder_fit`` read what a latent *does* to the item scores (the
steering-side view); the input-side mappings of :mod:`steercf.concepts` ask which items
make a latent fire. :class:`ConceptKnobs` turns concept names into :class:`Knob` s.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp
from scipy.optimize import nnls

from steercf.concepts import ConceptMapping, concept_display_names, concept_tags, map_concepts
from steercf.data import ItemTags
from steercf.errors import InputError, UnknownIdError
from steercf.sae.steer import Knob
from steercf.steering.defaults import (
    DECODER_EFFECT,
    DECODER_FIT,
    DEFAULT_MAPPING,
    DEFAULT_STRENGTH,
    DEFAULT_TOP_LATENTS,
)

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
        """Build the mapping of ``model``'s latents to the ``source`` tags of ``data``;
        concepts are named by their id or by the name ``steercf latent`` and the explorer
        show (:func:`steercf.concepts.concept_display_names`)."""
        tags = concept_tags(data, source, train_users)
        knobs = cls.from_tags(model, tags, mapping, top_latents)
        shown = concept_display_names(data, source, tags)
        if (shown != knobs.mapping.tag_names).any():  # e.g. knowledge-graph entities
            knobs.mapping.display_names = shown
        return knobs

    @classmethod
    def from_tags(
        cls,
        model,
        tags: ItemTags,
        mapping: str = DEFAULT_MAPPING,
        top_latents: int = DEFAULT_TOP_LATENTS,
    ) -> ConceptKnobs:
        """Build the mapping of ``model``'s latents to the (n_items, n_tags) ``tags``
        (e.g. only the visible part of a catalogue's tags)."""
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
        index = self.mapping.concept_index(concept)
        name = str(self.mapping.tag_names[index])
        shown = self.mapping.display_names
        if shown is not None and str(shown[index]) != name:  # say what a bare id means
            name = f"{name} ({shown[index]})"
        return Knob.of(latents, strength, weights, name=name)

    def parse(self, spec: str, default_strength: float = DEFAULT_STRENGTH) -> Knob:
        """Parse a knob spec: ``+Horror`` (toward) and ``-Comedy`` (away), both at the
        default strength (a moderate step), or ``+Horror:0.2`` / ``-Comedy:1.0`` at a
        given one; ``latent:N`` (or ``neuron:N``) instead of a concept name steers one
        latent (:func:`parse_latent_spec`)."""
        sign, body = _split_sign(spec)
        latent = parse_latent_spec(spec, default_strength)
        if latent is not None:
            return latent
        strength = default_strength
        head, _, tail = body.rpartition(":")
        if head and _is_number(tail):
            body, strength = head, float(tail)
        _check_strength(spec, strength)
        return self.knob(body, sign * strength)


LATENT_PREFIXES = ("latent", "neuron")  # "neuron": the published papers' word for a latent


def parse_latent_spec(spec: str, default_strength: float = DEFAULT_STRENGTH) -> Knob | None:
    """The knob of a latent spec, ``+latent:12`` or ``-latent:12:0.3`` (``neuron:12``
    alike, any case), or None when ``spec`` names no latent (a concept spec).

    This is the one reader of latent specs: :meth:`ConceptKnobs.parse` and
    :func:`parse_knobs` (the CLI's ``--concept``, batch scoring) both go through it, so
    a latent is never looked up as a concept called "latent" or "neuron".

    Raises:
        InputError: no leading +/-, a latent id that is not a whole number >= 0, or a
            strength that is not a non-negative number.
    """
    sign, body = _split_sign(spec)
    prefix, colon, rest = body.partition(":")
    if not colon or prefix.strip().lower() not in LATENT_PREFIXES:
        return None
    latent, _, strength_text = rest.partition(":")
    latent = latent.strip()
    if not latent.isdecimal():
        raise InputError(
            f"knob {spec.strip()!r}: {prefix.strip()} id must be a whole number >= 0, "
            f"got {latent!r}"
        )
    strength = default_strength
    if strength_text:
        if not _is_number(strength_text):
            raise InputError(
                f"knob {spec.strip()!r}: strength must be a number, got {strength_text!r}"
            )
        strength = float(strength_text)
    _check_strength(spec, strength)
    return Knob.of(int(latent), sign * strength, name=f"latent:{int(latent)}")


def _split_sign(spec: str) -> tuple[float, str]:
    """``"+Horror"`` -> ``(1.0, "Horror")``; InputError without a leading + or -."""
    spec = spec.strip()
    if not spec or spec[0] not in "+-":
        raise InputError(f"knob {spec!r} must start with + (toward) or - (away)")
    return (1.0 if spec[0] == "+" else -1.0), spec[1:]


def _check_strength(spec: str, strength: float) -> None:
    if strength < 0:
        raise InputError(f"knob {spec!r}: give the direction with +/- and a positive strength")


# the tag sources steercf's loaders make (steercf.concepts.sources.available_sources)
_KNOWN_SOURCES = ("genres", "kg", "tags")


def parse_knobs(
    model,
    data,
    specs: Sequence[str],
    train_users: np.ndarray | None = None,
    source: str = "genres",
    mapping: str = DEFAULT_MAPPING,
    top_latents: int = DEFAULT_TOP_LATENTS,
) -> list[Knob]:
    """Knobs of several specs, each from its own concept source: ``+Horror`` (the
    default ``source``), ``+tags:pixar``, ``-genres:Comedy:0.5``, ``+latent:12``
    (``+neuron:12`` alike: :func:`parse_latent_spec`).

    A spec's ``name:`` prefix picks the source when ``data`` has a tag source of that
    name (``genres``, ``kg``, ``tags``); otherwise the whole text is the concept. Each
    source's mapping is built once.

    Raises:
        InputError / UnknownIdError: a malformed spec or an unknown concept.
    """
    resolvers: dict[str, ConceptKnobs] = {}
    sources = set(getattr(data, "tags", {})) | (
        {"tags"} if getattr(data, "tag_applications", None) is not None else set()
    )
    knobs = []
    for spec in specs:
        latent = parse_latent_spec(spec)  # needs no mapping; InputError without +/-
        if latent is not None:
            knobs.append(latent)
            continue
        text = spec.strip()
        head, _, rest = text[1:].partition(":")
        chosen, body = (head, rest) if head in sources and rest else (source, text[1:])
        if chosen not in resolvers:
            resolvers[chosen] = ConceptKnobs.for_model(
                model, data, chosen, mapping, train_users, top_latents
            )
        try:
            knobs.append(resolvers[chosen].parse(text[:1] + body))
        except UnknownIdError as err:
            # "+tags:pixar" on a data set without tags: name the missing source, not an
            # unknown concept "tags:pixar"
            if chosen != head and rest and head in _KNOWN_SOURCES:
                raise UnknownIdError(
                    f"{text!r}: this data set has no {head!r} concept source (its sources: "
                    f"{', '.join(sorted(sources)) or 'none'}), and {text[1:]!r} is no "
                    f"{chosen} concept either"
                ) from err
            raise
    return knobs


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
