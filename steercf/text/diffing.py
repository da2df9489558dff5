"""Task 1, dataset diffing: latents that tell two corpora apart (Jiang et al. 2025,
"Interpretable embeddings with sparse autoencoders: a data analysis toolkit").

Takes document codes ``(n_docs, n_latents)`` from :meth:`steercf.text.TextSAE.doc_codes`
(a latent "fires" on a document when its code is > 0).

Two one-sided tests per latent, each with the Benjamini-Hochberg false-discovery
correction over all latents tested:

* ``"frequency"`` (the toolkit's question): does the latent fire on more documents of
  A than of B? Fisher's exact test of the 2x2 table (fires / not, A / B).
* ``"strongest"``: are the latent's ``n_strongest`` most-activating documents of
  A u B drawn from A more often than A's share of the documents predicts? A
  hypergeometric test of that count.

A property that makes up a small share of one corpus barely moves a latent's firing
frequency: at 5 % of A, a latent that fires on 60 % of those documents and on 8 % of
all others differs by 0.03, within the noise of ~1,000-document halves. It does move
the latent's strongest documents, which then come from A. On the planted-difference
benchmark (``benchmarks/text.py``: a class planted at 5 % of one half of the corpus;
the count of 10 strongest documents chosen on BBC News over 25 and 50, then checked
on the arXiv sample), ranking by the strongest-documents test put a latent that
detects the class in the top 5 far more often than the frequency test (figures in
the README). So it is the default (:data:`DEFAULT_TEST`, :data:`DEFAULT_N_STRONGEST`).

Its price: 10 documents are little evidence. The smallest p-value it can give is
about (A's share of the documents) ** 10, ~1e-3 for equal halves, so over hundreds
of latents no q-value clears 0.05 however clear the difference; read its p-values as
a ranking. The frequency test (``test="frequency"``) can reach significance when a
property is common enough to move firing rates; its effect sizes (the frequency
difference and Cohen's h) are shown with either test.

By default every latent is ranked and its q-value shown rather than cut at a level;
pass ``fdr=0.05`` to keep only the latents the test calls.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import hypergeom

from steercf.errors import InputError
from steercf.ranking import whole_number
from steercf.text.common import check_codes, label_column

DEFAULT_FDR = None  # keep every latent (ranked, q-values shown); e.g. 0.05 to filter
DEFAULT_MIN_DIFF = 0.0  # optional extra floor on |freq_a - freq_b| (the toolkit used 0.03)
TESTS = ("strongest", "frequency")
DEFAULT_TEST = "strongest"  # chosen on the planted-difference benchmark (module docstring)
DEFAULT_N_STRONGEST = 10  # chosen on BBC News over 25 and 50; the arXiv sample agreed
DIFF_COLUMNS = [
    "rank",
    "latent",
    "freq_a",
    "freq_b",
    "diff",
    "rel_diff",
    "cohens_h",
    "strongest_a",
    "p_value",
    "q_value",
    "label",
]


def fisher_one_sided(count_a: np.ndarray, n_a: int, count_b: np.ndarray, n_b: int) -> np.ndarray:
    """One-sided Fisher exact p-values that A's rate exceeds B's, per latent.

    Args:
        count_a, count_b: (m,) documents of A / B on which each latent fires.
        n_a, n_b: documents in A / B.

    Returns:
        (m,) ``P(X >= count_a)`` for ``X ~ Hypergeometric(n_a + n_b, count_a + count_b,
        n_a)``: the chance that ``n_a`` documents drawn from the pooled corpus hold at
        least as many firing documents.
    """
    count_a = np.asarray(count_a, dtype=np.int64)
    total = count_a + np.asarray(count_b, dtype=np.int64)
    return hypergeometric_one_sided(count_a, np.full_like(count_a, n_a), total, n_a + n_b)


def strongest_in_a(a: np.ndarray, b: np.ndarray, n_strongest: int) -> tuple[np.ndarray, np.ndarray]:
    """How many of each latent's strongest documents of A u B are A's.

    Args:
        a: (n_a, m) codes of A; b: (n_b, m) codes of B.
        n_strongest: documents counted per latent: those whose code is at least its
            ``n_strongest``-th largest, among the documents it fires on (all of them when
            it fires on fewer). Documents tied with that code are all counted, so tied
            codes cannot pick one side arbitrarily: with binary codes every firing
            document is counted and the test is the frequency test's hypergeometric.

    Returns:
        ``(from_a, counted)``, each (m,) int: of the ``counted`` documents, how many are
        in A.
    """
    # no narrowing cast: float64 codes that differ in the 9th digit stay different
    dtype = np.result_type(a.dtype, b.dtype, np.float32)
    union = np.concatenate([a, b]).astype(dtype, copy=False)
    n_total = union.shape[0]
    n = min(n_strongest, n_total)
    kth = np.partition(union, n_total - n, axis=0)[n_total - n]  # (m,) n-th largest code
    top = (union >= kth) & (union > 0)  # (n_total, m)
    return top[: a.shape[0]].sum(0).astype(np.int64), top.sum(0).astype(np.int64)


def hypergeometric_one_sided(
    hits: np.ndarray, drawn: np.ndarray, n_in: Any, n_total: int
) -> np.ndarray:
    """(m,) ``P(X >= hits)`` for ``X ~ Hypergeometric(n_total, n_in, drawn)``: the chance
    that ``drawn`` documents picked at random hold at least ``hits`` of the ``n_in``
    marked ones (1 where nothing is drawn). ``n_in`` is an int or (m,). The one tail
    both tests use (:func:`fisher_one_sided` draws A's documents)."""
    p = hypergeom.sf(np.asarray(hits) - 1, n_total, n_in, np.asarray(drawn))
    return np.where(np.asarray(drawn) > 0, np.clip(p, 0.0, 1.0), 1.0)


def benjamini_hochberg(p_values: np.ndarray) -> np.ndarray:
    """(m,) Benjamini-Hochberg adjusted p-values (q-values) of (m,) p-values."""
    p = np.asarray(p_values, dtype=np.float64)
    m = p.size
    if m == 0:
        return p.copy()
    order = np.argsort(p, kind="stable")
    scaled = p[order] * m / np.arange(1, m + 1)
    # q_(i) = min_{j >= i} p_(j) m / j: a running minimum from the largest p down
    q_sorted = np.minimum.accumulate(scaled[::-1])[::-1]
    q = np.empty(m)
    q[order] = np.minimum(q_sorted, 1.0)
    return q


def cohens_h(freq_a: np.ndarray, freq_b: np.ndarray) -> np.ndarray:
    """(m,) Cohen's h, ``2 asin(sqrt(p_a)) - 2 asin(sqrt(p_b))``: an effect size for two
    proportions that, unlike their difference, counts 0.00 -> 0.05 as a larger change
    than 0.45 -> 0.50 (0.2 small, 0.5 medium, 0.8 large)."""
    return 2 * np.arcsin(np.sqrt(freq_a)) - 2 * np.arcsin(np.sqrt(freq_b))


def diff_datasets(
    codes_a: Any,
    codes_b: Any,
    labels: Sequence[str] | None = None,
    fdr: float | None = DEFAULT_FDR,
    min_diff: float = DEFAULT_MIN_DIFF,
    direction: str = "a",
    top: int | None = None,
    test: str = DEFAULT_TEST,
    n_strongest: int = DEFAULT_N_STRONGEST,
) -> pd.DataFrame:
    """Latents that tell two corpora apart, ranked by a one-sided test (module docstring).

    Args:
        codes_a: (n_a, n_latents) codes of corpus A; codes_b: (n_b, n_latents) of B.
        labels: (n_latents,) latent labels for the ``label`` column.
        fdr: keep latents whose Benjamini-Hochberg q-value is at most this (the expected
            share of false discoveries among the kept); None applies no q-value cut
            (every latent that fires in either corpus and leans to the asked side).
        min_diff: also require ``|freq_a - freq_b| >= min_diff`` (0: no floor).
        direction: ``"a"`` (latents leaning to A under ``test``: their strongest
            documents are A's more than A's share of documents, or they fire more often
            in A), ``"b"`` (leaning to B) or ``"both"`` (either; each latent tested in
            the direction it leans, both directions counted in the correction). With
            the default test a latent can lean to A while firing more often in B.
        top: keep at most this many rows (None: all).
        test: ``"strongest"`` (are the latent's strongest documents A's?) or
            ``"frequency"`` (does it fire on more of A's documents?).
        n_strongest: documents per latent the ``"strongest"`` test counts.

    Returns:
        DataFrame, one row per kept latent, smallest p-value first (ties: the larger
        lean for ``"strongest"``, then the larger ``|cohens_h|``), ``rank`` from 1, columns :data:`DIFF_COLUMNS`: the two
        frequencies, their difference ``diff = freq_a - freq_b``, ``rel_diff = diff /
        max(freq_a, freq_b)``, ``cohens_h`` (effect size), ``strongest_a`` (share of
        the latent's ``n_strongest`` strongest documents of A u B that are A's; A's
        share of all documents when nothing sets them apart), ``p_value`` (the
        ``test``'s, one-sided) and ``q_value`` (BH-adjusted). ``"b"`` and ``"both"``
        test B's side the same way (B's strongest documents, B's firing rate).

    Raises:
        InputError: mismatched latent counts, empty corpora, unknown ``direction`` or
            ``test``, ``fdr`` outside (0, 1], ``n_strongest`` below 1.
    """
    a = check_codes(codes_a, "codes_a")
    b = check_codes(codes_b, "codes_b", a.shape[1])
    if direction not in ("a", "b", "both"):
        raise InputError(f"direction must be 'a', 'b' or 'both', got {direction!r}")
    if fdr is not None and not 0 < fdr <= 1:
        raise InputError(f"fdr must be in (0, 1] or None, got {fdr}")
    if test not in TESTS:
        raise InputError(f"test must be one of {TESTS}, got {test!r}")
    n_strongest = whole_number(n_strongest, "n_strongest", minimum=1)
    count_a, count_b = (a > 0).sum(0), (b > 0).sum(0)
    n_a, n_b = a.shape[0], b.shape[0]
    fa, fb = count_a / n_a, count_b / n_b
    diff = fa - fb
    with np.errstate(invalid="ignore", divide="ignore"):
        rel = np.where(np.maximum(fa, fb) > 0, diff / np.maximum(fa, fb), 0.0)
    from_a, counted = strongest_in_a(a, b, n_strongest)
    strongest_a = np.where(counted > 0, from_a / np.maximum(counted, 1), np.nan)
    if test == "strongest":
        p_more_a = hypergeometric_one_sided(from_a, counted, n_a, n_a + n_b)
        p_more_b = hypergeometric_one_sided(counted - from_a, counted, n_b, n_a + n_b)
        # the side a latent leans to: its strongest documents, against A's share
        lean = strongest_a - n_a / (n_a + n_b)
    else:
        p_more_a = fisher_one_sided(count_a, n_a, count_b, n_b)
        p_more_b = fisher_one_sided(count_b, n_b, count_a, n_a)
        lean = diff
    tested = np.flatnonzero((count_a + count_b) > 0)
    if direction == "a":
        p = p_more_a
        q = np.ones_like(p)
        q[tested] = benjamini_hochberg(p[tested])
    elif direction == "b":
        p = p_more_b
        q = np.ones_like(p)
        q[tested] = benjamini_hochberg(p[tested])
    else:
        p = np.where(lean >= 0, p_more_a, p_more_b)
        # 2 m hypotheses (each latent, each direction); the other direction's p is ~1
        q_all = benjamini_hochberg(np.concatenate([p_more_a[tested], p_more_b[tested]]))
        q = np.ones_like(p)
        q[tested] = np.where(lean[tested] >= 0, q_all[: tested.size], q_all[tested.size :])
    h = cohens_h(fa, fb)
    keep = np.zeros(a.shape[1], bool)
    keep[tested] = True
    if direction == "a":
        keep &= lean > 0
    elif direction == "b":
        keep &= lean < 0
    if fdr is not None:
        keep &= q <= fdr
    keep &= np.abs(diff) >= min_diff
    latents = np.flatnonzero(keep)
    # ties in p: the larger effect first (for "strongest", the larger lean, then |h|)
    keys = [-np.abs(h[latents]), p[latents]]
    if test == "strongest":
        keys.insert(1, -np.abs(lean[latents]))
    latents = latents[np.lexsort(keys)]
    if top is not None:
        latents = latents[:top]
    return pd.DataFrame(
        {
            "rank": np.arange(1, len(latents) + 1),
            "latent": latents,
            "freq_a": fa[latents],
            "freq_b": fb[latents],
            "diff": diff[latents],
            "rel_diff": rel[latents],
            "cohens_h": h[latents],
            "strongest_a": strongest_a[latents],
            "p_value": p[latents],
            "q_value": q[latents],
            "label": label_column(labels, latents),
        },
        columns=DIFF_COLUMNS,
    )
