"""The steering defaults every entry point shares (Python API, CLI, explorer, wrappers).

Chosen by the steering protocol of :mod:`steercf.steering_eval` on validation users
(``benchmarks/steering.py``, issue 16).
"""

from __future__ import annotations

DECODER_EFFECT = "decoder_effect"
DECODER_FIT = "decoder_fit"

DEFAULT_MAPPING = DECODER_EFFECT  # what a latent does to the item scores
DEFAULT_TOP_LATENTS = 8  # a concept spread over its 8 best latents
# additive: it leaves the rest of the user's code alone, so a step toward (away from) a
# concept never lowered (raised) its share of the top 20 for any concept of ML-100K and
# ml-latest-small (tests/test_steering_direction.py); the convex rule, which also
# shrinks every other latent, did for one user tag. On ML-100K genres (seed 0) the
# validation users' best SAE configuration was additive at strength 1.0.
DEFAULT_RULE = "additive"
# A bare "+Concept" or "-Concept": a moderate step (the user's total activation added
# to, or taken from, the concept's latents), never the whole list replaced.
DEFAULT_STRENGTH = 1.0
# The strengths a person may set, per rule (the explorer's slider, the direction test):
# convex strengths are shares of the user's total activation, additive ones multiples.
STRENGTH_SCALE = {"convex": (0.1, 0.3, 0.5, 1.0), "additive": (0.25, 1.0, 2.5, 5.0)}
