"""Steering evaluation, as in the steerable-CF study.

For each test user the *target* concept is the tag most over-represented among their
held-out items relative to their input items (share among targets minus share among
inputs). Steering toward it should raise *segment* metrics (hits among all items that
carry the tag) while keeping *personal* metrics (hits among the user's held-out items).
Suppression is measured the other way: the tag most present in a user's unsteered list
is steered away from, and its share in the list should fall.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import scipy.sparse as sp
import torch
from tqdm.auto import tqdm

from steercf.evaluation import Split, ndcg_at_k, recall_at_k
from steercf.ranking import top_n
from steercf.steering import ConceptKnobs, steer, steer_codes


def target_concepts(
    user_input: sp.csr_matrix, user_target: sp.csr_matrix, item_tags: sp.csr_matrix
) -> np.ndarray:
    """(n_users,) index of each user's most over-represented tag among held-out items,
    -1 when no held-out item carries any tag.

    Args:
        user_input, user_target: (n_users, n_items) shown and held-out items.
        item_tags: (n_items, n_tags) counts (binarised here).
    """
    tags = (item_tags > 0).astype(np.float64)
    n_in = np.maximum(np.diff(user_input.indptr), 1)[:, None]
    n_out = np.maximum(np.diff(user_target.indptr), 1)[:, None]
    share_out = np.asarray((user_target @ tags).todense()) / n_out
    share_in = np.asarray((user_input @ tags).todense()) / n_in
    lift = np.where(share_out > 0, share_out - share_in, -np.inf)
    best = lift.argmax(axis=1)
    best[~np.isfinite(lift.max(axis=1))] = -1
    return best


def _segment_rows(
    concepts: np.ndarray, item_tags: sp.csr_matrix, seen: sp.csr_matrix
) -> sp.csr_matrix:
    """(n_users, n_items) the items carrying each user's concept, minus what they saw."""
    by_tag = (item_tags > 0).T.tocsr().astype(np.float32)
    segment = by_tag[concepts]
    return (segment - segment.multiply(seen)).tocsr()


def share_with_tag(ids: np.ndarray, concepts: np.ndarray, item_tags: sp.csr_matrix) -> np.ndarray:
    """(n_users,) share of each user's list ``ids`` (n_users, N) carrying their concept."""
    carries = (item_tags > 0).tocsc()
    return np.array([carries[ids[u], concepts[u]].toarray().mean() for u in range(len(ids))])


def steering_sweep(
    model,
    split: Split,
    item_tags: sp.csr_matrix,
    knobs: ConceptKnobs,
    strengths: Sequence[float] = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5),
    rule: str = "convex",
    k: int = 20,
    progress: bool = False,
) -> list[dict[str, float]]:
    """Personal and segment Recall/nDCG@k and target share for each strength.

    Args:
        model: a fitted :class:`~steercf.models.spliced.SplicedRecommender`.
        item_tags: (n_items, n_tags) the concept source ``knobs`` maps (same columns).
        knobs: concept -> latent resolution (mapping and top-m latents).

    Returns:
        one dict per strength: ``strength``, ``personal_recall@k``, ``personal_ndcg@k``,
        ``segment_recall@k``, ``segment_ndcg@k``, ``target_share@k``, ``n_users``.
    """
    concepts = target_concepts(split.test_input, split.test_target, item_tags)
    users = np.flatnonzero(concepts >= 0)
    rows, target, concepts = split.test_input[users], split.test_target[users], concepts[users]
    segment = _segment_rows(concepts, item_tags, rows)
    encoding = model.encode(rows)
    codes = encoding.codes
    # knobs per concept, once: users sharing a target concept share the knob
    per_concept = {c: knobs.knob(int(c), 1.0) for c in np.unique(concepts)}
    results = []
    for strength in tqdm(strengths, desc=f"steer {rule}", disable=not progress):
        steered = codes.clone()
        for concept, knob in per_concept.items():
            members = torch.from_numpy(np.flatnonzero(concepts == concept))
            scaled = replace(knob, strength=float(strength))
            steered[members] = steer_codes(codes[members], [scaled], rule)
        ids, _ = top_n(model.decode(encoding.with_codes(steered)), rows, k)
        results.append(
            {
                "strength": float(strength),
                f"personal_recall@{k}": float(np.nanmean(recall_at_k(ids, target, k))),
                f"personal_ndcg@{k}": float(np.nanmean(ndcg_at_k(ids, target, k))),
                f"segment_recall@{k}": float(np.nanmean(recall_at_k(ids, segment, k))),
                f"segment_ndcg@{k}": float(np.nanmean(ndcg_at_k(ids, segment, k))),
                f"target_share@{k}": float(share_with_tag(ids, concepts, item_tags).mean()),
                "n_users": len(users),
            }
        )
    return results


def suppression(
    model,
    split: Split,
    item_tags: sp.csr_matrix,
    knobs: ConceptKnobs,
    strength: float = -1.0,
    rule: str = "convex",
    k: int = 20,
) -> dict[str, float]:
    """Steer each test user away from the tag most present in their unsteered top-k.

    Returns:
        ``suppressed_share_before@k``, ``suppressed_share@k`` (mean share of the list
        carrying the suppressed tag) and ``drop`` (1 - after / before).
    """
    rows = split.test_input
    encoding = model.encode(rows)
    codes = encoding.codes
    before, _ = top_n(model.decode(encoding), rows, k)
    carries = (item_tags > 0).astype(np.float64).tocsr()
    counts = np.stack([np.asarray(carries[ids].sum(axis=0)).ravel() for ids in before])
    concepts = counts.argmax(axis=1)
    steered = codes.clone()
    for concept in np.unique(concepts):
        members = torch.from_numpy(np.flatnonzero(concepts == concept))
        steered[members] = steer_codes(codes[members], [knobs.knob(int(concept), strength)], rule)
    after, _ = top_n(model.decode(encoding.with_codes(steered)), rows, k)
    share_before = share_with_tag(before, concepts, item_tags).mean()
    share_after = share_with_tag(after, concepts, item_tags).mean()
    return {
        f"suppressed_share_before@{k}": float(share_before),
        f"suppressed_share@{k}": float(share_after),
        # a suppressed list should stay the user's: held-out recall without the concept
        f"personal_recall_before@{k}": float(recall_at_k(before, split.test_target, k).mean()),
        f"personal_recall@{k}": float(recall_at_k(after, split.test_target, k).mean()),
        "drop": float(1 - share_after / share_before) if share_before > 0 else float("nan"),
    }


def steering_latency(
    model, user_rows: sp.csr_matrix, knob, rule: str = "convex", k: int = 20, repeats: int = 30
) -> dict[str, float]:
    """Median milliseconds for an unsteered and a steered top-k of ``user_rows`` (the
    whole path: validate, encode, edit, decode, mask, top-k).

    The two calls alternate, after one warm-up call each, so that load from other
    processes and cache effects fall on both alike."""

    def unsteered() -> None:
        model.recommend(user_rows, N=k)

    def steered() -> None:
        steer(model, user_rows, [knob], rule, N=k)

    times: dict[str, list[float]] = {"unsteered_ms": [], "steered_ms": []}
    unsteered(), steered()
    for _ in range(repeats):
        for name, call in (("unsteered_ms", unsteered), ("steered_ms", steered)):
            started = time.perf_counter()
            call()
            times[name].append((time.perf_counter() - started) * 1000)
    return {name: float(np.median(values)) for name, values in times.items()}
