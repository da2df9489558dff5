"""TextSAE: a sparse autoencoder from :mod:`steercf.sae` over document chunk (or token)
embeddings.

Each row embedding (d,), a chunk's or a token's (``Embedder(level=...)``), gets an SAE
code (n_latents,); a document's code is the element-wise maximum over its rows' codes
(the published toolkit takes the max over tokens), so a latent is "on" for a document
when any part of it expresses the latent. The level is stored with the model (its
embedder spec), so a model trained on tokens embeds new documents at token level.

Token rows are many (~250 per BBC article): the SAE trains on a seeded sample of at most
``max_train_rows`` rows (:data:`DEFAULT_MAX_TRAIN_ROWS`), while calibration and document
codes use every row, streamed in batches (never an (n_rows, n_latents) array).

Default size, measured on the arXiv sample (2,000 abstracts, 2,339 chunks of 384-d
MiniLM vectors) and BBC News (2,225 first chunks) with ``benchmarks/text.py``: 384
latents (1x) with k = 32. Wider dictionaries split a topic over many narrow latents,
each firing on a few documents, and lost on every task at this corpus size (1x / 4x /
8x, k 32): clustering ARI on latents chosen by the class queries 0.73 / 0.41 / 0.15
(BBC) and 0.55 / 0.28 / 0.16 (arXiv); property retrieval precision@50 1.00 / 0.98 /
0.97 and 0.65 / 0.63 / 0.62; a planted 10 % share of one class in the top 5 diffing
latents (FDR 5 %) in 88 / 44 / 36 % of BBC trials. With corpora of tens of thousands
of documents, raise ``expansion``. Training follows
O'Neill et al.: normalised MSE + AuxK 1/32, gradient clipping 1.0, decoder bias at the
geometric median; batches of 256 rows and the core's width-scaled learning rate because
a few thousand chunks give only a few optimiser steps per epoch at batch 1024.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

from steercf.errors import InputError, ModelFileError
from steercf.io import read_model, require_tensors, save_model_dir
from steercf.ranking import whole_number
from steercf.sae import SAEConfig, SparseAutoencoder, TrainConfig, train_sae
from steercf.text.embed import Embedder, Embeddings

KIND = "TextSAE"
DEFAULT_SAE = {"expansion": 1, "k": 32, "decoder_bias_init": "median"}
DEFAULT_TRAIN = {"loss": "nmse", "batch_size": 256, "max_epochs": 300, "patience": 20}
ENCODE_BATCH = 4096
# Active latents per chunk of the *sparse model*, the one to train for finding documents
# (diffing and property search); the default k (32) serves correlations and clustering
# better (README, "Text"; benchmarks/text.py --k K --sae-seed S).
# * Diffing: a planted class at 5 % of A is found in the top 5 most often at k 2 - 8;
#   BBC News ties k 2 / 4 / 8 over 8 SAE seeds (0.88 / 0.89 / 0.89), the arXiv sample
#   prefers 4 (0.83 against 0.78 / 0.74, 4 seeds), so the choice saw both corpora.
# * Property search, precision@50 over SAE seeds 0-7 on the arXiv sample (dense 0.651),
#   k 4 / 8 / 16 / 32: 0.682 / 0.685 / 0.680 / 0.678; on the 11 held-out categories
#   (queries written after the share score was chosen; used here to choose k, so no
#   longer untouched): 0.330 / 0.327 / 0.314 / 0.299 (dense 0.324). k 4 is best there
#   and needs no third model.
SPARSE_K = 4
# rows the SAE trains on at most (a seeded sample beyond): chunk corpora (a few thousand
# rows) train on all of them. Token rows (BBC first chunks: 529 K; arXiv: 385 K) are
# near-duplicates of their neighbours; on this 2-core machine an epoch over 65,536 of
# them took 3.9 s and the validation loss was still falling slowly at epoch 20 (early
# stopping would run to max_epochs: ~20 min), over 16,384 about 1 s (BBC: 470 s to train
# under load). Chosen for training time; benchmarks/text.py --level token --max-train-rows
# measures the tasks.
DEFAULT_MAX_TRAIN_ROWS = 16_384
CENTROID_TOP = 20  # chunks averaged into a latent's centroid
# A latent counts as on in a document, for co-occurrence, from this share of its p90
# activation. Chosen on BBC News over 0 / 0.25 / 0.5 / 0.75 (planted pairs in the top 10
# NPMI pairs, SAE seeds 0-1), then measured on the arXiv sample (benchmarks/text.py).
FIRING_SHARE = 0.5


class TextSAE:
    """A sparse autoencoder over chunk embeddings plus what analysis needs about it.

    Attributes:
        sae: the :class:`steercf.sae.SparseAutoencoder` (the sparse core, unchanged).
        embedder_spec: how documents were embedded (:meth:`Embedder.spec`), so a loaded
            model embeds new documents the same way; None when trained on precomputed
            vectors.
        p90: (n_latents,) 90th percentile of each latent's non-zero document activations
            on the training corpus (1 where it never fired): the retrieval normaliser.
        density: (n_latents,) share of training documents each latent fires on.
        labels: one short label per latent (``""`` until :meth:`set_labels`).
        terms: per latent, the distinctive terms its label was made from.
        metadata: free JSON (training metrics, corpus size...).
        centroids: (n_latents, d) unit vectors, see :meth:`calibrate`.
    """

    def __init__(
        self,
        sae: SparseAutoencoder,
        embedder_spec: dict[str, Any] | None = None,
        p90: np.ndarray | None = None,
        density: np.ndarray | None = None,
        labels: Sequence[str] | None = None,
        terms: Sequence[Sequence[str]] | None = None,
        metadata: dict[str, Any] | None = None,
        centroids: np.ndarray | None = None,
    ) -> None:
        n = sae.config.n_latents
        d = sae.config.d_in
        self.sae = sae.eval()
        # None: trained on precomputed vectors, so queries need an explicit embedder
        self.embedder_spec = None if embedder_spec is None else dict(embedder_spec)
        self.p90 = np.ones(n, np.float32) if p90 is None else np.asarray(p90, np.float32)
        self.density = (
            np.zeros(n, np.float32) if density is None else np.asarray(density, np.float32)
        )
        self.labels = [""] * n if labels is None else [str(label) for label in labels]
        self.terms = [[] for _ in range(n)] if terms is None else [list(t) for t in terms]
        self.metadata = dict(metadata or {})
        self.centroids = (
            np.zeros((n, d), np.float32) if centroids is None else np.asarray(centroids, np.float32)
        )
        if self.centroids.shape != (n, d):
            raise InputError(f"centroids must have shape ({n}, {d}), got {self.centroids.shape}")
        if not (len(self.p90) == len(self.density) == len(self.labels) == len(self.terms) == n):
            raise InputError(f"p90, density, labels and terms need one entry per latent ({n})")

    @property
    def n_latents(self) -> int:
        return self.sae.config.n_latents

    @property
    def level(self) -> str:
        """``"chunk"`` or ``"token"``: the rows the SAE was trained on (and encodes)."""
        spec = self.embedder_spec or {}
        return str(spec.get("level") or self.metadata.get("level") or "chunk")

    # ---------------------------------------------------------------- training
    @classmethod
    def fit(
        cls,
        embeddings: Embeddings,
        sae_config: SAEConfig | dict[str, Any] | None = None,
        train_config: TrainConfig | dict[str, Any] | None = None,
        embedder: Embedder | None = None,
        max_train_rows: int | None = DEFAULT_MAX_TRAIN_ROWS,
    ) -> TextSAE:
        """Train on the chunk (or token) embeddings (n_rows, d) of a corpus.

        Args:
            sae_config: :class:`SAEConfig` or overrides of :data:`DEFAULT_SAE`.
            train_config: :class:`TrainConfig` or overrides of :data:`DEFAULT_TRAIN`.
            embedder: the embedder that made ``embeddings`` (its spec, level included,
                is stored); its level must be the embeddings' level.
            max_train_rows: train on a sample of at most this many rows, drawn with
                ``train_config.seed`` (None: all rows); calibration uses every row.

        ``metadata["validation"]`` holds the reconstruction quality (``cosine``, ``nmse``,
        ``l0``) on the rows held out of training (``train_config.val_fraction``) at the
        kept epoch, or None when none were held out.
        """
        if not isinstance(embeddings, Embeddings):
            embeddings = Embeddings.from_array(embeddings)
        if embedder is not None and embedder.level != embeddings.level:
            raise InputError(
                f"the embeddings are {embeddings.level}-level but the embedder's level is "
                f"{embedder.level!r}: embed with level={embeddings.level!r} or re-embed"
            )
        if max_train_rows is not None:
            max_train_rows = whole_number(max_train_rows, "max_train_rows", minimum=2)
        d = embeddings.dim
        if not isinstance(sae_config, SAEConfig):
            sae_config = SAEConfig(d_in=d, **{**DEFAULT_SAE, **(sae_config or {})})
        if sae_config.d_in != d:
            raise InputError(f"sae_config.d_in = {sae_config.d_in} but the embeddings are {d}-d")
        if not isinstance(train_config, TrainConfig):
            train_config = TrainConfig(
                **{**DEFAULT_TRAIN, "progress": False, **(train_config or {})}
            )
        rows = embeddings.vectors
        if max_train_rows is not None and len(rows) > max_train_rows:
            pick = np.random.default_rng(train_config.seed).choice(
                len(rows), max_train_rows, replace=False
            )
            rows = rows[np.sort(pick)]
        result = train_sae(rows, sae_config, train_config)
        spec = embedder.spec() if embedder is not None else None
        model = cls(result.sae, spec)
        best = result.history[result.best_epoch] if result.history else {}
        model.metadata.update(
            n_docs=embeddings.n_docs,
            n_chunks=int(embeddings.vectors.shape[0]),  # rows: chunks or tokens
            level=embeddings.level,
            n_train_rows=int(len(rows)),
            best_epoch=result.best_epoch,
            train_config=train_config.to_dict(),
            # quality on the chunks held out of training (val_fraction, the ones early
            # stopping watched); None when there were none
            validation=(
                {name: float(best[f"val_{name}"]) for name in ("cosine", "nmse", "l0")}
                if "val_cosine" in best
                else None
            ),
        )
        model.calibrate(embeddings)
        return model

    def calibrate(self, embeddings: Embeddings, top_chunks: int = CENTROID_TOP) -> None:
        """Set ``p90``, ``density`` and ``centroids`` from a corpus's chunk (or token)
        embeddings.

        ``centroids[l]`` (d,) is the unit-length activation-weighted mean of the
        ``top_chunks`` rows (chunks or tokens) where latent ``l`` fires most: where the
        latent lives in embedding space, comparable by cosine with any query embedding
        (a "semantic label" that needs no text).
        """
        n = self.n_latents
        top = min(top_chunks, embeddings.vectors.shape[0])
        best = np.zeros((0, n), np.float32)  # running top rows' codes per latent
        best_rows = np.zeros((0, n), np.int64)
        codes = np.zeros((embeddings.n_docs, n), np.float32)
        for start, chunk in self._row_codes(embeddings):
            self._max_into(codes, chunk, embeddings.doc_index[start : start + len(chunk)])
            values = np.concatenate([best, chunk])
            rows = np.concatenate(
                [
                    best_rows,
                    np.broadcast_to(np.arange(start, start + len(chunk))[:, None], chunk.shape),
                ]
            )
            keep = np.argpartition(-values, top - 1, axis=0)[:top]  # (top, n_latents)
            best = np.take_along_axis(values, keep, axis=0)
            best_rows = np.take_along_axis(rows, keep, axis=0)
        fired = codes > 0
        self.density = fired.mean(0).astype(np.float32)
        masked = np.where(fired, codes, np.nan)
        with np.errstate(all="ignore"), _quiet_nan():
            p90 = np.nanpercentile(masked, 90, axis=0)
        self.p90 = np.where(np.isfinite(p90) & (p90 > 0), p90, 1.0).astype(np.float32)
        # best: zero where fewer rows fired
        centroids = np.einsum("tl,tld->ld", best, embeddings.vectors[best_rows])
        norms = np.linalg.norm(centroids, axis=1, keepdims=True)
        self.centroids = (centroids / np.maximum(norms, 1e-12)).astype(np.float32)

    @property
    def directions(self) -> np.ndarray:
        """(n_latents, d) the latents' unit decoder directions (in the SAE's
        standardised embedding space): what :func:`targeted_clustering`'s ``"decoded"``
        representation sums."""
        return self.sae.W_dec.detach().cpu().numpy().astype(np.float32)

    def firing_floor(self, share: float = FIRING_SHARE) -> np.ndarray:
        """(n_latents,) the activation from which a latent counts as on in a document,
        ``share`` of its :attr:`p90` (the ``floor`` of :func:`latent_correlations`).

        Raises:
            InputError: ``share`` is not a finite number >= 0.
        """
        if not isinstance(share, int | float) or not np.isfinite(share) or share < 0:
            raise InputError(f"share must be a finite number >= 0, got {share!r}")
        return (share * self.p90).astype(np.float32)

    def _check_codes(self, codes: Any) -> np.ndarray:
        codes = np.asarray(codes, dtype=np.float32)
        if codes.ndim != 2 or codes.shape[1] != self.n_latents:
            raise InputError(f"codes must have shape (n_docs, {self.n_latents}), got {codes.shape}")
        if codes.shape[0] == 0:
            raise InputError("codes are empty (0 documents)")
        return codes

    # ---------------------------------------------------------------- encoding
    @torch.no_grad()
    def chunk_codes(self, embeddings: Embeddings | np.ndarray) -> np.ndarray:
        """SAE codes (n_chunks, n_latents) of chunk embeddings (n_chunks, d)."""
        x = embeddings.vectors if isinstance(embeddings, Embeddings) else np.asarray(embeddings)
        x = torch.as_tensor(np.ascontiguousarray(x, dtype=np.float32))
        if x.ndim != 2 or x.shape[1] != self.sae.config.d_in:
            raise InputError(
                f"embeddings must have shape (n, {self.sae.config.d_in}), got {tuple(x.shape)}: "
                "were they made by another embedding model?"
            )
        parts = [self.sae.encode(batch)[0] for batch in x.split(ENCODE_BATCH)]
        return torch.cat(parts).numpy()

    def doc_codes(self, embeddings: Embeddings) -> np.ndarray:
        """Document codes (n_docs, n_latents): the max over each document's row codes
        (chunks or tokens), computed ``ENCODE_BATCH`` rows at a time.

        Raises:
            InputError: ``embeddings`` are of another level than the model's (a token
                model needs token rows: embed with :meth:`embedder`).
        """
        if not isinstance(embeddings, Embeddings):
            embeddings = Embeddings.from_array(embeddings, level=self.level)
        if embeddings.level != self.level:
            raise InputError(
                f"the model was trained on {self.level}-level embeddings but got "
                f"{embeddings.level}-level ones: embed the documents with model.embedder()"
            )
        out = np.zeros((embeddings.n_docs, self.n_latents), np.float32)
        for start, chunk in self._row_codes(embeddings):
            self._max_into(out, chunk, embeddings.doc_index[start : start + len(chunk)])
        return out

    @torch.no_grad()
    def _row_codes(self, embeddings: Embeddings) -> Iterator[tuple[int, np.ndarray]]:
        """``(first row, codes (b, n_latents))`` per batch of ``ENCODE_BATCH`` rows."""
        x = embeddings.vectors
        for start in range(0, x.shape[0], ENCODE_BATCH):
            yield start, self.chunk_codes(x[start : start + ENCODE_BATCH])

    @staticmethod
    def _max_into(out: np.ndarray, codes: np.ndarray, doc_index: np.ndarray) -> None:
        """``out[d] = max(out[d], codes of d's rows)`` for a batch of rows: one
        ``reduceat`` per run of equal documents when ``doc_index`` is non-decreasing (as
        embedders make it), else ``np.maximum.at``. Codes are >= 0, so zeros are neutral."""
        if np.any(doc_index[1:] < doc_index[:-1]):  # rows not grouped by document
            np.maximum.at(out, doc_index, codes)
            return
        starts = np.flatnonzero(np.r_[True, doc_index[1:] != doc_index[:-1]])
        docs = doc_index[starts]
        out[docs] = np.maximum(out[docs], np.maximum.reduceat(codes, starts, axis=0))

    @torch.no_grad()
    def query_code(self, vector: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(codes (n_latents,), pre_activations (n_latents,))`` of one embedding (d,).

        The codes come from the same ``sae.encode`` as every document's (refit
        included), so a query and a document with equal embeddings get equal codes."""
        x = torch.as_tensor(np.asarray(vector, np.float32).reshape(1, -1))
        codes, _, _ = self.sae.encode(x)
        x_std, _, _ = self.sae.standardize(x)
        return codes[0].numpy(), self.sae.encode_pre(x_std)[0].numpy()

    # ------------------------------------------------------------------ labels
    def set_labels(
        self, labels: Sequence[str], terms: Sequence[Sequence[str]] | None = None
    ) -> None:
        """Store one label (and optionally its terms) per latent."""
        if len(labels) != self.n_latents:
            raise InputError(f"need {self.n_latents} labels, got {len(labels)}")
        self.labels = [str(label) for label in labels]
        if terms is not None:
            if len(terms) != self.n_latents:
                raise InputError(f"need {self.n_latents} term lists, got {len(terms)}")
            self.terms = [list(map(str, t)) for t in terms]

    def check_latents(self, latents: Any) -> np.ndarray:
        """Validate latent ids; raises :class:`steercf.errors.UnknownIdError`."""
        from steercf.errors import UnknownIdError

        ids = np.atleast_1d(np.asarray(latents))
        if ids.dtype.kind not in "iu":
            raise InputError(f"latent ids must be integers, got {latents!r}")
        bad = ids[(ids < 0) | (ids >= self.n_latents)]
        if bad.size:
            raise UnknownIdError(
                f"unknown latent id(s) {bad.tolist()}: the SAE has {self.n_latents}"
            )
        return ids.astype(np.int64)

    # ----------------------------------------------------------------- storage
    def save(self, path: str | os.PathLike, *, force: bool = False) -> None:
        """Write a model directory (atomically): this model's JSON + tensors, the SAE as
        child ``sae``; ``force``: write into a non-empty directory that is not a model."""
        config = {
            "embedder": self.embedder_spec,
            "labels": self.labels,
            "terms": self.terms,
            "metadata": self.metadata,
        }
        tensors = {
            "p90": torch.from_numpy(self.p90),
            "density": torch.from_numpy(self.density),
            "centroids": torch.from_numpy(self.centroids),
        }
        save_model_dir(
            path, KIND, config, tensors, children={"sae": self.sae.model_parts()}, force=force
        )

    @classmethod
    def load(cls, path: str | os.PathLike) -> TextSAE:
        """Read a directory written by :meth:`save`.

        Raises:
            ModelFileError: missing/corrupt files, another kind, inconsistent shapes.
        """
        return read_model(
            path, KIND, lambda root, _kind, config, tensors: cls._build(config, tensors, root)
        )

    @classmethod
    def _build(cls, config: dict[str, Any], tensors: dict[str, torch.Tensor], root) -> TextSAE:
        """``root``: the resolved version directory (the SAE is its child ``sae``)."""
        sae = SparseAutoencoder.load(os.path.join(root, "sae"))
        n = sae.config.n_latents
        shapes = {"p90": (n,), "density": (n,), "centroids": (n, sae.config.d_in)}
        require_tensors(tensors, shapes, root)
        try:
            return cls(
                sae,
                config["embedder"],
                tensors["p90"].numpy(),
                tensors["density"].numpy(),
                config["labels"],
                config["terms"],
                config.get("metadata"),
                tensors["centroids"].numpy(),
            )
        except InputError as err:
            raise ModelFileError(f"{root}: invalid TextSAE config: {err}") from err

    def embedder(self, **kwargs: Any) -> Embedder:
        """An :class:`Embedder` like the one the model was trained with.

        Raises:
            InputError: the model was trained on precomputed vectors (no embedder known).
        """
        if self.embedder_spec is None:
            raise InputError(
                "this model was trained on precomputed embeddings: pass the Embedder that "
                "made them (embedder=...) to embed queries or new documents"
            )
        return Embedder.from_spec(self.embedder_spec, **kwargs)


class _quiet_nan:
    """Silence numpy's all-NaN-slice warning (latents that never fired)."""

    def __enter__(self) -> None:
        import warnings

        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc: object) -> None:
        self._ctx.__exit__(*exc)
