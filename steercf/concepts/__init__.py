"""Concepts and latents: map item tags to SAE units, measure monosemanticity, label latents.

* :mod:`steercf.concepts.sources`: tag sources (genres, knowledge graph, user tags,
  user-supplied).
* :mod:`steercf.concepts.mapping`: concept <-> unit mappings (:data:`MAPPINGS`), built on
  the shared arrays of :mod:`steercf.concepts.arrays` (tag means, TF-IDF, top items).
* :mod:`steercf.concepts.report`: reports of a model and its controls, assembled from
  :mod:`~steercf.concepts.specificity` (the measures), :mod:`~steercf.concepts.controls`
  (the dense and random-rotation controls), :mod:`~steercf.concepts.monosemanticity`
  (one report) and :mod:`~steercf.concepts.display` (text and plots).
* :mod:`steercf.concepts.labels`: latent labels stored with the model.
"""

from steercf.concepts.arrays import tag_unit_means, tfidf
from steercf.concepts.controls import (
    AUDIENCE_PRIOR,
    audience_activations,
    audience_means,
    dense_item_embeddings,
    model_activations,
    random_rotation,
    sae_item_activations,
    signed_split,
)
from steercf.concepts.display import (
    comparison_rows,
    format_comparison,
    format_report,
    format_reports,
    plot_label_curves,
    plot_reports,
)
from steercf.concepts.labels import (
    LatentLabel,
    LatentLabels,
    format_latent,
    format_latents,
    has_labels,
    label_latents,
    label_model,
    labels_json,
    load_labels,
    print_latent,
    save_labels,
)
from steercf.concepts.mapping import (
    MAPPINGS,
    ConceptMapping,
    activation_auc,
    activation_correlation,
    best_characterizes,
    get_mapping,
    map_concepts,
    most_unique,
    top_item_precision,
)
from steercf.concepts.monosemanticity import MonosemanticityReport, monosemanticity_report
from steercf.concepts.report import concepts_report
from steercf.concepts.sources import (
    DEFAULT_MIN_COUNT,
    available_sources,
    concept_display_names,
    concept_tags,
    label_concepts,
    tags_from_applications,
    tags_from_mapping,
)
from steercf.concepts.specificity import Specificity, specificity

__all__ = [
    "DEFAULT_MIN_COUNT",
    "MAPPINGS",
    "ConceptMapping",
    "MonosemanticityReport",
    "LatentLabel",
    "LatentLabels",
    "Specificity",
    "activation_auc",
    "activation_correlation",
    "available_sources",
    "best_characterizes",
    "comparison_rows",
    "concept_display_names",
    "label_concepts",
    "concept_tags",
    "concepts_report",
    "dense_item_embeddings",
    "format_comparison",
    "format_latent",
    "format_latents",
    "format_report",
    "format_reports",
    "get_mapping",
    "has_labels",
    "label_model",
    "labels_json",
    "label_latents",
    "load_labels",
    "map_concepts",
    "model_activations",
    "AUDIENCE_PRIOR",
    "audience_activations",
    "audience_means",
    "monosemanticity_report",
    "most_unique",
    "plot_label_curves",
    "plot_reports",
    "print_latent",
    "random_rotation",
    "sae_item_activations",
    "save_labels",
    "signed_split",
    "specificity",
    "tag_unit_means",
    "tags_from_applications",
    "tags_from_mapping",
    "tfidf",
    "top_item_precision",
]
