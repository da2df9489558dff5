"""Which latents a query is about: by its words in the latents' labels, by the latents'
centroids near its embedding, or by its own SAE code. The result, ``{latent: weight}``,
is the axis of :func:`steercf.text.targeted_clustering` and the weights of
:func:`steercf.text.property_retrieval`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from steercf.errors import InputError
from steercf.ranking import whole_number
from steercf.text.common import label_words

# Latents within SEMANTIC_MARGIN cosine of the best-matching one are relevant, at most
# SEMANTIC_TOP of them. Chosen on BBC News / arXiv (benchmarks/text.py): a narrow
# margin keeps too few latents for a broad property ("physics"), a wide one with
# equal weights lets marginal latents dilute the score.
SEMANTIC_MARGIN = 0.3
SEMANTIC_TOP = 32
QUERY_METHODS = ("semantic", "code", "labels", "both")


def match_labels(terms: Sequence[Sequence[str]], query: str) -> dict[int, float]:
    """Latents whose terms contain a word of ``query`` (stemmed, stop words dropped).

    Args:
        terms: (n_latents,) per-latent term lists (``TextSAE.terms``).
        query: free text.

    Returns:
        ``{latent: weight}``, weight = sum over matching terms of ``1 / (1 + rank)``
        (a match on a latent's first term counts most).
    """
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    words = {w for w in label_words([query]) if w not in ENGLISH_STOP_WORDS and len(w) > 1}
    out: dict[int, float] = {}
    for j, latent_terms in enumerate(terms):
        weight = sum(1.0 / (1 + r) for r, t in enumerate(latent_terms) if label_words([t]) & words)
        if weight > 0:
            out[j] = weight
    return out


def semantic_latents(
    model: Any, query_vector: np.ndarray, top: int = SEMANTIC_TOP, margin: float = SEMANTIC_MARGIN
) -> dict[int, float]:
    """Latents whose centroid (``TextSAE.centroids``, where the latent lives in embedding
    space) is within ``margin`` cosine of the best match to the query vector (d,),
    at most ``top`` of them.

    A broad property ("sport") is covered by several narrower latents (football,
    tennis, athletics ...), so more than the best one is kept; each is weighted
    linearly by how close it is: ``0.05 + (cos - (best - margin)) / margin``, in
    (0.05, 1.05].

    Returns:
        ``{latent: weight}``; empty when no latent ever fired.
    """
    q = np.asarray(query_vector, np.float32).ravel()
    q = q / max(float(np.linalg.norm(q)), 1e-12)
    relevance = model.centroids @ q
    relevance[model.density <= 0] = -np.inf  # a latent that never fired retrieves nothing
    if not np.isfinite(relevance).any():
        return {}
    best = float(relevance.max())
    chosen = np.argsort(-relevance)[:top]
    floor = best - margin
    chosen = chosen[relevance[chosen] >= floor]
    return {int(j): 0.05 + float(relevance[j] - floor) / margin for j in chosen}


def _scaled(weights: dict[int, float]) -> dict[int, float]:
    if not weights:
        return {}
    top = max(weights.values())
    return {j: w / top for j, w in weights.items()} if top > 0 else {}


def _code_latents(model: Any, vector: np.ndarray, top: int | None) -> dict[int, float]:
    """The query vector's (d,) ``top`` largest live SAE pre-activations (default the k
    active latents), scaled to max 1."""
    _, pre = model.query_code(vector)
    m = top or model.sae.config.k
    idx = np.argsort(-pre)[:m]
    # dead latents (never fired on the corpus) cannot retrieve anything
    idx = idx[(pre[idx] > 0) & (model.density[idx] > 0)]
    return _scaled({int(j): float(pre[j]) for j in idx})


def query_latents(
    model: Any,
    query: str | Sequence[str],
    embedder: Any = None,
    method: str = "semantic",
    top: int | None = None,
) -> dict[int, float]:
    """Latents relevant to a query, with positive weights (per query at most 1.05 for
    ``"semantic"``, 1 for ``"code"`` and ``"labels"``; summed over several queries).

    Args:
        model: :class:`steercf.text.TextSAE`.
        query: a string, or several (the union of their latents is taken; each
            query's weights are scaled to max 1 first).
        embedder: :class:`Embedder` for the embedding-based methods (default:
            ``model.embedder()``).
        method: ``"semantic"`` (default): :func:`semantic_latents`, latents whose
            top-document centroid is close to the query embedding;
            ``"code"``: the query's own SAE code (its ``top`` largest pre-activations,
            default the k active latents) weighted by activation;
            ``"labels"``: :func:`match_labels`, query words found in the latents' terms;
            ``"both"``: labels + code.
        top: latents per query for ``"semantic"`` / ``"code"``.

    Returns:
        ``{latent: weight}``, summed over the queries.

    Raises:
        InputError: an empty query, an unknown method, ``top`` not a whole number >= 1,
            or no latent matches.
    """
    queries = [query] if isinstance(query, str) else list(query)
    if not queries or any(not isinstance(q, str) or not q.strip() for q in queries):
        raise InputError(f"a query must be a non-empty string, got {query!r}")
    if method not in QUERY_METHODS:
        raise InputError(f"method must be 'semantic', 'code', 'labels' or 'both', got {method!r}")
    if top is not None:
        top = whole_number(top, "top", minimum=1)
    total: dict[int, float] = {}
    for q in queries:
        weights: dict[int, float] = {}
        if method in ("labels", "both"):
            weights.update(_scaled(match_labels(model.terms, q)))
        if method in ("code", "both", "semantic"):
            embedder = embedder or model.embedder(progress=False)
            vector = embedder.embed_query(q)
        if method == "semantic":
            weights.update(semantic_latents(model, vector, top or SEMANTIC_TOP))
        if method in ("code", "both"):
            for j, w in _code_latents(model, vector, top).items():
                weights[j] = weights.get(j, 0.0) + w
        for j, w in weights.items():
            total[j] = total.get(j, 0.0) + w
    if not total:
        where = "latent labels" if method == "labels" else "live latents"
        raise InputError(
            f"query {query!r} matches no latent (searched the {where}); "
            "try other words or another method"
        )
    return total
