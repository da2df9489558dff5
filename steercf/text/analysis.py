"""The four data-analysis tasks on document SAE codes (Jiang et al. 2025), plus the
dense-retrieval baseline.

All functions take document codes ``(n_docs, n_latents)`` from
:meth:`steercf.text.TextSAE.doc_codes` (non-negative; a latent "fires" on a document
when its code is > 0) and return pandas DataFrames.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from steercf.errors import InputError
from steercf.text.embed import Embeddings

DEFAULT_MIN_DIFF = 0.03  # the toolkit's minimum frequency difference


def _codes(codes: Any, name: str = "codes", n_latents: int | None = None) -> np.ndarray:
    codes = np.asarray(codes)
    if codes.dtype.kind not in "biuf":
        raise InputError(f"{name} must be numeric, got dtype {codes.dtype}")
    if codes.ndim != 2:
        raise InputError(f"{name} must have shape (n_docs, n_latents), got {codes.shape}")
    if codes.shape[0] == 0:
        raise InputError(f"{name} is empty (0 documents)")
    if n_latents is not None and codes.shape[1] != n_latents:
        raise InputError(f"{name} has {codes.shape[1]} latents, expected {n_latents}")
    return codes


def _label_column(labels: Sequence[str] | None, latents: np.ndarray) -> list[str]:
    if labels is None:
        return [""] * len(latents)
    return [str(labels[j]) for j in latents]


# ----------------------------------------------------------------- 1. diffing
def diff_datasets(
    codes_a: Any,
    codes_b: Any,
    labels: Sequence[str] | None = None,
    min_diff: float = DEFAULT_MIN_DIFF,
    relative: bool = False,
    direction: str = "a",
    top: int | None = None,
) -> pd.DataFrame:
    """Latents whose activation frequency differs between two corpora.

    Args:
        codes_a: (n_a, n_latents) codes of corpus A; codes_b: (n_b, n_latents) of B.
        labels: (n_latents,) latent labels for the ``label`` column.
        min_diff: keep latents with ``|freq_a - freq_b| >= min_diff``.
        relative: rank by ``(freq_a - freq_b) / max(freq_a, freq_b)`` instead of the
            plain difference (favours rare but one-sided latents).
        direction: ``"a"`` (more frequent in A first), ``"b"`` (more in B) or
            ``"both"`` (largest absolute difference first).
        top: keep this many rows.

    Returns:
        DataFrame (one row per kept latent, best first; ``rank`` from 1) with
        ``latent, freq_a, freq_b, diff, rel_diff, label``.
    """
    a = _codes(codes_a, "codes_a")
    b = _codes(codes_b, "codes_b", a.shape[1])
    if direction not in ("a", "b", "both"):
        raise InputError(f"direction must be 'a', 'b' or 'both', got {direction!r}")
    fa, fb = (a > 0).mean(0), (b > 0).mean(0)
    diff = fa - fb
    with np.errstate(invalid="ignore", divide="ignore"):
        rel = np.where(np.maximum(fa, fb) > 0, diff / np.maximum(fa, fb), 0.0)
    key = rel if relative else diff
    if direction == "b":
        key = -key
    elif direction == "both":
        key = np.abs(key)
    keep = np.abs(diff) >= min_diff
    if direction == "a":
        keep &= diff > 0
    elif direction == "b":
        keep &= diff < 0
    latents = np.flatnonzero(keep)
    latents = latents[np.argsort(-key[latents], kind="stable")]
    if top is not None:
        latents = latents[:top]
    frame = pd.DataFrame(
        {
            "rank": np.arange(1, len(latents) + 1),
            "latent": latents,
            "freq_a": fa[latents],
            "freq_b": fb[latents],
            "diff": diff[latents],
            "rel_diff": rel[latents],
            "label": _label_column(labels, latents),
        }
    )
    return frame


# ----------------------------------------------------------- 2. correlations
def npmi(binary: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Normalised PMI between the columns of a binary matrix (n_docs, m).

    ``npmi(x, y) = log(P(x,y) / (P(x) P(y))) / -log P(x,y)``: 1 for latents that always
    co-occur, 0 for independent ones, -1 for pairs that never co-occur.

    Returns:
        ``(npmi (m, m), joint counts (m, m))``; the diagonal is set to 1.
    """
    x = np.asarray(binary, dtype=np.float32)
    n = x.shape[0]
    joint = x.T @ x  # (m, m) co-occurrence counts
    p = np.diag(joint) / n
    pxy = joint / n
    with np.errstate(divide="ignore", invalid="ignore"):
        pmi = np.log(pxy) - np.log(p)[:, None] - np.log(p)[None, :]
        out = pmi / -np.log(pxy)
    out[joint == 0] = -1.0
    out[pxy >= 1] = 1.0  # both always on: perfectly co-occurring
    np.fill_diagonal(out, 1.0)
    return out, joint


