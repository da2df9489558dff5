"""Integrations with other recommender libraries.

* :mod:`steercf.integrations.recbole`: steercf models as RecBole 1.2.1 general
  recommenders and a runner that needs neither ``recbole.quick_start`` nor ray.
* :mod:`steercf.integrations.implicit`: an ``implicit.recommender_base.RecommenderBase``
  wrapper (``fit`` / ``recommend`` / ``similar_items`` / ``similar_users`` / save /
  load) that ``implicit.evaluation.ranking_metrics_at_k`` evaluates unchanged.

Importing this package imports neither RecBole nor implicit; only the submodules do. The
helper below is shared by both integrations; scoring goes through
:func:`steercf.steering.recommend_rows` like every other entry point.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from steercf.steering import Knob

__all__ = ["build_knobs"]


def build_knobs(
    steer_latents: Mapping[int, float] | None = None,
    knobs: Sequence[Knob] | None = None,
) -> list[Knob]:
    """One knob per ``{latent: strength}`` entry, followed by the given knobs."""
    out = [Knob.of(n, s) for n, s in (steer_latents or {}).items()]  # checks ids and values
    return out + list(knobs or [])
