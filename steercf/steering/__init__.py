"""Steering: edit a user's sparse code toward or away from latents, decode, re-rank.

The knobs and their rules (``convex``, ``additive``) live in the sparse core
(:mod:`steercf.sae.steer`, re-exported here). This package applies them to a spliced
recommender (:mod:`.core`: the one scoring path :func:`score_rows` /
:func:`recommend_rows`, :func:`steer`, :func:`compare`), maps concepts to knobs
(:mod:`.knobs`) and explains scores (:mod:`.explain`); :mod:`.defaults` holds the
defaults every entry point shares.
"""

from steercf.sae.steer import MAX_ADDITIVE, RULES, Knob, check_knobs, steer_codes
from steercf.steering.atlas import (
    SteeringMap,
    concept_anchor_items,
    plot_steering_map,
    steering_map,
)
from steercf.steering.core import (
    SCORE_PRECISIONS,
    SteeredRecommendations,
    compare,
    latent_contributions,
    recommend_rows,
    require_steerable,
    score_rows,
    steer,
    steer_encoding,
)
from steercf.steering.defaults import (
    DECODER_EFFECT,
    DECODER_FIT,
    DEFAULT_MAPPING,
    DEFAULT_RULE,
    DEFAULT_STRENGTH,
    DEFAULT_TOP_LATENTS,
    STRENGTH_SCALE,
)
from steercf.steering.explain import error_term_shares, explain_items, score_parts, user_concepts
from steercf.steering.knobs import (
    STEERING_MAPPINGS,
    ConceptKnobs,
    decoder_effect,
    decoder_fit,
    parse_knobs,
    parse_latent_spec,
)

__all__ = [
    "DECODER_EFFECT",
    "DECODER_FIT",
    "DEFAULT_MAPPING",
    "DEFAULT_RULE",
    "DEFAULT_STRENGTH",
    "DEFAULT_TOP_LATENTS",
    "MAX_ADDITIVE",
    "RULES",
    "SCORE_PRECISIONS",
    "SteeringMap",
    "concept_anchor_items",
    "plot_steering_map",
    "steering_map",
    "STEERING_MAPPINGS",
    "STRENGTH_SCALE",
    "ConceptKnobs",
    "Knob",
    "SteeredRecommendations",
    "check_knobs",
    "compare",
    "decoder_effect",
    "decoder_fit",
    "error_term_shares",
    "score_parts",
    "explain_items",
    "latent_contributions",
    "parse_knobs",
    "parse_latent_spec",
    "recommend_rows",
    "require_steerable",
    "score_rows",
    "steer",
    "steer_codes",
    "steer_encoding",
    "user_concepts",
]