def _words(terms: Sequence[str]) -> set[str]:
    """Crude stems of a label's words: lower case, plural -s dropped."""
    words = set()
    for term in terms:
        for word in re.findall(r"[a-z]+", str(term).lower()):
            words.add(word[:-1] if len(word) > 3 and word.endswith("s") else word)
    return words


def labels_related(terms_x: Sequence[str], terms_y: Sequence[str]) -> bool:
    """Two latents' labels are related when their term lists share a word (stemmed)."""
    return bool(_words(terms_x) & _words(terms_y))


def latent_correlations(
    codes: Any,
    labels: Sequence[str] | None = None,
    terms: Sequence[Sequence[str]] | None = None,
    min_count: int = 5,
    min_npmi: float = 0.0,
    top: int | None = 50,
    unrelated: bool = True,
    related: Callable[[int, int], bool] | None = None,
    centroids: np.ndarray | None = None,
    related_cosine: float = 0.5,
) -> pd.DataFrame:
    """Pairs of latents that co-occur in documents more than chance, by NPMI.

    Args:
        codes: (n_docs, n_latents) document codes (binarised at > 0).
        labels: latent labels (for the output); terms: per-latent term lists used by
            the default relatedness test (default: the labels split on commas).
        min_count: ignore latents firing on fewer documents, and pairs co-occurring
            in fewer (NPMI of rare events is noisy).
        min_npmi: keep pairs with NPMI at least this.
        unrelated: keep only pairs whose labels are unrelated (the interesting,
            non-obvious correlations); ``related(x, y) -> bool`` overrides the default
            test: the terms share a word (:func:`labels_related`) or, when
            ``centroids`` (n_latents, d) are given (``TextSAE.centroids``), the two
            latents' centroids have cosine >= ``related_cosine`` (same topic in
            different words, e.g. "football" and "tennis").

    Returns:
        DataFrame sorted by NPMI: ``latent_x, latent_y, npmi, count_x, count_y,
        count_xy, label_x, label_y`` (``latent_x < latent_y``).
    """
    codes = _codes(codes)
    binary = codes > 0
    counts = binary.sum(0)
    alive = np.flatnonzero(counts >= min_count)
    columns = [
        "latent_x",
        "latent_y",
        "npmi",
        "count_x",
        "count_y",
        "count_xy",
        "label_x",
        "label_y",
    ]
    if alive.size < 2:
        return pd.DataFrame(columns=columns)
    scores, joint = npmi(binary[:, alive])
    iu, ju = np.triu_indices(alive.size, k=1)
    keep = (joint[iu, ju] >= min_count) & (scores[iu, ju] >= min_npmi)
    iu, ju = iu[keep], ju[keep]
    order = np.argsort(-scores[iu, ju], kind="stable")
    if terms is None and labels is not None:
        terms = [str(label).split(",") for label in labels]
    if related is None and (terms is not None or centroids is not None):
        word_sets: dict[int, set[str]] = {}

        def related(x: int, y: int) -> bool:
            if centroids is not None and float(centroids[x] @ centroids[y]) >= related_cosine:
                return True
            if terms is None:
                return False
            for j in (x, y):
                if j not in word_sets:
                    word_sets[j] = _words(terms[j])
            return bool(word_sets[x] & word_sets[y])

    rows = []
    for o in order:
        x, y = int(alive[iu[o]]), int(alive[ju[o]])
        if unrelated and related is not None and related(x, y):
            continue
        rows.append(
            {
                "latent_x": x,
                "latent_y": y,
                "npmi": float(scores[iu[o], ju[o]]),
                "count_x": int(counts[x]),
                "count_y": int(counts[y]),
                "count_xy": int(joint[iu[o], ju[o]]),
                "label_x": "" if labels is None else labels[x],
                "label_y": "" if labels is None else labels[y],
            }
        )
        if top is not None and len(rows) >= top:
            break
    return pd.DataFrame(rows, columns=columns)


