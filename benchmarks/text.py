"""Text side: SAE embeddings for data analysis on BBC News and an arXiv sample.

Per corpus: embed every document (MiniLM, chunked, cached), train a TextSAE on the
chunk embeddings, label the latents, then

* **Planted differences**: leave one class (BBC category / arXiv archive) out, split
  the other documents into halves A and B at random, add documents of the left-out
  class to A so that they make up ``rate`` of A, and diff A against B. A latent
  *detects* the planted class when at least 6 of its 10 top-activating documents in
  A u B belong to it. The SAE's latents are ranked by ``diff_datasets`` with its
  default test (``sae``: are the latent's strongest documents A's?) and with the
  toolkit's frequency test (``sae_frequency``: one-sided Fisher exact test of firing
  frequency); ``sae_fdr05`` counts the default's finding only when its
  Benjamini-Hochberg q-value is at most 0.05. Two dense baselines on the mean
  chunk embeddings: ``dense_meandiff`` (one finding: the 10 documents with the largest
  projection on mean(A) - mean(B)) and ``dense_kmeans`` (k-means with 20 clusters on
  A u B, clusters ranked by the same test of their share in A; a cluster's documents
  are its 10 nearest to the centroid). Records per method ``planted_first_rank``
  (median over trials of the rank of the first detecting finding; 999 when none
  does), ``planted_top5_rate`` and ``planted_top20_rate`` (share of trials with one in
  the top 5 / 20), setting ``rate=R``.
* **Planted correlations**: a corpus of the other classes plus documents of class X
  only, of class Y only, and X+Y documents (an X and a Y document joined as one
  document of two parts). The latents detecting X and Y are found on the whole
  corpus, where each document carries one class (so a joined document cannot make one
  latent count for both). Records ``planted_pair_rank`` (rank of the first pair of an X-detecting and a
  Y-detecting latent among the NPMI pairs with unrelated labels; 999 if absent),
  ``planted_pair_npmi``, and ``control_pair_npmi`` / ``control_pair_rank`` (the same
  pair when the X+Y documents are kept apart), setting ``pair=X+Y``, per seed. A
  latent is on in a document from half its p90 activation (``TextSAE.firing_floor``,
  ``sae``) and, as the toolkit counts, at any activation (``sae_any_activation``).
* **Property retrieval**: queries written for classes and categories; a document is
  relevant when its metadata carries the class (arXiv: any of its categories, cross-
  lists included). ``precision@50`` per query and averaged (setting ``mean``) for
  ``sae`` (query -> latents whose centroid is near the query embedding -> the weighted
  share of the document's p90-normalised code on them; ``score=sum``: the weighted
  sum, the former score), ``dense`` (cosine to the same embedder's query vector,
  best chunk per document) and ``dense_prf`` (the same after one round of Rocchio
  pseudo-relevance feedback from its top 10); on the arXiv sample also averaged over 11 held-out
  categories whose queries played no part in any choice (setting ``held-out queries``).
* **Targeted clustering**: adjusted Rand index against the class labels for
  clustering on latents selected by the class-axis queries (``sae``, setting
  ``filtered``) and on all latents (``unfiltered``), each with k-means on the decoded
  axis latents, TF-IDF k-means and the toolkit's Jaccard spectral clustering (setting
  names it), and k-means on the mean dense document embeddings (``dense``); *anchored*
  (setting ``anchored``): one cluster per class query, k-means started once from the
  mean of each query's top 50 documents, one run (a fixed start): ``sae``: anchors by
  property retrieval, k-means on the decoded codes (``decoded``) or on the dense
  document embeddings (``embedding``, the library's default); ``dense``: anchors by
  cosine to the query vector (metric ``anchor_purity``: the share of each side's anchor
  documents in their query's class, mean over queries); and with the number of clusters
  chosen by the best
  silhouette in 2..12 for both (setting ``auto k``, metric ``n_clusters`` the count
  chosen). With the class count given, each ARI is the
  mean over the trial seeds (k-means / spectral random states); ``auto k`` uses seed 0.
BBC articles are represented by their first chunk (title + ~190 words) to bound the CPU
embedding time; arXiv abstracts are embedded whole (chunked where longer).

* **Time**: ``seconds`` per task (setting names it), and embed / train time per 1,000
  documents (the embedding measured without the cache on a sample).

* **Levels** (``--level chunk token``): the SAE tasks run once per embedding level. At
  ``chunk`` (default) the SAE reads one row per chunk and its rows are ``model`` ``sae``
  / ``sae_fdr05``; at ``token`` it reads one row per word piece of each chunk
  (``Embedder(level="token")``, trained on a seeded sample of ``--max-train-rows``
  token rows, a document's code the max over its tokens) and its rows are
  ``sae_token`` / ``sae_token_fdr05``, their ``setting`` ending in
  ``level=token,width=W,k=K``. The dense baselines always read the chunk embeddings and
  are recorded once per corpus (by the first level run). With ``--k`` or
  ``--expansion`` the SAE rows' ``setting`` ends in ``level=...,width=W,k=K`` too.

    python benchmarks/text.py [--quick] [--json out.json] [--corpus bbc-news arxiv-sample]
        [--level chunk token] [--k K] [--expansion E] [--sae-seed S] [--rates R ...]
        [--tasks diff correlations retrieval clustering]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from steercf.reporting import format_table, write_records
from steercf.text.analysis import (
    dense_retrieval,
    diff_datasets,
    latent_correlations,
    property_retrieval,
    query_latents,
    targeted_clustering,
)
from steercf.text.clustering import (
    ANCHOR_DOCS,
    CODE_REPRESENTATIONS,
    anchored_kmeans,
    choose_n_clusters,
    mean_silhouette,
    query_anchors,
)
from steercf.text.corpora import load_arxiv, load_bbc
from steercf.text.correlations import firing, npmi
from steercf.text.diffing import DEFAULT_TEST, fisher_one_sided
from steercf.text.embed import Embedder, Embeddings
from steercf.text.labels import label_latents, top_documents
from steercf.text.model import DEFAULT_MAX_TRAIN_ROWS, FIRING_SHARE, TextSAE
from steercf.text.retrieval import best_documents

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
DETECT_TOP, DETECT_SHARE = 10, 0.6
NONE_RANK = 999
KMEANS_K = 20  # clusters of the dense k-means diffing baseline
FEEDBACK_DOCS = 10  # documents fed back by the dense_prf retrieval baseline
TASKS = ("diff", "correlations", "retrieval", "clustering")
METHODS = ("sae", "sae_fdr05", "sae_frequency", "dense_meandiff", "dense_kmeans")

BBC_QUERIES = {
    "business": "business, companies and the economy",
    "entertainment": "entertainment: films, music and celebrities",
    "politics": "politics, government and elections",
    "sport": "sport: matches, players and championships",
    "tech": "technology: computers, software, the internet and gadgets",
}
ARXIV_QUERIES = {
    "astro-ph": "astrophysics: stars, galaxies and cosmology",
    "math": "pure mathematics: theorems and proofs",
    "cond-mat": "condensed matter physics",
    "hep-ph": "particle physics phenomenology at colliders",
    "hep-th": "string theory and quantum field theory",
    "quant-ph": "quantum information and quantum computing",
    "gr-qc": "general relativity, black holes and gravitation",
    "nucl-th": "nuclear theory: nuclei and nuclear matter",
    "cond-mat.supr-con": "superconductivity",
    "cond-mat.mes-hall": "mesoscopic systems, quantum dots and the quantum Hall effect",
    "cond-mat.stat-mech": "statistical mechanics",
    "math.AG": "algebraic geometry",
    "math.PR": "probability theory and stochastic processes",
}
# Written after the retrieval score (share of the document's mass) was chosen on the
# queries above, and never used for a choice: arXiv categories with 33 - 105 documents.
ARXIV_HELD_OUT_QUERIES = {
    "cond-mat.mtrl-sci": "materials science: crystal structure and properties of materials",
    "cond-mat.str-el": "strongly correlated electrons",
    "math-ph": "mathematical physics",
    "cond-mat.soft": "soft matter: polymers, colloids and liquid crystals",
    "math.CO": "combinatorics: graphs and enumeration",
    "hep-ex": "experimental particle physics: detector measurements",
    "math.AP": "partial differential equations",
    "physics.optics": "optics: light, lasers and photonics",
    "math.DG": "differential geometry",
    "cond-mat.dis-nn": "disordered systems and neural networks",
    "nucl-ex": "experimental nuclear physics",
}
CORPORA: dict[str, dict[str, Any]] = {
    "bbc-news": {
        "load": load_bbc,
        "classes": "category",
        "planted": ["business", "entertainment", "politics", "sport", "tech"],
        "pairs": [("sport", "tech"), ("entertainment", "business")],
        "queries": BBC_QUERIES,
        "cluster_classes": ["business", "entertainment", "politics", "sport", "tech"],
        # the first chunk (title + first ~190 words) of each article: embedding all
        # ~5,400 chunks takes ~20 CPU-minutes with MiniLM on a CPU
        "max_chunks": 1,
    },
    "arxiv-sample": {
        "load": load_arxiv,
        "classes": "archive",
        "planted": ["astro-ph", "math", "cond-mat", "hep-ph", "hep-th", "quant-ph"],
        "pairs": [("astro-ph", "math"), ("quant-ph", "hep-ph")],
        "queries": ARXIV_QUERIES,
        "held_out_queries": ARXIV_HELD_OUT_QUERIES,
        "cluster_classes": ["astro-ph", "math", "cond-mat", "hep-ph", "hep-th", "quant-ph"],
        "max_chunks": None,  # whole abstracts (339 of 2,000 need two chunks)
    },
}
FULL = {
    "rates": [0.05, 0.1, 0.2, 0.3],
    "seeds": [0, 1, 2, 3, 4],
    "max_docs": None,
    "timing_docs": 100,
}
QUICK = {"rates": [0.1], "seeds": [0], "max_docs": 200, "words": 120, "timing_docs": 10}


# ------------------------------------------------------------------- helpers
def relevant(frame: pd.DataFrame, key: str, class_column: str) -> np.ndarray:
    """Bool (n_docs,): the document carries ``key`` (a class, or an arXiv category /
    archive among its categories)."""
    if "categories" not in frame.columns:
        return (frame[class_column] == key).to_numpy()
    cats = frame["categories"].str.split()
    if "." in key:
        return cats.map(lambda cs: key in cs).to_numpy()
    return cats.map(lambda cs: any(c.split(".")[0] == key for c in cs)).to_numpy()


def detecting(codes: np.ndarray, has: np.ndarray, latents: np.ndarray) -> np.ndarray:
    """Bool per latent in ``latents``: >= DETECT_SHARE of its top DETECT_TOP documents
    (among those where it fires) carry the property."""
    out = np.zeros(len(latents), bool)
    for i, j in enumerate(latents):
        docs = top_documents(codes, int(j), DETECT_TOP)
        out[i] = docs.size >= min(DETECT_TOP, 5) and has[docs].mean() >= DETECT_SHARE
    return out


def planted_split(
    classes: np.ndarray, prop: str, rate: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Document indices of A (the other classes plus ``prop`` at ``rate`` of A) and B."""
    rng = np.random.default_rng(seed)
    base = rng.permutation(np.flatnonzero(classes != prop))
    pool = rng.permutation(np.flatnonzero(classes == prop))
    half = len(base) // 2
    a_base, b = base[:half], base[half:]
    # keep the rate exact when the class is small: shrink A's base part instead
    n_plant = int(round(rate / (1 - rate) * len(a_base)))
    if n_plant > len(pool):
        a_base = a_base[: int(len(pool) * (1 - rate) / rate)]
        n_plant = len(pool)
    return np.concatenate([a_base, pool[:n_plant]]), b


