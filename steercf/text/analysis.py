"""The four data-analysis tasks on document SAE codes (Jiang et al. 2025), plus the
dense-retrieval baseline.

All functions take document codes ``(n_docs, n_latents)`` from
:meth:`steercf.text.TextSAE.doc_codes` (non-negative; a latent "fires" on a document
when its code is > 0) and return pandas DataFrames. They live in one module per task and
are re-exported here:

- :mod:`steercf.text.diffing`: 1. :func:`diff_datasets`;
- :mod:`steercf.text.correlations`: 2. :func:`latent_correlations`, :func:`npmi`;
- :mod:`steercf.text.queries`: the latents of a query (:func:`query_latents`,
  :func:`match_labels`, :func:`semantic_latents`), the axis of 3. and weights of 4.;
- :mod:`steercf.text.clustering`: 3. :func:`targeted_clustering` (anchors from
  :func:`query_anchors`);
- :mod:`steercf.text.retrieval`: 4. :func:`property_retrieval`, and
  :func:`dense_retrieval`.
"""

from steercf.text.clustering import (
    Clusters,
    jaccard_affinity,
    query_anchors,
    targeted_clustering,
)
from steercf.text.correlations import labels_related, latent_correlations, npmi
from steercf.text.diffing import DEFAULT_FDR, DEFAULT_MIN_DIFF, diff_datasets
from steercf.text.queries import (
    SEMANTIC_MARGIN,
    SEMANTIC_TOP,
    match_labels,
    query_latents,
    semantic_latents,
)
from steercf.text.retrieval import dense_retrieval, doc_similarity, property_retrieval

__all__ = [
    "DEFAULT_FDR",
    "DEFAULT_MIN_DIFF",
    "SEMANTIC_MARGIN",
    "SEMANTIC_TOP",
    "Clusters",
    "dense_retrieval",
    "diff_datasets",
    "doc_similarity",
    "jaccard_affinity",
    "labels_related",
    "latent_correlations",
    "match_labels",
    "npmi",
    "property_retrieval",
    "query_latents",
    "semantic_latents",
    "query_anchors",
    "targeted_clustering",
]
