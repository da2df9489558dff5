"""Steerable semantic search (O'Neill et al. 2024): edit a query's SAE code, decode it
back to an embedding, retrieve by cosine.

The query embedding ``q`` (d,) is encoded to a code ``e``; edits give ``e'``
(strengthen: multiply an active latent; weaken: multiply by a factor < 1 or remove;
add: set an inactive latent to a value). The steered query is
``q + decode(e') - decode(e)``: only the edit's effect is added, so the part of the
query the SAE does not reconstruct is kept and an empty edit returns ``q`` unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from steercf.errors import InputError
from steercf.reporting import one_line
from steercf.sae.steer import edit_codes
from steercf.text.embed import Embedder, Embeddings
from steercf.text.model import TextSAE
from steercf.text.retrieval import best_documents, doc_similarity

SNIPPET_WIDTH = 120  # characters of a document shown in a result, ending in "…" when cut


def _as_factors(
    edits: Mapping[int, float] | Sequence[int] | None, default: float
) -> dict[int, float]:
    if edits is None:
        return {}
    if isinstance(edits, Mapping):
        return {int(k): float(v) for k, v in edits.items()}
    return {int(k): default for k in edits}


class SteerableSearch:
    """Search a corpus with a query whose SAE latents can be edited.

    Args:
        model: the :class:`TextSAE`.
        embeddings: chunk embeddings of the corpus (made by the model's embedder).
        embedder: embeds queries (default: ``model.embedder()``).
        texts: (n_docs,) documents, shown in results when given.
    """

    def __init__(
        self,
        model: TextSAE,
        embeddings: Embeddings,
        embedder: Embedder | None = None,
        texts: Sequence[str] | None = None,
    ) -> None:
        if embeddings.dim != model.sae.config.d_in:
            raise InputError(
                f"embeddings are {embeddings.dim}-d but the SAE reads {model.sae.config.d_in}-d"
            )
        if texts is not None and len(texts) != embeddings.n_docs:
            raise InputError(f"{len(texts)} texts for {embeddings.n_docs} embedded documents")
        self.model, self.embeddings = model, embeddings
        self.embedder = embedder or model.embedder(progress=False)
        self.texts = None if texts is None else list(texts)

    def query_latents(self, query: str) -> pd.DataFrame:
        """The query's active latents, largest first (one "slider" each).

        Returns:
            DataFrame ``latent, activation, label``.
        """
        code, _ = self.model.query_code(self.embedder.embed_query(query))
        active = np.flatnonzero(code > 0)
        active = active[np.argsort(-code[active])]
        return pd.DataFrame(
            {
                "latent": active,
                "activation": code[active],
                "label": [self.model.labels[j] for j in active],
            }
        )

    @torch.no_grad()
    def steer(
        self,
        query: str | np.ndarray,
        strengthen: Mapping[int, float] | Sequence[int] | None = None,
        weaken: Mapping[int, float] | Sequence[int] | None = None,
        add: Mapping[int, float] | Sequence[int] | None = None,
    ) -> np.ndarray:
        """The steered query vector (d,).

        Args:
            query: text or an embedding (d,).
            strengthen: ``{latent: factor > 1}`` (a list means factor 2) for active latents.
            weaken: ``{latent: factor in [0, 1)}`` (a list means 0: remove).
            add: ``{latent: value}`` (a list means the latent's ``p90`` activation).
            Every factor and value must be finite and at most
            ``steercf.sae.steer.MAX_EDIT`` (1e6), checked by ``edit_codes``.

        Raises:
            UnknownIdError: unknown latent; InputError: strengthening an inactive latent
            or a factor out of range.
        """
        q = (
            self.embedder.embed_query(query)
            if isinstance(query, str)
            else np.asarray(query, np.float32)
        )
        sae = self.model.sae
        x = torch.as_tensor(q.reshape(1, -1))
        codes, mean, std = sae.encode(x)
        strengthen_f = _as_factors(strengthen, 2.0)
        weaken_f = _as_factors(weaken, 0.0)
        add_v = (
            {j: float(self.model.p90[j]) for j in self.model.check_latents(list(add))}
            if (add is not None and not isinstance(add, Mapping))
            else _as_factors(add, 0.0)
        )
        for edits in (strengthen_f, weaken_f, add_v):
            if edits:
                self.model.check_latents(list(edits))
        for j, f in strengthen_f.items():
            if f <= 0:
                raise InputError(f"strengthen factor for latent {j} must be > 0, got {f}")
            if codes[0, j] <= 0:
                raise InputError(
                    f"latent {j} is not active for this query: switch it on with add= (CLI: --add {j}=VALUE)"
                )
        for j, f in weaken_f.items():
            if not 0 <= f < 1:
                raise InputError(f"weaken factor for latent {j} must lie in [0, 1), got {f}")
        for j, v in add_v.items():
            if v < 0:
                raise InputError(f"added activation for latent {j} must be >= 0, got {v}")
        # the code-editing step shared with recommender steering (steercf.sae.steer)
        edited = edit_codes(codes, scale={**strengthen_f, **weaken_f}, assign=add_v)
        delta = sae.decode(edited, mean, std) - sae.decode(codes, mean, std)
        return (x + delta)[0].numpy()

    def search(
        self,
        query: str | np.ndarray,
        strengthen: Mapping[int, float] | Sequence[int] | None = None,
        weaken: Mapping[int, float] | Sequence[int] | None = None,
        add: Mapping[int, float] | Sequence[int] | None = None,
        top: int = 10,
    ) -> pd.DataFrame:
        """Documents nearest to the steered query (see :meth:`steer`).

        Returns:
            DataFrame ``rank, doc, score`` (+ ``text`` when texts were given: one line of at
            most ``SNIPPET_WIDTH`` characters).
        """
        vector = self.steer(query, strengthen, weaken, add)
        scores = doc_similarity(vector, self.embeddings)
        order = best_documents(scores, top)
        frame = pd.DataFrame(
            {"rank": np.arange(1, len(order) + 1), "doc": order, "score": scores[order]}
        )
        if self.texts is not None:
            frame["text"] = [one_line(self.texts[i], SNIPPET_WIDTH) for i in order]
        return frame


def steer_vector(model: TextSAE, vector: Any, **edits: Any) -> np.ndarray:
    """Functional form of :meth:`SteerableSearch.steer` for an embedding (d,)."""
    dummy = Embeddings.from_array(np.asarray(vector, np.float32).reshape(1, -1))
    return SteerableSearch(model, dummy, embedder=Embedder(cache_dir=False)).steer(vector, **edits)