def dense_feedback_retrieval(
    query_vector: np.ndarray,
    first_pass: pd.DataFrame,
    emb: Embeddings,
    doc_vectors: np.ndarray,
    top: int,
) -> pd.DataFrame:
    """Dense retrieval with one round of pseudo-relevance feedback (Rocchio): the unit
    query plus the mean unit vector of the first ``FEEDBACK_DOCS`` documents of
    ``first_pass`` (its :func:`dense_retrieval`), retrieved again. The textbook setting
    (10 documents, weight 1), fixed before it was run."""
    fed_back = first_pass["doc"].to_numpy()[:FEEDBACK_DOCS]
    q = np.asarray(query_vector, np.float32).ravel()
    expanded = q / max(float(np.linalg.norm(q)), 1e-12) + doc_vectors[fed_back].mean(axis=0)
    return dense_retrieval(expanded, emb, top=top)


def planted_differences(
    codes: np.ndarray,
    dense: np.ndarray,
    classes: np.ndarray,
    prop: str,
    rate: float,
    seed: int,
) -> dict[str, int]:
    """Rank (1-based; NONE_RANK if none) of the first finding that detects ``prop``, per
    method:

    * ``sae`` / ``sae_frequency``: latents ranked by :func:`diff_datasets` with its
      default test / the frequency test, a latent detecting when DETECT_SHARE of its
      top DETECT_TOP documents carry ``prop``; ``sae_fdr05``: ``sae``'s, counted only
      at BH q <= 0.05;
    * ``dense_meandiff``: one finding, the DETECT_TOP documents of A u B with the largest
      projection on ``mean(A) - mean(B)`` of the dense document vectors;
    * ``dense_kmeans``: k-means (KMEANS_K clusters) on A u B, clusters ranked by the same
      one-sided Fisher test of their share in A; a cluster's documents are its
      DETECT_TOP nearest to the centroid.
    """
    from sklearn.cluster import KMeans

    a, b = planted_split(classes, prop, rate, seed)
    union = np.concatenate([a, b])
    has = classes[union] == prop
    ranks = {}
    for method, test in (("sae", DEFAULT_TEST), ("sae_frequency", "frequency")):
        diff = diff_datasets(codes[a], codes[b], direction="a", test=test)
        hits = detecting(codes[union], has, diff["latent"].to_numpy())
        ranks[method] = int(diff["rank"].to_numpy()[hits][0]) if hits.any() else NONE_RANK
        if method == "sae":  # the same finding, counted only when the test calls it
            significant = hits & (diff["q_value"].to_numpy() <= 0.05)
            ranks["sae_fdr05"] = (
                int(diff["rank"].to_numpy()[significant][0]) if significant.any() else NONE_RANK
            )

    x = dense[union]
    direction = dense[a].mean(0) - dense[b].mean(0)
    top = np.argsort(-(x @ direction), kind="stable")[:DETECT_TOP]
    ranks["dense_meandiff"] = 1 if has[top].mean() >= DETECT_SHARE else NONE_RANK

    km = KMeans(n_clusters=KMEANS_K, n_init=3, random_state=seed).fit(x)
    in_a = np.arange(len(union)) < len(a)
    sizes = np.bincount(km.labels_, minlength=KMEANS_K)
    from_a = np.bincount(km.labels_[in_a], minlength=KMEANS_K)
    p = fisher_one_sided(from_a, len(a), sizes - from_a, len(b))
    distance = km.transform(x)  # (n, k)
    ranks["dense_kmeans"] = NONE_RANK
    for rank, cluster in enumerate(np.lexsort((-(from_a / len(a)), p)), start=1):
        members = np.flatnonzero(km.labels_ == cluster)
        nearest = members[np.argsort(distance[members, cluster], kind="stable")[:DETECT_TOP]]
        if len(nearest) >= min(DETECT_TOP, 5) and has[nearest].mean() >= DETECT_SHARE:
            ranks["dense_kmeans"] = rank
            break
    return ranks