# ----------------------------------------------------- 3. targeted clustering
def match_labels(terms: Sequence[Sequence[str]], query: str) -> dict[int, float]:
    """Latents whose terms contain a word of ``query`` (stemmed, stop words dropped).

    Returns:
        ``{latent: weight}``, weight = sum over matching terms of ``1 / (1 + rank)``
        (a match on a latent's first term counts most).
    """
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    words = {w for w in _words([query]) if w not in ENGLISH_STOP_WORDS and len(w) > 1}
    out: dict[int, float] = {}
    for j, latent_terms in enumerate(terms):
        weight = sum(1.0 / (1 + r) for r, t in enumerate(latent_terms) if _words([t]) & words)
        if weight > 0:
            out[j] = weight
    return out


# Latents within SEMANTIC_MARGIN cosine of the best-matching one are relevant, at most
# SEMANTIC_TOP of them. Chosen on BBC News / arXiv (benchmarks/text.py): a narrow
# margin keeps too few latents for a broad property ("physics"), a wide one with
# equal weights lets marginal latents dilute the score.
SEMANTIC_MARGIN = 0.3
SEMANTIC_TOP = 32


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


def query_latents(
    model: Any,
    query: str | Sequence[str],
    embedder: Any = None,
    method: str = "semantic",
    top: int | None = None,
) -> dict[int, float]:
    """Latents relevant to a query, with weights in (0, 1].

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

    Raises:
        InputError: an empty query, an unknown method, or no latent matches.
    """
    queries = [query] if isinstance(query, str) else list(query)
    if not queries or any(not isinstance(q, str) or not q.strip() for q in queries):
        raise InputError(f"a query must be a non-empty string, got {query!r}")
    if method not in ("semantic", "code", "labels", "both"):
        raise InputError(f"method must be 'semantic', 'code', 'labels' or 'both', got {method!r}")
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
            _, pre = model.query_code(vector)
            m = top or model.sae.config.k
            idx = np.argsort(-pre)[:m]
            # dead latents (never fired on the corpus) cannot retrieve anything
            idx = idx[(pre[idx] > 0) & (model.density[idx] > 0)]
            for j, w in _scaled({int(j): float(pre[j]) for j in idx}).items():
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


def _scaled(weights: dict[int, float]) -> dict[int, float]:
    if not weights:
        return {}
    top = max(weights.values())
    return {j: w / top for j, w in weights.items()} if top > 0 else {}


@dataclass
class Clusters:
    """Result of :func:`targeted_clustering`.

    Attributes:
        assignments: (n_docs,) cluster id of each document.
        summary: DataFrame, one row per cluster: ``cluster, size, latents`` (top
            latents by in- minus out-of-cluster frequency), ``lift`` (those
            differences), ``description`` (their labels).
        latents: (m,) the latents the clustering used.
    """

    assignments: np.ndarray
    summary: pd.DataFrame
    latents: np.ndarray


