"""Task 3, targeted clustering: clustering documents along an axis of interest, either
one cluster per query, anchored on each query's top documents by property retrieval
(:func:`query_anchors`), or on the latents of an axis (e.g. from
:func:`steercf.text.query_latents`); each cluster described by the latents that fire
more inside it than outside.

Takes document codes ``(n_docs, n_latents)`` from :meth:`steercf.text.TextSAE.doc_codes`.

What k-means reads (``representation``):

* ``"embedding"`` (the default without an axis): the documents' dense embeddings
  (``Embeddings.doc_vectors()``). No representation of the codes clustered as well:
  on both benchmark corpora the dense geometry is the class structure, and the codes
  reconstruct it with a loss. The SAE's part is the targeting (the anchors below) and
  the description of each cluster by its latents.
* ``"decoded"`` (the default with an axis ``latents``): what the code says the
  document is, back in embedding space: the activations of the axis latents times their
  decoder directions (``TextSAE.directions``), L2-normalised. Only the axis's concepts
  shape the vector, and it stays dense when the SAE is very sparse (at k = 8 the TF-IDF
  rows share too few latents for k-means).
* ``"tfidf"``: each latent's activation scaled to [0, 1] by its largest
  activation, times its inverse document frequency ``log(n_docs / df)``, each document
  L2-normalised; k-means on that (spherical k-means). Like TF-IDF over words, a latent
  that fires on every other document says little about which cluster a document is in.
* ``"jaccard"``: the toolkit's spectral clustering on the Jaccard similarity of the
  binarised codes (kept for reproduction).

*Anchored* clustering (``anchors``, e.g. :func:`query_anchors`): one cluster per query,
k-means started once from the mean row of each query's top documents by property
retrieval instead of from 10 random starts, so cluster ``c`` belongs to query ``c``.
Property retrieval finds purer anchors than cosine search (share of the anchor
documents in the query's class, metric ``anchor_purity``: 0.998 ± 0.002 against 0.912 on
BBC News, 0.942 ± 0.014 against 0.907 on the arXiv sample, SAE seeds 0-3). Measured with ``benchmarks/text.py --tasks
clustering --sae-seed S`` (adjusted Rand index against the classes, class count given,
mean ± sd over SAE seeds 0-3; k-means from random starts: mean over 5 seeds):

=====================================================  ===============  ===============
k-means on                                             BBC News         arXiv sample
=====================================================  ===============  ===============
embedding, SAE anchors (the default)                   0.904 ± 0.000    0.812 ± 0.002
decoded codes, SAE anchors                             0.887 ± 0.003    0.780 ± 0.019
embedding, anchored on cosine to the query             0.901            0.812
embedding, random starts (dense k-means)               0.903            0.660
decoded codes, random starts                           0.886 ± 0.004    0.629 ± 0.011
tfidf / jaccard codes, random starts                   0.852 / 0.795    0.594 / 0.587
=====================================================  ===============  ===============

Anchoring is what lifts the arXiv sample (it avoids the split that merges archives); on
BBC News the default ties dense k-means (0.904 against 0.903; dense k-means moves by sd
0.001 over its random states). Against dense k-means anchored on cosine it ties on both
(the purer anchors change the ARI by +0.004 and -0.001). Anchored clustering restricted
to the queries' axis latents fell to 0.77 - 0.84 on BBC News (32 - 64 latents per query).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from steercf.errors import InputError
from steercf.text.common import check_codes, label_column, unit_rows

# what k-means reads: the documents' embeddings or one of the code representations
CODE_REPRESENTATIONS = ("decoded", "tfidf", "jaccard")
REPRESENTATIONS = ("embedding", *CODE_REPRESENTATIONS)
# With no n_clusters, every count in 2..MAX_AUTO_CLUSTERS is tried and the one with the
# best mean silhouette kept; it is computed on a seeded sample of SILHOUETTE_SAMPLE docs.
# On the decoded codes it picks 5 on BBC News (its 5 categories) and 3 on the arXiv
# sample's 6 archives (2 for one SAE seed of four), as on the dense embeddings
# (benchmarks/text.py, rows 'auto k').
MAX_AUTO_CLUSTERS = 12
# documents per anchor query (:func:`query_anchors`): the depth at which property
# retrieval is measured (precision@50); 10 gave the same or a lower ARI (SAE seeds 0-1)
ANCHOR_DOCS = 50
SILHOUETTE_SAMPLE = 2000


@dataclass
class Clusters:
    """Result of :func:`targeted_clustering`.

    Attributes:
        assignments: (n_docs,) cluster id of each document.
        summary: DataFrame, one row per cluster: ``cluster, size, latents`` (top
            latents by in- minus out-of-cluster frequency), ``in_minus_out`` (those
            differences), ``description`` (their labels); anchored, also
            ``anchor_kept`` (share of anchor ``c``'s documents in cluster ``c``).
        latents: (m,) the latents the clustering read (none with ``"embedding"``).
        silhouettes: ``{n_clusters: mean silhouette}`` of each count tried when the
            count was chosen (empty when it was given).
    """

    assignments: np.ndarray
    summary: pd.DataFrame
    latents: np.ndarray
    silhouettes: dict[int, float] = field(default_factory=dict)

    def __repr__(self) -> str:
        # the arrays hold one entry per document / latent: too long to print
        chosen = " (count chosen by silhouette)" if self.silhouettes else ""
        read = f"{len(self.latents)} latents" if len(self.latents) else "their embeddings"
        return (
            f"Clusters({len(self.summary)} clusters of {len(self.assignments)} documents "
            f"on {read}{chosen})"
        )


def jaccard_affinity(binary: np.ndarray) -> np.ndarray:
    """Jaccard similarity (n, n) between the rows of a binary matrix (n, m)."""
    x = np.asarray(binary, dtype=np.float32)
    inter = x @ x.T
    sizes = x.sum(1)
    union = sizes[:, None] + sizes[None, :] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def _axis_latents(
    codes: np.ndarray,
    latents: Sequence[int] | np.ndarray | dict[int, float] | None,
    min_count: int,
) -> tuple[np.ndarray, np.ndarray]:
    """The axis latents (m,) worth clustering on (firing on at least ``min_count``
    documents and not on all of them) and their binarised codes (n_docs, m)."""
    n = codes.shape[0]
    if latents is None:
        chosen = np.arange(codes.shape[1])
    else:
        chosen = np.asarray(sorted(latents.keys() if isinstance(latents, dict) else latents), int)
        if chosen.size == 0:
            raise InputError("no latents to cluster on: the axis selected none")
        if chosen.min() < 0 or chosen.max() >= codes.shape[1]:
            raise InputError(f"latent ids must lie in 0..{codes.shape[1] - 1}")
    binary = codes[:, chosen] > 0
    counts = binary.sum(0)
    useful = (counts >= min_count) & (counts < n)
    if not useful.any():
        raise InputError("none of the selected latents fires on enough documents to cluster")
    return chosen[useful], binary[:, useful]


def tfidf_rows(codes: np.ndarray) -> np.ndarray:
    """(n_docs, m) L2-normalised TF-IDF weights of (n_docs, m) non-negative codes: each
    column scaled to [0, 1] by its maximum, times ``log(n_docs / df)``."""
    x = np.asarray(codes, dtype=np.float32)
    df = (x > 0).sum(0)
    idf = np.log(x.shape[0] / np.maximum(df, 1)).astype(np.float32)
    return unit_rows(x / np.maximum(x.max(0), 1e-12) * idf)


def _describe_clusters(
    codes: np.ndarray,
    assignments: np.ndarray,
    n_clusters: int,
    labels: Sequence[str] | None,
    n_describe: int,
    keep_empty: bool = False,
) -> pd.DataFrame:
    """:attr:`Clusters.summary`: per non-empty cluster (every cluster with
    ``keep_empty``), the ``n_describe`` latents (over all latents) with the largest in-
    minus out-of-cluster firing frequency."""
    all_binary = codes > 0
    rows: list[dict[str, Any]] = []
    for c in range(n_clusters):
        inside = assignments == c
        if not inside.any():
            if keep_empty:  # an anchor whose cluster k-means emptied: shown, not dropped
                rows.append(
                    {"cluster": c, "size": 0, "latents": [], "in_minus_out": [], "description": ""}
                )
            continue
        out_freq = all_binary[~inside].mean(0) if (~inside).any() else np.zeros(codes.shape[1])
        gap = all_binary[inside].mean(0) - out_freq
        best = np.argsort(-gap)[:n_describe]
        rows.append(
            {
                "cluster": c,
                "size": int(inside.sum()),
                "latents": best.tolist(),
                "in_minus_out": [round(float(v), 3) for v in gap[best]],
                "description": " | ".join(label_column(labels, best)),
            }
        )
    return pd.DataFrame(rows)


def mean_silhouette(
    features: np.ndarray, assignments: np.ndarray, metric: str = "cosine", seed: int = 0
) -> float:
    """Mean silhouette of a clustering: ``features`` (n, m) rows compared by ``metric``,
    or an (n, n) distance matrix with ``metric="precomputed"``; over a seeded sample of
    :data:`SILHOUETTE_SAMPLE` documents when there are more."""
    from sklearn.metrics import silhouette_score

    n = len(assignments)
    return float(
        silhouette_score(
            features,
            assignments,
            metric=metric,
            sample_size=min(SILHOUETTE_SAMPLE, n),
            random_state=seed,
        )
    )


def choose_n_clusters(
    fit: Callable[[int], np.ndarray],
    silhouette: Callable[[np.ndarray], float],
    n_docs: int,
    max_clusters: int = MAX_AUTO_CLUSTERS,
) -> tuple[int, np.ndarray, dict[int, float]]:
    """The number of clusters in 2..``max_clusters`` with the best mean silhouette.

    Args:
        fit: ``fit(k) -> (n_docs,)`` cluster ids for k clusters.
        silhouette: ``silhouette(assignments) -> float``, the mean silhouette.
        n_docs: documents clustered (counts above ``n_docs - 1`` are not tried).

    Returns:
        ``(k, assignments (n_docs,), {count: silhouette})``; ties go to fewer clusters,
        and a count that found one cluster only scores -1.

    Raises:
        InputError: fewer than 3 documents.
    """
    if n_docs < 3:
        raise InputError(
            f"choosing the number of clusters needs at least 3 documents, got {n_docs}"
        )
    fitted: dict[int, np.ndarray] = {}
    scores: dict[int, float] = {}
    for k in range(2, min(max_clusters, n_docs - 1) + 1):
        fitted[k] = fit(k)
        scores[k] = silhouette(fitted[k]) if len(set(fitted[k].tolist())) > 1 else -1.0
    best = max(scores, key=lambda k: (scores[k], -k))
    return best, fitted[best], scores


def _check_anchors(
    anchors: Sequence[Sequence[int] | np.ndarray],
    n_docs: int,
    n_clusters: int | None,
    representation: str,
) -> list[np.ndarray]:
    """``anchors`` as a list of (m_c,) int arrays, checked (see :func:`targeted_clustering`)."""
    if representation == "jaccard":
        raise InputError(
            "anchors start k-means: use representation 'embedding', 'decoded' or 'tfidf'"
        )
    out = [np.asarray(docs) for docs in anchors]
    if any(docs.ndim != 1 for docs in out):  # [1, 2, 3] is not three one-document anchors
        raise InputError("anchors must be a list of lists of document ids, one list per cluster")
    if not 2 <= len(out) <= n_docs:
        raise InputError(f"anchored clustering needs 2..{n_docs} anchors, got {len(out)}")
    if n_clusters is not None and n_clusters != len(out):
        raise InputError(f"n_clusters={n_clusters} but {len(out)} anchors: one cluster per anchor")
    seen: dict[frozenset[int], int] = {}
    for c, docs in enumerate(out):
        if docs.size == 0:
            raise InputError(f"anchor {c} has no documents")
        if not np.issubdtype(docs.dtype, np.integer) or docs.min() < 0 or docs.max() >= n_docs:
            raise InputError(f"anchor {c}: document ids must be integers in 0..{n_docs - 1}")
        same = seen.setdefault(frozenset(docs.tolist()), c)
        if same != c:  # two equal starts: one of the two clusters takes whatever is left
            raise InputError(
                f"anchors {same} and {c} hold the same documents (anchor queries that find "
                "the same top documents cannot tell their clusters apart)"
            )
    return out


def anchored_kmeans(rows: np.ndarray, anchors: Sequence[np.ndarray]) -> np.ndarray:
    """k-means on ``rows`` (n, d) with one cluster per anchor, started once from each
    anchor's mean row (a fixed start: no random state) -> (n,) cluster ids; ``anchors``
    as checked by :func:`targeted_clustering`."""
    from sklearn.cluster import KMeans

    starts = np.stack([rows[docs].mean(0) for docs in anchors])
    return KMeans(n_clusters=len(anchors), init=starts, n_init=1, random_state=0).fit_predict(rows)


def query_anchors(
    model: Any,
    codes: Any,
    queries: Sequence[str],
    embedder: Any = None,
    top: int = ANCHOR_DOCS,
    method: str = "semantic",
) -> list[np.ndarray]:
    """Each query's best documents by property retrieval, the ``anchors`` of
    :func:`targeted_clustering` (one cluster per query).

    Args:
        model: :class:`steercf.text.TextSAE`.
        codes: (n_docs, n_latents) document codes of ``model``.
        queries: at least 2 queries, e.g. "sport: matches, players and championships".
        embedder: :class:`Embedder` (default ``model.embedder()``).
        top: documents per query at most (:data:`ANCHOR_DOCS`); documents the query's
            latents do not fire on are left out.
        method: how a query picks its latents (:func:`query_latents`).

    Returns:
        ``len(queries)`` arrays of row ids of ``codes`` (at most ``top``), best first.

    Raises:
        InputError: fewer than 2 queries, an empty or repeated one, a query
            :func:`query_latents` refuses, or one whose latents fire on no document.
    """
    from steercf.text.queries import query_latents
    from steercf.text.retrieval import property_retrieval

    if isinstance(queries, str) or len(queries) < 2:
        raise InputError("anchored clustering needs at least 2 queries (one cluster each)")
    first: dict[str, int] = {}
    for c, query in enumerate(queries):
        if not isinstance(query, str) or not query.strip():
            raise InputError(f"anchor query {c} is empty: {query!r}")
        same = first.setdefault(" ".join(query.lower().split()), c)
        if same != c:
            raise InputError(f"anchor queries {same} and {c} are the same: {query!r}")
    anchors = []
    for c, query in enumerate(queries):
        weights = query_latents(model, query, embedder, method)
        found = property_retrieval(codes, weights, model.p90, top=top)
        docs = found.loc[found["score"] > 0, "doc"].to_numpy()  # not filler at score 0
        if docs.size == 0:
            raise InputError(f"anchor query {c} ({query!r}): its latents fire on no document")
        anchors.append(docs)
    return anchors


def _check_representation(
    representation: str | None,
    latents: Any,
    codes_shape: tuple[int, int],
    directions: np.ndarray | None,
    vectors: np.ndarray | None,
) -> tuple[str, np.ndarray | None, np.ndarray | None]:
    """The representation :func:`targeted_clustering` uses (None resolved) and what it
    reads, checked: ``(representation, directions, vectors)``."""
    n, n_latents = codes_shape
    if representation is None:
        representation = "embedding" if latents is None else "decoded"
    if representation not in REPRESENTATIONS:
        raise InputError(
            f"representation must be one of {', '.join(REPRESENTATIONS)}, got {representation!r}"
        )
    if representation == "embedding":
        if latents is not None:
            raise InputError(
                "an axis (latents) restricts the codes, not the embeddings: use "
                "representation='decoded' (with directions=model.directions) for an axis"
            )
        if vectors is None:
            raise InputError(
                "representation='embedding' (the default without an axis) needs the "
                "documents' embeddings: pass vectors=embeddings.doc_vectors(), or "
                "representation='decoded' with directions=model.directions"
            )
        vectors = np.asarray(vectors, np.float32)
        if vectors.ndim != 2 or vectors.shape[0] != n:
            raise InputError(
                f"vectors must have one row per document, shape ({n}, d), got {vectors.shape}"
            )
        if not np.isfinite(vectors).all():
            raise InputError("vectors hold NaN or infinite values")
    if representation == "decoded":
        if directions is None:
            raise InputError(
                "representation='decoded' needs the latents' directions: pass "
                "directions=model.directions (TextSAE.directions) or representation='tfidf'"
            )
        directions = np.asarray(directions, np.float32)
        if directions.ndim != 2 or directions.shape[0] != n_latents:
            raise InputError(f"directions must have shape ({n_latents}, d), got {directions.shape}")
    return representation, directions, vectors


def targeted_clustering(
    codes: Any,
    n_clusters: int | None = None,
    latents: Sequence[int] | np.ndarray | dict[int, float] | None = None,
    labels: Sequence[str] | None = None,
    min_count: int = 3,
    n_describe: int = 5,
    seed: int = 0,
    representation: str | None = None,
    directions: np.ndarray | None = None,
    anchors: Sequence[Sequence[int] | np.ndarray] | None = None,
    vectors: np.ndarray | None = None,
) -> Clusters:
    """Clustering of documents along an axis: one cluster per anchor (k-means on their
    embeddings by default), or on (a subset of) their latents.

    Args:
        codes: (n_docs, n_latents) document codes.
        n_clusters: number of clusters; None: the count in 2..:data:`MAX_AUTO_CLUSTERS`
            with the best mean silhouette (cosine distance on the k-means rows,
            1 - Jaccard for ``"jaccard"``), listed in :attr:`Clusters.silhouettes`.
        latents: the axis of interest, e.g. from :func:`query_latents` (a dict's keys
            are used) or :func:`match_labels`; default all latents.
        labels: (n_latents,) latent labels for the summary's descriptions.
        min_count: drop latents firing on fewer documents (and on all of them).
        n_describe: latents per cluster in the summary.
        seed: random state of k-means (and of the spectral embedding).
        representation: what k-means reads: ``"embedding"`` (the documents' dense
            vectors; needs ``vectors``), ``"decoded"`` (the axis latents' decoded
            vectors; needs ``directions``), ``"tfidf"`` (TF-IDF-weighted activations,
            see the module docstring) or ``"jaccard"`` (spectral clustering on the
            Jaccard similarity of the active latent sets, plus a tiny constant so that
            documents with no active latent still form a connected graph). None
            (default): ``"embedding"``, or ``"decoded"`` when an axis (``latents``) is
            given, since only the codes can be restricted to an axis.
        directions: (n_latents, d) the latents' decoder directions
            (``TextSAE.directions``), for ``"decoded"``.
        anchors: per cluster, the documents (ids in ``0..n_docs - 1``) that anchor it,
            e.g. each query's top documents (:func:`query_anchors`): k-means starts once
            from each anchor set's mean row, so cluster ``c`` is the one anchored by
            ``anchors[c]``. ``n_clusters`` is then ``len(anchors)`` (None, or that
            count). Not with ``"jaccard"``. Every document goes to one of these clusters,
            so name every group you expect; the summary's ``anchor_kept`` (the share of
            anchor ``c``'s documents that cluster ``c`` kept) says whether a cluster is
            still its anchor's (below 0.5 it is not).
        vectors: (n_docs, d) the documents' embeddings (``Embeddings.doc_vectors()``
            of the embeddings the codes come from), for ``"embedding"``.

    Returns:
        :class:`Clusters`.

    Raises:
        InputError: bad ``n_clusters`` or ``representation``, ``"embedding"`` without
            ``vectors`` of one row per document or with an axis, ``"decoded"`` without
            ``directions`` of one row per latent, no usable latent, or bad ``anchors``
            (fewer than 2, an empty one, an id out of range, two with the same
            documents, a count other than ``n_clusters``, or with ``"jaccard"``).
    """
    from sklearn.cluster import KMeans, SpectralClustering

    codes = check_codes(codes)
    n = codes.shape[0]
    if n_clusters is not None and (
        not isinstance(n_clusters, int) or isinstance(n_clusters, bool) or not 2 <= n_clusters <= n
    ):
        raise InputError(f"n_clusters must be an integer in [2, {n}] or None, got {n_clusters!r}")
    representation, directions, vectors = _check_representation(
        representation, latents, codes.shape, directions, vectors
    )
    if anchors is not None:
        anchors = _check_anchors(anchors, n, n_clusters, representation)
        n_clusters = len(anchors)
    if representation == "embedding":  # no latent selection: the codes only describe
        chosen, binary = np.zeros(0, int), None
    else:
        chosen, binary = _axis_latents(codes, latents, min_count)
    if representation == "jaccard":
        affinity = jaccard_affinity(binary) + 1e-3

        def fit(k: int) -> np.ndarray:
            spectral = SpectralClustering(
                n_clusters=k, affinity="precomputed", random_state=seed, assign_labels="kmeans"
            )
            return spectral.fit_predict(affinity)

    else:
        if representation == "embedding":
            rows = unit_rows(vectors)  # k-means on unit rows: cosine geometry, as the others
        elif representation == "tfidf":
            rows = tfidf_rows(codes[:, chosen])
        else:
            rows = unit_rows(codes[:, chosen].astype(np.float32) @ directions[chosen])

        def fit(k: int) -> np.ndarray:
            if anchors is not None:
                return anchored_kmeans(rows, anchors)
            return KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(rows)

    silhouettes: dict[int, float] = {}
    if n_clusters is None:
        if representation == "jaccard":
            features, metric = np.clip(1.0 - affinity, 0.0, None), "precomputed"
            np.fill_diagonal(features, 0.0)
        else:
            features, metric = rows, "cosine"
        n_clusters, assignments, silhouettes = choose_n_clusters(
            fit, lambda assigned: mean_silhouette(features, assigned, metric, seed), n
        )
    else:
        assignments = fit(n_clusters)
    summary = _describe_clusters(
        codes, assignments, n_clusters, labels, n_describe, keep_empty=anchors is not None
    )
    if anchors is not None:  # does cluster c still hold anchor c's documents?
        kept = [float(np.mean(assignments[anchors[c]] == c)) for c in summary["cluster"]]
        summary.insert(2, "anchor_kept", kept)
    return Clusters(assignments, summary, chosen, silhouettes)