def planted_correlation(
    model: TextSAE,
    emb: Embeddings,
    classes: np.ndarray,
    x: str,
    y: str,
    seed: int,
    n_single: int = 15,
    n_pair: int = 45,
    firing_share: float = FIRING_SHARE,
) -> dict[str, float]:
    """Rank and NPMI of the planted (x, y) latent pair, and its NPMI without planting.

    The corpus holds the other classes, ``n_single`` documents of x only and of y only,
    and ``n_pair`` X+Y documents (the chunks of one x and one y document as one
    document). The latents that detect x (and y) are found on the whole corpus, where
    each document carries one class, so an X+Y document cannot make one latent count
    for both; the planted pair is the best-ranked NPMI pair of an x- and a y-detecting latent on the
    whole corpus. ``control_pair_npmi`` / ``control_pair_rank``: the same pair on the
    same documents with the X+Y documents kept apart (each of its two documents alone),
    where x and y never meet. Co-occurrence counts a latent from ``firing_share`` of
    its p90 activation (``TextSAE.firing_floor``, the CLI's default).
    """
    rng = np.random.default_rng(seed)
    others = np.flatnonzero((classes != x) & (classes != y))
    xs = rng.permutation(np.flatnonzero(classes == x))
    ys = rng.permutation(np.flatnonzero(classes == y))
    # small classes (quick run): keep the single / pair proportions
    total = min(len(xs), len(ys), n_single + n_pair)
    n_single = int(round(total * n_single / (n_single + n_pair)))
    n_pair = total - n_single
    singles = np.concatenate([others, xs[:n_single], ys[:n_single]])
    pairs_x, pairs_y = xs[n_single:total], ys[n_single:total]
    joined = [
        Embeddings.concat([emb.subset([i]), emb.subset([j])])
        for i, j in zip(pairs_x, pairs_y, strict=True)
    ]
    planted = Embeddings.concat(
        [emb.subset(singles)]
        + [Embeddings(e.vectors, np.zeros(len(e.doc_index), np.int64), 1, e.level) for e in joined]
    )
    apart = emb.subset(np.concatenate([singles, pairs_x, pairs_y]))
    # the latents detecting x and y, found on the whole corpus, where every document
    # carries one class: a joined X+Y document cannot make one latent count for both
    all_codes = model.doc_codes(emb)
    alive = np.flatnonzero((all_codes > 0).sum(0) >= 5)
    det_x = set(alive[detecting(all_codes, classes == x, alive)].tolist())
    det_y = set(alive[detecting(all_codes, classes == y, alive)].tolist())
    codes = model.doc_codes(planted)
    floor = model.firing_floor(firing_share)

    def first_match(frame: pd.DataFrame) -> int | None:
        for i, (lx, ly) in enumerate(zip(frame["latent_x"], frame["latent_y"], strict=True)):
            if (lx in det_x and ly in det_y) or (lx in det_y and ly in det_x):
                return i
        return None

    def correlations(c: np.ndarray) -> pd.DataFrame:
        # the model's labels, terms and centroids, as steercf text correlate reads them
        return latent_correlations(c, top=None, floor=floor, model=model)

    results: dict[str, float] = {"n_detect_x": len(det_x), "n_detect_y": len(det_y)}
    table = correlations(codes)
    first = first_match(table)
    if first is None:
        results["planted_pair_rank"] = NONE_RANK
        return results
    pair = (int(table["latent_x"].iloc[first]), int(table["latent_y"].iloc[first]))
    results["planted_pair_rank"] = first + 1
    results["planted_pair_npmi"] = float(table["npmi"].iloc[first])
    control_codes = model.doc_codes(apart)
    control = correlations(control_codes)
    where = np.flatnonzero(
        (control["latent_x"].to_numpy() == pair[0]) & (control["latent_y"].to_numpy() == pair[1])
    )
    results["control_pair_rank"] = int(where[0]) + 1 if len(where) else NONE_RANK
    # the pair's NPMI where x and y never meet: the library's own npmi (-1 if never both)
    pair_npmi, _ = npmi(firing(control_codes, floor)[:, list(pair)])
    results["control_pair_npmi"] = float(pair_npmi[0, 1])
    return results


