"""Chunk (or token) embeddings of a corpus: vectors (n_rows, d) with the document of each
row, their checks, subsets, concatenation and ``.npz`` files."""

from __future__ import annotations

import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from steercf.errors import InputError
from steercf.text.common import unit_rows

LEVELS = ("chunk", "token")  # what one row of an Embeddings is


def check_level(level: Any) -> str:
    """``level`` if it is one of :data:`LEVELS`, else an :class:`InputError` naming it."""
    if level not in LEVELS:
        raise InputError(f"level must be one of {', '.join(map(repr, LEVELS))}, got {level!r}")
    return level


@dataclass
class Embeddings:
    """Chunk (or token) embeddings of a corpus.

    Attributes:
        vectors: (n_rows, d) float32, one row per chunk (``level="chunk"``) or per
            token (``level="token"``).
        doc_index: (n_rows,) int64, the document each row belongs to, non-decreasing,
            every document in ``range(n_docs)`` present at least once.
        n_docs: number of documents.
        level: ``"chunk"`` or ``"token"`` (:data:`LEVELS`): what a row is, so a model
            trained on these rows knows how to embed new documents.
    """

    vectors: np.ndarray
    doc_index: np.ndarray
    n_docs: int
    level: str = "chunk"

    def __post_init__(self) -> None:
        check_level(self.level)
        self.vectors = np.ascontiguousarray(self.vectors, dtype=np.float32)
        self.doc_index = np.asarray(self.doc_index, dtype=np.int64)
        if self.vectors.ndim != 2 or self.vectors.shape[0] == 0:
            raise InputError(
                f"embeddings must be a non-empty (n, d) array, got {self.vectors.shape}"
            )
        if self.doc_index.shape != (self.vectors.shape[0],):
            raise InputError("doc_index must have one entry per embedding row")
        if not np.isfinite(self.vectors).all():
            raise InputError("embeddings hold NaN or infinite values")
        counts = np.bincount(self.doc_index, minlength=self.n_docs) if self.n_docs else []
        if self.doc_index.min() < 0 or len(counts) != self.n_docs or not np.all(counts > 0):
            raise InputError("doc_index must cover every document 0..n_docs-1 at least once")

    @classmethod
    def from_array(cls, x: Any, doc_index: Any = None, level: str = "chunk") -> Embeddings:
        """Wrap precomputed vectors (n, d): one per document unless ``doc_index`` maps
        rows to documents; ``level``: what a row is (:data:`LEVELS`)."""
        x = np.asarray(x)
        if x.dtype.kind not in "biuf":
            raise InputError(f"embeddings must be numeric, got dtype {x.dtype}")
        if x.ndim != 2 or x.shape[0] == 0:
            raise InputError(f"embeddings must be a non-empty (n, d) array, got shape {x.shape}")
        if doc_index is None:
            doc_index = np.arange(x.shape[0])
        doc_index = np.asarray(doc_index, dtype=np.int64)
        n_docs = int(doc_index.max()) + 1 if doc_index.size else 0
        return cls(x, doc_index, n_docs, level)

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def doc_vectors(self) -> np.ndarray:
        """(n_docs, d) float32: each document's rows (chunks, or word pieces at token
        level) averaged and L2-normalised: one dense vector per document, what dense
        k-means and the clustering's ``"embedding"`` representation read."""
        vectors = np.zeros((self.n_docs, self.dim), np.float32)
        np.add.at(vectors, self.doc_index, self.vectors)
        return unit_rows(vectors)

    def subset(self, docs: Sequence[int] | np.ndarray) -> Embeddings:
        """The chunks of documents ``docs`` (in that order), renumbered 0..len(docs)-1."""
        docs = np.asarray(docs, dtype=np.int64)
        if docs.ndim != 1 or docs.size == 0:
            raise InputError("subset needs a non-empty 1-D list of document indices")
        if docs.min() < 0 or docs.max() >= self.n_docs:
            raise InputError(f"document indices must lie in 0..{self.n_docs - 1}")
        starts = np.searchsorted(self.doc_index, docs, side="left")
        ends = np.searchsorted(self.doc_index, docs, side="right")
        rows = np.concatenate([np.arange(s, e) for s, e in zip(starts, ends, strict=True)])
        new_index = np.repeat(np.arange(docs.size), ends - starts)
        return Embeddings(self.vectors[rows], new_index, int(docs.size), self.level)

    @staticmethod
    def concat(parts: Sequence[Embeddings]) -> Embeddings:
        """Documents of all ``parts`` (of one level) one after the other."""
        levels = {p.level for p in parts}
        if len(levels) > 1:
            raise InputError(f"cannot join embeddings of different levels {sorted(levels)}")
        offsets = np.cumsum([0] + [p.n_docs for p in parts])
        return Embeddings(
            np.concatenate([p.vectors for p in parts]),
            np.concatenate([p.doc_index + o for p, o in zip(parts, offsets, strict=False)]),
            int(offsets[-1]),
            levels.pop() if levels else "chunk",
        )

    def save(self, path: str | os.PathLike) -> Path:
        """Write ``vectors``, ``doc_index`` and ``level`` to an ``.npz`` file atomically."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp.npz")
        np.savez(tmp, vectors=self.vectors, doc_index=self.doc_index, level=np.array(self.level))
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> Embeddings:
        """Read a file written by :meth:`save` (``allow_pickle=False``); files without a
        ``level`` (written before token level existed) hold chunks."""
        try:
            with np.load(Path(path), allow_pickle=False) as data:
                level = str(data["level"]) if "level" in data.files else "chunk"
                return cls.from_array(data["vectors"], data["doc_index"], check_level(level))
        except (OSError, KeyError, ValueError) as err:
            raise InputError(f"cannot read embeddings from {path}: {err}") from err