def jaccard_affinity(binary: np.ndarray) -> np.ndarray:
    """Jaccard similarity (n, n) between the rows of a binary matrix (n, m)."""
    x = np.asarray(binary, dtype=np.float32)
    inter = x @ x.T
    sizes = x.sum(1)
    union = sizes[:, None] + sizes[None, :] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def targeted_clustering(
    codes: Any,
    n_clusters: int,
    latents: Sequence[int] | np.ndarray | dict[int, float] | None = None,
    labels: Sequence[str] | None = None,
    min_count: int = 3,
    n_describe: int = 5,
    seed: int = 0,
) -> Clusters:
    """Spectral clustering of documents on (a subset of) binarised latents.

    Args:
        codes: (n_docs, n_latents) document codes.
        n_clusters: number of clusters.
        latents: the axis of interest, e.g. from :func:`query_latents` (a dict's keys
            are used) or :func:`match_labels`; default all latents.
        min_count: drop latents firing on fewer documents (and on all of them).
        n_describe: latents per cluster in the summary.

    Returns:
        :class:`Clusters`. Document affinity is the Jaccard similarity of their active
        latent sets (plus a tiny constant so that documents with no active latent still
        form a connected graph).
    """
    from sklearn.cluster import SpectralClustering

    codes = _codes(codes)
    n = codes.shape[0]
    if not isinstance(n_clusters, int) or not 2 <= n_clusters <= n:
        raise InputError(f"n_clusters must be an integer in [2, {n}], got {n_clusters!r}")
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
    chosen, binary = chosen[useful], binary[:, useful]
    affinity = jaccard_affinity(binary) + 1e-3
    model = SpectralClustering(
        n_clusters=n_clusters, affinity="precomputed", random_state=seed, assign_labels="kmeans"
    )
    assignments = model.fit_predict(affinity)
    all_binary = codes > 0
    rows = []
    for c in range(n_clusters):
        inside = assignments == c
        if not inside.any():
            continue
        out_freq = all_binary[~inside].mean(0) if (~inside).any() else np.zeros(codes.shape[1])
        lift = all_binary[inside].mean(0) - out_freq
        best = np.argsort(-lift)[:n_describe]
        rows.append(
            {
                "cluster": c,
                "size": int(inside.sum()),
                "latents": best.tolist(),
                "lift": [round(float(v), 3) for v in lift[best]],
                "description": " | ".join(_label_column(labels, best)),
            }
        )
    return Clusters(assignments, pd.DataFrame(rows), chosen)


# -------------------------------------------------------- 4. property retrieval
def property_retrieval(
    codes: Any,
    weights: dict[int, float],
    p90: np.ndarray,
    top: int = 50,
    labels: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Score documents by a weighted sum of normalised latent activations.

    ``score(doc) = sum_l weights[l] * codes[doc, l] / p90[l]``: each latent is divided
    by its 90th-percentile non-zero activation so that latents with large activations
    do not drown the others.

    Args:
        codes: (n_docs, n_latents) document codes.
        weights: ``{latent: weight}``, e.g. from :func:`query_latents`.
        p90: (n_latents,) normaliser (``TextSAE.p90``).
        top: documents returned.

    Returns:
        DataFrame ``rank, doc, score, latents`` (the contributing latents' labels).
    """
    codes = _codes(codes)
    if not weights:
        raise InputError("no latents to retrieve with: the query matched none")
    ids = np.fromiter(weights.keys(), dtype=np.int64)
    w = np.fromiter(weights.values(), dtype=np.float64)
    if ids.min() < 0 or ids.max() >= codes.shape[1]:
        raise InputError(f"latent ids must lie in 0..{codes.shape[1] - 1}")
    normalised = codes[:, ids] / np.asarray(p90, np.float64)[ids]
    scores = normalised @ w
    order = np.argsort(-scores, kind="stable")[:top]
    contributing = [
        ", ".join(
            (labels[ids[i]] if labels is not None else str(ids[i]))
            for i in np.argsort(-normalised[d] * w)[:3]
            if normalised[d, i] > 0
        )
        for d in order
    ]
    return pd.DataFrame(
        {
            "rank": np.arange(1, len(order) + 1),
            "doc": order,
            "score": scores[order],
            "latents": contributing,
        }
    )


def doc_similarity(query_vector: np.ndarray, embeddings: Embeddings) -> np.ndarray:
    """Cosine (n_docs,) between a query vector (d,) and each document: the best of its
    chunks (chunk vectors are unit length)."""
    q = np.asarray(query_vector, np.float32).ravel()
    if q.shape[0] != embeddings.dim:
        raise InputError(f"query vector has {q.shape[0]} dims, embeddings have {embeddings.dim}")
    q = q / max(float(np.linalg.norm(q)), 1e-12)
    sims = embeddings.vectors @ q
    out = np.full(embeddings.n_docs, -np.inf, np.float32)
    np.maximum.at(out, embeddings.doc_index, sims)
    return out


def dense_retrieval(
    query_vector: np.ndarray, embeddings: Embeddings, top: int = 50
) -> pd.DataFrame:
    """The baseline: documents ranked by :func:`doc_similarity` to the query embedding.

    Returns:
        DataFrame ``rank, doc, score``.
    """
    scores = doc_similarity(query_vector, embeddings)
    order = np.argsort(-scores, kind="stable")[:top]
    return pd.DataFrame(
        {"rank": np.arange(1, len(order) + 1), "doc": order, "score": scores[order]}
    )
