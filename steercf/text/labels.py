"""Latent labels without any network service.

For each latent, the words and phrases most distinctive of its top-activating
documents against the documents where it does not fire: the log-odds ratio of
document frequencies divided by its standard error (a z-score, so a word seen in one
top document and nowhere else does not win on a tiny count), over a binary
bag of uni- and bigrams. Top documents, density and the terms go in a DataFrame.

A user-supplied labeller (e.g. an LLM call) plugs in as any callable taking a
:class:`LatentContext` and returning a label string.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pandas as pd

from steercf.errors import InputError
from steercf.text.documents import check_texts

DEFAULT_TOP_DOCS = 20
DEFAULT_TERMS = 5
LABEL_TERMS = 3  # terms joined into the short label


@dataclass
class LatentContext:
    """What a labeller sees about one latent.

    Attributes:
        latent: latent id.
        density: share of documents it fires on.
        top_docs: indices of its top-activating documents, strongest first.
        top_texts: their texts.
        negative_texts: a sample of documents where it does not fire.
        terms: distinctive terms from the built-in contrast, strongest first.
    """

    latent: int
    density: float
    top_docs: list[int]
    top_texts: list[str]
    negative_texts: list[str] = field(default_factory=list)
    terms: list[str] = field(default_factory=list)


class Labeller(Protocol):
    """Any callable ``(LatentContext) -> str``; return ``""`` to keep no label."""

    def __call__(self, context: LatentContext) -> str: ...


def term_label(context: LatentContext) -> str:
    """The default labeller: the first :data:`LABEL_TERMS` distinctive terms."""
    return ", ".join(context.terms[:LABEL_TERMS])


def _vectorize(texts: list[str], min_df: int, max_features: int) -> tuple[Any, np.ndarray]:
    from sklearn.feature_extraction.text import CountVectorizer

    # Letters only (no numbers / years), English stop words, uni- and bigrams; a term
    # in more than half the documents cannot be distinctive of a latent's top few.
    vectorizer = CountVectorizer(
        binary=True,
        stop_words="english",
        ngram_range=(1, 2),
        min_df=min(min_df, len(texts)),
        max_df=0.5 if len(texts) >= 10 else 1.0,
        max_features=max_features,
        token_pattern=r"(?u)\b[a-zA-Z][a-zA-Z\-]+[a-zA-Z]\b",
    )
    try:
        x = vectorizer.fit_transform(texts).tocsr().astype(np.float32)
    except ValueError:  # no term survives (tiny or non-English corpus)
        return None, np.array([], dtype=object)
    return x, vectorizer.get_feature_names_out()


def top_documents(codes: np.ndarray, latent: int, top: int) -> np.ndarray:
    """Indices of the ``top`` documents where ``latent`` fires most, strongest first."""
    column = codes[:, latent]
    active = np.flatnonzero(column > 0)
    order = np.argsort(-column[active], kind="stable")
    return active[order[:top]]


def distinctive_terms(
    texts: Sequence[str],
    codes: np.ndarray,
    latents: Sequence[int] | None = None,
    top_docs: int = DEFAULT_TOP_DOCS,
    n_terms: int = DEFAULT_TERMS,
    min_df: int = 2,
    max_features: int = 20_000,
    prior: float = 0.5,
) -> list[list[str]]:
    """Terms most distinctive of each latent's top documents vs. its non-firing ones.

    Args:
        texts: (n_docs,) documents.
        codes: (n_docs, n_latents) document codes.
        latents: which latents (default all).
        top_docs: top-activating documents per latent (the positive side).
        n_terms: terms returned per latent.
        prior: pseudo-count added to each cell of the 2x2 document-frequency table.

    Returns:
        One list of up to ``n_terms`` terms per requested latent (empty for a latent
        that never fires or when no term is distinctive).
    """
    texts = check_texts(texts)
    codes = np.asarray(codes, dtype=np.float32)
    if codes.ndim != 2 or codes.shape[0] != len(texts):
        raise InputError(f"codes must have shape ({len(texts)}, n_latents), got {codes.shape}")
    latents = list(range(codes.shape[1])) if latents is None else [int(j) for j in latents]
    x, vocab = _vectorize(texts, min_df, max_features)
    out: list[list[str]] = [[] for _ in latents]
    if x is None:
        return out
    n = len(texts)
    df_all = np.asarray(x.sum(0)).ravel()
    fired = codes > 0
    from scipy import sparse

    for start in range(0, len(latents), 128):
        block = latents[start : start + 128]
        rows, cols = [], []
        for b, j in enumerate(block):
            docs = top_documents(codes, j, top_docs)
            rows.extend([b] * len(docs))
            cols.extend(docs.tolist())
        top_ind = sparse.csr_matrix(
            (np.ones(len(rows), np.float32), (rows, cols)), shape=(len(block), n)
        )
        df_top = np.asarray((top_ind @ x).todense())  # (block, V)
        fired_block = sparse.csr_matrix(fired[:, block].T.astype(np.float32))
        df_fired = np.asarray((fired_block @ x).todense())
        n_top = np.asarray(top_ind.sum(1)).ravel()[:, None]
        n_neg = n - fired[:, block].sum(0)[:, None]
        df_neg = df_all[None, :] - df_fired
        a, b_ = df_top + prior, n_top - df_top + prior
        c, d = df_neg + prior, n_neg - df_neg + prior
        z = (np.log(a / b_) - np.log(c / d)) / np.sqrt(1 / a + 1 / b_ + 1 / c + 1 / d)
        z[df_top < 2] = -np.inf  # a term must recur among the top documents
        for b, _j in enumerate(block):
            if n_top[b, 0] == 0:
                continue
            best = np.argsort(-z[b])[: n_terms * 3]
            best = [t for t in best if np.isfinite(z[b, t]) and z[b, t] > 0]
            out[start + b] = _dedupe([str(vocab[t]) for t in best])[:n_terms]
    return out


def _dedupe(terms: list[str]) -> list[str]:
    """Drop a unigram already inside a kept bigram and a bigram made of kept words."""
    kept: list[str] = []
    for term in terms:
        words = set(term.split())
        if any(words <= set(k.split()) or set(k.split()) <= words for k in kept):
            continue
        kept.append(term)
    return kept


def label_latents(
    texts: Sequence[str],
    codes: np.ndarray,
    labeller: Labeller | Callable[[LatentContext], str] | None = None,
    latents: Sequence[int] | None = None,
    top_docs: int = DEFAULT_TOP_DOCS,
    n_terms: int = DEFAULT_TERMS,
    n_negative: int = 10,
    seed: int = 0,
) -> pd.DataFrame:
    """Describe latents by their documents.

    Args:
        texts: (n_docs,) documents; codes: (n_docs, n_latents) their codes.
        labeller: ``(LatentContext) -> str``; default :func:`term_label`.
        latents: which latents (default all).
        top_docs: top documents per latent used for terms and given to the labeller.
        n_negative: non-firing documents sampled for the labeller's context.

    Returns:
        DataFrame indexed by latent with ``label`` (str), ``terms`` (list), ``density``
        (share of documents it fires on), ``n_active``, ``top_docs`` (list of indices).
    """
    texts = check_texts(texts)
    codes = np.asarray(codes, dtype=np.float32)
    latents = list(range(codes.shape[1])) if latents is None else [int(j) for j in latents]
    terms = distinctive_terms(texts, codes, latents, top_docs=top_docs, n_terms=n_terms)
    labeller = labeller or term_label
    rng = np.random.default_rng(seed)
    fired = codes > 0
    rows = []
    for j, latent_terms in zip(latents, terms, strict=True):
        docs = top_documents(codes, j, top_docs)
        off = np.flatnonzero(~fired[:, j])
        neg = rng.choice(off, min(n_negative, off.size), replace=False) if off.size else off
        context = LatentContext(
            latent=j,
            density=float(fired[:, j].mean()),
            top_docs=docs.tolist(),
            top_texts=[texts[i] for i in docs],
            negative_texts=[texts[i] for i in neg],
            terms=latent_terms,
        )
        label = labeller(context) if docs.size else ""
        if not isinstance(label, str):
            raise InputError(
                f"the labeller returned {type(label).__name__} for latent {j}, not str"
            )
        rows.append(
            {
                "latent": j,
                "label": label,
                "terms": latent_terms,
                "density": context.density,
                "n_active": int(fired[:, j].sum()),
                "top_docs": context.top_docs,
            }
        )
    return pd.DataFrame(rows).set_index("latent")
