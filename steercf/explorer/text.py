"""The explorer's view of a text SAE over a corpus: steerable search with one slider per
latent, and a latent browser (label, terms, top documents, histogram, neighbours).

A slider's strength ``a`` in [-1, 1] maps onto :class:`~steercf.text.SteerableSearch`'s
edits: on a latent the query expresses, ``a > 0`` strengthens it by ``1 + 4a`` (up to
5x) and ``a < 0`` weakens it by ``1 + a`` (``-1`` removes it); on a latent the query
does not express, ``a > 0`` switches it on at ``8a`` times its typical (p90) document
activation, and ``a < 0`` has nothing to remove (an error says so).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from steercf.errors import InputError
from steercf.explorer.cache import BuildCache
from steercf.explorer.latents import (
    activation_histogram,
    latent_id,
    nearest_latents,
    unit_directions,
)
from steercf.reporting import one_line

MAX_STRENGTHEN = 4.0  # a = 1 multiplies an active latent by 5
# a = 1 switches an inactive latent on at 8 x its p90 activation: the query's own latents
# hold it in place, so pulling it to another topic takes more than a typical activation
# (BBC News, "new software release" + a sport latent: 2 x p90 moved none of the top 10
# to sport, 4 x half of them, 8 x all)
ADD_SCALE = 8.0
QUERY_CACHE = 256
SNIPPET_CHARS = 240
MAX_TOP = 50


class TextExplorer:
    """Search and browse a :class:`~steercf.text.TextSAE` over a corpus.

    Args:
        model: the text SAE.
        texts: (n_docs,) the corpus's documents.
        titles: (n_docs,) short titles shown in lists (default: each text's start, cut with "…").
        embeddings: the corpus's chunk embeddings (default: embedded now with the
            model's embedder, cached on disk by content).
        embedder: embeds queries (default: the model's).
    """

    kind = "text"

    def __init__(
        self,
        model: Any,
        texts: Sequence[str],
        titles: Sequence[str] | None = None,
        embeddings: Any = None,
        embedder: Any = None,
        name: str = "corpus",
    ) -> None:
        from steercf.text.embed import check_texts
        from steercf.text.search import SteerableSearch

        self.texts = check_texts(texts)
        if titles is not None and len(titles) != len(self.texts):
            raise InputError(f"{len(titles)} titles for {len(self.texts)} documents")
        self.titles = (
            [str(t) for t in titles]
            if titles is not None
            else [one_line(t, 80) for t in self.texts]
        )
        self.model = model
        self.name = name
        self.embedder = embedder or model.embedder(progress=False)
        self.embeddings = embeddings if embeddings is not None else self.embedder.embed(self.texts)
        self.search_engine = SteerableSearch(model, self.embeddings, self.embedder, self.texts)
        self.codes = model.doc_codes(self.embeddings)  # (n_docs, n_latents)
        self._directions = unit_directions(model.sae.W_dec)  # (n_latents, d)
        self._queries: BuildCache[np.ndarray] = BuildCache(QUERY_CACHE)

    @classmethod
    def from_dir(
        cls,
        model_dir: str | Path,
        data: str | Path,
        text_column: str = "text",
        title_column: str | None = "title",
        cache_dir: str | Path | None = None,
        progress: bool = False,
        **options: Any,
    ) -> TextExplorer:
        """Load a ``steercf text train`` model and the corpus file it is to search.

        Args:
            data: CSV / CSV.GZ / Parquet file with a ``text_column``.
            title_column: column shown as the title when present (else the text's start).
            cache_dir: the steercf cache root; the corpus's embeddings are cached in
                ``<cache_dir>/embeddings`` (:func:`steercf.text.embed.embedding_cache_dir`;
                default ``$STEERCF_CACHE``, else ``~/.cache/steercf``).
            progress: a progress bar while the corpus is embedded (a first run over a
                large corpus takes minutes).
        """
        from steercf.text.embed import read_table, texts_from_frame
        from steercf.text.model import TextSAE

        if data is None:
            raise InputError(
                "a text model needs the corpus to search: pass --data FILE (CSV or Parquet) "
                "and --text-column"
            )
        model = TextSAE.load(model_dir)
        frame = read_table(data)
        texts = texts_from_frame(frame, text_column, source=str(data))
        titles = (
            frame[title_column].astype(str).tolist()
            if title_column and title_column in frame.columns
            else None
        )
        if options.get("embedder") is None:
            embedder = model.embedder(progress=progress, cache_dir=cache_dir)
            if options.get("embeddings") is None:
                options["embeddings"] = embedder.embed(texts)
            embedder.progress = False  # the bar was for the corpus, not for each query
            options["embedder"] = embedder
        return cls(model, texts, titles, name=Path(str(data)).name.split(".")[0], **options)

    # ---- helpers -----------------------------------------------------------------------
    def _vector(self, query: str) -> np.ndarray:
        """The query's embedding, cached: slider moves re-use it instead of re-embedding."""
        if not isinstance(query, str) or not query.strip():
            raise InputError("type a query to search for")
        key = query.strip()
        return self._queries.get(key, lambda: self.embedder.embed_query(key))

    def _latent(self, latent: Any) -> int:
        return latent_id(latent, self.model.n_latents)

    def _doc(self, doc: int, **extra: Any) -> dict[str, Any]:
        text = self.texts[doc]
        return {
            "doc": int(doc),
            "title": self.titles[doc],
            "snippet": one_line(text, SNIPPET_CHARS),  # the tables' snippet rule
            **extra,
        }

    def edits(
        self, code: np.ndarray, sliders: Sequence[tuple[int, float]]
    ) -> dict[str, dict[int, float]]:
        """Slider strengths -> ``strengthen`` / ``weaken`` / ``add`` edits (see the module
        docstring) for a query with ``code`` (n_latents,)."""
        out: dict[str, dict[int, float]] = {"strengthen": {}, "weaken": {}, "add": {}}
        seen = set()
        for latent, strength in sliders:
            latent = self._latent(latent)
            if latent in seen:
                raise InputError(f"latent {latent} is given twice")
            seen.add(latent)
            if not np.isfinite(strength) or not -1.0 <= strength <= 1.0:
                raise InputError(f"latent {latent}: strength must be in [-1, 1], got {strength}")
            if strength == 0:
                continue
            if code[latent] > 0:
                if strength > 0:
                    out["strengthen"][latent] = 1.0 + MAX_STRENGTHEN * strength
                else:
                    out["weaken"][latent] = 1.0 + strength
            elif strength > 0:
                out["add"][latent] = ADD_SCALE * strength * float(self.model.p90[latent])
            else:
                raise InputError(
                    f"latent {latent} is not active for this query: it can only be added "
                    "(a positive strength)"
                )
        return out

    # ---- the API -------------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "dataset": self.name,
            "model": "TextSAE",
            "n_docs": len(self.texts),
            "n_latents": self.model.n_latents,
            "n_live": int((self.model.density > 0).sum()),
            "defaults": {"query": "", "top": 10},
            "strength_range": [-1.0, 1.0],
        }

    def search(
        self, query: str, sliders: Sequence[tuple[int, float]] = (), top: int = 10
    ) -> dict[str, Any]:
        """Plain and steered search results and the query's active latents.

        Returns:
            ``latents`` (the query's active latents, strongest first, with labels),
            ``edits`` (strengthen / weaken / add), ``before`` / ``after`` (documents with
            scores and ranks).
        """
        if not 1 <= int(top) <= MAX_TOP:
            raise InputError(f"top must be in [1, {MAX_TOP}], got {top}")
        vector = self._vector(query)
        code, _ = self.model.query_code(vector)
        edits = self.edits(code, sliders)
        before = self.search_engine.search(vector, top=int(top))
        after = self.search_engine.search(
            vector,
            strengthen=edits["strengthen"] or None,
            weaken=edits["weaken"] or None,
            add=edits["add"] or None,
            top=int(top),
        )
        before_rank = {int(d): int(r) for d, r in zip(before["doc"], before["rank"], strict=True)}
        after_rank = {int(d): int(r) for d, r in zip(after["doc"], after["rank"], strict=True)}
        active = np.flatnonzero(code > 0)
        active = active[np.argsort(-code[active], kind="stable")]
        return {
            "query": query.strip(),
            "latents": [
                {"latent": int(j), "activation": float(code[j]), "label": self.model.labels[j]}
                for j in active
            ],
            "edits": {kind: {str(k): v for k, v in e.items()} for kind, e in edits.items()},
            "before": [
                self._doc(int(d), rank=int(r), score=float(s), after_rank=after_rank.get(int(d)))
                for d, r, s in zip(before["doc"], before["rank"], before["score"], strict=True)
            ],
            "after": [
                self._doc(int(d), rank=int(r), score=float(s), before_rank=before_rank.get(int(d)))
                for d, r, s in zip(after["doc"], after["rank"], after["score"], strict=True)
            ],
        }

    def latents(self, query: str = "", limit: int = 50, offset: int = 0) -> dict[str, Any]:
        """Latents that fire on some document and whose label or terms contain ``query``
        (case-blind), densest first."""
        folded = query.casefold()
        density = self.model.density
        chosen = [
            j
            for j in range(self.model.n_latents)
            if density[j] > 0
            and (
                folded in self.model.labels[j].casefold()
                or any(folded in t.casefold() for t in self.model.terms[j])
            )
        ]
        chosen.sort(key=lambda j: (-density[j], j))
        return {
            "total": len(chosen),
            "latents": [
                {"latent": j, "density": float(density[j]), "label": self.model.labels[j]}
                for j in chosen[offset : offset + limit]
            ],
        }

    def latent(self, latent: int, top: int = 10, nearest: int = 8) -> dict[str, Any]:
        """One latent: label, terms, density, top documents, a histogram of its document
        activations and its nearest latents by decoder direction."""
        from steercf.text.labels import top_documents

        j = self._latent(latent)
        column = self.codes[:, j]
        histogram = activation_histogram(column[column > 0])
        order, cosine = nearest_latents(self._directions, j, nearest)
        return {
            "latent": j,
            "label": self.model.labels[j],
            "terms": list(self.model.terms[j]),
            "density": float(self.model.density[j]),
            "p90": float(self.model.p90[j]),
            "top_docs": [
                self._doc(int(d), activation=float(column[d]))
                for d in top_documents(self.codes, j, top)
            ],
            "histogram": {**histogram, "n_docs": len(self.texts)},
            "nearest": [
                {"latent": int(k), "cosine": float(cosine[k]), "label": self.model.labels[k]}
                for k in order
            ],
        }