# -------------------------------------------------------------------- corpus
def run_corpus(
    name: str,
    cfg: dict[str, Any],
    preset: dict[str, Any],
    quiet: bool,
    level: str = "chunk",
    dense_rows: bool = True,
) -> list[dict]:
    """Records of one corpus with the SAE at embedding ``level``; ``dense_rows``: also
    record the dense baselines (they read chunk embeddings whatever the level)."""
    spec = CORPORA[name]
    records: list[dict[str, Any]] = []
    sae_name: dict[str, Any] = {}  # level, width, k: filled once the SAE is trained

    def rec(model: str, metric: str, value: float, **extra: Any) -> None:
        if model.startswith("dense"):
            if not dense_rows:
                return
        elif level != "chunk" or preset["sae"]:
            # sae -> sae_token at token level; the setting names level/width/k there and
            # whenever the SAE's size is not the default
            if level != "chunk":
                model = model.replace("sae", f"sae_{level}", 1)
            tag = ",".join(f"{k}={v}" for k, v in sae_name.items())
            extra["setting"] = ",".join(filter(None, [extra.get("setting"), tag]))
        if not model.startswith("dense") and preset["sae_seed"] != 0:
            tag = f"sae_seed={preset['sae_seed']}"
            extra["setting"] = ",".join(filter(None, [extra.get("setting"), tag]))
        records.append({"dataset": name, "model": model, "metric": metric, "value": value, **extra})

    frame = spec["load"](SHARED_DATA)
    if preset["max_docs"]:
        # quick run: a small sample of one-chunk documents keeps the embedding cheap
        frame = frame.sample(n=preset["max_docs"], random_state=0).reset_index(drop=True)
        frame["doc"] = frame["doc"].str.split().str[: preset["words"]].str.join(" ")
    texts = frame["doc"].tolist()
    classes = frame[spec["classes"]].to_numpy()
    sae_name["level"] = level
    embedder = Embedder(
        progress=not quiet, batch_size=32, max_chunks=spec["max_chunks"], level=level
    )

    start = time.perf_counter()
    sae_emb = embedder.embed(texts)  # what the SAE reads: chunk or token rows
    rec("sae", "seconds", time.perf_counter() - start, setting="embed (cached)", n=len(texts))
    # the dense baselines read chunk vectors (cached by the token pass as well)
    emb = (
        sae_emb
        if level == "chunk"
        else Embedder.from_spec(
            {**embedder.spec(), "level": "chunk"}, progress=not quiet, batch_size=32
        ).embed(texts)
    )
    # uncached embedding speed on a sample (the cache would hide it)
    sample = texts[: preset["timing_docs"]]
    timer = Embedder(
        embedder.model,
        model_id="timing",
        cache_dir=False,
        progress=False,
        level=level,
        max_chunks=spec["max_chunks"],
    )
    start = time.perf_counter()
    timer.embed(sample)
    per_1000 = (time.perf_counter() - start) / len(sample) * 1000
    rec(
        "sae",
        "embed_seconds_per_1000",
        per_1000,
        setting=f"uncached,max_chunks={spec['max_chunks']},threads={torch.get_num_threads()}",
        n=len(sample),
    )

    start = time.perf_counter()
    model = TextSAE.fit(
        sae_emb,
        sae_config=preset.get("sae"),
        train_config={"seed": preset["sae_seed"]},
        embedder=embedder,
        max_train_rows=preset["max_train_rows"],
    )
    train_s = time.perf_counter() - start
    sae_name.update(width=model.n_latents, k=model.sae.config.k)
    rec("sae", "seconds", train_s, setting="train", n=len(texts))
    rec("sae", "seconds", train_s / len(texts) * 1000, setting="train per 1000 docs", n=len(texts))
    codes = model.doc_codes(sae_emb)
    start = time.perf_counter()
    labels = label_latents(texts, codes)
    model.set_labels(labels["label"].tolist(), labels["terms"].tolist())
    rec("sae", "seconds", time.perf_counter() - start, setting="label", n=len(texts))
    if not quiet:
        alive = labels[labels["n_active"] > 0].sort_values("density", ascending=False)
        print(
            f"\n[{name}] {len(texts)} docs, {sae_emb.vectors.shape[0]} {level}s, "
            f"{(model.density > 0).sum()} live latents of {model.n_latents}; densest:"
        )
        print(
            format_table(
                alive.head(8).reset_index()[["latent", "label", "density"]].to_dict("records")
            )
        )

    doc_vectors = emb.doc_vectors()  # what the dense baselines read
    if "diff" in preset["tasks"]:
        # planted differences
        start = time.perf_counter()
        n_trials = 0
        for rate in preset["rates"]:
            trials = [
                planted_differences(codes, doc_vectors, classes, prop, rate, seed)
                for prop in spec["planted"]
                for seed in preset["seeds"]
            ]
            n_trials += len(trials)
            setting = f"rate={rate:g}"
            for method in METHODS:
                ranks = np.asarray([t[method] for t in trials])
                for metric, value in (
                    ("planted_top5_rate", (ranks <= 5).mean()),
                    ("planted_top20_rate", (ranks <= 20).mean()),
                    ("planted_first_rank", np.median(ranks)),
                ):
                    rec(method, metric, float(value), setting=setting, n=len(ranks))
        rec(
            "sae",
            "seconds",
            (time.perf_counter() - start) / n_trials,
            setting="diff (per trial, 4 methods)",
        )

    if "correlations" in preset["tasks"]:
        # planted correlations
        start = time.perf_counter()
        # the default firing floor, and any activation (the toolkit's rule)
        for share, pair_model in ((FIRING_SHARE, "sae"), (0.0, "sae_any_activation")):
            for x, y in spec["pairs"]:
                pair = f"pair={x}+{y}"
                ranks = {"planted": [], "control": []}
                for seed in preset["seeds"]:
                    result = planted_correlation(
                        model, sae_emb, classes, x, y, seed, firing_share=share
                    )
                    for metric, value in result.items():
                        rec(pair_model, metric, value, setting=pair, seed=seed)
                    ranks["planted"].append(result["planted_pair_rank"])
                    ranks["control"].append(result.get("control_pair_rank", NONE_RANK))
                for which, values in ranks.items():
                    n = len(values)
                    top10 = float(np.mean(np.asarray(values) <= 10))
                    rec(pair_model, f"{which}_pair_top10_rate", top10, setting=pair, n=n)
                    median = float(np.median(values))
                    rec(pair_model, f"{which}_pair_median_rank", median, setting=pair, n=n)
        rec(
            "sae",
            "seconds",
            (time.perf_counter() - start) / len(spec["pairs"]) / 2,
            setting="correlations (per pair, 2 corpora)",
        )

    if "retrieval" in preset["tasks"]:
        # property retrieval: the score (share of the document's mass), the former one
        # (sum) and dense retrieval, on the queries and on the held-out queries
        sae_s = dense_s = 0.0
        n_q = 0
        query_sets = {"mean": spec["queries"], "held-out queries": spec.get("held_out_queries")}
        for set_name, queries in query_sets.items():
            if not queries:
                continue
            precisions: dict[tuple[str, str], list[float]] = {}
            for key, query in queries.items():
                truth = relevant(frame, key, spec["classes"])
                if truth.sum() < 10:
                    continue
                start = time.perf_counter()
                weights = query_latents(model, query, embedder)
                hits = property_retrieval(codes, weights, model.p90, top=50)
                sae_s += time.perf_counter() - start
                summed = property_retrieval(codes, weights, model.p90, top=50, share=False)
                start = time.perf_counter()
                query_vector = embedder.embed_query(query)
                dense = dense_retrieval(query_vector, emb, top=50)
                dense_s += time.perf_counter() - start
                feedback = dense_feedback_retrieval(query_vector, dense, emb, doc_vectors, top=50)
                n_q += 1
                for (model_name, variant), result in (
                    (("sae", ""), hits),
                    (("sae", "score=sum"), summed),
                    (("dense", ""), dense),
                    (("dense_prf", ""), feedback),
                ):
                    p = float(truth[result["doc"].to_numpy()].mean())
                    precisions.setdefault((model_name, variant), []).append(p)
                    if set_name == "mean":
                        setting = ",".join(filter(None, [f"query={key}", variant]))
                        rec(model_name, "precision@50", p, setting=setting)
            for (model_name, variant), values in precisions.items():
                setting = ",".join(filter(None, [set_name, variant]))
                rec(
                    model_name,
                    "precision@50",
                    float(np.mean(values)),
                    setting=setting,
                    n=len(values),
                )
        rec("sae", "seconds", sae_s / n_q, setting="property retrieval (per query)")
        rec("dense", "seconds", dense_s / n_q, setting="dense retrieval (per query)")

    if "clustering" in preset["tasks"]:
        # targeted clustering
        from sklearn.cluster import KMeans
        from sklearn.metrics import adjusted_rand_score

        keep = np.isin(classes, spec["cluster_classes"])
        k = len(spec["cluster_classes"])
        sub_codes, sub_classes = codes[keep], classes[keep]
        axis = [spec["queries"][c] for c in spec["cluster_classes"]]
        start = time.perf_counter()
        latents = query_latents(model, axis, embedder)
        filtered = targeted_clustering(
            sub_codes, k, latents, model.labels, seed=0, directions=model.directions
        )
        rec("sae", "seconds", time.perf_counter() - start, setting="clustering (filtered)")
        # k-means (and spectral) results move with their random state by +-0.02 ARI on
        # the arXiv sample: each ARI is the mean over the trial seeds, for both sides
        for representation in CODE_REPRESENTATIONS:
            for axis_name, axis_latents in (("filtered", latents), ("unfiltered", None)):
                aris = [
                    adjusted_rand_score(
                        sub_classes,
                        targeted_clustering(
                            sub_codes,
                            k,
                            axis_latents,
                            model.labels,
                            seed=trial,
                            representation=representation,
                            directions=model.directions,
                        ).assignments,
                    )
                    for trial in preset["seeds"]
                ]
                rec(
                    "sae",
                    "ari",
                    float(np.mean(aris)),
                    setting=f"{axis_name},{representation}",
                    n=int(keep.sum()),
                )
        # anchored: one cluster per class query, k-means started once from each query's
        # top documents (a fixed start: one run, no trial seeds); the dense side anchored
        # the same way, on cosine to the document vectors it clusters
        dense_x = doc_vectors[keep]
        anchors = query_anchors(model, sub_codes, axis, embedder)
        similarity = dense_x @ np.stack([embedder.embed_query(q) for q in axis]).T
        dense_anchors = [best_documents(similarity[:, c], ANCHOR_DOCS) for c in range(k)]
        # how pure each side's anchors are: the share of their documents in the query's class
        for model_name, found in (("sae", anchors), ("dense", dense_anchors)):
            purity = [
                np.mean(sub_classes[d] == c)
                for d, c in zip(found, spec["cluster_classes"], strict=True)
            ]
            rec(model_name, "anchor_purity", float(np.mean(purity)), setting="anchored", n=k)
        for representation in ("decoded", "embedding"):  # the latter: the library default
            anchored = targeted_clustering(
                sub_codes,
                anchors=anchors,
                representation=representation,
                directions=model.directions,
                vectors=dense_x,
            )
            rec(
                "sae",
                "ari",
                adjusted_rand_score(sub_classes, anchored.assignments),
                setting=f"unfiltered,{representation},anchored",
                n=int(keep.sum()),
            )
        rec(
            "dense",
            "ari",
            adjusted_rand_score(sub_classes, anchored_kmeans(dense_x, dense_anchors)),
            setting="k-means,anchored",
            n=int(keep.sum()),
        )
        aris = [
            adjusted_rand_score(
                sub_classes,
                KMeans(n_clusters=k, n_init=10, random_state=trial).fit_predict(dense_x),
            )
            for trial in preset["seeds"]
        ]
        rec("dense", "ari", float(np.mean(aris)), setting="k-means", n=int(keep.sum()))
        # the number of clusters chosen by the silhouette, for both (no class count given;
        # one k-means seed: each count's fit is a full k-means)
        auto = targeted_clustering(
            sub_codes, None, representation="decoded", directions=model.directions
        )
        dense_k, dense_auto, _ = choose_n_clusters(
            lambda c: KMeans(n_clusters=c, n_init=10, random_state=0).fit_predict(dense_x),
            lambda assigned: mean_silhouette(dense_x, assigned),
            len(dense_x),
        )
        for model_name, assigned, chosen_k, setting in (
            ("sae", auto.assignments, len(auto.summary), "unfiltered,decoded,auto k"),
            ("dense", dense_auto, dense_k, "k-means,auto k"),
        ):
            rec(model_name, "ari", adjusted_rand_score(sub_classes, assigned), setting=setting)
            rec(model_name, "n_clusters", chosen_k, setting=setting, n=int(keep.sum()))
        if not quiet:
            print(
                format_table(
                    filtered.summary.assign(latents=filtered.summary["latents"].map(str)).to_dict(
                        "records"
                    )
                )
            )

    return records


