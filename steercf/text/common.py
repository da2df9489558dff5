"""Checks and helpers shared by the analysis modules (diffing, correlations, queries,
clustering, retrieval): document-code validation, the label column of a result table,
and the crude word stems that label matching compares."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from steercf.errors import InputError


def check_codes(codes: Any, name: str = "codes", n_latents: int | None = None) -> np.ndarray:
    """``codes`` as a numeric array of shape (n_docs, n_latents) with n_docs > 0.

    Raises:
        InputError: non-numeric, not 2-D, no documents, or ``n_latents`` columns expected
            and not found.
    """
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


def unit_rows(x: np.ndarray) -> np.ndarray:
    """(n, d) ``x`` with each row L2-normalised (an all-zero row stays zero)."""
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def label_column(labels: Sequence[str] | None, latents: np.ndarray) -> list[str]:
    """Labels (len(latents),) of ``latents``; empty strings when there are no labels."""
    if labels is None:
        return [""] * len(latents)
    return [str(labels[j]) for j in latents]


def label_words(terms: Sequence[str]) -> set[str]:
    """Crude stems of a label's words: lower case, plural -s dropped."""
    words = set()
    for term in terms:
        for word in re.findall(r"[a-z]+", str(term).lower()):
            words.add(word[:-1] if len(word) > 3 and word.endswith("s") else word)
    return words
