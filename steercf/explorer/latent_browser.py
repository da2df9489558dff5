"""The latent browser of the recommender explorer: every latent's label, concepts, top
items, the items it lifts, its activation histogram over users and its nearest latents.

:class:`LatentBrowser` is a mixin of :class:`~steercf.explorer.recommender.RecommenderExplorer`;
it reads the explorer's ``model``, ``data``, ``labels`` and concept settings, and
precomputes what the browser shows once, at start-up.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from steercf.concepts.mapping import top_items
from steercf.explorer.latents import activation_histogram, nearest_latents, unit_directions

HISTOGRAM_USERS = 20_000  # users encoded for the activation histograms (sampled beyond)
TOP_ITEMS_KEPT = 20


class LatentBrowser:
    """``latents`` (a searchable list) and ``latent`` (one latent in detail)."""

    def _precompute(self, item_acts: np.ndarray) -> None:
        """``item_acts``: (n_items, n_latents) the top items the labels were read from,
        each item's mean code over the training users who hold it
        (:func:`steercf.concepts.audience_activations`)."""
        model = self.model
        self._top_items = top_items(item_acts, TOP_ITEMS_KEPT)  # (n_latents, k), -1 padded
        self._top_item_values = np.take_along_axis(
            item_acts.T, np.maximum(self._top_items, 0), axis=1
        )
        del item_acts  # n_items x n_latents: large for big catalogues, not needed again
        self._directions = unit_directions(model.latent_directions())  # (n_latents, d)
        # sparse codes of (up to HISTOGRAM_USERS) users: one column per latent
        n_users = self.data.n_users
        rows = np.arange(n_users)
        if n_users > HISTOGRAM_USERS:
            rows = np.sort(np.random.default_rng(0).choice(n_users, HISTOGRAM_USERS, replace=False))
        parts = []
        for start in range(0, len(rows), 4096):
            encoding = model.encode(self.data.matrix[rows[start : start + 4096]])
            parts.append(sp.csr_matrix(encoding.codes.numpy()))
        self._user_codes = sp.vstack(parts, format="csr").tocsc()  # (n_sampled, n_latents)
        self._n_histogram_users = len(rows)
        # what users meet: how many users each latent fires for, and how strongly
        self._users_active = np.diff(self._user_codes.indptr)
        sums = np.asarray(self._user_codes.sum(axis=0)).ravel()
        self._mean_user_activation = sums / np.maximum(self._users_active, 1)

    def latents(self, query: str = "", limit: int = 50, offset: int = 0) -> dict[str, Any]:
        """Latents whose label contains ``query`` (case-blind), in the order users meet
        them: those active for the most users first (ties: stronger mean activation);
        then, listed apart (``for_users: false``), latents that fire for single items but
        for no user. Latents that fire for neither are left out."""
        folded = query.casefold()
        chosen = [
            label
            for label in self.labels.labels
            if (label.live or self._users_active[label.latent] > 0)
            and folded in label.text.casefold()
        ]
        chosen.sort(
            key=lambda label: (
                self._users_active[label.latent] == 0,
                -self._users_active[label.latent],
                -self._mean_user_activation[label.latent],
                label.latent,
            )
        )
        return {
            "total": len(chosen),
            "n_users": self._n_histogram_users,
            "latents": [
                {
                    "latent": label.latent,
                    "n_items": label.n_items,
                    "n_users": int(self._users_active[label.latent]),
                    "mean_activation": float(self._mean_user_activation[label.latent]),
                    "for_users": bool(self._users_active[label.latent] > 0),
                    "label": label.text,
                }
                for label in chosen[offset : offset + limit]
            ],
        }

    def latent(self, latent: int, nearest: int = 8) -> dict[str, Any]:
        """One latent: label, concepts, top items, the items it lifts, an activation
        histogram over users and its nearest latents by decoder direction."""
        nid = self._latent_index(latent)
        label = self.labels[nid]
        acts = self._top_item_values[nid]
        top = [
            self._item(int(i), activation=float(a))
            for i, a in zip(self._top_items[nid], acts, strict=True)
            if i >= 0 and a > 0
        ]
        effect = self.model.latent_item_effects([nid])[0].numpy()
        lifted = np.argsort(-effect, kind="stable")[:10]
        histogram = activation_histogram(self._user_codes[:, nid].data)
        order, cosine = nearest_latents(self._directions, nid, nearest)
        steering = self.knobs_for(self.source, self.mapping, self.top_latents).mapping
        return {
            "latent": nid,
            "live": label.live,
            "n_items": label.n_items,
            "label": label.text,
            "concepts": [{"source": s, "concept": c, "score": v} for s, c, v in label.concepts],
            "steers_toward": [
                {"concept": c, "score": v} for c, v in steering.concepts_for(nid, 5) if v > 0
            ],
            "top_items": top,
            "lifted_items": [self._item(int(i), effect=float(effect[i])) for i in lifted],
            "histogram": {**histogram, "n_users": self._n_histogram_users},
            "nearest": [
                {"latent": int(j), "cosine": float(cosine[j]), "label": self._label(int(j))}
                for j in order
            ],
        }