def summarize(records: list[dict[str, Any]]) -> str:
    """The records without per-query and per-seed rows, as a table."""
    rows = [
        {k: r.get(k) for k in ("dataset", "model", "metric", "setting", "value", "n")}
        for r in records
        if not str(r.get("setting", "")).startswith("query=") and "seed" not in r
    ]
    return format_table(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small smoke run (CI)")
    parser.add_argument("--json", default=None, help="write records here")
    parser.add_argument("--corpus", nargs="+", default=list(CORPORA), choices=list(CORPORA))
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (1: the SAE is small and CI is busy)"
    )
    parser.add_argument(
        "--expansion", type=int, default=None, help="SAE latents per embedding dimension"
    )
    parser.add_argument("--k", type=int, default=None, help="active latents per chunk")
    parser.add_argument(
        "--level",
        nargs="+",
        default=["chunk"],
        choices=["chunk", "token"],
        help="embedding levels the SAE reads (rows sae / sae_token)",
    )
    parser.add_argument(
        "--max-train-rows",
        type=int,
        default=DEFAULT_MAX_TRAIN_ROWS,
        help="SAE training rows at most (a seeded sample; matters at token level)",
    )
    parser.add_argument(
        "--sae-seed", type=int, default=0, help="the SAE's training seed (rows say it when not 0)"
    )
    parser.add_argument(
        "--rates",
        nargs="+",
        type=float,
        default=None,
        help="planted-class shares of A for the diff task (default 0.05 0.1 0.2 0.3)",
    )
    parser.add_argument(
        "--tasks",
        nargs="+",
        default=list(TASKS),
        choices=list(TASKS),
        help="which measures to run (default: all)",
    )
    args = parser.parse_args(argv)
    if not SHARED_DATA.is_dir():
        print(f"shared data not found at {SHARED_DATA}", file=sys.stderr)
        return 1
    torch.set_num_threads(args.threads)
    preset = dict(QUICK if args.quick else FULL)
    overrides = {"expansion": args.expansion, "k": args.k}
    preset["sae"] = {key: value for key, value in overrides.items() if value is not None} or None
    preset["max_train_rows"] = args.max_train_rows
    preset["sae_seed"], preset["tasks"] = args.sae_seed, set(args.tasks)
    if args.rates:
        preset["rates"] = args.rates
    records: list[dict[str, Any]] = []
    for name in args.corpus:
        for i, level in enumerate(args.level):
            records.extend(
                run_corpus(name, CORPORA[name], preset, args.quiet, level, dense_rows=i == 0)
            )
    print(summarize(records))
    if args.json:
        write_records(args.json, records)
        print(f"records: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
