"""How monosemantic are a model's units? Reports of an SAE and its controls.

:func:`concepts_report` measures a spliced model's SAE latents and two controls against
each concept source of a data set. The parts live in their own modules and are
re-exported here (where they used to be defined):

* :mod:`steercf.concepts.controls`: the activations measured, ``sae`` (SAE codes of
  each one-hot item), ``dense`` (the CFAE embedding, made non-negative by
  :func:`signed_split`) and ``random_rotation`` (the SAE codes in a random orthogonal
  basis: the SAE's information without its basis).
* :mod:`steercf.concepts.specificity`: entropy, relative entropy decrease and KL from
  the mean (:func:`specificity`).
* :mod:`steercf.concepts.monosemanticity`: the report of one ``(n_items, n_units)``
  activation matrix against one concept source (:func:`monosemanticity_report`), its
  two directions (latents -> concepts, concepts -> latents) and its summary metrics.
* :mod:`steercf.concepts.display`: text tables, the SAE-vs-controls comparison and
  histograms.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from steercf.concepts.arrays import TOP_ITEMS
from steercf.concepts.controls import (
    CONTROLS,
    MODELS,
    dense_item_embeddings,
    model_activations,
    random_orthogonal,
    random_rotation,
    sae_item_activations,
    signed_split,
)
from steercf.concepts.display import (
    comparison_rows,
    format_comparison,
    format_report,
    format_reports,
    plot_reports,
)
from steercf.concepts.monosemanticity import (
    DIAGNOSTIC_METRICS,
    SPECIFICITY_KEYS,
    SPECIFICITY_THRESHOLD,
    SUMMARY_METRICS,
    MonosemanticityReport,
    monosemanticity_report,
)
from steercf.concepts.sources import available_sources, concept_tags
from steercf.concepts.specificity import Specificity, specificity
from steercf.data import InteractionData

__all__ = [
    "CONTROLS",
    "DIAGNOSTIC_METRICS",
    "MODELS",
    "SPECIFICITY_KEYS",
    "SPECIFICITY_THRESHOLD",
    "SUMMARY_METRICS",
    "TOP_ITEMS",
    "MonosemanticityReport",
    "Specificity",
    "comparison_rows",
    "concepts_report",
    "dense_item_embeddings",
    "format_comparison",
    "format_report",
    "format_reports",
    "model_activations",
    "monosemanticity_report",
    "plot_reports",
    "random_orthogonal",
    "random_rotation",
    "sae_item_activations",
    "signed_split",
    "specificity",
]


def concepts_report(
    model: Any,
    data: InteractionData,
    sources: Sequence[str] | None = None,
    train_users: np.ndarray | None = None,
    controls: bool = True,
    seed: int = 0,
    min_count: dict[str, int] | None = None,
    **options: Any,
) -> list[MonosemanticityReport]:
    """Reports of a spliced model (and its controls) for each concept source of ``data``.

    Args:
        model: a fitted SplicedRecommender.
        data: the data set it was trained on (same item columns).
        sources: concept sources (default: all of ``data``'s, see
            :func:`~steercf.concepts.mapping.available_sources`).
        train_users: ``Split.train_users``, so that user tags come from training users only.
        controls: also measure the dense and random-rotation controls.
        min_count: per-source minimum concept counts (default ``DEFAULT_MIN_COUNT``).
        options: passed to :func:`monosemanticity_report` (k, threshold, min_items).

    Returns:
        One report per (source, model), sources outermost, models in
        :data:`~steercf.concepts.controls.MODELS` order.
    """
    acts = model_activations(model, seed) if controls else {"sae": sae_item_activations(model)}
    reports = []
    for source in sources or available_sources(data):
        tags = concept_tags(data, source, train_users, (min_count or {}).get(source))
        for name, item_acts in acts.items():
            reports.append(
                monosemanticity_report(item_acts, tags, model=name, source=source, **options)
            )
    return reports
